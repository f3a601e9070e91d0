"""Regenerate the golden fixtures tests/golden/<spec>.npz (one per spec in SPECS).

Each file holds a small seeded input and everything the codec derives from it: ``x``,
``params`` (``params.to_bytes()`` as uint8), ``codes``, ``decoded`` and ``scores`` of three
fixed queries (``queries``). tests/test_golden.py checks that today's code reproduces them
exactly, so stored indexes stay readable and refits stay reproducible.

Only regenerate with intent: a change that alters these files changes the on-disk format or
the codec's output, so bump the params format version (``PARAMS_MAGIC``) or the codec's
version/spec as well, and say so in the change description.

    python tests/golden/make_golden.py
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from semq_transforms.codecs import SPECS, get_codec

SEED = 2026
N, D, NQ = 40, 48, 3


def golden_inputs() -> tuple[np.ndarray, np.ndarray]:
    """The seeded corpus [40, 48] (unit rows plus a shared mean offset) and 3 queries."""
    rng = np.random.default_rng(SEED)
    x = rng.standard_normal((N, D))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    x += 0.1 * rng.standard_normal(D)
    q = rng.standard_normal((NQ, D))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return x.astype(np.float32), q.astype(np.float32)


def main() -> None:
    x, queries = golden_inputs()
    for spec in SPECS:
        codec = get_codec(spec)
        params = codec.fit(x)
        codes = codec.encode(x, params)
        np.savez_compressed(
            HERE / f"{spec}.npz", x=x, queries=queries,
            params=np.frombuffer(params.to_bytes(), dtype=np.uint8),
            codes=codes, decoded=codec.decode(codes, params),
            scores=codec.score(queries, codes, params))
        print(f"{spec}: params {params.digest()[:16]}, codes {codes.shape}")


if __name__ == "__main__":
    main()
