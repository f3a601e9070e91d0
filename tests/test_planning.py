"""How the ingestion job divides its work (semq_transforms.transforms.planning): shard ranges
planned from metadata, reading a shard's rows from straddling splits, duplicate ids found by
bucket, the query sample's split heads."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from semq_transforms.transforms.planning import (
    READS_PER_SPLIT,
    FileOffsets,
    ShardLayout,
    bucket_duplicates,
    decoded_rows,
    id_buckets,
    id_hash,
    plan_runs,
    plan_shards,
    read_shard,
    read_shards,
    sample_splits,
)
from semq_transforms.transforms.sources import (
    Split,
    iter_split,
    iter_split_head,
    iter_split_ids,
    plan_inputs,
)
from tests.input_files import (
    DIM,
    bad_rows_table,
    embedding_table,
    vectors,
    write_arrow,
    write_parquet,
)


@pytest.fixture
def two_files(tmp_path):
    """Files of 130 and 75 rows (row groups of 20), ids 0..204 with some bad rows."""
    x = vectors(205, seed=1)
    x[7] = np.nan
    x[150] = 0.0
    write_parquet(str(tmp_path / "a.parquet"), embedding_table(np.arange(130), x[:130]),
                  row_group_size=20)
    write_parquet(str(tmp_path / "b.parquet"), embedding_table(np.arange(130, 205), x[130:]),
                  row_group_size=20)
    return plan_inputs(str(tmp_path / "*.parquet"), batch_rows=20), x


@pytest.mark.parametrize("rows_per_shard", [1, 7, 20, 50, 64, 205, 1000])
def test_shard_tasks_cover_every_position_once(two_files, rows_per_shard):
    plan, _ = two_files
    tasks = plan_shards(plan.splits, rows_per_shard)
    assert [t.shard_no for t in tasks] == list(range(len(tasks)))
    # the ranges tile the input: full shards, then a last one of half to 1.5 shards
    assert [t.start for t in tasks[1:]] == [t.stop for t in tasks[:-1]] == [
        n * rows_per_shard for n in range(1, len(tasks))]
    assert tasks[0].start == 0 and tasks[-1].stop == plan.total_rows == 205
    last = tasks[-1].stop - tasks[-1].start
    assert (rows_per_shard / 2 <= last < 1.5 * rows_per_shard if len(tasks) > 1
            else last == 205)
    for t in tasks:
        # exactly the splits that overlap the range
        assert list(t.splits) == [s for s in plan.splits
                                  if s.global_row_offset < t.stop
                                  and s.global_row_offset + s.rows > t.start]


@pytest.mark.parametrize("rows_per_shard", [7, 50, 64, 205])
def test_read_shard_reconciles_with_straddling_splits(two_files, rows_per_shard):
    plan, x = two_files
    options = {"vector_column": "embedding", "id_column": "id", "batch_rows": 20,
               "ids_url": None, "reject_zero_vectors": True, "storage_options": None}
    reads = [read_shard(t, dim=DIM, **options) for t in plan_shards(plan.splits, rows_per_shard)]
    positions = np.concatenate([r.positions for r in reads])
    assert positions.tolist() == [p for p in range(205) if p not in (7, 150)]
    assert sum(r.counts["rows_read"] for r in reads) == 205
    dead = [d for r in reads for d in r.dead_letters]
    assert sorted((d["row"], d["reason"]) for d in dead) == [(7, "non_finite"),
                                                              (20, "zero_vector")]
    for r in reads:
        assert r.counts["rows_read"] == r.counts["rows_accepted"] + r.counts["rows_rejected"]
        np.testing.assert_array_equal(r.vectors, x[r.positions])
        assert r.ids.tolist() == r.positions.tolist()


def test_read_shard_rejects_the_given_duplicates(two_files):
    plan, _ = two_files
    [task] = plan_shards(plan.splits, 1000)
    found = read_shard(task, duplicates={3: "first occurrence: f row 1", 7: "x"}, dim=DIM,
                       batch_rows=20)
    reasons = {d["row"]: d["reason"] for d in found.dead_letters}
    # row 7 is rejected for its NaN first; a row gets one reason
    assert reasons == {3: "duplicate_id", 7: "non_finite", 20: "zero_vector"}
    assert found.counts["rejected_duplicate_id"] == 1
    assert 3 not in found.positions


def _brute_force_later(ids: list, null: set[int]) -> set[int]:
    seen, later = set(), set()
    for position, value in enumerate(ids):
        if position in null:
            continue
        if value in seen:
            later.add(position)
        seen.add(value)
    return later


@pytest.mark.parametrize("kind", ["int", "str"])
@pytest.mark.parametrize("buckets", [1, 3, 16])
def test_bucket_duplicates_match_brute_force(kind, buckets):
    rng = np.random.default_rng(buckets)
    raw = rng.integers(-50, 50, size=400)
    ids = raw.astype(np.int64) if kind == "int" else np.array([f"id{v}" for v in raw],
                                                                 dtype=object)
    id_null = rng.random(400) < 0.05
    positions = np.arange(1000, 1400, dtype=np.int64)
    files = FileOffsets(("f0", "f1"), (0, 1200))
    grouped: dict[int, list] = {}
    # ids arrive in several chunks, in scrambled order, as from parallel readers
    for part in np.array_split(rng.permutation(400), 5):
        part = np.sort(part)
        for bucket, value in id_buckets(ids[part], id_null[part], positions[part], buckets):
            grouped.setdefault(bucket, []).append(value)
    found: dict[int, str] = {}
    for bucket in sorted(grouped):
        for shard_no, dups in bucket_duplicates(grouped[bucket], layout=ShardLayout(100, 1400),
                                                files=files):
            assert all(p // 100 == shard_no for p in dups)
            found.update(dups)
    expected = {p + 1000 for p in _brute_force_later(raw.tolist(),
                                                      set(np.flatnonzero(id_null).tolist()))}
    assert set(found) == expected
    for position, detail in found.items():
        first = min(p for p in range(400) if raw[p] == raw[position - 1000] and not id_null[p])
        file, row = files.locate(first + 1000)
        assert detail == f"first occurrence: {file} row {row}"


def test_stringid_hash_is_the_same_in_every_process():
    """Python's str hash is salted per process; the bucket hash must not be."""
    ids = np.array(["a", "doc-1", "é", ""], dtype=object)
    code = ("import numpy as np; from semq_transforms.transforms.planning import id_hash; "
            "print(id_hash(np.array(['a', 'doc-1', 'é', ''], dtype=object)).tolist())")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                              check=True, env={"PYTHONHASHSEED": seed, "PATH": ""},
                              cwd=str(__import__("pathlib").Path(__file__).parents[1])).stdout
               for seed in ("1", "2")}
    assert outputs == {f"{id_hash(ids).tolist()}\n"}


def test_iter_split_ids_reads_only_ids(tmp_path):
    table, _ = bad_rows_table()
    url = write_parquet(str(tmp_path / "bad.parquet"), table, row_group_size=5)
    plan = plan_inputs(url, batch_rows=5)
    got_ids, nulls, positions = [], [], []
    for s in plan.splits:
        for ids, id_null, pos in iter_split_ids(s, batch_rows=3):
            got_ids += ids.tolist()
            nulls += id_null.tolist()
            positions += pos.tolist()
    column = table.column("id").to_pylist()
    assert positions == list(range(len(column)))
    assert nulls == [v is None for v in column]
    assert [v for v, n in zip(got_ids, nulls, strict=True) if not n] == [
        v for v in column if v is not None]


def test_split_heads_read_on_past_rejected_rows(tmp_path):
    """iter_split_head yields the first rows holding the accepted rows asked for: just those
    rows when none is rejected, further rows (read again from the start) when some are, the
    whole split when it has too few."""
    x = vectors(40, seed=6)
    x[[0, 1, 2, 5]] = 0.0
    url = write_parquet(str(tmp_path / "h.parquet"), embedding_table(np.arange(40), x),
                        row_group_size=40)
    [split] = plan_inputs(url, batch_rows=40).splits

    def head(n, **options):
        batches = list(iter_split_head(split, n, batch_rows=8, **options))
        assert [b.row_start for b in batches] == list(range(0, sum(b.rows for b in batches), 8))
        return (sum(b.rows for b in batches),
                [int(p) for b in batches for p in b.positions],
                sorted(d["row"] for b in batches for d in b.rejected))

    assert head(2, reject_zero_vectors=False) == (2, [0, 1], [])
    assert head(2) == (8, [3, 4, 6, 7], [0, 1, 2, 5])   # 2 rows, then 8
    assert head(4) == (16, [3, 4, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], [0, 1, 2, 5])
    assert head(39)[0] == 40 and head(39)[1] == [p for p in range(40) if p not in (0, 1, 2, 5)]
    with pytest.raises(ValueError, match="accepted_rows"):
        head(0)


def test_sample_splits_are_seeded_spread_heads(two_files, tmp_path):
    plan, _ = two_files
    splits, head = sample_splits(plan.splits, queries=10, seed=3, max_splits=4)
    assert len(splits) == 4 and head == 10
    assert splits == sorted(splits, key=lambda s: s.global_row_offset)
    assert sample_splits(plan.splits, queries=10, seed=3, max_splits=4) == (splits, head)
    assert sample_splits(plan.splits, queries=10, seed=4, max_splits=4)[0] != splits
    every, _ = sample_splits(plan.splits, queries=10, seed=3, max_splits=64)
    assert every == list(plan.splits)
    # reading a head reads only those rows, and for Parquet streams the first pages instead
    # of fetching the row group (10 MB here, pages of about 1 MB), whatever batch_rows is
    # (the job's batches may span the row group: the head must not decode one batch of it)
    big = np.random.default_rng(2).standard_normal((40_000, 64)).astype(np.float32)
    url = write_parquet(str(tmp_path / "big.parquet"), embedding_table(np.arange(40_000), big),
                        row_group_size=40_000)
    [split] = plan_inputs(url, batch_rows=40_000).splits
    [whole] = list(iter_split(split, batch_rows=40_000))
    for batch_rows in (8192, 40_000):
        [head_batch] = list(iter_split(split, limit_rows=10, batch_rows=batch_rows))
        np.testing.assert_array_equal(head_batch.vectors, big[:10])
        assert head_batch.rows == 10 and head_batch.bytes_read * 4 < whole.bytes_read
    assert Counter(b.rows for b in iter_split(split, limit_rows=10, batch_rows=4)) == {
        4: 2, 2: 1}


def test_a_limited_read_decodes_no_batch_past_its_limit(tmp_path, monkeypatch):
    """A read that stops inside a row group (a run's end, a split's head) pulled one more
    batch from pyarrow before noticing it had enough: batch_rows decoded for nothing. A spy
    on pyarrow's batches counts what is decoded."""
    import pyarrow.parquet as pq

    pulled = []
    real = pq.ParquetFile.iter_batches

    def spy(self, *args, **kwargs):
        for batch in real(self, *args, **kwargs):
            pulled.append(batch.num_rows)
            yield batch

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    url = write_parquet(str(tmp_path / "g.parquet"),
                        embedding_table(np.arange(48_000), vectors(48_000, seed=26)),
                        row_group_size=48_000)
    [split] = plan_inputs(url, batch_rows=48_000).splits
    for limit, batches in [(4500, 5), (4000, 4), (None, 48)]:
        pulled.clear()
        rows = sum(b.rows for b in iter_split(split, batch_rows=1000, limit_rows=limit))
        assert rows == (limit or 48_000) and len(pulled) == batches, (limit, pulled)


def test_shards_read_their_part_of_a_split_not_all_of_it(tmp_path):
    """A split larger than a shard was read whole by every shard it overlaps (a 100,000-row
    row group cut into 10,000-row shards was read 10 times). Every format now stops at the
    shard's end, and NPY (read at any row) also starts at the shard's start."""
    options = {"vector_column": "embedding", "id_column": None, "batch_rows": 500,
               "ids_url": None, "reject_zero_vectors": True, "storage_options": None}
    x = vectors(4000, seed=12)
    np.save(tmp_path / "x.npy", x)
    plan = plan_inputs(str(tmp_path / "x.npy"), format="npy", id_column=None, batch_rows=4000)
    reads = [read_shard(t, dim=DIM, **options) for t in plan_shards(plan.splits, 1000)]
    assert [r.counts["rows_read"] for r in reads] == [1000] * 4
    data_bytes = x.nbytes
    assert sum(r.counts["bytes_read"] for r in reads) < 1.1 * data_bytes
    np.testing.assert_array_equal(np.concatenate([r.vectors for r in reads]), x)
    # Parquet: one 4,000-row row group (pages before a shard's start are still decoded)
    # Parquet: one 400,000-row row group (~13 MB: pages and reads of ~1 MiB); pages before a
    # shard's start are still decoded
    x = vectors(400_000, seed=13)
    write_parquet(str(tmp_path / "x.parquet"), embedding_table(np.arange(400_000), x),
                  row_group_size=400_000)
    plan = plan_inputs(str(tmp_path / "x.parquet"), id_column=None, batch_rows=400_000)
    reads = [read_shard(t, dim=DIM, **options) for t in plan_shards(plan.splits, 100_000)]
    read_bytes = [r.counts["bytes_read"] for r in reads]
    assert read_bytes[0] < read_bytes[-1] / 2
    np.testing.assert_array_equal(np.concatenate([r.vectors for r in reads]), x)


def _splits(sizes: list[int], fmt: str = "parquet") -> list[Split]:
    """Splits of ``sizes`` rows, one file each, back to back in global positions."""
    out, offset = [], 0
    for i, rows in enumerate(sizes):
        out.append(Split(f"f{i:03d}", fmt, 0, rows, offset, (0,) if fmt != "npy" else ()))
        offset += rows
    return out


def _runs(sizes, rows_per_shard, fmt="parquet", **kwargs):
    splits = _splits(sizes, fmt)
    tasks = plan_shards(splits, rows_per_shard)
    return tasks, plan_runs(tasks, **kwargs), sum(sizes)


@pytest.mark.parametrize("sizes, rows_per_shard, fmt, lengths", [
    ([100] * 5, 100, "parquet", [1] * 5),      # row groups = shards: nothing shared
    ([50] * 10, 64, "parquet", [1] * 8),       # small groups straddling: a shard each
    ([63] * 64, 64, "parquet", [1] * 63),      # (not chained into one long run)
    ([1000], 100, "parquet", [3, 3, 4]),       # a group of 10 shards: READS_PER_SPLIT runs
    ([1000], 100, "arrow", [3, 3, 4]),         # Arrow record batches alike
    ([1000, 1000], 150, "parquet", [2, 2, 4, 3, 2]),  # 13 shards (the last holds 200 rows);
    #                                                   the shard holding both groups joins
    #                                                   their runs
    ([1000], 100, "npy", [1] * 10),            # NPY is read from any row: a shard each
])
def test_runs_group_the_shards_a_big_row_group_spans(sizes, rows_per_shard, fmt, lengths):
    tasks, runs, total = _runs(sizes, rows_per_shard, fmt)
    assert [len(r.shards) for r in runs] == lengths
    assert [t for r in runs for t in r.shards] == tasks   # every shard once, in order
    decoded = sum(decoded_rows(r) for r in runs)
    # a task per shard decodes a 10-shard group ~5.5 times; runs at most ~2 times
    per_shard = sum(decoded_rows(r) for r in plan_runs(tasks,
                                                        reads_per_split=10**6))
    if lengths[0] == 3 and fmt == "parquet":
        assert per_shard == 5_500 and decoded == 1_900  # 300 + 600 + 1000
    if fmt == "arrow":  # a record batch is loaded whole, by each run (by each shard before)
        assert per_shard == 10_000 and decoded == 3_000
    assert decoded <= per_shard and decoded <= (2 if fmt == "parquet" else 3) * total


@pytest.mark.parametrize("fmt", ["parquet", "arrow"])
def test_a_read_skips_the_row_groups_of_its_split_before_its_first_row(fmt):
    """Splits merge small row groups (up to batch_rows): a shard starting in a split's 5th
    group starts reading there, not at the split's first group, so groups of a shard's size
    are read once each."""
    groups = (1000,) * 8
    split = Split("f", fmt, 0, 8000, 0, tuple(range(8)), None, groups)
    tasks = plan_shards([split], 1000)
    runs = plan_runs(tasks)
    assert [len(r.shards) for r in runs] == [1] * 8
    assert [decoded_rows(r) for r in runs] == [1000] * 8
    # shards of 1,500 (the last holds 2,000: the 500 left over join it): a shard starting
    # inside a group decodes that group's head (Parquet) or loads it whole (Arrow), not the
    # groups before it
    runs = plan_runs(plan_shards([split], 1500))
    assert [decoded_rows(r) for r in runs] == (
        [1500, 2000, 1500, 2000, 2000] if fmt == "parquet" else [2000] * 5)


def test_runs_never_decode_more_than_a_shard_per_task_and_bound_it():
    """On random layouts: runs cover every shard once in order, each run's shards are
    consecutive, and joining shards into runs never decodes more than a task per shard; with
    READS_PER_SPLIT = 3, each split is decoded at most twice."""
    rng = np.random.default_rng(5)
    for _ in range(200):
        sizes = rng.integers(1, 400, size=rng.integers(1, 8)).tolist()
        rows_per_shard = int(rng.integers(1, 300))
        tasks, runs, total = _runs(sizes, rows_per_shard)
        assert [t for r in runs for t in r.shards] == tasks
        spanned = max(-(-size // rows_per_shard) + 1 for size in sizes)
        for r in runs:
            assert [t.shard_no for t in r.shards] == list(range(
                r.key, r.key + len(r.shards)))
            assert len(r.shards) <= 2 * spanned   # runs stay short: tasks stay parallel
        one_each = plan_runs(tasks, reads_per_split=10**6)
        decoded = sum(decoded_rows(r) for r in runs)
        assert decoded <= sum(decoded_rows(r) for r in one_each)
        assert decoded <= (READS_PER_SPLIT + 1) / 2 * total  # each split at most twice
        assert sum(decoded_rows(r) for r in plan_runs(tasks,
                                                      reads_per_split=1)) == total
    with pytest.raises(ValueError, match="reads_per_split"):
        plan_runs(tasks, reads_per_split=0)


def test_a_run_reads_its_row_group_once_and_hands_over_each_shard_as_it_is_read(tmp_path):
    """One 48,000-row row group (24 MB) in shards of 4,000: read shard by shard, every shard
    decodes the pages before its start (~6.5 reads of the group's bytes); in runs the group
    is read ~2 times, and each shard comes out as soon as its rows are read. The rows, dead
    letters and counts are those of the shard-by-shard read."""
    rows, rows_per_shard, dim = 48_000, 4000, 128
    x = vectors(rows, seed=21, dim=dim)
    x[[5, 17_321, 47_999]] = np.nan
    ids = np.arange(rows)
    ids[28_000] = ids[27_999]  # a duplicate inside a run
    path = str(tmp_path / "one-group.parquet")
    write_parquet(path, embedding_table(ids, x), row_group_size=rows, data_page_size=1 << 16)
    plan = plan_inputs(path, batch_rows=1000)
    options = {"vector_column": "embedding", "id_column": "id", "batch_rows": 1000,
               "ids_url": None, "reject_zero_vectors": True, "storage_options": None}
    duplicates = {28_000: "first occurrence: one-group.parquet row 27999"}
    tasks = plan_shards(plan.splits, rows_per_shard)
    runs = plan_runs(tasks)
    assert [len(r.shards) for r in runs] == [4, 4, 4]
    one_by_one = [read_shard(t, dim=dim, duplicates=duplicates, **options) for t in tasks]
    in_runs = []
    for run in runs:
        reading = read_shards(run, dim=dim, duplicates=duplicates, **options)
        first_task, first = next(reading)
        # handed over having read about what that shard alone reads, not the whole run
        assert first_task == run.shards[0]
        alone = one_by_one[run.key].counts["bytes_read"]
        rest = list(reading)
        whole_run = first.counts["bytes_read"] + sum(r.counts["bytes_read"] for _, r in rest)
        assert first.counts["bytes_read"] < 1.1 * alone and alone < 0.9 * whole_run
        in_runs += [(first_task, first), *rest]
    assert [t for t, _ in in_runs] == tasks
    for (_, got), want in zip(in_runs, one_by_one, strict=True):
        np.testing.assert_array_equal(got.vectors, want.vectors)
        np.testing.assert_array_equal(got.positions, want.positions)
        assert got.ids.tolist() == want.ids.tolist()
        assert got.dead_letters == want.dead_letters
        assert {k: v for k, v in got.counts.items() if k != "bytes_read"} == {
            k: v for k, v in want.counts.items() if k != "bytes_read"}
    once = sum(b.bytes_read for b in iter_split(plan.splits[0], dim=dim, **options))
    shard_by_shard = sum(r.counts["bytes_read"] for r in one_by_one)
    runs_read = sum(r.counts["bytes_read"] for _, r in in_runs)
    assert shard_by_shard > 6 * once and runs_read < 2.2 * once, (once, shard_by_shard,
                                                                   runs_read)
    assert [d["row"] for _, r in in_runs for d in r.dead_letters] == [5, 17_321, 28_000,
                                                                       47_999]
    with pytest.raises(ValueError, match="consecutive shards"):
        next(read_shards([tasks[0], tasks[2]], dim=dim, **options))


def test_row_groups_of_a_shard_merged_into_bigger_splits_are_read_once(tmp_path):
    """16 row groups of 1,000 rows, planned into splits of 8 groups (batch_rows 8192), in
    shards of 1,000: each shard reads its own group (every shard decoded its split from the
    split's first group: ~4.5 reads of the file)."""
    x = vectors(16_000, seed=22, dim=64)
    path = str(tmp_path / "small-groups.parquet")
    write_parquet(path, embedding_table(np.arange(16_000), x), row_group_size=1000)
    plan = plan_inputs(path, batch_rows=8192)
    assert [s.rows for s in plan.splits] == [8000, 8000]
    options = {"vector_column": "embedding", "id_column": "id", "batch_rows": 8192,
               "ids_url": None, "reject_zero_vectors": True, "storage_options": None}
    once = sum(b.bytes_read for s in plan.splits for b in iter_split(s, dim=64, **options))
    tasks = plan_shards(plan.splits, 1000)
    reads = [r for run in plan_runs(tasks)
             for _, r in read_shards(run, dim=64, **options)]
    assert [r.counts["rows_read"] for r in reads] == [1000] * 16
    np.testing.assert_array_equal(np.concatenate([r.vectors for r in reads]), x)
    # (each shard's read also fetches the file's footer: ~64 KiB a shard)
    assert sum(r.counts["bytes_read"] for r in reads) < 1.25 * once


def test_the_planned_reads_of_an_arrow_batch_are_what_is_read(tmp_path):
    """An Arrow record batch is loaded whole by each run that reads it: one 100,000-row
    batch in shards of 10,000 is 3 runs and 3 loads, and decoded_rows says so."""
    x = vectors(100_000, seed=24, dim=32)
    url = write_arrow(str(tmp_path / "one-batch.arrow"), embedding_table(np.arange(100_000), x),
                      batch_rows=100_000)
    plan = plan_inputs(url, batch_rows=1000)
    options = {"vector_column": "embedding", "id_column": "id", "batch_rows": 1000,
               "ids_url": None, "reject_zero_vectors": True, "storage_options": None}
    runs = plan_runs(plan_shards(plan.splits, 10_000))
    assert [len(r.shards) for r in runs] == [3, 3, 4]
    once = sum(b.bytes_read for s in plan.splits for b in iter_split(s, dim=32, **options))
    read = sum(found.counts["bytes_read"] for run in runs
               for _, found in read_shards(run, dim=32, **options))
    planned = sum(decoded_rows(r) for r in runs) / 100_000
    assert planned == 3.0 and abs(read / once - planned) < 0.05, (read / once, planned)


def test_reads_of_rows_more_than_once_are_warned_of_by_cause(tmp_path, caplog):
    from semq_transforms.transforms.read import ReadEmbeddings, ReadShards

    x = vectors(6000, seed=14)
    url = write_parquet(str(tmp_path / "big.parquet"), embedding_table(np.arange(6000), x),
                        row_group_size=6000)
    read = ReadEmbeddings(url, batch_rows=6000)
    with caplog.at_level("WARNING"):
        ReadShards(read, rows_per_shard=6000)
    assert not [r for r in caplog.records if r.name.startswith("semq_transforms")]
    with caplog.at_level("WARNING"):
        ReadShards(read, rows_per_shard=1000)  # runs of 2 shards: 1/3 + 2/3 + 1 = 2x
    assert "big.parquet: the plan reads the input 2.00 times over, this file 2.00 times: its " \
           "row groups (or Arrow record batches) of up to 6000 rows are larger than " \
           "rows_per_shard=1000" in caplog.text
    caplog.clear()
    # groups smaller than a shard that straddle its boundaries: not "larger than a shard"
    url = write_parquet(str(tmp_path / "straddle.parquet"),
                        embedding_table(np.arange(6000), x), row_group_size=900)
    with caplog.at_level("WARNING"):
        ReadShards(ReadEmbeddings(url, batch_rows=900), rows_per_shard=1000)
    assert "straddle.parquet: the plan reads the input 1.25 times over, this file 1.25 " \
           "times: its row groups (or Arrow record batches) of up to 900 rows straddle the " \
           "boundaries of shards of 1000 rows: a shard" in caplog.text
    caplog.clear()
    # groups that divide the shard, shifted by an earlier file of 1,300 rows: the file
    # named is one read twice, and the cause is the earlier file's length
    folder = tmp_path / "files"
    folder.mkdir()
    for i in range(3):
        write_parquet(str(folder / f"p{i}.parquet"),
                      embedding_table(np.arange(i * 1300, (i + 1) * 1300), x[:1300]),
                      row_group_size=500)
    with caplog.at_level("WARNING"):
        ReadShards(ReadEmbeddings(str(folder / "*.parquet"), batch_rows=500),
                   rows_per_shard=1000)
    assert "p2.parquet: the plan reads the input 1.15 times over, this file 1.31 times: its " \
           "row groups (or Arrow record batches) of up to 500 rows straddle the boundaries " \
           "of shards of 1000 rows (a file before it, whose row count is not a multiple of " \
           "the group size, shifts them)" in caplog.text


def test_a_shard_with_every_row_rejected_keeps_its_id_type(tmp_path):
    x = np.full((2, DIM), np.nan, np.float32)
    url = write_parquet(str(tmp_path / "s.parquet"), embedding_table(["a", "b"], x),
                        row_group_size=2)
    [task] = plan_shards(plan_inputs(url).splits, 10)
    found = read_shard(task, dim=DIM)
    assert found.ids.dtype == object and found.ids.shape == (0,)
    assert [d["reason"] for d in found.dead_letters] == ["non_finite"] * 2


@pytest.mark.parametrize("fmt", ["parquet", "list", "npy"])
def test_a_dim_far_from_the_data_costs_no_memory(tmp_path, fmt):
    """A mistyped ``dim`` (here the format's largest, 2**20, for 8-value vectors) rejects
    every row as wrong_dimension. The readers made a zero-filled rows x dim array for them,
    scanned it for NaN, and the shard reserved another rows x dim buffer: 4 GiB each for
    1,000 rows. Now neither: traced numpy memory stays under a few MiB."""
    import tracemalloc

    x = vectors(1000, seed=25, dim=8)
    if fmt == "npy":
        np.save(tmp_path / "x.npy", x)
        url = str(tmp_path / "x.npy")
    else:  # fixed_size_list, or list<float> (variable length)
        url = write_parquet(str(tmp_path / "x.parquet"),
                            embedding_table(np.arange(1000), x, fixed=fmt == "parquet"),
                            row_group_size=1000)
    dim = 2**20
    id_column = None if fmt == "npy" else "id"
    [task] = plan_shards(plan_inputs(url, dim=dim, id_column=id_column).splits, 100_000)
    tracemalloc.start()
    try:
        found = read_shard(task, dim=dim, batch_rows=1000, id_column=id_column)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert found.vectors.shape == (0, dim) and found.counts["rows_read"] == 1000
    assert {d["reason"] for d in found.dead_letters} == {"wrong_dimension"}
    assert peak < 64 << 20, peak
