"""``semqr<b>``: an entropy-coded refinement of the ``semq`` level before it, ``b`` bits/dim.

A multi-level shard scans a small ``semq`` code and reranks with a finer one. Stored as two
independent codes, the fine code repeats what the scan code already says. ``semqr`` stores
only what the scan level does not know, and stores it near its entropy:

1. **Same frame.** It uses the base level's mean and axes (the ``semq`` code it refines) plus
   ``extra`` principal axes the base dropped, in the base's order then by variance.
2. **Residual.** On axis ``j`` of the base, the base code names a cell whose center is
   ``c_j``; the refinement codes ``r_j = u_j - c_j`` (``u`` the unit direction, as in
   ``semq``); on extra axes ``r_j = u_j``.
3. **Quantize** ``r_j`` uniformly with step ``step_j / t``: ``s_j = rint(t * r_j / step_j)``.
   ``step_j`` is proportional to ``1 / sqrt(w_j)`` (``w_j`` the query energy along the axis,
   as in semq's allocation): equal query-weighted error on every axis, which is the optimal
   allocation when the rate is the entropy. ``t`` is the row's own scale, below.
4. **Entropy-code** ``s_j`` with a canonical Huffman table chosen by the axis and the base
   cell (:mod:`semq_transforms.codecs.huffman`): the scan code is the context, so its bits
   are not paid twice, and an axis whose residual is nearly always 0 costs about one bit.
5. **Fixed size per row.** Every row gets exactly ``b * d`` payload bits: each row takes the
   largest ``t`` on a grid of 255 values (``2 ** ((i - 128) / 32)``, ``i = 1..255``) whose
   code fits (binary search), so rows that are easy to code get finer steps. ``i = 0`` means
   "no refinement" (the base cell centers), which always fits: every row is encodable.
6. **Scales**, as ``semq``: ``s_score = |x - m| <u, û> / |û|^2`` (float32) and
   ``s_restore = s_score * g`` with ``g = 1 / max(cos^2, 1/4)`` in ``[1, 4]`` (float16).

One row's code: the payload (``ceil(b * d / 8)`` bytes, bits most significant first, the
Huffman codes of ``s_1..s_k`` in axis order, zero-padded), the grid index ``i`` (uint8),
``s_score`` (float32) and ``g`` (float16), little-endian: ``ceil(b * d / 8) + 7`` bytes.
``semq1`` + ``semqr4`` at ``d = 384`` is 56 + 199 = 255 bytes, 5.31 bits/dim.

Fitting (pure numpy, deterministic): the step constant is set from a high-rate model of the
residuals' spread so that rows need a ``t`` near 1 (at most :data:`MAX_AXIS_RATE` bits on any
one axis, so a shard of a few rows keeps bounded tables); extra axes whose residual spread
is below :data:`KEEP_SPREAD` steps are dropped (coding them costs a bit and buys little);
tables are counted on the fit sample at ``t = 1``, each row's ``t`` is chosen with them, and
the tables are counted again on the chosen symbols (plus a pseudo-count on every symbol in
range).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from semq_transforms.codecs import huffman
from semq_transforms.codecs.base import (
    CHUNK_ROWS,
    MIN_STEP,
    BaseLevel,
    BitsCodec,
    Codec,
    FitCache,
    rowwise_matmul,
)
from semq_transforms.codecs.bitpack import plane_sizes, unpack_planes
from semq_transforms.codecs.calibration import strided_sample
from semq_transforms.codecs.exact import (
    ROW_BITS,
    exact_matmul,
    exp2,
    inner_products,
    log2,
    ordered_sum,
    paired_products,
)
from semq_transforms.codecs.params import CodecParams
from semq_transforms.codecs.registry import register_codec
from semq_transforms.codecs.semq import (
    SemqCodec,
    _pca,
    check_unit_columns,
    grid_ints,
    half_basis,
    query_energy,
    query_frame,
    unit_directions,
)
from semq_transforms.errors import CodesMismatchError, ParamsError

#: Per-vector side data: the scale index (uint8), s_score (float32), s_restore / s_score
#: (float16).
SIDE_BYTES = 7
#: Rows the tables are counted on (an evenly strided sample of the shard).
FIT_ROWS = 16384
#: Row scales: index i = 1..255 stands for 2 ** ((i - 128) / SCALES_PER_OCTAVE); 0 for none.
SCALES_PER_OCTAVE = 32
#: Symbols beyond the observed range each table also covers (rows outside the fit sample).
MARGIN = 2
#: Pseudo-count given to every symbol a table covers.
PSEUDO_COUNT = 0.05
#: Extra axes are kept if their residual RMS is at least this many steps.
KEEP_SPREAD = 0.7
#: Mean code length per row the tables are fitted for, as a fraction of the payload (rows
#: then land on scales near 1, with room on both sides).
FIT_FILL = 0.97
#: Most table symbols params may hold in all (checking them allocates 8 bytes a symbol).
MAX_SYMBOLS = 1 << 24
#: Most bits the rate model spends on one axis: no step is finer than ``2 ** -MAX_AXIS_RATE``
#: of its axis's residual spread (Gaussian entropy aside). Real shards stay far below; a
#: shard of a few rows leaves the payload only a few axes to spend on, and without the cap
#: their steps, and so the symbols and tables, grow without bound.
MAX_AXIS_RATE = 16
#: Coarsest step: unit-direction residuals lie in [-2, 2], so every symbol is 0 or +-1.
MAX_STEP = 4.0
#: Floor of cos^2 in s_restore (as semq).
MIN_COS_SQ = 0.25
#: Entropy of a unit Gaussian in bits, minus log2 of the step: the high-rate rate model
#: (``0.5 * log2(2 pi e)``, written out: no transcendental function decides params).
_GAUSS_ENTROPY = 2.047095585180641

SCALES = np.concatenate([[0.0], exp2((np.arange(1, 256) - 128) / SCALES_PER_OCTAVE)])


@dataclass(frozen=True)
class _State:
    """What encode/decode/score derive once from checked params and their base."""

    dim: int
    geometry: _Geometry         # the base's frame and cells
    step: np.ndarray            # float64 [k]
    first_table: np.ndarray     # int64 [k]: table of cell 0 of each axis
    table_lo: np.ndarray        # int64 [T]
    book: huffman.CodeBook
    payload_bytes: int


@register_codec
class SemqrCodec(BitsCodec):
    """Entropy-coded refinement of a ``semq`` level (the level before it in a shard)."""

    codec_id = "semqr"
    refines = True
    chunk_rows = 8192

    allowed_bits = (1, 2, 3, 4, 5, 6, 7, 8)
    default_bits = 4

    def code_bytes(self, dim: int) -> int:
        return -(-self.bits * dim // 8) + SIDE_BYTES

    def accepts_base(self, codec: Codec) -> bool:
        return isinstance(codec, SemqCodec)

    # -- params -----------------------------------------------------------------------------

    def param_shapes(self, dim: int):
        return {"extra_basis": ((np.float16, np.float32), None), "step": (np.float32, None),
                "table_lo": (np.int32, None), "table_size": (np.int32, None),
                "lengths": (np.uint8, None), "base_digest": (np.uint8, (32,))}

    def _check_params_values(self, params: CodecParams) -> None:
        extra, step = params["extra_basis"], params["step"]
        lo, size, lengths = params["table_lo"], params["table_size"], params["lengths"]
        if (extra.ndim != 2 or extra.shape[0] != params.dim or step.ndim != 1
                or not extra.shape[1] < step.shape[0] <= params.dim):
            raise ParamsError(f"{self.spec} params need extra_basis [d, ke] and step [k] with "
                              f"ke < k <= d={params.dim}; got {extra.shape}, {step.shape}")
        if (step < MIN_STEP).any():
            raise ParamsError(f"{self.spec} params 'step' must be >= {MIN_STEP:g}")
        check_unit_columns(extra, f"{self.spec} params 'extra_basis'")
        if (lo.ndim != 1 or size.shape != lo.shape or lengths.ndim != 1
                or lo.shape[0] < step.shape[0]):
            raise ParamsError(f"{self.spec} params need table_lo [T], table_size [T] with "
                              f"T >= k and lengths [S]")
        if lengths.shape[0] > MAX_SYMBOLS or size.max() > MAX_SYMBOLS:
            raise ParamsError(f"{self.spec} params hold more than {MAX_SYMBOLS} table symbols")
        if (size < 2).any() or int(size.sum(dtype=np.int64)) != lengths.shape[0]:
            raise ParamsError(f"{self.spec} params 'table_size' must be >= 2 each and sum to "
                              f"len(lengths) = {lengths.shape[0]}")
        if np.abs(lo.astype(np.int64)).max() > (1 << 30) or (
                lo.astype(np.int64) + size).max() > (1 << 30):
            raise ParamsError(f"{self.spec} params 'table_lo' out of range")
        if lengths.min() < 1 or lengths.max() > huffman.MAX_CODE_BITS:
            raise ParamsError(f"{self.spec} params 'lengths' must be in "
                              f"1..{huffman.MAX_CODE_BITS}")
        bad = np.flatnonzero(~huffman.kraft_complete(lengths, size.astype(np.int64)))
        if bad.size:
            raise ParamsError(f"{self.spec} params: table {int(bad[0])} is not a complete "
                              f"prefix code")

    # -- fit --------------------------------------------------------------------------------

    def _fit(self, x: np.ndarray, cache: FitCache, base: BaseLevel) -> CodecParams:
        d = x.shape[1]
        mean, axes, variance = cache.get("semq.pca", lambda: _pca(x))
        weight = query_energy(mean, axes, variance)
        # Steps are c / sqrt(weight) on unit directions: only relative weights matter, so
        # they are scaled by a power of two (exact) to a sum in [1/sqrt2, sqrt2), the sum for
        # unit-norm rows (unchanged then). Else c's search range would depend on the
        # vectors' scale: rows of norm ~1e10 or ~1e-20 got no refinement at all.
        total = float(ordered_sum(weight))
        if total > 0:
            mant, exponent = np.frexp(total)
            weight = np.ldexp(weight, -(int(exponent) - (mant < 0.7071067811865476)))
        bp = base.params
        base_axes = _match_axes(axes, bp["basis"], self.spec)
        rest = np.setdiff1d(np.arange(d), base_axes)
        rest = rest[weight[rest] > 0]
        sample = strided_sample(x, FIT_ROWS)
        base_codes = strided_sample(base.codes, FIT_ROWS)      # the same rows
        payload = self.bits * d
        basis = np.concatenate([bp["basis"].astype(np.float32),
                                half_basis(axes[:, rest]).astype(np.float32)], axis=1)
        geometry = _Geometry.of(bp, basis)
        _, _, cells, residual = geometry.residual(sample, base_codes)   # [n, kb + len(rest)]
        w = np.concatenate([weight[base_axes], weight[rest]])
        spread = np.sqrt(ordered_sum(residual * residual, axis=0) / residual.shape[0])
        kb = base_axes.shape[0]
        keep = np.ones(w.shape[0], dtype=bool)
        for _ in range(2):   # keep extra axes whose spread is worth a code, at the chosen c
            c = _step_constant(spread[keep], w[keep], FIT_FILL * payload)
            keep[kb:] = spread[kb:] * np.sqrt(w[kb:]) >= KEEP_SPREAD * c
        c = _step_constant(spread[keep], w[keep], FIT_FILL * payload)
        step = _steps(c, spread[keep], w[keep])
        residual = residual[:, keep]
        first_table, count = _first_tables(bp["width"], int(keep[kb:].sum()))
        tables = first_table[None, :] + np.pad(cells, ((0, 0), (0, keep.shape[0] - kb)))[:, keep]
        symbols = np.rint(residual / step).astype(np.int64)
        lo, size, lengths = _fit_tables(tables, symbols, count)
        book = huffman.CodeBook.build(lengths, size)
        _, symbols = _choose_scales(residual / step, tables, lo, size, book, payload)
        lo, size, lengths = _fit_tables(tables, symbols, count)
        return CodecParams(codec=self.spec, dim=d, arrays={
            "extra_basis": half_basis(axes[:, rest[keep[kb:]]]),
            "step": step,
            "table_lo": lo.astype(np.int32),
            "table_size": size.astype(np.int32),
            "lengths": lengths.astype(np.uint8),
            "base_digest": np.frombuffer(bytes.fromhex(bp.digest()), dtype=np.uint8),
        })

    # -- encode / decode / score ------------------------------------------------------------

    def check_base_params(self, params: CodecParams, base_params: CodecParams) -> None:
        if bytes(params["base_digest"]).hex() != base_params.digest():
            raise ParamsError(f"{self.spec} params refine a level whose params digest is "
                              f"{bytes(params['base_digest']).hex()[:12]}..., not these "
                              f"{base_params.codec} params ({base_params.digest()[:12]}...)")

    def _prepare(self, params: CodecParams, base: BaseLevel) -> _State:
        bp = base.params
        self.check_base_params(params, bp)
        kb = bp["width"].shape[0]
        ke = params["extra_basis"].shape[1]
        if params["step"].shape[0] != kb + ke:
            raise ParamsError(f"{self.spec} params have {params['step'].shape[0]} steps for "
                              f"{kb} base axes + {ke} extra axes")
        first_table, count = _first_tables(bp["width"], ke)
        if params["table_lo"].shape[0] != count:
            raise ParamsError(f"{self.spec} params have {params['table_lo'].shape[0]} tables; "
                              f"the base's cells and the extra axes need {count}")
        basis = np.concatenate([bp["basis"], params["extra_basis"]],
                               axis=1).astype(np.float32)
        return _State(
            dim=params.dim, geometry=_Geometry.of(bp, basis),
            step=params["step"].astype(np.float64), first_table=first_table,
            table_lo=params["table_lo"].astype(np.int64),
            book=huffman.CodeBook.build(params["lengths"], params["table_size"]),
            payload_bytes=self.code_bytes(params.dim) - SIDE_BYTES)

    def _encode(self, x: np.ndarray, st: _State, base_codes: np.ndarray) -> np.ndarray:
        m = x.shape[0]
        u, norm, cells, residual = st.geometry.residual(x, base_codes)
        tables = _tables(st, cells)
        index, symbols = _choose_scales(residual / st.step, tables, st.table_lo, st.book.sizes,
                                        st.book, 8 * st.payload_bytes)
        level = _levels(st, cells, symbols, index)
        dot = ordered_sum(u * level)
        energy = ordered_sum(level * level)
        safe = energy > 0
        s_score = np.divide(norm * dot, energy, out=np.zeros(m), where=safe).astype("<f4")
        cos_sq = np.divide(dot * dot, energy, out=np.ones(m), where=safe)
        gain = (1.0 / np.maximum(cos_sq, MIN_COS_SQ)).astype("<f2")
        out = np.empty((m, st.payload_bytes + SIDE_BYTES), dtype=np.uint8)
        offsets = symbols - st.table_lo[tables]
        fits = index > 0
        out[:, :st.payload_bytes] = 0
        if fits.any():
            out[fits, :st.payload_bytes] = huffman.pack(st.book, tables[fits], offsets[fits],
                                                        st.payload_bytes)
        out[:, st.payload_bytes] = index
        out[:, st.payload_bytes + 1:st.payload_bytes + 5] = s_score[:, None].view(np.uint8)
        out[:, st.payload_bytes + 5:] = gain[:, None].view(np.uint8)
        return out

    def _levels(self, codes: np.ndarray, st: _State, base_codes: np.ndarray
                ) -> tuple[np.ndarray, np.ndarray]:
        """Codes -> (directions û float64 [m, k], scales float32 [m, 2])."""
        cells = st.geometry.cells(base_codes)
        tables = _tables(st, cells)
        index = codes[:, st.payload_bytes].astype(np.int64)
        symbols = np.zeros(tables.shape, dtype=np.int64)
        fits = np.flatnonzero(index > 0)
        if fits.size:
            offsets, used = huffman.unpack(st.book, tables[fits], codes[fits, :st.payload_bytes])
            over = used > 8 * st.payload_bytes
            if over.any():
                raise CodesMismatchError(
                    f"{self.spec} codes are corrupt: {int(over.sum())} row(s) run past their "
                    f"{8 * st.payload_bytes} payload bits (first: row {int(fits[over][0])} of "
                    f"this batch)")
            symbols[fits] = offsets + st.table_lo[tables[fits]]
        side = codes[:, st.payload_bytes + 1:]
        scales = np.empty((codes.shape[0], 2), dtype=np.float32)
        scales[:, 0] = np.ascontiguousarray(side[:, :4]).view("<f4")[:, 0]
        scales[:, 1] = np.ascontiguousarray(side[:, 4:]).view("<f2")[:, 0]
        scales[:, 1] *= scales[:, 0]
        return _levels(st, cells, symbols, index), scales

    def _decode(self, codes: np.ndarray, st: _State, base_codes: np.ndarray) -> np.ndarray:
        level, scales = self._levels(codes, st, base_codes)
        level = level.astype(np.float32)
        out = np.empty((codes.shape[0], st.dim), dtype=np.float32)
        restore = np.ascontiguousarray(st.geometry.basis.T)
        for start in range(0, codes.shape[0], CHUNK_ROWS):
            stop = min(start + CHUNK_ROWS, codes.shape[0])
            out[start:stop] = rowwise_matmul(level[start:stop], restore)
        out *= scales[:, 1:2]
        out += st.geometry.mean
        return out

    def _prepare_queries(self, q: np.ndarray, st: _State, *, deterministic: bool) -> Any:
        return query_frame(q, st.geometry.mean, st.geometry.basis, deterministic)

    def _score(self, prepared: Any, codes: np.ndarray, st: _State,
               base_codes: np.ndarray, *, deterministic: bool) -> np.ndarray:
        q_axes, q_mean = prepared
        level, scales = self._levels(codes, st, base_codes)
        scores = inner_products(q_axes, level.astype(np.float32), deterministic=deterministic)
        scores *= scales[:, 0]
        scores += q_mean[:, None]
        return scores

    def _score_candidates(self, q: np.ndarray, codes: np.ndarray, st: _State, c: int,
                          base_codes: np.ndarray, *, deterministic: bool) -> np.ndarray:
        q_axes, q_mean = self._prepare_queries(q, st, deterministic=deterministic)
        level, scales = self._levels(codes, st, base_codes)
        dots = paired_products(q_axes, level.astype(np.float32).reshape(q.shape[0], c, -1),
                               deterministic=deterministic)
        return (dots * scales[:, 0].reshape(q.shape[0], c) + q_mean[:, None]).astype(np.float32)


# -- the frame shared with the base -----------------------------------------------------------


@dataclass(frozen=True)
class _Geometry:
    """The base semq level's cells, in the refinement's frame."""

    mean: np.ndarray      # float32 [d]
    basis: np.ndarray     # float32 [d, k]
    basis_ints: np.ndarray  # float64 [d, k], see semq.grid_ints
    sizes: list[int]
    packed_bytes: int
    width: np.ndarray     # int64 [kb]
    center: np.ndarray    # float64 [kb, max cells]

    @classmethod
    def of(cls, base_params: CodecParams, basis: np.ndarray) -> _Geometry:
        width = base_params["width"].astype(np.int64)
        step = base_params["step"].astype(np.float64)
        levels = 1 << width
        cell = np.arange(int(levels.max()))
        center = (cell[None, :] + 0.5 - levels[:, None] / 2) * step[:, None]
        return cls(mean=base_params["mean"], basis=basis, basis_ints=grid_ints(basis),
                   sizes=plane_sizes(width),
                   packed_bytes=-(-int(width.sum()) // 8), width=width, center=center)

    def cells(self, base_codes: np.ndarray) -> np.ndarray:
        return unpack_planes(base_codes[:, :self.packed_bytes], self.sizes,
                             self.width.shape[0]).astype(np.int64)

    def centers(self, cells: np.ndarray) -> np.ndarray:
        """float64 [m, kb]: the centers of the base cells ``cells`` (int64 [m, kb])."""
        return self.center[np.arange(self.width.shape[0])[None, :], cells]

    def residual(self, x: np.ndarray, base_codes: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Rows ``x`` [m, d] and their base codes -> (unit directions float64 [m, k], norms
        float64 [m], base cells int64 [m, kb], residuals float64 [m, k])."""
        u, norm = unit_directions(x, self.mean, self.basis_ints)
        cells = self.cells(base_codes)
        residual = u.copy()
        residual[:, :self.width.shape[0]] -= self.centers(cells)
        return u, norm, cells, residual


def _match_axes(axes: np.ndarray, base_basis: np.ndarray, spec: str) -> np.ndarray:
    """Index of each base axis among the principal axes ``axes`` [d, d]."""
    overlap = np.abs(exact_matmul(grid_ints(axes).T, grid_ints(base_basis), 2.0 ** 51)
                     ) * 2.0 ** (-2 * ROW_BITS)                   # [d, kb], exact

    index = overlap.argmax(axis=0)
    if (overlap[index, np.arange(index.shape[0])] < 0.999).any() or \
            np.unique(index).shape[0] != index.shape[0]:
        raise ParamsError(f"{spec} must be fitted on the rows its base level was fitted on "
                          f"(the base's axes are not this data's principal axes)")
    return index


def _first_tables(base_width: np.ndarray, extra: int) -> tuple[np.ndarray, int]:
    """One table per base cell and one per extra axis: (int64 [kb + extra], the index of each
    axis's first table; the number of tables)."""
    per_axis = np.concatenate([1 << base_width.astype(np.int64), np.ones(extra, np.int64)])
    ends = np.cumsum(per_axis)
    return ends - per_axis, int(ends[-1])


def _step_constant(spread: np.ndarray, weight: np.ndarray, bits: float) -> float:
    """``c`` such that steps ``c / sqrt(weight)`` cost about ``bits`` under the high-rate
    model (``log2(spread / step) + h`` bits per axis, clipped to ``0..MAX_AXIS_RATE``), by
    bisection on ``log2 c``. If the axes cannot take ``bits`` even at the cap, the smallest
    ``c`` searched is returned (:func:`_steps` then applies the cap)."""
    lo, hi = -60.0, 10.0
    with np.errstate(divide="ignore"):     # weight 0: the axis costs nothing
        log_scale = log2(np.maximum(np.maximum(spread, 1e-300) * np.sqrt(weight), 1e-300))
    log_scale = np.where(weight > 0, log_scale, -np.inf)
    for _ in range(80):
        mid = (lo + hi) / 2
        rate = float(ordered_sum(np.clip(log_scale - mid + _GAUSS_ENTROPY, 0.0, MAX_AXIS_RATE)))
        lo, hi = (mid, hi) if rate > bits else (lo, mid)
    return float(exp2((lo + hi) / 2))


def _steps(c: float, spread: np.ndarray, weight: np.ndarray) -> np.ndarray:
    """float32 steps ``c / sqrt(weight)``, no finer than :data:`MAX_AXIS_RATE` bits of the
    axis's spread and no coarser than :data:`MAX_STEP` (axes with no weight or no spread on
    the fit sample get the coarsest step)."""
    with np.errstate(divide="ignore"):
        step = c / np.sqrt(weight)
    finest = spread * exp2(_GAUSS_ENTROPY - MAX_AXIS_RATE)
    step = np.where(spread > 0, np.maximum(step, finest), MAX_STEP)
    return np.minimum(step, MAX_STEP).astype(np.float32)


def _fit_tables(tables: np.ndarray, symbols: np.ndarray, count: int
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Huffman tables over observed symbols: (lo [T], size [T], lengths [S]), int64.

    Each table covers its observed range and 0, widened by :data:`MARGIN` (so a row can
    always shrink its scale and stay in range); a table no row used covers
    ``-MARGIN..MARGIN``. Symbols beyond ``+-reach`` are not counted, ``reach`` chosen so the
    params hold at most :data:`MAX_SYMBOLS` symbols (a row with a symbol beyond its table
    codes at a smaller scale). Counts get :data:`PSEUDO_COUNT` on every covered symbol.
    """
    reach = max(0, (MAX_SYMBOLS // count - 1) // 2 - MARGIN)
    inside = np.abs(symbols) <= reach
    flat_t, flat_s = tables[inside], symbols[inside]
    lo = np.zeros(count, dtype=np.int64)
    hi = np.zeros(count, dtype=np.int64)
    order = np.lexsort((flat_s, flat_t))
    t_sorted, s_sorted = flat_t[order], flat_s[order]
    present, first = np.unique(t_sorted, return_index=True)
    if present.size:
        last = np.concatenate([first[1:], [t_sorted.shape[0]]]) - 1
        lo[present] = s_sorted[first]
        hi[present] = s_sorted[last]
    lo = np.minimum(lo, 0) - MARGIN
    hi = np.maximum(hi, 0) + MARGIN
    size = hi - lo + 1
    starts = np.concatenate([[0], np.cumsum(size)[:-1]])
    counts = np.bincount(starts[flat_t] + flat_s - lo[flat_t],
                         minlength=int(size.sum())).astype(np.float64)
    lengths = np.concatenate([huffman.limited_code_lengths(counts[a:a + n], PSEUDO_COUNT)
                              for a, n in zip(starts.tolist(), size.tolist())])
    return lo, size, lengths


def _choose_scales(scaled: np.ndarray, tables: np.ndarray, lo: np.ndarray, size: np.ndarray,
                   book: huffman.CodeBook, payload_bits: int
                   ) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the largest scale index whose symbols fit the tables and the payload.

    Args:
        scaled: float64 [m, k], the residual over the step; tables: int64 [m, k].
    Returns:
        ``index`` int64 [m] (0: no refinement) and ``symbols`` int64 [m, k] at that index.
    """
    m = scaled.shape[0]
    t_lo = lo[tables]
    t_size = size[tables]
    t_start = book.starts[tables]
    low = np.zeros(m, dtype=np.int64)
    high = np.full(m, 256, dtype=np.int64)
    while (high - low > 1).any():
        mid = (low + high) // 2
        symbols = np.rint(scaled * SCALES[mid][:, None]).astype(np.int64)
        offset = symbols - t_lo
        inside = ((offset >= 0) & (offset < t_size)).all(axis=1)
        bits = book.lengths[t_start + np.clip(offset, 0, t_size - 1)].sum(axis=1)
        ok = inside & (bits <= payload_bits)
        low = np.where(ok, mid, low)
        high = np.where(ok, high, mid)
    symbols = np.rint(scaled * SCALES[low][:, None]).astype(np.int64)
    symbols[low == 0] = 0
    return low, symbols


def _tables(st: _State, cells: np.ndarray) -> np.ndarray:
    tables = np.broadcast_to(st.first_table, (cells.shape[0], st.first_table.shape[0])).copy()
    tables[:, :cells.shape[1]] += cells
    return tables


def _levels(st: _State, cells: np.ndarray, symbols: np.ndarray, index: np.ndarray
            ) -> np.ndarray:
    """float64 [m, k] û: base cell centers (0 on extra axes) + symbols * step / scale."""
    scale = np.where(index > 0, SCALES[index], 1.0)
    level = symbols * (st.step[None, :] / scale[:, None])
    level[:, :cells.shape[1]] += st.geometry.centers(cells)
    return level
