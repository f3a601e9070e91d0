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

``run_id`` is ``output.run_id``, or ``<name>-<16 hex>`` derived from the config digest and a
fingerprint of the planned input files (names and sizes): re-running the same job on the same
input addresses the same run folder and writes byte-identical shards.
"""

from __future__ import annotations

import functools
import hashlib
import json

import apache_beam as beam

from semq_transforms.codecs import max_abs_value
from semq_transforms.config import JobConfig, config_digest
from semq_transforms.format.manifest import Manifest
from semq_transforms.format.store import IndexStore
from semq_transforms.sample_data import ensure_sample_data
from semq_transforms.transforms.encode import (
    EncodeShards,
    MergeNeighbors,
    ReadEncodeShards,
    SampleQueries,
)
from semq_transforms.transforms.planning import sample_splits
from semq_transforms.transforms.publish import PublishIndex, ReadTotals
from semq_transforms.transforms.read import ReadEmbeddings, ReadShards, WriteDeadLetters
from semq_transforms.transforms.sources import filesystem_for

__all__ = ["input_fingerprint", "make_read", "published_version", "run_id_for"]

#: Splits (at most) whose heads the query sample is drawn from.
SAMPLE_SPLITS = 64


def make_read(config: JobConfig) -> ReadEmbeddings:
    """The input transform of ``config`` (its plan is made on first use)."""
    cfg = config.input
    return ReadEmbeddings(cfg.url, format=cfg.format, vector_column=cfg.vector_column,
                          id_column=cfg.id_column, ids_url=cfg.ids_url, dim=cfg.dim,
                          batch_rows=cfg.batch_rows,
                          reject_zero_vectors=config.validation.reject_zero_vectors,
                          max_abs_value=max_abs_value(config.encode.codecs),
                          storage_options=cfg.storage_options)


def input_fingerprint(read: ReadEmbeddings, config: JobConfig) -> str:
    """SHA-256 (hex) of the planned input files' names and sizes, in plan order."""
    fs = filesystem_for(config.input.url, config.input.storage_options)
    files = [[path, int(fs.size(path))] for path in read.plan.files]
    text = json.dumps(files, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def run_id_for(config: JobConfig, fingerprint: str) -> str:
    """``output.run_id``, or ``<name>-<16 hex of sha256(config digest + fingerprint)>``."""
    if config.output.run_id:
        return config.output.run_id
    digest = hashlib.sha256(f"{config_digest(config)}:{fingerprint}".encode("ascii"))
    return f"{config.name[:100]}-{digest.hexdigest()[:16]}"


def published_version(config: JobConfig, run_id: str) -> Manifest | None:
    """The index's latest manifest if it was published by run ``run_id`` (same config, same
    input: there is nothing new to publish), else None."""
    store = IndexStore(config.output.index_url, storage_options=config.output.storage_options)
    version = store.latest_version()
    if version is None:
        return None
    latest = store.read_manifest(version)
    return latest if latest.run_id == run_id else None


class _IngestJob(beam.PTransform):
    """The whole job on a PBegin; its output is a PCollection of one report dict. Built by
    :meth:`JobConfig.create_transform`; planning (and, for ``input.generate_sample``, writing
    the sample data) happens on first use of :attr:`read` / :attr:`run_id` or at expansion."""

    def __init__(self, config: JobConfig) -> None:
        super().__init__()
        self._config = config

    @property
    def config(self) -> JobConfig:
        return self._config

    @functools.cached_property
    def read(self) -> ReadEmbeddings:
        """The planned input (raises ``InputReadError`` / ``ValueError`` for bad input)."""
        cfg = self._config.input
        if cfg.generate_sample:
            ensure_sample_data(cfg.url, **({"dim": cfg.dim} if cfg.dim else {}))
        read = make_read(self._config)
        _ = read.plan
        return read

    @functools.cached_property
    def fingerprint(self) -> str:
        return input_fingerprint(self.read, self._config)

    @property
    def run_id(self) -> str:
        return run_id_for(self._config, self.fingerprint)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        config, out, validation = self._config, self._config.output, self._config.validation
        read, run_id = self.read, self.run_id
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
                         queries=sample, k=validation.k,
                         storage_options=out.storage_options))
        _ = encoded.dead_letters | "Write dead letters" >> WriteDeadLetters(
            f"{index_url}/runs/{run_id}/dead_letters.parquet",
            storage_options=out.storage_options)
        totals = encoded.counts | "Sum read counts" >> ReadTotals()
        neighbors = encoded.neighbors | "Merge neighbors" >> MergeNeighbors(k=validation.k)
        return encoded.metas | "Validate and publish" >> PublishIndex(
            index_url, run_id=run_id, dim=read.plan.dim, codecs=config.encode.codecs,
            totals=totals, dead_letters=encoded.dead_letters, neighbors=neighbors,
            sample=sample, rows_planned=read.plan.total_rows, k=validation.k,
            min_recall_at_k=validation.min_recall_at_k,
            max_rejected_fraction=validation.max_rejected_fraction,
            input_fingerprint=self.fingerprint, safe_config=config.model_dump_safe(),
            storage_options=out.storage_options)
