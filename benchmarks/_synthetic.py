"""Seeded synthetic embedding sets for the codec benchmark (no network, nothing downloaded).

Each generator draws the *distribution* (rotation, mean offset, constant values) from a fixed
seed and the *rows* from ``seed``: corpus and queries come from the same distribution with
different row seeds. Everything is float32.

* :func:`token_like`: d=256, strongly anisotropic (per-axis std ``k^-0.8``), randomly rotated,
  a common mean offset, heavy-tailed Student-t (df=3) noise, NOT unit norm: row norms are
  lognormal (sigma 0.5), like rows of a token-embedding table.
* :func:`sentence_like`: d=384, unit-norm rows, anisotropic (per-axis std ``exp(-k/80)``),
  rotated, a mean offset, and 16 coordinates held constant across all rows before the
  normalisation (the "constant dimensions" of sentence encoders).
* :func:`gaussian`: d=128, isotropic-ish Gaussian (per-axis std uniform in [0.8, 1.2], no
  rotation, no offset, not normalised): a control.
"""

from __future__ import annotations

import numpy as np

#: Seed of each generator's distribution (rotation, offset, constants); rows use their own.
DISTRIBUTION_SEED = 20261204
CORPUS_SEED, QUERY_SEED = 1, 2


def _rotation(rng: np.random.Generator, d: int) -> np.ndarray:
    """A Haar-random orthogonal ``[d, d]`` matrix."""
    q, r = np.linalg.qr(rng.standard_normal((d, d)))
    return q * np.sign(np.diag(r))


def _offset(rng: np.random.Generator, d: int, norm: float) -> np.ndarray:
    v = rng.standard_normal(d)
    return v * (norm / np.linalg.norm(v))


def token_like(n: int, seed: int) -> np.ndarray:
    d = 256
    dist = np.random.default_rng(DISTRIBUTION_SEED)
    rotation, offset = _rotation(dist, d), _offset(dist, d, 1.0)
    std = np.arange(1, d + 1, dtype=np.float64) ** -0.8
    rng = np.random.default_rng([DISTRIBUTION_SEED, seed])
    x = (rng.standard_normal((n, d)) * std) @ rotation.T + offset
    x += 0.01 * rng.standard_t(3, size=(n, d))
    norms = rng.lognormal(0.0, 0.5, size=n)
    x *= (norms / np.linalg.norm(x, axis=1))[:, None]
    return np.ascontiguousarray(x, dtype=np.float32)


def sentence_like(n: int, seed: int) -> np.ndarray:
    d, n_const = 384, 16
    dist = np.random.default_rng(DISTRIBUTION_SEED + 1)
    rotation, offset = _rotation(dist, d), _offset(dist, d, 1.0)
    const_axes = dist.choice(d, size=n_const, replace=False)
    const_values = dist.normal(0.0, 0.3, size=n_const)
    std = np.exp(-np.arange(d) / 80.0) * 0.25
    rng = np.random.default_rng([DISTRIBUTION_SEED + 1, seed])
    x = (rng.standard_normal((n, d)) * std) @ rotation.T + offset
    x[:, const_axes] = const_values
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32)


def gaussian(n: int, seed: int) -> np.ndarray:
    d = 128
    dist = np.random.default_rng(DISTRIBUTION_SEED + 2)
    std = dist.uniform(0.8, 1.2, size=d)
    rng = np.random.default_rng([DISTRIBUTION_SEED + 2, seed])
    return np.ascontiguousarray(rng.standard_normal((n, d)) * std, dtype=np.float32)


#: name -> (generator, description)
GENERATORS = {
    "token": (token_like, ("token-table-like: d=256, std k^-0.8, rotated, mean offset, "
                           "Student-t(3) noise 0.01, row norms lognormal(0, 0.5)")),
    "sentence": (sentence_like, ("sentence-like: d=384, unit norm, std exp(-k/80), rotated, "
                                 "mean offset, 16 constant dims before normalisation")),
    "gaussian": (gaussian, ("isotropic-ish Gaussian control: d=128, std U[0.8, 1.2], "
                            "no rotation/offset/normalisation")),
}


def make(name: str, n: int, nq: int) -> dict:
    """Corpus ``x`` [n, d] and queries ``q`` [nq, d] of generator ``name``."""
    gen, description = GENERATORS[name]
    return {"x": gen(n, CORPUS_SEED), "q": gen(nq, QUERY_SEED), "description": description}
