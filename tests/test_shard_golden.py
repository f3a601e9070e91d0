"""Backward compatibility of the shard format: tests/golden/shards/semq1_int8_64x48.semq was
written by tests/golden/make_golden_shard.py; today's code must read, verify and re-write it
byte for byte."""

from __future__ import annotations

import io

import numpy as np
import pyarrow as pa
import pytest

from semq_transforms.format.shard import read_shard, read_shard_header, verify_shard, write_shard
from semq_transforms.levels import encode_levels
from tests.golden.make_golden_shard import EXPECTED, REL_PATH, SHARD, SPECS, golden_stats

REGENERATE = ("Only if this change is intended: run tests/golden/make_golden_shard.py and bump "
              "SHARD_FORMAT_VERSION as FORMAT.md's versioning rule says, so shards written "
              "before the change are not misread.")
#: Fit/encode output, not the format: the machine (a determinism bug) or an intended change.
OUTPUT_CHANGED = ("If only the machine differs from the one that wrote the shard (BLAS kernel or "
                  "threads, numpy SIMD), this is a determinism bug: see "
                  "tests/test_determinism_matrix.py. If the codecs' output changed on purpose: "
                  "run tests/golden/make_golden_shard.py and bump the package version (the "
                  "format version only if the layout changed).")


#: The same shard as older versions wrote it, still read and verified: 0.3 (format 1.0,
#: float32 semq axes, params in the header) and 0.4 (format 2.0: no columns shared between
#: levels).
OLDER = {"v0.3": "1.0", "v0.4": "2.0"}


def _load(shard, expected):
    assert shard.is_file() and expected.is_file(), f"golden shard missing. {REGENERATE}"
    with np.load(expected, allow_pickle=False) as data:
        stored = {name: data[name] for name in data.files}
    return shard, shard.read_bytes(), stored


@pytest.fixture(scope="module")
def current():
    return _load(SHARD, EXPECTED)


@pytest.fixture(scope="module", params=["current", *OLDER])
def golden(request):
    if request.param == "current":
        return _load(SHARD, EXPECTED)
    folder = SHARD.parent / request.param
    return _load(folder / SHARD.name, folder / EXPECTED.name)


def test_golden_shard_reads_and_verifies(golden):
    path, raw, stored = golden
    check = verify_shard(str(path))
    assert check.ok, f"{check.problems}. {REGENERATE}"
    shard = read_shard(str(path))
    assert shard.header["version"] == OLDER.get(path.parent.name, "3.0")
    assert shard.codecs == SPECS
    assert (shard.rows, shard.dim, shard.id_type) == (*stored["x"].shape, "int64")
    assert shard.file_sha256 == str(stored["file_sha256"])
    assert shard.content_sha256 == str(stored["content_sha256"])
    assert shard.stats == golden_stats(stored["x"])
    assert np.array_equal(shard.ids, stored["ids"]) and shard.ids.dtype == np.int64
    assert read_shard_header(io.BytesIO(raw)) == shard.header


def test_golden_shard_contents(golden):
    path, _, stored = golden
    shard = read_shard(str(path))
    for i, level in enumerate(shard.levels):
        spec = level.codec.spec
        assert level.params.to_bytes() == stored[f"params_{i}"].tobytes(), (
            f"{spec}: params changed. {REGENERATE}")
        assert np.array_equal(level.codes, stored[f"codes_{i}"]), f"{spec}: codes changed"
        decoded = level.codec.decode(level.codes, level.params)
        scores = level.codec.score(stored["queries"], level.codes, level.params)
        if spec == "int8":  # elementwise decode: exact
            assert np.array_equal(decoded, stored[f"decoded_{i}"])
        # semq decodes and scores with BLAS, which may sum in another order elsewhere.
        np.testing.assert_allclose(decoded, stored[f"decoded_{i}"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(scores, stored[f"scores_{i}"], rtol=1e-6, atol=1e-6)


def test_rewriting_the_golden_content_gives_identical_bytes(current):
    _, raw, _ = current
    shard = read_shard(io.BytesIO(raw))
    out = io.BytesIO()
    meta = write_shard(out, ids=shard.ids, levels=shard.levels, path=REL_PATH,
                       stats=shard.stats)
    assert meta.content_sha256 == shard.content_sha256
    assert out.getvalue() == raw, (
        f"same content, other bytes (pyarrow {pa.__version__}): the writer or pyarrow's IPC "
        f"serialization changed. Content digests still match, so old shards stay readable; "
        f"file digests of re-written shards will differ. {REGENERATE}")


def test_encoding_the_golden_input_reproduces_the_file(current):
    _, raw, stored = current
    out = io.BytesIO()
    write_shard(out, ids=stored["ids"], levels=encode_levels(stored["x"], SPECS), path=REL_PATH,
                stats=golden_stats(stored["x"]))
    assert out.getvalue() == raw, f"fit/encode or the writer changed. {OUTPUT_CHANGED}"
