"""``semqr``: the entropy-coded refinement level (codecs/refine.py, codecs/huffman.py), and
refining levels through the shard format, the Index and the job's config."""

from __future__ import annotations

import io

import numpy as np
import pytest

from semq_transforms.build import build_index
from semq_transforms.codecs import (
    REFINING_SPECS,
    BaseLevel,
    CodecParams,
    get_codec,
    huffman,
    refine,
)
from semq_transforms.config import EncodeConfig
from semq_transforms.errors import (
    CodecConfigError,
    CodesMismatchError,
    FormatError,
    InvalidInputError,
    ParamsError,
)
from semq_transforms.eval import exact_knn, recall_at_k
from semq_transforms.format.shard import read_shard
from semq_transforms.index import Index
from semq_transforms.levels import decode_rows, encode_levels
from tests.shard_helpers import rewrite, shard_bytes


def _data(n=2000, d=48, seed=0):
    rng = np.random.default_rng(seed)
    spectrum = np.exp(-np.arange(d) / 8.0)
    x = (rng.standard_normal((n, d)) * spectrum + 0.3).astype(np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def fitted():
    x = _data()
    scan = get_codec("semq1")
    scan_params = scan.fit(x)
    base = BaseLevel(scan, scan_params, scan.encode(x, scan_params))
    codec = get_codec("semqr3")
    params = codec.fit(x, base=base)
    return x, base, codec, params, codec.encode(x, params, base=base)


def test_huffman_pack_unpack_round_trip():
    rng = np.random.default_rng(1)
    counts = [rng.integers(1, 1000, size=m).astype(float) for m in (2, 5, 17, 300)]
    lengths = np.concatenate([huffman.code_lengths(c) for c in counts])
    sizes = np.array([c.shape[0] for c in counts])
    assert huffman.kraft_complete(lengths, sizes).all()
    book = huffman.CodeBook.build(lengths, sizes)
    tables = rng.integers(0, 4, size=(64, 30))
    symbols = rng.integers(0, 1 << 30, size=tables.shape) % sizes[tables]
    nbytes = int(book.lengths[book.starts[tables] + symbols].sum(axis=1).max() + 7) // 8
    packed = huffman.pack(book, tables, symbols, nbytes)
    back, used = huffman.unpack(book, tables, packed)
    np.testing.assert_array_equal(back, symbols)
    np.testing.assert_array_equal(used, book.lengths[book.starts[tables] + symbols].sum(axis=1))


def test_huffman_lengths_are_optimal_for_dyadic_counts():
    np.testing.assert_array_equal(huffman.code_lengths(np.array([8.0, 4, 2, 1, 1])),
                                  [1, 2, 3, 4, 4])


def test_refinement_beats_its_base_and_a_plain_rerank_level_of_its_size(fitted):
    x, base, codec, params, codes = fitted
    q = _data(200, seed=5)
    gt = exact_knn(q, x, 10)[1]

    def recall(scores):
        return recall_at_k(np.argsort(-scores, axis=1, kind="stable")[:, :10], gt, 10)

    fine = recall(codec.score(q, codes, params, base=base))
    scan = recall(base.codec.score(q, base.codes, base.params))
    plain = get_codec("semq3")   # the plain rerank level semq1 + semq3: 14 + 26 bytes a row,
    assert plain.code_bytes(48) == codec.code_bytes(48) + 1   # semq1 + semqr3: 14 + 25
    plain_params = plain.fit(x)
    same_size = recall(plain.score(q, plain.encode(x, plain_params), plain_params))
    assert fine > scan + 0.1
    assert fine > same_size
    restored = codec.decode(codes, params, base=base)
    coarse = base.codec.decode(base.codes, base.params)
    assert np.linalg.norm(restored - x) < 0.5 * np.linalg.norm(coarse - x)


def test_score_candidates_equals_score(fitted):
    x, base, codec, params, codes = fitted
    q = _data(7, seed=3)
    rows = np.random.default_rng(0).integers(0, x.shape[0], size=(7, 11))
    full = codec.score(q, codes, params, base=base)
    some = codec.score_candidates(q, codes[rows], params,
                                  base=BaseLevel(base.codec, base.params, base.codes[rows]))
    np.testing.assert_allclose(some, np.take_along_axis(full, rows, axis=1), rtol=1e-5,
                               atol=1e-6)


def test_every_row_gets_a_refinement_and_codes_fit_their_size(fitted):
    x, _, codec, _params, codes = fitted
    assert codes.shape == (x.shape[0], codec.code_bytes(x.shape[1]))
    scale_index = codes[:, codec.code_bytes(x.shape[1]) - 7]
    assert (scale_index > 0).all()      # 0 would mean "base cell centers only"


@pytest.mark.parametrize("rows", [1, 2, 3, 5, 10])
@pytest.mark.parametrize("specs", [["semq1", "semqr4"], ["semq2", "semqr3"]])
def test_a_shard_of_a_few_rows_fits_bounded_tables(rows, specs):
    # A job's last shard can hold a handful of rows. The rate model then has only a few axes
    # with any spread to spend the payload on: uncapped, their steps shrank without bound
    # and the tables with them (the fit asked for tebibytes, or ran for many minutes).
    x = _data(n=rows, d=32, seed=rows)
    scan, fine = encode_levels(x, specs)
    sizes = fine.params["table_size"]
    assert int(sizes.sum()) <= refine.MAX_SYMBOLS
    assert float(fine.params["step"].min()) > 0
    restored = fine.codec.decode(fine.codes, fine.params,
                                 base=BaseLevel(scan.codec, scan.params, scan.codes))
    assert np.isfinite(restored).all()
    # rows whose symbols do not fit any scale fall back to the base cells (scale index 0,
    # restored with the refinement's own scales): never notably worse than the base
    base_error = np.linalg.norm(scan.codec.decode(scan.codes, scan.params) - x)
    # (a shard of a row or two is restored almost exactly by both levels: what is left is
    # the float16 basis' rounding, ~2**-12 of the rows' norm, which can differ between them)
    floor = 2.0 ** -10 * np.linalg.norm(x)
    assert np.linalg.norm(restored - x) <= 1.01 * base_error + floor


def test_deterministic_and_independent_of_batching(fitted):
    x, base, codec, params, codes = fitted
    again = codec.fit(x, base=base)
    assert again.to_bytes() == params.to_bytes()
    parts = [codec.encode(x[a:b], params, base=BaseLevel(base.codec, base.params,
                                                         base.codes[a:b]))
             for a, b in ((0, 3), (3, 1500), (1500, x.shape[0]))]
    np.testing.assert_array_equal(np.concatenate(parts), codes)


def test_rows_too_small_for_float32_reciprocals_encode():
    """A shard of finite, non-zero rows of denormal values (~1e-40: 1 / norm overflows
    float32): they encode (the unit direction is taken in float64), deterministically and
    independently of batching, and decode to finite rows pointing their way."""
    x = _data(n=300, d=16, seed=4) * np.float32(1e-40)
    assert np.isfinite(x).all() and x.any(axis=1).all()
    scan, fine = encode_levels(x, ["semq1", "semqr4"])
    for rows in (slice(7, 8), slice(0, 100)):
        part = fine.codec.encode(x[rows], fine.params,
                                 base=BaseLevel(scan.codec, scan.params, scan.codes[rows]))
        np.testing.assert_array_equal(part, fine.codes[rows])
    restored = fine.codec.decode(fine.codes, fine.params, base=BaseLevel(
        scan.codec, scan.params, scan.codes)).astype(np.float64)
    assert np.isfinite(restored).all()
    cos = np.einsum("ij,ij->i", restored, x) / (
        np.linalg.norm(restored, axis=1) * np.linalg.norm(x.astype(np.float64), axis=1))
    assert cos.min() > 0.5


def test_refinement_does_not_depend_on_the_scale_of_the_vectors():
    """The same directions at norms 1e-20 ... 1e10 refine alike (the refinement codes unit
    directions; its step constant was searched in a fixed range against weights that grow
    with the squared norm, so at 1e10 or 1e-20 the level added nothing)."""
    x = _data(n=600, d=24, seed=9)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    rows = np.arange(x.shape[0])

    def mean_cos(levels, level, scaled):
        r = decode_rows(levels, level, rows).astype(np.float64)
        return float(np.mean(np.einsum("ij,ij->i", r, scaled) / (
            np.linalg.norm(r, axis=1) * np.linalg.norm(scaled, axis=1))))

    unit = encode_levels(x, ["semq1", "semqr4"])
    base_cos, fine_cos = mean_cos(unit, 0, x), mean_cos(unit, 1, x)
    assert fine_cos > base_cos + 0.02
    for scale in (1e-20, 1e-3, 1e3, 1e10):
        scaled = (x.astype(np.float64) * scale).astype(np.float32)
        levels = encode_levels(scaled, ["semq1", "semqr4"])
        assert mean_cos(levels, 1, scaled) == pytest.approx(fine_cos, abs=2e-3), scale


def test_base_is_required_checked_and_must_match(fitted):
    x, base, codec, params, codes = fitted
    with pytest.raises(CodecConfigError, match="refines the level before it"):
        codec.encode(x, params)
    with pytest.raises(CodecConfigError, match="does not refine"):
        base.codec.encode(x, base.params, base=base)
    other = get_codec("int8")
    other_params = other.fit(x)
    with pytest.raises(CodecConfigError, match="cannot refine"):
        codec.decode(codes, params, base=BaseLevel(other, other_params,
                                                   other.encode(x, other_params)))
    refit = base.codec.fit(x[:1000])       # a different base: its params digest differs
    with pytest.raises(ParamsError, match="digest"):
        codec.decode(codes, params, base=BaseLevel(base.codec, refit, base.codes))
    with pytest.raises(CodesMismatchError, match="rows"):
        codec.decode(codes, params, base=BaseLevel(base.codec, base.params, base.codes[:5]))


def test_hostile_params_are_refused(fitted):
    _, base, codec, params, codes = fitted
    arrays = dict(params.arrays)
    lengths = arrays["lengths"].copy()
    lengths[0] = min(int(lengths[0]) + 1, huffman.MAX_CODE_BITS)  # no longer complete
    if lengths[0] == params["lengths"][0]:
        lengths[0] -= 1
    bad = CodecParams(params.codec, params.dim, {**arrays, "lengths": lengths})
    with pytest.raises(ParamsError, match="complete prefix code"):
        codec.check_params(bad)
    sizes = arrays["table_size"].copy()
    sizes[0] = refine.MAX_SYMBOLS + 1
    oversized = CodecParams(params.codec, params.dim, {**arrays, "table_size": sizes})
    with pytest.raises(ParamsError, match="table symbols"):
        codec.check_params(oversized)
    short = CodecParams(params.codec, params.dim, {
        **arrays, "table_size": arrays["table_size"][:-1], "table_lo": arrays["table_lo"][:-1]})
    with pytest.raises(ParamsError):
        codec.decode(codes, short, base=base)


def test_corrupt_codes_decode_or_raise_a_typed_error(fitted):
    x, base, codec, params, codes = fitted
    rng = np.random.default_rng(7)
    noisy = codes[:300].copy()
    payload = codec.code_bytes(x.shape[1]) - 7
    noisy[:, :payload] = rng.integers(0, 256, size=(300, payload), dtype=np.uint8)
    try:
        out = codec.decode(noisy, params, base=BaseLevel(base.codec, base.params,
                                                         base.codes[:300]))
    except CodesMismatchError as exc:
        assert "run past" in str(exc)
    else:
        assert out.shape == (300, x.shape[1])


@pytest.mark.parametrize("spec", REFINING_SPECS)
def test_spec_round_trip(spec):
    assert get_codec(spec).spec == spec
    assert get_codec(get_codec(spec).get_config()).spec == spec


def test_level_order_is_checked_in_encode_levels_and_config():
    x = _data(300, 16)
    with pytest.raises(InvalidInputError, match="first level"):
        encode_levels(x, ["semqr4"])
    with pytest.raises(InvalidInputError, match="after a int8 level"):
        encode_levels(x, ["int8", "semqr4"])
    with pytest.raises(ValueError, match="first level"):
        EncodeConfig(codecs=["semqr4", "semq1"])
    assert EncodeConfig(codecs=["semq1", "semqr4"]).codecs == ["semq1", "semqr4"]


def test_shard_round_trip_and_a_swapped_level_order_is_refused():
    x = _data(400, 24)
    levels = encode_levels(x, ["semq2", "semqr2"])
    data = shard_bytes(np.arange(400, dtype=np.int64), levels)
    shard = read_shard(io.BytesIO(data))
    assert shard.codecs == ("semq2", "semqr2")
    np.testing.assert_array_equal(shard.levels[1].codes, levels[1].codes)

    def swap(header):
        header["levels"].reverse()
        for i, level in enumerate(header["levels"]):
            level["column"] = f"codes_{i}"
    with pytest.raises(FormatError):
        read_shard(io.BytesIO(rewrite(data, edit_header=swap)))


def test_index_search_and_restore_use_the_refinement(tmp_path):
    x = _data(3000, 32, seed=2)
    q = _data(100, 32, seed=9)
    gt = exact_knn(q, x, 10)[1]
    results = {}
    for name, codecs in (("scan", ["semq1"]), ("refined", ["semq1", "semqr3"])):
        url = f"memory://refine-test/{tmp_path.name}/{name}"
        build_index(url, x, codecs=codecs, rows_per_shard=1000)
        index = Index.open(url)
        assert index.verify().ok
        results[name] = recall_at_k(index.search(q, 10)[1], gt, 10)
        restored = np.concatenate([v for _, v in index.restore()])
        results[name + "_error"] = float(np.linalg.norm(restored - x))
    assert results["refined"] > results["scan"] + 0.1
    assert results["refined_error"] < 0.5 * results["scan_error"]
