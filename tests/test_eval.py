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
    knn_intersection_measure,
    knn_intersections,
    merge_topk,
    scan_topk,
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


@settings(max_examples=200, deadline=None)
@given(rows=st.integers(1, 5), cols=st.integers(1, 400), levels=st.integers(1, 6),
       seed=st.integers(0, 2**32 - 1), data=st.data())
def test_scan_topk_over_column_blocks_equals_one_topk_ties_included(rows, cols, levels, seed,
                                                                    data):
    # few levels: ties at the k-th score straddle block boundaries; a short last block
    scores = np.random.default_rng(seed).integers(0, levels, (rows, cols)).astype(np.float32)
    k = data.draw(st.integers(1, cols))
    block_rows = data.draw(st.integers(k, max(k, cols)))
    calls = []

    def score_rows(lo, hi):
        calls.append((lo, hi))
        return scores[:, lo:hi]

    D, I = scan_topk(score_rows, cols, k, block_rows=block_rows)
    D_ref, I_ref = reference(scores, k)
    np.testing.assert_array_equal(I, I_ref)
    np.testing.assert_array_equal(D, D_ref)
    assert calls == [(lo, min(lo + block_rows, cols)) for lo in range(0, cols, block_rows)]


def test_scan_topk_with_distinct_scores_gathers_the_few_entries_reaching_the_top():
    # distinct scores: after the first block only a few entries per row reach the running
    # k-th score, and those alone are gathered (the path the validation scan takes)
    scores = np.random.default_rng(5).standard_normal((8, 5000)).astype(np.float32)
    scores[3, 4000:] = 50.0 + np.arange(1000, dtype=np.float32)   # a late block wins
    for k, block_rows in ((10, 500), (100, 1000), (1, 4999)):
        D, I = scan_topk(lambda lo, hi: scores[:, lo:hi], 5000, k, block_rows=block_rows)
        D_ref, I_ref = reference(scores, k)
        np.testing.assert_array_equal(I, I_ref)
        np.testing.assert_array_equal(D, D_ref)


def test_merge_topk_does_not_depend_on_which_table_comes_first():
    D1, I1 = np.array([[3.0, 1.0]], np.float32), np.array([[7, 2]])
    D2, I2 = np.array([[3.0, 2.0]], np.float32), np.array([[4, 9]])
    for a, b in (((D1, I1), (D2, I2)), ((D2, I2), (D1, I1))):
        D, I = merge_topk(*a, *b, 3)
        assert I.tolist() == [[4, 7, 9]] and D.tolist() == [[3.0, 3.0, 2.0]]


def test_exact_knn_over_many_row_blocks_and_query_chunks(monkeypatch):
    import semq_transforms.eval as ev
    rng = np.random.default_rng(3)
    x = rng.integers(-2, 3, (1000, 8)).astype(np.float32)     # many equal scores
    q = rng.integers(-2, 3, (37, 8)).astype(np.float32)
    expect = reference(q @ x.T, 25)
    monkeypatch.setattr(ev, "KNN_CHUNK_SCORES", 300)         # 300 // 16 = 18 < k: k rows
    monkeypatch.setattr(ev, "KNN_QUERY_CHUNK", 16)            # 3 query chunks, the last short
    D, I = exact_knn(q, x, 25)
    np.testing.assert_array_equal(I, expect[1])
    np.testing.assert_array_equal(D, expect[0])


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


def test_knn_intersections_count_each_query_as_sets():
    I1 = np.array([[1, 2, 3], [4, 4, 5], [-1, -1, 7]])
    I2 = np.array([[3, 2, 9], [4, 5, 6], [-1, 7, 8]])
    assert knn_intersections(I1, I2).tolist() == [2, 2, 1]   # repeats and padding: once, never
    assert knn_intersection_measure(I1, I2) == 5 / 9
