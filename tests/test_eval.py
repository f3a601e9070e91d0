"""semq_transforms.eval: top-k selection (ties by increasing id, whatever the partition does)
and exact search, against a stable full sort."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from semq_transforms.eval import exact_knn, topk


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
