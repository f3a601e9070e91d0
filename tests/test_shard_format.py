"""The .semq shard file: round trips, determinism, the spec's digests, versioning, and
reports of corrupt content (FORMAT.md)."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import os
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pytest

from semq_transforms.codecs import CodecParams, get_codec
from semq_transforms.errors import (
    CodesMismatchError,
    FormatError,
    InputDtypeError,
    InputShapeError,
    IntegrityError,
    InvalidInputError,
    ParamsError,
)
from semq_transforms.format._header import PARAMS_KEY
from semq_transforms.format.meta import SHARD_FORMAT_VERSION
from semq_transforms.format.shard import (
    MAX_BATCH_ROWS,
    EncodedLevel,
    read_shard,
    read_shard_header,
    verify_shard,
    write_shard,
)
from tests.conftest import ROOT, make_anisotropic
from tests.shard_helpers import (
    check_only,
    dump_header,
    header_of,
    make_levels,
    params_texts,
    replace_column,
    rewrite,
    shard_bytes,
    string_ids,
)

N, D = 300, 32


@pytest.fixture(scope="module")
def data():
    x, multi = make_levels(N, D, ("semq1", "semq4"))
    _, single = make_levels(N, D, ("int8",))
    _, mixed = make_levels(N, D, ("semq1", "int8"))
    queries = make_anisotropic(5, D, seed=9)
    return {"x": x, "multi": multi, "single": single, "mixed": mixed, "queries": queries,
            "int64": np.arange(N, dtype=np.int64) * 3 - 100, "string": string_ids(N)}


@pytest.fixture(scope="module")
def mixed_bytes(data):
    """A valid shard: int64 ids, levels semq1 + int8."""
    return shard_bytes(data["int64"], data["mixed"], stats={"mean_norm": 1.0})


@pytest.fixture
def memory_root():
    root = f"memory://semq-test-{uuid.uuid4().hex}"
    yield root
    fs = fsspec.filesystem("memory")
    if fs.exists(root):
        fs.rm(root, recursive=True)


def _dest(kind: str, tmp_path: Path, memory_root: str) -> str:
    if kind == "path":
        return str(tmp_path / "runs" / "r1" / "shard-00000.semq")  # parents are created
    if kind == "file_url":
        return (tmp_path / "shard.semq").as_uri()
    return f"{memory_root}/runs/r1/shard-00000.semq"


@pytest.mark.parametrize("where", ["path", "file_url", "memory"])
@pytest.mark.parametrize("id_kind", ["int64", "string"])
@pytest.mark.parametrize("level_kind", ["single", "multi"])
def test_round_trip(data, tmp_path, memory_root, where, id_kind, level_kind):
    ids, levels = data[id_kind], data[level_kind]
    dest = _dest(where, tmp_path, memory_root)
    meta = write_shard(dest, ids=ids, levels=levels, path="runs/r1/shard-00000.semq")
    shard = read_shard(dest)

    assert (shard.rows, shard.dim, shard.id_type, shard.path) == (N, D, id_kind, dest)
    assert shard.codecs == tuple(lv.codec.spec for lv in levels) == meta.codecs
    if id_kind == "int64":
        assert shard.ids.dtype == np.int64 and np.array_equal(shard.ids, ids)
    else:
        assert shard.ids.dtype == object and shard.ids.tolist() == ids
    for got, want in zip(shard.levels, levels, strict=True):
        assert got.codec == want.codec
        assert got.params.to_bytes() == want.params.to_bytes()
        assert got.codes.dtype == np.uint8 and np.array_equal(got.codes, want.codes)
        assert not got.codes.flags.writeable
        codec = want.codec
        assert np.array_equal(codec.decode(got.codes, got.params),
                              codec.decode(want.codes, want.params))
        assert np.array_equal(codec.score(data["queries"], got.codes, got.params),
                              codec.score(data["queries"], want.codes, want.params))
    assert verify_shard(dest).ok
    assert read_shard_header(dest) == shard.header


def test_meta_matches_the_file(data, tmp_path):
    dest = tmp_path / "s.semq"
    meta = write_shard(str(dest), ids=data["string"], levels=data["multi"], path="runs/a/s.semq",
                       stats={"mean_norm": np.float32(0.5), "rows_dropped": 0})
    raw = dest.read_bytes()
    assert meta.path == "runs/a/s.semq" and (meta.rows, meta.dim) == (N, D)
    assert meta.file_bytes == len(raw) == os.path.getsize(dest)
    assert meta.file_sha256 == hashlib.sha256(raw).hexdigest()
    assert meta.id_type == "string"
    assert (meta.id_min, meta.id_max) == (min(data["string"]), max(data["string"])) == (
        "", "emoji-\U0001F600")
    assert meta.stats == {"mean_norm": 0.5, "rows_dropped": 0}
    assert [(lv.codec, lv.code_bytes, lv.params_sha256) for lv in meta.levels] == [
        (lv.codec.spec, lv.codec.code_bytes(D), lv.params.digest()) for lv in data["multi"]]
    shard = read_shard(str(dest))
    assert shard.file_sha256 == meta.file_sha256 and shard.file_bytes == meta.file_bytes
    assert shard.content_sha256 == meta.content_sha256 and shard.stats == meta.stats
    meta_int = write_shard(io.BytesIO(), ids=data["int64"], levels=data["single"], path="p")
    assert (meta_int.id_min, meta_int.id_max) == (-100, 3 * N - 103)


def _params_per_spec(texts: list) -> list[bytes]:
    """Each level's params bytes decoded as FORMAT.md says, not with the library's reader:
    whole (base64), or the listed columns of a later level's array of the same name."""
    out: list = [None] * len(texts)
    for i in reversed(range(len(texts))):
        if isinstance(texts[i], str):
            out[i] = base64.b64decode(texts[i])
            continue
        partial = CodecParams.from_bytes(base64.b64decode(texts[i]["params"]))
        arrays = dict(partial.arrays)
        for name, (level, runs) in texts[i]["shared"].items():
            source = CodecParams.from_bytes(out[level]).arrays[name]
            arrays[name] = source[:, [c for first, n in runs for c in range(first, first + n)]]
        out[i] = CodecParams(partial.codec, partial.dim, arrays).to_bytes()
    return out


@pytest.mark.parametrize("with_fp", [False, True], ids=["", "fingerprints"])
@pytest.mark.parametrize("id_kind", ["int64", "string"])
def test_digests_follow_the_written_spec(data, id_kind, with_fp):
    """Recompute every digest from FORMAT.md's definitions with hashlib and struct only."""
    ids, levels = data[id_kind], data["multi"]
    fp = [hashlib.blake2b(struct.pack(f"<{D}f", *row), digest_size=8).digest()
          for row in data["x"].tolist()]
    raw = shard_bytes(ids, levels, fingerprints=(
        np.frombuffer(b"".join(fp), np.uint8).reshape(N, 8) if with_fp else None))
    header, texts = header_of(raw), params_texts(raw)
    assert all("params" not in lv for lv in header["levels"])    # record batch 0 holds them
    if id_kind == "int64":
        ids_bytes = b"".join(struct.pack("<q", int(i)) for i in ids)
    else:
        ids_bytes = b"".join(struct.pack("<I", len(s.encode())) + s.encode() for s in ids)
    ids_sha = hashlib.sha256(ids_bytes).digest()
    record = b"semq-shard-content\x00" + struct.pack("<IQBI", D, N, id_kind == "string", 2)
    record += ids_sha
    for i, lv in enumerate(levels):
        params = _params_per_spec(texts)[i]
        assert params == lv.params.to_bytes()
        params_sha = hashlib.sha256(params).digest()
        codes_sha = hashlib.sha256(lv.codes.tobytes()).digest()
        assert header["digests"]["params"][i] == params_sha.hex()
        assert header["levels"][i]["params_sha256"] == params_sha.hex()
        assert header["digests"]["codes"][i] == codes_sha.hex()
        spec = lv.codec.spec.encode()
        record += struct.pack("<H", len(spec)) + spec + struct.pack("<I", lv.codes.shape[1])
        record += params_sha + codes_sha
    if with_fp:
        fp_sha = hashlib.sha256(b"".join(fp)).digest()
        assert header["input_fingerprint"] == "blake2b-64"
        assert header["digests"]["fingerprints"] == fp_sha.hex()
        record += struct.pack("<H", 10) + b"blake2b-64" + fp_sha
    else:
        assert "input_fingerprint" not in header and "fingerprints" not in header["digests"]
    assert header["digests"]["ids"] == ids_sha.hex()
    assert header["digests"]["content"] == hashlib.sha256(record).hexdigest()


def test_file_is_a_plain_arrow_ipc_file(data, mixed_bytes):
    reader = pa.ipc.open_file(mixed_bytes)
    schema = reader.schema
    assert schema.names == ["id", "codes_0", "codes_1"]
    assert schema.field("id").type == pa.int64() and not schema.field("id").nullable
    assert schema.field("codes_0").type == pa.binary(get_codec("semq1").code_bytes(D))
    assert schema.field("codes_1").type == pa.binary(D)
    raw = schema.metadata[b"semq"]
    header = json.loads(raw)
    assert raw == dump_header(header), "the header must be compact sorted-keys JSON"
    assert header["version"] == "{}.{}".format(*SHARD_FORMAT_VERSION)
    assert (header["format"], header["dim"], header["rows"]) == ("semq-shard", D, N)
    assert [lv["column"] for lv in header["levels"]] == ["codes_0", "codes_1"]
    table = reader.read_all()
    assert table.column("id").to_pylist() == data["int64"].tolist()
    assert rewrite(mixed_bytes) == mixed_bytes, "pyarrow re-writes the same bytes"


def test_batches_of_at_most_65536_rows(memory_root):
    """Rows beyond one batch are split (cheap f16 level: no fitting)."""
    rows, d = MAX_BATCH_ROWS + 100, 4
    rng = np.random.default_rng(0)
    codec = get_codec("f16")
    x = rng.standard_normal((rows, d)).astype(np.float32)
    params = codec.fit(x)
    level = EncodedLevel(codec, params, codec.encode(x, params))
    ids = rng.permutation(rows).astype(np.int64)
    dest = f"{memory_root}/big.semq"
    write_shard(dest, ids=ids, levels=[level], path="big.semq")
    with fsspec.open(dest, "rb") as f:
        reader = pa.ipc.open_file(f.read())
    assert [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)] == [
        MAX_BATCH_ROWS, 100]
    shard = read_shard(dest)
    assert np.array_equal(shard.ids, ids) and shard.levels[0] == level


def test_deterministic_bytes_in_process(data, tmp_path):
    first = shard_bytes(data["string"], data["multi"], stats={"a": 1.5})
    assert shard_bytes(data["string"], data["multi"], stats={"a": 1.5}) == first
    write_shard(str(tmp_path / "s.semq"), ids=data["string"], levels=data["multi"], path="other",
                stats={"a": 1.5})
    assert (tmp_path / "s.semq").read_bytes() == first, "path must not change the bytes"
    assert shard_bytes(data["string"], data["multi"], stats={"a": 2.5}) != first


_CHILD = """
import sys
import numpy as np
from semq_transforms.format.shard import write_shard
from tests.shard_helpers import make_levels, string_ids
x, levels = make_levels(300, 32, ("semq1", "semq4"))
write_shard(sys.argv[1], ids=string_ids(300), levels=levels, path="p", stats={"a": 1.5})
"""


def test_deterministic_bytes_across_processes(data, tmp_path):
    out = tmp_path / "child.semq"
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OPENBLAS_NUM_THREADS": "1",
           "OMP_NUM_THREADS": "1", "PYTHONHASHSEED": "123"}
    subprocess.run([sys.executable, "-c", _CHILD, str(out)], check=True, cwd=ROOT, env=env,
                   timeout=120)
    expected = shard_bytes(data["string"], data["multi"], stats={"a": 1.5})
    assert out.read_bytes() == expected


# -- versions -----------------------------------------------------------------------------------


def test_newer_major_version_is_refused(mixed_bytes):
    newer = rewrite(mixed_bytes, edit_header=lambda h: h.update(
        version=f"{SHARD_FORMAT_VERSION[0] + 1}.0"))
    for read in (read_shard, read_shard_header):
        with pytest.raises(FormatError, match="newer semq-transforms.*upgrade") as err:
            read(io.BytesIO(newer))
        assert "<BytesIO>" in str(err.value) and not isinstance(err.value, IntegrityError)
    check = verify_shard(io.BytesIO(newer))
    assert not check.ok and check.problems[0].startswith("header:")
    assert "newer" in check.problems[0]


def test_newer_minor_version_is_read_and_its_new_fields_ignored(mixed_bytes):
    def newer_minor(h):
        h.update(version=f"{SHARD_FORMAT_VERSION[0]}.{SHARD_FORMAT_VERSION[1] + 7}",
                 future_field={"x": 1})
        h["levels"][0]["future_level_field"] = True
        h["digests"]["file_layout"] = "0" * 64

    shard = read_shard(io.BytesIO(rewrite(mixed_bytes, edit_header=newer_minor)))
    original = read_shard(io.BytesIO(mixed_bytes))
    assert shard.levels == original.levels and np.array_equal(shard.ids, original.ids)
    assert shard.header["future_field"] == {"x": 1}


def test_unknown_fields_in_the_current_version_are_refused(mixed_bytes):
    extra = rewrite(mixed_bytes, edit_header=lambda h: h.update(surprise=1))
    with pytest.raises(FormatError, match="unknown keys.*surprise"):
        read_shard(io.BytesIO(extra))


# -- corrupt content, valid container -------------------------------------------------------------


def test_verify_names_corrupted_ids(mixed_bytes, data):
    ids = data["int64"].copy()
    ids[17] += 1
    check_only(rewrite(mixed_bytes, edit_table=lambda t: replace_column(t, "id", pa.array(ids))),
                "ids")


def test_verify_names_corrupted_string_ids(data):
    original = shard_bytes(data["string"], data["single"])
    ids = list(data["string"])
    ids[3] = ids[3].replace("ü", "u")
    check_only(rewrite(original, edit_table=lambda t: replace_column(t, "id", pa.array(ids))),
                "ids")


def test_verify_names_a_corrupted_code_byte(mixed_bytes, data):
    codes = data["mixed"][1].codes.copy()
    codes[7, 3] ^= 0x10
    array = pa.FixedSizeBinaryArray.from_buffers(pa.binary(D), N, [None, pa.py_buffer(codes)])
    check_only(rewrite(mixed_bytes, edit_table=lambda t: replace_column(t, "codes_1", array)),
                "codes of level 1 (int8)")


@pytest.mark.parametrize("level", [0, 1])
def test_verify_names_corrupted_params(mixed_bytes, level):
    def corrupt(h):
        params = CodecParams.from_bytes(base64.b64decode(h["levels"][level]["params"]))
        arrays = {k: np.array(v) for k, v in params.arrays.items()}
        name = "mean" if "mean" in arrays else "scale"
        arrays[name][0] *= 1.0625  # still valid params, different content
        changed = CodecParams(codec=params.codec, dim=params.dim, arrays=arrays)
        h["levels"][level]["params"] = base64.b64encode(changed.to_bytes()).decode()

    spec = ("semq1", "int8")[level]
    check_only(rewrite(mixed_bytes, edit_header=corrupt), f"params of level {level} ({spec})")


def test_verify_names_a_tampered_content_digest(mixed_bytes):
    def tamper(h):
        h["digests"]["content"] = "0" * 64

    check_only(rewrite(mixed_bytes, edit_header=tamper), "header")


def test_verify_lists_every_corrupted_part(mixed_bytes, data):
    ids = data["int64"][::-1].copy()
    codes = np.ascontiguousarray(data["mixed"][0].codes[::-1])
    width = codes.shape[1]
    array = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), N, [None, pa.py_buffer(codes)])

    def edit(t):
        return replace_column(replace_column(t, "id", pa.array(ids)), "codes_0", array)

    check = verify_shard(io.BytesIO(rewrite(mixed_bytes, edit_table=edit)))
    assert sorted(p.split(":")[0] for p in check.problems) == ["codes of level 0 (semq1)", "ids"]


# -- malformed files ------------------------------------------------------------------------------


def test_compressed_shard_is_refused_before_decompression(mixed_bytes):
    compressed = rewrite(mixed_bytes, compression="zstd")
    assert pa.ipc.open_file(compressed).read_all().num_rows == N  # a valid Arrow file
    with pytest.raises(FormatError, match="compressed"):
        read_shard(io.BytesIO(compressed))
    assert "compressed" in verify_shard(io.BytesIO(compressed)).problems[0]


def test_schema_message_must_equal_the_footer_schema(mixed_bytes):
    """Arrow stores the schema (and the header) twice; a stream reader sees the first copy,
    a file reader the footer's. They must agree."""
    first = mixed_bytes.index(b'"mean_norm":1.0')
    assert mixed_bytes.index(b'"mean_norm":1.0', first + 1) > first  # the footer's copy
    edited = mixed_bytes[:first] + b'"mean_norm":2.0' + mixed_bytes[first + 15:]
    with pytest.raises(FormatError, match="differs from the footer"):
        read_shard(io.BytesIO(edited))
    assert read_shard_header(io.BytesIO(edited))["stats"] == {"mean_norm": 1.0}
    assert read_shard(io.BytesIO(mixed_bytes), verify=False).file_sha256 is None


def test_oversized_file_is_refused_before_reading(mixed_bytes, tmp_path):
    class Unseekable(io.RawIOBase):
        def __init__(self, payload):
            self.inner = io.BytesIO(payload)
            self.read_bytes = 0

        def readable(self):
            return True

        def readinto(self, b):
            n = self.inner.readinto(b)
            self.read_bytes += n
            return n

    path = tmp_path / "s.semq"
    path.write_bytes(mixed_bytes)
    limit = len(mixed_bytes) - 1
    with pytest.raises(FormatError, match="max_bytes"):
        read_shard(str(path), max_bytes=limit)
    stream = Unseekable(mixed_bytes)
    with pytest.raises(FormatError, match="max_bytes"):
        read_shard(stream, max_bytes=100)
    assert stream.read_bytes <= 101
    check = verify_shard(str(path), max_bytes=limit)
    assert not check.ok and check.problems[0].startswith("file:")
    assert read_shard(Unseekable(mixed_bytes), max_bytes=len(mixed_bytes)).rows == N


@pytest.mark.parametrize("payload", [
    b"", b"ARROW1", b"not an arrow file at all" * 10, b"ARROW1\x00\x00" + b"\x00" * 64 + b"ARROW1",
])
def test_files_that_are_not_shards(payload):
    with pytest.raises(FormatError):
        read_shard(io.BytesIO(payload))
    with pytest.raises(FormatError):
        read_shard_header(io.BytesIO(payload))
    assert not verify_shard(io.BytesIO(payload)).ok


def test_arrow_file_without_a_header_is_not_a_shard():
    sink = pa.BufferOutputStream()
    table = pa.table({"id": pa.array([1, 2], pa.int64())})
    with pa.ipc.new_file(sink, table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(FormatError, match="not a .semq shard"):
        read_shard(io.BytesIO(sink.getvalue().to_pybytes()))


def _set(path, value):
    def edit(h):
        target = h
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = value
    return edit


def _params_of(spec):
    def edit(h):
        x = make_levels(10, D, (spec,))[1][0]
        h["levels"][0]["params"] = base64.b64encode(x.params.to_bytes()).decode()
    return edit


HEADER_EDITS = {
    "dim as string": _set(["dim"], "32"),
    "dim bool": _set(["dim"], True),
    "dim other": _set(["dim"], D + 1),
    "rows zero": _set(["rows"], 0),
    "rows negative": _set(["rows"], -5),
    "rows too many": _set(["rows"], N + 1),
    "rows huge": _set(["rows"], 10**30),
    "id_type": _set(["id_type"], "float64"),
    "id_type string on int column": _set(["id_type"], "string"),
    "no levels": _set(["levels"], []),
    "levels not list": _set(["levels"], {"0": 1}),
    "level not object": _set(["levels", 0], "semq1"),
    "codec unknown": _set(["levels", 0, "codec"], "pq8"),
    "codec huge bits": _set(["levels", 0, "codec"], "semq" + "9" * 60),
    "codec not canonical": _set(["levels", 0, "codec"], "SEMQ1"),
    "codec other": _set(["levels", 0, "codec"], "semq2"),
    "codec null": _set(["levels", 0, "codec"], None),
    "code_bytes": _set(["levels", 0, "code_bytes"], 13),
    "column": _set(["levels", 0, "column"], "codes_1"),
    "params not base64": _set(["levels", 0, "params"], "!!!"),
    "params not canonical base64": _set(["levels", 0, "params"], "QR=="),
    "params list": _set(["levels", 0, "params"], [1, 2]),
    "params of another codec": _params_of("int8"),
    "params_sha256 short": _set(["levels", 0, "params_sha256"], "abc"),
    "params_sha256 differs from digests": _set(["levels", 0, "params_sha256"], "0" * 64),
    "digests missing": _set(["digests"], {"ids": "0" * 64}),
    "digests codes short": _set(["digests", "codes"], ["0" * 64]),
    "digests upper hex": _set(["digests", "ids"], "A" * 64),
    "stats not numbers": _set(["stats"], {"a": "b"}),
    "stats list": _set(["stats"], [1]),
    "format": _set(["format"], "parquet"),
    "version garbage": _set(["version"], "one"),
    "version int": _set(["version"], 1),
    "version old": _set(["version"], "0.9"),
}
RAW_HEADERS = {
    "not json": b"{not json",
    "not utf8": b'{"a":"\xff"}',
    "array": b"[1,2,3]",
    "deep": b"[" * 100000 + b"]" * 100000,
    "huge int": b'{"dim":' + b"9" * 5000 + b"}",
    "nan": b'{"stats":{"a":NaN}}',
    "empty": b"",
}


@pytest.mark.parametrize("case", sorted(HEADER_EDITS))
def test_malformed_header_fields(mixed_bytes, case):
    bad = rewrite(mixed_bytes, edit_header=HEADER_EDITS[case])
    with pytest.raises(FormatError) as err:
        read_shard(io.BytesIO(bad))
    assert not isinstance(err.value, IntegrityError), "structure, not digests, is wrong"
    assert "<BytesIO>" in str(err.value)
    # "rows too many" needs the record batches, the params cases record batch 0's metadata:
    # the header read skips both
    if case != "rows too many" and not case.startswith("params "):
        with pytest.raises(FormatError):
            read_shard_header(io.BytesIO(bad))
    assert not verify_shard(io.BytesIO(bad)).ok


@pytest.mark.parametrize("case", sorted(RAW_HEADERS))
def test_header_that_is_not_a_json_object(mixed_bytes, case):
    bad = rewrite(mixed_bytes, raw_header=RAW_HEADERS[case])
    with pytest.raises(FormatError, match="header"):
        read_shard(io.BytesIO(bad))


def test_duplicate_and_non_finite_header_values(mixed_bytes):
    raw = dump_header(header_of(mixed_bytes))
    duplicated = raw.replace(b'"dim":', b'"dim":32,"dim":', 1)
    infinite = raw.replace(b'"stats":{"mean_norm":1.0}', b'"stats":{"mean_norm":1e999}')
    assert duplicated != raw and infinite != raw
    for bad in (duplicated, infinite):
        with pytest.raises(FormatError, match="header"):
            read_shard(io.BytesIO(rewrite(mixed_bytes, raw_header=bad)))


SCHEMA_EDITS = {
    "codes as variable binary": lambda t: replace_column(
        t, "codes_1", t.column("codes_1").cast(pa.binary()), pa.field("codes_1", pa.binary())),
    "nullable ids": lambda t: replace_column(t, "id", t.column("id"), pa.field("id", pa.int64())),
    "ids as int32": lambda t: replace_column(t, "id", t.column("id").cast(pa.int32()),
                                             pa.field("id", pa.int32(), nullable=False)),
    "renamed column": lambda t: t.rename_columns(["id", "codes_0", "codes_2"]),
    "extra column": lambda t: t.append_column("extra", pa.array(np.zeros(N))),
    "missing column": lambda t: t.drop_columns(["codes_1"]),
    "field metadata": lambda t: replace_column(
        t, "id", t.column("id"), pa.field("id", pa.int64(), nullable=False, metadata={"a": "b"})),
}


@pytest.mark.parametrize("case", sorted(SCHEMA_EDITS))
def test_schema_must_match_the_header(mixed_bytes, case):
    with pytest.raises(FormatError) as err:
        read_shard(io.BytesIO(rewrite(mixed_bytes, edit_table=SCHEMA_EDITS[case])))
    assert not isinstance(err.value, IntegrityError)


def test_nulls_are_refused_even_in_non_nullable_columns(mixed_bytes, data):
    ids = pa.array([None if i == 4 else int(v) for i, v in enumerate(data["int64"])], pa.int64())

    def edit(t):  # pyarrow lets a batch hold nulls in a field declared not null
        columns = [ids, *t.combine_chunks().columns[1:]]
        return pa.Table.from_batches([pa.RecordBatch.from_arrays(
            [c if isinstance(c, pa.Array) else c.chunk(0) for c in columns], schema=t.schema)])

    with pytest.raises(FormatError, match="ids: record batch 0 has 1 nulls"):
        read_shard(io.BytesIO(rewrite(mixed_bytes, edit_table=edit)))


def _with_batch_metadata(data: bytes, metadata: list) -> bytes:
    """``data`` re-written with ``metadata[i]`` (a dict or None; None past its end) on record
    batch ``i``."""
    reader = pa.ipc.open_file(data)
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, reader.schema) as writer:
        for i in range(reader.num_record_batches):
            writer.write_batch(reader.get_batch(i), custom_metadata=(
                metadata[i] if i < len(metadata) else None))
    return sink.getvalue().to_pybytes()


def test_params_are_stored_once_in_record_batch_0(data):
    """Format 3.0: the header (stored twice by Arrow: schema message and footer) holds no
    params; record batch 0's metadata holds each level's params once, and semq1's basis,
    whose columns are among semq4's (one frame per shard), is stored as a list of them."""
    levels = data["multi"]
    raw = shard_bytes(data["int64"], levels)
    assert all("params" not in lv for lv in header_of(raw)["levels"])
    coarse, fine = (base64.b64encode(lv.params.to_bytes()) for lv in levels)
    assert raw.count(fine) == 1 and raw.count(coarse) == 0
    entry, whole = params_texts(raw)
    assert whole == fine.decode()
    source, runs = entry["shared"]["basis"]
    assert source == 1 and set(entry) == {"params", "shared"}
    columns = np.concatenate([np.arange(a, a + n) for a, n in runs])
    basis = levels[0].params["basis"]
    assert np.array_equal(levels[1].params["basis"][:, columns], basis)
    partial = CodecParams.from_bytes(base64.b64decode(entry["params"]))
    assert "basis" not in partial.arrays and partial.arrays.keys() | {"basis"} == \
        levels[0].params.arrays.keys()
    stored = len(json.dumps([entry, whole], separators=(",", ":")))
    assert stored < len(coarse) + len(fine) - 0.8 * len(base64.b64encode(basis.tobytes()))
    shard = read_shard(io.BytesIO(raw), verify=True)
    assert [lv.params.to_bytes() for lv in shard.levels] == [
        lv.params.to_bytes() for lv in levels]
    assert header_of(raw)["version"] == "3.0"


def _shared_case(raw: bytes, edit) -> bytes:
    """``raw`` with its ``semq.params`` entries edited by ``edit(entries)``, re-serialized in
    canonical form (so only the edit is wrong)."""
    entries = params_texts(raw)
    edit(entries)
    value = json.dumps(entries, separators=(",", ":"), sort_keys=True)
    return _with_batch_metadata(raw, [{PARAMS_KEY: value}])


def test_shared_columns_are_checked(data):
    """Every part of a shared-columns entry is checked before an array is built: a hostile
    entry gives a FormatError naming what is wrong, never another exception."""
    raw = shard_bytes(data["int64"], data["multi"])
    assert read_shard(io.BytesIO(_shared_case(raw, lambda e: None)), verify=True)

    def shared(e):
        return e[0]["shared"]["basis"]

    def put(key, value):
        def edit(e):
            e[0]["shared"][key] = value
        return edit

    runs = shared(params_texts(raw))[1]
    width = data["multi"][1].params["basis"].shape[1]
    cases = {
        "itself": (put("basis", [0, runs]), "a later level"),
        "no such level": (put("basis", [2, runs]), "a later level"),
        "level not an int": (put("basis", [True, runs]), "a later level"),
        "no runs": (put("basis", [1, []]), "a later level"),
        "past the source": (put("basis", [1, [[width - 1, 2]]]), "within the source"),
        "negative": (put("basis", [1, [[-1, 2]]]), "within the source"),
        "zero count": (put("basis", [1, [[0, 0]]]), "within the source"),
        "float": (put("basis", [1, [[0.0, 2]]]), "within the source"),
        "not merged": (put("basis", [1, [[0, 1], [1, 1]]]), "does not end"),
        "listed twice": (put("basis", [1, [[0, 2], [1, 1]]]), "listed twice"),
        "no such array": (lambda e: e[0].__setitem__("shared", {"axes": shared(e)}),
                          "no 2-D array"),
        "array also stored": (put("mean", [1, [[0, 1]]]), "also hold the array"),
        "empty shared": (lambda e: e[0].__setitem__("shared", {}), "non-empty 'shared'"),
        "extra key": (lambda e: e[0].__setitem__("x", 1), "non-empty 'shared'"),
        "params not base64": (lambda e: e[0].__setitem__("params", "!!"), "canonical base64"),
        "whole level as object": (lambda e: e.__setitem__(1, {"params": e[1], "shared": {}}),
                                  "non-empty 'shared'"),
        # the source level's own blob is bad: a typed error, not the codec layer's
        "source not params": (lambda e: e.__setitem__(1, base64.b64encode(b"junk" * 4).decode()),
                              "magic"),
        # more columns than the source has, refused before they are allocated
        "runs past the source's width": (put("basis", [1, [[0, width], [1, width - 1]]]),
                                         "more columns than"),
        # whole where the writer shares: not the writer's bytes
        "stored whole": (lambda e: e.__setitem__(0, base64.b64encode(
            data["multi"][0].params.to_bytes()).decode()), "not in canonical form"),
    }
    for case, (edit, message) in cases.items():
        bad = _shared_case(raw, edit)
        with pytest.raises(FormatError, match=message):
            read_shard(io.BytesIO(bad))
        assert not verify_shard(io.BytesIO(bad)).ok, case
    # other columns of the same shape: the rebuilt params are not the ones the header's
    # digest names (the codec may accept them), so verification refuses them
    other = _shared_case(raw, put("basis", [1, [[width - len(np.concatenate(
        [np.arange(a, a + n) for a, n in runs])), len(np.concatenate(
            [np.arange(a, a + n) for a, n in runs]))]]]))
    assert not verify_shard(io.BytesIO(other)).ok
    # a 2.0 shard lists whole params only
    older = rewrite(raw, edit_header=lambda h: h.update(version="2.0"))
    with pytest.raises(FormatError, match="must be a base64 string"):
        read_shard(io.BytesIO(older))


def test_shared_params_round_trip_through_chains_and_any_column_order():
    """pack_params / unpack_params on arrays made to share: level 0's columns among level
    1's in a scrambled order, level 1's among level 2's, level 2 whole: each level comes back
    byte for byte; arrays that share nothing, or are small, stay whole."""
    from semq_transforms.format._shared_params import pack_params, unpack_params

    def fail(detail):
        raise AssertionError(detail)

    rng = np.random.default_rng(4)
    top = rng.standard_normal((40, 30)).astype(np.float16)
    middle = top[:, rng.permutation(30)[:20]]
    low = middle[:, rng.permutation(20)[:9]]
    params = [CodecParams("semq1", 40, {"basis": low, "mean": np.zeros(40, np.float32)}),
              CodecParams("semq2", 40, {"basis": middle, "other": np.ones((40, 3), np.float32)}),
              CodecParams("semq4", 40, {"basis": top}),
              CodecParams("int8", 40, {"basis": np.zeros((40, 2), np.float16)})]
    raw = pack_params(params)
    entries = json.loads(raw)
    assert [sorted(e["shared"]) if isinstance(e, dict) else None for e in entries] == [
        ["basis"], ["basis"], None, None]
    assert entries[0]["shared"]["basis"][0] == 1 and entries[1]["shared"]["basis"][0] == 2
    assert unpack_params(raw, 4, fail, allow_shared=True) == [p.to_bytes() for p in params]


def test_params_metadata_is_checked(data, mixed_bytes):
    many = shard_bytes(np.arange(70_000), [EncodedLevel(
        data["single"][0].codec, data["single"][0].params,
        np.resize(data["single"][0].codes, (70_000, data["single"][0].codes.shape[1])))])
    params = {PARAMS_KEY: json.dumps(params_texts(many), separators=(",", ":"))}
    cases = {
        "no params": ([None], mixed_bytes, "lacks the levels' params"),
        "another key": ([{**params, "x": "y"}], many, "expected only"),
        "not canonical": ([{PARAMS_KEY: "[ " + params[PARAMS_KEY][1:]}], many,
                          "not in canonical form"),
        "one per level": ([{PARAMS_KEY: "[]"}], many, "one entry per level"),
        "on batch 1 too": ([params, params], many, "only the first record batch"),
    }
    for case, (metadata, base, message) in cases.items():
        bad = _with_batch_metadata(base, metadata)
        with pytest.raises(FormatError, match=message):
            read_shard(io.BytesIO(bad))
        assert not verify_shard(io.BytesIO(bad)).ok, case


def test_a_format_1_shard_with_params_in_record_batch_0_is_refused():
    old = (ROOT / "tests/golden/shards/v0.3/semq1_int8_64x48.semq").read_bytes()
    texts = [lv["params"] for lv in header_of(old)["levels"]]
    bad = _with_batch_metadata(old, [{PARAMS_KEY: json.dumps(texts, separators=(",", ":"))}])
    with pytest.raises(FormatError, match="format 1.x keeps params in the header"):
        read_shard(io.BytesIO(bad))
    assert read_shard(io.BytesIO(old), verify=True).header["version"] == "1.0"


def test_read_shard_header_reads_only_the_footer(data):
    big = shard_bytes(data["int64"], data["single"])

    class Counting(io.BytesIO):
        read_bytes = 0

        def read(self, n=-1):
            out = super().read(n)
            Counting.read_bytes += len(out)
            return out

    header = read_shard_header(Counting(big))
    assert header == read_shard(io.BytesIO(big)).header
    footer = struct.unpack_from("<i", big, len(big) - 10)[0]
    assert Counting.read_bytes == 8 + footer + 10 < len(big) - N * D


def test_missing_file_raises_oserror(tmp_path):
    for call in (read_shard, read_shard_header, verify_shard):
        with pytest.raises(FileNotFoundError):
            call(str(tmp_path / "absent.semq"))


# -- writer input -----------------------------------------------------------------------------------


def test_write_rejects_bad_input(data):
    levels, ids = data["mixed"], data["int64"]
    cases = [
        (InputShapeError, {"ids": ids[:-1]}),
        (InputShapeError, {"ids": ids.reshape(-1, 3)}),
        (InputDtypeError, {"ids": ids.astype(np.float64)}),
        (InputDtypeError, {"ids": ["a", 1] * (N // 2)}),
        (InputDtypeError, {"ids": "abc"}),
        (InvalidInputError, {"ids": np.full(N, 2**63, dtype=np.uint64)}),
        (InvalidInputError, {"ids": [2**63] * N}),
        (InvalidInputError, {"ids": ["\ud800"] * N}),
        (InvalidInputError, {"ids": ["x" * 20000] * N}),
        (InvalidInputError, {"levels": []}),
        (InvalidInputError, {"levels": levels[0]}),
        (InputShapeError, {"levels": [levels[0], make_levels(N + 1, D, ("int8",))[1][0]]}),
        (InputShapeError, {"levels": [levels[0], make_levels(N, D + 2, ("int8",))[1][0]]}),
        (InvalidInputError, {"stats": {"a": float("nan")}}),
        (InputDtypeError, {"stats": {"a": "text"}}),
        (InvalidInputError, {"path": ""}),
    ]
    for error, override in cases:
        kwargs = {"ids": ids, "levels": levels, "path": "p", **override}
        with pytest.raises(error):
            write_shard(io.BytesIO(), **kwargs)
    # ints given as a list, and unsigned arrays that fit, are accepted
    assert write_shard(io.BytesIO(), ids=ids.tolist(), levels=levels, path="p").id_min == -100
    assert write_shard(io.BytesIO(), ids=np.arange(N, dtype=np.uint32), levels=levels,
                       path="p").id_max == N - 1


def test_encoded_level_checks_its_parts(data):
    level = data["mixed"][1]
    with pytest.raises(ParamsError):
        EncodedLevel(get_codec("semq1"), level.params, level.codes)
    with pytest.raises(CodesMismatchError):
        EncodedLevel(level.codec, level.params, level.codes[:, :-1])
    rebuilt = EncodedLevel("int8", level.params, level.codes)
    assert rebuilt == level and rebuilt.codec == get_codec("int8")
    assert (rebuilt.rows, rebuilt.dim) == (N, D)
