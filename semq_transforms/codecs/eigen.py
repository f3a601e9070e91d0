"""A symmetric eigensolver whose output bits do not depend on the machine. Pure numpy.

LAPACK (``np.linalg.eigh``) calls BLAS kernels that sum in a CPU- and thread-dependent order,
so its eigenvectors differ in the last bits between machines, and arbitrarily inside
degenerate eigenspaces. semq only needs *a* deterministic orthonormal basis close to the
principal axes, so this module computes one with the rules of :mod:`.exact` (elementwise IEEE
operations, :func:`~.exact.ordered_sum`, and matrix products only as exact fixed-point GEMMs,
:func:`~.exact.precise_inner_products`):

1. **Householder tridiagonalization** ``A = Q T Q^T``, in panels (LAPACK's ``dlatrd``): the
   trailing matrix takes each panel's rank-2 updates as one product.
2. **Eigenvalues of T by bisection** on Sturm counts, all at once (vectorized over them).
3. **Eigenvectors of T by inverse iteration**, all at once, from distinct deterministic start
   vectors; members of a cluster of (numerically) equal eigenvalues are orthogonalized
   against each other (block Gram-Schmidt), which gives a deterministic basis of a
   degenerate eigenspace (constant dimensions, duplicate rows, rank-deficient shards).
4. **Back-transformation** by the Householder reflectors, in blocks (compact WY).

The products are accurate to about ``2**-40`` of their operands (``2**-60`` for the
tridiagonalization's updates): eigenvectors to about ``1e-10`` where LAPACK's reach ``1e-15``,
far finer than the ``2**-20`` grid semq stores axes on; the time is a few times LAPACK's
(benchmarks/README.md).
"""

from __future__ import annotations

import numpy as np

from semq_transforms.codecs.exact import ordered_sum, precise_inner_products, weighted_row_sum

#: Bisection halvings of the Gershgorin interval (to float64 resolution).
BISECTIONS = 56
#: Inverse-iteration solves per eigenvector.
INVERSE_ITERATIONS = 3
#: Eigenvalues closer than this (relative to the largest magnitude) form one cluster.
CLUSTER_TOL = 1e-9
#: A cluster member whose norm falls below this fraction when orthogonalized against the
#: others had nothing of its own: it is replaced (see _orthogonalize).
COLLAPSED = 1e-6
#: Extra inverse-iteration rounds allowed for members that restarted.
MAX_RESTARTS = 3
#: Cluster members orthogonalized column by column; larger clusters go in blocks of this
#: many, projected off the earlier blocks with matrix products (_orthogonalize).
ORTHO_BLOCK = 32
#: Householder reflectors applied together in the back-transformation (_back_transform).
BACK_BLOCK = 64
#: Columns reduced per panel in the tridiagonalization (_tridiagonalize).
PANEL = 32


def symmetric_eigh(a: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (ascending) and orthonormal eigenvectors of symmetric float64 ``a`` [n, n].

    Returns ``(w, v)``: float64 ``[n]`` and ``[n, n]`` (columns), with ``a @ v ~= v * w``
    to about ``1e-10 * max|a|`` (the back-transformation's products, to ``2**-40``),
    columns orthonormal to about ``1e-10`` and ``eps * max|a| / gap`` (gap to the nearest
    other eigenvalue; clusters closer than ``CLUSTER_TOL * max|a|`` are orthogonalized
    explicitly). Deterministic: the same bits on every machine.
    """
    a = np.array(a, dtype=np.float64)
    n = a.shape[0]
    peak = float(np.abs(a).max()) if a.size else 0.0
    if n == 0 or peak == 0.0:
        return np.zeros(n), np.eye(n)
    _, exponent = np.frexp(peak)
    scale = np.ldexp(1.0, int(exponent))              # exact rescaling to |a| < 1
    a /= scale
    diag, off, reflectors = _tridiagonalize(a)
    w = _bisect(diag, off)
    z = _inverse_iteration(diag, off, w)
    _back_transform(z, reflectors)
    return w * scale, z


def _tridiagonalize(a: np.ndarray
                    ) -> tuple[np.ndarray, np.ndarray, list[tuple[np.ndarray | None, float]]]:
    """Householder reduction of symmetric ``a`` (overwritten) to tridiagonal form, in panels
    of :data:`PANEL` columns (LAPACK's ``dlatrd``): within a panel, each column gets the
    panel's pending rank-2 updates before its reflector is formed, and ``w = beta (A v -
    V W^T v - W V^T v)`` uses the trailing matrix as it was; after the panel the trailing
    matrix takes them all at once, ``A -= V W^T + W V^T`` (one product, to ``2**-60``, of
    :func:`~.exact.precise_inner_products`). Everything else is elementwise.

    Returns the diagonal [n], the off-diagonal [n - 1] and the reflectors ``(v, beta)`` of
    steps ``k = 0..n-3`` (``H_k = I - beta v v^T`` acting on rows/columns ``k+1..``, ``v`` of
    unit norm, ``beta`` 2), or ``(None, 0)`` where the column is already reduced.
    """
    n = a.shape[0]
    reflectors: list[tuple[np.ndarray | None, float]] = []
    for first in range(0, n - 2, PANEL):
        cols = range(first, min(first + PANEL, n - 2))
        v_panel = np.zeros((n, len(cols)))
        w_panel = np.zeros((n, len(cols)))
        for j, k in enumerate(cols):
            if j:                                       # the panel's pending updates
                vs, ws = v_panel[k:, :j], w_panel[k:, :j]
                a[k:, k] -= (ordered_sum(vs * w_panel[k, :j][None, :], axis=1)
                             + ordered_sum(ws * v_panel[k, :j][None, :], axis=1))
            x = a[k + 1:, k]
            tail = ordered_sum(x[1:] * x[1:])
            if tail == 0.0:
                reflectors.append((None, 0.0))
                continue
            norm = np.sqrt(ordered_sum(x * x))
            alpha = -norm if x[0] >= 0 else norm
            v = x.copy()
            v[0] -= alpha
            v /= np.sqrt(ordered_sum(v * v))            # unit: beta = 2
            p = 2.0 * weighted_row_sum(a[k + 1:, k + 1:], v)      # A v (A symmetric)
            if j:
                vs, ws = v_panel[k + 1:, :j], w_panel[k + 1:, :j]
                p -= 2.0 * (ordered_sum(vs * weighted_row_sum(ws, v)[None, :], axis=1)
                            + ordered_sum(ws * weighted_row_sum(vs, v)[None, :], axis=1))
            w = p - ordered_sum(v * p) * v
            v_panel[k + 1:, j], w_panel[k + 1:, j] = v, w
            a[k + 1, k] = a[k, k + 1] = alpha
            a[k + 2:, k] = 0.0
            a[k, k + 2:] = 0.0
            reflectors.append((v, 2.0))
        rest = cols.stop
        if rest < n:
            update = precise_inner_products(v_panel[rest:], w_panel[rest:], pieces=3)
            a[rest:, rest:] -= update + update.T
    return np.diag(a).copy(), np.diag(a, -1).copy(), reflectors


def _back_transform(z: np.ndarray, reflectors: list[tuple[np.ndarray | None, float]]) -> None:
    """``z <- H_0 H_1 ... H_{n-3} z`` in place, :data:`BACK_BLOCK` reflectors at a time as
    ``I - V T V^T`` (compact WY, ``T`` upper triangular), whose products with ``z`` are
    :func:`~.exact.precise_inner_products` (BLAS-3 speed, machine-independent bits)."""
    n = z.shape[0]
    for stop in range(len(reflectors), 0, -BACK_BLOCK):
        ks = [k for k in range(max(0, stop - BACK_BLOCK), stop) if reflectors[k][0] is not None]
        if not ks:
            continue
        first = ks[0] + 1                               # H_k acts on rows k + 1 ..
        # unit reflectors (beta = 2): the products' fixed-point grids are relative to each
        # row's largest entry, so V and T must not mix scales
        v = np.zeros((n - first, len(ks)))
        beta = np.empty(len(ks))
        for i, k in enumerate(ks):
            v[k + 1 - first:, i], beta[i] = reflectors[k]
        t = _wy_factor(v, beta)
        rows = z[first:]
        coeff = precise_inner_products(t, precise_inner_products(v.T, rows.T).T)   # [b, n]
        rows -= precise_inner_products(v, coeff.T)


def _wy_factor(v: np.ndarray, beta: np.ndarray) -> np.ndarray:
    """Upper triangular ``T`` [b, b] with ``H_1 ... H_b = I - V T V^T`` for the reflectors
    ``H_i = I - beta_i v_i v_i^T`` (columns of ``v`` [m, b]): LAPACK's ``dlarft`` recurrence."""
    b = beta.shape[0]
    gram = precise_inner_products(v.T, v.T)             # [b, b]
    t = np.zeros((b, b))
    for i in range(b):
        if i:
            t[:i, i] = -beta[i] * ordered_sum(t[:i, :i] * gram[None, :i, i], axis=1)
        t[i, i] = beta[i]
    return t


def _bisect(diag: np.ndarray, off: np.ndarray) -> np.ndarray:
    """All eigenvalues of the tridiagonal (diag, off), ascending, by bisection."""
    n = diag.shape[0]
    radius = np.zeros(n)
    radius[:-1] += np.abs(off)
    radius[1:] += np.abs(off)
    lo_all, hi_all = float((diag - radius).min()), float((diag + radius).max())
    span = max(hi_all - lo_all, abs(hi_all), abs(lo_all), np.finfo(float).tiny)
    pivmin = np.finfo(float).tiny * max(1.0, float((off * off).max()) if n > 1 else 1.0)
    pivmin = max(pivmin, np.finfo(float).eps ** 2 * span)
    off_sq = off * off
    lo = np.full(n, lo_all - np.finfo(float).eps * span)
    hi = np.full(n, hi_all + np.finfo(float).eps * span)
    index = np.arange(n)
    for _ in range(BISECTIONS):
        mid = 0.5 * (lo + hi)
        below = _sturm_count(diag, off_sq, mid, pivmin)
        higher = below > index
        hi = np.where(higher, mid, hi)
        lo = np.where(higher, lo, mid)
    return 0.5 * (lo + hi)


def _sturm_count(diag: np.ndarray, off_sq: np.ndarray, x: np.ndarray,
                 pivmin: float) -> np.ndarray:
    """Number of eigenvalues of the tridiagonal below each ``x`` (vectorized over ``x``)."""
    count = np.zeros(x.shape[0], dtype=np.int64)
    q = diag[0] - x
    for i in range(diag.shape[0]):
        if i:
            q = (diag[i] - x) - off_sq[i - 1] / q
        q = np.where(np.abs(q) < pivmin, -pivmin, q)
        count += q < 0
    return count


def _inverse_iteration(diag: np.ndarray, off: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Eigenvectors of the tridiagonal (diag, off) for eigenvalues ``w`` (ascending): columns
    of float64 ``[n, n]``, solved for all eigenvalues at once."""
    n = diag.shape[0]
    span = max(float(np.abs(w).max()), np.finfo(float).tiny)
    pivmin = np.finfo(float).eps * span
    z = _pseudo_random((n, n), seed=0)      # distinct start vectors
    clusters = _clusters(w, CLUSTER_TOL * span)
    for iteration in range(INVERSE_ITERATIONS + MAX_RESTARTS):
        z = _solve_shifted(diag, off, w, z, pivmin)
        # a cluster's members are orthogonalized after every solve (subspace iteration):
        # else the solves amplify some directions of its eigenspace more than others and
        # the members collapse onto fewer directions than the cluster has
        restarted = sum(_orthogonalize(z, members, seed=iteration + 1) for members in clusters)
        if iteration + 1 >= INVERSE_ITERATIONS and not restarted:
            break
    return z / np.sqrt(ordered_sum(z * z, axis=0))[None, :]


def _pseudo_random(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """float64 values in [-1/2, 1/2) from a splitmix64 hash of the index and ``seed``
    (integer arithmetic, so the same on every machine and numpy version)."""
    with np.errstate(over="ignore"):
        h = (np.arange(int(np.prod(shape)), dtype=np.uint64) + np.uint64(seed << 40)
             ) * np.uint64(0x9E3779B97F4A7C15)
        h = (h ^ (h >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        h = (h ^ (h >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        h ^= h >> np.uint64(31)
    return ((h >> np.uint64(11)).astype(np.float64) * 2.0 ** -53 - 0.5).reshape(shape)


def _solve_shifted(diag: np.ndarray, off: np.ndarray, w: np.ndarray, b: np.ndarray,
                   pivmin: float) -> np.ndarray:
    """Solve ``(T - w_j I) z_j = b_j`` for every column ``j`` (LDL^T without pivoting, tiny
    pivots replaced by ``pivmin``: inverse iteration wants the near-singular solve)."""
    n = diag.shape[0]
    piv = np.empty_like(b)
    lower = np.zeros_like(b)
    y = np.empty_like(b)
    piv[0] = diag[0] - w
    y[0] = b[0]
    for i in range(1, n + 1):
        p = piv[i - 1]
        piv[i - 1] = np.where(np.abs(p) < pivmin, np.where(p < 0, -pivmin, pivmin), p)
        if i == n:
            break
        lower[i] = off[i - 1] / piv[i - 1]
        piv[i] = (diag[i] - w) - lower[i] * off[i - 1]
        y[i] = b[i] - lower[i] * y[i - 1]
    z = y / piv
    for i in range(n - 2, -1, -1):
        z[i] -= lower[i + 1] * z[i + 1]
    # keep magnitudes bounded before the caller normalizes
    peak = np.max(np.abs(z), axis=0)
    return z / np.where(peak > 0, peak, 1.0)[None, :]


def _clusters(w: np.ndarray, tol: float) -> list[np.ndarray]:
    """Index arrays of runs of consecutive eigenvalues closer than ``tol`` (size >= 2)."""
    breaks = np.flatnonzero(np.diff(w) > tol) + 1
    return [c for c in np.split(np.arange(w.shape[0]), breaks) if c.shape[0] > 1]


def _orthogonalize(z: np.ndarray, members: np.ndarray, seed: int = 0) -> int:
    """Gram-Schmidt of the columns ``members`` of ``z`` in place, each against the ones before
    it, to unit norm; blocks of :data:`ORTHO_BLOCK` columns are first projected off all
    earlier blocks at once (two passes of :func:`~.exact.precise_inner_products`: BLAS-3
    speed, machine-independent bits), then orthogonalized within the block column by column
    (classical, twice: Kahan-Parlett). A member with nothing of its own left (norm below
    ``COLLAPSED`` of what it had) restarts from a pseudo-random vector; returns how many did
    (the caller iterates again)."""
    restarted = 0
    n = z.shape[0]
    done = np.empty((n, members.shape[0]))      # the orthonormal members, as columns
    for start in range(0, members.shape[0], ORTHO_BLOCK):
        block = members[start:start + ORTHO_BLOCK]
        before = z[:, block]
        rest = _project_out_block(before, done[:, :start])
        for pos, j in enumerate(block):
            col = _project_out(rest[:, pos], done[:, start:start + pos].T)
            norm = np.sqrt(ordered_sum(col * col))
            if not norm > COLLAPSED * np.sqrt(ordered_sum(before[:, pos] * before[:, pos])):
                restarted += 1
                fresh = _pseudo_random((n, 1), seed * 1_000_003 + int(j) + 1)
                col = _project_out(_project_out_block(fresh, done[:, :start])[:, 0],
                                   done[:, start:start + pos].T)
                norm = np.sqrt(ordered_sum(col * col))
            done[:, start + pos] = col / norm
    z[:, members] = done
    return restarted


def _project_out_block(y: np.ndarray, q: np.ndarray) -> np.ndarray:
    """Columns ``y`` [n, b] minus their projections on the orthonormal columns of ``q``
    [n, p], twice (the products to ~2**-40, so what is left is the columns' own part)."""
    for _ in range(2):
        if q.shape[1]:
            coeff = precise_inner_products(q.T, y.T)            # [p, b]
            y = y - precise_inner_products(q, coeff.T)          # [n, b]
    return y


def _project_out(col: np.ndarray, done: np.ndarray) -> np.ndarray:
    """``col`` [n] minus its projection on the orthonormal rows of ``done`` [p, n], twice."""
    for _ in range(2):
        if done.shape[0]:
            coeff = ordered_sum(done * col[None, :], axis=1)
            col = col - ordered_sum(done * coeff[:, None], axis=0)
    return col
