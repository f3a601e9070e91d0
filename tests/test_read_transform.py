"""The input stage in Beam: ReadEmbeddings and WriteDeadLetters on the pinned local runner
(TestPipeline + assert_that), counters read from the pipeline result, and one run with worker
subprocesses. Pipelines are few and small: each costs about a second to start."""

from __future__ import annotations

import os
from pathlib import Path

import apache_beam as beam
import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.metrics.metric import MetricsFilter
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from semq_transforms.errors import InputReadError
from semq_transforms.transforms import Batch, ReadEmbeddings, WriteDeadLetters, direct_options
from semq_transforms.transforms.read import METRICS_NAMESPACE
from tests.input_files import (
    bad_rows_table,
    embedding_table,
    vectors,
    write_arrow,
    write_npy,
    write_parquet,
)

ROOT = Path(__file__).resolve().parents[1]


def counters(result, step: str | None = None) -> dict[str, int]:
    """Committed ``semq`` counters of a finished pipeline, summed over steps."""
    metric_filter = MetricsFilter().with_namespace(METRICS_NAMESPACE)
    if step is not None:
        metric_filter = metric_filter.with_step(step)
    found: dict[str, int] = {}
    for metric in result.metrics().query(metric_filter)["counters"]:
        found[metric.key.metric.name] = found.get(metric.key.metric.name, 0) + metric.committed
    return found


def rows_of(batch: Batch) -> list[tuple]:
    """(position, id, vector bytes) per accepted row: a hashable view of a Batch."""
    return [(int(p), i.item() if isinstance(i, np.generic) else i, v.tobytes())
            for p, i, v in zip(batch.positions, batch.ids, batch.vectors, strict=True)]


def expected_rows(ids, x: np.ndarray, positions) -> list[tuple]:
    return [(int(p), i, v.astype(np.float32).tobytes())
            for p, i, v in zip(positions, ids, x, strict=True)]


def check_batches(max_rows: int, count: int):
    """A matcher: ``count`` Batch elements of at most ``max_rows`` rows that reconcile."""
    def check(batches: list) -> None:
        assert len(batches) == count, f"{len(batches)} Batch elements, expected {count}"
        for b in batches:
            assert isinstance(b, Batch), type(b)
            assert 0 < b.rows <= max_rows and b.rows == b.accepted + len(b.rejected)
    return check


def test_parquet_glob_dead_letters_and_counters(tmp_path):
    """Two Parquet files (list<float> vectors, string ids, row groups of 5 and 10): batches,
    every dead-letter reason, the dead-letter file and the counters, in one pipeline."""
    bad, reasons = bad_rows_table()
    write_parquet(str(tmp_path / "in/a.parquet"), bad, row_group_size=5)
    x = vectors(40, seed=1, dim=4)
    good_ids = [f"b{i}" for i in range(40)]
    write_parquet(str(tmp_path / "in/b.parquet"),
                  pa.table({"id": good_ids, "embedding": pa.array(list(x),
                                                                  pa.list_(pa.float32()))}),
                  row_group_size=10)
    dead_url = str(tmp_path / "out/dead_letters.parquet")
    source = f"file://{tmp_path}/in/a.parquet"

    read = ReadEmbeddings(f"{tmp_path}/in/*.parquet", batch_rows=8)
    plan = read.plan
    n_bad = bad.num_rows
    assert plan.dim == 4 and plan.total_rows == n_bad + 40
    # a.parquet: row groups 5, 5, 4 -> 3 splits; b.parquet: 4 row groups of 10 -> 4 splits,
    # each emitted as batches of 8 + 2 rows.
    assert [s.rows for s in plan.splits] == [5, 5, 4, 10, 10, 10, 10]

    p = BeamTestPipeline(options=direct_options())
    out = p | "Read embeddings" >> read
    assert_that(out.batches, check_batches(max_rows=8, count=3 + 4 * 2), label="Check batches")
    accepted_rows = [(0, "a0"), (8, "a8"), (11, "a11")] + [(n_bad + i, good_ids[i])
                                                         for i in range(40)]
    assert_that(out.batches | "Accepted rows" >> beam.FlatMap(
        lambda b: [(p, i) for p, i, _ in rows_of(b)]),
        equal_to(accepted_rows), label="Check accepted rows")
    assert_that(out.batches | "Good vectors" >> beam.FlatMap(
        lambda b: [r for r in rows_of(b) if r[0] >= n_bad]),
        equal_to(expected_rows(good_ids, x, range(n_bad, n_bad + 40))), label="Check vectors")
    assert_that(out.dead_letters | "Dead letter rows" >> beam.Map(
        lambda d: (d["source"], d["row"], d["reason"])),
        equal_to([(source, row, reason) for row, reason in reasons.items()]),
        label="Check dead letters")
    written = out.dead_letters | "Write dead letters" >> WriteDeadLetters(dead_url)
    assert_that(written, equal_to([len(reasons)]), label="Check dead letters written")
    result = p.run()

    table = pq.read_table(dead_url)
    assert table.schema.field("id").type == pa.string()
    assert table.column("row").to_pylist() == sorted(reasons)
    assert table.column("reason").to_pylist() == [reasons[r] for r in sorted(reasons)]
    assert table.column("id").to_pylist()[:2] == [None, "a2"]

    got = counters(result)
    by_reason = {f"rows_rejected_{r}": list(reasons.values()).count(r)
                 for r in set(reasons.values())}
    assert got.pop("bytes_read") > 0
    assert got == {"rows_read": n_bad + 40, "rows_accepted": n_bad + 40 - len(reasons),
                   "rows_rejected": len(reasons), "splits_read": 7, **by_reason}
    assert set(by_reason) == {"rows_rejected_null_id", "rows_rejected_id_too_long",
                              "rows_rejected_null_vector",
                              "rows_rejected_wrong_dimension", "rows_rejected_non_finite",
                              "rows_rejected_out_of_range", "rows_rejected_zero_vector"}


def test_npy_ids_file_on_memory_and_arrow_on_s3(s3_url, s3_storage_options):
    """Two reads in one pipeline: NPY + ids side file on memory://, Arrow IPC on s3://."""
    root = "memory://semq-read-transform"
    x_npy = vectors(25, seed=2)
    x_npy[3] = 0.0  # kept: zero vectors are accepted when not rejected
    write_npy(f"{root}/npy/a.npy", x_npy[:10])
    write_npy(f"{root}/npy/b.npy", x_npy[10:])
    ids_url = write_npy(f"{root}/ids.npy", np.arange(25, dtype=np.int64) * 3)
    x_arrow = vectors(30, seed=3)
    write_arrow(f"{s3_url}/emb.arrow", embedding_table(np.arange(30) + 100, x_arrow),
                batch_rows=10, storage_options=s3_storage_options)

    p = BeamTestPipeline(options=direct_options())
    npy = p | "Read NPY" >> ReadEmbeddings(f"{root}/npy/*.npy", ids_url=ids_url, batch_rows=8,
                                           reject_zero_vectors=False)
    arrow = p | "Read Arrow" >> ReadEmbeddings(f"{s3_url}/*.arrow", batch_rows=20,
                                               storage_options=s3_storage_options)
    assert_that(npy.batches | "NPY rows" >> beam.FlatMap(rows_of),
                equal_to(expected_rows(list(np.arange(25) * 3), x_npy, range(25))),
                label="Check NPY rows")
    assert_that(arrow.batches | "Arrow rows" >> beam.FlatMap(rows_of),
                equal_to(expected_rows(list(np.arange(30) + 100), x_arrow, range(30))),
                label="Check Arrow rows")
    assert_that(arrow.dead_letters, equal_to([]), label="No Arrow dead letters")
    result = p.run()
    npy_counts = counters(result, "Read NPY")
    assert npy_counts["rows_read"] == npy_counts["rows_accepted"] == 25
    assert npy_counts["splits_read"] == 4  # 10 -> 8 + 2, 15 -> 8 + 7
    # Exactly the rows' bytes, the headers once per split, and the ids' bytes.
    fs = fsspec.filesystem("memory")
    headers = sum(fs.size(f"/semq-read-transform/npy/{n}") for n in ("a.npy", "b.npy")) \
        - x_npy.nbytes
    ids_header = fs.size("/semq-read-transform/ids.npy") - 25 * 8
    assert npy_counts["bytes_read"] == x_npy.nbytes + 25 * 8 + 2 * headers + 4 * ids_header
    assert counters(result, "Read Arrow")["rows_accepted"] == 30
    fs.rm("/semq-read-transform", recursive=True)


def _pid_and_rows(batch: Batch) -> tuple[int, int]:
    return os.getpid(), batch.rows


def test_multi_processing_workers(tmp_path, monkeypatch):
    """Splits read in 2 SDK worker subprocesses: the DoFn, the splits and the batches all
    cross process boundaries, and the counters still add up."""
    # Workers run `python -m apache_beam.runners.worker.sdk_worker_main`: let them import
    # semq_transforms and this module even when the package is not installed.
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
        [str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]))
    x = vectors(60, seed=4)
    x[7, 2] = np.nan
    write_npy(str(tmp_path / "x.npy"), x)
    test_pid = os.getpid()

    p = BeamTestPipeline(options=direct_options("multi_processing", workers=2))
    out = p | "Read embeddings" >> ReadEmbeddings(str(tmp_path / "x.npy"), batch_rows=10)
    keep = np.arange(60) != 7
    assert_that(out.batches | "Rows" >> beam.FlatMap(rows_of),
                equal_to(expected_rows(list(np.arange(60)[keep]), x[keep],
                                       np.arange(60)[keep])), label="Check rows")

    def in_workers(pids_and_rows: list) -> None:
        pids = {pid for pid, _ in pids_and_rows}
        assert test_pid not in pids, "batches were read in the test process"
        assert sum(rows for _, rows in pids_and_rows) == 60

    assert_that(out.batches | "Worker pids" >> beam.Map(_pid_and_rows), in_workers,
                label="Check worker processes")
    assert_that(out.dead_letters | "Reasons" >> beam.Map(lambda d: (d["id"], d["reason"])),
                equal_to([(7, "non_finite")]), label="Check dead letters")
    result = p.run()
    got = counters(result)
    assert (got["rows_read"], got["rows_accepted"], got["rows_rejected"],
            got["rows_rejected_non_finite"], got["splits_read"]) == (60, 59, 1, 1, 6)


def test_unreadable_inputs_fail_the_run_naming_the_file(tmp_path):
    # Whole-file problems found by planning fail when the transform is applied.
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    p = BeamTestPipeline(options=direct_options())
    with pytest.raises(InputReadError, match=f"{tmp_path}/bad.parquet: not a valid Parquet"):
        _ = p | "Read bad" >> ReadEmbeddings(str(tmp_path / "bad.parquet"))
    with pytest.raises(InputReadError, match="no input files match"):
        _ = p | "Read nothing" >> ReadEmbeddings(str(tmp_path / "nothing-*.npy"))
    # A file that disappears after planning fails the run in the worker.
    write_npy(str(tmp_path / "gone.npy"), vectors(10, seed=5))
    _ = p | "Read embeddings" >> ReadEmbeddings(str(tmp_path / "gone.npy"))
    (tmp_path / "gone.npy").unlink()
    with pytest.raises(Exception, match=f"cannot read file://{tmp_path}/gone.npy: file not "
                                        f"found"):
        p.run()


def test_array_elements_get_coders_that_size_them_without_pickling(tmp_path, monkeypatch):
    """Batch and ShardRows outputs are typed, so Beam codes them with the registered coders;
    Beam samples elements to estimate sizes for its metrics, and these estimate from the
    arrays' nbytes instead of pickling (a 100 MB shard copied per sample otherwise)."""
    from semq_transforms.transforms import _coders
    from semq_transforms.transforms.planning import ShardRows, plan_shards, read_shard
    from semq_transforms.transforms.read import ReadShards

    x = vectors(30, seed=3, dim=4)
    write_parquet(str(tmp_path / "in.parquet"),
                  embedding_table([f"r{i}" for i in range(30)], x), row_group_size=10)
    read = ReadEmbeddings(f"{tmp_path}/in.parquet", batch_rows=8)
    p = BeamTestPipeline(options=direct_options())
    assert (p | "Read" >> read).batches.element_type is Batch
    assert (p | "Shards" >> ReadShards(read, rows_per_shard=16)).shards.element_type is ShardRows
    assert isinstance(beam.coders.registry.get_coder(Batch), _coders.BatchCoder)
    coder = beam.coders.registry.get_coder(ShardRows)
    assert isinstance(coder, _coders.ShardRowsCoder)

    [task, _] = plan_shards(read.plan.splits, 16)
    found = read_shard(task, dim=4, **{k: v for k, v in read.read_options.items()
                                       if k != "dim"})
    shard = ShardRows(task.shard_no, found.ids, found.vectors, found.positions)
    decoded = coder.decode(coder.encode(shard))
    np.testing.assert_array_equal(decoded.vectors, shard.vectors)
    assert decoded.ids.tolist() == [f"r{i}" for i in range(16)]
    monkeypatch.setattr(_coders.pickle, "dumps", None)  # a size estimate must not pickle
    expected = (64 + shard.vectors.nbytes + shard.positions.nbytes + shard.ids.nbytes
                + sum(len(s) for s in shard.ids))
    assert coder.estimate_size(shard) == expected
    assert coder.get_impl().estimate_size(shard) == expected


def test_read_shards_holds_one_shard_of_a_run_at_a_time(tmp_path, monkeypatch):
    """A run of shards (one 24,000-row group, shards of 2,000) read by the ReadShards
    transform on its own: while a shard's rows are read, no earlier shard's vectors are
    alive (the runner's output loop held the last element yielded, the previous ShardRows,
    until counts were yielded after it). A spy on the shard buffers, not a stand-in."""
    import weakref

    from semq_transforms.transforms import planning
    from semq_transforms.transforms.read import ReadShards

    finished, alive_while_reading = [], []
    finish, add = planning._ShardFill.finish, planning._ShardFill.add

    def spy_finish(self):
        found = finish(self)
        finished.append(weakref.ref(found.vectors))
        return found

    def spy_add(self, batch, **kwargs):
        alive_while_reading.append(sum(ref() is not None for ref in finished))
        return add(self, batch, **kwargs)

    monkeypatch.setattr(planning._ShardFill, "finish", spy_finish)
    monkeypatch.setattr(planning._ShardFill, "add", spy_add)
    x = vectors(24_000, seed=23, dim=16)
    url = write_parquet(str(tmp_path / "one-group.parquet"),
                        embedding_table(np.arange(24_000), x), row_group_size=24_000)
    read = ReadEmbeddings(url, batch_rows=1000)
    shards = ReadShards(read, rows_per_shard=2000)
    assert [len(r.shards) for r in shards.runs] == [4, 4, 4]
    with beam.Pipeline(options=direct_options()) as p:
        (p | shards).shards | beam.Map(lambda s: s.rows)   # a consumer that keeps nothing
    assert len(finished) == 12 and max(alive_while_reading) == 0
