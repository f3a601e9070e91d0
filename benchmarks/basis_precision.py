"""Experiment (issue 16, "params stored no finer than they need to be"): how many bits does
each entry of semq's stored basis need?

    python benchmarks/basis_precision.py [--datasets banking77,token,sentence] [--rows 8000]
                                         [--bits 10,8,7,6] [--out PATH.json]

Not library code. semq stores its principal axes (``[d, k]``, unit columns) in float16 (11
significant bits per entry), and every level encodes, decodes and scores with the stored
axes. This script replaces that rounding (``semq.half_basis``) by a fixed-point grid of ``p``
bits per entry, with one power-of-two scale per column (the column's largest entry sets it),
rounded toward zero so no column grows past unit norm (the codec checks that), and measures
recall@10 (float queries, the default rerank of ``Index.search``) and the median cosine of
restored rows, for ``semq4``, ``semq1`` + ``semq4`` and ``semq8``. If ``p`` bits were enough,
storing the basis at ``p`` bits would cut a shard's params by ``16 / p``.
"""

# First import: pins every BLAS/OpenMP library to one thread before numpy is loaded.
from _common import DEFAULT_DATA, REPO, limit_threads, write_results

# isort: split
import argparse
from pathlib import Path

import _synthetic
import numpy as np

from semq_transforms.codecs import refine, semq
from semq_transforms.eval import exact_knn, knn_intersection_measure
from semq_transforms.levels import decode_rows, encode_levels, search_levels

K = 10
CHAINS = (("semq4",), ("semq1", "semq4"), ("semq8",))
DEFAULT_OUT = REPO / "benchmarks/results/basis_precision.json"
HALF = semq.half_basis


def fixed_point(bits: int):
    """A ``half_basis`` replacement: ``bits``-bit signed fixed point per column."""
    def rounded(axes: np.ndarray) -> np.ndarray:
        a = np.asarray(axes, dtype=np.float64)
        _, exponent = np.frexp(np.maximum(np.abs(a).max(axis=0, keepdims=True), 1e-30))
        step = np.ldexp(1.0, exponent - (bits - 1))
        limit = 2.0 ** (bits - 1)
        return (np.clip(np.trunc(a / step), -limit, limit - 1) * step).astype(np.float16)
    return rounded


def measure(x: np.ndarray, q: np.ndarray, bits: int | None) -> dict:
    semq.half_basis = refine.half_basis = HALF if bits is None else fixed_point(bits)
    try:
        _, truth = exact_knn(q, x, K)
        out = {}
        for chain in CHAINS:
            levels = encode_levels(x, list(chain))
            _, found = search_levels(levels, q, K, rerank=10 * K, score_budget=1 << 24)
            y = decode_rows(levels, len(levels) - 1, np.arange(x.shape[0])).astype(np.float64)
            xs = x.astype(np.float64)
            cos = (xs * y).sum(1) / np.linalg.norm(xs, axis=1) / np.linalg.norm(y, axis=1)
            out["+".join(chain)] = {"recall": knn_intersection_measure(found, truth),
                                    "cosine": float(np.median(cos))}
        return out
    finally:
        semq.half_basis = refine.half_basis = HALF


def datasets(names: list[str], rows: int, data: Path) -> dict:
    out = {}
    for name in names:
        if name == "banking77":
            if not data.is_file():
                print(f"skipping banking77: {data} not found")
                continue
            with np.load(data) as b:
                out[name] = (b["train_x"][:rows], b["test_x"][:500])
        else:
            made = _synthetic.make(name, rows, 500)
            out[name] = (made["x"], made["q"])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default="banking77,token,sentence")
    parser.add_argument("--rows", type=int, default=8000)
    parser.add_argument("--bits", default="10,8,7,6")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args()
    threads = limit_threads()
    widths = [None, *map(int, args.bits.split(","))]
    results = []
    print("| data | basis bits | " + " | ".join(f"{'+'.join(c)} recall | cos" for c in CHAINS)
          + " |")
    print("|---|---:|" + "---:|---:|" * len(CHAINS))
    for name, (x, q) in datasets(args.datasets.split(","), args.rows, args.data).items():
        for bits in widths:
            r = measure(x, q, bits)
            results.append({"data": name, "bits": bits or "float16", **r})
            print(f"| {name} | {bits or 'f16'} | " + " | ".join(
                f"{r['+'.join(c)]['recall']:.4f} | {r['+'.join(c)]['cosine']:.5f}"
                for c in CHAINS) + " |", flush=True)
    write_results(args.out, threads, results)


if __name__ == "__main__":
    main()
