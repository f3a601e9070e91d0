"""What the ingestion job checks before it reads a row or writes a byte, and the plan a dry
run (``python -m pipelines.ingest --dry-run``) prints.

Planning the input reads metadata only (:func:`~semq_transforms.transforms.sources.
plan_inputs`: the file list, one format, the id and vector column types, the vector width
each file's metadata fixes). On that plan and the job's config, before the pipeline runs:

* :func:`check_dimensions`: every file whose metadata fixes a vector width (a
  ``fixed_size_list`` column, an NPY array's columns) has ``input.dim`` of them; otherwise
  each of its rows would be read and rejected as ``wrong_dimension``. Variable-length list
  columns can only be checked row by row: their rows of another length stay dead letters.
* :func:`check_output_location` (writes nothing): on the local disk, the nearest existing
  folder on the way to each folder the job writes (the index, ``runs/<run_id>/``,
  ``manifests/``) is a directory this process may write; on a store with buckets (S3, GCS,
  Azure Blob) the bucket exists: one metadata request for it (``info`` of the bucket).
* :func:`probe_output` (after the run-folder check, so never inside a published version's
  folder): on anything but the local disk, a small object ``<index>/runs/<run_id>/
  .write-probe`` is written and deleted. No store offers a cheaper check: a bucket's metadata
  says nothing about whether this caller may write objects under the prefix.

Failures raise :class:`DimensionMismatchError` (a config error) or
:class:`OutputLocationError`, one line each naming the file or the (redacted) URL: the job
exits 2 without writing anything.
"""

from __future__ import annotations

import logging
import os
from collections import Counter
from typing import Any

from fsspec.implementations.local import LocalFileSystem

from semq_transforms._urls import redact_text, redact_url
from semq_transforms.errors import ConfigError, SemqError
from semq_transforms.format.store import IndexStore
from semq_transforms.sharding import ShardLayout
from semq_transforms.transforms.sources import InputPlan

__all__ = ["PROBE_NAME", "DimensionMismatchError", "OutputLocationError", "check_dimensions",
           "check_output_location", "describe_plan", "one_line", "probe_output"]

logger = logging.getLogger(__name__)

#: The object :func:`probe_output` writes and deletes in the run folder.
PROBE_NAME = ".write-probe"
#: Protocols whose first path component is a bucket (S3, GCS) or container (Azure Blob).
BUCKET_PROTOCOLS = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss"})
#: Input files a dry run lists one by one (then a count of the others).
LISTED_FILES = 10


class DimensionMismatchError(ConfigError):
    """``input.dim`` disagrees with the vector width an input file's metadata fixes, so every
    row of that file would be rejected. ``url`` (redacted), ``column``, ``got`` (the file's
    width) and ``expected`` (``input.dim``) say which."""

    def __init__(self, message: str, *, url: str, column: str, got: int,
                 expected: int) -> None:
        super().__init__(redact_text(message))
        self.url, self.column, self.got, self.expected = url, column, got, expected


class OutputLocationError(SemqError, OSError):
    """The index location does not exist, cannot be reached or cannot be written. The message
    is one line naming the (redacted) URL."""

    def __init__(self, message: str) -> None:
        super().__init__(redact_text(message))


def one_line(exc: BaseException, limit: int = 300) -> str:
    """``"<type>: <first line of the message>"``, redacted and at most ``limit`` characters
    (a storage library's message can be a page of XML or a traceback)."""
    text = str(exc).strip().splitlines()
    first = redact_text(text[0]) if text else ""
    if len(first) > limit:
        first = first[:limit - 3] + "..."
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


# -- the input's schema ---------------------------------------------------------------------


def _vector_source(fmt: str | None, column: str) -> str:
    return "the NPY array's columns" if fmt == "npy" else f"vector column {column!r}"


def check_dimensions(plan: InputPlan, *, dim: int | None, vector_column: str) -> None:
    """Raise :class:`DimensionMismatchError` for the first file whose metadata fixes a vector
    width other than ``dim`` (None: the plan took its width from the files, which agree)."""
    if dim is None:
        return
    fmt = plan.formats[0] if plan.formats else None
    wrong = [(url, width) for url, width in zip(plan.files, plan.widths, strict=False)
             if width is not None and width != dim]
    if not wrong:
        return
    url, width = wrong[0]
    more = f" (and {len(wrong) - 1} more file(s))" if len(wrong) > 1 else ""
    what = ("NPY array" if fmt == "npy"
            else f"vector column {vector_column!r} (fixed_size_list of {width})")
    raise DimensionMismatchError(
        f"{redact_url(url)}{more}: {what} does not match input.dim: got {width}, "
        f"expected {dim}; every row would be rejected. Set input.dim to the data's width (or "
        f"null to take it from the files), or point input.url at {dim}-wide vectors",
        url=redact_url(url), column=vector_column if fmt != "npy" else "", got=width,
        expected=dim)


# -- the output location --------------------------------------------------------------------


def _protocols(fs: Any) -> set[str]:
    return {fs.protocol} if isinstance(fs.protocol, str) else set(fs.protocol)


def _local_problem(path: str) -> str | None:
    """Why nothing can be written at local ``path``: its nearest existing ancestor (or itself)
    is not a directory, or not one this process may write; None when it is fine."""
    existing = path
    while not os.path.lexists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if not os.path.isdir(existing):
        return f"{existing} is not a folder"
    if not os.access(existing, os.W_OK | os.X_OK):
        return f"the folder {existing} is not writable by this process"
    return None


def check_output_location(store: IndexStore, run_id: str) -> str:
    """Check that the job can write under ``store`` without writing anything; returns what was
    checked, in words. Raises :class:`OutputLocationError`.

    Local disk: the index folder, ``runs/<run_id>/`` and ``manifests/`` are each a writable
    directory, or would be created in one (the nearest existing ancestor). Buckets (S3, GCS,
    Azure): the bucket exists (a bucket this caller may not inspect passes: whether it may
    write there is :func:`probe_output`'s to find out). Other stores: nothing to check without
    a write.
    """
    fs, root = store.fs, store.root
    if isinstance(fs, LocalFileSystem):
        for folder in (root, f"{root}/runs/{run_id}", f"{root}/manifests"):
            problem = _local_problem(folder)
            if problem:
                raise OutputLocationError(f"output {store.url} cannot be written: {problem}")
        return ("local folder, exists and is writable" if os.path.isdir(root)
                else "local folder, to be created in a writable folder")
    if not _protocols(fs) & BUCKET_PROTOCOLS:
        return "checked by writing a probe object"
    bucket = root.split("/", 1)[0]
    try:
        fs.invalidate_cache(bucket)
        fs.info(bucket)
    except FileNotFoundError:
        raise OutputLocationError(
            f"output {store.url}: the bucket {bucket!r} does not exist; create it, or fix "
            f"output.index_url") from None
    except PermissionError:
        pass        # may not inspect the bucket, may still write objects: the probe tells
    except Exception as exc:  # noqa: BLE001 - any storage library's error, in one line
        raise OutputLocationError(f"output {store.url}: cannot reach the bucket {bucket!r}: "
                                  f"{one_line(exc)}") from None
    return f"bucket {bucket!r} exists"


def probe_output(store: IndexStore, run_id: str) -> str | None:
    """Write and delete ``runs/<run_id>/.write-probe`` under ``store``, except on the local
    disk (:func:`check_output_location` covers it): the only sure sign that the job's writes
    will be allowed. Call it after the run-folder check, so a published version's folder is
    never written. Returns the probe's URL (None when none was written); raises
    :class:`OutputLocationError` when the write fails. A probe that cannot be deleted is
    left with a warning (write-once buckets)."""
    if isinstance(store.fs, LocalFileSystem):
        return None
    rel = f"runs/{run_id}/{PROBE_NAME}"
    url = store.url_of(rel)
    try:
        with store.open_write(rel) as f:
            f.write(b"semq-transforms write probe; deleted right after it is written\n")
    except Exception as exc:  # noqa: BLE001 - any storage library's error, in one line
        raise OutputLocationError(f"output {store.url} cannot be written: writing {url} "
                                  f"failed: {one_line(exc)}") from None
    try:
        store.remove(rel)
    except Exception as exc:  # noqa: BLE001 - the write worked, which is what matters
        logger.warning("could not delete the write probe %s: %s", url, one_line(exc))
    return url


# -- the plan, in words ---------------------------------------------------------------------


def _file_line(url: str, rows: int, width: int | None, fmt: str | None) -> str:
    if width is None:
        vectors = "variable-length lists (lengths checked row by row)"
    elif fmt == "npy":
        vectors = f"{width} columns"
    else:
        vectors = f"fixed_size_list of {width}"
    return f"  {redact_url(url)}: {rows} rows, vectors {vectors}"


def describe_plan(config: Any, plan: InputPlan, *, run_id: str, latest: int,
                  output: str, probe: str | None, store: IndexStore) -> list[str]:
    """The lines a dry run prints: files, rows, shards, dimension, codecs, run id, and the
    output (redacted) with what was checked there. ``config``: the :class:`~semq_transforms.
    config.JobConfig`; ``latest``: the index's latest version (0: none); ``output``: what
    :func:`check_output_location` returned; ``probe``: :func:`probe_output`'s URL."""
    cfg, encode = config.input, config.encode
    fmt = plan.formats[0] if plan.formats else None
    rows: Counter[str] = Counter()
    for split in plan.splits:
        rows[split.url] += split.rows
    widths = dict(zip(plan.files, plan.widths, strict=False))
    lines = [f"dry run of run {run_id}: input planned from metadata, nothing written"
             + (f" but a probe object, deleted again ({probe})" if probe else ""),
             (f"input: {redact_url(cfg.url)}: {len(plan.files)} file(s), "
              f"{fmt or 'no rows'}, {plan.total_rows} rows")]
    lines += [_file_line(url, rows[url], widths.get(url), fmt)
              for url in plan.files[:LISTED_FILES]]
    if len(plan.files) > LISTED_FILES:
        lines.append(f"  ... and {len(plan.files) - LISTED_FILES} more file(s)")
    lines.append(f"columns: {_vector_source(fmt, cfg.vector_column)}, ids "
                 + (f"from column {cfg.id_column!r}" if fmt != "npy" and cfg.id_column
                    else f"from {redact_url(cfg.ids_url)}" if fmt == "npy" and cfg.ids_url
                    else "the rows' global positions"))
    lines.append(f"dimension: {_dimension(plan, cfg.dim)}")
    layout = ShardLayout(encode.rows_per_shard, plan.total_rows)
    line = f"shards: {layout.shards} of {encode.rows_per_shard} rows (encode.rows_per_shard)"
    if layout.shards:
        start, stop = layout.bounds(layout.shards - 1)
        if stop - start > encode.rows_per_shard:
            line += f", the last {stop - start} (a remainder under half a shard joins it)"
        elif stop - start < encode.rows_per_shard:
            line += f", the last {stop - start}"
    lines.append(line)
    lines.append(f"codecs: {', '.join(encode.codecs)}")
    lines.append(f"output: {store.url} ({output}); run folder "
                 f"{store.url_of(f'runs/{run_id}')}/")
    lines.append(f"index: {f'latest version {latest}' if latest else 'no version yet'}; the "
                 f"run would publish version {latest + 1} if its gate passes")
    return lines


def _dimension(plan: InputPlan, dim: int | None) -> str:
    variable = sum(1 for w in plan.widths if w is None)
    lists = (f"; {variable} file(s) of variable-length lists: their rows of another length "
             f"become wrong_dimension dead letters" if variable else "")
    if plan.dim is None:
        return ("none: no file's metadata fixes a width and no row has a vector, so every "
                "row would be rejected (set input.dim)")
    if dim is not None:
        return f"{dim} (input.dim; every fixed width in the files' metadata matches){lists}"
    if variable == len(plan.widths):
        return (f"{plan.dim} (the most common length among the first rows; set input.dim "
                f"to be sure){lists}")
    return f"{plan.dim} (from the files' metadata){lists}"
