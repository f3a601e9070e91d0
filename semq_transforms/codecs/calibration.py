"""Shard sampling and range calibration shared by the scalar codecs. Pure numpy.

Calibration rule (documented in the README and used by ``int8``/``int4``): for every
dimension, candidate ranges are the ``[p, 1 - p]`` quantile pairs of the fit sample for
``p`` in :data:`CLIP_QUANTILES` (``p = 0`` is min/max); the candidate with the smallest squared
reconstruction error on the sample wins. Values outside the range are clipped when encoding.
"""

from __future__ import annotations

import numpy as np

#: Lower-tail quantiles tried as clipping points (0.0 is the plain min/max range).
CLIP_QUANTILES = (0.0, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2)
#: Rows the calibration search looks at (an evenly strided sample of the shard).
CALIBRATION_ROWS = 8192


def strided_sample(x: np.ndarray, max_rows: int) -> np.ndarray:
    """At most ``max_rows`` rows of ``x`` taken at an even stride (deterministic)."""
    if x.shape[0] <= max_rows:
        return x
    idx = np.linspace(0, x.shape[0] - 1, max_rows).round().astype(np.int64)
    return x[idx]


def uniform_error(x: np.ndarray, lo: np.ndarray, step: np.ndarray, levels: int) -> np.ndarray:
    """Mean squared error per column of quantizing ``x`` onto ``lo + step * {0..levels-1}``."""
    safe = np.where(step > 0, step, 1.0)
    codes = np.clip(np.rint((x - lo) / safe), 0, levels - 1)
    restored = lo + codes * step
    return np.mean((x - restored) ** 2, axis=0)


def calibrate_range(x: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-column ``(lo, hi)`` float64 ranges minimizing uniform ``levels``-level error.

    Args:
        x: float32 ``[n, d]`` fit rows.
        levels: number of quantization levels (``2**bits``).
    Returns:
        ``lo, hi``: float64 ``[d]`` each, ``lo <= hi``.
    """
    sample = strided_sample(x, CALIBRATION_ROWS).astype(np.float64)
    qs = np.array(CLIP_QUANTILES)
    lows = np.quantile(sample, qs, axis=0)          # [len(qs), d]
    highs = np.quantile(sample, 1.0 - qs, axis=0)
    best_err = np.full(x.shape[1], np.inf)
    best_lo, best_hi = lows[0].copy(), highs[0].copy()
    for lo, hi in zip(lows, highs):
        err = uniform_error(sample, lo, (hi - lo) / (levels - 1), levels)
        better = err < best_err
        best_err[better], best_lo[better], best_hi[better] = err[better], lo[better], hi[better]
    return best_lo, best_hi
