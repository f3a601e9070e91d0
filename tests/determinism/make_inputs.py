"""Write tests/determinism/inputs.npz: the shards the determinism matrix fits and encodes.

Stored, not regenerated per run, so the inputs themselves never depend on the machine. Shapes
other than sentence embeddings on purpose (issue: quality and determinism are judged on data
of other shapes): a token-embedding-like table (not unit norm, anisotropic, heavy-tailed
norms), constant and all-zero dimensions, duplicate rows, a rank-deficient shard, tiny
shards, and one at d = 384 wide enough that BLAS splits work over threads.

    python tests/determinism/make_inputs.py
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def make_inputs() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(14)

    def rotated(n: int, d: int, decay: float) -> np.ndarray:
        q, _ = np.linalg.qr(rng.standard_normal((d, d)))
        return (rng.standard_normal((n, d)) * decay ** np.arange(d)) @ q.T

    unit = rotated(500, 96, 0.95) + 0.8 * rng.standard_normal(96) / np.sqrt(96)
    unit /= np.linalg.norm(unit, axis=1, keepdims=True)
    tokens = rotated(600, 128, 0.97) * np.exp(rng.standard_normal((600, 1)) * 0.7)
    tokens += rng.standard_t(3, (600, 128)) * 0.02
    const = rotated(400, 64, 0.9)
    const[:, 5:13] = rng.standard_normal(8)          # constant dimensions
    const[:, 40:42] = 0.0                            # all-zero dimensions
    const /= np.linalg.norm(const, axis=1, keepdims=True)
    dup = rotated(12, 48, 0.9)[rng.integers(0, 12, 200)]
    rank = rng.standard_normal((300, 5)) @ rng.standard_normal((5, 80))
    wide = rotated(600, 384, 0.985) + 0.05
    wide /= np.linalg.norm(wide, axis=1, keepdims=True)
    tiny = rng.standard_normal((3, 32))
    single = rng.standard_normal((1, 16))
    return {name: a.astype(np.float32) for name, a in {
        "unit96": unit, "tokens128": tokens, "constdims64": const, "duplicates48": dup,
        "rank5_80": rank, "wide384": wide, "tiny3x32": tiny, "single1x16": single}.items()}


if __name__ == "__main__":
    np.savez_compressed(HERE / "inputs.npz", **make_inputs())
