"""Input fingerprints (issue 16): the per-row hash of the input vector, its shard column and
header fields, the reader's checks, and ``Index.diff`` telling rows whose input changed from
rows only re-encoded (FORMAT.md, "Input fingerprints")."""

from __future__ import annotations

import hashlib
import io
import shutil
import struct
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from semq_transforms.build import build_index
from semq_transforms.cli import main
from semq_transforms.errors import (
    FormatError,
    InputDtypeError,
    InputShapeError,
    IntegrityError,
    NonFiniteError,
)
from semq_transforms.format.fingerprint import row_fingerprints
from semq_transforms.format.meta import LevelMeta, ShardMeta
from semq_transforms.format.shard import read_shard, verify_shard, write_shard
from semq_transforms.format.store import IndexStore
from semq_transforms.index import Index
from semq_transforms.levels import encode_levels
from tests.conftest import ROOT, make_anisotropic
from tests.golden.make_golden_shard import SHARD
from tests.shard_helpers import (
    check_only,
    dump_header,
    header_of,
    make_levels,
    replace_column,
    rewrite,
    shard_bytes,
)

N, D = 300, 32


def _spec_fingerprints(x: np.ndarray) -> np.ndarray:
    """FORMAT.md's definition, with hashlib and struct only."""
    rows = [hashlib.blake2b(struct.pack(f"<{len(row)}f", *[v + 0.0 for v in row]),
                            digest_size=8).digest() for row in x.tolist()]
    return np.frombuffer(b"".join(rows), np.uint8).reshape(len(rows), 8)


@pytest.fixture(scope="module")
def data():
    x, levels = make_levels(N, D, ("semq1", "int8"))
    fp = row_fingerprints(x)
    ids = np.arange(N, dtype=np.int64)
    return {"x": x, "levels": levels, "fp": fp, "ids": ids,
            "with": shard_bytes(ids, levels, fingerprints=fp), "without": shard_bytes(ids, levels)}


# -- the fingerprint ------------------------------------------------------------------------------


def test_fingerprints_follow_the_spec_and_ignore_the_sign_of_zero():
    x = make_anisotropic(50, 24, seed=2)
    x[3, :5] = 0.0
    fp = row_fingerprints(x)
    assert fp.dtype == np.uint8 and fp.shape == (50, 8) and fp.flags.c_contiguous
    np.testing.assert_array_equal(fp, _spec_fingerprints(x))
    negative = x.copy()
    negative[3, :5] = -0.0
    assert np.signbit(negative[3, :5]).all()
    np.testing.assert_array_equal(row_fingerprints(negative), fp)      # -0.0 hashes as 0.0
    # the codecs' float32 conversion: float64 input hashes as its float32 rounding
    np.testing.assert_array_equal(row_fingerprints(x.astype(np.float64)), fp)
    bumped = x.copy()
    bumped[7, 11] = np.nextafter(bumped[7, 11], np.float32(2))        # one ulp
    changed = np.flatnonzero((row_fingerprints(bumped) != fp).any(axis=1))
    assert changed.tolist() == [7]


def test_the_example_in_format_md():
    """A known answer, for readers in other languages (and against a changed definition)."""
    fp = row_fingerprints(np.array([[1.0, -0.0, -2.5]], np.float32))
    assert fp.tobytes().hex() == "7138f5b73d73c504"
    assert "`(1.0, -0.0, -2.5)` hashes the 12 bytes `0000803f 00000000 000020c0` to\n  " \
           "`7138f5b73d73c504`" in (ROOT / "semq_transforms/format/FORMAT.md").read_text()


def test_fingerprints_do_not_depend_on_batching_or_order():
    x = make_anisotropic(301, 16, seed=4)
    whole = row_fingerprints(x)
    for batch in (1, 7, 300):
        parts = [row_fingerprints(x[i:i + batch]) for i in range(0, len(x), batch)]
        np.testing.assert_array_equal(np.concatenate(parts), whole)
    order = np.random.default_rng(0).permutation(len(x))
    np.testing.assert_array_equal(row_fingerprints(x[order]), whole[order])
    np.testing.assert_array_equal(row_fingerprints(np.asfortranarray(x)), whole)


_CHILD = """
import sys
from semq_transforms.format.fingerprint import row_fingerprints
from tests.conftest import make_anisotropic
sys.stdout.write(row_fingerprints(make_anisotropic(500, 384, seed=8)).tobytes().hex())
"""


def test_fingerprints_are_the_same_bytes_in_another_process():
    env = {"PYTHONPATH": str(ROOT), "PYTHONHASHSEED": "7", "OPENBLAS_NUM_THREADS": "1",
           "PATH": "/usr/bin:/bin"}
    out = subprocess.run([sys.executable, "-c", _CHILD], check=True, cwd=ROOT, env=env,
                         capture_output=True, text=True, timeout=120).stdout
    assert bytes.fromhex(out) == row_fingerprints(make_anisotropic(500, 384, seed=8)).tobytes()


def test_fingerprints_need_finite_vectors():
    x = make_anisotropic(4, 8)
    x[2, 3] = np.nan
    with pytest.raises(NonFiniteError, match="row 2, column 3"):
        row_fingerprints(x)
    with pytest.raises(InputShapeError):
        row_fingerprints(x[0])


# -- the shard column -----------------------------------------------------------------------------


def test_a_shard_stores_the_fingerprints(data):
    raw = data["with"]
    schema = pa.ipc.open_file(raw).schema
    assert schema.names == ["id", "codes_0", "codes_1", "input_fp"]
    assert schema.field("input_fp").type == pa.binary(8) and not schema.field("input_fp").nullable
    header = header_of(raw)
    assert header["input_fingerprint"] == "blake2b-64"
    assert header["digests"]["fingerprints"] == hashlib.sha256(data["fp"].tobytes()).hexdigest()
    shard = read_shard(io.BytesIO(raw))
    np.testing.assert_array_equal(shard.fingerprints, data["fp"])
    assert not shard.fingerprints.flags.writeable
    assert verify_shard(io.BytesIO(raw)).ok

    without = read_shard(io.BytesIO(data["without"]))
    assert without.fingerprints is None
    assert "input_fingerprint" not in without.header
    # the fingerprints are content: the content digest covers them
    assert without.content_sha256 != shard.content_sha256


def test_fingerprints_span_record_batches():
    rows = 65536 + 10
    x = np.random.default_rng(1).standard_normal((rows, 4)).astype(np.float32)
    levels = encode_levels(x, ["f16"])
    fp = row_fingerprints(x)
    shard = read_shard(io.BytesIO(shard_bytes(np.arange(rows), levels, fingerprints=fp)))
    np.testing.assert_array_equal(shard.fingerprints, fp)


def _fp_array(fp: np.ndarray, width: int = 8) -> pa.Array:
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), fp.size // width,
                                                [None, pa.py_buffer(fp.tobytes())])


def test_verify_names_a_tampered_fingerprint(data):
    fp = data["fp"].copy()
    fp[123, 5] ^= 0x01
    tampered = rewrite(data["with"], edit_table=lambda t: replace_column(t, "input_fp",
                                                                         _fp_array(fp)))
    check_only(tampered, "fingerprints")


def test_a_fingerprint_column_re_digested_still_fails_the_content_digest(data):
    fp = data["fp"].copy()
    fp[0] = 0

    def header(h):
        h["digests"]["fingerprints"] = hashlib.sha256(fp.tobytes()).hexdigest()

    check_only(rewrite(data["with"], edit_header=header,
                       edit_table=lambda t: replace_column(t, "input_fp", _fp_array(fp))),
               "header")


COLUMN_EDITS = {
    "16 bytes wide": lambda t, fp: replace_column(
        t, "input_fp", _fp_array(np.concatenate([fp, fp], axis=1), 16),
        pa.field("input_fp", pa.binary(16), nullable=False)),
    "4 bytes wide": lambda t, fp: replace_column(
        t, "input_fp", _fp_array(np.ascontiguousarray(fp[:, :4]), 4),
        pa.field("input_fp", pa.binary(4), nullable=False)),
    "variable binary": lambda t, fp: replace_column(
        t, "input_fp", t.column("input_fp").cast(pa.binary()),
        pa.field("input_fp", pa.binary(), nullable=False)),
    "nullable": lambda t, fp: replace_column(t, "input_fp", t.column("input_fp"),
                                             pa.field("input_fp", pa.binary(8))),
    "missing": lambda t, fp: t.drop_columns(["input_fp"]),
    "renamed": lambda t, fp: t.rename_columns(["id", "codes_0", "codes_1", "fp"]),
    "before the codes": lambda t, fp: t.select(["id", "input_fp", "codes_0", "codes_1"]),
}


@pytest.mark.parametrize("case", sorted(COLUMN_EDITS))
def test_a_fingerprint_column_unlike_the_header_is_refused(data, case):
    bad = rewrite(data["with"], edit_table=lambda t: COLUMN_EDITS[case](t, data["fp"]))
    with pytest.raises(FormatError, match="schema") as err:
        read_shard(io.BytesIO(bad), verify=False)
    assert not isinstance(err.value, IntegrityError)
    assert verify_shard(io.BytesIO(bad)).problems[0].startswith("schema:")


def test_a_fingerprint_column_the_header_does_not_declare_is_refused(data):
    extra = rewrite(data["without"], edit_table=lambda t: t.append_column(
        pa.field("input_fp", pa.binary(8), nullable=False), _fp_array(data["fp"])))
    with pytest.raises(FormatError, match="schema"):
        read_shard(io.BytesIO(extra))


def test_nulls_in_the_fingerprint_column_are_refused(data):
    def edit(t):  # pyarrow lets a batch hold nulls in a field declared not null
        values = [None if i == 9 else bytes(row) for i, row in enumerate(data["fp"])]
        columns = [c.chunk(0) for c in t.combine_chunks().columns[:-1]]
        return pa.Table.from_batches([pa.RecordBatch.from_arrays(
            [*columns, pa.array(values, pa.binary(8))], schema=t.schema)])

    with pytest.raises(FormatError, match="fingerprints: record batch 0 has 1 nulls"):
        read_shard(io.BytesIO(rewrite(data["with"], edit_table=edit)))


HEADER_EDITS = {
    "unknown scheme": ("with", lambda h: h.update(input_fingerprint="blake3-64"),
                       "input_fingerprint"),
    "scheme not a string": ("with", lambda h: h.update(input_fingerprint=8),
                            "input_fingerprint"),
    "no digest": ("with", lambda h: h["digests"].pop("fingerprints"), "lacks"),
    "digest not hex": ("with", lambda h: h["digests"].update(fingerprints="x"),
                       "digests.fingerprints"),
    "digest without the field": ("without", lambda h: h["digests"].update(
        fingerprints="0" * 64), "unknown keys"),
    "field without the column": ("without", lambda h: h.update(
        input_fingerprint="blake2b-64", digests={**h["digests"], "fingerprints": "0" * 64}),
        "schema"),
}


@pytest.mark.parametrize("case", sorted(HEADER_EDITS))
def test_fingerprint_header_fields_are_checked(data, case):
    base, edit, message = HEADER_EDITS[case]
    bad = rewrite(data[base], edit_header=edit)
    with pytest.raises(FormatError, match=message) as err:
        read_shard(io.BytesIO(bad))
    assert not isinstance(err.value, IntegrityError)


def test_a_format_1_header_with_fingerprints_is_refused():
    """Format 1.0 had no fingerprints: its header may not declare them."""
    old = (SHARD.parent / "v0.3" / SHARD.name).read_bytes()
    header = header_of(old)
    header["input_fingerprint"] = "blake2b-64"
    header["digests"]["fingerprints"] = "0" * 64
    table = pa.ipc.open_file(old).read_all().replace_schema_metadata(
        {"semq": dump_header(header)})
    sink = pa.BufferOutputStream()
    with pa.ipc.new_file(sink, table.schema) as writer:    # 1.0: no record batch metadata
        writer.write_table(table)
    with pytest.raises(FormatError, match="unknown keys"):
        read_shard(io.BytesIO(sink.getvalue().to_pybytes()))


@pytest.mark.parametrize("bad, error", [
    (lambda fp: fp.astype(np.int8), InputDtypeError),
    (lambda fp: fp.tolist(), InputDtypeError),
    (lambda fp: fp[:-1], InputShapeError),
    (lambda fp: fp.reshape(-1), InputShapeError),
    (lambda fp: np.zeros((len(fp), 16), np.uint8), InputShapeError),
])
def test_write_shard_checks_the_fingerprints(data, bad, error):
    with pytest.raises(error, match="fingerprints"):
        write_shard(io.BytesIO(), ids=data["ids"], levels=data["levels"], path="p",
                    fingerprints=bad(data["fp"]))
    non_contiguous = np.asfortranarray(data["fp"])
    assert write_shard(io.BytesIO(), ids=data["ids"], levels=data["levels"], path="p",
                       fingerprints=non_contiguous).content_sha256 == read_shard(
        io.BytesIO(data["with"])).content_sha256


# -- Index.diff -----------------------------------------------------------------------------------


@pytest.fixture()
def corpus() -> np.ndarray:
    return make_anisotropic(1000, 32, seed=21)


def test_re_encoding_the_same_input_changes_nothing(tmp_path, corpus):
    """Another codec, another shard size and another row order: no input changed."""
    url = str(tmp_path / "idx")
    build_index(url, corpus, codecs=["semq4"], rows_per_shard=400)
    order = np.random.default_rng(1).permutation(len(corpus))
    build_index(url, corpus[order], ids=order, codecs=["semq1", "semq8"], rows_per_shard=300)
    build_index(url, corpus, codecs=["semq4"], rows_per_shard=250)
    base = Index.open(url, 1)
    for other in (2, 3):
        report = base.diff(Index.open(url, other), sample_queries=20)
        assert report.fingerprints and report.note is None
        assert report.changed.size == 0 and report.added.size == report.removed.size == 0
        assert report.unchanged.tolist() == list(range(1000))
        assert report.drift_changed.rows == 0
        assert report.drift_unchanged.rows == 1000 and report.drift_unchanged.max > 0
        assert report.drift == report.drift_unchanged


def test_ten_changed_vectors_are_exactly_the_changed_ids(tmp_path, corpus):
    url = str(tmp_path / "idx")
    build_index(url, corpus, codecs=["semq4"], rows_per_shard=500)
    edited = corpus.copy()
    moved = np.sort(np.random.default_rng(2).choice(1000, 10, replace=False))
    edited[moved] = make_anisotropic(10, 32, seed=99)
    build_index(url, edited, codecs=["semq4"], rows_per_shard=500)
    report = Index.open(url, 1).diff(Index.open(url, 2), sample_queries=20)
    assert report.changed.tolist() == moved.tolist()
    assert report.unchanged.size == 990 and np.intersect1d(report.unchanged, moved).size == 0
    assert report.drift_changed.rows == 10 and report.drift_unchanged.rows == 990
    # the changed rows moved far; the others only by the re-fit of their shard's params
    # (what made the restored-vector diff call them changed too)
    assert report.drift_changed.mean > 10 * report.drift_unchanged.mean > 0


def test_added_and_removed_ids_are_exact(tmp_path, corpus):
    url = str(tmp_path / "idx")
    build_index(url, corpus[:800], ids=np.arange(800), codecs=["semq4"], rows_per_shard=300)
    ids_2 = np.concatenate([np.arange(100, 800), np.arange(5000, 5150)])
    x_2 = np.concatenate([corpus[100:800], corpus[850:1000]])
    x_2[:3] *= 1.5                                      # ids 100, 101, 102: input changed
    build_index(url, x_2, ids=ids_2, codecs=["semq2"], rows_per_shard=256)
    report = Index.open(url, 1).diff(Index.open(url, 2), sample_queries=20)
    assert report.removed.tolist() == list(range(100))
    assert report.added.tolist() == list(range(5000, 5150))
    assert report.changed.tolist() == [100, 101, 102]
    assert report.unchanged.tolist() == list(range(103, 800))
    payload = report.to_json(max_ids=5)
    assert payload["fingerprints"] is True and payload["note"] is None
    assert payload["changed"] == {"count": 3, "sample": [100, 101, 102]}
    assert payload["unchanged"]["count"] == 697 and payload["added"]["count"] == 150
    assert payload["drift"]["changed"]["rows"] == 3
    assert payload["drift"]["unchanged"]["rows"] == 697
    assert payload["drift"]["common"] == {"rows": 700, "mean": report.drift_mean,
                                          "max": report.drift_max}


def test_string_ids_diff_by_fingerprint(tmp_path, corpus):
    url = str(tmp_path / "idx")
    ids = [f"doc-{i}" for i in range(300)]
    build_index(url, corpus[:300], ids=ids, codecs=["int8"], rows_per_shard=100)
    x = corpus[:300].copy()
    x[[5, 250]] = corpus[[900, 901]]
    build_index(url, x, ids=ids, codecs=["semq2"], rows_per_shard=150)
    report = Index.open(url, 1).diff(Index.open(url, 2), sample_queries=10)
    assert report.changed.tolist() == ["doc-250", "doc-5"]       # sorted as strings
    assert report.unchanged.size == 298


def _commit_without_fingerprints(url: str, x: np.ndarray, codecs: list[str]) -> None:
    store = IndexStore(url)
    levels = encode_levels(x, codecs)
    path = store.shard_path("plain", 0)
    with store.open_write(path) as f:
        meta = write_shard(f, ids=np.arange(len(x)), levels=levels, path=path)
    store.commit([meta], dim=x.shape[1], codecs=codecs, run_id="plain")


def test_diff_falls_back_without_fingerprints(tmp_path, corpus, capsys):
    """A version without fingerprints: 'changed' means the restored vectors differ, and the
    report says so (the behaviour issue 16 reported: every re-encoded row is changed)."""
    url = str(tmp_path / "idx")
    _commit_without_fingerprints(url, corpus[:400], ["semq4"])
    build_index(url, corpus[:400], codecs=["semq2"])
    old, new = Index.open(url, 1), Index.open(url, 2)
    report = old.diff(new, sample_queries=10)
    assert not report.fingerprints
    assert "the base (version 1) has shards without input fingerprints" in report.note
    assert report.changed.size == 400 and report.unchanged.size == 0   # all re-encoded
    assert report.drift_changed is None and report.drift_unchanged is None
    assert report.to_json()["drift"]["changed"] is None
    assert "the other (version 1)" in new.diff(old, sample_queries=10).note
    same = old.diff(old, sample_queries=10)
    assert not same.fingerprints and same.changed.size == 0 and same.unchanged.size == 400
    assert main(["diff", url, "--sample-queries", "5"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == ("version 1 -> 2: +0 added, -0 removed, 400 changed (restored vectors "
                        "differ), 0 unchanged")
    assert lines[1].startswith("drift: mean ")
    assert lines[2].startswith("note: the base (version 1) has shards without input fingerprints")


def test_a_format_1_shard_reads_and_diff_falls_back(tmp_path):
    """The 0.3 golden shard (format 1.0) published in an index, then the same input built
    again: diff still works, without fingerprints."""
    old = SHARD.parent / "v0.3" / SHARD.name
    with np.load(old.with_suffix(".npz"), allow_pickle=False) as stored:
        x, ids = stored["x"], stored["ids"]
    url = tmp_path / "idx"
    path = "runs/old/shard-00000.semq"
    (url / "runs" / "old").mkdir(parents=True)
    shutil.copyfile(old, url / path)
    shard = read_shard(str(url / path))
    assert shard.header["version"] == "1.0" and shard.fingerprints is None
    meta = ShardMeta(path=path, rows=shard.rows, dim=shard.dim, file_bytes=shard.file_bytes,
                     levels=tuple(LevelMeta(lv.codec.spec, lv.codes.shape[1], lv.params.digest())
                                  for lv in shard.levels),
                     content_sha256=shard.content_sha256, file_sha256=shard.file_sha256,
                     id_type="int64", id_min=int(ids.min()), id_max=int(ids.max()),
                     stats=shard.stats)
    IndexStore(str(url)).commit([meta], dim=shard.dim, codecs=list(shard.codecs), run_id="old")
    build_index(str(url), x, ids=ids, codecs=list(shard.codecs))
    v1, v2 = Index.open(str(url), 1), Index.open(str(url), 2)
    assert v1.verify().ok
    report = v1.diff(v2, sample_queries=10)
    assert not report.fingerprints and "version 1" in report.note
    assert report.added.size == report.removed.size == 0
    assert report.changed.size + report.unchanged.size == len(ids)
    assert v2.diff(v2, sample_queries=10).fingerprints
