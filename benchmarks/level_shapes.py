"""Experiment (issue 14, part B): would non-uniform quantizer levels close semq's gap to EDEN
on flat spectra?

    python benchmarks/level_shapes.py [--datasets token,sentence,gaussian] [--out PATH.json]
                                      [--quick]

Not library code. semq fits its frame (mean, principal axes, bits per axis) and quantizes each
axis of a row's unit direction with a uniform quantizer whose step is fitted per axis. EDEN
quantizes randomly rotated coordinates with Lloyd-Max levels for a Gaussian. This script keeps
semq's fitted frame and bit allocation and swaps only the levels of each axis:

* ``uniform``: semq's own codes (``codec.score``), the reference;
* ``gauss-lm``: the Lloyd-Max levels of N(0, 1) for the axis' width, scaled by the axis' rms
  (one shared table per width: no extra params);
* ``empirical-lm``: 1-D Lloyd-Max (k-means) levels fitted per axis on the corpus (an upper
  bound on what level shapes can give; costs ``2**width`` floats per axis of params).

Each row's score is ``s <q_axes, u_hat> + <q, mean>`` with semq's least-squares scale
``s = |r| <u, u_hat> / |u_hat|^2``. Recall@10 against the exact float top-10 (float queries,
no rerank), on the seeded synthetic sets of ``benchmarks/_synthetic.py`` (20,000 rows, 1,000
queries; ``--quick``: 2,000 rows, 100 queries, 2 and 4 bits). Prints a table and writes JSON.
"""

# First import: pins every BLAS/OpenMP library to one thread before numpy is loaded.
from _common import REPO, limit_threads, write_results

# isort: split
import argparse
from pathlib import Path

import _synthetic
import numpy as np

from semq_transforms.codecs import get_codec
from semq_transforms.eval import exact_knn, recall_at_k

K = 10
BITS = (2, 4, 8)
LLOYD_ROUNDS = 60
DEFAULT_OUT = REPO / "benchmarks/results/level_shapes.json"


def lloyd(values: np.ndarray, levels: int, rounds: int = LLOYD_ROUNDS) -> np.ndarray:
    """1-D Lloyd-Max levels (sorted) of ``values`` [n], started at evenly spaced quantiles."""
    centers = np.quantile(values, (np.arange(levels) + 0.5) / levels)
    for _ in range(rounds):
        edges = (centers[1:] + centers[:-1]) / 2
        cell = np.searchsorted(edges, values)
        sums = np.bincount(cell, weights=values, minlength=levels)
        counts = np.bincount(cell, minlength=levels)
        centers = np.where(counts > 0, sums / np.maximum(counts, 1), centers)
        centers.sort()
    return centers


def nearest(values: np.ndarray, centers: np.ndarray) -> np.ndarray:
    edges = (centers[1:] + centers[:-1]) / 2
    return centers[np.searchsorted(edges, values)]


def variant_scores(x, q, params, tables) -> np.ndarray:
    """Scores of queries ``q`` against rows ``x`` quantized axis by axis with ``tables``
    (one sorted level array per kept axis, in units of the axis' unit-direction value)."""
    mean, basis = params["mean"].astype(np.float64), params["basis"].astype(np.float64)
    r = x - mean
    norm = np.linalg.norm(r, axis=1)
    u = (r @ basis) / np.where(norm > 0, norm, 1.0)[:, None]
    u_hat = np.column_stack([nearest(u[:, i], t) for i, t in enumerate(tables)])
    energy = np.einsum("ij,ij->i", u_hat, u_hat)
    s = norm * np.einsum("ij,ij->i", u, u_hat) / np.where(energy > 0, energy, 1.0)
    return (q @ basis) @ (u_hat * s[:, None]).T + (q @ mean)[:, None]


def experiment(x: np.ndarray, q: np.ndarray, gt: np.ndarray, bits: int) -> dict:
    codec = get_codec(f"semq{bits}")
    params = codec.fit(x)
    out = {"uniform": recall_at_k(codec.score(q, codec.encode(x, params), params), gt, K)}
    mean, basis = params["mean"].astype(np.float64), params["basis"].astype(np.float64)
    r = x - mean
    u = (r @ basis) / np.linalg.norm(r, axis=1, keepdims=True)
    widths = params["width"].astype(int)
    gauss = {w: lloyd(np.random.default_rng(w).standard_normal(400_000), 1 << w)
             for w in sorted(set(widths))}
    rms = np.sqrt((u * u).mean(axis=0))
    out["gauss-lm"] = recall_at_k(variant_scores(
        x, q, params, [gauss[w] * rms[i] for i, w in enumerate(widths)]), gt, K)
    out["empirical-lm"] = recall_at_k(variant_scores(
        x, q, params, [lloyd(u[:, i], 1 << w) for i, w in enumerate(widths)]), gt, K)
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", default="token,sentence,gaussian")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--quick", action="store_true", help="smoke run: 2,000 rows")
    args = parser.parse_args(argv)
    rows, nq, bits_list = (2_000, 100, BITS[:2]) if args.quick else (20_000, 1_000, BITS)
    threads = limit_threads()
    results = {}
    print("| data set | bits | uniform (semq) | gauss-lm | empirical-lm |\n|---|---:|---:|---:|---:|")
    for name in args.datasets.split(","):
        data = _synthetic.make(name, rows, nq)
        x, q = data["x"].astype(np.float64), data["q"].astype(np.float64)
        gt = exact_knn(data["q"], data["x"], K)[1]
        for bits in bits_list:
            r = experiment(x, q, gt, bits)
            results[f"{name}/semq{bits}"] = r
            print(f"| {name} | {bits} | {r['uniform']:.4f} | {r['gauss-lm']:.4f} | "
                  f"{r['empirical-lm']:.4f} |", flush=True)
    write_results(args.out, threads, results)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
