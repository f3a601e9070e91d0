"""``semq<b>``: the direction codec, ``b`` = 1..8 bits per dimension on average.

Semantic search cares about the order of inner products, so the codec spends its bits where
queries will look. Fitting one shard (pure numpy, and the same bits on every machine: the
arithmetic follows :mod:`semq_transforms.codecs.exact`):

1. **Center** on the shard mean ``m``: ``r = x - m``. ``<q, m>`` is the same for every row, so
   ranking depends on ``<q, r>`` only.
2. **Rotate** onto the shard's principal axes ``V`` (eigenvectors of the covariance, sorted by
   variance, signs fixed, from :func:`~semq_transforms.codecs.eigen.symmetric_eigh`):
   ``z = V^T r``. Variance is now concentrated in the first axes. The mean and covariance
   see every row shrunk to at most :data:`NORM_CLIP` times the median norm, so one extreme
   row cannot move the frame (it is still coded, with its own norm).
3. **Split magnitude from direction**: ``u = z / |z|``; ``|z|`` is folded into one per-vector
   float32 correction (step 6), the direction ``u`` is what gets coded.
4. **Allocate bits** to axes greedily: the next bit goes to the axis where it removes the most
   expected query-weighted error ``w_i * (D_i(b_i) - D_i(b_i + 1))``, where
   ``w_i = E[<q, v_i>^2]`` is the query energy along axis ``i`` (queries are assumed to look
   like the shard's rows) and ``D_i(b)`` is the squared error of the best uniform ``b``-bit
   quantizer for ``u_i``, measured on a sample of the shard. Axes get 0 to
   :data:`MAX_AXIS_BITS` bits; the total is exactly ``b * d``. Axes with no bits are dropped
   (the projection is ``[d, k]``, ``k <= d``).
5. **Quantize** each kept axis with a mid-rise uniform quantizer: ``code = clip(floor(u_i /
   step_i + L_i / 2), 0, L_i - 1)``, level ``(code + 1/2 - L_i / 2) * step_i``, where the step
   is the one that minimized ``D_i`` (searched around the Gaussian optimum, so clipping of the
   tails is chosen on the data).
6. **Correct** per vector, with ``û`` the quantized direction and ``cos = <u, û> / |û|``, two
   float32 scales (the only side data):

   * ``s_score = |z| <u, û> / |û|^2``, the least-squares scale of ``û`` onto ``z``, used by
     ``score``. It ranks best: the quantization error sits mostly on low-variance axes that
     queries barely look at, so shrinking by ``cos`` is right there.
   * ``s_restore = s_score / max(cos^2, 1/4)``, used by ``decode``: the RaBitQ estimator
     ``<q, û> / <u, û>``, which makes the inner product of a restored vector with any fixed
     vector unbiased under random quantization error, so models trained on float vectors
     (a classifier's logits) see restored vectors at the right scale. ``cos`` is floored so
     a direction the code barely captures is not blown up.

Restored vector ``y = m + s_restore * V û``; score ``<q, m> + s_score * <V^T q, û>``, computed
on the ``k`` kept axes without restoring. One vector's code is the bit planes of its axis
codes (:func:`semq_transforms.codecs.bitpack.pack_planes`, ``b * d`` bits) followed by
``s_score`` and ``s_restore`` as float32 little-endian: ``ceil(b * d / 8) + 8`` bytes.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass
from typing import Any

import numpy as np

from semq_transforms.codecs.base import (
    MIN_STEP,
    BitsCodec,
    FitCache,
    rowwise_matmul,
)
from semq_transforms.codecs.bitpack import pack_planes, plane_sizes, unpack_planes
from semq_transforms.codecs.calibration import strided_sample, typical_norm
from semq_transforms.codecs.eigen import symmetric_eigh
from semq_transforms.codecs.exact import (
    ROW_BITS,
    exact_matmul,
    exact_square_norms,
    exp2,
    fixed_point_rows,
    grid,
    halve,
    inner_products,
    ordered_sum,
    paired_products,
    row_norms,
)
from semq_transforms.codecs.params import CodecParams
from semq_transforms.codecs.registry import register_codec
from semq_transforms.errors import ParamsError

#: Most bits any one axis may get (codes are held as uint16 while packing).
MAX_AXIS_BITS = 12
#: Rows the mean and principal axes are fitted on (an evenly strided sample of the shard).
FIT_ROWS = 16384
#: Rows the per-axis step and error tables are measured on.
STEP_ROWS = 2048
#: MSE-optimal uniform-quantizer step for a unit Gaussian with 2**b levels, b = 1..12
#: (b <= 8 solved numerically; b > 8 extrapolated). Only a starting point for the search.
GAUSS_STEPS = (1.5958, 0.9955, 0.5854, 0.3355, 0.1883, 0.1040, 0.0568, 0.0307,
               0.0165, 0.0088, 0.0047, 0.0025)
#: Multipliers of the Gaussian step tried per axis and width: 0.5 * 2 ** (i / 5), i = 0..15.
STEP_GRID = tuple(float(g) for g in 0.5 * exp2(np.arange(16) / 5.0))
#: Per-vector side data: s_score and s_restore, float32 each.
SIDE_BYTES = 8
#: Floor of cos^2 in s_restore (at most a 4x inflation).
MIN_COS_SQ = 0.25
#: Rows whose norm exceeds this many times the median norm count in the mean and the
#: principal axes as if they had that norm (one extreme row cannot rotate a shard's frame).
NORM_CLIP = 4.0
#: Bits of the common grid the (clipped) centered rows are put on for the covariance: their
#: products then sum exactly over up to FIT_ROWS = 2**14 rows (2 * 19 + 14 < 53).
COV_BITS = 19


@dataclass(frozen=True)
class _State:
    """What encode/decode/score derive once from checked params."""

    dim: int
    mean: np.ndarray          # float32 [d]
    basis: np.ndarray         # float32 [d, k]
    basis_ints: np.ndarray    # float64 [d, k], basis * 2**ROW_BITS (integers)
    step: np.ndarray          # float32 [k]
    inv_step: np.ndarray      # float32 [k], 1 / step
    half: np.ndarray          # float32 [k], L_i / 2
    top: np.ndarray           # float32 [k], L_i - 1
    center: np.ndarray        # float32 [k], 1/2 - L_i / 2
    restore: np.ndarray       # float32 [k, d], step_i * V^T
    sizes: list[int]          # bit-plane sizes
    packed_bytes: int


@register_codec
class SemqCodec(BitsCodec):
    """Direction codec: PCA rotation, query-weighted bit allocation, two per-vector scales."""

    codec_id = "semq"

    allowed_bits = (1, 2, 3, 4, 5, 6, 7, 8)
    default_bits = 4

    def code_bytes(self, dim: int) -> int:
        return -(-self.bits * dim // 8) + SIDE_BYTES

    # -- params -----------------------------------------------------------------------------

    def param_shapes(self, dim: int):
        # basis: float16 since 0.4.0 (half_basis); float32 in shards written before
        return {"mean": (np.float32, (dim,)), "basis": ((np.float16, np.float32), None),
                "step": (np.float32, None), "width": (np.uint8, None)}

    def _check_params_values(self, params: CodecParams) -> None:
        width, step, basis = params["width"], params["step"], params["basis"]
        k = width.shape[0] if width.ndim == 1 else -1
        if not 1 <= k <= params.dim or step.shape != (k,) or basis.shape != (params.dim, k):
            raise ParamsError(f"{self.spec} params need width [k], step [k], basis [d, k] with "
                              f"1 <= k <= d={params.dim}; got {width.shape}, {step.shape}, "
                              f"{basis.shape}")
        if width.min() < 1 or width.max() > MAX_AXIS_BITS or (np.diff(width.astype(int)) > 0).any():
            raise ParamsError(f"{self.spec} params 'width' must be non-increasing in "
                              f"1..{MAX_AXIS_BITS}")
        if int(width.sum(dtype=np.int64)) != self.bits * params.dim:
            raise ParamsError(f"{self.spec} params 'width' sum to {int(width.sum())} bits, "
                              f"expected {self.bits * params.dim}")
        if (step < MIN_STEP).any():
            raise ParamsError(f"{self.spec} params 'step' must be >= {MIN_STEP:g}")
        check_unit_columns(basis, f"{self.spec} params 'basis'")

    # -- fit --------------------------------------------------------------------------------

    def _fit(self, x: np.ndarray, cache: FitCache) -> CodecParams:
        d = x.shape[1]
        # the same for every semq level of a shard: fitted once per shard through the cache
        mean, axes, variance = cache.get("semq.pca", lambda: _pca(x))
        weight = query_energy(mean, axes, variance)
        steps, errors = cache.get("semq.steps", lambda: _direction_steps(x, mean, axes))
        width = _allocate_bits(weight, errors, self.bits * d)
        order = np.argsort(-width, kind="stable")
        kept = order[width[order] > 0]
        return CodecParams(codec=self.spec, dim=d, arrays={
            "mean": mean.astype(np.float32),
            "basis": half_basis(axes[:, kept]),
            "step": steps[width[kept], kept].astype(np.float32),
            "width": width[kept].astype(np.uint8),
        })

    # -- encode / decode / score ------------------------------------------------------------

    def _prepare(self, params: CodecParams) -> _State:
        step, basis = params["step"], params["basis"].astype(np.float32)
        levels = np.left_shift(1, params["width"].astype(np.int64)).astype(np.float32)
        return _State(
            dim=params.dim, mean=params["mean"], basis=basis, basis_ints=grid_ints(basis),
            step=step, inv_step=np.float32(1.0) / step, half=levels / 2, top=levels - 1,
            center=np.float32(0.5) - levels / 2,
            restore=np.ascontiguousarray((basis * step).T),
            sizes=plane_sizes(params["width"]),
            packed_bytes=self.code_bytes(params.dim) - SIDE_BYTES,
        )

    def _encode(self, x: np.ndarray, st: _State) -> np.ndarray:
        # Machine-independent arithmetic throughout (semq_transforms.codecs.exact): the
        # projection is an exact integer product, the sums are in a fixed order. Work is in
        # axis-major layout ([k, m]: the per-row sums halve contiguous blocks).
        m, k = x.shape[0], st.step.shape[0]
        u, norm = unit_directions(x, st.mean, st.basis_ints, axis_major=True)  # [k, m], [m]
        level = u * st.inv_step[:, None]                   # float32 from here on
        level += st.half[:, None]
        np.floor(level, out=level)
        np.maximum(level, 0, out=level)
        np.minimum(level, st.top[:, None], out=level)       # the code, as float
        # row-major for packing: a uint16 transpose (a float32 one, or packing the
        # transposed view as it is, costs ~3x as much)
        codes = np.ascontiguousarray(level.astype(np.uint16).T)
        level += st.center[:, None]                         # centered level index g_i
        level *= st.step[:, None]                           # û_i
        buf = np.empty((2, 1 << (k - 1).bit_length(), m), dtype=np.float32)
        buf[:, k:] = 0.0
        np.multiply(u, level, out=buf[0, :k])                # terms of <u, û>
        np.multiply(level, level, out=buf[1, :k])            # terms of |û|^2
        dot, energy = halve(buf, 1).astype(np.float64)       # fixed-order sums over axes
        scales = np.empty((m, 2), dtype="<f4")
        scales[:, 0] = norm * dot / energy                                        # s_score
        scales[:, 1] = scales[:, 0] / np.maximum(dot * dot / energy, MIN_COS_SQ)  # s_restore
        out = np.empty((m, st.packed_bytes + SIDE_BYTES), dtype=np.uint8)
        out[:, :st.packed_bytes] = pack_planes(codes, st.sizes)
        out[:, st.packed_bytes:] = scales.view(np.uint8)
        return out

    def _levels(self, codes: np.ndarray, st: _State) -> tuple[np.ndarray, np.ndarray]:
        """uint8 codes -> (centered level indices float32 [m, k], scales float32 [m, 2]).

        Column 0 of the scales is ``s_score``, column 1 ``s_restore``.
        """
        axis_codes = unpack_planes(codes[:, :st.packed_bytes], st.sizes, st.step.shape[0])
        level = axis_codes.astype(np.float32)
        level += st.center
        scales = np.ascontiguousarray(codes[:, st.packed_bytes:]).view("<f4")
        return level, scales.astype(np.float32)

    def _decode(self, codes: np.ndarray, st: _State) -> np.ndarray:
        level, scales = self._levels(codes, st)
        restored = rowwise_matmul(level, st.restore)
        restored *= scales[:, 1:2]
        restored += st.mean
        return restored

    def _prepare_queries(self, q: np.ndarray, st: _State, *, deterministic: bool) -> Any:
        return query_frame(q, st.mean, st.basis, deterministic, step=st.step)

    def _score(self, prepared: Any, codes: np.ndarray, st: _State, *,
               deterministic: bool) -> np.ndarray:
        q_axes, q_mean = prepared
        level, scales = self._levels(codes, st)
        scores = inner_products(q_axes, level, deterministic=deterministic)
        scores *= scales[:, 0]
        scores += q_mean[:, None]
        return scores

    def _score_candidates(self, q: np.ndarray, codes: np.ndarray, st: _State,
                          c: int, *, deterministic: bool) -> np.ndarray:
        q_axes, q_mean = self._prepare_queries(q, st, deterministic=deterministic)
        level, scales = self._levels(codes, st)
        dots = paired_products(q_axes, level.reshape(q.shape[0], c, -1),
                               deterministic=deterministic)
        return (dots * scales[:, 0].reshape(q.shape[0], c) + q_mean[:, None]).astype(np.float32)


# -- the frame: shared with semqr ------------------------------------------------------------


def check_unit_columns(basis: np.ndarray, what: str) -> None:
    """Raise :class:`ParamsError` unless float ``basis`` [d, k] has columns of norm <= ~1
    (principal axes; also what keeps :func:`unit_directions`' integer products exact)."""
    # a check with a tolerance, decides no bytes, and runs on every call with params (each
    # search of each shard): numpy's one-pass sum, not ordered_sum's padded copy
    if basis.size and np.einsum("ij,ij->j", basis, basis, dtype=np.float64).max() > 1.0 + 1e-3:
        raise ParamsError(f"{what} must hold unit vectors (columns of norm 1)")


def half_basis(axes: np.ndarray) -> np.ndarray:
    """Unit-vector columns ``axes`` [d, k] (float64) -> float16, rounded to nearest (ties to
    even) by exact power-of-two scaling and ``rint``, so the result is the same on every
    machine whatever its float16 conversion instructions (the final cast is exact).

    Why half precision is enough: a stored axis differs from the fitted one by a relative
    2**-12 per entry, which moves a row's coordinate on it by ~2**-12 |x| / sqrt(d), far below
    the finest quantizer step any semq or semqr level uses on that axis (~2**-11 of the axis'
    range at 12 bits); and every level encodes, decodes and scores with the stored axes, so
    they agree with each other exactly. Half the bytes of float32: the basis is most of a
    shard's params.
    """
    a = np.asarray(axes, dtype=np.float64)
    _, exponent = np.frexp(a)
    # float16 keeps 11 significant bits down to 2**-14, then a fixed spacing of 2**-24
    exponent = np.maximum(exponent, -13)
    rounded = np.ldexp(np.rint(np.ldexp(a, 11 - exponent)), exponent - 11)
    return rounded.astype(np.float16)


def grid_ints(basis: np.ndarray) -> np.ndarray:
    """float ``basis`` [d, k] of unit columns -> float64 integers ``rint(basis * 2**ROW_BITS)``,
    the operand of :func:`unit_directions`' exact product. Fitted bases are stored on that
    grid already (exact in float32); an older basis is rounded onto it."""
    return np.rint(basis.astype(np.float64) * 2.0 ** ROW_BITS)


def unit_directions(x: np.ndarray, mean: np.ndarray, basis_ints: np.ndarray, *,
                    axis_major: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Rows' unit directions in a basis, and their norms, the same bits on every machine.

    Args:
        x: float32 rows ``[m, d]``; mean: float32 ``[d]``.
        basis_ints: float64 ``[d, k]`` from :func:`grid_ints` (columns of norm <= ~1).
    Returns:
        ``u`` float64 ``[m, k]``: ``V^T (x - mean) / |x - mean|`` (zero rows: 0), and
        ``norm`` float64 ``[m]``: ``|x - mean|``. The centered rows are put on a per-row grid
        of ``2**-ROW_BITS`` of their largest value and multiplied by the basis as integers,
        exactly (partial sums stay below ``2**53`` for any ``d`` up to ``2**20``).
        ``axis_major``: ``u`` as float32 ``[k, m]`` instead (what encode works on).
    """
    centered = np.subtract(x, mean.astype(np.float64))
    ints, scale = fixed_point_rows(centered, out=centered)
    square = exact_square_norms(ints, ROW_BITS)
    # Cauchy-Schwarz: |row| <= sqrt(d) 2**ROW_BITS, |column| <= (1 + 1e-3) 2**ROW_BITS
    bound = np.sqrt(float(x.shape[1])) * 2.0 ** (2 * ROW_BITS) * (1.0 + 1e-3)
    root = np.sqrt(square)
    inv = np.divide(2.0 ** -ROW_BITS, root, out=np.zeros_like(root), where=root > 0)
    if axis_major:
        proj = exact_matmul(basis_ints.T, ints.T, bound)
        return np.multiply(proj, inv[None, :], out=np.empty(proj.shape, np.float32),
                           casting="same_kind"), root * scale
    proj = exact_matmul(ints, basis_ints, bound)
    proj *= inv[:, None]
    return proj, root * scale


def query_frame(q: np.ndarray, mean: np.ndarray, basis: np.ndarray, deterministic: bool, *,
                step: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Float queries ``q`` [nq, d] in a frame: float32 ``q @ basis`` [nq, k] (times ``step``
    per axis if given) and ``q @ mean`` [nq]; ``deterministic`` as in
    :func:`~semq_transforms.codecs.exact.inner_products`."""
    both = inner_products(q, np.concatenate([basis.T, mean[None, :]]),
                          deterministic=deterministic)
    axes = both[:, :-1]
    if step is not None:
        axes *= step
    return np.ascontiguousarray(axes), both[:, -1].copy()


def query_energy(mean: np.ndarray, axes: np.ndarray, variance: np.ndarray) -> np.ndarray:
    """float64 [d]: ``E[<q, v_i>^2]`` along each axis for queries drawn like the rows,
    ``variance_i + <mean, v_i>^2`` (in a fixed summation order)."""
    along = ordered_sum(mean.astype(np.float32).astype(np.float64)[:, None] * axes, axis=0)
    return variance + along * along


def _pca(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Robust mean, principal axes and variances of an even-strided sample of ``x`` (at most
    :data:`FIT_ROWS` rows), float64, the same bits on every machine.

    Returns ``mean [d]``, ``axes [d, d]`` (columns by decreasing variance, each with its
    largest-magnitude entry positive, values on the ``2**-ROW_BITS`` grid so float32 holds
    them exactly) and the variance along each axis ``[d]`` (clipped at 0). Rows more than
    :data:`NORM_CLIP` times the median norm away (from 0 for the mean, from the mean for the
    axes) are shrunk to that norm first, so one extreme row cannot move the frame.
    """
    sample = strided_sample(x, FIT_ROWS).astype(np.float64)
    n, d = sample.shape
    weight = _clip_weights(sample)
    mean = ordered_sum(sample * weight[:, None], axis=0) / ordered_sum(weight)
    centered = sample - mean.astype(np.float32).astype(np.float64)   # the mean encode uses
    centered *= _clip_weights(centered)[:, None]
    # one grid for every row (the sample taken as one "row"): the products sum exactly
    ints, (unit,) = fixed_point_rows(centered.reshape(1, -1), COV_BITS)
    ints = ints.reshape(n, d)
    cov = exact_matmul(ints.T, ints, n * 2.0 ** (2 * COV_BITS))      # exact integers
    eigvals, eigvecs = symmetric_eigh(cov)
    order = np.argsort(-eigvals, kind="stable")
    axes = eigvecs[:, order]
    pivot = np.abs(axes).argmax(axis=0)
    signs = np.where(axes[pivot, np.arange(d)] < 0, -1.0, 1.0)
    variance = np.maximum(eigvals[order], 0.0) * (unit * unit / n)
    return mean, grid(axes * signs), variance


def _clip_weights(rows: np.ndarray) -> np.ndarray:
    """float64 [n]: ``min(1, NORM_CLIP * median / |row|)``, the median over non-zero rows."""
    norm = row_norms(rows)
    typical = typical_norm(norm)
    if typical is None:
        return np.ones(rows.shape[0])
    cap = NORM_CLIP * typical
    return np.divide(cap, norm, out=np.ones_like(norm), where=norm > cap)


def _direction_steps(x: np.ndarray, mean: np.ndarray,
                     axes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_step_tables` of the unit directions, in the rotated frame, of
    :data:`STEP_ROWS` evenly strided rows of the fit sample (computed as encode computes
    them)."""
    rows = strided_sample(x, STEP_ROWS, within=FIT_ROWS)
    u, norm = unit_directions(rows, mean.astype(np.float32), grid_ints(axes))
    return _step_tables(u[norm > 0])


def _step_tables(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best uniform-quantizer step and its mean squared error per width and axis.

    Args:
        u: float64 ``[n, d]`` unit directions in the rotated frame (``n`` may be 0).
    Returns:
        ``steps, errors``: float64 ``[MAX_AXIS_BITS + 1, d]``; row ``b`` is for ``b`` bits
        (row 0: step 0, error ``E[u_i^2]``, i.e. the axis is dropped).
    """
    n, d = u.shape
    steps = np.zeros((MAX_AXIS_BITS + 1, d))
    errors = np.zeros((MAX_AXIS_BITS + 1, d))
    if n == 0:
        steps[1:] = np.array(GAUSS_STEPS)[:, None]  # degenerate shard: nothing to measure
        return steps, errors
    errors[0] = ordered_sum(u.T * u.T, axis=1) / n
    rms = np.sqrt(errors[0])
    rms = np.where(rms > 0, rms, 1.0)
    # Every candidate step is g * rms_i, so in units of rms (v = u / rms, one row per axis)
    # a candidate is one scalar g for all axes: each of the 12 widths x 16 steps is a few
    # scalar passes over one reused buffer. In units of the step, a value's error is
    # a - code - 1/2 with a = v / g + L / 2 and code = clip(floor(a), 0, L - 1). The row
    # axis is padded to a power of two (padding zeroed before each sum: see _sum_rows).
    # float32 (as encode's codes are a float32-precision decision), sums in a fixed order.
    size = 1 << (n - 1).bit_length()
    v = np.zeros((d, size), dtype=np.float32)
    v[:, :n] = u.T / rms[:, None]
    a, code = np.empty_like(v), np.empty_like(v)
    for bits in range(1, MAX_AXIS_BITS + 1):
        levels = 1 << bits
        best = np.full(d, np.inf)
        for mult in STEP_GRID:
            g = mult * GAUSS_STEPS[bits - 1]
            np.divide(v, np.float32(g), out=a)
            a += np.float32(levels / 2)
            np.floor(a, out=code)
            np.clip(code, 0, levels - 1, out=code)
            a -= code
            a -= np.float32(0.5)
            a *= a
            err = _sum_rows(a, n).astype(np.float64) * (g * g / n)
            err *= rms * rms
            better = err < best
            best[better] = err[better]
            steps[bits, better] = g * rms[better]
        errors[bits] = best
    return steps, errors


def _sum_rows(a: np.ndarray, n: int) -> np.ndarray:
    """Fixed-order sums of the first ``n`` columns of ``a`` [d, 2**j], destroying ``a``."""
    a[:, n:] = 0.0
    return halve(a, 1).copy()


def _allocate_bits(weight: np.ndarray, errors: np.ndarray, total: int) -> np.ndarray:
    """Greedy marginal-return bit allocation.

    Args:
        weight: float64 ``[d]`` query energy per axis.
        errors: float64 ``[MAX_AXIS_BITS + 1, d]`` error per width and axis.
        total: bits to hand out (``<= MAX_AXIS_BITS * d``).
    Returns:
        int64 ``[d]`` bits per axis summing to ``total``. Ties go to the lower axis index.
    """
    d = weight.shape[0]
    width = np.zeros(d, dtype=np.int64)
    gain = weight[None, :] * np.maximum(errors[:-1] - errors[1:], 0.0)   # [MAX_AXIS_BITS, d]
    heap = [(-gain[0, i], i) for i in range(d)]
    heapq.heapify(heap)
    for _ in range(total):
        _, i = heapq.heappop(heap)
        width[i] += 1
        if width[i] < MAX_AXIS_BITS:
            heapq.heappush(heap, (-gain[width[i], i], i))
    return width
