"""How the ingestion job divides its work, without Beam: shards planned from metadata, the
query sample's splits, duplicate ids, and reading one shard's rows.

**Shards.** Shard ``n`` holds the accepted rows whose global input position is in
``[n * rows_per_shard, (n + 1) * rows_per_shard)`` (contiguous ranges, not an id hash: a
range depends only on the input order, keeps each file's rows together, and lets a shard be
planned from metadata alone), except that a remainder of fewer than half a shard joins the
shard before it (:class:`ShardLayout`): a shard's params cost the same whatever its rows, so
a small last shard would be the one least compressed, even bigger than its input
(:class:`~semq_transforms.sharding.ShardLayout`).
:func:`plan_shards` turns the input plan into one :class:`ShardTask` per shard, listing the
splits that overlap it. So vectors never
travel between workers: a shard is read, checked, encoded and written in one place, and
memory is bounded by the shards in flight, not by the input.

**Reads.** Parquet row groups and Arrow record batches can only be read from their start: a
shard starting inside a row group decodes the pages before it (an Arrow batch is loaded
whole), so a group straddling a shard boundary is read by both shards, and a row group of
``n`` shards read shard by shard is decoded about ``(n + 1) / 2`` times (pyarrow's default
row group, 1Mi rows, is 10.5 default shards: ~6.2 decodes). So :func:`plan_runs` groups
consecutive shards into :class:`ShardRun` s, one read task each: :func:`read_shards` reads a
run's splits once, in order, and hands over each shard as soon as its last row is read
(memory: one shard). A group larger than a shard is cut into at most
:data:`READS_PER_SPLIT` runs, so it is still read by several workers in parallel, and a row
group is decoded at most twice (1.86 times for the 1Mi-row group above; an Arrow batch is
loaded by each of its runs, at most three times). Shards that share no group stay runs of
their own, as do NPY splits (NPY is read from any row: nothing is decoded twice). A read
skips the groups of its split before its first row (small groups are merged into splits of
about ``batch_rows`` rows). Every row is read once when no group straddles a shard boundary:
row groups no larger than a shard, ``rows_per_shard`` a multiple of them, and every file's
row count a multiple of the group size (positions run on across files).

**Duplicate ids** are found before any shard is read, from the ids alone
(:func:`iter_split_ids` reads only the id column): ids are hashed into buckets
(:func:`id_buckets`), each bucket finds its repeated ids (:func:`bucket_duplicates`), and each
shard is told which of its positions are duplicates. The first occurrence (lowest global
position) keeps the id; every later row with the same id is rejected as ``duplicate_id``, its
dead letter naming the first occurrence's file and row. The first occurrence keeps the id even
when it is itself rejected for another reason (a NaN vector, say): which row owns an id depends
only on the input order, never on the values. Null ids are not duplicates (they are rejected as
``null_id``). Ids that are global positions (no id column, NPY without an ids file) are unique
by construction and skip this step.

**The query sample** (:func:`sample_splits`): the validation queries are drawn from the heads
of a seeded choice of up to 64 input splits (about ``4 * queries`` accepted rows in all, read
a second time for it; Parquet pages are streamed, so a head costs about one page, not a row
group; a head whose rows are rejected is read further, ``iter_split_head``): spread over the
input, at a small fraction of its read cost.
"""

from __future__ import annotations

import bisect
import dataclasses
import hashlib
import itertools
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from semq_transforms._urls import redact_url
from semq_transforms.errors import InputReadError
from semq_transforms.sharding import ShardLayout
from semq_transforms.transforms.rows import Batch
from semq_transforms.transforms.sources import Split, iter_split

__all__ = ["READS_PER_SPLIT", "FileOffsets", "ShardLayout", "ShardRead", "ShardRows",
           "ShardRun", "ShardTask", "bucket_count", "bucket_duplicates", "decoded_by_split",
           "decoded_rows", "id_buckets", "id_hash", "plan_runs", "plan_shards", "read_shard",
           "read_shards", "sample_splits", "splitmix64"]

#: Ids per duplicate-finding bucket (about 16 bytes each in flight: id and position).
BUCKET_ROWS = 4_000_000
#: Read tasks a split larger than a shard is cut into, at most (see :func:`plan_runs`): each
#: decodes it from its start, so it is decoded at most ``(READS_PER_SPLIT + 1) / 2`` times.
READS_PER_SPLIT = 3
@dataclass(frozen=True, eq=False)
class ShardRows:
    """The accepted rows of one shard, in position order.

    Attributes:
        shard_no: the shard of every row (:meth:`ShardLayout.shard_of`).
        ids: ``[n]`` ids (int64 or object strings).
        vectors: float32 ``[n, d]``.
        positions: int64 ``[n]``, ascending global input positions.
    """

    shard_no: int
    ids: np.ndarray
    vectors: np.ndarray
    positions: np.ndarray

    @property
    def rows(self) -> int:
        return int(self.positions.shape[0])


@dataclass(frozen=True)
class ShardTask:
    """One shard to read: positions ``[start, stop)`` and the splits that overlap them."""

    shard_no: int
    start: int
    stop: int
    splits: tuple[Split, ...]


@dataclass(frozen=True)
class FileOffsets:
    """Global position of each input file's first row (to name a position's file and row)."""

    files: tuple[str, ...]
    offsets: tuple[int, ...]

    @classmethod
    def of(cls, splits: Iterable[Split]) -> FileOffsets:
        first: dict[str, int] = {}
        for s in splits:
            first.setdefault(s.url, s.global_row_offset - s.row_start)
        ordered = sorted(first.items(), key=lambda item: item[1])
        return cls(tuple(f for f, _ in ordered), tuple(o for _, o in ordered))

    def locate(self, position: int) -> tuple[str, int]:
        """``(file, row within the file)`` of a global position."""
        i = bisect.bisect_right(self.offsets, position) - 1
        return self.files[i], position - self.offsets[i]


def plan_shards(splits: Sequence[Split], layout: ShardLayout | int) -> list[ShardTask]:
    """One :class:`ShardTask` per shard of ``layout`` that holds rows, in shard order (an
    int: ``rows_per_shard``, laid out over ``splits``)."""
    if not isinstance(layout, ShardLayout):
        layout = ShardLayout(layout, max((s.global_row_offset + s.rows for s in splits),
                                         default=0))
    overlapping: dict[int, list[Split]] = {}
    for s in splits:
        if not s.rows:
            continue
        first = layout.shard_of_position(s.global_row_offset)
        last = layout.shard_of_position(s.global_row_offset + s.rows - 1)
        for n in range(first, last + 1):
            overlapping.setdefault(n, []).append(s)
    return [ShardTask(n, *layout.bounds(n), tuple(found))
            for n, found in sorted(overlapping.items())]


@dataclass(frozen=True)
class ShardRun:
    """Consecutive shards read by one task (:func:`read_shards`): their splits are read once,
    in order. ``shards``: :class:`ShardTask` s with consecutive shard numbers."""

    shards: tuple[ShardTask, ...]

    @property
    def key(self) -> int:
        """The first shard's number (what the run is keyed by)."""
        return self.shards[0].shard_no

    @property
    def splits(self) -> tuple[Split, ...]:
        """Every split of the run's shards, once each, in input order."""
        return _splits_of(self.shards)


def _splits_of(tasks: Sequence[ShardTask]) -> tuple[Split, ...]:
    """Every split of ``tasks``, once each (a split straddling shards is in several), in
    input order."""
    seen: dict[tuple[str, int], Split] = {}
    for task in tasks:
        for split in task.splits:
            seen.setdefault((split.url, split.row_start), split)
    return tuple(sorted(seen.values(), key=lambda s: s.global_row_offset))


def _groups(split: Split) -> list[tuple[int, int]]:
    """``(global offset, rows)`` of each Parquet row group / Arrow batch of ``split`` (the
    whole split when its group sizes are not known)."""
    if not split.group_rows:
        return [(split.global_row_offset, split.rows)]
    offsets = np.cumsum((split.global_row_offset, *split.group_rows[:-1])).tolist()
    return list(zip(offsets, split.group_rows, strict=True))


def plan_runs(tasks: Sequence[ShardTask], *,
              reads_per_split: int = READS_PER_SPLIT) -> list[ShardRun]:
    """Group ``tasks`` (from :func:`plan_shards`) into read tasks, in shard order.

    Two neighbouring shards share a run when a Parquet row group / Arrow record batch
    straddling their boundary would otherwise be read by both (a read starts at the group
    holding its first row: groups before it are skipped). A group spanning ``n >= 3`` shards
    is cut into at most ``p = min(n, reads_per_split)`` runs, at the last shard boundary at or
    before each of its rows ``j * rows / p`` (``j = 1 .. p - 1``): each run after the first
    decodes the group from its start up to the run's end, so a Parquet row group is decoded
    at most ``(p + 1) / 2`` times (twice for 3); an Arrow batch is loaded whole by each run
    (at most ``p`` times). A group over a single shard boundary stays with a task per shard
    (each side reads it: joining those would chain shards over groups a little smaller than
    a shard without end). ``reads_per_split=1`` reads every group once but in one task;
    ``reads_per_split >= n`` gives about a task per shard (a group's last two shards may
    share one) and about ``(n + 1) / 2`` decodes.
    Runs of two big groups meet in the shard holding the boundary between them, so a run
    spans at most about ``2 * n / p`` shards.
    """
    if type(reads_per_split) is not int or reads_per_split < 1:
        raise ValueError(f"reads_per_split must be an int >= 1, got {reads_per_split!r}")
    joined: set[int] = set()  # n: shards n and n + 1 are in one run
    starts = [task.start for task in tasks]

    def shard_at(position: int) -> int:
        return tasks[max(bisect.bisect_right(starts, position) - 1, 0)].shard_no

    for s in _splits_of(tasks):
        if s.format == "npy":
            continue
        for offset, rows in _groups(s):
            first = shard_at(offset)
            spanned = shard_at(offset + rows - 1) - first + 1
            pieces = min(spanned, reads_per_split)
            if spanned < 2 or (spanned == 2 and pieces == 2):
                continue
            # cut at the last shard boundary at or before row j * rows / pieces of the
            # group (the boundary after shard n - 1 is shard n's start; none: no cut)
            cuts = {shard_at(offset + j * rows // pieces) - 1
                    for j in range(1, pieces)}
            joined.update(n for n in range(first, first + spanned - 1) if n not in cuts)
    runs: list[list[ShardTask]] = []
    for task in tasks:
        previous = runs[-1][-1] if runs else None
        if (previous is not None and previous.shard_no in joined
                and task.shard_no == previous.shard_no + 1):
            runs[-1].append(task)
        else:
            runs.append([task])
    return [ShardRun(tuple(run)) for run in runs]


def decoded_rows(run: ShardRun) -> int:
    """Rows :func:`read_shards` decodes for ``run``: each split from the start of the group
    holding the run's first row (NPY: from that row) to the run's end (Arrow: to the end of
    the batch holding it: a batch is loaded whole). Equal to the run's rows when no row is
    read twice. (Rows, not bytes: Parquet reads go through a read buffer, 1 MiB locally, so
    the bytes of row groups of a few MiB read twice can be more than this says.)"""
    return sum(rows for _, rows in decoded_by_split(run))


def decoded_by_split(run: ShardRun) -> list[tuple[Split, int]]:
    """:func:`decoded_rows` of ``run`` per split: ``[(split, rows decoded)]``."""
    start, stop = run.shards[0].start, run.shards[-1].stop
    out = []
    for split in run.splits:
        part, limit = _needed_part(split, start, stop)
        out.append((split, part.rows if limit is None or part.format == "arrow" else limit))
    return out


def splitmix64(values: np.ndarray) -> np.ndarray:
    """The splitmix64 finalizer of uint64 ``values`` (any shape): a fixed, well-mixed hash,
    the same in every process. Used for the query sample (positions), the sample's splits and
    the duplicate-id buckets (integer ids)."""
    with np.errstate(over="ignore"):
        z = np.asarray(values, dtype=np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


def sample_splits(splits: Sequence[Split], *, queries: int, seed: int,
                  max_splits: int = 64) -> tuple[list[Split], int]:
    """Where the query sample comes from: up to ``max_splits`` splits in seeded order, and how
    many accepted rows of each one's head to read (``iter_split_head``) so that about
    ``4 * queries`` candidates are read.
    Returns ``(splits in input order, head_rows)``."""
    if not splits:
        return [], 1
    keys = splitmix64(np.arange(len(splits), dtype=np.uint64) ^ np.uint64(seed))
    order = np.lexsort((np.arange(len(splits)), keys)).tolist()
    chosen = sorted(order[:max_splits])
    head_rows = max(1, -(-4 * queries // len(chosen)))
    return [splits[i] for i in chosen], head_rows


# -- duplicate ids --------------------------------------------------------------------------


def bucket_count(total_rows: int) -> int:
    """Buckets for duplicate finding: one per :data:`BUCKET_ROWS` ids (at least one)."""
    return max(1, -(-total_rows // BUCKET_ROWS))


def id_hash(ids: np.ndarray) -> np.ndarray:
    """A hash of each id that is the same in every process (Python's ``hash`` of a ``str`` is
    salted per process, so it cannot route ids between workers): splitmix64 of int64 ids,
    the first 8 bytes (little-endian) of the BLAKE2b of the UTF-8 of string ids (not a
    linear code like CRC-32, whose buckets chosen ids can fill at will)."""
    if ids.dtype == object:
        return np.fromiter((int.from_bytes(hashlib.blake2b(
            str(i).encode("utf-8", "surrogatepass"), digest_size=8).digest(), "little")
            for i in ids), np.uint64, count=ids.shape[0])
    return splitmix64(ids.astype(np.int64).view(np.uint64))


def id_buckets(ids: np.ndarray, id_null: np.ndarray, positions: np.ndarray,
               buckets: int) -> list[tuple[int, tuple[np.ndarray, np.ndarray]]]:
    """Non-null ids with their positions, grouped by bucket: ``[(bucket, (ids, positions))]``
    for the buckets that get any."""
    keep = ~id_null
    ids, positions = ids[keep], positions[keep]
    if buckets == 1:
        return [(0, (ids, positions))] if ids.shape[0] else []
    bucket = (id_hash(ids) % np.uint64(buckets)).astype(np.int64)
    out = []
    for b in np.unique(bucket):
        mask = bucket == b
        out.append((int(b), (ids[mask], positions[mask])))
    return out


def bucket_duplicates(parts: Iterable[tuple[np.ndarray, np.ndarray]], *, layout: ShardLayout,
                      files: FileOffsets) -> list[tuple[int, dict[int, str]]]:
    """The later occurrences of every repeated id in one bucket, by shard:
    ``[(shard_no, {position: "first occurrence: <file> row <r>"})]``."""
    parts = list(parts)
    if not parts:
        return []
    ids = np.concatenate([p[0] for p in parts])
    positions = np.concatenate([p[1] for p in parts])
    by_position = np.argsort(positions, kind="stable")
    ids, positions = ids[by_position], positions[by_position]
    order = np.argsort(ids, kind="stable")  # equal ids stay in position order
    sorted_ids = ids[order]
    same = sorted_ids[1:] == sorted_ids[:-1]
    if not same.any():
        return []
    # run starts: the first occurrence of each id in sorted order
    starts = np.concatenate([[True], ~same])
    first_index = np.maximum.accumulate(np.where(starts, np.arange(order.shape[0]), 0))
    later = np.flatnonzero(~starts)
    found: dict[int, dict[int, str]] = {}
    for j in later:
        position = int(positions[order[j]])
        source, row = files.locate(int(positions[order[first_index[j]]]))
        found.setdefault(layout.shard_of_position(position), {})[position] = (
            f"first occurrence: {redact_url(source)} row {row}")
    return sorted(found.items())


# -- reading one shard ----------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ShardRead:
    """What :func:`read_shard` found in a shard's range.

    ``ids``/``vectors``/``positions``: the accepted rows in position order (``vectors``
    float32 ``[n, d]``); ``dead_letters``: one dict per rejected row; ``counts``: rows_read,
    rows_accepted, rows_rejected, bytes_read, and ``rejected_<reason>`` per reason seen.
    """

    ids: np.ndarray
    vectors: np.ndarray
    positions: np.ndarray
    dead_letters: tuple[dict[str, Any], ...]
    counts: dict[str, int]


def _clip(batch: Batch, start: int, stop: int, duplicates: Mapping[int, str],
          duplicate_positions: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, list,
                                                    int]:
    """The part of ``batch`` whose positions are in ``[start, stop)``: accepted ids, vectors,
    positions, dead letters (duplicates moved there), and the number of rows in range."""
    lo, hi = max(start, batch.global_row_offset), min(stop, batch.global_row_offset + batch.rows)
    in_range = max(0, hi - lo)
    dup = (np.isin(batch.positions, duplicate_positions) if duplicate_positions.size
           else None)
    if in_range == batch.rows and (dup is None or not dup.any()):
        return batch.ids, batch.vectors, batch.positions, list(batch.rejected), in_range
    first_row = batch.row_start - batch.global_row_offset  # file row = position + this
    dead = [d for d in batch.rejected if lo <= d["row"] - first_row < hi]
    keep = (batch.positions >= lo) & (batch.positions < hi)
    if dup is not None:
        dup &= keep
        for i in np.flatnonzero(dup):
            position = int(batch.positions[i])
            value = batch.ids[i]
            dead.append({"id": value.item() if isinstance(value, np.generic) else value,
                         "source": batch.source, "row": position + first_row,
                         "reason": "duplicate_id", "detail": duplicates[position]})
        keep &= ~dup
    return batch.ids[keep], batch.vectors[keep], batch.positions[keep], dead, in_range


def _needed_part(split: Split, start: int, stop: int) -> tuple[Split, int | None]:
    """The part of ``split`` a read of global rows ``[start, stop)`` reads: ``(split,
    limit_rows)``. NPY rows can be read from any row, so an NPY split starts at ``start``;
    a Parquet / Arrow split drops the row groups / batches wholly before ``start`` or from
    ``stop`` on (when its group sizes are known), and rows of its first group before
    ``start`` are decoded and dropped. Every format stops reading at ``stop``."""
    first, end = split.global_row_offset, split.global_row_offset + split.rows
    if split.format == "npy" and start > first:
        split = dataclasses.replace(split, row_start=split.row_start + (start - first),
                                    global_row_offset=start)
    elif split.group_rows:
        groups = _groups(split)
        keep = [i for i, (offset, rows) in enumerate(groups)
                if offset + rows > start and offset < stop]
        if keep and (keep[0] > 0 or keep[-1] < len(groups) - 1):
            skipped = groups[keep[0]][0] - first
            rows = sum(split.group_rows[keep[0]:keep[-1] + 1])
            split = dataclasses.replace(
                split, row_start=split.row_start + skipped,
                row_stop=split.row_start + skipped + rows,
                global_row_offset=first + skipped,
                row_groups=split.row_groups[keep[0]:keep[-1] + 1],
                group_rows=split.group_rows[keep[0]:keep[-1] + 1])
    needed = min(stop, end) - split.global_row_offset
    return split, (needed if needed < split.rows else None)


class _ShardFill:
    """One shard's rows as a run's batches go by: accepted vectors go straight into one array
    sized for every row in range (no list of batches concatenated at the end: one shard's
    vectors in memory, not two), made when the first row is accepted (a ``dim`` far from the
    data's, where every row is rejected, reserves nothing)."""

    def __init__(self, task: ShardTask, duplicates: Mapping[int, str],
                 duplicate_positions: np.ndarray, dim: int | None) -> None:
        self.task = task
        self._duplicates = duplicates
        self._duplicate_positions = duplicate_positions
        self._dim = dim
        self._capacity = sum(max(0, min(task.stop, s.global_row_offset + s.rows)
                                 - max(task.start, s.global_row_offset)) for s in task.splits)
        self._vectors: np.ndarray | None = None
        self._filled = 0
        self._ids: list[np.ndarray] = []
        self._positions: list[np.ndarray] = []
        self._dead: list[dict[str, Any]] = []
        self._counts = {"rows_read": 0, "bytes_read": 0}

    def add(self, batch: Batch, *, bytes_read: int) -> None:
        """Take the rows of ``batch`` in this shard's range; count ``bytes_read`` (the
        batch's bytes are counted by the first shard that sees the batch)."""
        task = self.task
        b_ids, b_vectors, b_positions, b_dead, rows = _clip(
            batch, task.start, task.stop, self._duplicates, self._duplicate_positions)
        self._counts["rows_read"] += rows
        self._counts["bytes_read"] += bytes_read
        if self._filled + b_vectors.shape[0] > self._capacity:
            raise InputReadError(f"cannot read {batch.source}: shard {task.shard_no} got more "
                                 f"rows than the plan has in its range ({self._capacity}); "
                                 f"the file changed since it was planned")
        if self._dim is None and b_vectors.shape[0]:
            raise InputReadError(f"cannot read {batch.source}: it has vectors where the plan "
                                 f"found none; the file changed since it was planned")
        if b_vectors.shape[0]:
            if self._vectors is None:
                self._vectors = np.empty((self._capacity, self._dim), dtype=np.float32)
            self._vectors[self._filled:self._filled + b_vectors.shape[0]] = b_vectors
            self._filled += b_vectors.shape[0]
        self._ids.append(b_ids)   # even empty: the id dtype (int64 or str objects)
        self._positions.append(b_positions)
        self._dead.extend(b_dead)

    def finish(self) -> ShardRead:
        dead, counts = self._dead, self._counts
        dead.sort(key=lambda d: (d["source"], d["row"]))
        counts["rows_rejected"] = len(dead)
        counts["rows_accepted"] = counts["rows_read"] - len(dead)
        for d in dead:
            key = f"rejected_{d['reason']}"
            counts[key] = counts.get(key, 0) + 1
        positions = (np.concatenate(self._positions) if self._positions
                     else np.zeros(0, np.int64))
        if positions.size > 1 and not np.all(np.diff(positions) > 0):
            raise ValueError(f"shard {self.task.shard_no}: splits overlap (a row was read "
                             f"twice)")
        vectors = self._vectors
        if vectors is None:  # no row accepted
            vectors = np.zeros((0, self._dim or 0), dtype=np.float32)
        elif self._filled < self._capacity:  # rejected rows: keep a right-sized copy
            vectors = vectors[:self._filled].copy()
        found = ShardRead(ids=np.concatenate(self._ids) if self._ids else np.zeros(0, np.int64),
                          vectors=vectors, positions=positions, dead_letters=tuple(dead),
                          counts=counts)
        # let go of the (larger) array now, not when the run's next shard starts
        self._vectors, self._ids, self._positions = None, [], []
        return found


def read_shards(run: ShardRun | Sequence[ShardTask], *,
                duplicates: Mapping[int, str] | None = None, dim: int | None,
                filesystem: Any = None, **read_options: Any) -> Iterator[tuple[ShardTask,
                                                                                 ShardRead]]:
    """Read the rows of a run of consecutive shards with one pass over their splits, and
    sort each shard's rows into accepted rows and dead letters.

    Args:
        run: a :class:`ShardRun` from :func:`plan_runs` (or its tasks, consecutive).
        duplicates: ``{position: detail}`` of the run's rows to reject as ``duplicate_id``.
        dim: the vector width (rows of another length are rejected); None when the plan found
            no width and no vector (``plan_inputs``): then every row is rejected.
        filesystem: an fsspec filesystem to reuse.
        **read_options: :func:`iter_split` options (``vector_column``, ``id_column``,
            ``ids_url``, ``batch_rows``, ``reject_zero_vectors``, ``max_abs_value``,
            ``storage_options``).

    Yields:
        ``(task, ShardRead)`` per shard, in shard order, each as soon as its last row is read
        (the caller holds one shard's rows at a time if it lets go of each before the next).
        ``counts["bytes_read"]`` counts each byte read once, for the shard that read it
        (bytes decoded before a shard's start count for it).
    """
    if not isinstance(run, ShardRun):
        run = ShardRun(tuple(run))
    tasks = run.shards
    if not tasks or any(b.shard_no != a.shard_no + 1 for a, b in itertools.pairwise(tasks)):
        raise ValueError(f"a run needs consecutive shards, got "
                         f"{[t.shard_no for t in tasks]}")
    duplicates = duplicates or {}
    duplicate_positions = np.array(sorted(duplicates), dtype=np.int64)

    def fill(i: int) -> _ShardFill:
        return _ShardFill(tasks[i], duplicates, duplicate_positions, dim)

    start, stop = tasks[0].start, tasks[-1].stop
    i, current = 0, fill(0)
    for split in run.splits:
        split, limit = _needed_part(split, start, stop)
        for batch in iter_split(split, dim=dim, filesystem=filesystem, limit_rows=limit,
                                **read_options):
            end = batch.global_row_offset + batch.rows
            bytes_read = batch.bytes_read
            while True:
                current.add(batch, bytes_read=bytes_read)
                bytes_read = 0
                if end < current.task.stop or i + 1 == len(tasks):
                    break
                yield current.task, current.finish()
                i, current = i + 1, fill(i + 1)
    yield current.task, current.finish()
    if i + 1 != len(tasks):  # (the readers raise first when a file lost rows)
        files = ", ".join(sorted({redact_url(s.url) for s in run.splits}))
        raise InputReadError(f"shards {tasks[i + 1].shard_no}..{tasks[-1].shard_no}: no rows "
                             f"read where the plan has some; one of {files} changed since it "
                             f"was planned")


def read_shard(task: ShardTask, *, duplicates: Mapping[int, str] | None = None,
               dim: int | None, filesystem: Any = None, **read_options: Any) -> ShardRead:
    """Read the rows of one shard's range (a run of one, :func:`read_shards`)."""
    [(_, found)] = read_shards([task], duplicates=duplicates, dim=dim, filesystem=filesystem,
                               **read_options)
    return found
