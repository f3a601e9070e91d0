"""Evaluation helpers for inner-product search, in the vocabulary of faiss'
``contrib/evaluation.py``. Pure numpy, no I/O.

Result tables follow the faiss convention: ``D`` float32 ``[nq, k]`` scores and ``I`` int64
``[nq, k]`` ids, each row sorted best first (for inner products: decreasing score). Equal
scores are ordered by increasing id, so results are deterministic.

>>> import numpy as np
>>> x = np.eye(4, dtype=np.float32)
>>> D, I = exact_knn(x[:2], x, 1)
>>> I.ravel().tolist(), D.ravel().tolist()
([0, 1], [1.0, 1.0])
>>> knn_intersection_measure(np.array([[0, 1]]), np.array([[1, 2]]))
0.5
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Float32 score entries ``exact_knn`` materializes at a time (16 MiB).
KNN_CHUNK_SCORES = 1 << 22
#: Queries ``exact_knn`` scores together: each pass over the database serves this many.
KNN_QUERY_CHUNK = 1024
#: Boolean entries ``knn_intersection_measure`` materializes per row chunk.
INTERSECTION_CHUNK = 1 << 22
#: Column block width of :func:`topk`'s narrowing: rows are cut into blocks of
#: ``min(TOPK_BLOCK, n // (4 k))`` columns (at least ``MIN_TOPK_BLOCK``, else no narrowing)
#: and narrowed to ``k`` blocks before the partition.
TOPK_BLOCK = 64
MIN_TOPK_BLOCK = 8


def exact_knn(q: np.ndarray, x: np.ndarray, k: int, *, deterministic: bool = False
              ) -> tuple[np.ndarray, np.ndarray]:
    """Exact maximum-inner-product top-``k``, in blocks to bound memory.

    Up to :data:`KNN_QUERY_CHUNK` queries are scored together against blocks of database
    rows (:data:`KNN_CHUNK_SCORES` scores at a time), so the database is read once per query
    chunk rather than once per small group of queries (:func:`scan_topk`).

    Args:
        q: float queries ``[nq, d]`` (converted to float32).
        x: float database vectors ``[n, d]`` (converted to float32).
        k: results per query, ``1 <= k <= n``.
        deterministic: inner products with the same bits on every machine
            (:func:`~semq_transforms.codecs.exact.inner_products`), so near-ties resolve
            the same everywhere; else BLAS.
    Returns:
        ``D, I``: float32 ``[nq, k]`` inner products and int64 ``[nq, k]`` row ids of ``x``,
        sorted by decreasing score, ties by increasing id.
    """
    # here, not at the top: the codecs package imports this module (calibration)
    from semq_transforms.codecs.exact import inner_products

    q = _as_matrix(q, "q")
    x = _as_matrix(x, "x")
    if q.shape[1] != x.shape[1]:
        raise ValueError(f"q has dimension {q.shape[1]}, x has dimension {x.shape[1]}")
    _check_k(k, x.shape[0])
    D = np.empty((q.shape[0], k), dtype=np.float32)
    I = np.empty((q.shape[0], k), dtype=np.int64)  # faiss naming: D, I
    for start in range(0, q.shape[0], KNN_QUERY_CHUNK):
        chunk = q[start:start + KNN_QUERY_CHUNK]
        block_rows = max(k, KNN_CHUNK_SCORES // chunk.shape[0])
        D[start:start + len(chunk)], I[start:start + len(chunk)] = scan_topk(
            lambda lo, hi, chunk=chunk: inner_products(chunk, x[lo:hi],
                                                       deterministic=deterministic),
            x.shape[0], k,
            block_rows=block_rows)
    return D, I


def scan_topk(score_rows: Callable[[int, int], np.ndarray], n: int, k: int, *,
              block_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The :func:`topk` of a score matrix ``[nq, n]`` computed ``block_rows`` columns at a
    time: ``score_rows(lo, hi)`` returns the columns ``lo:hi`` (float ``[nq, hi - lo]``), and
    a running top list per row is kept, so only one block is in memory. The result is the
    one :func:`topk` of the whole matrix gives, ties included (by increasing column id).

    After the first block, an entry can only enter a row's top list if it is at least the
    row's current ``k``-th score (a later column loses a tie), so later blocks are cut to
    those entries before the selection: usually a handful per row.

    ``block_rows >= k`` and ``1 <= k <= n``. Returns ``D, I`` as :func:`topk`.
    """
    if block_rows < k:
        raise ValueError(f"block_rows ({block_rows}) must be at least k ({k})")
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    D, I = topk(score_rows(0, min(block_rows, n)), min(k, n))
    for lo in range(block_rows, n, block_rows):
        d, i = _entries_reaching(score_rows(lo, min(lo + block_rows, n)), D[:, -1], k)
        if d.shape[1]:
            D, I = merge_topk(D, I, d, i + lo, k)
    return D, I


def _entries_reaching(scores: np.ndarray, floor: np.ndarray,
                      k: int) -> tuple[np.ndarray, np.ndarray]:
    """The best (at most ``k``) entries of each row of ``scores`` ``[nq, m]`` that are >=
    the row's ``floor``, as ``D, I`` ``[nq, c]`` (column ids in ``scores``); rows with fewer
    are padded with ``-inf`` scores and column id ``m``, which sort after any real entry.
    ``c`` is 0 when no entry reaches its floor; NaN floors let every entry through."""
    nq, m = scores.shape
    # flat indices (np.flatnonzero of a bool matrix is ~10x faster than np.nonzero)
    flat = np.flatnonzero(~(scores < floor[:, None]))
    if flat.size == 0:
        return np.empty((nq, 0), np.float32), np.empty((nq, 0), np.int64)
    rows = flat // m
    cols = flat - rows * m
    counts = np.bincount(rows, minlength=nq)
    width = int(counts.max())
    if width > m // 4:          # not worth gathering: select over the whole block
        return topk(scores, min(k, m))
    slot = np.arange(rows.size) - np.repeat(np.cumsum(counts) - counts, counts)
    D = np.full((nq, width), -np.inf, dtype=np.float32)
    I = np.full((nq, width), m, dtype=np.int64)
    D[rows, slot] = scores[rows, cols]
    I[rows, slot] = cols
    if width > k:
        order = np.lexsort((I, -D), axis=1)[:, :k]
        D, I = np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)
    return D, I


def merge_topk(D1: np.ndarray, I1: np.ndarray, D2: np.ndarray, I2: np.ndarray,
               k: int) -> tuple[np.ndarray, np.ndarray]:
    """The top ``k`` of two result tables of the same rows (``D`` float ``[nq, k1]``/``[nq,
    k2]``, ``I`` int): by decreasing score, ties by increasing id, so the result does not
    depend on which table comes first. Returns ``D, I`` of ``min(k, k1 + k2)`` columns."""
    D = np.concatenate([D1, D2], axis=1)
    I = np.concatenate([I1, I2], axis=1)
    order = np.lexsort((I, -D), axis=1)[:, :k]
    return np.take_along_axis(D, order, axis=1), np.take_along_axis(I, order, axis=1)


def topk(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` largest entries of every row of a score matrix.

    ``np.partition`` finds each row's ``k``-th largest score, the entries at or above it are
    the candidates, and only those are sorted. Equal scores are ordered by increasing column
    id, also across the selection boundary (rows with more than ``k`` candidates, i.e. ties
    at the ``k``-th score, are re-selected with a stable full sort), so the result does not
    depend on numpy's partition internals. Wide rows are first narrowed to the ``k`` column
    blocks holding their largest block maxima (:func:`_block_candidates`; the same result,
    a fraction of the partition work).

    Args:
        scores: float ``[nq, n]`` (for example ``codec.score(q, codes, params)``).
        k: results per row, ``1 <= k <= n``.
    Returns:
        ``D, I``: float32 ``[nq, k]`` scores and int64 ``[nq, k]`` column ids, sorted by
        decreasing score, ties by increasing id.
    """
    scores = np.asarray(scores)
    if scores.ndim != 2:
        raise ValueError(f"scores must be 2-D [nq, n], got shape {list(scores.shape)}")
    _check_k(k, scores.shape[1])
    block = min(TOPK_BLOCK, scores.shape[1] // (4 * k))
    if block < MIN_TOPK_BLOCK:
        return _topk_rows(scores, k)
    found = _block_candidates(scores, k, block)
    D = np.empty((scores.shape[0], k), dtype=np.float32)
    I = np.empty((scores.shape[0], k), dtype=np.int64)
    if found is not None:
        rows, cols, values = found
        D[rows], local = _topk_rows(values, k)
        I[rows] = np.take_along_axis(cols, local, axis=1)
        rest = np.setdiff1d(np.arange(scores.shape[0]), rows, assume_unique=True)
    else:
        rest = np.arange(scores.shape[0])
    if rest.size:
        D[rest], I[rest] = _topk_rows(scores[rest], k)
    return D, I


def _block_candidates(scores: np.ndarray, k: int, block: int = TOPK_BLOCK
                      ) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """Narrow each row to the columns that can hold its top ``k``.

    Columns are cut into blocks of ``block`` columns; ``t``, a row's ``k``-th largest block
    maximum, is at most its ``k``-th largest score (``k`` blocks each hold an entry >= t), so
    every entry at or above the ``k``-th score lies in a block whose maximum is >= t. Where
    exactly ``k`` blocks reach ``t`` (no tie at ``t``, no NaN), those blocks, in column
    order, hold every candidate, and ties still resolve by increasing column id.

    Returns ``(rows, cols, values)``: int64 ``[r]`` the rows narrowed, int64
    ``[r, k * block]`` their candidate column ids (increasing; ids past the last column
    repeat it with value -inf) and float ``[r, k * block]`` the scores there; or None if no
    row could be narrowed. Other rows need the full search.
    """
    nq, n = scores.shape
    full = n // block
    maxima = scores[:, :full * block].reshape(nq, full, block).max(axis=2)
    if n > full * block:
        tail = scores[:, full * block:].max(axis=1, keepdims=True)
        maxima = np.concatenate([maxima, tail], axis=1)
    blocks = maxima.shape[1]
    t = np.partition(maxima, blocks - k, axis=1)[:, blocks - k:blocks - k + 1]
    reached = maxima >= t
    ok = (np.count_nonzero(reached, axis=1) == k) & ~np.isnan(maxima).any(axis=1)
    rows = np.flatnonzero(ok)
    if rows.size == 0:
        return None
    chosen = _column_ids(reached[rows]).reshape(-1, k)                 # [r, k], increasing
    cols = (chosen[:, :, None] * block + np.arange(block)).reshape(rows.size, -1)
    past = cols >= n
    np.minimum(cols, n - 1, out=cols)
    values = scores[rows[:, None], cols]
    if past.any():
        values[past] = -np.inf
    return rows, cols, values


def _topk_rows(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """:func:`topk` without the block narrowing (``scores`` checked by the caller)."""
    n = scores.shape[1]
    if k < n:
        # The k-th largest value per row (np.partition moves values only: about twice as
        # fast as argpartition), then the entries at or above it. A row with more than k
        # such entries has ties at the k-th score (or NaN): those rows alone get a stable
        # full sort.
        kth = np.partition(scores, n - k, axis=1)[:, n - k:n - k + 1]
        selected = scores >= kth
        exact = np.count_nonzero(selected, axis=1) == k
        I = np.empty((scores.shape[0], k), dtype=np.int64)
        if exact.all():
            I[:] = _column_ids(selected).reshape(-1, k)
        else:
            rows = np.flatnonzero(exact)
            I[rows] = _column_ids(selected[rows]).reshape(-1, k)
            redo = np.flatnonzero(~exact)
            I[redo] = np.argsort(-scores[redo], axis=1, kind="stable")[:, :k]
        D = np.take_along_axis(scores, I, axis=1)
    else:
        I = np.broadcast_to(np.arange(n), scores.shape).copy()
        D = scores.copy()
    order = np.lexsort((I, -D), axis=1)
    return (np.take_along_axis(D, order, axis=1).astype(np.float32, copy=False),
            np.take_along_axis(I, order, axis=1).astype(np.int64, copy=False))


def _column_ids(mask: np.ndarray) -> np.ndarray:
    """Column ids of the True entries of bool ``mask`` ``[r, n]``, row by row (int64): what
    ``np.nonzero(mask)[1]`` gives, from ``np.flatnonzero``, which is ~10x faster."""
    return np.flatnonzero(mask) % mask.shape[1]


def knn_intersection_measure(I1: np.ndarray, I2: np.ndarray) -> float:
    """Mean over queries of ``|I1_i ∩ I2_i| / k`` for two result tables (the
    :func:`knn_intersections` of every query, over ``nq * k``).

    Rows are compared as sets (an id repeated within a row counts once). Negative ids (faiss'
    padding for "no result") never count as a match.

    Args:
        I1, I2: integer ``[nq, k]`` id tables of the same shape, ``nq, k >= 1``.
    Returns:
        A float in ``[0, 1]``.
    Raises:
        ValueError: if the shapes differ, are not 2-D, or are empty.
    """
    hits = knn_intersections(I1, I2)
    nq, k = np.shape(I1)
    return int(hits.sum()) / (nq * k)


def knn_intersections(I1: np.ndarray, I2: np.ndarray) -> np.ndarray:
    """Per query, ``|I1_i ∩ I2_i|`` for two result tables: int64 ``[nq]``.

    Rows are compared as sets (an id repeated within a row counts once). Negative ids (faiss'
    padding for "no result") never count as a match.

    Args:
        I1, I2: integer ``[nq, k]`` id tables of the same shape, ``nq, k >= 1``.
    Raises:
        ValueError: if the shapes differ, are not 2-D, or are empty.
    """
    I1, I2 = np.asarray(I1), np.asarray(I2)
    if I1.shape != I2.shape:
        raise ValueError(f"result tables differ in shape: {list(I1.shape)} vs {list(I2.shape)}")
    if I1.ndim != 2 or I1.size == 0:
        raise ValueError(f"result tables must be non-empty 2-D [nq, k], got {list(I1.shape)}")
    nq, k = I1.shape
    chunk = max(1, INTERSECTION_CHUNK // (k * k))
    hits = np.empty(nq, dtype=np.int64)
    for start in range(0, nq, chunk):
        a = np.sort(I1[start:start + chunk], axis=1)
        b = I2[start:start + chunk]
        first = np.ones(a.shape, dtype=bool)
        first[:, 1:] = a[:, 1:] != a[:, :-1]
        found = (a[:, :, None] == b[:, None, :]).any(axis=2)
        hits[start:start + chunk] = np.count_nonzero(found & first & (a >= 0), axis=1)
    return hits


def recall_at_k(scores_or_I: np.ndarray, gt_I: np.ndarray, k: int) -> float:
    """k-NN recall ``R@k`` (intersection measure) of a search against ground truth.

    Args:
        scores_or_I: either a float score matrix ``[nq, n]`` (its :func:`topk` is taken) or
            an integer id table ``[nq, >= k]`` sorted best first (its first ``k`` columns).
        gt_I: integer ground-truth ids ``[nq, >= k]`` sorted best first, e.g. the ``I`` of
            :func:`exact_knn`.
        k: cut-off.
    Returns:
        ``knn_intersection_measure(I[:, :k], gt_I[:, :k])``.
    """
    result = np.asarray(scores_or_I)
    gt_I = np.asarray(gt_I)
    if result.dtype.kind == "f":
        _, result = topk(result, k)
    elif result.dtype.kind not in "iu":
        raise ValueError(f"scores_or_I must be float scores or integer ids, got {result.dtype}")
    for name, table in (("scores_or_I", result), ("gt_I", gt_I)):
        if table.ndim != 2 or table.shape[1] < k:
            raise ValueError(f"{name} must be [nq, >= {k}], got shape {list(table.shape)}")
    return knn_intersection_measure(result[:, :k], gt_I[:, :k])


def _as_matrix(a: np.ndarray, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.ndim != 2 or a.shape[0] == 0 or a.shape[1] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D [n, d] array, got {list(a.shape)}")
    return np.ascontiguousarray(a, dtype=np.float32)


def _check_k(k: int, n: int) -> None:
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or not 1 <= k <= n:
        raise ValueError(f"k must be an integer in [1, {n}], got {k!r}")
