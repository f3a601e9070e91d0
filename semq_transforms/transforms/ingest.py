"""The whole ingestion job as one PTransform, built from a :class:`~semq_transforms.config.JobConfig`.

    job = config.create_transform()     # the config builds the (private) transform
    _ = pipeline | "Ingest" >> job      # plans the input while the pipeline is built
    job.run_id                          # the run folder under <index>/runs/

Stages (each a public transform of :mod:`semq_transforms.transforms`):

1. ``ReadEmbeddings.only(...) | SampleQueries``: a seeded query sample from the heads of up
   to 64 splits.
2. ``ReadEncodeShards(ReadShards, EncodeShards)``: the input plan (metadata only) is cut into
   shards of ``encode.rows_per_shard`` global positions; repeated ids are found from the ids
   alone; each shard is read and checked (dead letters with reasons), then fitted, encoded and
   written in the same step, with per-shard exact and compressed top-k of the sample.
   ``MergeNeighbors`` combines those.
3. ``PublishIndex``: the gate (row reconciliation, rejected fraction, recall@k), the commit of
   a new manifest version only if it passes, and the report under ``runs/<run_id>/``.

``run_id`` is ``output.run_id``, or ``<name>-<16 hex>`` derived from the config digest and the
input fingerprint (:func:`input_fingerprint`: each planned file's path, size and change token):
re-running the same job on the same input addresses the same run folder and writes
byte-identical shards.

Run folders of published versions are never written: when the transform is applied (before
anything is written), :func:`check_run_folder` raises :class:`~semq_transforms.errors.
NothingToPublishError` if the latest version was published from the same input fingerprint
and config, and :class:`~semq_transforms.errors.RunFolderInUseError` if ``runs/<run_id>/``
belongs to any other committed version.

The other checks made before any row is read (:mod:`~semq_transforms.transforms.preflight`):
planning refuses a file whose metadata fixes a vector width other than ``input.dim``
(``DimensionMismatchError``), and the output location must exist and take a write
(``OutputLocationError``). :meth:`_IngestJob.plan_only` makes them all and describes the
plan without running it (the job's ``--dry-run``).
"""

from __future__ import annotations

import functools
import hashlib
import json
import time
from typing import Any

import apache_beam as beam

from semq_transforms.codecs import max_abs_value
from semq_transforms.config import JobConfig, config_digest
from semq_transforms.errors import ConfigError, NothingToPublishError, SemqError
from semq_transforms.format.manifest import Manifest
from semq_transforms.format.store import IndexStore
from semq_transforms.sample_data import ensure_sample_data
from semq_transforms.transforms._storage import guard
from semq_transforms.transforms.encode import (
    EncodeShards,
    MergeNeighbors,
    ReadEncodeShards,
    SampleQueries,
)
from semq_transforms.transforms.planning import sample_splits
from semq_transforms.transforms.preflight import (
    OutputLocationError,
    check_dimensions,
    check_output_location,
    describe_plan,
    one_line,
    probe_output,
)
from semq_transforms.transforms.publish import (
    Gate,
    PublishIndex,
    ReadTotals,
    complete_report,
    read_report,
)
from semq_transforms.transforms.read import ReadEmbeddings, ReadShards, WriteDeadLetters
from semq_transforms.transforms.sources import filesystem_for

__all__ = ["CHANGE_TOKEN_KEYS", "change_token", "check_run_folder", "input_fingerprint",
           "make_read", "run_id_for"]

#: Splits (at most) whose heads the query sample is drawn from.
SAMPLE_SPLITS = 64

#: ``fs.info`` keys naming an object's content or version on object stores: the entity tag
#: (S3, GCS, Azure, HTTP servers), GCS's generation number and MD5. Where any is present, these
#: are a file's change token; elsewhere (local files, ``memory://``) it is ``fs.ukey``.
CHANGE_TOKEN_KEYS = ("ETag", "etag", "generation", "md5Hash")


def make_read(config: JobConfig) -> ReadEmbeddings:
    """The input transform of ``config`` (its plan is made on first use)."""
    cfg = config.input
    return ReadEmbeddings(cfg.url, format=cfg.format, vector_column=cfg.vector_column,
                          id_column=cfg.id_column, ids_url=cfg.ids_url, dim=cfg.dim,
                          batch_rows=cfg.batch_rows,
                          reject_zero_vectors=config.validation.reject_zero_vectors,
                          max_abs_value=max_abs_value(config.encode.codecs),
                          storage_options=cfg.storage_options)


def change_token(fs: Any, path: str, info: dict[str, Any]) -> str:
    """What tells a rewrite of ``path`` from its metadata alone (``info`` is ``fs.info(path)``):
    the values of the :data:`CHANGE_TOKEN_KEYS` it holds (an S3 ETag changes whenever other
    bytes are written, and is the same in a listing and a HEAD answer, whose other fields
    differ), else ``fs.ukey(path)``, fsspec's hash of the file's info (local files: size,
    mtime, ctime, inode, ...; ``memory://``: the time the file was written)."""
    tags = [f"{key}={info[key]}" for key in CHANGE_TOKEN_KEYS if info.get(key) not in (None, "")]
    return ";".join(tags) if tags else f"ukey={fs.ukey(path)}"


def input_fingerprint(read: ReadEmbeddings, config: JobConfig) -> str:
    """SHA-256 (hex) of ``[path, size, change token]`` of each planned input file, in plan
    order (:func:`change_token`: file system metadata, one ``info`` per file; no input byte is
    read). Equal fingerprints mean the same files, each unchanged; a file rewritten with other
    bytes of the same size gets a new token. A rewrite can be taken for a change when it is
    not one (the same bytes written again, metadata touched): that only publishes an equal
    version. The metadata is that of the listing the plan was made from (same filesystem)."""
    fs = filesystem_for(config.input.url, config.input.storage_options)
    files = []
    for path in read.plan.files:
        info = guard(path, fs.info, path)   # (an error names the file)
        files.append([path, int(info["size"]), change_token(fs, path, info)])
    text = json.dumps(files, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def run_id_for(config: JobConfig, fingerprint: str) -> str:
    """``output.run_id``, or ``<name>-<16 hex of sha256(config digest + fingerprint)>``."""
    if config.output.run_id:
        return config.output.run_id
    digest = hashlib.sha256(f"{config_digest(config)}:{fingerprint}".encode("ascii"))
    return f"{config.name[:100]}-{digest.hexdigest()[:16]}"


def _published_config_digest(store: IndexStore, manifest: Manifest) -> str | None:
    """The config digest of the run that published ``manifest``, from the safe config in its
    report (None when the report is missing, unreadable or not that version's)."""
    report = read_report(store, manifest.run_id)
    if (report is None or report.get("version") != manifest.version
            or report.get("run_id") != manifest.run_id):
        return None
    try:
        return config_digest(dict(report["config"]))
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None


def _same_config(store: IndexStore, manifest: Manifest, config: JobConfig) -> bool:
    """Whether ``manifest`` was published with ``config`` (equal config digests). A derived
    run id holds the digest (with the stored fingerprint, it must give the stored run id);
    with ``output.run_id`` set, the digest of the safe config in that run's report is
    compared."""
    if manifest.input_fingerprint is None:
        return False
    if not config.output.run_id:
        return run_id_for(config, manifest.input_fingerprint) == manifest.run_id
    return _published_config_digest(store, manifest) == config_digest(config)


def check_run_folder(config: JobConfig, run_id: str, fingerprint: str, *,
                     complete: bool = True) -> int:
    """Refuse a run that would write into the run folder of a committed version.

    Returns, when no committed version of ``config.output.index_url`` uses ``runs/<run_id>/``
    (:meth:`IndexStore.run_version`: one existence check when the folder does not exist),
    the latest version at the time of the check (0 for none): later checks of the folder,
    while the job runs, need only read the versions committed after it.

    Raises:
        UnsafeCommitError: the index's storage cannot commit safely and the config does not
            allow an unsafe commit.
        NothingToPublishError: the folder is the latest version's, published from the same
            input fingerprint (stored in its manifest) and the same config digest.
        RunFolderInUseError: the folder belongs to a committed version otherwise (the input or
            config changed, or it is not the latest version): writing would overwrite files
            that version serves. Another ``output.run_id`` is needed.
        OutputLocationError: the index cannot be read (the message names it).

    ``complete=False`` (a dry run) writes nothing: a version committed by this very run whose
    report is missing is compared without completing the report first (with a fixed
    ``output.run_id`` it is then called in use where the real run would find nothing new).
    """
    store = IndexStore(config.output.index_url, storage_options=config.output.storage_options)
    store.check_commit(allow_unsafe=config.output.allow_unsafe_commit)
    try:
        # read before run_version, which then reads (or rules out) every version up to it
        latest = store.latest_version() or 0
        owner = store.run_version(run_id)
    except SemqError:
        raise
    except Exception as exc:  # noqa: BLE001 - a storage library's error, naming no URL
        raise OutputLocationError(f"cannot read the index at {store.url}: "
                                  f"{one_line(exc)}") from None
    if owner is None:
        return latest
    latest = max(latest, owner.version)  # (one committed since the listing above)
    if owner.run_id == run_id and complete:
        # this run committed and died before its report: finish the report first (it
        # also holds the config digest the comparison below needs)
        complete_report(store, owner)
    if owner.version == latest and owner.input_fingerprint == fingerprint \
            and _same_config(store, owner, config):
        raise NothingToPublishError(
            f"run {run_id!r}: input and config unchanged since version {owner.version}, the "
            f"latest of {store.url}; nothing to publish", run_id=run_id, version=owner.version)
    why = ("the input or the config changed since" if owner.version == latest
           else f"the latest version is {latest}, not")
    raise store.run_folder_in_use(
        run_id, owner.version, why=f"{why} that version",
        remedy="Set output.run_id to a name no version uses (or leave it null to derive one "
               "from the input and config)")


def _read_key(path: str | None) -> bytes | None:
    """The PEM bytes of ``output.signing_key_file`` (None: versions are not signed)."""
    if path is None:
        return None
    try:
        with open(path, "rb") as f:
            return f.read(64 << 10)
    except OSError as exc:
        raise ConfigError(f"output.signing_key_file {path}: {exc.strerror or exc}") from None


class _IngestJob(beam.PTransform):
    """The whole job on a PBegin; its output is a PCollection of one report dict. Built by
    :meth:`JobConfig.create_transform`; planning (and, for ``input.generate_sample``, writing
    the sample data) happens on first use of :attr:`read` / :attr:`run_id` or at expansion."""

    def __init__(self, config: JobConfig) -> None:
        super().__init__()
        self._config = config
        #: The latest version the run-folder check read when the job was built (0 before):
        #: the job's later checks of the folder read only the versions after it.
        self.folder_checked_through = 0
        #: When the run started (epoch seconds): the report's wall time counts from here,
        #: planning included. Only the report holds it.
        self.started_at = time.time()

    @property
    def config(self) -> JobConfig:
        return self._config

    @functools.cached_property
    def read(self) -> ReadEmbeddings:
        """The planned input, its schema checked against the config (raises
        ``InputReadError`` / ``ValueError`` for bad input, ``DimensionMismatchError`` when a
        file's metadata fixes a vector width other than ``input.dim``)."""
        cfg = self._config.input
        if cfg.generate_sample:
            ensure_sample_data(cfg.url, **({"dim": cfg.dim} if cfg.dim else {}))
        read = make_read(self._config)
        check_dimensions(read.plan, dim=cfg.dim, vector_column=cfg.vector_column)
        return read

    @functools.cached_property
    def fingerprint(self) -> str:
        return input_fingerprint(self.read, self._config)

    @property
    def run_id(self) -> str:
        return run_id_for(self._config, self.fingerprint)

    def check_run_folder(self) -> int:
        """:func:`check_run_folder` for this job (plans the input first); :meth:`expand` calls
        it before anything is written. Returns the latest version it checked."""
        return check_run_folder(self._config, self.run_id, self.fingerprint)

    def _store(self) -> IndexStore:
        out = self._config.output
        return IndexStore(out.index_url, storage_options=out.storage_options)

    def plan_only(self) -> list[str]:
        """The dry run: every check the job makes before it runs (the input planned from
        metadata and its schema checked, the output location, the run folder, a probe
        write on object stores), then the plan in words (lines to print). Writes nothing
        but the probe, which it deletes (``input.generate_sample`` still writes the sample
        input when there is none). Raises as the job would, ``NothingToPublishError``
        included."""
        read, run_id, store = self.read, self.run_id, self._store()
        where = check_output_location(store, run_id)
        latest = check_run_folder(self._config, run_id, self.fingerprint, complete=False)
        probe = probe_output(store, run_id)
        return describe_plan(self._config, read.plan, run_id=run_id, latest=latest,
                             output=where, probe=probe, store=store)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        config, out, validation = self._config, self._config.output, self._config.validation
        read, run_id, store = self.read, self.run_id, self._store()
        # raise before any shard or report is written: the output location first (writing
        # nothing), the run folder, then a probe write (never into a published version's
        # folder)
        check_output_location(store, run_id)
        checked = self.check_run_folder()
        probe_output(store, run_id)
        self.folder_checked_through = checked
        index_url = out.index_url.rstrip("/")
        splits, head_rows = sample_splits(read.plan.splits, queries=validation.sample_queries,
                                          seed=validation.seed, max_splits=SAMPLE_SPLITS)
        sample_read = read.only(splits, head_rows=head_rows)
        sample = ((pbegin | "Read sample splits" >> sample_read).batches
                  | "Sample queries" >> SampleQueries(n=validation.sample_queries,
                                                      seed=validation.seed))
        # read, encode and write each shard in one step (ReadEncodeShards: no shard's rows
        # stay referenced while the next shard is read)
        encoded = pbegin | "Read and encode shards" >> ReadEncodeShards(
            ReadShards(read, rows_per_shard=config.encode.rows_per_shard),
            EncodeShards(index_url, run_id=run_id, codecs=config.encode.codecs,
                         queries=sample, k=validation.k, folder_checked_through=checked,
                         storage_options=out.storage_options))
        _ = encoded.dead_letters | "Write dead letters" >> WriteDeadLetters(
            f"{index_url}/runs/{run_id}/dead_letters.parquet",
            storage_options=out.storage_options)
        totals = encoded.counts | "Sum read counts" >> ReadTotals()
        neighbors = encoded.neighbors | "Merge neighbors" >> MergeNeighbors(k=validation.k)
        return encoded.metas | "Validate and publish" >> PublishIndex(
            index_url, run_id=run_id, dim=read.plan.dim, codecs=config.encode.codecs,
            totals=totals, dead_letters=encoded.dead_letters, neighbors=neighbors,
            sample=sample, rows_planned=read.plan.total_rows,
            gate=Gate(k=validation.k, min_recall_at_k=validation.min_recall_at_k,
                      max_rejected_fraction=validation.max_rejected_fraction,
                      min_compression_ratio=validation.min_compression_ratio),
            input_fingerprint=self.fingerprint, safe_config=config.model_dump_safe(),
            folder_checked_through=checked, storage_options=out.storage_options,
            allow_unsafe_commit=out.allow_unsafe_commit,
            signing_key_pem=_read_key(out.signing_key_file),
            shard_bytes=encoded.shard_bytes, started_at=self.started_at)
