"""CodecParams: exact round trips, immutability, and safe parsing of corrupt blobs."""

from __future__ import annotations

import dataclasses
import json
import math
import struct
import tracemalloc

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from semq_transforms.codecs import SPECS, CodecParams, get_codec
from semq_transforms.codecs.params import PARAMS_MAGIC
from semq_transforms.errors import ParamsError

HEADER = struct.Struct("<8sI")
#: Specs whose params hold arrays (f16 and block* record only the dimension).
WITH_ARRAYS = tuple(s for s in SPECS if s not in ("f16", "block4", "block8"))


@pytest.fixture(scope="module")
def fitted(aniso):
    """spec -> params fitted on the first 300 rows of the synthetic corpus."""
    return {spec: get_codec(spec).fit(aniso[:300]) for spec in SPECS}


@pytest.fixture(scope="module")
def small_blob():
    """A short real blob (int8 on d=3): small enough to truncate at every length."""
    x = np.array([[0.0, 1.0, -2.0], [1.0, 0.5, 3.0], [0.25, -1.0, 0.0]], np.float32)
    return get_codec("int8").fit(x).to_bytes()


def blob(header, body=b"", magic=PARAMS_MAGIC):
    head = header if isinstance(header, bytes) else json.dumps(header).encode()
    return HEADER.pack(magic, len(head)) + head + body


def entry(name="mean", dtype="<f4", shape=(4,), offset=0, nbytes=None):
    """One header entry; ``nbytes`` defaults to what a float32 array of ``shape`` needs."""
    if nbytes is None:
        nbytes = 4 * int(math.prod(shape)) if isinstance(shape, tuple) else 16
    return {"name": name, "dtype": dtype, "shape": list(shape) if isinstance(shape, tuple)
            else shape, "offset": offset, "nbytes": nbytes}


def header(*entries, codec="binary", dim=4):
    return {"codec": codec, "dim": dim, "arrays": list(entries)}


# -- round trips -------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS)
def test_bytes_round_trip(spec, fitted):
    params = fitted[spec]
    data = params.to_bytes()
    assert data.startswith(PARAMS_MAGIC)
    back = CodecParams.from_bytes(data)
    assert back == params and hash(back) == hash(params)
    assert back.to_bytes() == data
    assert back.digest() == params.digest()
    assert CodecParams.from_bytes(bytearray(data)) == params
    assert CodecParams.from_bytes(memoryview(data)) == params
    for name, arr in params.arrays.items():
        assert back[name].dtype == arr.dtype and np.array_equal(back[name], arr)


@pytest.mark.parametrize("spec", SPECS)
def test_json_round_trip(spec, fitted):
    params = fitted[spec]
    text = json.dumps(params.to_json())
    back = CodecParams.from_json(json.loads(text))
    assert back == params
    assert back.to_bytes() == params.to_bytes()
    assert back.digest() == params.digest()
    assert json.dumps(back.to_json()) == text


@pytest.mark.parametrize("spec", SPECS)
def test_round_tripped_params_code_identically(spec, fitted, aniso):
    codec, params = get_codec(spec), fitted[spec]
    back = CodecParams.from_bytes(params.to_bytes())
    assert np.array_equal(codec.encode(aniso[:50], back), codec.encode(aniso[:50], params))


def test_digest_identifies_the_fit(fitted):
    digests = {p.digest() for p in fitted.values()}
    assert len(digests) == len(SPECS)
    assert all(len(d) == 64 and int(d, 16) >= 0 for d in digests)


def test_params_are_immutable(fitted):
    params = fitted["semq4"]
    for arr in params.arrays.values():
        assert not arr.flags.writeable
        with pytest.raises(ValueError):
            arr[...] = 0
    with pytest.raises(TypeError):
        params.arrays["mean"] = np.zeros(64, np.float32)
    with pytest.raises(dataclasses.FrozenInstanceError):
        params.dim = 3


def test_params_copy_their_input():
    mean = np.arange(4, dtype=np.float32)
    params = CodecParams(codec="binary", dim=4, arrays={"mean": mean, "amplitude": mean + 1})
    mean[:] = -1
    assert np.array_equal(params["mean"], np.arange(4, dtype=np.float32))


def test_big_endian_input_is_stored_little_endian():
    values = np.arange(4, dtype=">f4")
    params = CodecParams(codec="x", dim=4, arrays={"a": values})
    assert params["a"].dtype.str == "<f4"
    assert np.array_equal(params["a"], values)
    assert CodecParams.from_bytes(params.to_bytes()) == params


def test_missing_array_lookup_names_what_exists(fitted):
    with pytest.raises(ParamsError, match="basis"):
        fitted["binary"]["basis"]


@pytest.mark.parametrize("bad", [
    {"codec": "", "dim": 4},
    {"codec": None, "dim": 4},
    {"codec": "f16", "dim": 0},
    {"codec": "f16", "dim": True},
    {"codec": "f16", "dim": 4.0},
    {"codec": "f16", "dim": 4, "arrays": {"a": np.zeros(2, np.complex64)}},
    {"codec": "f16", "dim": 4, "arrays": {"a": np.zeros(2, bool)}},
    {"codec": "f16", "dim": 4, "arrays": {"a": np.array([None])}},
])
def test_constructor_rejects_bad_fields(bad):
    with pytest.raises(ParamsError):
        CodecParams(**bad)


# -- corrupt blobs -----------------------------------------------------------------------------

def test_every_truncation_raises_params_error(small_blob):
    for length in range(len(small_blob)):
        with pytest.raises(ParamsError):
            CodecParams.from_bytes(small_blob[:length])


def test_trailing_bytes(small_blob):
    with pytest.raises(ParamsError, match="trailing"):
        CodecParams.from_bytes(small_blob + b"\x00")


def test_bad_magic(small_blob):
    with pytest.raises(ParamsError, match="magic"):
        CodecParams.from_bytes(b"NOTSEMQ!" + small_blob[8:])


def test_newer_version_names_the_version(small_blob):
    with pytest.raises(ParamsError, match="version") as info:
        CodecParams.from_bytes(b"SEMQPRM2" + small_blob[8:])
    assert "2" in str(info.value)


def test_header_length_past_end(small_blob):
    _, head_len = HEADER.unpack_from(small_blob)
    for bad_len in (len(small_blob), head_len + 10**6, 2**32 - 1):
        with pytest.raises(ParamsError, match="header length"):
            CodecParams.from_bytes(HEADER.pack(PARAMS_MAGIC, bad_len) + small_blob[12:])


@pytest.mark.parametrize("head", [b"not json", b"\xff\xfe\x00", b"[]", b"{}", b"null", b"3"])
def test_header_not_a_params_object(head):
    with pytest.raises(ParamsError):
        CodecParams.from_bytes(blob(head))


def test_huge_shape_does_not_allocate():
    cases = [
        header(entry(shape=(2**40,))),
        header(entry(shape=(2**20, 2**20, 2**20))),
        header(entry(shape=(2**62, 2**62))),
        header(entry(shape=(2**20,))),      # plausible size, but the body is empty
    ]
    tracemalloc.start()
    try:
        for head in cases:
            with pytest.raises(ParamsError):
                CodecParams.from_bytes(blob(head))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20, f"parsing corrupt headers allocated {peak} bytes"


@pytest.mark.parametrize("bad_entry", [
    entry(nbytes=15),                                    # nbytes does not match the shape
    entry(nbytes=20),
    entry(offset=4),                                     # gap before the array
    entry(shape=(-4,)),
    entry(nbytes=-16),
    entry(offset=-1),
    entry(shape=(True, 4), nbytes=16),
    entry(nbytes=True),
    entry(offset=False),
    entry(shape=(4.0,)),
    entry(shape="4"),
    entry(shape=(1, 1, 1, 1, 4)),                        # more than 4 axes
    entry(dtype="<f2", nbytes=8),                        # dtype not allowed
    entry(dtype="|O"),
    entry(name=""),
    entry(name=3),
    "mean",
])
def test_bad_entries(bad_entry):
    with pytest.raises(ParamsError):
        CodecParams.from_bytes(blob(header(bad_entry), b"\x00" * 16))


def test_duplicate_names():
    head = header(entry(), entry(offset=16))
    with pytest.raises(ParamsError, match="twice"):
        CodecParams.from_bytes(blob(head, b"\x00" * 32))


def test_overlapping_arrays():
    head = header(entry(name="mean"), entry(name="amplitude", offset=0))
    with pytest.raises(ParamsError):
        CodecParams.from_bytes(blob(head, b"\x00" * 32))


@pytest.mark.parametrize("bad", [
    {"codec": "binary", "dim": 4},                            # keys missing
    {"codec": "binary", "dim": 4, "arrays": [], "extra": 1},  # unknown key
    {"codec": "binary", "dim": 4, "arrays": {}},
    {"codec": 7, "dim": 4, "arrays": []},
    {"codec": "binary", "dim": -4, "arrays": []},
    {"codec": "binary", "dim": 1.5, "arrays": []},
])
def test_bad_header_fields(bad):
    with pytest.raises(ParamsError):
        CodecParams.from_bytes(blob(bad))


def test_unhashable_dtype_in_header():
    """The reader must check JSON types before using a value as a dict key."""
    for bad_dtype in ([], {}, ["<f4"]):
        with pytest.raises(ParamsError):
            CodecParams.from_bytes(blob(header(entry(dtype=bad_dtype)), b"\x00" * 16))


def test_unhashable_dtype_in_json():
    obj = {"codec": "binary", "dim": 4,
           "arrays": [{"name": "mean", "dtype": ["<f4"], "shape": [4], "nbytes": 16,
                       "data": "AAAAAAAAAAAAAAAAAAAAAA=="}]}
    with pytest.raises(ParamsError):
        CodecParams.from_json(obj)


def test_deeply_nested_header():
    """A 1 MiB header is accepted by length; nesting it deeply must not escape as
    RecursionError."""
    with pytest.raises(ParamsError):
        CodecParams.from_bytes(blob(b"[" * 200_000))


def test_integer_with_too_many_digits_in_header():
    """Python refuses to parse ints over 4300 digits with a plain ValueError."""
    head = b'{"codec":"f16","dim":' + b"9" * 5000 + b',"arrays":[]}'
    with pytest.raises(ParamsError):
        CodecParams.from_bytes(blob(head))


@settings(max_examples=60, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)),
                      min_size=1, max_size=4))
def test_flipped_bytes_never_escape_as_other_errors(flips, semq4_blob):
    data = bytearray(semq4_blob)
    for position, xor in flips:
        data[position % len(data)] ^= xor
    try:
        params = CodecParams.from_bytes(bytes(data))
    except ParamsError:
        return
    back = CodecParams.from_bytes(params.to_bytes())
    assert back == params and back.to_bytes() == params.to_bytes()


@settings(max_examples=60, deadline=None)
@given(flips=st.lists(st.tuples(st.integers(0, 10**6), st.integers(1, 255)),
                      min_size=1, max_size=4))
def test_flipped_header_bytes_never_escape_as_other_errors(flips, semq4_blob):
    """The same, aiming at the JSON header, where a flip changes structure, not values."""
    _, head_len = HEADER.unpack_from(semq4_blob)
    data = bytearray(semq4_blob)
    for position, xor in flips:
        data[HEADER.size + position % head_len] ^= xor
    try:
        params = CodecParams.from_bytes(bytes(data))
    except ParamsError:
        return
    assert CodecParams.from_bytes(params.to_bytes()) == params


@pytest.fixture(scope="module")
def semq4_blob(fitted):
    return fitted["semq4"].to_bytes()


# -- corrupt JSON ------------------------------------------------------------------------------

@pytest.mark.parametrize("bad", [
    None, [], "params",
    {"codec": "binary", "dim": 4},
    {"codec": "binary", "dim": 4, "arrays": [{"name": "mean"}]},
    {"codec": "binary", "dim": 4, "arrays": [{"name": "mean", "data": "!!!"}]},
    {"codec": "binary", "dim": 4, "arrays": [{"name": "mean", "data": "é"}]},
    {"codec": "binary", "dim": 4, "arrays": [{**entry(), "data": "AAAA"}]},   # 3 bytes, not 16
])
def test_bad_json(bad):
    with pytest.raises(ParamsError):
        CodecParams.from_json(bad)


# -- params that do not belong to the codec ----------------------------------------------------

def _replace(params, **arrays):
    merged = {**params.arrays, **arrays}
    return CodecParams(codec=params.codec, dim=params.dim,
                       arrays={k: v for k, v in merged.items() if v is not None})


def test_params_of_another_codec(fitted, aniso):
    with pytest.raises(ParamsError, match="int8"):
        get_codec("semq4").encode(aniso[:5], fitted["int8"])
    with pytest.raises(ParamsError):
        get_codec("semq4").decode(np.zeros((1, 36), np.uint8), fitted["semq5"])
    with pytest.raises(ParamsError):
        get_codec("int4").score(aniso[:1], np.zeros((1, 32), np.uint8), fitted["int8"])
    with pytest.raises(ParamsError):
        get_codec("f16").encode(aniso[:5], "f16")


@pytest.mark.parametrize("spec", WITH_ARRAYS)
def test_params_with_the_wrong_dim(spec, fitted, aniso):
    params = fitted[spec]
    wrong = CodecParams(codec=spec, dim=32, arrays=params.arrays)
    with pytest.raises(ParamsError):
        get_codec(spec).encode(aniso[:5, :32], wrong)


@pytest.mark.parametrize("spec", SPECS)
def test_missing_and_extra_arrays(spec, fitted, aniso):
    params, codec = fitted[spec], get_codec(spec)
    extra = _replace(params, surprise=np.zeros(3, np.float32))
    with pytest.raises(ParamsError):
        codec.encode(aniso[:5], extra)
    for name in params.arrays:
        with pytest.raises(ParamsError, match=name):
            codec.encode(aniso[:5], _replace(params, **{name: None}))


@pytest.mark.parametrize("spec", WITH_ARRAYS)
@pytest.mark.parametrize("bad_value", [np.nan, np.inf, -np.inf])
def test_non_finite_params_array(spec, bad_value, fitted):
    params, codec = fitted[spec], get_codec(spec)
    floats = [k for k, v in params.arrays.items() if v.dtype.kind == "f"]
    assert floats
    for name in floats:
        arr = params[name].copy()
        arr.flat[0] = bad_value
        with pytest.raises(ParamsError, match="NaN or Inf"):
            codec.decode(np.zeros((1, codec.code_bytes(64)), np.uint8),
                         _replace(params, **{name: arr}))


@pytest.mark.parametrize("spec", SPECS)
def test_params_array_with_wrong_dtype(spec, fitted, aniso):
    params, codec = fitted[spec], get_codec(spec)
    for name, arr in params.arrays.items():
        other = arr.astype(np.float64 if arr.dtype != np.float64 else np.float32)
        with pytest.raises(ParamsError, match="dtype"):
            codec.encode(aniso[:5], _replace(params, **{name: other}))


SEMQ_CORRUPTIONS = ("width sum", "increasing width", "zero width", "width > 12", "step <= 0",
                    "basis shape", "step shape", "2-D width")


@pytest.mark.parametrize("corruption", SEMQ_CORRUPTIONS)
def test_semq_params_consistency_checks(corruption, fitted, aniso):
    params, codec = fitted["semq4"], get_codec("semq4")
    width, step, basis = params["width"], params["step"], params["basis"]
    assert width[0] > width[-1], "the fixture should give unequal widths"
    arrays = {
        "width sum": {"width": np.concatenate([width, [1]]).astype(np.uint8),
                      "step": np.concatenate([step, [0.1]]).astype(np.float32),
                      "basis": np.concatenate([basis, basis[:, :1]], axis=1)},
        "increasing width": {"width": np.sort(width)},
        "zero width": {"width": np.where(np.arange(width.size) == 0, 0, width).astype(np.uint8)},
        "width > 12": {"width": np.full_like(width, 13)},
        "step <= 0": {"step": -step},
        "basis shape": {"basis": basis[:-1]},
        "step shape": {"step": step[:-1]},
        "2-D width": {"width": width[None, :]},
    }[corruption]
    with pytest.raises(ParamsError):
        codec.encode(aniso[:5], _replace(params, **arrays))


@pytest.mark.parametrize("spec", ["int8", "int4"])
def test_int_scale_must_be_positive(spec, fitted, aniso):
    params, codec = fitted[spec], get_codec(spec)
    scale = params["scale"].copy()
    scale[3] = 0.0
    with pytest.raises(ParamsError, match="scale"):
        codec.encode(aniso[:5], _replace(params, scale=scale))


@pytest.mark.parametrize(("spec", "name", "value"), [
    ("int8", "scale", 3e38), ("int4", "zero_point", -1e30), ("binary", "amplitude", 3e38),
    ("binary", "mean", 1e20), ("semq4", "mean", 1e18), ("semq4", "step", 1e-45),
    ("semq1", "step", 1e-35),
])
def test_params_restoring_to_inf_are_refused(spec, name, value, aniso):
    """Finite, positive params a writer can forge with their digests recomputed: a scale of
    3e38 restored and scored to Inf, a step of 1e-45 encoded from NaN. Refused by
    check_params: beyond any fit (2 x the largest value encoded), or a step whose reciprocal
    is not a normal float32."""
    codec = get_codec(spec)
    params = codec.fit(aniso)
    arrays = {k: np.array(v) for k, v in params.arrays.items()}
    arrays[name] = np.full_like(arrays[name], value)
    forged = CodecParams.from_bytes(CodecParams(codec=params.codec, dim=params.dim,
                                                arrays=arrays).to_bytes())
    with pytest.raises(ParamsError, match=name):
        codec.check_params(forged)
    with pytest.raises(ParamsError):
        codec.decode(codec.encode(aniso, params), forged)


def test_semq_bases_must_hold_unit_columns(aniso):
    """Encoding multiplies the basis as integers on a 2**-20 grid, exact only for columns of
    norm <= ~1: params with a longer column (edited, digests recomputed) are refused."""
    from semq_transforms.levels import encode_levels
    scan, fine = encode_levels(aniso[:500], ["semq1", "semqr4"])
    for level, name in ((scan, "basis"), (fine, "extra_basis")):
        arrays = dict(level.params.arrays)
        arrays[name] = arrays[name].copy()
        arrays[name][:, 0] *= np.float32(1.01)
        edited = CodecParams(codec=level.params.codec, dim=level.params.dim, arrays=arrays)
        with pytest.raises(ParamsError, match="unit vectors"):
            level.codec.check_params(edited)
        level.codec.check_params(level.params)
