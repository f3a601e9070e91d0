"""fit -> encode -> decode / score: shapes, dtypes, sizes, error bounds, degenerate inputs."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semq_transforms.codecs import SPECS, get_codec
from semq_transforms.codecs.block import BLOCK
from semq_transforms.levels import encode_levels

SEMQ_SPECS = tuple(s for s in SPECS if s.startswith("semq"))
EPS32 = float(np.finfo(np.float32).eps)
PROPERTY = settings(max_examples=25, deadline=None)


@st.composite
def datasets(draw):
    """A random float32 corpus [n, d] and queries [nq, d] at a random value scale."""
    n = draw(st.integers(1, 60))
    d = draw(st.integers(1, 70))
    nq = draw(st.integers(1, 4))
    scale = 10.0 ** draw(st.integers(-3, 3))
    offset = draw(st.sampled_from([0.0, 1.0, -3.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    axis_scales = np.exp(rng.uniform(-2, 0, d))   # anisotropic, like real embeddings
    x = ((rng.standard_normal((n, d)) * axis_scales + offset) * scale).astype(np.float32)
    q = (rng.standard_normal((nq, d)) * scale).astype(np.float32)
    return x, q


def offset_norm(params) -> float:
    """Norm of what a codec's score adds on top of ``<q, restored>``-sized terms, so the
    score-vs-decode tolerance scales with the cancellation the codec's formula involves."""
    a = params.arrays
    if "zero_point" in a:                        # int: (c - z) * s
        return float(np.linalg.norm(a["zero_point"] * a["scale"]) + np.linalg.norm(a["scale"])
                     * 256)
    return float(sum(np.linalg.norm(a[k]) for k in ("mean", "amplitude") if k in a))


def semq_score_factor(codec, codes) -> np.ndarray:
    """semq scores with ``s_score`` but restores with ``s_restore`` (the last 8 bytes of a code,
    two float32 LE): per row, the factor that turns ``<q, restored - mean>`` into the score."""
    scales = np.ascontiguousarray(codes[:, -8:]).view("<f4").astype(np.float64)
    return np.divide(scales[:, 0], scales[:, 1], out=np.zeros(len(codes)),
                     where=scales[:, 1] != 0)


def assert_score_matches_decode(codec, params, q, codes, rtol=5e-5):
    """score == q @ decode(codes).T; for semq, == <q, mean> + factor * <q, restored - mean>."""
    scores = codec.score(q, codes, params)
    restored = codec.decode(codes, params)
    expected = q.astype(np.float64) @ restored.astype(np.float64).T
    if codec.spec.startswith("semq"):
        at_mean = q.astype(np.float64) @ params["mean"].astype(np.float64)
        expected = at_mean[:, None] + semq_score_factor(codec, codes) * (expected
                                                                         - at_mean[:, None])
    room = (np.linalg.norm(q, axis=1)[:, None].astype(np.float64)
            * (np.linalg.norm(restored, axis=1)[None, :] + offset_norm(params)))
    excess = np.abs(scores - expected) - rtol * room
    assert excess.max() <= 1e-30, (
        f"{codec.spec}: score differs from q @ decode(codes).T by "
        f"{np.abs(scores - expected).max():.3g} (allowed {rtol} x scale)")


def run(codec, x, q):
    params = codec.fit(x)
    codes = codec.encode(x, params)
    return params, codes, codec.decode(codes, params), codec.score(q, codes, params)


def check_round_trip(codec, x, q):
    """Shapes, dtypes, finiteness and re-encode stability of one fit/encode/decode/score."""
    n, d = x.shape
    params, codes, restored, scores = run(codec, x, q)
    assert codes.shape == (n, codec.code_bytes(d)) and codes.dtype == np.uint8
    assert restored.shape == (n, d) and restored.dtype == np.float32
    assert scores.shape == (q.shape[0], n) and scores.dtype == np.float32
    assert np.isfinite(restored).all() and np.isfinite(scores).all()
    assert np.array_equal(codec.encode(x, params), codes)


# -- shapes, dtypes and sizes ------------------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS)
def test_shapes_and_dtypes(spec, aniso, aniso_queries):
    codec = get_codec(spec)
    n, d = aniso.shape
    params, codes, restored, scores = run(codec, aniso, aniso_queries)
    assert params.codec == spec and params.dim == d
    assert codes.dtype == np.uint8 and codes.shape == (n, codec.code_bytes(d))
    assert codes.flags.c_contiguous
    assert restored.dtype == np.float32 and restored.shape == (n, d)
    assert scores.dtype == np.float32 and scores.shape == (aniso_queries.shape[0], n)
    assert np.isfinite(restored).all() and np.isfinite(scores).all()


@pytest.mark.parametrize("spec", SPECS)
def test_score_equals_inner_product_with_decoded(spec, aniso, aniso_queries):
    codec = get_codec(spec)
    params = codec.fit(aniso)
    assert_score_matches_decode(codec, params, aniso_queries, codec.encode(aniso, params))


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("d", [1, 7, 8, 31, 32, 33, 64, 100, 384])
def test_bits_per_dim(spec, d):
    codec = get_codec(spec)
    assert codec.bits_per_dim(d) == codec.code_bytes(d) * 8 / d
    assert codec.code_bytes(d) >= 1


@pytest.mark.parametrize("spec", SPECS)
def test_float64_and_float16_inputs_match_float32(spec, aniso):
    codec = get_codec(spec)
    x = aniso[:100]
    params = codec.fit(x)
    assert codec.fit(x.astype(np.float64)) == params
    codes = codec.encode(x, params)
    assert np.array_equal(codec.encode(x.astype(np.float64), params), codes)
    x16 = x.astype(np.float16)
    assert np.array_equal(codec.encode(x16, params), codec.encode(x16.astype(np.float32), params))


@pytest.mark.parametrize("spec", SPECS)
def test_non_contiguous_input(spec, aniso):
    codec = get_codec(spec)
    x = np.asfortranarray(aniso[:64])
    params = codec.fit(np.ascontiguousarray(x))
    assert codec.fit(x) == params
    codes = codec.encode(np.ascontiguousarray(x), params)
    assert np.array_equal(codec.encode(x, params), codes)
    strided = np.repeat(codes, 2, axis=0)[::2]
    assert np.array_equal(codec.decode(strided, params), codec.decode(codes, params))


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("shape", [(1, 1), (1, 70), (2, 65), (5, 33), (10, 31), (60, 8),
                                   (3, 64), (7, 9)])
def test_explicit_edge_shapes(spec, shape):
    """Shapes the property test may not draw every time: n == 1, n < d, d off multiples of
    8 (bit packing) and 32 (blocks)."""
    rng = np.random.default_rng(sum(shape))
    x = rng.standard_normal(shape).astype(np.float32)
    q = rng.standard_normal((2, shape[1])).astype(np.float32)
    check_round_trip(get_codec(spec), x, q)


# -- properties over random shapes and scales ---------------------------------------------------

@pytest.mark.parametrize("spec", SPECS)
@PROPERTY
@given(data=datasets())
def test_property_round_trip(spec, data):
    x, q = data
    check_round_trip(get_codec(spec), x, q)


@pytest.mark.parametrize("spec", SPECS)
@PROPERTY
@given(data=datasets())
def test_property_score_matches_decode(spec, data):
    x, q = data
    codec = get_codec(spec)
    params = codec.fit(x)
    assert_score_matches_decode(codec, params, q, codec.encode(x, params))


@PROPERTY
@given(data=datasets())
def test_f16_relative_error(data):
    x, _ = data
    codec = get_codec("f16")
    _, _, restored, _ = run(codec, x, x[:1])
    # Round to nearest float16: relative error 2**-11 for normal values; below the float16
    # normal range (6.1e-5) the absolute spacing 2**-24 of the subnormals takes over.
    err = np.abs(x.astype(np.float64) - restored)
    assert (err <= 2.0**-10 * np.abs(x) + 2.0**-24).all(), err.max()


@pytest.mark.parametrize("spec", ["int8", "int4"])
@PROPERTY
@given(data=datasets())
def test_int_error_at_most_half_a_step(spec, data):
    x, _ = data
    codec = get_codec(spec)
    params, _, restored, _ = run(codec, x, x[:1])
    scale = params["scale"].astype(np.float64)
    zero_point = params["zero_point"].astype(np.float64)
    lo = -zero_point * scale
    hi = lo + (codec.levels - 1) * scale
    x64 = x.astype(np.float64)
    # float32 arithmetic inside encode/decode: a few ulps of every term involved.
    slack = 8 * EPS32 * (np.abs(x64) + np.abs(lo) + codec.levels * scale)
    inside = (x64 >= lo) & (x64 <= hi)
    err = np.abs(x64 - restored)
    assert (err <= scale / 2 + slack)[inside].all()
    # Values outside the fitted range restore to (about) the nearest end of the range.
    clipped = np.clip(x64, lo, hi)
    assert (np.abs(clipped - restored) <= scale / 2 + slack).all()


@pytest.mark.parametrize("spec", ["block8", "block4"])
@PROPERTY
@given(data=datasets())
def test_block_error_within_stored_scale(spec, data):
    x, _ = data
    codec = get_codec(spec)
    _, codes, restored, _ = run(codec, x, x[:1])
    n, d = x.shape
    nb = -(-d // BLOCK)
    # Layout (block.py): value bytes, then nb float16 scales, then nb float16 offsets.
    value_bytes = d if codec.bits == 8 else (d + 1) // 2
    side = np.ascontiguousarray(codes[:, value_bytes:]).view("<f2").astype(np.float64)
    assert side.shape == (n, 2 * nb)
    scale = np.repeat(np.abs(side[:, :nb]), BLOCK, axis=1)[:, :d]
    offset = np.repeat(side[:, nb:], BLOCK, axis=1)[:, :d]
    top = codec.levels - 1
    x64 = x.astype(np.float64)
    # Half a step, plus what float16 rounding of the offset (values below it clip to it) and of
    # the scale (the top of the block may clip, by up to `top` rounding errors) can add.
    bound = (scale / 2 + top * (scale * 2.0**-10 + 2.0**-24) + np.abs(offset) * 2.0**-10
             + 2.0**-24 + 8 * EPS32 * (np.abs(x64) + np.abs(offset) + top * scale))
    err = np.abs(x64 - restored)
    assert (err <= bound).all(), (err - bound).max()


@PROPERTY
@given(data=datasets())
def test_binary_restores_mean_plus_minus_amplitude(data):
    x, _ = data
    codec = get_codec("binary")
    params, _, restored, _ = run(codec, x, x[:1])
    mean, amplitude = params["mean"], params["amplitude"]
    assert (amplitude >= 0).all()
    expected = np.where(x > mean, mean + amplitude, mean - amplitude)
    assert np.array_equal(restored, expected)


# -- quality ordering --------------------------------------------------------------------------

def test_semq_error_decreases_with_bits(aniso):
    mse = {}
    for spec in SEMQ_SPECS:
        codec = get_codec(spec)
        params = codec.fit(aniso)
        restored = codec.decode(codec.encode(aniso, params), params)
        mse[codec.bits] = float(np.mean((aniso.astype(np.float64) - restored) ** 2))
    assert mse[1] > mse[2] > mse[4] > mse[8], mse
    assert all(mse[b] >= mse[b + 1] * 0.99 for b in range(1, 8)), mse


def test_semq_beats_binary_at_one_bit(aniso, aniso_queries):
    """semq1 spends side data to rank better than the plain sign code."""
    exact = aniso_queries @ aniso.T
    errors = {}
    for spec in ("binary", "semq1"):
        codec = get_codec(spec)
        params = codec.fit(aniso)
        scores = codec.score(aniso_queries, codec.encode(aniso, params), params)
        errors[spec] = float(np.mean((scores - exact) ** 2))
    assert errors["semq1"] < errors["binary"], errors


# -- degenerate inputs -------------------------------------------------------------------------

def _degenerate_cases():
    rng = np.random.default_rng(7)
    row = rng.standard_normal(40).astype(np.float32)
    constant_col = rng.standard_normal((30, 40)).astype(np.float32)
    constant_col[:, 5] = 0.25
    return {
        "identical_rows": np.tile(row, (25, 1)),
        "constant_column": constant_col,
        "one_row": row[None, :],
        "zeros": np.zeros((10, 40), np.float32),
        "one_dim": rng.standard_normal((20, 1)).astype(np.float32),
        "one_by_one": np.array([[0.5]], np.float32),
        "n_less_than_d": rng.standard_normal((3, 40)).astype(np.float32),
    }


DEGENERATE = _degenerate_cases()


@pytest.mark.parametrize("case", sorted(DEGENERATE))
@pytest.mark.parametrize("spec", SPECS)
def test_degenerate_inputs_stay_finite(spec, case):
    x = DEGENERATE[case]
    codec = get_codec(spec)
    params, codes, restored, scores = run(codec, x, x[:3])
    assert np.isfinite(restored).all() and np.isfinite(scores).all()
    assert restored.shape == x.shape and codes.shape[0] == x.shape[0]
    zeros = np.zeros((2, x.shape[1]), np.float32)
    zero_codes = codec.encode(zeros, params)
    assert np.isfinite(codec.decode(zero_codes, params)).all()
    assert np.isfinite(codec.score(x[:3], zero_codes, params)).all()
    assert np.isfinite(codec.score(zeros, codes, params)).all()


@pytest.mark.parametrize("spec", ["int8", "int4", "binary", *SEMQ_SPECS])
def test_identical_rows_restore_exactly(spec):
    """A shard of one repeated vector: codecs with fitted state hold it in their params."""
    x = DEGENERATE["identical_rows"]
    _, _, restored, _ = run(get_codec(spec), x, x[:1])
    assert np.array_equal(restored, x)


@pytest.mark.parametrize("spec", ["semq1", "semq4", "semq8"])
@pytest.mark.parametrize("magnitude", [1e-25, 1e-20, 1e15])
def test_semq_is_scale_equivariant(spec, magnitude, aniso):
    """Valid float32 data far from unit scale must code as well as the same data at unit scale
    (semq's direction/norm split is scale-free in exact arithmetic; the scaled input differs
    from the unit-scale one by float32 rounding, which can move a near-tied bit allocation)."""
    codec = get_codec(spec)
    x = aniso[:300]
    reference = _relative_error(codec, x)
    scaled = _relative_error(codec, (x.astype(np.float64) * magnitude).astype(np.float32))
    assert np.isfinite(scaled), f"{spec} restored NaN/Inf for data of magnitude {magnitude}"
    assert scaled <= reference * 1.05 + 1e-6, (spec, magnitude, scaled, reference)


@pytest.mark.parametrize("spec", ["semq1", "semq4", "semq8", "semqr4"])
@pytest.mark.parametrize("power", [-83, -66, 50])
def test_semq_codes_do_not_change_with_a_power_of_two_scale(spec, power, aniso):
    """Scaling by 2**power is exact, and so is every step of the fit and encode: the same
    codes, scales multiplied by exactly 2**power."""
    x = aniso[:300]
    chain = ["semq1", spec] if spec.startswith("semqr") else [spec]
    plain = encode_levels(x, chain)[-1]
    scaled = encode_levels(np.ldexp(x, power), chain)[-1]
    # semq: payload, s_score, s_restore; semqr: payload, scale index, s_score, gain (f16)
    start = plain.codes.shape[1] - (6 if spec.startswith("semqr") else 8)
    assert np.array_equal(plain.codes[:, :start], scaled.codes[:, :start])
    s_plain = np.ascontiguousarray(plain.codes[:, start:start + 4]).view("<f4")
    s_scaled = np.ascontiguousarray(scaled.codes[:, start:start + 4]).view("<f4")
    np.testing.assert_array_equal(np.ldexp(s_plain, power), s_scaled)


def _relative_error(codec, x):
    params = codec.fit(x)
    restored = codec.decode(codec.encode(x, params), params).astype(np.float64)
    x64 = x.astype(np.float64)
    return np.linalg.norm(x64 - restored) / np.linalg.norm(x64)


@pytest.mark.parametrize("spec", ["int8", "int4"])
@pytest.mark.parametrize("column", [[0.0, 1e-45], [0.0, 1e-44, 2e-44], [1.0, 1.0, 1.0]])
def test_int_params_from_fit_are_accepted_by_encode(spec, column):
    """Whatever valid input fit takes, the params it returns must be usable: a column whose
    range is tiny but non-zero must not produce a zero scale (and a NaN zero point)."""
    x = np.column_stack([np.array(column, np.float32), np.linspace(0, 1, len(column))])
    codec = get_codec(spec)
    params, _, restored, _ = run(codec, x.astype(np.float32), x[:1].astype(np.float32))
    assert (params["scale"] > 0).all() and np.isfinite(params["zero_point"]).all()
    assert np.abs(restored - x).max() <= params["scale"].max()


@pytest.mark.parametrize("spec", SPECS)
def test_score_candidates_with_no_candidates_is_empty(spec, aniso, aniso_queries):
    """c = 0 passed the shape check, then failed in a reshape with a raw numpy ValueError."""
    codec = get_codec(spec)
    params = codec.fit(aniso)
    width = codec.code_bytes(aniso.shape[1])
    out = codec.score_candidates(aniso_queries[:3], np.zeros((3, 0, width), np.uint8), params)
    assert out.shape == (3, 0) and out.dtype == np.float32


def test_decode_rows_names_a_row_out_of_range(aniso):
    from semq_transforms.errors import InvalidInputError
    from semq_transforms.levels import decode_rows, encode_levels

    levels = encode_levels(aniso[:60], ["semq1", "semq4"])
    with pytest.raises(InvalidInputError, match="60 rows"):
        decode_rows(levels, -1, np.array([0, 60]))


@pytest.mark.parametrize("chain", [(s,) for s in SPECS] + [("semq1", "semqr4"), ("semq2", "semqr3")])
def test_deterministic_scores_match_float_and_ignore_batching(chain, aniso, aniso_queries):
    """``deterministic=True`` (validation's scores): close to the BLAS scores, and each score
    the same bits whichever other rows and queries share the call (the scan scores blocks of
    rows; reranking scores candidates per query)."""
    from semq_transforms.codecs.base import BaseLevel

    levels = encode_levels(aniso, chain)
    lv = levels[-1]
    base = (BaseLevel(levels[0].codec, levels[0].params, levels[0].codes)
            if lv.codec.refines else None)
    q = aniso_queries[:9]
    fast = lv.codec.score(q, lv.codes, lv.params, base=base)
    det = lv.codec.score(q, lv.codes, lv.params, base=base, deterministic=True)
    scale = np.abs(fast).max()
    np.testing.assert_allclose(det, fast, atol=3e-5 * scale)   # 2**-20 row grids
    rows = np.array([5, 0, 17, 3])
    part_base = None if base is None else BaseLevel(base.codec, base.params, base.codes[rows])
    part = lv.codec.score(q[2:4], lv.codes[rows], lv.params, base=part_base,
                          deterministic=True)
    assert np.array_equal(part, det[2:4][:, rows])
    cand = np.random.default_rng(0).integers(0, aniso.shape[0], size=(9, 6))
    cand_base = None if base is None else BaseLevel(base.codec, base.params, base.codes[cand])
    picked = lv.codec.score_candidates(q, lv.codes[cand], lv.params, base=cand_base,
                                       deterministic=True)
    np.testing.assert_allclose(picked, np.take_along_axis(det, cand, axis=1),
                               atol=3e-5 * scale)
    alone = lv.codec.score_candidates(q[4:5], lv.codes[cand[4:5]], lv.params,
                                      base=None if base is None else BaseLevel(
                                          base.codec, base.params, base.codes[cand[4:5]]),
                                      deterministic=True)
    assert np.array_equal(alone, picked[4:5])
