"""The input stage without Beam: expanding inputs, planning splits from metadata, reading and
validating batches (semq_transforms.transforms.sources)."""

from __future__ import annotations

import io
import pickle
from pathlib import Path

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import ipc

from semq_transforms.codecs import get_codec, max_abs_value
from semq_transforms.codecs.base import F16_MAX, MAX_ABS_VALUE
from semq_transforms.errors import InputReadError
from semq_transforms.format._ids import MAX_ID_BYTES
from semq_transforms.transforms import _ipc_footer
from semq_transforms.transforms.rows import REJECT_REASONS, Batch, write_dead_letters
from semq_transforms.transforms.sources import (
    Split,
    expand_inputs,
    filesystem_for,
    find_duplicate_ids,
    iter_split,
    plan_inputs,
    plan_splits,
    read_split,
)
from tests.input_files import (
    DIM,
    bad_rows_table,
    embedding_table,
    fixed_list,
    vectors,
    write_arrow,
    write_npy,
    write_parquet,
)


def read_all(splits, **kwargs) -> list[Batch]:
    return [b for s in splits for b in iter_split(s, **kwargs)]


def accepted(batches: list[Batch]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, vectors, positions) of all accepted rows, in global order."""
    ids = np.concatenate([b.ids for b in batches])
    x = np.concatenate([b.vectors for b in batches])
    positions = np.concatenate([b.positions for b in batches])
    order = np.argsort(positions, kind="stable")
    return ids[order], x[order], positions[order]


def reconcile(batches: list[Batch]) -> None:
    for b in batches:
        assert b.rows == b.accepted + len(b.rejected)
        assert b.vectors.dtype == np.float32 and b.vectors.flags.c_contiguous
        assert b.positions.dtype == np.int64 and b.ids.shape == b.positions.shape


# -- expanding and planning -----------------------------------------------------------------


@pytest.fixture(scope="module")
def parquet_dir(tmp_path_factory) -> Path:
    """Three Parquet files (fixed_size_list vectors, int64 ids) with 100-row row groups,
    plus a hidden file and a _SUCCESS marker that must be ignored."""
    root = tmp_path_factory.mktemp("parquet")
    start = 0
    for name, n in (("part-1.parquet", 250), ("part-0.parquet", 300), ("sub/part-2.parquet", 50)):
        write_parquet(str(root / name), embedding_table(np.arange(start, start + n) * 10,
                                                       vectors(n, seed=start)),
                      row_group_size=100)
        start += n
    (root / "_SUCCESS").write_bytes(b"")
    (root / ".part-0.parquet.crc").write_bytes(b"junk")
    return root


def test_expand_inputs_sorts_globs_and_folders(parquet_dir):
    by_glob = expand_inputs(f"{parquet_dir}/*.parquet")
    assert by_glob == [f"file://{parquet_dir}/part-0.parquet",
                       f"file://{parquet_dir}/part-1.parquet"]
    by_folder = expand_inputs(str(parquet_dir))
    assert by_folder == by_glob + [f"file://{parquet_dir}/sub/part-2.parquet"]
    assert expand_inputs(f"{parquet_dir}/**/*.parquet") == by_folder
    assert expand_inputs(f"{parquet_dir}/part-1.parquet") == by_glob[1:]
    with pytest.raises(InputReadError, match="no input files match .*nothing-\\*"):
        expand_inputs(f"{parquet_dir}/nothing-*.parquet")
    with pytest.raises(InputReadError, match="missing.parquet"):
        expand_inputs(f"{parquet_dir}/missing.parquet")


def test_parquet_row_groups_become_splits_with_global_offsets(parquet_dir):
    files = expand_inputs(str(parquet_dir))
    splits = plan_splits(files, batch_rows=100)
    # part-0: 300 rows = 3 row groups; part-1: 250 = 100+100+50; part-2: 50.
    assert [(s.url.rsplit("/", 1)[1], s.row_start, s.row_stop, s.row_groups)
            for s in splits] == [
        ("part-0.parquet", 0, 100, (0,)), ("part-0.parquet", 100, 200, (1,)),
        ("part-0.parquet", 200, 300, (2,)), ("part-1.parquet", 0, 100, (0,)),
        ("part-1.parquet", 100, 200, (1,)), ("part-1.parquet", 200, 250, (2,)),
        ("part-2.parquet", 0, 50, (0,))]
    assert [s.global_row_offset for s in splits] == [0, 100, 200, 300, 400, 500, 550]
    assert all(s.format == "parquet" and s.vector_width is None for s in splits)
    # Small row groups are merged up to batch_rows; planning twice gives the same plan.
    merged = plan_splits(files, batch_rows=250, vector_column="embedding", id_column="id")
    assert [(s.row_start, s.row_stop, s.row_groups) for s in merged] == [
        (0, 200, (0, 1)), (200, 300, (2,)), (0, 250, (0, 1, 2)), (0, 50, (0,))]
    assert merged == plan_splits(files, batch_rows=250, vector_column="embedding",
                                 id_column="id")
    assert {s.vector_width for s in merged} == {DIM}


def test_global_positions_follow_sorted_files_then_rows(parquet_dir):
    plan = plan_inputs(str(parquet_dir), batch_rows=64)
    assert plan.total_rows == 600 and plan.dim == DIM and plan.formats == ("parquet",)
    batches = read_all(plan.splits, batch_rows=64)
    reconcile(batches)
    assert max(b.rows for b in batches) <= 64
    ids, x, positions = accepted(batches)
    np.testing.assert_array_equal(positions, np.arange(600))
    # Files were written with ids start*10 in write order part-1 (0..), part-0 (250..),
    # part-2 (550..); sorted order is part-0, part-1, part-2.
    expected_ids = np.concatenate([np.arange(250, 550), np.arange(0, 250),
                                   np.arange(550, 600)]) * 10
    np.testing.assert_array_equal(ids, expected_ids)
    np.testing.assert_array_equal(x[:300], vectors(300, seed=250))


def test_group_chunks_skips_empty_row_groups(tmp_path):
    x = vectors(5, seed=1)
    writer = pq.ParquetWriter(tmp_path / "e.parquet", embedding_table(np.arange(5), x).schema)
    for part in (slice(0, 2), slice(2, 2), slice(2, 5)):
        writer.write_table(embedding_table(np.arange(5)[part], x[part]))
    writer.close()
    splits = plan_splits([str(tmp_path / "e.parquet")], batch_rows=2)
    assert [(s.row_start, s.row_stop, s.row_groups) for s in splits] == [(0, 2, (0,)),
                                                                        (2, 5, (2,))]
    ids, got, _ = accepted(read_all(splits))
    np.testing.assert_array_equal(ids, np.arange(5))
    np.testing.assert_array_equal(got, x)


# -- formats --------------------------------------------------------------------------------


@pytest.mark.parametrize("vector_type", ["list", "large_list"])
def test_parquet_list_vectors_and_string_ids(tmp_path, vector_type):
    x = vectors(30, seed=3).astype(np.float64)
    list_type = pa.list_(pa.float64()) if vector_type == "list" else pa.large_list(pa.float64())
    table = pa.table({"doc": pa.array([f"doc-{i}" for i in range(30)]),
                      "emb": pa.array(list(x), list_type)})
    url = write_parquet(str(tmp_path / "s.parquet"), table, row_group_size=7)
    plan = plan_inputs(url, vector_column="emb", id_column="doc", batch_rows=10)
    assert plan.dim == DIM  # inferred from the first rows of a variable-length column
    assert [s.row_groups for s in plan.splits] == [(0,), (1,), (2,), (3, 4)]
    batch = read_split(plan.splits[1], vector_column="emb", id_column="doc", dim=DIM)
    assert batch.ids.dtype == object and batch.ids.tolist() == [f"doc-{i}" for i in
                                                                range(7, 14)]
    np.testing.assert_array_equal(batch.vectors, x[7:14].astype(np.float32))
    ids, got, _ = accepted(read_all(plan.splits, vector_column="emb", id_column="doc",
                                    dim=plan.dim))
    assert len(ids) == 30 and got.dtype == np.float32


def test_float16_vectors_and_positions_as_ids(tmp_path):
    x = vectors(12, seed=4)
    table = pa.table({"embedding": fixed_list(x.astype(np.float16), pa.float16())})
    url = write_parquet(str(tmp_path / "h.parquet"), table, row_group_size=5)
    plan = plan_inputs(url, id_column=None)
    ids, got, _positions = accepted(read_all(plan.splits, id_column=None))
    np.testing.assert_array_equal(ids, np.arange(12))
    np.testing.assert_array_equal(got, x.astype(np.float16).astype(np.float32))


def test_arrow_ipc_record_batches(tmp_path):
    x = vectors(95, seed=5)
    url = write_arrow(str(tmp_path / "a.arrow"), embedding_table(np.arange(95) + 7, x),
                      batch_rows=20)
    splits = plan_splits([url], batch_rows=40, vector_column="embedding", id_column="id")
    assert [(s.format, s.row_start, s.row_stop, s.row_groups) for s in splits] == [
        ("arrow", 0, 40, (0, 1)), ("arrow", 40, 80, (2, 3)), ("arrow", 80, 95, (4,))]
    batches = read_all(splits, batch_rows=15)
    assert [b.rows for b in batches] == [15, 5, 15, 5, 15, 5, 15, 5, 15]
    ids, got, _ = accepted(batches)
    np.testing.assert_array_equal(ids, np.arange(95) + 7)
    np.testing.assert_array_equal(got, x)


def test_uint64_ids_beyond_int64_name_the_file_and_row(tmp_path):
    """Ids are int64 in an index: a uint64 id above 2**63 - 1 fails its file, naming the row
    (it named the file only, through pyarrow's cast error)."""
    ids = np.arange(20, dtype=np.uint64)
    ids[13] = 2**63 + 5
    table = pa.table({"id": pa.array(ids, pa.uint64()),
                      "embedding": fixed_list(vectors(20, seed=8))})
    url = write_parquet(str(tmp_path / "u.parquet"), table, row_group_size=8)
    plan = plan_inputs(url)
    with pytest.raises(InputReadError, match=r"u\.parquet: id 9223372036854775813 at row 13 "):
        read_all(plan.splits)
    x_url = write_npy(str(tmp_path / "x.npy"), vectors(20, seed=8))
    ids_url = write_npy(str(tmp_path / "ids.npy"), ids)
    plan = plan_inputs(x_url, format="npy", ids_url=ids_url, id_column=None)
    with pytest.raises(InputReadError, match=r"ids\.npy: id 9223372036854775813 at row 13 "):
        read_all(plan.splits, ids_url=ids_url, id_column=None)


def test_a_corrupt_page_met_while_inferring_dim_names_the_file(tmp_path):
    """Without dim, the width of list<float> vectors comes from the first rows: a corrupt page
    there escaped as a raw OSError (a traceback, exit 1), not as InputReadError."""
    x = vectors(300, seed=9)
    path = tmp_path / "a.parquet"
    pq.write_table(pa.table({"id": pa.array(np.arange(300)),
                             "embedding": pa.array(x.tolist(), pa.list_(pa.float32()))}),
                   str(path), row_group_size=100)
    page = pq.ParquetFile(str(path)).metadata.row_group(0).column(1).data_page_offset
    with open(path, "r+b") as f:
        f.seek(page)
        f.write(b"\xff" * 64)
    with pytest.raises(InputReadError, match=r"cannot read .*a\.parquet"):
        plan_inputs(str(path))


def test_arrow_ipc_stream_format_is_refused_saying_so(tmp_path):
    """The stream format has no footer to plan splits from; the error says which format to
    write (pyarrow's "Not an Arrow file" came first and hid that)."""
    table = embedding_table(np.arange(10), vectors(10, seed=7))
    path = tmp_path / "s.arrow"
    with ipc.new_stream(str(path), table.schema) as writer:
        writer.write_table(table)
    with pytest.raises(InputReadError, match="stream format is not supported"):
        plan_splits([str(path)], vector_column="embedding", id_column="id")


@pytest.mark.parametrize("compression", [None, "zstd"])
def test_ipc_footer_row_counts_match_pyarrow(compression):
    x = vectors(40, seed=6)
    table = embedding_table(np.arange(40), x)
    sink = io.BytesIO()
    with ipc.new_file(sink, table.schema,
                      options=ipc.IpcWriteOptions(compression=compression)) as writer:
        for start, stop in ((0, 3), (3, 3), (3, 30), (30, 40)):
            writer.write_batch(table.slice(start, stop - start).to_batches()[0]
                               if stop > start else pa.RecordBatch.from_pylist(
                                   [], schema=table.schema))
    data = sink.getvalue()
    rows = _ipc_footer.record_batch_rows(lambda a, b: data[a:b], len(data))
    reader = ipc.open_file(pa.BufferReader(data))
    assert rows == [reader.get_batch(i).num_rows for i in range(reader.num_record_batches)]
    assert rows == [3, 0, 27, 10]
    with pytest.raises(ValueError, match="Arrow IPC"):
        _ipc_footer.record_batch_rows(lambda a, b: data[:-4][a:b], len(data) - 4)


def test_npy_row_ranges_and_generated_ids(tmp_path):
    x = vectors(50, seed=7).astype(np.float64)
    url = write_npy(str(tmp_path / "x.npy"), x)
    splits = plan_splits([url], batch_rows=16)
    assert [(s.row_start, s.row_stop, s.vector_width) for s in splits] == [
        (0, 16, DIM), (16, 32, DIM), (32, 48, DIM), (48, 50, DIM)]
    batches = list(iter_split(splits[1], batch_rows=6))
    assert [(b.row_start, b.rows) for b in batches] == [(16, 6), (22, 6), (28, 4)]
    # Only the rows' bytes are read (the header once, with the first batch).
    header_bytes = (tmp_path / "x.npy").stat().st_size - x.nbytes
    assert [b.bytes_read for b in batches] == [header_bytes + 6 * DIM * 8, 6 * DIM * 8,
                                               4 * DIM * 8]
    ids, got, _positions = accepted(read_all(splits))
    np.testing.assert_array_equal(ids, np.arange(50))
    np.testing.assert_array_equal(got, x.astype(np.float32))


def test_npy_ids_side_file_in_global_order(tmp_path):
    x0, x1 = vectors(10, seed=8), vectors(7, seed=9)
    write_npy(str(tmp_path / "in/b.npy"), x1)
    write_npy(str(tmp_path / "in/a.npy"), x0)
    ids_url = write_npy(str(tmp_path / "ids.npy"), np.arange(17, dtype=np.uint32) + 1000)
    plan = plan_inputs(str(tmp_path / "in"), ids_url=ids_url, batch_rows=4)
    batches = read_all(plan.splits, ids_url=ids_url, batch_rows=3)
    ids, got, _ = accepted(batches)
    assert ids.dtype == np.int64
    np.testing.assert_array_equal(ids, np.arange(17) + 1000)
    np.testing.assert_array_equal(got, np.concatenate([x0, x1]))
    bad_ids = write_npy(str(tmp_path / "ids16.npy"), np.arange(16))
    with pytest.raises(InputReadError, match="ids16.npy holds 16 ids but the inputs have 17"):
        plan_inputs(str(tmp_path / "in"), ids_url=bad_ids)
    with pytest.raises(ValueError, match="ids_url applies to NPY inputs only"):
        plan_inputs(write_parquet(str(tmp_path / "p.parquet"), embedding_table(
            np.arange(17), np.concatenate([x0, x1])), row_group_size=10), ids_url=ids_url)


def test_memory_filesystem_inputs():
    x = vectors(21, seed=10)
    root = "memory://semq-sources-test"
    write_npy(f"{root}/x.npy", x)
    write_parquet(f"{root}/p/x.parquet", embedding_table(np.arange(21), x), row_group_size=8)
    for url, fmt in ((f"{root}/x.npy", "npy"), (f"{root}/p/*", "parquet")):
        plan = plan_inputs(url, batch_rows=8)
        assert plan.files[0].startswith("memory://") and plan.formats == (fmt,)
        _, got, _ = accepted(read_all(plan.splits))
        np.testing.assert_array_equal(got, x)
    fsspec.filesystem("memory").rm("/semq-sources-test", recursive=True)


def test_s3_inputs(s3_url, s3_storage_options):
    x = vectors(30, seed=11)
    opts = s3_storage_options
    write_parquet(f"{s3_url}/emb/b.parquet", embedding_table(np.arange(30, 60), x),
                  row_group_size=10, storage_options=opts)
    write_arrow(f"{s3_url}/emb/a.arrow", embedding_table(np.arange(30), x), batch_rows=10,
                storage_options=opts)
    write_npy(f"{s3_url}/npy/x.npy", x, storage_options=opts)
    assert expand_inputs(f"{s3_url}/emb/*", storage_options=opts) == [
        f"{s3_url}/emb/a.arrow", f"{s3_url}/emb/b.parquet"]
    # Every s3fs filesystem here is a new instance (tests/s3_server.py), so reuse one.
    fs = filesystem_for(s3_url, opts)
    for pattern, first_id in (("*.arrow", 0), ("*.parquet", 30)):
        plan = plan_inputs(f"{s3_url}/emb/{pattern}", batch_rows=20, storage_options=opts)
        assert len(plan.splits) == 2
        ids, got, _ = accepted(read_all(plan.splits, filesystem=fs))
        np.testing.assert_array_equal(ids, np.arange(first_id, first_id + 30))
        np.testing.assert_array_equal(got, x)
    plan = plan_inputs(f"{s3_url}/npy/x.npy", batch_rows=20, storage_options=opts)
    _, got, _ = accepted(read_all(plan.splits, storage_options=opts))
    np.testing.assert_array_equal(got, x)
    with pytest.raises(InputReadError, match="mix formats arrow, parquet"):
        plan_inputs(f"{s3_url}/emb/*", storage_options=opts)
    with pytest.raises(InputReadError, match="missing"):
        expand_inputs(f"{s3_url}/missing/*.npy", storage_options=opts)


# -- validation and dead letters ------------------------------------------------------------


def test_every_reject_reason_and_reconciliation(tmp_path):
    table, reasons = bad_rows_table()
    url = write_parquet(str(tmp_path / "bad.parquet"), table, row_group_size=5)
    plan = plan_inputs(url, batch_rows=5)
    assert plan.dim == 4
    batches = read_all(plan.splits, dim=plan.dim)
    reconcile(batches)
    rejected = [d for b in batches for d in b.rejected]
    assert {d["row"]: d["reason"] for d in rejected} == reasons
    # every reason a split reader decides (duplicate_id is a global step, bad_element the
    # PCollection sink's: tested elsewhere)
    assert {d["reason"] for d in rejected} == set(REJECT_REASONS) - {"duplicate_id", "bad_element"}
    assert all(d["source"] == plan.files[0] for d in rejected)
    assert {d["row"]: d["id"] for d in rejected}[3] == "a3"
    assert {d["row"]: d["id"] for d in rejected}[1] is None
    ids, got, positions = accepted(batches)
    assert ids.tolist() == ["a0", "a8", "a11"] and positions.tolist() == [0, 8, 11]
    np.testing.assert_array_equal(got[2], [-1.0, 0.5, 0.25, 2.0])
    assert sum(b.rows for b in batches) == 14 == len(ids) + len(rejected)
    assert [d for d in rejected if d["reason"] == "out_of_range"] == [
        {"id": "a12", "source": plan.files[0], "row": 12, "reason": "out_of_range",
         "detail": "vector element 2 is -1e+17; the codecs encode magnitudes up to 1e+16"}]
    assert [d for d in rejected if d["reason"] == "id_too_long"] == [
        {"id": "\u00e9" * 8193, "source": plan.files[0], "row": 13, "reason": "id_too_long",
         "detail": "the id is 16386 UTF-8 bytes; a shard stores at most 16384"}]
    # every dead letter says what was wrong with its row
    assert {d["row"]: d["detail"] for d in rejected} == {
        1: "the id is null",
        2: "the vector is null",
        3: "got 3, expected 4",
        4: "vector element 1 is nan",
        5: "vector element 1 is nan",                  # a null element reads as nan
        6: "every element is 0 (zero vectors have no direction to encode)",
        7: "vector element 0 is inf",
        9: "the id is null",
        10: "got 5, expected 4",
        12: "vector element 2 is -1e+17; the codecs encode magnitudes up to 1e+16",
        13: "the id is 16386 UTF-8 bytes; a shard stores at most 16384"}
    # Zero vectors are kept when not rejected.
    kept = read_all(plan.splits, dim=4, reject_zero_vectors=False)
    assert "a6" in accepted(kept)[0].tolist()
    assert all(d["reason"] != "zero_vector" for b in kept for d in b.rejected)


def test_fixed_size_nulls_overflow_and_wrong_dim(tmp_path):
    x = vectors(6, seed=12).astype(np.float64)
    x[2, 3] = 1e300  # finite as float64, +inf as float32
    vec = fixed_list(x, pa.float64())
    vec = pa.array([v if i != 4 else None for i, v in enumerate(vec.to_pylist())], vec.type)
    table = pa.table({"id": pa.array([0, 1, None, 3, 5, 6], pa.int64()), "embedding": vec})
    # Arrow IPC holds null fixed-size vectors fine.
    url = write_arrow(str(tmp_path / "f.arrow"), table, batch_rows=4)
    batches = read_all(plan_splits([url], batch_rows=4))
    reconcile(batches)
    assert {d["row"]: (d["id"], d["reason"]) for b in batches for d in b.rejected} == {
        2: (None, "null_id"), 4: (5, "null_vector")}
    # Parquet: pyarrow cannot read those nulls back; the error says so and names the file.
    url = write_parquet(str(tmp_path / "f.parquet"), table, row_group_size=6)
    with pytest.raises(InputReadError, match="f.parquet: .*apache/arrow#35692"):
        read_split(plan_splits([url])[0])
    table = pa.table({"id": pa.array(np.arange(6)), "embedding": fixed_list(x)})
    url = write_parquet(str(tmp_path / "g.parquet"), table, row_group_size=6)
    batch = read_split(plan_splits([url])[0])
    assert [(d["id"], d["reason"]) for d in batch.rejected] == [(2, "non_finite")]
    wrong = read_split(plan_splits([url])[0], dim=DIM + 1)
    assert wrong.accepted == 0 and {d["reason"] for d in wrong.rejected} == {"wrong_dimension"}
    assert {d["detail"] for d in wrong.rejected} == {f"got {DIM}, expected {DIM + 1}"}
    assert wrong.vectors.shape == (0, DIM + 1)


@pytest.mark.parametrize("fmt", ["parquet", "npy"])
def test_values_beyond_the_codecs_limit_are_rejected_at_read_time(tmp_path, fmt):
    """A finite value beyond ``max_abs_value`` (the smallest limit of the job's codecs, such
    as float16's 65504) rejects its row as ``out_of_range``, the detail naming the element and
    the value; the limit itself is accepted, NaN keeps precedence, and a float64 value too
    large for float32 stays ``non_finite``."""
    x = vectors(8, seed=21).astype(np.float64)
    x[1, 3] = 70000.0
    x[2, 0] = -F16_MAX           # exactly the limit: accepted
    x[4, 5] = -1e12
    x[5, [0, 6]] = np.nan, 1e17  # NaN first
    x[6, 2] = 1e40               # beyond float32
    if fmt == "npy":
        url = write_npy(str(tmp_path / "big.npy"), x)
    else:
        url = write_parquet(str(tmp_path / "big.parquet"),
                            embedding_table(np.arange(8), x.astype(np.float64)),
                            row_group_size=8)
    [split] = plan_splits([url])
    limit = max_abs_value(["semq4", "f16"])
    assert limit == F16_MAX == get_codec("block4").max_abs_value
    batch = read_split(split, max_abs_value=limit)
    assert batch.positions.tolist() == [0, 2, 3, 7]
    assert list(batch.rejected) == [
        {"id": 1, "source": url, "row": 1, "reason": "out_of_range",
         "detail": "vector element 3 is 70000; the codecs encode magnitudes up to 65504"},
        {"id": 4, "source": url, "row": 4, "reason": "out_of_range",
         "detail": "vector element 5 is -1e+12; the codecs encode magnitudes up to 65504"},
        {"id": 5, "source": url, "row": 5, "reason": "non_finite",
         "detail": "vector element 0 is nan"},
        {"id": 6, "source": url, "row": 6, "reason": "non_finite",
         "detail": "vector element 2 is inf"}]             # 1e40 is beyond float32
    # the default is every codec's limit (1e16): only the non-finite rows go
    assert max_abs_value(["semq4", "int8"]) == MAX_ABS_VALUE
    assert [d["row"] for d in read_split(split).rejected] == [5, 6]


def test_string_ids_longer_than_a_shard_stores_are_rejected(tmp_path):
    """``id_too_long``: more than MAX_ID_BYTES UTF-8 bytes (not characters); exactly that many
    is fine, and so are integer ids and null ids (``null_id``)."""
    ids = ["x" * MAX_ID_BYTES, "x" * (MAX_ID_BYTES + 1), "\u20ac" * (MAX_ID_BYTES // 3),
           "\u20ac" * (MAX_ID_BYTES // 3 + 1), None, "short"]
    url = write_parquet(str(tmp_path / "ids.parquet"),
                        embedding_table(pa.array(ids, pa.string()), vectors(6, seed=22)),
                        row_group_size=6)
    batch = read_split(plan_splits([url])[0])
    assert batch.ids.tolist() == [ids[0], ids[2], "short"]
    assert [(d["row"], d["reason"], d.get("detail")) for d in batch.rejected] == [
        (1, "id_too_long", "the id is 16385 UTF-8 bytes; a shard stores at most 16384"),
        (3, "id_too_long", "the id is 16386 UTF-8 bytes; a shard stores at most 16384"),
        (4, "null_id", "the id is null")]


def test_find_duplicate_ids(tmp_path):
    url = write_parquet(str(tmp_path / "d.parquet"),
                        embedding_table([5, 1, 5, 2, 1, 5], vectors(6, seed=13)),
                        row_group_size=2)
    batches = read_all(plan_splits([url], batch_rows=2))
    assert find_duplicate_ids(batches) == {1: [1, 4], 5: [0, 2, 5]}
    assert find_duplicate_ids(batches[:1]) == {}
    assert find_duplicate_ids([]) == {}


def test_dead_letters_parquet(tmp_path):
    rows = [{"id": "x", "source": "b", "row": 1, "reason": "null_vector"},
            {"id": 7, "source": "a", "row": 9, "reason": "non_finite"},
            {"id": None, "source": "a", "row": 2, "reason": "null_id"}]
    assert write_dead_letters(rows, str(tmp_path / "dl/dead.parquet")) == 3
    table = pq.read_table(tmp_path / "dl/dead.parquet")
    assert table.to_pylist() == [
        {"id": None, "source": "a", "row": 2, "reason": "null_id", "detail": None},
        {"id": "7", "source": "a", "row": 9, "reason": "non_finite", "detail": None},
        {"id": "x", "source": "b", "row": 1, "reason": "null_vector", "detail": None}]
    assert write_dead_letters([], str(tmp_path / "none.parquet")) == 0
    assert pq.read_table(tmp_path / "none.parquet").num_rows == 0


def test_split_and_batch_pickle():
    split = Split("s3://b/x.parquet", "parquet", 0, 10, 100, (0, 1), 8)
    assert pickle.loads(pickle.dumps(split)) == split
    table, _ = bad_rows_table()
    sink = io.BytesIO()
    pq.write_table(table, sink)
    fs = fsspec.filesystem("memory")
    fs.pipe("/semq-pickle/bad.parquet", sink.getvalue())
    batch = read_split(plan_splits(["memory://semq-pickle/bad.parquet"])[0], dim=4)
    again = pickle.loads(pickle.dumps(batch))
    assert again.rejected == batch.rejected and again.ids.tolist() == batch.ids.tolist()
    np.testing.assert_array_equal(again.vectors, batch.vectors)
    fs.rm("/semq-pickle", recursive=True)


# -- unreadable files -----------------------------------------------------------------------


def _unreadable(tmp_path: Path) -> dict[str, tuple[str, str]]:
    """name -> (url, expected message part)."""
    x = vectors(20, seed=14)
    good = tmp_path / "good.parquet"
    write_parquet(str(good), embedding_table(np.arange(20), x), row_group_size=10)
    data = good.read_bytes()
    (tmp_path / "truncated.parquet").write_bytes(data[: len(data) // 2])
    (tmp_path / "garbage.parquet").write_bytes(b"this is not parquet at all" * 10)
    (tmp_path / "mystery.bin").write_bytes(b"\x00\x01\x02\x03 unknown")
    write_parquet(str(tmp_path / "novec.parquet"), pa.table({"id": [1], "vec": [[1.0]]}),
                  row_group_size=10)
    write_parquet(str(tmp_path / "intvec.parquet"),
                  pa.table({"id": [1], "embedding": pa.array([[1, 2]], pa.list_(pa.int32()))}),
                  row_group_size=10)
    write_parquet(str(tmp_path / "floatid.parquet"),
                  pa.table({"id": [1.5], "embedding": [[1.0, 2.0]]}), row_group_size=10)
    np.save(tmp_path / "full.npy", x)
    npy = (tmp_path / "full.npy").read_bytes()
    (tmp_path / "truncated.npy").write_bytes(npy[:-5])
    np.save(tmp_path / "ints.npy", np.arange(6).reshape(3, 2))
    np.save(tmp_path / "flat.npy", np.arange(6.0))
    np.save(tmp_path / "fortran.npy", np.asfortranarray(x))
    np.save(tmp_path / "objects.npy", np.array([[{"a": 1}]], dtype=object), allow_pickle=True)
    (tmp_path / "stream.arrow").write_bytes(b"")
    with ipc.new_stream(str(tmp_path / "stream.arrow"),
                        embedding_table([1], x[:1]).schema) as writer:
        writer.write_table(embedding_table([1], x[:1]))
    return {
        "missing": (str(tmp_path / "missing.parquet"), "file not found"),
        "truncated parquet": (str(tmp_path / "truncated.parquet"), "not a valid Parquet"),
        "not parquet": (str(tmp_path / "garbage.parquet"), "not a valid Parquet"),
        "unknown format": (str(tmp_path / "mystery.bin"), "unknown format"),
        "no vector column": (str(tmp_path / "novec.parquet"), "no vector column 'embedding'"),
        "int vectors": (str(tmp_path / "intvec.parquet"), "must be a list.*of float"),
        "float ids": (str(tmp_path / "floatid.parquet"), "id column 'id' must be an integer"),
        "truncated npy": (str(tmp_path / "truncated.npy"), "truncated or padded NPY"),
        "int npy": (str(tmp_path / "ints.npy"), "2-D float32 or float64"),
        "1-D npy": (str(tmp_path / "flat.npy"), "2-D float32 or float64"),
        "fortran npy": (str(tmp_path / "fortran.npy"), "Fortran order"),
        "object npy": (str(tmp_path / "objects.npy"), "2-D float32 or float64"),
        "arrow stream": (str(tmp_path / "stream.arrow"), "not a valid Arrow IPC file"),
    }


def test_unreadable_files_raise_input_read_error_naming_the_file(tmp_path):
    for name, (path, message) in _unreadable(tmp_path).items():
        with pytest.raises(InputReadError, match=message) as info:
            plan_splits([path], vector_column="embedding", id_column="id")
        assert path in str(info.value), name
        assert isinstance(info.value, OSError)


def test_input_read_errors_redact_the_urls_they_name():
    """Whatever text an InputReadError is built from (a storage library's error included),
    its message carries no password or signed-URL token."""
    error = InputReadError("cannot read https://host/a.parquet?sig=SECRET: ClientResponseError:"
                           " 403, url='https://host/a.parquet?sig=SECRET'; s3://key:pw@b/x")
    assert str(error) == ("cannot read https://host/a.parquet?***: ClientResponseError: 403, "
                          "url='https://host/a.parquet?***'; s3://***@b/x")
    assert str(pickle.loads(pickle.dumps(error))) == str(error)


def test_file_changed_after_planning(tmp_path):
    x = vectors(20, seed=15)
    parquet = write_parquet(str(tmp_path / "p.parquet"), embedding_table(np.arange(20), x),
                            row_group_size=10)
    npy = write_npy(str(tmp_path / "x.npy"), x)
    splits = plan_splits([parquet, npy], batch_rows=10)
    (tmp_path / "p.parquet").unlink()
    with pytest.raises(InputReadError, match=f"cannot read {tmp_path}/p.parquet: file "
                                             f"not found"):
        read_split(splits[0])
    np.save(tmp_path / "x.npy", x[:5])
    with pytest.raises(InputReadError, match="x.npy: it has 5 rows.*changed"):
        read_split(splits[-1])
    write_parquet(str(tmp_path / "p.parquet"), embedding_table(np.arange(20), x),
                  row_group_size=20)
    with pytest.raises(InputReadError, match="p.parquet: the file changed since it was planned"):
        read_split(splits[1])


def test_files_with_no_rows_still_give_their_width(tmp_path):
    """A file with no rows has no split, but its metadata still fixes the vector width."""
    write_npy(str(tmp_path / "n/a.npy"), np.zeros((0, 6), np.float32))
    plan = plan_inputs(str(tmp_path / "n"))
    assert (plan.dim, plan.total_rows, plan.splits) == (6, 0, ())
    empty = pa.table({"id": pa.array([], pa.int64()),
                      "embedding": pa.array([], pa.list_(pa.float32(), 6))})
    write_parquet(str(tmp_path / "p/a.parquet"), empty, row_group_size=10)
    assert plan_inputs(str(tmp_path / "p")).dim == 6
    # ... and must agree with the others
    write_parquet(str(tmp_path / "p/b.parquet"), embedding_table([1], vectors(1, 0)),
                  row_group_size=10)
    with pytest.raises(InputReadError, match="disagree on the vector width"):
        plan_inputs(str(tmp_path / "p"))
    # a list column with no rows fixes nothing
    write_parquet(str(tmp_path / "l/a.parquet"), empty.cast(pa.schema(
        [("id", pa.int64()), ("embedding", pa.list_(pa.float32()))])), row_group_size=10)
    assert plan_inputs(str(tmp_path / "l")).dim is None


def test_empty_and_null_vectors_give_no_width(tmp_path):
    """Width inference skips null and empty vectors; with no other row there is no width
    (dim None) and every row is rejected; an empty vector never has the right width."""
    def plan(name, rows):
        table = pa.table({"id": pa.array(range(len(rows)), pa.int64()),
                          "embedding": pa.array(rows, pa.list_(pa.float32()))})
        return plan_inputs(write_parquet(str(tmp_path / name), table, row_group_size=10))

    mixed = plan("mixed.parquet", [[], [], [], None, [1.0, 2.0], [3.0, 4.0]])
    assert mixed.dim == 2
    for dim in (2, None):
        batch = read_split(mixed.splits[0], dim=dim, reject_zero_vectors=False)
        assert [(d["row"], d["reason"]) for d in batch.rejected] == [
            (0, "wrong_dimension"), (1, "wrong_dimension"), (2, "wrong_dimension"),
            (3, "null_vector")]
    nothing = plan("nothing.parquet", [None, [], None])
    assert nothing.dim is None
    batch = read_split(nothing.splits[0], dim=None, reject_zero_vectors=False)
    assert batch.accepted == 0 and [d["reason"] for d in batch.rejected] == [
        "null_vector", "wrong_dimension", "null_vector"]


def test_inconsistent_inputs(tmp_path):
    write_parquet(str(tmp_path / "w/a.parquet"), embedding_table([1], vectors(1, 0)),
                  row_group_size=10)
    write_parquet(str(tmp_path / "w/b.parquet"), embedding_table([2], vectors(1, 0, dim=5)),
                  row_group_size=10)
    with pytest.raises(InputReadError, match="disagree on the vector width.*a.parquet has 8.*"
                                             "b.parquet has 5"):
        plan_inputs(str(tmp_path / "w"))
    assert plan_inputs(str(tmp_path / "w"), dim=5).dim == 5
    write_parquet(str(tmp_path / "i/a.parquet"), embedding_table([1], vectors(1, 0)),
                  row_group_size=10)
    write_parquet(str(tmp_path / "i/b.parquet"), embedding_table(["x"], vectors(1, 0)),
                  row_group_size=10)
    with pytest.raises(InputReadError, match="disagree on the id type"):
        plan_inputs(str(tmp_path / "i"))
    with pytest.raises(ValueError, match="batch_rows"):
        plan_splits([], batch_rows=0)
