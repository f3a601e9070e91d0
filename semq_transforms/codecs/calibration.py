"""Shard sampling and range calibration shared by the scalar codecs. Pure numpy.

Calibration rule (``int8`` / ``int4``), judged by neighbors kept rather than by per-float error:

0. Rows whose norm is more than :data:`OUTLIER_NORM` times the shard's median row norm are
   left out of the fit (:func:`inlier_rows`; they are clipped when encoded): one extreme row
   would otherwise stretch every dimension's range until the other rows share one level.
1. The plain range is each dimension's min and max over the (inlier) shard (never clips).
2. A clipped range is chosen per dimension among the ``[p, 1 - p]`` quantile pairs of an
   evenly strided sample, ``p`` in :data:`CLIP_QUANTILES` (``p = 0`` is the min/max), as the
   one with the smallest squared reconstruction error on the sample.
3. The clipped ranges are used only if they keep significantly more top-10 neighbors than
   the plain ranges on the sample (queries: every 16th sample row; scores: inner products):
   the mean per-query gain must exceed :data:`CLIP_SIGNIFICANCE` standard errors (a
   one-sided test at 5%). Clipping lowers the average error, but in maximum-inner-product
   search the rows with extreme values are often the ones that rank first, so on
   heavy-tailed or norm-varying data it can lose neighbors; and at 8 bits the gain is often
   within the sample's noise, which a "keeps more" rule would follow. This check keeps
   clipping only where it clearly helps.

Values outside the chosen range are clipped when encoding. Errors are summed in a fixed order
and the neighbor check's inner products are exact integer products of rows on a fixed-point
grid (:mod:`semq_transforms.codecs.exact`), so the choice is the same on every machine.
"""

from __future__ import annotations

import numpy as np

from semq_transforms.codecs.exact import exact_inner_products, ordered_sum, row_norms
from semq_transforms.eval import knn_intersections, topk

#: Rows more than this many times the median row norm are outliers (:func:`inlier_rows`). Far
#: above the spread of real embedding norms (token tables: tens), far below a broken row.
OUTLIER_NORM = 256.0
#: Lower-tail quantiles tried as clipping points (0.0 is the plain min/max range).
CLIP_QUANTILES = (0.0, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2)
#: Rows the calibration search looks at (an evenly strided sample of the shard).
CALIBRATION_ROWS = 8192
#: Every this-many sample rows is a query in the neighbor check.
QUERY_STRIDE = 16
#: Neighbors compared in the neighbor check.
CHECK_K = 10
#: Standard errors by which clipping's mean per-query gain of kept neighbors must be positive
#: (one-sided 5% level of a normal test).
CLIP_SIGNIFICANCE = 1.645


def strided_rows(n: int, max_rows: int) -> np.ndarray:
    """Row numbers of :func:`strided_sample`: int64, all ``n`` rows if ``n <= max_rows``."""
    if n <= max_rows:
        return np.arange(n, dtype=np.int64)
    return np.linspace(0, n - 1, max_rows).round().astype(np.int64)


def strided_sample(x: np.ndarray, max_rows: int, *, within: int | None = None) -> np.ndarray:
    """At most ``max_rows`` rows of ``x`` taken at an even stride (deterministic).

    ``within``: the same rows as ``strided_sample(strided_sample(x, within), max_rows)``,
    without copying the intermediate sample.
    """
    if within is not None:
        outer = strided_rows(x.shape[0], within)
        return x[outer[strided_rows(outer.shape[0], max_rows)]]
    if x.shape[0] <= max_rows:
        return x
    return x[strided_rows(x.shape[0], max_rows)]


def typical_norm(norm: np.ndarray) -> float | None:
    """The median of the non-zero entries of row norms ``norm`` [n] (None if all are zero):
    the scale outlier rules are relative to."""
    nonzero = norm[norm > 0]
    return float(np.median(nonzero)) if nonzero.size else None


def inlier_rows(x: np.ndarray) -> np.ndarray:
    """Rows of float ``x`` [n, d] whose norm is at most :data:`OUTLIER_NORM` times the median
    of the non-zero row norms: ``x`` itself when every row is, else a copy without the rest
    (never empty)."""
    norm = row_norms(x)
    typical = typical_norm(norm)
    if typical is None:
        return x
    keep = norm <= OUTLIER_NORM * typical
    return x if keep.all() else x[keep]


def quantize_uniform(x: np.ndarray, lo: np.ndarray, step: np.ndarray, levels: int) -> np.ndarray:
    """Restore ``x`` [n, d] after rounding onto ``lo + step * {0..levels-1}`` per column."""
    safe = np.where(step > 0, step, 1.0)
    codes = np.clip(np.rint((x - lo) / safe), 0, levels - 1)
    return lo + codes * step


def calibrate_range(x: np.ndarray, levels: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-column ``(lo, hi)`` ranges for uniform ``levels``-level quantization (rule above).

    Args:
        x: float32 ``[n, d]`` shard rows.
        levels: number of quantization levels (``2**bits``).
    Returns:
        ``lo, hi``: float64 ``[d]`` each, ``lo <= hi``.
    """
    x = inlier_rows(x)
    plain_lo = x.min(axis=0).astype(np.float64)
    plain_hi = x.max(axis=0).astype(np.float64)
    sample = strided_sample(x, CALIBRATION_ROWS).astype(np.float64)
    qs = np.array(CLIP_QUANTILES[1:])
    lows = np.vstack([plain_lo, np.quantile(sample, qs, axis=0)])      # [len(qs) + 1, d]
    highs = np.vstack([plain_hi, np.quantile(sample, 1.0 - qs, axis=0)])
    best_err = np.full(x.shape[1], np.inf)
    clip_lo, clip_hi = plain_lo.copy(), plain_hi.copy()
    for lo, hi in zip(lows, highs):
        restored = quantize_uniform(sample, lo, (hi - lo) / (levels - 1), levels)
        err = ordered_sum((sample - restored) ** 2, axis=0) / sample.shape[0]
        better = err < best_err
        best_err[better], clip_lo[better], clip_hi[better] = err[better], lo[better], hi[better]
    if np.array_equal(clip_lo, plain_lo) and np.array_equal(clip_hi, plain_hi):
        return plain_lo, plain_hi
    queries = sample[::QUERY_STRIDE]
    k = min(CHECK_K, sample.shape[0])
    _, exact = topk(exact_inner_products(queries, sample), k)

    def kept(lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        restored = quantize_uniform(sample, lo, (hi - lo) / (levels - 1), levels)
        return knn_intersections(topk(exact_inner_products(queries, restored), k)[1], exact)

    gain = (kept(clip_lo, clip_hi) - kept(plain_lo, plain_hi)).astype(np.float64)
    if significantly_positive(gain):
        return clip_lo, clip_hi
    return plain_lo, plain_hi


def significantly_positive(gain: np.ndarray) -> bool:
    """Whether the mean of integer-valued float ``gain`` [m] exceeds
    :data:`CLIP_SIGNIFICANCE` standard errors (sums exact: integers, fixed order)."""
    m = gain.shape[0]
    mean = ordered_sum(gain) / m
    if m < 2:
        return mean > 0
    spread = ordered_sum((gain - mean) ** 2) / (m - 1)
    return bool(mean > CLIP_SIGNIFICANCE * np.sqrt(spread / m) if spread > 0 else mean > 0)
