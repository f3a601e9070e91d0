"""Pipeline benchmark: the whole ingestion job against a bare pyarrow read of the same input.

    python benchmarks/pipeline.py [--rows 1000000 ...] [--dim 384] [--runners in_memory:1 ...]
                                  [--variants] [--workdir DIR] [--out PATH.json]

For each ``--rows`` (default: 250000 500000 1000000, to show the cost is linear):

1. generate the input once (cached in ``--workdir``): Parquet files of clustered, unit-norm
   float32 vectors (``id: int64``, ``embedding: fixed_size_list<float32>[dim]``), row groups
   of 65,536 rows, 262,144 rows per file, snappy (pyarrow's defaults otherwise);
2. **bare read**: a fresh process reads every file with ``pyarrow.parquet`` (batches of the
   job's ``batch_rows``, both columns) and turns each batch into a float32 numpy array, the
   least any reader of this input has to do;
3. **pipeline**: a fresh process runs ``python -m pipelines.ingest`` on a generated config
   (codecs ``semq1`` + ``semq4``, ``rows_per_shard`` 65,536 (one row group), 256 sampled
   queries, recall gate 0.9) to a published index under the work dir, on the pinned local
   runner in each of ``--runners`` (default: ``in_memory:1``, one worker, the least memory;
   ``multi_threading:2``, two worker threads for the two cores).

Both are timed wall-clock in the same run, and their peak memory is sampled every 20 ms as
the summed RSS of the process and all its descendants (the multi-process mode's workers
included; from /proc, so Linux only). Every process runs with one BLAS/OpenMP thread (the
benchmarks' convention: ``_common``). Prints a table (rows, bare read s, pipeline s, ratio,
rows/s, peak RSS of each, recall@10 the gate saw) and writes JSON. The targets from the
issue are printed as PASS/FAIL: ratio <= 2.5, pipeline peak RSS <= 1 GiB, and a linear cost:
every size's time within 10% of the least-squares line ``fixed + per-row cost`` (a fixed
start-up cost, imports and pipeline construction, does not make a job non-linear; with three
sizes, comparing consecutive differences amplifies the machine's noise). Each measurement is
the fastest of ``--repeat`` runs (default 3; the machines are noisy); bare reads and job runs
alternate, and every runner's ratio uses the same baseline per size: the fastest bare read
of that input in the whole run.

``--sink`` also runs, at each size on each runner, the same encoding through
``WriteSemqIndex`` (the PCollection sink: ``_SINK_DRIVER`` reads the files into ``(id,
vector)`` elements, then the sink shards them by id hash, a shuffle of every vector, where the
file job reads each shard where it encodes it): what the sink costs against the file job.

``--variants`` also runs, at the largest size on the last runner, the job with fewer
validation queries and with other codecs (:data:`VARIANTS`), against the same baseline: what
the ratio target would take. ``--layouts`` runs it on the same vectors written as
``pq.write_table`` writes them by default (one 1Mi-row row group per file) with the job's
default ``rows_per_shard`` (100,000) (:data:`LAYOUTS`), against the bare read of that input:
what row groups larger than a shard cost.
"""

# First import: pins every BLAS/OpenMP library to one thread before numpy is loaded.
from _common import REPO, machine_info

# isort: split
import argparse
import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import yaml

ROW_GROUP_ROWS = 65_536
FILE_ROWS = 4 * ROW_GROUP_ROWS
ROWS_PER_SHARD = ROW_GROUP_ROWS
#: ``--layouts``: input layouts (label -> row group rows, rows per file, rows_per_shard). The
#: first is the one measured above; the second is what a user gets from ``pq.write_table``'s
#: defaults (row groups of 1Mi rows) and the job's default ``rows_per_shard`` (100,000).
LAYOUTS = {
    "row groups = shards (65,536)": (ROW_GROUP_ROWS, FILE_ROWS, ROWS_PER_SHARD),
    "pyarrow and job defaults (1Mi-row groups, 100,000-row shards)": (1 << 20, 1 << 20,
                                                                      100_000),
}
BATCH_ROWS = 8192
CLUSTERS = 256
TARGET_RATIO = 2.5
CODECS = ["semq1", "semq4"]
SAMPLE_QUERIES = 256
#: ``--variants``: the job with less validation or other codecs, to show what the ratio target
#: would take (label -> codecs, sampled queries). The first is the job measured above.
VARIANTS = {
    "semq1 + semq4, 256 queries (the job)": (CODECS, SAMPLE_QUERIES),
    "semq1 + semq4, 64 queries": (CODECS, 64),
    "semq1 + semq4, 1 query (validation ~free)": (CODECS, 1),
    "semq4, 256 queries": (["semq4"], SAMPLE_QUERIES),
    "int8, 256 queries": (["int8"], SAMPLE_QUERIES),
    "semq1, 1 query": (["semq1"], 1),
}
TARGET_RSS_BYTES = 1 << 30
LINEAR_TOLERANCE = 0.10

_SINK_DRIVER = """
import glob, json, sys
import apache_beam as beam, pyarrow.parquet as pq
from semq_transforms.config import EncodeConfig, ValidationConfig
from semq_transforms.transforms import WriteSemqIndex, direct_options
pattern, index, mode, workers, settings = sys.argv[1:6]
settings = json.loads(settings)

def rows_of(path):
    for batch in pq.ParquetFile(path).iter_batches(batch_size=8192, columns=["id", "embedding"]):
        ids = batch.column(0).to_numpy()
        x = batch.column(1).values.to_numpy().reshape(len(batch), -1)
        yield from zip(ids.tolist(), x)

with beam.Pipeline(options=direct_options(mode, int(workers))) as p:
    _ = (p | beam.Create(sorted(glob.glob(pattern))) | beam.Reshuffle()
         | beam.FlatMap(rows_of)
         | WriteSemqIndex(index, run_id="sink", dim=settings["dim"], id_type="int64",
                          encode=EncodeConfig.model_validate(settings["encode"]),
                          validation=ValidationConfig.model_validate(settings["validation"])))
print(json.load(open(index + "/runs/sink/report.json"))["counts"]["rows_encoded"])
"""

_BARE_READ = """
import glob, sys, time
import numpy as np, pyarrow.parquet as pq
start = time.perf_counter()
rows = 0
for path in sorted(glob.glob(sys.argv[1])):
    for batch in pq.ParquetFile(path).iter_batches(batch_size=int(sys.argv[2]),
                                                   columns=["id", "embedding"]):
        ids = batch.column(0).to_numpy()
        x = batch.column(1).values.to_numpy().reshape(len(batch), -1).astype(np.float32)
        rows += len(x)
print(rows, time.perf_counter() - start)
"""


# -- input ------------------------------------------------------------------------------------

def write_input(folder: Path, rows: int, dim: int, *, row_group_rows: int = ROW_GROUP_ROWS,
                file_rows: int = FILE_ROWS) -> list[Path]:
    """Clustered unit-norm vectors in Parquet files; chunked (bounded memory), seeded. The
    vectors do not depend on the layout (generated per 65,536 rows)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    spectrum = np.exp(-np.arange(dim) / (dim / 8)).astype(np.float32)
    offset = rng.standard_normal(dim).astype(np.float32) * 0.6
    centers = (rng.standard_normal((CLUSTERS, dim)).astype(np.float32) * spectrum + offset)
    paths = []
    for file_no, start in enumerate(range(0, rows, file_rows)):
        stop = min(start + file_rows, rows)
        path = folder / f"part-{file_no:05d}.parquet"
        tmp = path.with_suffix(".tmp")
        schema = pa.schema([("id", pa.int64()), ("embedding", pa.list_(pa.float32(), dim))])
        with pq.ParquetWriter(tmp, schema) as writer:
            pending: list[pa.Table] = []   # a row group is written in one call
            for g0 in range(start, stop, ROW_GROUP_ROWS):
                g1 = min(g0 + ROW_GROUP_ROWS, stop)
                chunk_rng = np.random.default_rng([1, g0])
                label = chunk_rng.integers(0, CLUSTERS, g1 - g0)
                x = centers[label] + (chunk_rng.standard_normal((g1 - g0, dim),
                                                                dtype=np.float32)
                                      * spectrum * 0.5)
                x /= np.linalg.norm(x, axis=1, keepdims=True)
                table = pa.table({"id": np.arange(g0, g1, dtype=np.int64),
                                  "embedding": pa.FixedSizeListArray.from_arrays(
                                      pa.array(x.reshape(-1)), dim)}, schema=schema)
                pending.append(table)
                if sum(t.num_rows for t in pending) >= row_group_rows or g1 == stop:
                    writer.write_table(pa.concat_tables(pending),
                                       row_group_size=row_group_rows)
                    pending = []
        tmp.rename(path)
        paths.append(path)
    return paths


def cached_input(workdir: Path, rows: int, dim: int, *, row_group_rows: int = ROW_GROUP_ROWS,
                 file_rows: int = FILE_ROWS) -> Path:
    layout = ("" if (row_group_rows, file_rows) == (ROW_GROUP_ROWS, FILE_ROWS)
              else f"-g{row_group_rows}-f{file_rows}")
    folder = workdir / f"input-{rows}x{dim}{layout}"
    done = folder / "_DONE"
    if not done.exists():
        shutil.rmtree(folder, ignore_errors=True)
        write_input(folder, rows, dim, row_group_rows=row_group_rows, file_rows=file_rows)
        done.write_text("ok\n")
    return folder


# -- measuring a process tree -----------------------------------------------------------------

def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        tree.setdefault(int(fields[1]), []).append(int(entry))
    return tree


def _rss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except OSError:
        return 0


def tree_rss(root: int) -> int:
    """Summed RSS (bytes) of ``root`` and all its descendants."""
    tree = _children()
    total, stack = 0, [root]
    while stack:
        pid = stack.pop()
        total += _rss(pid)
        stack.extend(tree.get(pid, ()))
    return total


def run_measured(cmd: list[str], cwd: Path) -> tuple[float, int, str]:
    """Run ``cmd``; returns (wall seconds, peak summed RSS bytes, stdout). Raises on failure."""
    peak = 0
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    stop = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not stop.is_set():
            peak = max(peak, tree_rss(proc.pid))
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    out, err = proc.communicate()
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {proc.returncode}:\n{out}\n{err}")
    return seconds, peak, out


# -- one size -----------------------------------------------------------------------------------

def best_of(runs: list[tuple[float, int, str]]) -> tuple[float, int, str]:
    """The fastest of ``(seconds, peak rss, out)`` runs; peak RSS is the highest seen in any."""
    fastest = min(runs, key=lambda r: r[0])
    return fastest[0], max(r[1] for r in runs), fastest[2]


def bench_size(workdir: Path, rows: int, dim: int, runner: str, repeat: int, *,
               codecs: list[str] = CODECS, queries: int = SAMPLE_QUERIES,
               variant: int | None = None, layout: int = 0, sink: bool = False) -> dict:
    """Bare reads and job runs of one input size; ``variant``: the job's number in
    :data:`VARIANTS` (its own index and config; a gate of recall 0, the variants without a
    rerank level would not pass 0.9, and the time is what matters); ``layout``: the input's
    number in :data:`LAYOUTS`; ``sink``: also time the PCollection sink (``_SINK_DRIVER``)."""
    mode, workers = runner.split(":")
    row_group_rows, file_rows, rows_per_shard = list(LAYOUTS.values())[layout]
    folder = cached_input(workdir, rows, dim, row_group_rows=row_group_rows,
                          file_rows=file_rows)
    input_bytes = sum(p.stat().st_size for p in folder.glob("*.parquet"))
    glob = str(folder / "*.parquet")
    tag = f"{rows}" if variant is None else f"{rows}-variant{variant}"
    tag += f"-layout{layout}" if layout else ""
    index_dir = workdir / f"index-{tag}x{dim}"
    config = {
        "name": f"bench-{tag}",
        "input": {"url": glob, "format": "parquet", "dim": dim, "batch_rows": BATCH_ROWS},
        "output": {"index_url": str(index_dir)},
        "encode": {"codecs": codecs, "rows_per_shard": rows_per_shard},
        "validation": {"k": 10, "sample_queries": queries, "seed": 0,
                       "min_recall_at_k": 0.9 if variant is None else 1e-9,
                       "max_rejected_fraction": 0.0,
                       "min_compression_ratio": 0},    # (measures speed, at any shard size)
    }
    config_path = workdir / f"job-{tag}.yaml"
    config_path.write_text(yaml.safe_dump(config))

    def pipeline_run() -> tuple[float, int, str]:
        shutil.rmtree(index_dir, ignore_errors=True)  # a fresh publish every time
        return run_measured([sys.executable, "-m", "pipelines.ingest", "--config",
                             str(config_path), f"--direct_running_mode={mode}",
                             f"--direct_num_workers={workers}"], REPO)

    def bare_run() -> tuple[float, int, str]:
        return run_measured([sys.executable, "-c", _BARE_READ, glob, str(BATCH_ROWS)], REPO)

    # bare read and job alternate, so both see the machine in the same moods
    bare_runs, pipe_runs = zip(*((bare_run(), pipeline_run()) for _ in range(repeat)),
                               strict=True)
    bare_s, bare_rss, out = best_of(list(bare_runs))
    assert int(out.split()[0]) == rows, out
    pipe_s, pipe_rss, out = best_of(list(pipe_runs))
    [report_path] = index_dir.glob("runs/*/report.json")
    report = json.loads(report_path.read_text())
    assert report["gate"]["passed"], report["gate"]
    sink_s = sink_rss = None
    if sink:
        sink_dir = workdir / f"sink-{tag}x{dim}"
        settings = json.dumps({"dim": dim, "encode": config["encode"],
                               "validation": config["validation"]})

        def sink_run() -> tuple[float, int, str]:
            shutil.rmtree(sink_dir, ignore_errors=True)
            return run_measured([sys.executable, "-c", _SINK_DRIVER, glob, str(sink_dir), mode,
                                 workers, settings], REPO)

        sink_s, sink_rss, sink_out = best_of([sink_run() for _ in range(repeat)])
        assert int(sink_out.split()[-1]) == rows, sink_out
    return {"rows": rows, "dim": dim, "runner": runner, "codecs": codecs,
            "sample_queries": queries, "input_bytes": input_bytes,
            "row_group_rows": row_group_rows, "rows_per_shard": rows_per_shard,
            "bytes_read": report["bytes"]["read"],
            "bare_read_s": bare_s, "bare_read_runs_s": [r[0] for r in bare_runs],
            "bare_read_peak_rss": bare_rss,
            "pipeline_s": pipe_s, "pipeline_peak_rss": pipe_rss,
            "sink_s": sink_s, "sink_peak_rss": sink_rss,
            "ratio": pipe_s / bare_s, "rows_per_s": rows / pipe_s,
            "s_per_million_rows": pipe_s / rows * 1e6,
            "recall_at_10": report["validation"]["recall_at_k"],
            "shards": report["counts"]["shards"],
            "compression_ratio": report["bytes"]["compression_ratio"],
            "summary": out.strip().splitlines()}


def linear_fit(rows: list[int], seconds: list[float]) -> dict | None:
    """Least-squares ``seconds = fixed + per_row * rows`` over the sizes measured, and the
    largest residual relative to the measured time (None with fewer than 3 sizes)."""
    if len(rows) < 3:
        return None
    slope, intercept = np.polyfit(np.array(rows, float), np.array(seconds, float), 1)
    predicted = intercept + slope * np.array(rows, float)
    residual = np.abs(predicted - np.array(seconds)) / np.array(seconds)
    return {"fixed_s": float(intercept), "s_per_million_rows": float(slope * 1e6),
            "max_relative_residual": float(residual.max())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[250_000, 500_000, 1_000_000])
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--runners", nargs="+",
                        default=["in_memory:1", "multi_threading:2"],
                        help="local runner modes to measure, as MODE:WORKERS (MODE: in_memory, "
                             "multi_threading, multi_processing)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs of each measurement; the fastest is reported")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="where inputs (cached) and indexes go; default: a temp folder")
    parser.add_argument("--sink", action="store_true",
                        help="also time WriteSemqIndex, the PCollection sink, on each input")
    parser.add_argument("--variants", action="store_true",
                        help="also run the job variants of VARIANTS (fewer validation queries, "
                             "other codecs) at the largest size on the last runner")
    parser.add_argument("--layouts", action="store_true",
                        help="also run the job on the input layouts of LAYOUTS (pyarrow's "
                             "default row groups) at the largest size on the last runner")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks/results/pipeline.json")
    args = parser.parse_args()
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="semq-pipeline-bench-"))
    workdir.mkdir(parents=True, exist_ok=True)
    results = []
    for runner in args.runners:
        for rows in args.rows:
            result = bench_size(workdir, rows, args.dim, runner, args.repeat, sink=args.sink)
            results.append(result)
            print(f"{runner} {rows} rows: {result['summary'][0] if result['summary'] else ''}",
                  file=sys.stderr, flush=True)
    variants = []
    if args.variants:
        for number, (label, (codecs, queries)) in enumerate(VARIANTS.items()):
            result = bench_size(workdir, max(args.rows), args.dim, args.runners[-1],
                                args.repeat, codecs=codecs, queries=queries, variant=number)
            variants.append({"variant": label, **result})
            print(f"variant {label}: {result['pipeline_s']:.2f} s", file=sys.stderr, flush=True)
    layouts = []
    if args.layouts:
        for number, label in enumerate(LAYOUTS):
            result = (bench_size(workdir, max(args.rows), args.dim, args.runners[-1],
                                 args.repeat, layout=number) if number else
                      next(r for r in results if r["rows"] == max(args.rows)
                           and r["runner"] == args.runners[-1]))
            layouts.append({"layout": label, **result})
            print(f"layout {label}: {result['pipeline_s']:.2f} s", file=sys.stderr, flush=True)
    # One baseline per input for every runner: the fastest bare read of that input in the
    # whole run (a slow moment of the machine must not flatter one runner's ratio).
    for r in results + variants + layouts:
        r["bare_read_s"] = min(b for o in results + variants + layouts
                               if (o["rows"], o["row_group_rows"]) == (r["rows"],
                                                                       r["row_group_rows"])
                               for b in o["bare_read_runs_s"])
        r["ratio"] = r["pipeline_s"] / r["bare_read_s"]
    mib = 1 << 20
    print(f"\nPipeline vs bare pyarrow read, dim {args.dim} (one BLAS thread per process; "
          f"fastest of {args.repeat}; bare read: the fastest of every runner's reads of that "
          f"input)\n")
    print("| runner:workers | rows | input MB | bare read s | pipeline s | ratio | rows/s | "
          "bare RSS MiB | pipeline RSS MiB | recall@10 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(f"| {r['runner']} | {r['rows']:,} | {r['input_bytes'] / 1e6:.0f} | "
              f"{r['bare_read_s']:.2f} | {r['pipeline_s']:.2f} | {r['ratio']:.2f} | "
              f"{r['rows_per_s']:,.0f} | {r['bare_read_peak_rss'] / mib:.0f} | "
              f"{r['pipeline_peak_rss'] / mib:.0f} | {r['recall_at_10']:.4f} |")
    checks: dict[str, bool] = {}
    marginal_by_runner: dict[str, list[float]] = {}
    fits: dict[str, dict | None] = {}
    for runner in args.runners:
        # Linear cost: the time each extra million rows adds (a fixed start-up cost, Python
        # and Beam imports and pipeline construction, does not make a job non-linear).
        ordered = sorted((r for r in results if r["runner"] == runner),
                         key=lambda r: r["rows"])
        marginal = [(b["pipeline_s"] - a["pipeline_s"]) / (b["rows"] - a["rows"]) * 1e6
                    for a, b in itertools.pairwise(ordered)]
        marginal_by_runner[runner] = marginal
        fit = linear_fit([r["rows"] for r in ordered], [r["pipeline_s"] for r in ordered])
        fits[runner] = fit
        if marginal:
            print(f"\n{runner}: seconds each extra million rows adds: "
                  + ", ".join(f"{a['rows']:,} -> {b['rows']:,}: {m:.1f}"
                              for a, b, m in zip(ordered, ordered[1:], marginal)))
        if fit:
            print(f"{runner}: least squares: {fit['fixed_s']:.1f} s + "
                  f"{fit['s_per_million_rows']:.1f} s per million rows; largest residual "
                  f"{fit['max_relative_residual']:.0%} of the measured time")
        largest = ordered[-1]
        checks[f"{runner}: ratio <= {TARGET_RATIO} at {largest['rows']:,} rows"] = (
            largest["ratio"] <= TARGET_RATIO)
        checks[f"{runner}: pipeline peak RSS <= 1 GiB (every size)"] = all(
            r["pipeline_peak_rss"] <= TARGET_RSS_BYTES for r in ordered)
        if fit:   # (needs three sizes or more)
            checks[f"{runner}: linear, every size within {LINEAR_TOLERANCE:.0%} of a "
                   f"least-squares line (fixed + per-row cost)"] = bool(
                fit["s_per_million_rows"] > 0 and fit["fixed_s"] >= 0
                and fit["max_relative_residual"] <= LINEAR_TOLERANCE)
    if variants:
        print(f"\nWhat the ratio target would take: job variants, {variants[0]['rows']:,} rows, "
              f"{variants[0]['runner']}, same baseline\n")
        print("| job | pipeline s | ratio | recall@10 |")
        print("|---|---:|---:|---:|")
        for r in variants:
            print(f"| {r['variant']} | {r['pipeline_s']:.2f} | {r['ratio']:.2f} | "
                  f"{r['recall_at_10']:.4f} |")
    if args.sink:
        print("\nThe PCollection sink (WriteSemqIndex, shards by id hash: every vector "
              "shuffled) against the file job (each shard read where it is encoded)\n")
        print("| runner:workers | rows | file job s | sink s | sink / job | job peak MiB | "
              "sink peak MiB |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for r in results:
            print(f"| {r['runner']} | {r['rows']:,} | {r['pipeline_s']:.2f} | "
                  f"{r['sink_s']:.2f} | {r['sink_s'] / r['pipeline_s']:.2f} | "
                  f"{r['pipeline_peak_rss'] / 2**20:.0f} | {r['sink_peak_rss'] / 2**20:.0f} |")
    if layouts:
        print(f"\nInput layouts: {layouts[0]['rows']:,} rows, {layouts[0]['runner']}; each "
              f"against the bare read of its own input; bytes read by the job / input "
              f"bytes\n")
        print("| layout | bare read s | pipeline s | ratio | bytes read / input |")
        print("|---|---:|---:|---:|---:|")
        for r in layouts:
            print(f"| {r['layout']} | {r['bare_read_s']:.2f} | {r['pipeline_s']:.2f} | "
                  f"{r['ratio']:.2f} | {r['bytes_read'] / r['input_bytes']:.2f} |")
    print()
    for name, ok in checks.items():
        print(f"{'PASS' if ok else 'FAIL'}  {name}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_info(), "settings": {
        "dim": args.dim, "runners": args.runners, "row_group_rows": ROW_GROUP_ROWS,
        "file_rows": FILE_ROWS, "rows_per_shard": ROWS_PER_SHARD, "batch_rows": BATCH_ROWS,
        "codecs": CODECS, "sample_queries": SAMPLE_QUERIES, "repeat": args.repeat},
        "results": results, "variants": variants, "layouts": layouts,
        "marginal_s_per_million_rows": marginal_by_runner,
        "linear_fits": fits,
        "checks": checks},
        indent=2))
    print(f"\nwrote {args.out}")
    if args.workdir is None:
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
