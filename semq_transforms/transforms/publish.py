"""The end of the ingestion pipeline: the publish gate, the commit and the run report.

One final DoFn receives the list of written :class:`ShardMeta` (``beam.combiners.ToList``:
metadata only, a few hundred bytes per shard) and, as side inputs, the read totals, the
dead-letter count and the merged top-k of the query sample. It evaluates the gate
(:func:`gate_problems`), calls ``IndexStore.commit`` only if the gate passes, and always
writes ``runs/<run_id>/report.json``, ``report.md`` and ``report.svg`` under the index
(counts, bytes and their split into codes per level, params, ids and other, compression,
recall per shard and overall, the verdict, the run's wall time and the *redacted* config).
The Markdown and the plot are rendered by :mod:`semq_transforms.report`.

    published = metas | "Publish" >> PublishIndex(index_url, run_id=..., dim=..., ...)
    # PCollection of one dict: the report

Counters (namespace ``semq``): ``versions_published``, ``gate_failed``.
"""

from __future__ import annotations

import collections
import json
import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from semq_transforms.config import redact_url
from semq_transforms.errors import SemqError
from semq_transforms.eval import knn_intersection_measure
from semq_transforms.format.layout import ShardBytes
from semq_transforms.format.manifest import Manifest
from semq_transforms.format.meta import ShardMeta
from semq_transforms.format.signing import load_private_key
from semq_transforms.format.store import IndexStore
from semq_transforms.levels import level_codecs
from semq_transforms.report.figures import byte_split, run_timing, shard_split
from semq_transforms.report.files import read_report, report_path
from semq_transforms.report.markdown import report_markdown
from semq_transforms.report.plot import report_svg
from semq_transforms.transforms._worker import worker_setup
from semq_transforms.transforms.encode import ShardNeighbors
from semq_transforms.transforms.read import METRICS_NAMESPACE
from semq_transforms.transforms.rows import REJECT_REASONS, Batch

__all__ = ["Gate", "PublishIndex", "ReadTotals", "complete_report", "failure_report", "gate_problems",
           "read_report", "report_markdown", "report_path", "validation_notes", "write_report"]

logger = logging.getLogger(__name__)

#: Read totals, then the rejected rows per reason (``rejected_<reason>``).
TOTAL_KEYS = ("rows_read", "rows_accepted", "rows_rejected", "bytes_read",
              *(f"rejected_{reason}" for reason in REJECT_REASONS))


#: The suffix of the report a run writes just before it commits (``report.pending.json``).
PENDING_SUFFIX = "pending.json"

class _SumTotalsFn(beam.CombineFn):
    """Batches, or per-shard counts dicts from ``ReadShards`` -> {rows_read, rows_accepted,
    rows_rejected, bytes_read, rejected_<reason> for each reason} (:data:`TOTAL_KEYS`)."""

    def create_accumulator(self) -> dict[str, int]:
        return dict.fromkeys(TOTAL_KEYS, 0)

    def add_input(self, acc: dict[str, int], item: Batch | Mapping[str, int]) -> dict[str, int]:
        if isinstance(item, Batch):
            reasons = collections.Counter(f"rejected_{d['reason']}" for d in item.rejected)
            item = {"rows_read": item.rows, "rows_accepted": item.accepted,
                    "rows_rejected": len(item.rejected), "bytes_read": item.bytes_read,
                    **reasons}
        for key in TOTAL_KEYS:
            acc[key] += item.get(key, 0)     # per-shard counts hold the reasons seen
        return acc

    def merge_accumulators(self, accs: Any) -> dict[str, int]:
        out = self.create_accumulator()
        for acc in accs:
            for key in TOTAL_KEYS:
                out[key] += acc[key]
        return out

    def extract_output(self, acc: dict[str, int]) -> dict[str, int]:
        return acc


@beam.typehints.with_input_types(dict)
class ReadTotals(beam.PTransform):
    """Batches (or ``ReadShards`` counts) -> one dict of read totals (:data:`TOTAL_KEYS`:
    ``rows_read``, ``rows_accepted``, ``rows_rejected``, ``bytes_read`` and
    ``rejected_<reason>`` for every reason, zeros included)."""

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return batches | "Sum read totals" >> beam.CombineGlobally(_SumTotalsFn())


@dataclass(frozen=True)
class Gate:
    """What a run must reach to be published (``ValidationConfig``'s gate fields).

    Attributes:
        k: neighbors per query of the recall measure.
        min_recall_at_k: the overall recall@k of the compressed search must reach this.
        max_rejected_fraction: at most this fraction of the rows read may be rejected.
        min_compression_ratio: float32 bytes of a shard's rows over its file's bytes must
            reach this in every shard (0: no check; per-shard params make tiny shards bigger
            than their input).
    """

    k: int
    min_recall_at_k: float
    max_rejected_fraction: float
    min_compression_ratio: float = 0.0


def gate_problems(*, gate: Gate, rows_planned: int | None, totals: Mapping[str, int],
                  dead_letters: int, rows_encoded: int, recall: float | None,
                  shard_sizes: Sequence[tuple[str, int, int]]) -> list[str]:
    """Why the run must not be published (empty list: publish).

    Checks: the rows read are the rows planned (when there is a plan); rows read == rows
    encoded + rows rejected (rejected counted from the dead letters, and equal to the
    readers' own count); the rejected fraction, ``recall`` (overall recall@k of the compressed search on the query
    sample) and each shard's compression ratio against ``gate``. ``shard_sizes``: ``(path,
    float32 bytes of its rows, file bytes)`` per shard.
    """
    k, min_recall_at_k = gate.k, gate.min_recall_at_k
    max_rejected_fraction = gate.max_rejected_fraction
    problems = []
    rows_read = totals["rows_read"]
    if rows_planned is not None and rows_read != rows_planned:
        problems.append(f"rows read ({rows_read}) != rows planned from the input metadata "
                        f"({rows_planned})")
    if dead_letters != totals["rows_rejected"]:
        problems.append(f"dead letters ({dead_letters}) != rows rejected by the readers "
                        f"({totals['rows_rejected']})")
    if rows_read != rows_encoded + dead_letters:
        problems.append(f"rows read ({rows_read}) != rows encoded ({rows_encoded}) + rows "
                        f"rejected ({dead_letters})")
    if rows_encoded == 0:
        problems.append("no row was accepted: nothing to publish")
    fraction = dead_letters / rows_read if rows_read else 0.0
    if fraction > max_rejected_fraction:
        problems.append(f"rejected fraction {fraction:.6f} > max_rejected_fraction "
                        f"{max_rejected_fraction} ({dead_letters} of {rows_read} rows; see "
                        f"dead_letters.parquet)")
    if recall is None:
        if rows_encoded:
            problems.append(f"recall@{k} could not be measured (no query sample)")
    elif recall < min_recall_at_k:
        problems.append(f"recall@{k} {recall:.4f} < min_recall_at_k {min_recall_at_k}")
    problems.extend(_compression_problems(gate.min_compression_ratio, shard_sizes))
    return problems


def _compression_problems(minimum: float, shard_sizes: Sequence[tuple[str, int, int]]
                          ) -> list[str]:
    """The gate's size check: every shard at least ``minimum`` times smaller than its rows'
    float32 bytes (so the whole index is too)."""
    below = sorted((float_bytes / file_bytes, path, float_bytes, file_bytes)
                   for path, float_bytes, file_bytes in shard_sizes
                   if file_bytes and float_bytes < minimum * file_bytes)
    if not below:
        return []
    ratio, path, float_bytes, file_bytes = below[0]
    overall = sum(f for _, f, _ in shard_sizes) / sum(b for _, _, b in shard_sizes)
    return [(f"compression below min_compression_ratio {minimum} in {len(below)} of "
            f"{len(shard_sizes)} shards (whole index {overall:.2f}x): the least, {path}, "
            f"{ratio:.2f}x < {minimum}, {file_bytes} bytes written for {float_bytes} bytes of "
            f"float32; per-shard params dominate small shards (see the report's size table): "
            f"raise encode.rows_per_shard, or lower validation.min_compression_ratio to "
            f"publish anyway")]


def validation_notes(*, k: int, rows_encoded: int, recall: float | None,
                     shard_rows: Sequence[int] = ()) -> list[str]:
    """What the reader of a report should know about its recall that does not fail the
    gate: a ``k`` at or above the rows encoded makes recall@k 1.0 whatever the codes (every
    row is in both top-k lists), and so does it for a shard of at most ``k`` rows
    (``shard_rows``: rows of each shard)."""
    if recall is None:
        return []
    if k >= rows_encoded:
        return [(f"recall@{k} says nothing about the codes: k ({k}) >= rows encoded "
                 f"({rows_encoded}), so every row is in both top-{k} lists; lower "
                 f"validation.k below the index's rows")]
    small = sum(1 for rows in shard_rows if rows <= k)
    if small:
        return [(f"{small} of {len(shard_rows)} shards hold at most k ({k}) rows: their "
                 f"recall@{k} is 1.0 whatever the codes")]
    return []


def failure_report(*, run_id: str, index_url: str, input_fingerprint: str | None,
                   codecs: Sequence[str], dim: int | None, safe_config: Mapping[str, Any],
                   error: str) -> dict[str, Any]:
    """The report of a run that failed before its gate (a file that cannot be read, a
    worker error): the same keys as a gate's report, ``counts`` / ``bytes`` / ``validation``
    None (what was counted is lost with the failed pipeline), the error as the problem."""
    return _report(run_id=run_id, index_url=index_url, version=None,
                   input_fingerprint=input_fingerprint, counts=None, bytes_=None,
                   validation=None, problems=[f"the run failed before its gate: {error}"],
                   codecs=codecs, dim=dim, safe_config=safe_config)


def _report(*, run_id: str, index_url: str, version: int | None,
            input_fingerprint: str | None, counts: dict | None, bytes_: dict | None,
            validation: dict | None, problems: list[str], codecs: Sequence[str],
            dim: int | None, safe_config: Mapping[str, Any],
            timing: dict | None = None) -> dict[str, Any]:
    """A report dict (every report has these keys; passed = a version was committed)."""
    return {"run_id": run_id, "index_url": redact_url(index_url), "version": version,
            "input_fingerprint": input_fingerprint, "counts": counts, "bytes": bytes_,
            "validation": validation,
            "gate": {"passed": version is not None, "problems": problems},
            "codecs": list(codecs), "dim": dim, "timing": timing, "config": dict(safe_config)}


def write_report(store: IndexStore, report: Mapping[str, Any]) -> None:
    """``report`` as ``runs/<run_id>/report.json``, ``report.md`` and (when it lists
    shards) the plot ``report.svg`` that ``report.md`` shows (JSON last: a run whose
    ``report.json`` exists is reported in full)."""
    svg = report_svg(report)
    if svg is not None:
        with store.open_write(report_path(report["run_id"], "svg")) as f:
            f.write(svg.encode("utf-8"))
    with store.open_write(report_path(report["run_id"], "md")) as f:
        f.write(report_markdown(report).encode("utf-8"))
    _write_json(store, report_path(report["run_id"], "json"), report)


def _write_json(store: IndexStore, rel_path: str, report: Mapping[str, Any]) -> None:
    with store.open_write(rel_path) as f:
        f.write(json.dumps(report, indent=2, sort_keys=True).encode("utf-8"))


def _committed_by_this_run(manifest: Manifest, metas: Sequence[ShardMeta], run_id: str,
                           fingerprint: str | None) -> bool:
    """Whether ``manifest`` is the commit of exactly these shards by this run (a retried
    publish step finds its own commit): same run id and input fingerprint, the very shard
    metadata (paths, digests, sizes, validation)."""
    return (manifest.run_id == run_id and manifest.input_fingerprint == fingerprint
            and list(manifest.shards) == list(metas))


def _report_version(store: IndexStore, run_id: str) -> int | None:
    """The version the run's ``report.json`` says it published (None: no such report, or
    one of a run that published nothing)."""
    version = (read_report(store, run_id) or {}).get("version")
    return version if type(version) is int else None


def complete_report(store: IndexStore, manifest: Manifest) -> bool:
    """Finish the report of the run that committed ``manifest`` if that run died between
    its commit and its report: ``runs/<run_id>/report.json`` (and ``.md``) are written from
    the pending copy the run wrote before committing, with the version filled in.

    Returns whether the run's ``report.json`` reports ``manifest``'s version afterwards
    (False: no pending copy that matches ``manifest``: its run id, input fingerprint and
    shard files).
    """
    run_id = manifest.run_id
    if _report_version(store, run_id) == manifest.version:
        return True
    # (a report.json of another outcome, e.g. of an earlier attempt that failed, is replaced)
    pending = read_report(store, run_id, PENDING_SUFFIX)
    if pending is None or not isinstance(pending.get("validation"), dict):
        return False
    shards = pending["validation"].get("shards")
    listed = [(s.path, s.file_bytes) for s in manifest.shards]
    if (pending.get("run_id") != run_id
            or pending.get("input_fingerprint") != manifest.input_fingerprint
            or not isinstance(shards, list) or not all(isinstance(s, dict) for s in shards)
            or [(s.get("path"), s.get("file_bytes")) for s in shards] != listed):
        return False
    pending["version"] = manifest.version
    pending["gate"] = {"passed": True, "problems": []}
    write_report(store, pending)
    store.remove(report_path(run_id, PENDING_SUFFIX))
    logger.info("%s: completed the report of run %s (version %d) from its pending copy",
                store.url, run_id, manifest.version)
    return True


class _PublishFn(beam.DoFn):
    """[ShardMeta] + side inputs -> the report dict; commits only if the gate passes."""

    def __init__(self, index_url: str, *, run_id: str, dim: int | None, codecs: Sequence[str],
                 rows_planned: int | None, gate: Gate, input_fingerprint: str | None,
                 safe_config: Mapping[str, Any] | None, folder_checked_through: int,
                 storage_options: Mapping[str, Any] | None,
                 allow_unsafe_commit: bool = False, signing_key_pem: bytes | None = None,
                 started_at: float | None = None) -> None:
        super().__init__()
        self._index_url = index_url
        self._started_at = started_at
        self._allow_unsafe_commit = allow_unsafe_commit
        self._signing_key_pem = signing_key_pem
        self._folder_checked_through = folder_checked_through
        self._run_id = run_id
        self._dim = dim
        self._codecs = list(codecs)
        self._rows_planned = rows_planned
        self._gate = gate
        self._k = gate.k
        self._fingerprint = input_fingerprint
        self._safe_config = dict(safe_config) if safe_config else {}
        self._storage_options = dict(storage_options) if storage_options else None
        self._published = Metrics.counter(METRICS_NAMESPACE, "versions_published")
        self._gate_failed = Metrics.counter(METRICS_NAMESPACE, "gate_failed")

    def setup(self) -> None:
        worker_setup()
        self._signing_key = (None if self._signing_key_pem is None
                             else load_private_key(self._signing_key_pem))

    def process(self, metas: list[ShardMeta], totals: Mapping[str, int], dead_letters: int,
                neighbors: ShardNeighbors | None, sample: tuple,
                shard_bytes: Sequence[ShardBytes] | None = None) -> Any:
        finished_at = time.time()      # the report's wall time ends here, before the commit
        metas = sorted(metas, key=lambda m: m.path)
        splits = None if shard_bytes is None else {b.path: b for b in shard_bytes}
        store = IndexStore(self._index_url, storage_options=self._storage_options)
        # A version that uses this run folder: this run's own commit, when the runner
        # retries the bundle after it (every distributed runner may), else a version
        # published into the folder since the pipeline was built, whose files must not
        # change.
        owner = store.run_version(self._run_id, after=self._folder_checked_through)
        if owner is not None and not _committed_by_this_run(owner, metas, self._run_id,
                                                            self._fingerprint):
            raise store.run_folder_in_use(self._run_id, owner.version)
        rows_encoded = sum(m.rows for m in metas)
        recall = (None if neighbors is None
                  else knn_intersection_measure(neighbors.exact_I, neighbors.approx_I))
        problems = gate_problems(
            gate=self._gate, rows_planned=self._rows_planned, totals=totals,
            dead_letters=dead_letters, rows_encoded=rows_encoded, recall=recall,
            shard_sizes=[(m.path, m.rows * (self._dim or 0) * 4, m.file_bytes)
                         for m in metas])

        def report(version: int | None) -> dict[str, Any]:
            return self._report(metas, totals, dead_letters, rows_encoded, recall,
                                len(sample[0]), problems, version, splits, finished_at)

        if owner is not None and problems:
            # the same shards under a gate that fails (another config with this run id):
            # not this run's commit, whatever the files say
            raise store.run_folder_in_use(self._run_id, owner.version)
        version = owner.version if owner is not None else None
        error = None
        if owner is None and not problems:
            # What a rerun needs to finish the report if this process dies after the commit
            # (complete_report): everything the report says but the version.
            _write_json(store, report_path(self._run_id, PENDING_SUFFIX), report(None))
            try:
                manifest = store.commit(metas, dim=self._dim, codecs=self._codecs,
                                        run_id=self._run_id,
                                        input_fingerprint=self._fingerprint,
                                        allow_unsafe_commit=self._allow_unsafe_commit,
                                        signing_key=self._signing_key)
                version = manifest.version
            except SemqError as exc:
                error = exc
                problems.append(f"commit failed: {exc}")
        if owner is None or _report_version(store, self._run_id) != owner.version:
            write_report(store, report(version))     # (a replay keeps the first report)
        store.remove(report_path(self._run_id, PENDING_SUFFIX))
        if error is not None:
            raise error
        if owner is None:
            (self._published if version is not None else self._gate_failed).inc()
        yield report(version)

    def _report(self, metas: Sequence[ShardMeta], totals: Mapping[str, int],
                dead_letters: int, rows_encoded: int, recall: float | None, queries: int,
                problems: list[str], version: int | None,
                splits: Mapping[str, ShardBytes] | None, finished_at: float
                ) -> dict[str, Any]:
        bytes_out = sum(m.file_bytes for m in metas)
        # dim is None only when no input row has a vector (then none was encoded)
        float_bytes = rows_encoded * self._dim * 4 if rows_encoded else 0
        key = f"recall_at_{self._k}"

        def shard(m: ShardMeta) -> dict[str, Any]:
            return {"path": m.path, "rows": m.rows, "file_bytes": m.file_bytes,
                    "compression_ratio": m.rows * m.dim * 4 / m.file_bytes,
                    "bytes": shard_split(None if splits is None else splits.get(m.path)),
                    "recall_at_k": m.validation.get(key)}

        return _report(
            run_id=self._run_id, index_url=self._index_url, version=version,
            input_fingerprint=self._fingerprint,
            counts={"rows_planned": self._rows_planned, **totals,
                    "dead_letters": dead_letters, "rows_encoded": rows_encoded,
                    "shards": len(metas)},
            bytes_={"read": totals["bytes_read"], "float32": float_bytes, "out": bytes_out,
                    "compression_ratio": float_bytes / bytes_out if bytes_out else None,
                    **byte_split(metas, splits, dim=self._dim)},
            validation={
                "k": self._k, "queries": queries, "recall_at_k": recall,
                "notes": validation_notes(k=self._k, rows_encoded=rows_encoded, recall=recall,
                                          shard_rows=[m.rows for m in metas]),
                "min_recall_at_k": self._gate.min_recall_at_k,
                "max_rejected_fraction": self._gate.max_rejected_fraction,
                "min_compression_ratio": self._gate.min_compression_ratio,
                "shards": [shard(m) for m in metas]},
            problems=problems, codecs=self._codecs, dim=self._dim,
            safe_config=self._safe_config,
            timing=run_timing(self._started_at, finished_at, rows=totals["rows_read"]))


@beam.typehints.with_input_types(ShardMeta)
@beam.typehints.with_output_types(dict)
class PublishIndex(beam.PTransform):
    """ShardMeta -> one report dict; commits a new version only if the gate passes.

    Args:
        index_url: index prefix; run_id, dim, codecs: as for ``IndexStore.commit`` (``dim``
            None when no input row has a vector: nothing is committed then).
        totals: singleton PCollection from :class:`ReadTotals`.
        dead_letters: PCollection of dead-letter dicts (counted here).
        neighbors: singleton PCollection from ``MergeNeighbors`` (None when no shards).
        sample: singleton PCollection from ``SampleQueries``.
        shard_bytes: optional PCollection of :class:`ShardBytes`, one per shard (the
            ``shard_bytes`` output of ``EncodeShards``): the report splits the published
            bytes into codes, params, ids and other (without it: codes only).
        started_at: when the run started (``time.time()`` on the launcher): the report
            gives the wall time from then to the publish step, and rows read per second.
            Only the report holds it (no shard or manifest byte depends on it).
        rows_planned: total input rows of the read plan (None: no plan, as for a
            PCollection written by ``WriteSemqIndex``; the other reconciliations still hold).
        gate: what the run must reach to be published (:class:`Gate`).
        input_fingerprint: stored in the manifest.
        safe_config: the *redacted* config dict (``JobConfig.model_dump_safe()``) for the
            report; never pass ``model_dump()``.
        folder_checked_through: versions up to this one are known not to use the run folder;
            before committing, only later ones are read to check it (``EncodeShards``).
        storage_options: fsspec options for writing.
        allow_unsafe_commit: commit on storage without a create-if-absent write
            (``IndexStore.check_commit``).
        signing_key_pem: an Ed25519 private key as PEM bytes: each committed version is
            signed (``format/signing.py``). It travels with the pipeline to the worker that
            commits, as storage options do.
    """

    def __init__(self, index_url: str, *, run_id: str, dim: int | None, codecs: Sequence[str],
                 totals: beam.PCollection, dead_letters: beam.PCollection,
                 neighbors: beam.PCollection, sample: beam.PCollection,
                 rows_planned: int | None,
                 gate: Gate, input_fingerprint: str | None = None,
                 safe_config: Mapping[str, Any] | None = None,
                 folder_checked_through: int = 0,
                 storage_options: Mapping[str, Any] | None = None,
                 allow_unsafe_commit: bool = False,
                 signing_key_pem: bytes | None = None,
                 shard_bytes: beam.PCollection | None = None,
                 started_at: float | None = None) -> None:
        super().__init__()
        level_codecs(codecs)            # a typed error now, not on a worker at run time
        if signing_key_pem is not None:
            load_private_key(signing_key_pem)   # likewise
        self._fn = _PublishFn(index_url, run_id=run_id, dim=dim, codecs=codecs,
                              rows_planned=rows_planned, gate=gate,
                              input_fingerprint=input_fingerprint, safe_config=safe_config,
                              folder_checked_through=folder_checked_through,
                              storage_options=storage_options,
                              allow_unsafe_commit=allow_unsafe_commit,
                              signing_key_pem=signing_key_pem, started_at=started_at)
        self._totals = totals
        self._shard_bytes = shard_bytes
        self._dead_letters = dead_letters
        self._neighbors = neighbors
        self._sample = sample

    def expand(self, metas: beam.PCollection) -> beam.PCollection:
        dead_letter_count = (self._dead_letters
                             | "Count dead letters" >> beam.combiners.Count.Globally())
        return (metas
                | "Collect shard metadata" >> beam.combiners.ToList()
                | "Check gate and commit" >> beam.ParDo(
                    self._fn, beam.pvalue.AsSingleton(self._totals),
                    beam.pvalue.AsSingleton(dead_letter_count),
                    beam.pvalue.AsSingleton(self._neighbors),
                    beam.pvalue.AsSingleton(self._sample),
                    None if self._shard_bytes is None
                    else beam.pvalue.AsList(self._shard_bytes)))
