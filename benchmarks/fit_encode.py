"""Fit and encode cost per shard, one thread: what machine-independent arithmetic costs.

    python benchmarks/fit_encode.py [--rows N] [--dims 384,1536] [--out PATH.json] [--quick]

For each dimension, a seeded anisotropic unit-norm shard (``--rows`` rows, default 100,000 at
d <= 512 and 30,000 above): seconds to fit (``codec.fit``; semq fits on at most 16,384 sampled
rows) and encode throughput in MB/s of float32 input (best of 3) per codec, the fit +
encode seconds of the level chains the job uses, and the job's validation of one shard
(exact top-10 of VALIDATION_QUERIES shard rows and the semq1+semq4 search) scored with BLAS
and with deterministic (exact) products. Prints markdown tables, writes JSON.
To compare with another checkout, copy this file into its benchmarks/ folder and run it
there (it imports the package of the checkout it sits in; versions before 0.3.0 have no
deterministic scores: run it there with the validation part removed).
"""

# First import: pins every BLAS/OpenMP library to one thread before numpy is loaded.
from _common import REPO, best_seconds, limit_threads, write_results

# isort: split
import argparse
import time
from pathlib import Path

import numpy as np

from semq_transforms.codecs import get_codec
from semq_transforms.eval import exact_knn
from semq_transforms.levels import encode_levels, search_levels

DEFAULT_OUT = REPO / "benchmarks/results/fit_encode.json"
CODECS = ("semq1", "semq4", "semq8", "int8")
CHAINS = (("semq1", "semq4"), ("semq1", "semqr4"))
VALIDATION_QUERIES = 256       # the job's default validation.sample_queries


def shard(rows: int, dim: int, seed: int = 0) -> np.ndarray:
    """float32 [rows, dim]: decaying per-axis scales, a random rotation and an offset, rows
    normalized (like sentence embeddings)."""
    rng = np.random.default_rng(seed)
    rotation, _ = np.linalg.qr(rng.standard_normal((dim, dim)))
    x = (rng.standard_normal((rows, dim)) * 0.99 ** np.arange(dim)) @ rotation.T
    x += rng.standard_normal(dim) * 0.5 / np.sqrt(dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def measure(dim: int, rows: int) -> dict:
    x = shard(rows, dim)
    out: dict = {"dim": dim, "rows": rows, "codecs": {}, "chains": {}, "validation": {}}
    for spec in CODECS:
        codec = get_codec(spec)
        start = time.perf_counter()
        params = codec.fit(x)
        fit = time.perf_counter() - start
        encode, _ = best_seconds(lambda c=codec, p=params: c.encode(x, p), repeat=3)
        out["codecs"][spec] = {"fit_s": fit, "encode_mb_s": x.nbytes / encode / 1e6}
    for chain in CHAINS:
        start = time.perf_counter()
        encode_levels(x, list(chain))
        out["chains"]["+".join(chain)] = {"fit_encode_s": time.perf_counter() - start}
    levels = encode_levels(x, ["semq1", "semq4"])
    queries = x[np.linspace(0, rows - 1, VALIDATION_QUERIES).astype(np.int64)]
    for mode, deterministic in (("blas", False), ("deterministic", True)):
        seconds, _ = best_seconds(lambda d=deterministic: (
            exact_knn(queries, x, 10, deterministic=d),
            search_levels(levels, queries, 10, rerank=100, score_budget=1 << 24,
                          deterministic=d)), repeat=3)
        out["validation"][mode] = {"seconds": seconds}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=None)
    parser.add_argument("--dims", default="384,1536")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="2,000 rows at d = 64 (smoke)")
    args = parser.parse_args()
    threads = limit_threads()
    dims = [64] if args.quick else [int(d) for d in args.dims.split(",")]
    results = []
    for dim in dims:
        rows = 2000 if args.quick else args.rows or (100_000 if dim <= 512 else 30_000)
        results.append(measure(dim, rows))
    print("| d | rows | codec | fit s | encode MB/s |\n|---:|---:|---|---:|---:|")
    for r in results:
        for spec, m in r["codecs"].items():
            print(f"| {r['dim']} | {r['rows']} | {spec} | {m['fit_s']:.2f} | "
                  f"{m['encode_mb_s']:.0f} |")
        for chain, m in r["chains"].items():
            print(f"| {r['dim']} | {r['rows']} | {chain} (fit + encode) | "
                  f"{m['fit_encode_s']:.2f} | |")
    print(f"\n| d | rows | validation of one shard ({VALIDATION_QUERIES} queries, semq1+semq4) "
          "| seconds |\n|---:|---:|---|---:|")
    for r in results:
        for mode, m in r["validation"].items():
            print(f"| {r['dim']} | {r['rows']} | {mode} scores | {m['seconds']:.2f} |")
    write_results(args.out, threads, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
