"""The input stage as Beam transforms: read embedding files into batches or shards, and write
the rows that were rejected.

``ReadEmbeddings`` plans its splits while the pipeline is being constructed (when it is
applied): the planner reads only metadata (Parquet and Arrow footers, NPY headers), so this
costs a few small reads per file, and it makes the plan, and so every row's global position,
a fixed part of the pipeline: a retried or re-run job reads exactly the same splits, and
downstream steps can cut contiguous shards by global position without a second pass. Errors
about whole files (missing, not Parquet, no vector column, truncated NPY) are raised right there,
before any worker starts. The price: the splits travel inside the pipeline graph (``Create``),
about 200 bytes each; with the default ``batch_rows`` a billion rows is ~120k splits (~25 MB),
past which ``batch_rows`` should grow.

Reading then spreads the splits over workers (``Reshuffle``) and emits :class:`Batch` elements
of at most ``batch_rows`` rows (never one element per vector), plus one dead-letter dict per
rejected row on the ``dead_letters`` output.

    read = pipeline | "Read embeddings" >> ReadEmbeddings("s3://bucket/emb/*.parquet", dim=384)
    read.batches        # PCollection[Batch]
    read.dead_letters   # PCollection[dict]: {"id", "source", "row", "reason", "detail"}
    read.dead_letters | "Write dead letters" >> WriteDeadLetters("s3://bucket/run/dead.parquet")

``ReadShards`` is the same input cut into shards of global positions, each read (and checked)
by the worker that will encode it, with repeated ids found beforehand by ``FindDuplicateIds``
from the id column alone (see :mod:`~semq_transforms.transforms.planning`): what the ingestion
job uses, so vectors never travel between workers.

    shards = pipeline | "Read shards" >> ReadShards(read, rows_per_shard=65_536)
    shards.shards        # PCollection[ShardRows], one per shard with accepted rows
    shards.dead_letters  # as above, plus "duplicate_id" (detail: the first occurrence)
    shards.counts        # one dict of counts per shard

Counters (namespace ``semq``): ``rows_read``, ``rows_accepted``, ``rows_rejected``,
``rows_rejected_<reason>`` for each of :data:`REJECT_REASONS`, ``bytes_read`` and
``splits_read`` (``shards_read`` for ``ReadShards``); ``rows_read == rows_accepted +
rows_rejected`` always holds.
"""

from __future__ import annotations

import copy
import logging
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import apache_beam as beam
import pyarrow as pa
from apache_beam.metrics import Metrics

from semq_transforms._urls import redact_url
from semq_transforms.codecs.base import MAX_ABS_VALUE
from semq_transforms.transforms import _coders  # noqa: F401 - registers the element coders
from semq_transforms.transforms._worker import worker_setup
from semq_transforms.transforms.planning import (
    READS_PER_SPLIT,
    FileOffsets,
    ShardLayout,
    ShardRows,
    ShardRun,
    ShardTask,
    bucket_count,
    bucket_duplicates,
    decoded_by_split,
    id_buckets,
    plan_runs,
    plan_shards,
    read_shards,
)
from semq_transforms.transforms.rows import REJECT_REASONS, Batch, write_dead_letters
from semq_transforms.transforms.sources import (
    InputFormat,
    InputPlan,
    Split,
    filesystem_for,
    ids_are_positions,
    iter_split,
    iter_split_head,
    iter_split_ids,
    plan_inputs,
)

logger = logging.getLogger(__name__)

METRICS_NAMESPACE = "semq"
#: Where a second read of rows (the query sample) counts, so ``semq`` counts each row once.
_UNCOUNTED = "semq_sample"
BATCHES = "batches"
DEAD_LETTERS = "dead_letters"
SHARDS = "shards"
COUNTS = "counts"


class _ReadSplitFn(beam.DoFn):
    """Split -> Batches (main output) and dead letters (``dead_letters`` output)."""

    def __init__(self, read_options: Mapping[str, Any], *, metrics: bool = True,
                 head_rows: int | None = None) -> None:
        super().__init__()
        self._read_options = dict(read_options)
        self._head_rows = head_rows

        def counter(name: str) -> Any:
            return Metrics.counter(METRICS_NAMESPACE if metrics else _UNCOUNTED, name)

        self._splits_read = counter("splits_read")
        self._rows_read = counter("rows_read")
        self._rows_accepted = counter("rows_accepted")
        self._rows_rejected = counter("rows_rejected")
        self._bytes_read = counter("bytes_read")
        self._rejected_by_reason = {reason: counter(f"rows_rejected_{reason}")
                                    for reason in REJECT_REASONS}

    def setup(self) -> None:
        worker_setup()
        self._filesystem: Any = None

    def process(self, split: Split) -> Iterator[Any]:
        # One filesystem per DoFn instance, built on the worker (never pickled).
        self._filesystem = filesystem_for(split.url, self._read_options["storage_options"],
                                          self._filesystem)
        batches = (iter_split(split, filesystem=self._filesystem, **self._read_options)
                   if self._head_rows is None else
                   iter_split_head(split, self._head_rows, filesystem=self._filesystem,
                                   **self._read_options))
        for batch in batches:
            self._rows_read.inc(batch.rows)
            self._rows_accepted.inc(batch.accepted)
            self._rows_rejected.inc(len(batch.rejected))
            self._bytes_read.inc(batch.bytes_read)
            for reason, count in Counter(d["reason"] for d in batch.rejected).items():
                self._rejected_by_reason[reason].inc(count)
            yield batch
            for dead_letter in batch.rejected:
                yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter)
        self._splits_read.inc()


class ReadEmbeddings(beam.PTransform):
    """Read embedding files into :class:`Batch` es (main output ``batches``) and dead letters
    (output ``dead_letters``). Apply it to the pipeline (a ``PBegin``).

    Args:
        url: a file, folder or glob on any fsspec filesystem (see ``expand_inputs``).
        format: ``"auto"`` (by extension, else by magic bytes), ``"parquet"``, ``"arrow"``,
            ``"npy"``. All inputs must have the same format.
        vector_column, id_column: Parquet / Arrow columns; ``id_column=None`` uses global row
            positions as ids (NPY inputs always do, unless ``ids_url`` is given).
        ids_url: NPY inputs only: an NPY file of ids, one per input row in global order.
        dim: the vector width; rows of another length are rejected (``wrong_dimension``). None
            takes it from the metadata, or from the first rows of variable-length lists.
        batch_rows: rows per split (about) and at most per emitted Batch.
        reject_zero_vectors: reject all-zero vectors (``zero_vector``).
        max_abs_value: reject vectors holding a finite value beyond ``+/-max_abs_value``
            (``out_of_range``): pass ``semq_transforms.codecs.max_abs_value(codecs)`` for the
            codecs the rows go to; the default is every codec's limit.
        storage_options: fsspec options (endpoint, credentials) for the inputs; they travel
            with the DoFn to the workers, so prefer credentials from the environment.

    The plan (files, splits, dim, total rows) is made when the transform is applied, or first
    asked for through :attr:`plan`; it raises ``InputReadError`` for unreadable files.
    """

    def __init__(self, url: str, *, format: InputFormat = "auto",
                 vector_column: str = "embedding", id_column: str | None = "id",
                 ids_url: str | None = None, dim: int | None = None, batch_rows: int = 8192,
                 reject_zero_vectors: bool = True, max_abs_value: float = MAX_ABS_VALUE,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        if type(batch_rows) is not int or batch_rows < 1:
            raise ValueError(f"batch_rows must be an int >= 1, got {batch_rows!r}")
        self._url = url
        self._format = format
        self._vector_column = vector_column
        self._id_column = id_column
        self._ids_url = ids_url
        self._dim = dim
        self._batch_rows = batch_rows
        self._reject_zero_vectors = reject_zero_vectors
        self._max_abs_value = max_abs_value
        self._storage_options = dict(storage_options) if storage_options else None
        self._plan: InputPlan | None = None
        self._only: tuple[Split, ...] | None = None
        self._head_rows: int | None = None
        self._metrics = True

    @property
    def plan(self) -> InputPlan:
        """The input plan (made once, from metadata only)."""
        if self._plan is None:
            self._plan = plan_inputs(
                self._url, format=self._format, vector_column=self._vector_column,
                id_column=self._id_column, ids_url=self._ids_url, dim=self._dim,
                batch_rows=self._batch_rows, storage_options=self._storage_options)
        return self._plan

    @property
    def read_options(self) -> dict[str, Any]:
        """The :func:`iter_split` keyword arguments this transform reads with (``dim``
        resolved by the plan)."""
        return {"vector_column": self._vector_column, "id_column": self._id_column,
                "ids_url": self._ids_url, "dim": self.plan.dim, "batch_rows": self._batch_rows,
                "reject_zero_vectors": self._reject_zero_vectors,
                "max_abs_value": self._max_abs_value, "storage_options": self._storage_options}

    def only(self, splits: Sequence[Split], *, head_rows: int | None = None,
             metrics: bool = False) -> ReadEmbeddings:
        """The same read restricted to ``splits`` (of this plan), and to the head of each that
        holds ``head_rows`` accepted rows if given (``iter_split_head``), counting into the
        ``semq`` metrics only if ``metrics``: for a second look at some rows (the query
        sample)."""
        other = copy.copy(self)
        other._only = tuple(splits)
        other._head_rows = head_rows
        other._metrics = metrics
        return other

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        splits = list(self.plan.splits if self._only is None else self._only)
        read_fn = _ReadSplitFn(self.read_options, metrics=self._metrics,
                               head_rows=self._head_rows)
        return (pbegin
                # one shuffle spreads the splits (Create's own would be a second stage)
                | "Create splits" >> beam.Create(splits, reshuffle=False)
                | "Spread splits over workers" >> beam.Reshuffle()
                | "Read splits" >> beam.ParDo(read_fn).with_output_types(Batch).with_outputs(
                    DEAD_LETTERS, main=BATCHES))


class _IdBucketsFn(beam.DoFn):
    """Split -> ``(bucket, (ids, positions))`` for its non-null ids (the id column only)."""

    def __init__(self, read_options: Mapping[str, Any], buckets: int) -> None:
        super().__init__()
        self._options = {key: read_options[key] for key in ("id_column", "ids_url",
                                                              "storage_options")}
        self._buckets = buckets

    def setup(self) -> None:
        worker_setup()
        self._filesystem: Any = None

    def process(self, split: Split) -> Iterator[tuple[int, tuple]]:
        self._filesystem = filesystem_for(split.url, self._options["storage_options"],
                                          self._filesystem)
        for ids, id_null, positions in iter_split_ids(split, filesystem=self._filesystem,
                                                      **self._options):
            yield from id_buckets(ids, id_null, positions, self._buckets)


class FindDuplicateIds(beam.PTransform):
    """PBegin -> ``(shard_no, {position: detail})``: the rows of each shard whose id already
    occurred at a lower global position (see :mod:`~semq_transforms.transforms.planning`).
    Reads only the ids; a keyed grouping by id hash, never all ids in one place."""

    def __init__(self, read: ReadEmbeddings, *, layout: ShardLayout) -> None:
        super().__init__()
        self._read = read
        self._layout = layout

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        plan = self._read.plan
        files = FileOffsets.of(plan.splits)
        return (pbegin
                | "Create id splits" >> beam.Create(list(plan.splits), reshuffle=False)
                | "Spread id splits" >> beam.Reshuffle()
                | "Read ids into buckets" >> beam.ParDo(_IdBucketsFn(
                    self._read.read_options, bucket_count(plan.total_rows)))
                | "Group ids by bucket" >> beam.GroupByKey()
                | "Find repeated ids" >> beam.FlatMap(
                    lambda item, layout, files: bucket_duplicates(
                        item[1], layout=layout, files=files),
                    self._layout, files))


class _ReadShardFn(beam.DoFn):
    """``(run key, {"run": [ShardRun], "duplicates": [{position: detail}, ...]})`` -> per
    shard of the run, in order: its dead letters (``dead_letters``), its ShardRows (main)
    and one counts dict (``counts``), each shard as soon as it is read."""

    def __init__(self, read_options: Mapping[str, Any]) -> None:
        super().__init__()
        self._read_options = dict(read_options)

        def counter(name: str) -> Any:
            return Metrics.counter(METRICS_NAMESPACE, name)

        self._counters = {key: counter(key) for key in (
            "rows_read", "rows_accepted", "rows_rejected", "bytes_read")}
        self._counters.update({f"rejected_{reason}": counter(f"rows_rejected_{reason}")
                               for reason in REJECT_REASONS})
        self._shards_read = counter("shards_read")

    def setup(self) -> None:
        worker_setup()
        self._filesystem: Any = None

    def process(self, item: tuple[int, Mapping[str, Any]]) -> Iterator[Any]:
        _, grouped = item
        runs = list(grouped["run"])
        if len(runs) != 1:  # duplicates for a run with no rows cannot happen
            raise ValueError(f"run {item[0]}: expected one shard run, got {len(runs)}")
        run = runs[0]
        duplicates: dict[int, str] = {}
        for part in grouped.get("duplicates", ()):
            duplicates.update(part)
        options = self._read_options
        self._filesystem = filesystem_for(run.splits[0].url, options["storage_options"],
                                          self._filesystem)
        for task, found in read_shards(run, duplicates=duplicates, filesystem=self._filesystem,
                                       **options):
            # pyarrow's allocator keeps freed read buffers cached per thread; hand them back,
            # so parallel workers do not each hold their last pages while encoding.
            pa.default_memory_pool().release_unused()
            for key, value in found.counts.items():
                self._counters[key].inc(value)
            self._shards_read.inc()
            for dead_letter in found.dead_letters:
                yield beam.pvalue.TaggedOutput(DEAD_LETTERS, dead_letter)
            counts = found.counts
            if found.positions.size:
                yield ShardRows(task.shard_no, found.ids, found.vectors, found.positions)
            del found  # the next shard is read while this frame waits: hold no rows
            # A runner's output loop keeps the last element yielded while this generator
            # reads the next shard: make that the small counts dict, not the rows.
            yield beam.pvalue.TaggedOutput(COUNTS, counts)


def _warn_of_rereads(splits: Sequence[Split], runs: Sequence[ShardRun],
                     rows_per_shard: int) -> None:
    """Log when the planned reads decode rows more than 1.1 times over, naming the file read
    most over and why: its row groups (Arrow batches) are larger than a shard, or they
    straddle shard boundaries (rows_per_shard not a multiple of them, or an earlier file's
    row count not a multiple of the group size shifting every later group)."""
    total = sum(s.rows for s in splits)
    excess: dict[str, int] = {}
    for run in runs:
        for split, rows in decoded_by_split(run):
            excess[split.url] = excess.get(split.url, 0) + rows
    for split in splits:
        excess[split.url] = excess.get(split.url, 0) - split.rows
    if not total or sum(excess.values()) <= 0.1 * total:
        return
    url = max(excess, key=lambda u: (excess[u], u))
    largest = max(rows for s in splits if s.url == url for rows in (s.group_rows or (s.rows,)))
    if largest > rows_per_shard:
        cause = (f"its row groups (or Arrow record batches) of up to {largest} rows are "
                 f"larger than rows_per_shard={rows_per_shard}: each is read from its start "
                 f"by every read task it overlaps (at most {READS_PER_SPLIT})")
    else:
        cause = (f"its row groups (or Arrow record batches) of up to {largest} rows straddle "
                 f"the boundaries of shards of {rows_per_shard} rows"
                 + (" (a file before it, whose row count is not a multiple of the group size, "
                    "shifts them)" if rows_per_shard % largest == 0 else "")
                 + ": a shard starting inside one reads it from its start")
    logger.warning("%s: the plan reads the input %.2f times over, this file %.2f times: %s. "
                   "Every row is read once when no row group straddles a shard boundary (row "
                   "groups no larger than a shard, rows_per_shard a multiple of them, and "
                   "every file's rows a multiple of the group size)", redact_url(url),
                   1 + sum(excess.values()) / total,
                   1 + excess[url] / sum(s.rows for s in splits if s.url == url), cause)


class ReadShards(beam.PTransform):
    """PBegin -> the input cut into shards, each read where it is encoded: outputs ``shards``
    (one :class:`~semq_transforms.transforms.encode.ShardRows` per shard with accepted rows),
    ``dead_letters`` (dicts, as :class:`ReadEmbeddings`, plus ``duplicate_id``) and ``counts``
    (one dict per shard: rows_read, rows_accepted, rows_rejected, bytes_read,
    ``rejected_<reason>``).

    Shard ``n`` is the accepted rows at global positions ``[n * rows_per_shard,
    (n + 1) * rows_per_shard)``, a remainder under half a shard joining the last one
    (:class:`~semq_transforms.sharding.ShardLayout`). Shards that share a row group larger
    than a shard are read by one task, one pass (a run, up to ``READS_PER_SPLIT`` runs per row
    group), each handed on as soon as it is read. Unlike the PCollection sink
    (``WriteSemqIndex``), no vector crosses a worker boundary: only shard tasks (a few hundred
    bytes) and, for duplicate detection, ids are shuffled.

    Args:
        read: the input (its plan and read options are used; it is not applied itself).
        rows_per_shard: positions per shard.
        find_duplicates: reject repeated ids (skipped when ids are global positions).

    Counters (namespace ``semq``): as :class:`ReadEmbeddings`, plus ``shards_read``.
    """

    def __init__(self, read: ReadEmbeddings, *, rows_per_shard: int,
                 find_duplicates: bool = True) -> None:
        super().__init__()
        self._read = read
        self._layout = ShardLayout(rows_per_shard, read.plan.total_rows)
        self._tasks = plan_shards(read.plan.splits, self._layout)
        self._runs = plan_runs(self._tasks)
        _warn_of_rereads(read.plan.splits, self._runs, rows_per_shard)
        options = read.read_options
        self._find_duplicates = find_duplicates and not all(
            ids_are_positions(fmt, options["id_column"], options["ids_url"])
            for fmt in read.plan.formats)

    @property
    def tasks(self) -> list[ShardTask]:
        """The planned shards."""
        return list(self._tasks)

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        return (self.keyed_tasks(pbegin)
                | "Read and check shards" >> beam.ParDo(self.read_fn()).with_output_types(
                    ShardRows).with_outputs(DEAD_LETTERS, COUNTS, main=SHARDS))

    @property
    def runs(self) -> list[ShardRun]:
        """The planned read tasks: runs of consecutive shards read in one pass
        (:func:`~semq_transforms.transforms.planning.plan_runs`)."""
        return list(self._runs)

    def keyed_tasks(self, pbegin: beam.pvalue.PBegin) -> beam.PCollection:
        """``(run key, {"run": [ShardRun], "duplicates": [...]})`` per read task, the input
        of :meth:`read_fn` (for transforms that read shards in a step of their own, such as
        :class:`~semq_transforms.transforms.encode.ReadEncodeShards`)."""
        grouped: dict[str, beam.PCollection] = {
            # the CoGroupByKey below spreads the runs over workers (no shuffle of its own)
            "run": pbegin | "Create shard runs" >> beam.Create(
                [(run.key, run) for run in self._runs], reshuffle=False)}
        if self._find_duplicates:
            run_of = {task.shard_no: run.key for run in self._runs for task in run.shards}
            grouped["duplicates"] = (
                pbegin
                | "Find duplicate ids" >> FindDuplicateIds(self._read, layout=self._layout)
                | "Key duplicates by run" >> beam.Map(
                    lambda item, run_of: (run_of[item[0]], item[1]), run_of))
        return grouped | "Join runs and duplicates" >> beam.CoGroupByKey()

    def read_fn(self) -> beam.DoFn:
        """A new DoFn: :meth:`keyed_tasks` element -> ShardRows (main), dead letters and
        counts (tagged), as :meth:`expand` outputs them."""
        return _ReadShardFn(self._read.read_options)


class WriteDeadLetters(beam.PTransform):
    """Write a PCollection of dead-letter dicts to one Parquet file at ``dest_url``.

    Columns: ``id`` (string: integer ids in decimal, null when the id was null), ``source``,
    ``row`` (int64, within the source file), ``reason``; rows sorted by ``(source, row)``. One
    file, written by one worker: dead letters are expected to be few (a run that rejects most
    of its input has a bigger problem than this file's size). A file is written even when there
    are none. The output is a PCollection of one int: the number of rows written.
    """

    def __init__(self, dest_url: str, *,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self._dest_url = dest_url
        self._storage_options = dict(storage_options) if storage_options else None

    def expand(self, dead_letters: beam.PCollection) -> beam.PCollection:
        return (dead_letters
                | "Collect dead letters" >> beam.combiners.ToList()
                | "Write dead letters file" >> beam.Map(
                    write_dead_letters, self._dest_url, storage_options=self._storage_options))


__all__ = ["BATCHES", "COUNTS", "DEAD_LETTERS", "METRICS_NAMESPACE", "SHARDS", "Batch",
           "FindDuplicateIds", "ReadEmbeddings", "ReadShards", "WriteDeadLetters"]
