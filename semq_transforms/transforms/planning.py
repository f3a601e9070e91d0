"""How the ingestion job divides its work, without Beam: shards planned from metadata, the
query sample's splits, duplicate ids, and reading one shard's rows.

**Shards.** Shard ``n`` holds the accepted rows whose global input position is in
``[n * rows_per_shard, (n + 1) * rows_per_shard)`` (contiguous ranges, not an id hash: a
range depends only on the input order, keeps each file's rows together, and lets a shard be
planned from metadata alone). :func:`plan_shards` turns the input plan into one
:class:`ShardTask` per non-empty range, listing the splits that overlap it; a worker reads
exactly those splits (:func:`read_shard`) and keeps the rows in its range. So vectors never
travel between workers: a shard is read, checked, encoded and written in one place, and
memory is bounded by the shards in flight, not by the input. The price: a split (a Parquet
row group) that straddles a shard boundary is read by both shards; pick ``rows_per_shard`` a
multiple of the row-group size, or row groups much smaller than a shard.

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
import zlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from semq_transforms._urls import redact_url
from semq_transforms.errors import InputReadError
from semq_transforms.transforms.sources import Batch, Split, iter_split

__all__ = ["FileOffsets", "ShardRead", "ShardRows", "ShardTask", "bucket_count",
           "bucket_duplicates", "id_buckets", "plan_shards", "read_shard", "sample_splits",
           "splitmix64"]

#: Ids per duplicate-finding bucket (about 16 bytes each in flight: id and position).
BUCKET_ROWS = 4_000_000


@dataclass(frozen=True, eq=False)
class ShardRows:
    """The accepted rows of one shard, in position order.

    Attributes:
        shard_no: ``position // rows_per_shard`` of every row.
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


def plan_shards(splits: Sequence[Split], rows_per_shard: int) -> list[ShardTask]:
    """One :class:`ShardTask` per range of ``rows_per_shard`` global positions that holds
    rows, in shard order."""
    if type(rows_per_shard) is not int or rows_per_shard < 1:
        raise ValueError(f"rows_per_shard must be an int >= 1, got {rows_per_shard!r}")
    overlapping: dict[int, list[Split]] = {}
    for s in splits:
        if not s.rows:
            continue
        first = s.global_row_offset // rows_per_shard
        last = (s.global_row_offset + s.rows - 1) // rows_per_shard
        for n in range(first, last + 1):
            overlapping.setdefault(n, []).append(s)
    return [ShardTask(n, n * rows_per_shard, (n + 1) * rows_per_shard, tuple(found))
            for n, found in sorted(overlapping.items())]


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


def _id_hash(ids: np.ndarray) -> np.ndarray:
    """A hash of each id that is the same in every process (Python's ``hash`` of a ``str`` is
    salted per process, so it cannot route ids between workers): splitmix64 of int64 ids,
    CRC-32 of the UTF-8 of string ids."""
    if ids.dtype == object:
        return np.fromiter((zlib.crc32(str(i).encode("utf-8")) for i in ids), np.uint64,
                           count=ids.shape[0])
    return splitmix64(ids.astype(np.int64).view(np.uint64))


def id_buckets(ids: np.ndarray, id_null: np.ndarray, positions: np.ndarray,
               buckets: int) -> list[tuple[int, tuple[np.ndarray, np.ndarray]]]:
    """Non-null ids with their positions, grouped by bucket: ``[(bucket, (ids, positions))]``
    for the buckets that get any."""
    keep = ~id_null
    ids, positions = ids[keep], positions[keep]
    if buckets == 1:
        return [(0, (ids, positions))] if ids.shape[0] else []
    bucket = (_id_hash(ids) % np.uint64(buckets)).astype(np.int64)
    out = []
    for b in np.unique(bucket):
        mask = bucket == b
        out.append((int(b), (ids[mask], positions[mask])))
    return out


def bucket_duplicates(parts: Iterable[tuple[np.ndarray, np.ndarray]], *, rows_per_shard: int,
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
        found.setdefault(position // rows_per_shard, {})[position] = (
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
    """The part of ``split`` a shard of global rows ``[start, stop)`` reads: ``(split,
    limit_rows)``. Every format stops at ``stop`` (a split running past the shard was read to
    its end, for each shard it overlaps); NPY rows can be read from any row, so an NPY split
    also starts at ``start``. (Parquet pages and Arrow batches before ``start`` are decoded.)"""
    first, end = split.global_row_offset, split.global_row_offset + split.rows
    if split.format == "npy" and start > first:
        split = dataclasses.replace(split, row_start=split.row_start + (start - first),
                                    global_row_offset=start)
    needed = min(stop, end) - split.global_row_offset
    return split, (needed if needed < split.rows else None)


def read_shard(task: ShardTask, *, duplicates: Mapping[int, str] | None = None,
               dim: int | None, filesystem: Any = None, **read_options: Any) -> ShardRead:
    """Read the rows of ``task``'s range from its splits and sort them into accepted rows
    and dead letters.

    Args:
        task: from :func:`plan_shards`.
        duplicates: ``{position: detail}`` of this shard's rows to reject as ``duplicate_id``.
        dim: the vector width (rows of another length are rejected); None when the plan found
            no width and no vector (``plan_inputs``): then every row is rejected.
        filesystem: an fsspec filesystem to reuse.
        **read_options: :func:`iter_split` options (``vector_column``, ``id_column``,
            ``ids_url``, ``batch_rows``, ``reject_zero_vectors``, ``max_abs_value``,
            ``storage_options``).
    """
    duplicates = duplicates or {}
    duplicate_positions = np.array(sorted(duplicates), dtype=np.int64)
    # Accepted vectors go straight into one array sized for every row in range (no list
    # of batches concatenated at the end: one shard's vectors in memory, not two).
    capacity = sum(max(0, min(task.stop, s.global_row_offset + s.rows)
                       - max(task.start, s.global_row_offset)) for s in task.splits)
    vectors = np.empty((capacity, 0 if dim is None else dim), dtype=np.float32)
    filled = 0
    ids, positions, dead = [], [], []
    counts = {"rows_read": 0, "bytes_read": 0}
    for split in task.splits:
        split, limit = _needed_part(split, task.start, task.stop)
        for batch in iter_split(split, dim=dim, filesystem=filesystem, limit_rows=limit,
                                **read_options):
            b_ids, b_vectors, b_positions, b_dead, rows = _clip(
                batch, task.start, task.stop, duplicates, duplicate_positions)
            counts["rows_read"] += rows
            counts["bytes_read"] += batch.bytes_read
            if filled + b_vectors.shape[0] > capacity:
                raise ValueError(f"shard {task.shard_no}: read more rows than its range "
                                 f"holds ({capacity})")
            if dim is None and b_vectors.shape[0]:
                raise InputReadError(f"cannot read {split.url}: it has vectors where the plan "
                                     f"found none; the file changed since it was planned")
            vectors[filled:filled + b_vectors.shape[0]] = b_vectors
            filled += b_vectors.shape[0]
            ids.append(b_ids)
            positions.append(b_positions)
            dead.extend(b_dead)
    dead.sort(key=lambda d: (d["source"], d["row"]))
    counts["rows_rejected"] = len(dead)
    counts["rows_accepted"] = counts["rows_read"] - len(dead)
    for d in dead:
        key = f"rejected_{d['reason']}"
        counts[key] = counts.get(key, 0) + 1
    positions_all = np.concatenate(positions) if positions else np.zeros(0, np.int64)
    if positions_all.size > 1 and not np.all(np.diff(positions_all) > 0):
        raise ValueError(f"shard {task.shard_no}: splits overlap (a row was read twice)")
    if filled < capacity:  # rejected rows: keep a right-sized copy, free the rest
        vectors = vectors[:filled].copy()
    return ShardRead(ids=np.concatenate(ids) if ids else np.zeros(0, np.int64),
                     vectors=vectors, positions=positions_all, dead_letters=tuple(dead),
                     counts=counts)
