"""Where a shard's bytes go (issue 16, "compact"): codes, params, ids, per dimension and shard
size, for the recommended levels ``semq1`` + ``semq4``.

    python benchmarks/shard_bytes.py [--dims 384,1536] [--rows 5000,20000,100000]
                                     [--codecs semq1,semq4] [--out PATH.json]

Not library code. Each case fits and encodes one shard of seeded synthetic rows (anisotropic:
per-axis std ``k^-0.8``, randomly rotated, a mean offset, lognormal row norms), writes it with
``write_shard`` into memory and splits the file with ``format.layout.shard_bytes``. Prints a
table (params as a share of the shard, compression against float32) and writes JSON.
"""

# First import: pins every BLAS/OpenMP library to one thread before numpy is loaded.
from _common import REPO, limit_threads, write_results

# isort: split
import argparse
import io
from pathlib import Path

import numpy as np

from semq_transforms.format.layout import shard_bytes
from semq_transforms.format.shard import write_shard
from semq_transforms.levels import encode_levels

DEFAULT_OUT = REPO / "benchmarks/results/shard_bytes.json"


def rows_of(n: int, d: int, seed: int = 0) -> np.ndarray:
    """float32 [n, d]: anisotropic, rotated, offset, lognormal norms."""
    dist = np.random.default_rng([2026, d])
    rotation, _ = np.linalg.qr(dist.standard_normal((d, d)))
    offset = dist.standard_normal(d) / np.sqrt(d)
    rng = np.random.default_rng([2026, d, seed])
    out = np.empty((n, d), dtype=np.float32)
    std = np.arange(1, d + 1, dtype=np.float64) ** -0.8
    for lo in range(0, n, 8192):
        z = rng.standard_normal((min(8192, n - lo), d)) * std
        block = z @ rotation.T + offset
        block *= (rng.lognormal(0.0, 0.5, len(block)) / np.linalg.norm(block, axis=1))[:, None]
        out[lo:lo + len(block)] = block
    return out


def measure(d: int, n: int, codecs: list[str]) -> dict:
    x = rows_of(n, d)
    levels = encode_levels(x, codecs)
    ids = np.arange(n, dtype=np.int64)
    meta = write_shard(io.BytesIO(), ids=ids, levels=levels, path="runs/bench/shard.semq")
    split = shard_bytes(meta, ids, levels)
    return {"dim": d, "rows": n, "codecs": codecs, "file_bytes": meta.file_bytes,
            "codes": list(split.codes), "params": split.params, "ids": split.ids,
            "other": split.other, "params_share": split.params / meta.file_bytes,
            "compression": n * d * 4 / meta.file_bytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dims", default="384,1536")
    parser.add_argument("--rows", default="5000,20000,100000")
    parser.add_argument("--codecs", default="semq1,semq4")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    threads = limit_threads()
    codecs = args.codecs.split(",")
    results = []
    print("| d | rows | file MB | codes MB | params MB | params share | compression |")
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for d in map(int, args.dims.split(",")):
        for n in map(int, args.rows.split(",")):
            r = measure(d, n, codecs)
            results.append(r)
            print(f"| {d} | {n:,} | {r['file_bytes'] / 1e6:.2f} | {sum(r['codes']) / 1e6:.2f} "
                  f"| {r['params'] / 1e6:.3f} | {100 * r['params_share']:.1f}% "
                  f"| {r['compression']:.2f}x |", flush=True)
    write_results(args.out, threads, results)


if __name__ == "__main__":
    main()
