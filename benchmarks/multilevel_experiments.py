"""Experiments behind the multi-level target (issue 3): can <= 5.34 bits/dim reach recall@10 0.995?

    python benchmarks/multilevel_experiments.py [--data PATH] [--out PATH.json]

Not library code: prototypes built from semq's fitting steps, on the Banking77 embeddings
(train rows indexed, test rows as queries, exact float top-10 as truth), one thread.

* ``semq5``: the library codec (5.167 bits/dim), exact scoring of every row.
* ``direction bits``: one semq-style code spending the whole 5.34 bits/dim budget on
  direction bits (at d = 384: 1952 bits over the kept axes + 12 bytes of scales = 256 bytes =
  5.333 bits/dim), plain rounding or with the per-vector pre-scale search (the code with the best
  query-weighted cosine over 19 pre-scales of the direction, as extended RaBitQ chooses codes).
* ``embedded pair``: the same code split in two levels: the scan level is the top bits of each
  axis code along semq1's allocation (384 bits + one float32 scale = 52 bytes), the rerank level
  the remaining bits + two float32 scales (204 bytes). Search scans the first level, reranks
  ``R`` candidates with the full code.

Prints a table and writes JSON.
"""

# First import: pins every BLAS/OpenMP library to one thread before numpy is loaded.
from _common import DEFAULT_DATA, REPO, limit_threads, load_data, machine_info

# isort: split
import argparse
import json
import sys
from pathlib import Path

import numpy as np

from semq_transforms.codecs import get_codec
from semq_transforms.codecs import semq as semq_impl
from semq_transforms.eval import exact_knn, knn_intersection_measure, topk

BUDGET_BITS_PER_DIM = 5.34   # the target budget, everything stored
SIDE_BYTES = 12              # scan scale + rerank's two scales, float32 each


def direction_bits(dim: int) -> int:
    """Direction bits that fit the budget with the side data: 1952 at d = 384."""
    return (int(BUDGET_BITS_PER_DIM * dim / 8) - SIDE_BYTES) * 8
PRE_SCALES = np.linspace(0.8, 1.25, 19)


def fit(x: np.ndarray, total: int) -> dict:
    mean, axes, variance = semq_impl._pca(x)
    weight = variance + (mean @ axes) ** 2
    steps, errors = semq_impl._direction_steps(x, mean, axes)
    width = semq_impl._allocate_bits(weight, errors, total)
    coarse = semq_impl._allocate_bits(weight, errors, x.shape[1])   # semq1's allocation
    assert (coarse <= width).all(), "greedy allocations are nested"
    kept = np.argsort(-width, kind="stable")
    kept = kept[width[kept] > 0]
    return {"mean": mean, "basis": axes[:, kept], "step": steps[width[kept], kept],
            "width": width[kept], "coarse": coarse[kept], "weight": weight[kept]}


def encode(u: np.ndarray, p: dict, pre_scales) -> np.ndarray:
    """Axis codes int64 [n, k]: for each row the pre-scale whose rounded code has the best
    query-weighted cosine with the direction."""
    levels = (1 << p["width"]).astype(np.float64)
    best = np.full(u.shape[0], -np.inf)
    out = np.zeros(u.shape, np.int64)
    w = p["weight"]
    for t in pre_scales:
        code = np.clip(np.floor(t * u / p["step"] + levels / 2), 0, levels - 1)
        level = (code + 0.5 - levels / 2) * p["step"]
        cos = (np.einsum("ij,ij,j->i", u, level, w)
               / np.sqrt(np.einsum("ij,ij,j->i", level, level, w)))
        better = cos > best
        best[better] = cos[better]
        out[better] = code[better]
    return out


def scaled(u: np.ndarray, norm: np.ndarray, level: np.ndarray) -> np.ndarray:
    """Least-squares per-row scale of ``level`` onto the direction, times the norm."""
    dot = np.einsum("ij,ij->i", u, level)
    energy = np.einsum("ij,ij->i", level, level)
    return level * (norm * np.divide(dot, energy, out=np.zeros_like(dot),
                                     where=energy > 0))[:, None]


def experiment(xb: np.ndarray, xq: np.ndarray, gt: np.ndarray, pre_scales) -> dict:
    p = fit(xb, direction_bits(xb.shape[1]))
    centered = xb - p["mean"]
    z = centered @ p["basis"]
    norm = np.linalg.norm(centered, axis=1)
    u = z / norm[:, None]
    code = encode(u, p, pre_scales)
    levels = 1 << p["width"]
    fine = scaled(u, norm, (code + 0.5 - levels / 2) * p["step"])
    shift = p["width"] - p["coarse"]
    top = code >> shift
    coarse_level = np.where(p["coarse"] > 0,
                            (top + 0.5 - (1 << p["coarse"]) / 2) * p["step"] * (1 << shift), 0)
    coarse = scaled(u, norm, coarse_level)
    q_axes = xq @ p["basis"]
    fine_scores, scan_scores = q_axes @ fine.T, q_axes @ coarse.T
    result = {"fine_alone": knn_intersection_measure(topk(fine_scores, 10)[1], gt),
              "scan_alone": knn_intersection_measure(topk(scan_scores, 10)[1], gt)}
    for rerank in (100, 200, 500):
        _, cand = topk(scan_scores, rerank)
        _, order = topk(np.take_along_axis(fine_scores, cand, axis=1), 10)
        result[f"rerank_{rerank}"] = knn_intersection_measure(
            np.take_along_axis(cand, order, axis=1), gt)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--out", type=Path,
                        default=REPO / "benchmarks/results/multilevel_experiments.json")
    args = parser.parse_args()
    threads = limit_threads()
    data = load_data(args.data)
    xb, xq = data["x"], data["q"]
    gt = exact_knn(xq, xb, 10)[1]
    codec = get_codec("semq5")
    params = codec.fit(xb)
    semq5 = knn_intersection_measure(
        topk(codec.score(xq, codec.encode(xb, params), params), 10)[1], gt)
    total_bits = direction_bits(xb.shape[1])
    bits_per_dim = (total_bits // 8 + SIDE_BYTES) * 8 / xb.shape[1]
    rows = {"plain rounding": experiment(xb, xq, gt, [1.0]),
            "pre-scale search": experiment(xb, xq, gt, PRE_SCALES)}
    print(f"semq5 (library, {codec.code_bytes(xb.shape[1]) * 8 / xb.shape[1]:.3f} bits/dim): "
          f"recall@10 {semq5:.4f}\n")
    print(f"One code of {total_bits} direction bits, {bits_per_dim:.3f} bits/dim in all:\n")
    print("| encoder | fine code alone | scan level alone | scan + rerank 100 | rerank 200 | "
          "rerank 500 |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['fine_alone']:.4f} | {r['scan_alone']:.4f} | "
              f"{r['rerank_100']:.4f} | {r['rerank_200']:.4f} | {r['rerank_500']:.4f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"machine": machine_info(), "threads": threads,
                                    "semq5": semq5, "bits_per_dim": bits_per_dim,
                                    "total_direction_bits": total_bits, "results": rows},
                                   indent=2))
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
