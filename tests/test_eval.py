"""semq_transforms.eval: top-k selection (ties by increasing id, whatever the partition does)
and exact search, against a stable full sort."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from semq_transforms.eval import (
    MIN_TOPK_BLOCK,
    TOPK_BLOCK,
    _block_candidates,
    _topk_rows,
    exact_knn,
    topk,
)


def reference(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return np.take_along_axis(scores, order, axis=1), order


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(1, 6), cols=st.integers(1, 60), levels=st.integers(1, 8),
       seed=st.integers(0, 2**32 - 1), data=st.data())
def test_topk_matches_a_stable_sort_even_with_ties(rows, cols, levels, seed, data):
    # few distinct values: ties at the k-th score are the common case
    scores = np.random.default_rng(seed).integers(0, levels, (rows, cols)).astype(np.float32)
    k = data.draw(st.integers(1, cols))
    D, I = topk(scores, k)
    D_ref, I_ref = reference(scores, k)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_array_equal(D, D_ref)
    assert D.dtype == np.float32 and I.dtype == np.int64


def test_topk_distinct_scores_and_exact_knn():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((50, 5000)).astype(np.float32)
    for k in (1, 10, 4999, 5000):
        D, I = topk(scores, k)
        D_ref, I_ref = reference(scores, k)
        np.testing.assert_array_equal(I, I_ref)
        np.testing.assert_array_equal(D, D_ref)
    q, x = rng.standard_normal((20, 16)), rng.standard_normal((300, 16))
    D, I = exact_knn(q, x, 7)
    full = q.astype(np.float32) @ x.astype(np.float32).T
    np.testing.assert_array_equal(I, reference(full, 7)[1])


@settings(max_examples=150, deadline=None)
@given(rows=st.integers(1, 5), cols=st.integers(256, 1500),
       levels=st.sampled_from([2, 5, 50, 1 << 20]), seed=st.integers(0, 2**32 - 1),
       data=st.data())
def test_topk_narrowed_to_blocks_matches_a_stable_sort(rows, cols, levels, seed, data):
    # wide rows take the block narrowing (TOPK_BLOCK columns a block, a shorter tail block);
    # few levels make ties at the k-th score and at the k-th block maximum common, and -inf
    # entries fill whole blocks now and then
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, levels, (rows, cols)).astype(np.float32)
    scores[rng.random((rows, cols)) < data.draw(st.sampled_from([0.0, 0.3, 0.97]))] = -np.inf
    k = data.draw(st.integers(1, cols // (4 * MIN_TOPK_BLOCK)))
    D, I = topk(scores, k)
    D_ref, I_ref = reference(scores, k)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_array_equal(D, D_ref)


def test_topk_narrowing_takes_rows_it_can_and_leaves_nan_rows_to_the_full_search():
    rng = np.random.default_rng(1)
    scores = rng.standard_normal((6, 4 * TOPK_BLOCK * 10 + 17)).astype(np.float32)
    scores[2, 5] = np.nan
    scores[0, -3:] = 100.0   # the best entries in the short tail block (17 columns)
    found = _block_candidates(scores, 10)
    assert found is not None
    rows, cols, values = found
    assert rows.tolist() == [0, 1, 3, 4, 5]            # the NaN row is left to _topk_rows
    assert cols.shape == (5, 10 * TOPK_BLOCK) and (np.diff(cols, axis=1) >= 0).all()
    n = scores.shape[1]
    padded = values == -np.inf       # the tail block (17 columns) is padded to 64 with -inf
    assert (padded.sum(axis=1) == 47 * (cols[:, -1] == n - 1)).all() and padded[0].sum() == 47
    np.testing.assert_array_equal(values[~padded],
                                  np.take_along_axis(scores[rows], cols, axis=1)[~padded])
    D, I = topk(scores, 10)
    for row in (0, 1, 3, 4, 5):
        D_ref, I_ref = reference(scores[row:row + 1], 10)
        np.testing.assert_array_equal(I[row], I_ref[0])
        np.testing.assert_array_equal(D[row], D_ref[0])
    assert I[0, :3].tolist() == [scores.shape[1] - 3, scores.shape[1] - 2, scores.shape[1] - 1]
    D_full, I_full = _topk_rows(scores[2:3], 10)
    np.testing.assert_array_equal(I[2], I_full[0])
    np.testing.assert_array_equal(D[2], D_full[0])
