"""Backward compatibility against stored fixtures (numcodecs style): tests/golden/<spec>.npz
were written by tests/golden/make_golden.py; today's code must reproduce them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from semq_transforms.codecs import SPECS, CodecParams, get_codec
from semq_transforms.codecs.params import PARAMS_MAGIC

GOLDEN = Path(__file__).resolve().parent / "golden"
REGENERATE = ("If only the machine differs from the one that wrote the fixtures (BLAS kernel or "
              "threads, numpy SIMD), output depending on it is a determinism bug: see "
              "tests/test_determinism_matrix.py and semq_transforms/codecs/exact.py. If the "
              "codec's output changed on purpose: run tests/golden/make_golden.py and bump the "
              "package version (one version, one output); bump PARAMS_MAGIC only if the params "
              "layout changed.")

#: Codecs whose decode is elementwise numpy arithmetic (no BLAS): reproducible to the bit.
ELEMENTWISE_DECODE = ("f16", "int8", "int4", "block4", "block8", "binary")


@pytest.fixture(params=SPECS)
def golden(request):
    spec = request.param
    path = GOLDEN / f"{spec}.npz"
    assert path.is_file(), f"no golden fixture for {spec!r} at {path}. {REGENERATE}"
    with np.load(path, allow_pickle=False) as data:
        stored = {name: data[name] for name in data.files}
    return spec, get_codec(spec), stored


def test_every_fixture_is_a_known_spec():
    assert sorted(p.stem for p in GOLDEN.glob("*.npz")) == sorted(SPECS)


def test_stored_params_parse(golden):
    spec, _, stored = golden
    blob = stored["params"].tobytes()
    assert blob.startswith(PARAMS_MAGIC), f"{spec}: stored params are not format {PARAMS_MAGIC}"
    params = CodecParams.from_bytes(blob)
    assert params.codec == spec and params.dim == stored["x"].shape[1]
    assert params.to_bytes() == blob, f"{spec}: params re-serialize differently. {REGENERATE}"


def test_encode_with_stored_params_reproduces_stored_codes(golden):
    spec, codec, stored = golden
    params = CodecParams.from_bytes(stored["params"].tobytes())
    codes = codec.encode(stored["x"], params)
    assert codes.dtype == stored["codes"].dtype and codes.shape == stored["codes"].shape, (
        f"{spec}: code layout changed. {REGENERATE}")
    differ = int((codes != stored["codes"]).any(axis=1).sum())
    assert differ == 0, f"{spec}: {differ} of {len(codes)} rows encode differently. {REGENERATE}"


def test_decode_and_score_of_stored_codes(golden):
    spec, codec, stored = golden
    params = CodecParams.from_bytes(stored["params"].tobytes())
    decoded = codec.decode(stored["codes"], params)
    scores = codec.score(stored["queries"], stored["codes"], params)
    assert decoded.dtype == np.float32 and scores.dtype == np.float32
    if spec in ELEMENTWISE_DECODE:
        assert np.array_equal(decoded, stored["decoded"]), f"{spec}: decode changed. {REGENERATE}"
    # semq decodes with a matrix product and every score is one: BLAS may legitimately sum in
    # another order on another CPU / thread count / BLAS build, so those match to 1e-6.
    np.testing.assert_allclose(decoded, stored["decoded"], rtol=1e-6, atol=1e-6,
                               err_msg=f"{spec}: decode changed. {REGENERATE}")
    np.testing.assert_allclose(scores, stored["scores"], rtol=1e-6, atol=1e-6,
                               err_msg=f"{spec}: score changed. {REGENERATE}")


def test_refit_reproduces_stored_params(golden):
    spec, codec, stored = golden
    params = codec.fit(stored["x"])
    assert params.to_bytes() == stored["params"].tobytes(), (
        f"{spec}: fitting the stored input gives other params "
        f"(digest {params.digest()[:16]}). {REGENERATE}")


#: Fixtures of semq params as 0.3 wrote them (float32 axes; float16 since 0.4): still read.
V03 = sorted((GOLDEN / "v0.3").glob("semq*.npz"))


@pytest.mark.parametrize("path", V03, ids=[p.stem for p in V03])
def test_params_written_by_0_3_still_encode_decode_and_score(path):
    with np.load(path, allow_pickle=False) as data:
        stored = {name: data[name] for name in data.files}
    params = CodecParams.from_bytes(stored["params"].tobytes())
    assert params["basis"].dtype == np.float32
    codec = get_codec(path.stem)
    codec.check_params(params)
    assert np.array_equal(codec.encode(stored["x"], params), stored["codes"])
    np.testing.assert_allclose(codec.decode(stored["codes"], params), stored["decoded"],
                               rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(codec.score(stored["queries"], stored["codes"], params),
                               stored["scores"], rtol=1e-6, atol=1e-6)


def test_fitted_semq_axes_are_half_precision():
    x = np.load(GOLDEN / "semq4.npz", allow_pickle=False)["x"]
    assert len(V03) == 8
    assert get_codec("semq4").fit(x)["basis"].dtype == np.float16
