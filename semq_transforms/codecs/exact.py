"""Arithmetic whose result does not depend on the machine. Pure numpy.

Fitted params and codes must be the same bytes on every worker, whatever the BLAS kernel and
thread count and numpy's SIMD dispatch. Three rules make that hold, and every fit and encode
path that decides bytes follows them:

1. **Elementwise IEEE operations only** (``+ - * /``, ``sqrt``, ``floor``, ``rint``,
   comparisons): each is correctly rounded, so every CPU gives the same bits. No
   transcendental functions on data (``exp``, ``log``, ``log2``, ``power``: numpy's SIMD
   implementations round differently from its scalar ones).
2. **Float sums in a fixed order**: :func:`ordered_sum` adds pairwise in an order that
   depends only on the length. Never ``np.sum``/``mean``/``einsum`` of floats whose order
   numpy or BLAS may choose.
3. **Matrix products only of integer-valued float64 matrices** whose partial sums stay below
   ``2**53``: every partial sum is then exact, so no summation order (BLAS kernel, thread
   split, FMA or not) can change the result. :func:`fixed_point_rows` puts rows on such a
   grid; :func:`exact_matmul` multiplies them; :func:`precise_inner_products` splits each
   row into 2 or 3 such parts where ``2**-20`` is not fine enough.

Scores whose order is recorded (the job's validation) follow them too
(:func:`inner_products` with ``deterministic=True``); serving scores use plain BLAS.
"""

from __future__ import annotations

import numpy as np

#: Significant bits of a row in :func:`fixed_point_rows` (rows and unit-vector grids).
ROW_BITS = 20
#: Largest integer a float64 holds exactly.
EXACT_LIMIT = 2.0 ** 53


def ordered_sum(a: np.ndarray, axis: int = -1) -> np.ndarray:
    """Sum of float ``a`` along ``axis`` in float64, in a fixed pairwise order.

    The axis is zero-padded to a power of two and halved in place (``s[:h] += s[h:]``) until
    one entry is left: the order depends on the axis length only, so the bits do not depend
    on the CPU, SIMD width or numpy version. Returns float64 of ``a``'s shape without ``axis``.
    (Summing along the first axis halves contiguous blocks: the fastest layout.)
    """
    a = np.asarray(a)
    axis = axis % a.ndim
    n = a.shape[axis]
    if n == 0:
        return np.zeros(a.shape[:axis] + a.shape[axis + 1:])
    shape = list(a.shape)
    shape[axis] = 1 << (n - 1).bit_length()
    buf = np.empty(shape)
    view = np.moveaxis(buf, axis, 0)                # a view: halving runs along ``axis``
    view[:n] = np.moveaxis(a, axis, 0)
    view[n:] = 0.0
    return halve(buf, axis).copy()


def column_sums(a: np.ndarray, transform=None, block: int = 4096) -> np.ndarray:
    """``ordered_sum(transform(a), axis=0)`` for a tall float ``a`` [n, d] in bounded memory:
    :func:`ordered_sum` of each block of ``block`` rows (``transform`` applied per block,
    e.g. ``lambda rows: np.abs(rows - mean)``), then of the block sums. Same bits as
    ``ordered_sum`` while ``n <= block``; a fixed order (by ``n`` only) beyond."""
    def part(rows: np.ndarray) -> np.ndarray:
        return ordered_sum(rows if transform is None else transform(rows), axis=0)
    if a.shape[0] <= block:
        return part(a)
    return ordered_sum(np.stack([part(a[s:s + block]) for s in range(0, a.shape[0], block)]),
                       axis=0)


def halve(buf: np.ndarray, axis: int) -> np.ndarray:
    """Pairwise sums in place along ``axis`` of float ``buf``, whose length there is a power
    of two (``s[:h] += s[h:2h]`` until one entry is left): the order of :func:`ordered_sum`.
    Returns the sums, a view of ``buf`` without ``axis``; zero any padding first."""
    view = np.moveaxis(buf, axis, 0)
    size = view.shape[0]
    while size > 1:
        size //= 2
        view[:size] += view[size:2 * size]
    return view[0]


def weighted_row_sum(m: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``ordered_sum(m * v[:, None], axis=0)`` for float64 ``m`` [n, p] and ``v`` [n] (the
    same bits), without a separate product array: ``v @ m`` in a fixed order."""
    n = m.shape[0]
    if n == 0:
        return np.zeros(m.shape[1])
    buf = np.empty((1 << (n - 1).bit_length(), m.shape[1]))
    np.multiply(m, v[:, None], out=buf[:n])
    buf[n:] = 0.0
    return halve(buf, 0)


def fixed_point_rows(a: np.ndarray, bits: int = ROW_BITS, *, out: np.ndarray | None = None
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Rows of float ``a`` [m, d] as integers on a per-row power-of-two grid.

    Returns ``(ints, scale)``: float64 ``[m, d]`` integer values with ``|ints| <= 2**bits``
    and float64 ``[m]`` powers of two with ``a ~= ints * scale[:, None]`` (relative to each
    row's largest magnitude, to ``2**-bits``; zero rows get scale 1). Every step is exact or
    correctly rounded. ``out``: a float64 array of ``a``'s shape for ``ints`` (may be ``a``).
    """
    a = np.asarray(a, dtype=np.float64)
    if a.shape[1]:
        peak = np.maximum(a.max(axis=1), -a.min(axis=1))
    else:
        peak = np.zeros(a.shape[0])
    _, exponent = np.frexp(peak)                    # peak < 2 ** exponent
    inverse = np.where(peak > 0, np.ldexp(1.0, bits - exponent), 1.0)   # exact powers of two
    ints = np.multiply(a, inverse[:, None], out=out)
    np.rint(ints, out=ints)
    return ints, 1.0 / inverse


def exact_matmul(a: np.ndarray, b: np.ndarray, bound: float) -> np.ndarray:
    """``a @ b`` of integer-valued float64 ``a`` [m, n] and ``b`` [n, p], exactly.

    ``bound`` is a caller's bound on ``sum_j |a_ij b_jk|`` for every ``i, k``; it must be
    below ``2**53`` so every partial sum is exact (then BLAS's order cannot matter).
    """
    if not bound < EXACT_LIMIT:
        raise ValueError(f"exact_matmul: partial sums up to {bound:g} are not exact in float64")
    return np.matmul(a, b)


def exact_square_norms(ints: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Row sums of squares of integer-valued float64 ``ints`` [m, d] (``|ints| <= 2**bits``
    if ``bits`` is given, else measured): exact while every row's sum stays below ``2**53``
    (any order then gives the same bits), else summed exactly in column blocks that do, the
    block sums added in a fixed order."""
    if bits is not None:
        peak = 2.0 ** bits
    else:
        peak = float(np.abs(ints).max()) if ints.size else 0.0
    per_block = max(1, int(EXACT_LIMIT // max(peak * peak, 1.0)))
    if ints.shape[1] <= per_block:
        return np.einsum("ij,ij->i", ints, ints)
    blocks = [np.einsum("ij,ij->i", ints[:, s:s + per_block], ints[:, s:s + per_block])
              for s in range(0, ints.shape[1], per_block)]
    return ordered_sum(np.stack(blocks, axis=1), axis=1)


def row_norms(a: np.ndarray) -> np.ndarray:
    """Euclidean norms of the rows of float ``a`` [m, d], float64, machine-independent (to
    about ``2**-ROW_BITS`` relative: computed on :func:`fixed_point_rows`)."""
    out = np.empty(a.shape[0])
    for start in range(0, a.shape[0], 4096):         # rows are independent: bounded memory
        ints, scale = fixed_point_rows(a[start:start + 4096])
        out[start:start + 4096] = np.sqrt(exact_square_norms(ints, ROW_BITS)) * scale
    return out


def grid(a: np.ndarray, bits: int = ROW_BITS) -> np.ndarray:
    """Values of float ``a`` with ``|a| <= 1`` rounded to multiples of ``2**-bits`` (float64;
    exact in float32 for ``bits <= 23``): the grid unit-vector params are stored on, so that
    encoding can multiply them as integers (:func:`exact_matmul`)."""
    return np.rint(np.asarray(a, dtype=np.float64) * 2.0 ** bits) * 2.0 ** -bits


def exact_inner_products(a: np.ndarray, b: np.ndarray, bits: int = ROW_BITS) -> np.ndarray:
    """Deterministic approximations of ``a @ b.T`` for float ``a`` [m, d], ``b`` [n, d].

    Rows of both are put on per-row ``2**-bits`` grids (:func:`fixed_point_rows`), multiplied
    exactly (in column blocks that keep partial sums below ``2**53``, added in a fixed
    order) and scaled back: float64 ``[m, n]``, accurate to about ``2**-bits`` of the rows'
    largest magnitudes, and the same bits on every machine.
    """
    return _scaled_product(fixed_point_rows(a, bits), fixed_point_rows(b, bits), bits)


def precise_inner_products(a: np.ndarray, b: np.ndarray, pieces: int = 2) -> np.ndarray:
    """Deterministic ``a @ b.T`` for float ``a`` [m, d], ``b`` [n, d] to about
    ``2**-(20 pieces)`` of the rows' largest magnitudes (``pieces`` 2: ``2**-40``, 3:
    ``2**-60``, finer than float64 rounding), where :func:`exact_inner_products` gives
    ``2**-20``.

    Each row is split into ``pieces`` fixed-point parts (each the fixed-point head of what
    the ones before it leave); the products of parts whose significance adds up to less
    than ``pieces`` are exact GEMMs, added smallest first in a fixed order. float64
    ``[m, n]``; ``pieces * (pieces + 1) / 2`` GEMMs.
    """
    a_parts, b_parts = _split_rows(a, pieces), _split_rows(b, pieces)
    terms = []
    for total in range(pieces - 1, -1, -1):             # smallest significance first
        for i in range(total + 1):
            terms.append(_scaled_product(a_parts[i], b_parts[total - i], ROW_BITS))
    out = terms[0]
    for term in terms[1:]:
        out += term
    return out


def _split_rows(a: np.ndarray, pieces: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """float ``a`` [m, d] -> ``pieces`` pairs ``(ints, scale)``: :func:`fixed_point_rows` of
    ``a``, then of what the parts so far leave (``rest - ints * scale``, exact)."""
    rest = np.asarray(a, dtype=np.float64)
    parts = []
    for _ in range(pieces):
        ints, scale = fixed_point_rows(rest)
        parts.append((ints, scale))
        rest = rest - ints * scale[:, None]
    return parts


def _scaled_product(a: tuple[np.ndarray, np.ndarray], b: tuple[np.ndarray, np.ndarray],
                    bits: int) -> np.ndarray:
    """``(ai * sa) @ (bi * sb).T`` for :func:`fixed_point_rows` pairs ``(ints, scale)`` with
    ``|ints| <= 2**bits``: the integer product exactly (blocked), then the power-of-two
    scales (exact, in place). float64 ``[m, n]``."""
    (ai, ascale), (bi, bscale) = a, b
    dots = _column_blocks(ai.shape[1], bits, lambda s, e: exact_matmul(
        ai[:, s:e], bi[:, s:e].T, (e - s) * 2.0 ** (2 * bits)))
    dots *= ascale[:, None]
    dots *= bscale[None, :]
    return dots


def exact_paired_products(a: np.ndarray, b: np.ndarray, bits: int = ROW_BITS) -> np.ndarray:
    """Deterministic approximations of ``einsum("mk,mck->mc", a, b)`` for float ``a``
    [m, k] and ``b`` [m, c, k] (each row of ``a`` with its own ``c`` rows of ``b``): float64
    ``[m, c]``, on the grids of :func:`exact_inner_products`, the same bits on every
    machine (every partial sum is an exact integer, so einsum's order cannot matter)."""
    m, c, k = b.shape
    ai, ascale = fixed_point_rows(a, bits)
    bi, bscale = fixed_point_rows(b.reshape(m * c, k), bits)
    bi = bi.reshape(m, c, k)
    dots = _column_blocks(k, bits, lambda s, e: np.einsum(
        "mk,mck->mc", ai[:, s:e], bi[:, :, s:e]))
    dots *= ascale[:, None]
    dots *= bscale.reshape(m, c)
    return dots


def _column_blocks(k: int, bits: int, product) -> np.ndarray:
    """``product(s, e)`` (exact products of columns ``s:e`` of ``2**bits``-bounded integers)
    over column blocks narrow enough that partial sums stay below ``2**53``, the blocks
    added in a fixed order."""
    per_block = max(1, int(EXACT_LIMIT // 2.0 ** (2 * bits)) - 1)
    if k <= per_block:
        return product(0, k)
    parts = [product(s, min(s + per_block, k)) for s in range(0, k, per_block)]
    return ordered_sum(np.stack(parts, axis=-1), axis=-1)


def inner_products(a: np.ndarray, b: np.ndarray, *, deterministic: bool = False
                   ) -> np.ndarray:
    """``a @ b.T`` of float ``a`` [m, k] and ``b`` [n, k] as float32 ``[m, n]``.

    ``deterministic``: :func:`exact_inner_products` rounded to float32 (the same bits on
    every machine; about 2-4x the time), else BLAS (its kernel decides the last bits).
    Scores whose order is recorded (validation recall) use the first; serving the second.
    """
    if deterministic:
        return exact_inner_products(a, b).astype(np.float32)
    return a @ b.T


def paired_products(a: np.ndarray, b: np.ndarray, *, deterministic: bool = False
                    ) -> np.ndarray:
    """``einsum("mk,mck->mc", a, b)`` as float32 ``[m, c]``; ``deterministic`` as in
    :func:`inner_products`."""
    if deterministic:
        return exact_paired_products(a, b).astype(np.float32)
    return np.einsum("mk,mck->mc", a, b).astype(np.float32, copy=False)


_LN2 = 0.6931471805599453


def exp2(x: np.ndarray | float) -> np.ndarray:
    """``2 ** x`` for float ``x`` with ``|x| < 1000``, from elementwise operations only (a
    fixed Taylor series of ``e ** (f ln 2)``, ``f`` in [0, 1), times an exact power of two):
    within a few ulp of the true value, and the same bits on every machine."""
    x = np.asarray(x, dtype=np.float64)
    whole = np.floor(x)
    t = (x - whole) * _LN2
    term = np.ones_like(t)
    total = np.ones_like(t)
    for k in range(1, 24):
        term = term * t / k
        total = total + term
    return np.ldexp(total, whole.astype(np.int64))


def log2(x: np.ndarray | float) -> np.ndarray:
    """``log2(x)`` for float ``x > 0``, from elementwise operations only (exponent from
    ``frexp`` plus the atanh series of the mantissa): within a few ulp, machine-independent."""
    x = np.asarray(x, dtype=np.float64)
    mant, exponent = np.frexp(x)                       # x = mant * 2**exponent, mant in [.5, 1)
    low = mant < 0.7071067811865476                    # mant in [1/sqrt2, sqrt2) after this
    mant = np.where(low, mant * 2.0, mant)
    exponent = np.where(low, exponent - 1, exponent)
    y = (mant - 1.0) / (mant + 1.0)                    # |y| <= 0.1716
    y2 = y * y
    total = np.zeros_like(y)
    for k in range(29, 0, -2):                         # Horner: sum y^(k) / k, k odd
        total = total * y2 + 1.0 / k
    return exponent + 2.0 * y * total / _LN2
