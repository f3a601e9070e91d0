"""The ingestion job: read embeddings, cut and encode shards, validate, publish.

    python -m pipelines.ingest --config configs/local.yaml [--index-url URL] [beam options]

Steps (one Beam pipeline built from the :class:`~semq_transforms.config.JobConfig`):
read the input files into batches (rejected rows go to
``<index>/runs/<run_id>/dead_letters.parquet``), cut the accepted rows into shards of
``encode.rows_per_shard`` global positions, encode and write each shard, measure recall@k of
the compressed search on a seeded query sample, and commit a new index version only if the
gate passes. A report is always written to ``<index>/runs/<run_id>/report.json`` and
``report.md``.

``run_id`` is ``output.run_id``, or ``<name>-<16 hex>`` derived from the config digest and a
fingerprint of the planned input files (names and sizes), so re-running the same job on the
same input writes to the same run folder (byte-identical shard files).

Without ``--runner`` the job runs locally on the pinned offline runner
(``semq_transforms.transforms.direct_options``); other Beam options are passed through.

Exit codes: 0 published, 1 the gate failed (nothing published; the report says why), 2 the
job could not run (bad config, unreadable input, pipeline error).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from semq_transforms.config import JobConfig, config_digest, load_config
from semq_transforms.errors import SemqError
from semq_transforms.format.store import IndexStore
from semq_transforms.sample_data import ensure_sample_data
from semq_transforms.transforms.encode import (
    CutShards,
    EncodeShards,
    MergeNeighbors,
    SampleQueries,
)
from semq_transforms.transforms.publish import PublishIndex, ReadTotals, report_path
from semq_transforms.transforms.read import ReadEmbeddings, WriteDeadLetters
from semq_transforms.transforms.runners import direct_options
from semq_transforms.transforms.sources import filesystem_for

__all__ = ["build_pipeline", "input_fingerprint", "main", "make_read", "run_id_for"]


def make_read(config: JobConfig) -> ReadEmbeddings:
    """The input transform of ``config`` (its plan is made on first use)."""
    cfg = config.input
    return ReadEmbeddings(cfg.url, format=cfg.format, vector_column=cfg.vector_column,
                          id_column=cfg.id_column, ids_url=cfg.ids_url, dim=cfg.dim,
                          batch_rows=cfg.batch_rows,
                          reject_zero_vectors=config.validation.reject_zero_vectors,
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


class _Ingest(beam.PTransform):
    """The whole job on a PBegin; its output is a PCollection of one report dict."""

    def __init__(self, config: JobConfig, *, read: ReadEmbeddings, run_id: str,
                 fingerprint: str) -> None:
        super().__init__()
        self._config = config
        self._read = read
        self._run_id = run_id
        self._fingerprint = fingerprint

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        config, out, validation = self._config, self._config.output, self._config.validation
        index_url = out.index_url.rstrip("/")
        read = pbegin | "Read embeddings" >> self._read
        _ = read.dead_letters | "Write dead letters" >> WriteDeadLetters(
            f"{index_url}/runs/{self._run_id}/dead_letters.parquet",
            storage_options=out.storage_options)
        sample = read.batches | "Sample queries" >> SampleQueries(
            n=validation.sample_queries, seed=validation.seed)
        totals = read.batches | "Count rows read" >> ReadTotals()
        encoded = (read.batches
                   | "Cut shards" >> CutShards(config.encode.rows_per_shard)
                   | "Encode shards" >> EncodeShards(
                       index_url, run_id=self._run_id, codecs=config.encode.codecs,
                       queries=sample, k=validation.k, storage_options=out.storage_options))
        neighbors = encoded.neighbors | "Merge neighbors" >> MergeNeighbors(k=validation.k)
        return encoded.metas | "Validate and publish" >> PublishIndex(
            index_url, run_id=self._run_id, dim=self._read.plan.dim,
            codecs=config.encode.codecs, totals=totals, dead_letters=read.dead_letters,
            neighbors=neighbors, sample=sample, rows_planned=self._read.plan.total_rows,
            k=validation.k, min_recall_at_k=validation.min_recall_at_k,
            max_rejected_fraction=validation.max_rejected_fraction,
            input_fingerprint=self._fingerprint, safe_config=config.model_dump_safe(),
            storage_options=out.storage_options)


def build_pipeline(pipeline: beam.Pipeline, config: JobConfig) -> str:
    """Add the job to ``pipeline`` (planning the input now); returns the run id.

    Generates the sample dataset first when ``input.generate_sample`` is set. Raises
    ``SemqError`` subclasses for config and input problems (before anything is written).
    """
    if config.input.generate_sample:
        kwargs = {"dim": config.input.dim} if config.input.dim else {}
        ensure_sample_data(config.input.url, **kwargs)
    read = make_read(config)
    fingerprint = input_fingerprint(read, config)
    run_id = run_id_for(config, fingerprint)
    _ = pipeline | "Ingest" >> _Ingest(config, read=read, run_id=run_id,
                                       fingerprint=fingerprint)
    return run_id


def pipeline_options(beam_args: Sequence[str]) -> PipelineOptions:
    """The user's Beam options; without ``--runner``, the pinned offline local runner
    (keeping any ``--direct_running_mode`` / ``--direct_num_workers`` given)."""
    user = PipelineOptions(list(beam_args))
    if any(arg == "--runner" or arg.startswith("--runner=") for arg in beam_args):
        return user
    direct = user.view_as(DirectOptions)
    mode = direct.direct_running_mode or "in_memory"
    pinned = direct_options(mode, direct.direct_num_workers or 2)
    return PipelineOptions(list(beam_args), **pinned.get_all_options(drop_default=True))


def _parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m pipelines.ingest",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="job config YAML (path or URL)")
    parser.add_argument("--index-url", help="override output.index_url")
    return parser.parse_known_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args, beam_args = _parse(argv)
    try:
        config = load_config(args.config)
        if args.index_url:
            config = config.model_copy(update={"output": config.output.model_copy(
                update={"index_url": args.index_url})})
        options = pipeline_options(beam_args)
        pipeline = beam.Pipeline(options=options)
        run_id = build_pipeline(pipeline, config)
    except (SemqError, ValueError) as exc:
        print(f"ingest: {exc}", file=sys.stderr)
        return 2
    try:
        pipeline.run().wait_until_finish()
        store = IndexStore(config.output.index_url, storage_options=config.output.storage_options)
        with store.open_read(report_path(run_id)) as f:
            report: dict[str, Any] = json.loads(f.read())
    except Exception as exc:  # noqa: BLE001 - any pipeline failure means "could not run"
        print(f"ingest: the pipeline failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    counts, gate = report["counts"], report["gate"]
    recall = report["validation"]["recall_at_k"]
    print(f"run {run_id}: read {counts['rows_read']} rows, encoded {counts['rows_encoded']} "
          f"in {counts['shards']} shards, rejected {counts['dead_letters']}; "
          f"recall@{report['validation']['k']} "
          f"{'n/a' if recall is None else f'{recall:.4f}'}; "
          f"compression {report['bytes']['compression_ratio'] or 0:.2f}x")
    report_url = store.url_of(report_path(run_id))
    if gate["passed"]:
        print(f"published version {report['version']} of {store.url} (report: {report_url})")
        return 0
    print(f"NOT published: {'; '.join(gate['problems'])} (report: {report_url})")
    return 1


if __name__ == "__main__":
    sys.exit(main())
