"""Regenerate the golden shard tests/golden/shards/semq1_int8_64x48.semq and its expected
contents tests/golden/shards/semq1_int8_64x48.npz.

The shard holds 64 seeded rows of dimension 48, int64 ids, levels ``semq1`` (scan) and ``int8``
(rerank). The ``.npz`` keeps the input ``x``, the ids, three ``queries``, and per level ``i``
the params bytes (``params_i``), ``codes_i``, ``decoded_i`` and ``scores_i``, plus the file's
and content's SHA-256. tests/test_shard_golden.py reads the stored shard with today's code and
checks it against them, and that re-writing the same content gives the same bytes.

Only regenerate with intent: a change that alters these files changes the shard format, so
bump ``SHARD_FORMAT_VERSION`` (format/meta.py) as FORMAT.md's versioning rule says, and say so
in the change description.

    python tests/golden/make_golden_shard.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from semq_transforms.format.shard import write_shard
from semq_transforms.levels import encode_levels

SEED = 2027
N, D, NQ = 64, 48, 3
SPECS = ("semq1", "int8")
SHARD = HERE / "shards" / "semq1_int8_64x48.semq"
EXPECTED = SHARD.with_suffix(".npz")
#: The path recorded in ShardMeta (not in the file).
REL_PATH = "runs/golden/shard-00000.semq"


def golden_shard_inputs() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Seeded x [64, 48] (unit rows plus a shared offset), distinct int64 ids spread over
    the whole int64 range (negative ones included), and 3 unit queries."""
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((N, D))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x += 0.1 * rng.standard_normal(D)
    ids = rng.choice(np.iinfo(np.int64).max, size=N, replace=False).astype(np.int64)
    ids[::3] *= -1
    q = rng.standard_normal((NQ, D))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x.astype(np.float32), ids, q.astype(np.float32)


def golden_stats(x: np.ndarray) -> dict[str, float]:
    return {"mean_norm": round(float(np.sqrt((x.astype(np.float64) ** 2).sum(1)).mean()), 6)}


def main() -> None:
    x, ids, queries = golden_shard_inputs()
    levels = encode_levels(x, SPECS)
    SHARD.parent.mkdir(parents=True, exist_ok=True)
    meta = write_shard(str(SHARD), ids=ids, levels=levels, path=REL_PATH, stats=golden_stats(x))
    arrays = {"x": x, "ids": ids, "queries": queries,
              "file_sha256": np.array(meta.file_sha256),
              "content_sha256": np.array(meta.content_sha256)}
    for i, level in enumerate(levels):
        codec, params, codes = level.codec, level.params, level.codes
        arrays |= {f"params_{i}": np.frombuffer(params.to_bytes(), dtype=np.uint8),
                   f"codes_{i}": codes, f"decoded_{i}": codec.decode(codes, params),
                   f"scores_{i}": codec.score(queries, codes, params)}
    np.savez_compressed(EXPECTED, **arrays)
    print(f"{SHARD.name}: {meta.file_bytes} bytes, file {meta.file_sha256[:16]}, "
          f"content {meta.content_sha256[:16]}")


if __name__ == "__main__":
    main()
