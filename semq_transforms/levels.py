"""A shard's code levels as numbers: fit and encode them, search them (scan level, then
rerank), restore rows from them. Pure numpy over :class:`~semq_transforms.format.shard.
EncodedLevel` s, no I/O: the one search used by ``Index`` and by the job's validation.

    levels = encode_levels(x, ["semq1", "semq4"])   # scan level first, rerank level last
    D, rows = search_levels(levels, queries, k=10, rerank=100, score_budget=1 << 24)
    y = decode_rows(levels, -1, rows[0])
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from semq_transforms.codecs import Codec, get_codec
from semq_transforms.codecs.base import BaseLevel, FitCache, check_order
from semq_transforms.errors import CodecConfigError, InvalidInputError
from semq_transforms.eval import scan_topk, topk
from semq_transforms.format.shard import EncodedLevel

__all__ = ["decode_rows", "encode_levels", "level_base", "level_codecs", "score_candidates",
           "search_levels"]


def level_codecs(specs: Sequence[str | Mapping[str, Any] | Codec]) -> list[Codec]:
    """The codecs of a shard's levels, scan level first, checked: a non-empty list (not one
    spec string), known codecs, refining levels after what they refine."""
    if isinstance(specs, (str, Mapping, Codec)) or not specs:
        raise InvalidInputError(f"specs must be a non-empty list of codec specs, got {specs!r}")
    codecs = [get_codec(spec) for spec in specs]
    try:
        check_order(codecs)
    except CodecConfigError as exc:
        raise InvalidInputError(f"specs {[c.spec for c in codecs]}: {exc}") from None
    return codecs


def encode_levels(x: np.ndarray, specs: Sequence[str | Mapping[str, Any] | Codec]
                  ) -> list[EncodedLevel]:
    """Fit each codec on float32 ``x`` ``[n, d]`` and encode ``x`` with it.

    ``specs`` lists the levels of one shard, scan level first, rerank level last
    (``["semq1", "semq4"]``). Pure numpy; deterministic in ``x``.
    """
    codecs = level_codecs(specs)
    levels: list[EncodedLevel] = []
    cache = FitCache()  # statistics of x the levels share (semq levels: one PCA per shard)
    for codec in codecs:
        prev = levels[-1] if codec.refines else None
        base = None if prev is None else BaseLevel(prev.codec, prev.params, prev.codes)
        params = codec.fit(x, cache=cache, base=base)
        levels.append(EncodedLevel(codec, params, codec.encode(x, params, base=base,
                                                                cache=cache)))
    return levels


def level_base(levels: Sequence[EncodedLevel], i: int, rows: Any = None) -> BaseLevel | None:
    """What level ``i`` refines (:attr:`Codec.refines`): the level before it, with its codes
    of ``rows`` (any numpy index, default all rows); None if level ``i`` stands alone."""
    i = range(len(levels))[i]   # negative indices count from the end, as in a list
    if not levels[i].codec.refines:
        return None
    prev = levels[i - 1]
    return BaseLevel(prev.codec, prev.params, prev.codes if rows is None else prev.codes[rows])


def score_candidates(levels: Sequence[EncodedLevel], queries: np.ndarray,
                     rows: np.ndarray, *, deterministic: bool = False) -> np.ndarray:
    """Re-score each query's candidate ``rows`` (int ``[nq, c]``) with the last level (and the
    level it refines, if it does): float32 ``[nq, c]``. ``deterministic``: see
    :meth:`~semq_transforms.codecs.base.Codec.score`."""
    fine = levels[-1]
    if fine.codec.refines:
        # Decoding an entropy-coded refinement costs far more than a dot product, and the
        # queries of one call share most candidates: decode each distinct row once and score
        # it for every query ([nq, distinct rows]; callers bound nq * rows).
        distinct, where = np.unique(rows, return_inverse=True)
        scores = fine.codec.score(queries, fine.codes[distinct], fine.params,
                                  base=level_base(levels, -1, distinct),
                                  deterministic=deterministic)
        return np.take_along_axis(scores, where.reshape(rows.shape), axis=1)
    return fine.codec.score_candidates(queries, fine.codes[rows], fine.params,
                                       base=level_base(levels, -1, rows),
                                       deterministic=deterministic)


def search_levels(levels: Sequence[EncodedLevel], queries: np.ndarray, k: int, *,
                  rerank: int, score_budget: int, deterministic: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """One shard's compressed search: the scan level scores every row, each query's best
    ``max(rerank, k)`` are re-scored with the last level (:func:`score_candidates`), and the
    best ``k`` of those are returned. ``rerank`` 0, or a single level, returns the scan's
    top ``k``.

    Rows are scanned in blocks of ``score_budget // nq`` (at least the candidates kept), with
    a running top list per query (:func:`~semq_transforms.eval.scan_topk`): every code is
    decoded once whatever ``nq`` is. Candidates are re-scored a step of queries at a time
    (a refining level scores each distinct candidate row for every query of a step). So
    about ``score_budget`` scores are in memory at a time, beyond the ``[nq, max(rerank,
    k)]`` candidate lists.

    Args:
        levels: the shard's code levels, scan level first.
        queries: float32 ``[nq, d]`` (checked by the caller).
        k: results per query, ``>= 1``; at most the shard's rows are returned.
        deterministic: score with the same bits on every machine (so the same rows come back
            at near-ties): slower, for results that are recorded (validation).
    Returns:
        ``D, rows``: float32 scores and int64 row numbers ``[nq, min(k, rows)]``, best first,
        ties by lower row number.
    """
    scan, n = levels[0], levels[0].rows
    fine = len(levels) > 1 and rerank > 0
    keep = min(max(rerank, k) if fine else k, n)
    D, rows = scan_topk(
        lambda lo, hi: scan.codec.score(queries, scan.codes[lo:hi], scan.params,
                                        deterministic=deterministic), n, keep,
        block_rows=max(keep, score_budget // max(1, queries.shape[0])))
    if not fine:
        return D, rows
    step = _rerank_step(score_budget, keep, n, levels[-1].codec.refines)
    rescored = np.concatenate([score_candidates(levels, queries[i:i + step], rows[i:i + step],
                                                deterministic=deterministic)
                               for i in range(0, queries.shape[0], step)])
    D, order = topk(rescored, min(k, n))
    return D, np.take_along_axis(rows, order, axis=1)


def _rerank_step(budget: int, keep: int, rows: int, refines: bool) -> int:
    """Queries re-scored per :func:`score_candidates` call so about ``budget`` scores are held:
    ``[step, keep]`` for a plain level; a refining one scores each distinct candidate row for
    every query of the step, ``[step, min(step * keep, rows)]``."""
    if not refines:
        return max(1, budget // keep)
    step = math.isqrt(budget // keep)
    return max(1, step if step * keep <= rows else budget // rows)


def decode_rows(levels: Sequence[EncodedLevel], i: int, rows: Any) -> np.ndarray:
    """Restore ``rows`` (a numpy index) from level ``i``: float32 ``[m, d]``."""
    lv = levels[i]
    try:
        codes = lv.codes[rows]
    except IndexError as exc:
        raise InvalidInputError(f"rows {exc}: the level has {lv.codes.shape[0]} rows") from None
    return lv.codec.decode(codes, lv.params, base=level_base(levels, i, rows))
