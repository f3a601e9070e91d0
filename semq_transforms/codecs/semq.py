"""``semq<b>``: the direction codec, ``b`` = 1..8 bits per dimension on average.

Semantic search cares about the order of inner products, so the codec spends its bits where
queries will look. Fitting one shard (all of it pure numpy, deterministic):

1. **Center** on the shard mean ``m``: ``r = x - m``. ``<q, m>`` is the same for every row, so
   ranking depends on ``<q, r>`` only.
2. **Rotate** onto the shard's principal axes ``V`` (eigenvectors of the covariance, sorted by
   variance, signs fixed): ``z = V^T r``. Variance is now concentrated in the first axes.
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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from semq_transforms.codecs.base import (
    CHUNK_ROWS,
    MIN_STEP,
    BitsCodec,
    FitCache,
    rowwise_matmul,
)
from semq_transforms.codecs.bitpack import pack_planes, plane_sizes, unpack_planes
from semq_transforms.codecs.calibration import strided_sample
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
#: Multipliers of the Gaussian step tried per axis and width.
STEP_GRID = tuple(float(g) for g in np.geomspace(0.5, 4.0, 16))
#: Per-vector side data: s_score and s_restore, float32 each.
SIDE_BYTES = 8
#: Floor of cos^2 in s_restore (at most a 4x inflation).
MIN_COS_SQ = 0.25


@dataclass(frozen=True)
class _State:
    """What encode/decode/score derive once from checked params."""

    dim: int
    mean: np.ndarray          # float32 [d]
    basis: np.ndarray         # float32 [d, k]
    step: np.ndarray          # float32 [k]
    half: np.ndarray          # float32 [k], L_i / 2
    top: np.ndarray           # float32 [k], L_i - 1
    basis_over_step: np.ndarray   # float32 [d, k]
    step_sq: np.ndarray       # float32 [k]
    restore: np.ndarray       # float32 [k, d], step_i * V^T
    sizes: list[int]          # bit-plane sizes
    packed_bytes: int
    scratch: dict[str, np.ndarray] = field(default_factory=dict)  # encode's chunk buffers


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
        return {"mean": (np.float32, (dim,)), "basis": (np.float32, None),
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

    # -- fit --------------------------------------------------------------------------------

    def _fit(self, x: np.ndarray, cache: FitCache) -> CodecParams:
        d = x.shape[1]
        # the same for every semq level of a shard: fitted once per shard through the cache
        mean, axes, variance = cache.get("semq.pca", lambda: _pca(x))
        # Query energy along each axis: E[<q, v_i>^2] for q drawn like the shard's rows.
        weight = variance + (mean @ axes) ** 2
        steps, errors = cache.get("semq.steps", lambda: _direction_steps(x, mean, axes))
        width = _allocate_bits(weight, errors, self.bits * d)
        order = np.argsort(-width, kind="stable")
        kept = order[width[order] > 0]
        return CodecParams(codec=self.spec, dim=d, arrays={
            "mean": mean.astype(np.float32),
            "basis": axes[:, kept].astype(np.float32),
            "step": steps[width[kept], kept].astype(np.float32),
            "width": width[kept].astype(np.uint8),
        })

    # -- encode / decode / score ------------------------------------------------------------

    def _prepare(self, params: CodecParams) -> _State:
        step, basis = params["step"], params["basis"]
        levels = np.left_shift(1, params["width"].astype(np.int64)).astype(np.float32)
        return _State(
            dim=params.dim, mean=params["mean"], basis=basis, step=step,
            half=levels / 2, top=levels - 1,
            basis_over_step=np.ascontiguousarray(basis / step),
            step_sq=step * step,
            restore=np.ascontiguousarray((basis * step).T),
            sizes=plane_sizes(params["width"]),
            packed_bytes=self.code_bytes(params.dim) - SIDE_BYTES,
        )

    def _encode(self, x: np.ndarray, st: _State) -> np.ndarray:
        m = x.shape[0]
        # Chunk buffers reused across the chunks of one call (fewer passes through malloc
        # and cold memory). ``centered`` always has CHUNK_ROWS rows, zero past m, so the
        # matmul runs at one shape whatever m is (see rowwise_matmul).
        if not st.scratch:
            st.scratch["centered"] = np.zeros((CHUNK_ROWS, st.dim), dtype=np.float32)
            st.scratch["level"] = np.empty((CHUNK_ROWS, st.step.shape[0]), dtype=np.float32)
            st.scratch["weighted"] = np.empty_like(st.scratch["level"])
        padded = st.scratch["centered"]
        padded[m:] = 0
        centered = np.subtract(x, st.mean, out=padded[:m])
        norm = _row_norms(centered)
        inv_norm = np.divide(1.0, norm, out=np.zeros_like(norm), where=norm > 0)
        t = rowwise_matmul(padded, st.basis_over_step)[:m]  # z_i / step_i
        t *= inv_norm[:, None]                              # u_i / step_i
        level = np.add(t, st.half, out=st.scratch["level"][:m])
        np.floor(level, out=level)
        np.maximum(level, 0, out=level)                     # (np.clip is 2x slower here)
        np.minimum(level, st.top, out=level)                # the code, as float
        codes = level.astype(np.uint16)
        level += np.float32(0.5) - st.half                  # centered level index g_i
        weighted = np.multiply(level, st.step_sq, out=st.scratch["weighted"][:m])
        dot = np.einsum("ij,ij->i", t, weighted)            # <u, û>
        energy = np.einsum("ij,ij->i", level, weighted)     # |û|^2
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
        level += np.float32(0.5) - st.half
        scales = np.ascontiguousarray(codes[:, st.packed_bytes:]).view("<f4")
        return level, scales.astype(np.float32)

    def _decode(self, codes: np.ndarray, st: _State) -> np.ndarray:
        level, scales = self._levels(codes, st)
        restored = rowwise_matmul(level, st.restore)
        restored *= scales[:, 1:2]
        restored += st.mean
        return restored

    def _prepare_queries(self, q: np.ndarray, st: _State) -> Any:
        return (q @ st.basis) * st.step, q @ st.mean

    def _score(self, prepared: Any, codes: np.ndarray, st: _State) -> np.ndarray:
        q_axes, q_mean = prepared
        level, scales = self._levels(codes, st)
        scores = q_axes @ level.T
        scores *= scales[:, 0]
        scores += q_mean[:, None]
        return scores

    def _score_candidates(self, q: np.ndarray, codes: np.ndarray, st: _State,
                          c: int) -> np.ndarray:
        q_axes, q_mean = self._prepare_queries(q, st)
        level, scales = self._levels(codes, st)
        dots = np.einsum("qk,qck->qc", q_axes, level.reshape(q.shape[0], c, -1))
        return (dots * scales[:, 0].reshape(q.shape[0], c) + q_mean[:, None]).astype(np.float32)


def _row_norms(rows: np.ndarray) -> np.ndarray:
    """Euclidean norms of float32 ``rows`` [n, d]; rows whose float32 sum of squares under-
    or overflows (tiny or huge vectors) are redone in float64, so the direction stays exact."""
    squares = np.einsum("ij,ij->i", rows, rows)
    unsafe = ~((squares > 1e-30) & (squares < 1e30))
    if unsafe.any():
        wide = rows[unsafe].astype(np.float64)
        squares = squares.astype(np.float64)
        squares[unsafe] = np.einsum("ij,ij->i", wide, wide)
    return np.sqrt(squares)


def _pca(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, principal axes and variances of an even-strided sample of ``x`` (at most
    :data:`FIT_ROWS` rows), float64: ``mean [d]``, ``axes [d, d]`` (columns, by decreasing
    variance, each with its largest-magnitude entry positive, so deterministic) and the
    variance along each axis ``[d]`` (clipped at 0)."""
    sample = strided_sample(x, FIT_ROWS)
    n = sample.shape[0]
    # float64 in chunks of a fixed size (bounded memory, a summation order that does not
    # depend on the machine): the mean, then the covariance of the centered rows
    mean = sum(chunk.astype(np.float64).sum(axis=0) for chunk in _chunks(sample)) / n
    cov = np.zeros((sample.shape[1], sample.shape[1]))
    for chunk in _chunks(sample):
        centered = chunk.astype(np.float64)
        centered -= mean               # in place: one float64 chunk in memory, not two
        cov += centered.T @ centered
    cov /= n
    # LAPACK's symmetric eigensolver (OpenBLAS) gives results that differ in the last bits
    # with the number of BLAS threads; on one thread the params are the same everywhere.
    with threadpool_limits(limits=1, user_api="blas"):
        eigvals, eigvecs = np.linalg.eigh(cov)
    order = np.argsort(-eigvals, kind="stable")
    axes = eigvecs[:, order]
    pivot = np.abs(axes).argmax(axis=0)
    signs = np.where(axes[pivot, np.arange(axes.shape[1])] < 0, -1.0, 1.0)
    return mean, axes * signs, np.maximum(eigvals[order], 0.0)


def _chunks(rows: np.ndarray, size: int = 8192) -> list[np.ndarray]:
    """``rows`` in consecutive blocks of ``size`` rows (views)."""
    return [rows[start:start + size] for start in range(0, rows.shape[0], size)]


def _unit_rows(z: np.ndarray) -> np.ndarray:
    """Rows of ``z`` scaled to unit norm; zero rows are dropped."""
    norm = np.linalg.norm(z, axis=1)
    keep = norm > 0
    return z[keep] / norm[keep, None]


def _direction_steps(x: np.ndarray, mean: np.ndarray,
                     axes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`_step_tables` of the unit directions, in the rotated frame, of
    :data:`STEP_ROWS` evenly strided rows of the fit sample."""
    rows = strided_sample(x, STEP_ROWS, within=FIT_ROWS).astype(np.float64)
    return _step_tables(_unit_rows((rows - mean) @ axes).astype(np.float32))


def _step_tables(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Best uniform-quantizer step and its mean squared error per width and axis.

    Args:
        u: float32 ``[n, d]`` unit directions in the rotated frame (``n`` may be 0).
    Returns:
        ``steps, errors``: float64 ``[MAX_AXIS_BITS + 1, d]``; row ``b`` is for ``b`` bits
        (row 0: step 0, error ``E[u_i^2]``, i.e. the axis is dropped).
    """
    d = u.shape[1]
    steps = np.zeros((MAX_AXIS_BITS + 1, d))
    errors = np.zeros((MAX_AXIS_BITS + 1, d))
    if u.shape[0] == 0:
        steps[1:] = np.array(GAUSS_STEPS)[:, None]  # degenerate shard: nothing to measure
        return steps, errors
    errors[0] = np.mean(u.astype(np.float64) ** 2, axis=0)
    rms = np.sqrt(errors[0])
    rms = np.where(rms > 0, rms, 1.0)
    # Every candidate step is g * rms_i, so in units of rms (v = u / rms, one row per axis)
    # a candidate is one scalar g for all axes: each of the 12 widths x 16 steps is a few
    # scalar passes over one reused buffer. In units of the step, a value's error is
    # a - code - 1/2 with a = v / g + L / 2 and code = clip(floor(a), 0, L - 1).
    v = np.ascontiguousarray((u / rms).T.astype(np.float32))     # [d, n]
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
            err = np.einsum("ij,ij->i", a, a).astype(np.float64) * (g * g / u.shape[0])
            err *= rms * rms
            better = err < best
            best[better] = err[better]
            steps[bits, better] = g * rms[better]
        errors[bits] = best
    return steps, errors


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
