"""The machine-independent arithmetic (codecs/exact.py) and eigensolver (codecs/eigen.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from semq_transforms.codecs.eigen import symmetric_eigh
from semq_transforms.codecs.exact import (
    column_sums,
    exact_inner_products,
    exact_matmul,
    exact_paired_products,
    exp2,
    fixed_point_rows,
    grid,
    log2,
    ordered_sum,
    row_norms,
)
from semq_transforms.eval import exact_knn


def test_ordered_sum_is_accurate_and_independent_of_layout():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((37, 300)) * np.exp(rng.standard_normal((37, 300)) * 3)
    by_row = ordered_sum(a, axis=1)
    for i in range(a.shape[0]):
        assert abs(by_row[i] - math.fsum(a[i])) <= 1e-12 * np.abs(a[i]).sum()
    # the same bits whatever the memory layout or axis the values come in
    assert np.array_equal(by_row, ordered_sum(np.asfortranarray(a), axis=1))
    assert np.array_equal(by_row, ordered_sum(a.T.copy(), axis=0))
    assert np.array_equal(by_row, ordered_sum(a[:, None, :], axis=-1)[:, 0])
    assert ordered_sum(np.zeros((3, 0)), axis=1).tolist() == [0.0, 0.0, 0.0]


def test_fixed_point_rows_are_integers_on_a_power_of_two_grid():
    rng = np.random.default_rng(1)
    a = rng.standard_normal((50, 40)) * 10.0 ** rng.integers(-30, 30, (50, 1))
    a[3] = 0.0
    a[7, :] = 1e-40                                  # denormal in float32
    ints, scale = fixed_point_rows(a, 20)
    assert np.array_equal(ints, np.rint(ints)) and np.abs(ints).max() <= 2 ** 20
    mant, _ = np.frexp(scale)
    assert (mant == 0.5).all()                       # powers of two
    err = np.abs(ints * scale[:, None] - a).max(axis=1)
    assert (err <= np.abs(a).max(axis=1) * 2.0 ** -20).all()
    assert (ints[3] == 0).all() and scale[3] == 1.0


def test_exact_matmul_refuses_sums_it_cannot_hold_exactly():
    with pytest.raises(ValueError, match="not exact"):
        exact_matmul(np.ones((1, 2)), np.ones((2, 1)), 2.0 ** 53)


def test_exact_products_ignore_blocking():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((20, 9000)), rng.standard_normal((5, 9000))
    got = exact_inner_products(a, b)      # d > 8191: blocked over columns
    np.testing.assert_allclose(got, a @ b.T, atol=1e-3 * np.sqrt(9000))
    assert np.array_equal(got[3:4], exact_inner_products(a[3:4], b))
    np.testing.assert_allclose(row_norms(a), np.linalg.norm(a, axis=1), rtol=1e-5)


def test_paired_products_are_the_diagonal_of_inner_products():
    rng = np.random.default_rng(5)
    for d in (48, 9000):                  # one block, and blocked over columns
        a, b = rng.standard_normal((6, d)), rng.standard_normal((6, 4, d))
        got = exact_paired_products(a, b)
        for i in range(6):
            assert np.array_equal(got[i], exact_inner_products(a[i:i + 1], b[i])[0])
        np.testing.assert_allclose(got, np.einsum("mk,mck->mc", a, b), atol=1e-3 * np.sqrt(d))


def test_deterministic_knn_breaks_exact_ties_by_id():
    """Coordinate permutations of a row tie exactly against a constant query; float sums of
    their terms in different orders do not (which copy wins depends on the BLAS kernel:
    Haswell and SkylakeX kernels ranked them differently). Deterministic scores tie exactly,
    so the lowest id comes first on every machine."""
    rng = np.random.default_rng(6)
    x = (rng.standard_normal((60, 384)) * rng.uniform(0.01, 3, 384)).astype(np.float32)
    copies = np.concatenate([x, x[:, ::-1], np.roll(x, 7, axis=1)])
    q = np.full((1, 384), 1 / np.sqrt(384), dtype=np.float32)
    D, I = exact_knn(q, copies, 30, deterministic=True)
    groups = I[0].reshape(10, 3)
    assert (groups % 60 == groups[:, :1] % 60).all()          # each copy group together...
    assert (np.diff(groups, axis=1) == 60).all()              # ...in increasing id order
    assert (D[0].reshape(10, 3) == D[0].reshape(10, 3)[:, :1]).all()
    np.testing.assert_allclose(D, exact_knn(q, copies, 30)[0], rtol=1e-5, atol=1e-5)


def test_grid_values_are_exact_in_float32():
    g = grid(np.random.default_rng(3).uniform(-1, 1, 1000))
    assert np.array_equal(g.astype(np.float32).astype(np.float64), g)


def test_exp2_and_log2_match_the_library_functions():
    x = np.random.default_rng(4).uniform(-300, 300, 10000)
    np.testing.assert_allclose(exp2(x), np.exp2(x), rtol=1e-15)
    y = np.exp2(x)
    np.testing.assert_allclose(log2(y), x, rtol=1e-15, atol=1e-13)
    assert exp2(np.arange(-5, 6.0)).tolist() == [2.0 ** i for i in range(-5, 6)]
    assert log2(np.array([0.25, 1.0, 1024.0])).tolist() == [-2.0, 0.0, 10.0]


@pytest.mark.parametrize("case", ["random", "rank3", "repeated", "zero", "one", "two",
                                  "diagonal", "graded", "tiny_shard"])
def test_symmetric_eigh_decomposes(case):
    rng = np.random.default_rng(5)
    n = 60
    if case == "random":
        g = rng.standard_normal((n, n))
        a = g + g.T
    elif case == "rank3":
        g = rng.standard_normal((3, n))
        a = g.T @ g
    elif case == "repeated":                          # eigenvalues 2 (x20), 5 (x40)
        q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        a = (q * np.r_[np.full(20, 2.0), np.full(40, 5.0)]) @ q.T
    elif case == "zero":
        a = np.zeros((n, n))
    elif case == "one":
        a = np.array([[3.0]])
    elif case == "two":
        a = np.array([[2.0, 1.0], [1.0, 2.0]])
    elif case == "tiny_shard":                        # 3 centered rows: a 57-fold null space
        g = rng.standard_normal((3, n))
        g -= g.mean(axis=0)
        a = g.T @ g
    elif case == "diagonal":
        a = np.diag(np.r_[np.zeros(10), np.ones(10), np.arange(40.0)])
    else:                                              # eigenvalues over 30 decades
        q, _ = np.linalg.qr(rng.standard_normal((n, n)))
        a = (q * 10.0 ** -np.linspace(0, 30, n)) @ q.T
    w, v = symmetric_eigh(a)
    size = a.shape[0]
    scale = max(float(np.abs(a).max()), 1.0)
    assert np.all(np.diff(w) >= 0)
    np.testing.assert_allclose(w, np.linalg.eigvalsh(a), atol=1e-12 * scale)
    # orthogonal to about eps * |a| / gap: eigenvalues near eps * |a| ("graded") less so
    np.testing.assert_allclose(v.T @ v, np.eye(size), atol=1e-7 if case == "graded" else 1e-9)
    np.testing.assert_allclose(a @ v, v * w, atol=1e-10 * scale)
    w2, v2 = symmetric_eigh(a.copy())
    assert np.array_equal(w, w2) and np.array_equal(v, v2)


def test_column_sums_are_ordered_sums_in_bounded_blocks():
    rng = np.random.default_rng(7)
    a = rng.standard_normal((5000, 7))
    assert np.array_equal(column_sums(a[:4096]), ordered_sum(a[:4096], axis=0))
    np.testing.assert_allclose(column_sums(a), [math.fsum(c) for c in a.T], atol=1e-10)
    got = column_sums(a, lambda rows: np.abs(rows - 1.0))
    np.testing.assert_allclose(got, np.abs(a - 1.0).sum(axis=0), rtol=1e-12)


@pytest.mark.parametrize(("spec", "limit"), [("binary", 1.0), ("int8", 2.0)])
def test_range_fits_hold_no_float64_copy_of_the_shard(spec, limit):
    """The outlier check, the binary means and int8's neighbor check work in blocks or on
    the sample: a tall shard's fit allocates at most ``limit`` times its float32 bytes (a
    float64 copy alone would be 2x; binary's fit allocated ~4.7x; int8's neighbor check
    made 3 score-sized temporaries, ~3x at this size)."""
    import tracemalloc

    from semq_transforms.codecs import get_codec
    x = np.random.default_rng(8).standard_normal((150_000, 64)).astype(np.float32)
    tracemalloc.start()
    try:
        get_codec(spec).fit(x)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= limit * x.nbytes, (spec, peak / x.nbytes)
