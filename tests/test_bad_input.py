"""Bad inputs raise the typed errors of semq_transforms.errors, with messages naming what was
expected and what was received."""

from __future__ import annotations

import numpy as np
import pytest

from semq_transforms.codecs import SPECS, get_codec
from semq_transforms.codecs.base import FitCache
from semq_transforms.errors import (
    CodecConfigError,
    CodesMismatchError,
    EmptyInputError,
    InputDtypeError,
    InputShapeError,
    InvalidInputError,
    NonFiniteError,
    OutOfRangeError,
    ParamsError,
    SemqError,
    UnknownCodecError,
)

D = 40


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(11)
    x = rng.standard_normal((30, D)).astype(np.float32)
    fitted = {}
    for spec in SPECS:
        codec = get_codec(spec)
        params = codec.fit(x)
        fitted[spec] = (codec, params, codec.encode(x, params))
    return x, fitted


OPERATIONS = ("fit", "encode", "score_q")


def call(op, codec, params, codes, arr):
    """Run one public operation with ``arr`` in the vector slot."""
    if op == "fit":
        return codec.fit(arr)
    if op == "encode":
        return codec.encode(arr, params)
    return codec.score(arr, codes, params)


def name_of(op):
    return "q" if op == "score_q" else "x"


# -- the hierarchy -----------------------------------------------------------------------------

@pytest.mark.parametrize("error, bases", [
    (SemqError, (Exception,)),
    (InvalidInputError, (SemqError, ValueError)),
    (InputDtypeError, (InvalidInputError, ValueError, TypeError)),
    (InputShapeError, (InvalidInputError, ValueError)),
    (EmptyInputError, (InvalidInputError, ValueError)),
    (NonFiniteError, (InvalidInputError, ValueError)),
    (OutOfRangeError, (InvalidInputError, ValueError)),
    (CodesMismatchError, (InvalidInputError, ValueError)),
    (CodecConfigError, (SemqError, ValueError)),
    (UnknownCodecError, (CodecConfigError, ValueError, LookupError)),
    (ParamsError, (SemqError, ValueError)),
])
def test_hierarchy(error, bases):
    for base in bases:
        assert issubclass(error, base)


# -- non-finite values -------------------------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_values_name_row_and_column(spec, op, bad, data):
    x, fitted = data
    codec, params, codes = fitted[spec]
    arr = x[:20].copy()
    arr[13, 7] = bad
    arr[17, 2] = bad
    with pytest.raises(NonFiniteError) as info:
        call(op, codec, params, codes, arr)
    message = str(info.value)
    assert "row 13" in message and "column 7" in message, message
    assert f"{name_of(op)} holds 2 non-finite" in message, message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("spec", ["int8", "semq2"])
def test_a_shared_fit_cache_still_checks_every_other_array(spec, data):
    # the cache skips the scan only for the very array it checked (one shard's levels)
    x, _ = data
    codec, cache = get_codec(spec), FitCache()
    params = codec.fit(x, cache=cache)
    np.testing.assert_array_equal(codec.encode(x, params, cache=cache), codec.encode(x, params))
    bad = x.copy()
    bad[4, 9] = np.nan
    with pytest.raises(NonFiniteError, match="row 4, column 9"):
        codec.encode(bad, params, cache=cache)
    with pytest.raises(NonFiniteError, match="row 4, column 9"):
        codec.fit(bad, cache=cache)
    with pytest.raises(InputShapeError, match="dimension 20, expected dimension 40"):
        codec.encode(x[:, :20], params, cache=cache)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("op", OPERATIONS)
def test_float64_too_large_for_float32(spec, op, data):
    x, fitted = data
    codec, params, codes = fitted[spec]
    arr = x[:5].astype(np.float64)
    arr[3, 4] = 1e300
    with pytest.raises(NonFiniteError) as info:
        call(op, codec, params, codes, arr)
    assert "row 3" in str(info.value) and "column 4" in str(info.value)
    assert "1e+300" in str(info.value)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("bad", [1e17, -3e20])
def test_magnitude_beyond_float32_arithmetic(spec, op, bad, data):
    """Finite values so large that float32 inner products overflow are refused up front."""
    x, fitted = data
    codec, params, codes = fitted[spec]
    arr = x[:5].copy()
    arr[3, 8] = bad
    with pytest.raises(OutOfRangeError) as info:
        call(op, codec, params, codes, arr)
    message = str(info.value)
    assert "row 3" in message and "column 8" in message and f"{bad:g}" in message, message
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("spec", ["f16", "block4", "block8"])
def test_beyond_float16_range(spec, data):
    x, fitted = data
    codec, params, _ = fitted[spec]
    arr = x[:5].copy()
    arr[2, 9] = 70000.0
    with pytest.raises(OutOfRangeError, match="float16") as info:
        codec.encode(arr, params)
    assert "row 2" in str(info.value) and "65504" in str(info.value)
    arr[2, 9] = -70000.0
    with pytest.raises(OutOfRangeError):
        codec.encode(arr, params)
    arr[2, 9] = 65504.0
    assert np.isfinite(codec.decode(codec.encode(arr, params), params)).all()


@pytest.mark.parametrize("spec", ["f16", "block4", "block8"])
def test_beyond_float16_range_names_the_absolute_row(spec, data):
    """encode works in chunks of 512 rows; the error must still name the row of the input."""
    x, fitted = data
    codec, params, _ = fitted[spec]
    arr = np.tile(x, (25, 1))[:700]
    arr[600, 1] = 1e6
    with pytest.raises(OutOfRangeError) as info:
        codec.encode(arr, params)
    assert "row 600" in str(info.value), str(info.value)


# -- dtypes and containers ---------------------------------------------------------------------

BAD_DTYPES = [np.int64, np.int32, np.uint8, np.bool_, object, np.complex64, np.complex128]


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("dtype", BAD_DTYPES, ids=lambda t: np.dtype(t).name)
def test_wrong_dtype(spec, op, dtype, data):
    _, fitted = data
    codec, params, codes = fitted[spec]
    arr = np.ones((4, D), dtype=dtype)
    with pytest.raises(InputDtypeError) as info:
        call(op, codec, params, codes, arr)
    message = str(info.value)
    assert "float32" in message and np.dtype(dtype).name in message, message
    assert isinstance(info.value, TypeError) and isinstance(info.value, ValueError)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("container", [list, tuple, "scalar"])
def test_not_an_array(spec, op, container, data):
    x, fitted = data
    codec, params, codes = fitted[spec]
    arr = 1.5 if container == "scalar" else container(x[:3].tolist())
    with pytest.raises(InputDtypeError) as info:
        call(op, codec, params, codes, arr)
    assert "numpy array" in str(info.value)
    assert type(arr).__name__ in str(info.value)


# -- shapes ------------------------------------------------------------------------------------

@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("shape", [(D,), (2, 3, D), ()])
def test_wrong_number_of_axes(spec, op, shape, data):
    _, fitted = data
    codec, params, codes = fitted[spec]
    with pytest.raises(InputShapeError) as info:
        call(op, codec, params, codes, np.ones(shape, np.float32))
    message = str(info.value)
    assert "2-D" in message and str(list(shape)) in message, message
    if len(shape) == 1:
        assert "[None, :]" in message


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("op", OPERATIONS)
@pytest.mark.parametrize("shape", [(0, D), (5, 0), (0, 0)])
def test_empty(spec, op, shape, data):
    _, fitted = data
    codec, params, codes = fitted[spec]
    with pytest.raises(EmptyInputError) as info:
        call(op, codec, params, codes, np.ones(shape, np.float32))
    assert str(list(shape)) in str(info.value)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("op", ["encode", "score_q"])
@pytest.mark.parametrize("dim", [D - 1, D + 1, 1])
def test_wrong_dimension(spec, op, dim, data):
    _, fitted = data
    codec, params, codes = fitted[spec]
    arr = np.ones((3, dim), np.float32)
    with pytest.raises(InputShapeError) as info:
        call(op, codec, params, codes, arr)
    message = str(info.value)
    assert f"dimension {dim}" in message and f"dimension {D}" in message, message


# -- codes -------------------------------------------------------------------------------------

def run_codes(op, codec, params, codes, x):
    if op == "decode":
        return codec.decode(codes, params)
    return codec.score(x[:2], codes, params)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("op", ["decode", "score"])
def test_codes_wrong_width(spec, op, data):
    x, fitted = data
    codec, params, codes = fitted[spec]
    width = codec.code_bytes(D)
    for bad in (codes[:, :-1], np.concatenate([codes, codes[:, :1]], axis=1)):
        with pytest.raises(CodesMismatchError) as info:
            run_codes(op, codec, params, bad, x)
        message = str(info.value)
        assert f"[n, {width}]" in message and str(list(bad.shape)) in message, message


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("op", ["decode", "score"])
@pytest.mark.parametrize("dtype", [np.int8, np.uint16, np.float32, np.int64, np.bool_])
def test_codes_wrong_dtype(spec, op, dtype, data):
    x, fitted = data
    codec, params, codes = fitted[spec]
    with pytest.raises(CodesMismatchError) as info:
        run_codes(op, codec, params, codes.astype(dtype), x)
    assert "uint8" in str(info.value) and np.dtype(dtype).name in str(info.value)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("op", ["decode", "score"])
def test_codes_wrong_ndim_or_container(spec, op, data):
    x, fitted = data
    codec, params, codes = fitted[spec]
    for bad in (codes[0], codes[None], codes.tolist()):
        with pytest.raises(CodesMismatchError):
            run_codes(op, codec, params, bad, x)


@pytest.mark.parametrize("spec", SPECS)
@pytest.mark.parametrize("op", ["decode", "score"])
def test_codes_empty(spec, op, data):
    x, fitted = data
    codec, params, codes = fitted[spec]
    with pytest.raises(EmptyInputError):
        run_codes(op, codec, params, codes[:0], x)
    # Zero columns is a width mismatch (the width is fixed by the params), still an input error.
    with pytest.raises(CodesMismatchError):
        run_codes(op, codec, params, codes[:, :0], x)


@pytest.mark.parametrize("spec", SPECS)
def test_codes_of_another_codec(spec, data):
    """Codes handed over with the params of another codec: the params are refused when the
    codec is told apart by spec; with the other codec's own params the width gives it away."""
    x, fitted = data
    codec, params, _ = fitted[spec]
    for other in SPECS:
        if other == spec:
            continue
        other_codec, other_params, other_codes = fitted[other]
        with pytest.raises(ParamsError):
            codec.decode(other_codes, other_params)
        if other_codec.code_bytes(D) != codec.code_bytes(D):
            with pytest.raises(CodesMismatchError):
                codec.decode(other_codes, params)
            with pytest.raises(CodesMismatchError):
                codec.score(x[:1], other_codes, params)
