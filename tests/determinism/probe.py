"""Child process of the determinism matrix: fit and encode every codec and level chain on the
committed inputs and print one JSON object of SHA-256 digests (params and codes per input,
chain and level; the job's validation searches, exact and compressed, with deterministic
scores), plus the BLAS kernel and numpy SIMD targets that really ran.

    python tests/determinism/probe.py [--batched]

``--batched`` also encodes every input in odd-sized slices (1, 7, 300 rows) and checks the
codes against the whole-shard encode (a row's code must not depend on its batch).
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from semq_transforms.codecs import SPECS
from semq_transforms.eval import exact_knn
from semq_transforms.levels import encode_levels, level_base, search_levels

INPUTS = HERE / "inputs.npz"
#: Level chains as shards hold them (single codecs, then the multi-level defaults).
CHAINS = tuple((spec,) for spec in SPECS) + (
    ("semq1", "semq4"), ("semq1", "semqr4"), ("semq2", "semqr3"), ("semq1", "int8"))
#: Validation searches: results per query, candidates re-scored, and a score budget small
#: enough that the scan runs in several blocks.
K, RERANK, SCORE_BUDGET = 10, 40, 1 << 12


def _sha(a: np.ndarray | bytes) -> str:
    data = a if isinstance(a, bytes) else np.ascontiguousarray(a).tobytes()
    return hashlib.sha256(data).hexdigest()[:24]


def runtime() -> dict:
    from numpy._core._multiarray_umath import __cpu_dispatch__, __cpu_features__
    from threadpoolctl import threadpool_info
    blas = [(i.get("internal_api"), i.get("architecture"), i.get("num_threads"))
            for i in threadpool_info() if i.get("user_api") == "blas"]
    return {"blas": blas, "simd": [t for t in __cpu_dispatch__ if __cpu_features__.get(t)]}


def digests(batched: bool = False) -> dict[str, str]:
    out: dict[str, str] = {}
    with np.load(INPUTS, allow_pickle=False) as data:
        inputs = {name: data[name] for name in data.files}
    inputs["ties384"] = with_ties(inputs["wide384"][:60])
    for name, x in inputs.items():
        queries = validation_queries(x)
        k = min(K, x.shape[0])
        out[f"{name}/exact_knn"] = _sha(b"".join(
            a.tobytes() for a in exact_knn(queries, x, k, deterministic=True)))
        for chain in CHAINS:
            levels = encode_levels(x, chain)
            for i, level in enumerate(levels):
                key = f"{name}/{'+'.join(chain)}/{i}"
                out[key + "/params"] = _sha(level.params.to_bytes())
                out[key + "/codes"] = _sha(level.codes)
                if batched:
                    _check_batches(key, x, levels, i)
            found = search_levels(levels, queries, k, rerank=RERANK,
                                  score_budget=SCORE_BUDGET, deterministic=True)
            out[f"{name}/{'+'.join(chain)}/search"] = _sha(b"".join(a.tobytes() for a in found))
    return out


def with_ties(x: np.ndarray) -> np.ndarray:
    """``x`` [n, d] followed by two coordinate permutations of every row: against a
    constant query (see :func:`validation_queries`) the three copies of a row tie exactly,
    while float sums of their terms in different orders differ in the last bits."""
    return np.concatenate([x, x[:, ::-1], np.roll(x, 7, axis=1)])


def validation_queries(x: np.ndarray) -> np.ndarray:
    """The first rows of ``x`` and a constant vector (every coordinate permutation of a row
    scores the same against it): float32 ``[<= 17, d]``."""
    constant = np.full((1, x.shape[1]), 1.0 / np.sqrt(x.shape[1]), dtype=np.float32)
    return np.concatenate([x[:16], constant])


def _check_batches(key, x, levels, i) -> None:
    level = levels[i]
    n = x.shape[0]
    for size, stop in ((1, min(n, 9)), (7, n), (300, n)):
        parts = []
        for start in range(0, stop, size):
            rows = np.arange(start, min(start + size, stop))
            parts.append(level.codec.encode(x[rows], level.params,
                                            base=level_base(levels, i, rows)))
        if not np.array_equal(np.concatenate(parts), level.codes[:stop]):
            raise AssertionError(f"{key}: codes in batches of {size} rows differ")


if __name__ == "__main__":
    result = {"runtime": runtime(), "digests": digests(batched="--batched" in sys.argv)}
    json.dump(result, sys.stdout, indent=1, sort_keys=True)
