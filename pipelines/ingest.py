"""The ingestion job: read embeddings, cut and encode shards, validate, publish.

    python -m pipelines.ingest --config configs/local.yaml [--index-url URL] [--dry-run]
                               [beam options]

The job is :meth:`JobConfig.create_transform` (see :mod:`semq_transforms.transforms.ingest`):
each shard of ``encode.rows_per_shard`` global positions is read, checked, encoded and
written where it is read (rejected rows, including repeated ids, go to
``<index>/runs/<run_id>/dead_letters.parquet``), recall@k of the compressed search is
measured on a seeded query sample, and a new index version is committed only if the gate
passes. A report is always written to ``<index>/runs/<run_id>/report.json`` and ``report.md``.

``run_id`` is ``output.run_id``, or ``<name>-<16 hex>`` derived from the config digest and a
fingerprint of the planned input files (each file's path, size and change token from its
metadata: the ETag on S3, mtime/ctime/inode locally). If the index's latest version was
published from the same input fingerprint and the same config, the job does nothing and exits
0. A run whose folder ``runs/<run_id>/`` belongs to any other committed version (a fixed
``output.run_id`` reused on changed input or config) exits 2 before anything is written: pick
another ``output.run_id``.

Before any row is read, the job checks what it can from metadata and exits 2 with one line
naming the file or URL: a file whose metadata fixes a vector width (``fixed_size_list``, NPY)
other than ``input.dim`` ("got 384, expected 768"), an output location that does not exist or
cannot be written (local: the nearest existing folder is a writable directory; object stores:
the bucket exists and a probe object ``runs/<run_id>/.write-probe`` can be written and
deleted). ``--dry-run`` (or ``--plan-only``) makes these checks, prints the plan (files, rows,
shards, dimension, codecs, run id, output) and exits 0 without running the job
(:mod:`semq_transforms.transforms.preflight`).

Without ``--runner`` the job runs locally on the pinned offline runner
(``semq_transforms.transforms.direct_options``); other Beam options are passed through.

On a local runner, with stderr a terminal, the job shows its progress there (shards written
of planned, rows/s, time left: :mod:`semq_transforms.transforms.progress`); ``--quiet`` turns
it off. At the end it prints a summary (sizes, recall, wall time) and where ``report.md`` is.

Run as a program, the job first sets glibc's allocator up for shard-sized arrays
(:mod:`semq_transforms.allocator`; ``SEMQ_MALLOC_TUNING=0`` leaves it alone).

Exit codes: 0 published (or nothing new to publish; a dry run whose checks pass), 1 the gate
failed (nothing published; the report says why), 2 the job could not run (bad config,
unreadable input, a vector width other than ``input.dim``, an output location that cannot be
written, a run folder in use by a published version, pipeline error).
"""

from __future__ import annotations

import sys

from semq_transforms.allocator import tune_allocator

if __name__ == "__main__":
    # The job owns this process: set the allocator up for shard-sized arrays before Beam,
    # Arrow or BLAS start threads (a thread that allocates first keeps an arena of its own),
    # and export the settings to the worker processes the local runner may start.
    tune_allocator()

import logging

# Beam logs this when it is imported without its GCP clients (the [gcp] extra), which a local
# run does not need: a warning nobody can act on.
logging.getLogger().addFilter(lambda record: not str(record.msg).startswith("apitools not found"))

import argparse
import contextlib
import difflib
import json
from collections.abc import Sequence
from typing import Any

import apache_beam as beam
from apache_beam.options.pipeline_options import DirectOptions, PipelineOptions

from semq_transforms._urls import redact_log_records, redact_text
from semq_transforms.config import JobConfig, load_config
from semq_transforms.errors import NothingToPublishError, SemqError
from semq_transforms.format.store import IndexStore
from semq_transforms.report.units import human_bytes, human_count, human_seconds
from semq_transforms.sharding import ShardLayout
from semq_transforms.transforms.ingest import input_fingerprint, make_read, run_id_for
from semq_transforms.transforms.progress import runs_locally, show_progress
from semq_transforms.transforms.publish import failure_report, report_path, write_report
from semq_transforms.transforms.runners import direct_options

__all__ = ["build_pipeline", "input_fingerprint", "main", "make_read", "run_id_for"]


def build_pipeline(pipeline: beam.Pipeline, config: JobConfig) -> str:
    """Add the job to ``pipeline`` (planning the input now); returns the run id.

    Generates the sample dataset first when ``input.generate_sample`` is set. Raises
    ``SemqError`` subclasses for config and input problems, and ``NothingToPublishError`` /
    ``RunFolderInUseError`` when the run folder belongs to a published version (all before
    anything is written).
    """
    job = config.create_transform()
    _ = pipeline | "Ingest" >> job
    return job.run_id


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


#: The job's own command-line options (everything else goes to Beam).
JOB_OPTIONS = ("--config", "--index-url", "--dry-run", "--plan-only", "--quiet")


def _parse(argv: Sequence[str] | None) -> tuple[argparse.Namespace, list[str]]:
    parser = argparse.ArgumentParser(prog="python -m pipelines.ingest",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="job config YAML (path or URL)")
    parser.add_argument("--index-url", "--index_url", dest="index_url",
                        help="override output.index_url")
    # (--dry_run is also a Beam test option that does nothing on the local runner: taken
    # here, so no spelling of a dry run ever runs the job)
    parser.add_argument("--dry-run", "--dry_run", "--plan-only", "--plan_only",
                        dest="dry_run", action="store_true",
                        help="plan the input and check the schema and the output location, "
                             "print the plan and exit 0 without running the job (nothing is "
                             "written but a probe object on object stores, deleted again)")
    parser.add_argument("--quiet", action="store_true",
                        help="show no progress on stderr (shown only when stderr is a "
                             "terminal and the runner is local)")
    return parser.parse_known_args(argv)


def unknown_options(beam_args: Sequence[str]) -> list[str]:
    """The options in ``beam_args`` that no Beam options class defines (Beam only logs a
    warning for them: a mistyped flag would otherwise be ignored silently)."""
    known = set(PipelineOptions([]).get_all_options())
    given = PipelineOptions(list(beam_args)).get_all_options(retain_unknown_options=True)
    names = set(given) - known        # as Beam spells them: dashes become underscores
    flags = {arg.split("=", 1)[0] for arg in beam_args if arg.startswith("-")}
    return sorted(f for f in flags if f.lstrip("-").replace("-", "_") in names)


def job_runs_here(result: Any) -> bool:
    """False when ``pipeline.run()`` only described the job for a service that runs it later
    (DataflowRunner with ``--template_location``, as a Flex Template launch does): its
    result holds no job to wait for, and no report exists yet."""
    return getattr(result, "has_job", True) is not False


def _report_failure(config: JobConfig, job: Any, error: str) -> None:
    """Write the report of a run that failed before its gate, unless its run folder is a
    published version's (then its report is that version's, and stays)."""
    store = IndexStore(config.output.index_url, storage_options=config.output.storage_options)
    try:
        store.refuse_published_run(job.run_id, after=job.folder_checked_through)
        write_report(store, failure_report(
            run_id=job.run_id, index_url=config.output.index_url,
            input_fingerprint=job.fingerprint, codecs=config.encode.codecs,
            dim=job.read.plan.dim, safe_config=config.model_dump_safe(), error=error))
    except Exception as exc:  # noqa: BLE001 - the run's own error is what matters
        print(f"ingest: no report written: {type(exc).__name__}: {redact_text(str(exc))}",
              file=sys.stderr)
    else:
        print(f"ingest: report: {_report_location(store, job.run_id)}", file=sys.stderr)


def _report_location(store: IndexStore, run_id: str) -> str:
    """Where the run's ``report.md`` is, as people open it: a path for a local index, else
    its URL (credentials redacted)."""
    return redact_text(store.url_of(report_path(run_id, "md")).removeprefix("file://"))


def _progress(args: argparse.Namespace, options: PipelineOptions, config: JobConfig,
              job: Any) -> contextlib.AbstractContextManager:
    """The progress display of this run on stderr: only when stderr is a terminal, the
    runner local and ``--quiet`` not given (else a context that shows nothing)."""
    if args.quiet or not sys.stderr.isatty() or not runs_locally(options):
        return contextlib.nullcontext()
    plan = job.read.plan
    shards = ShardLayout(config.encode.rows_per_shard, plan.total_rows).shards
    return show_progress(sys.stderr, shards=shards, rows=plan.total_rows)


def _summary(run_id: str, report: dict[str, Any]) -> str:
    """The run's summary line: rows, shards, recall, sizes, wall time."""
    counts, b, v = report["counts"], report["bytes"], report["validation"]
    recall, timing = v["recall_at_k"], report.get("timing")
    line = (f"run {run_id}: read {human_count(counts['rows_read'])} rows, encoded "
            f"{human_count(counts['rows_encoded'])} in {counts['shards']} shards, rejected "
            f"{human_count(counts['dead_letters'])}; recall@{v['k']} "
            f"{'n/a' if recall is None else f'{recall:.4f}'}; {human_bytes(b['out'])} "
            f"written for {human_bytes(b['float32'])} of float32, compression "
            f"{b['compression_ratio'] or 0:.2f}x")
    if timing:
        speed = timing.get("rows_per_second")
        line += (f"; {human_seconds(timing['wall_seconds'])}"
                 + (f", {human_count(speed)} rows/s" if speed else ""))
    return line


def main(argv: Sequence[str] | None = None) -> int:
    # Beam's and the storage libraries' log lines (a failed bundle's traceback) quote URLs
    # as they were given: this process prints none with a credential in it.
    redact_log_records()
    args, beam_args = _parse(argv)
    unknown = unknown_options(beam_args)
    # A near-miss of the job's own options is a typo that would publish somewhere else
    # ("--index_url-x" left the config's index in place); anything else may be read by a
    # PipelineOptions class of the user's own, which this process never imported.
    typos = [flag for flag in unknown
             if difflib.get_close_matches(flag.replace("_", "-"), JOB_OPTIONS, cutoff=0.75)]
    if typos:
        print(f"ingest: unknown option(s) {', '.join(typos)}: did you mean one of "
              f"{', '.join(JOB_OPTIONS)}?", file=sys.stderr)
        return 2
    if unknown:
        print(f"ingest: warning: option(s) {', '.join(unknown)} are neither job options nor "
              f"options of Beam's own classes; passed on to the pipeline as they are (for "
              f"PipelineOptions classes of your own)", file=sys.stderr)
    try:
        config = load_config(args.config)
        if args.index_url:
            config = config.with_index_url(args.index_url)
        options = pipeline_options(beam_args)
        job = config.create_transform()
        if args.dry_run:
            for line in job.plan_only():
                print(line)
            return 0
        run_id = job.run_id
        pipeline = beam.Pipeline(options=options)
        _ = pipeline | "Ingest" >> job  # checks the run folder before anything is written
        store = IndexStore(config.output.index_url,
                           storage_options=config.output.storage_options)
        report_url = _report_location(store, run_id)
    except NothingToPublishError as exc:
        # Same config, same input: the latest version already holds this run's result.
        print(f"run {exc.run_id}: input and config unchanged since version {exc.version}; "
              f"nothing to publish")
        return 0
    except (SemqError, ValueError) as exc:
        print(f"ingest: {redact_text(str(exc))}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - e.g. storage unreachable while planning
        print(f"ingest: could not plan the job: {type(exc).__name__}: "
              f"{redact_text(str(exc))}", file=sys.stderr)
        return 2
    try:
        with _progress(args, options, config, job):
            result = pipeline.run()
            if not job_runs_here(result):
                # The service runs the job later and the pipeline writes its report then.
                print(f"run {run_id}: job described for the runner, which runs it; report: "
                      f"{report_url}")
                return 0
            result.wait_until_finish()
        with store.open_read(report_path(run_id)) as f:
            report: dict[str, Any] = json.loads(f.read())
    except Exception as exc:  # noqa: BLE001 - any pipeline failure means "could not run"
        error = f"{type(exc).__name__}: {redact_text(str(exc))}"
        print(f"ingest: the pipeline failed: {error}", file=sys.stderr)
        _report_failure(config, job, error)
        return 2
    gate = report["gate"]
    print(_summary(run_id, report))
    for note in report["validation"].get("notes", ()):
        print(f"note: {note}")
    if gate["passed"]:
        print(f"published version {report['version']} of {store.url} (report: {report_url})")
        return 0
    print(f"NOT published: {'; '.join(gate['problems'])} (report: {report_url})")
    return 1


if __name__ == "__main__":
    sys.exit(main())
