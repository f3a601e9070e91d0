"""The input stage as Beam transforms: read embedding files into batches, and write the rows
that were rejected.

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
    read.dead_letters   # PCollection[dict]: {"id", "source", "row", "reason"}
    read.dead_letters | "Write dead letters" >> WriteDeadLetters("s3://bucket/run/dead.parquet")

Counters (namespace ``semq``): ``rows_read``, ``rows_accepted``, ``rows_rejected``,
``rows_rejected_<reason>`` for each of :data:`REJECT_REASONS`, ``bytes_read`` and
``splits_read``; ``rows_read == rows_accepted + rows_rejected`` always holds.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

import apache_beam as beam
from apache_beam.metrics import Metrics

from semq_transforms.transforms.sources import (
    REJECT_REASONS,
    Batch,
    InputFormat,
    InputPlan,
    Split,
    filesystem_for,
    iter_split,
    plan_inputs,
    write_dead_letters,
)

METRICS_NAMESPACE = "semq"
BATCHES = "batches"
DEAD_LETTERS = "dead_letters"


class _ReadSplitFn(beam.DoFn):
    """Split -> Batches (main output) and dead letters (``dead_letters`` output)."""

    def __init__(self, *, vector_column: str, id_column: str | None, ids_url: str | None,
                 dim: int | None, batch_rows: int, reject_zero_vectors: bool,
                 storage_options: Mapping[str, Any] | None) -> None:
        super().__init__()
        self._read_options: dict[str, Any] = {
            "vector_column": vector_column, "id_column": id_column, "ids_url": ids_url,
            "dim": dim, "batch_rows": batch_rows, "reject_zero_vectors": reject_zero_vectors,
            "storage_options": dict(storage_options) if storage_options else None}

        def counter(name: str) -> Any:
            return Metrics.counter(METRICS_NAMESPACE, name)

        self._splits_read = counter("splits_read")
        self._rows_read = counter("rows_read")
        self._rows_accepted = counter("rows_accepted")
        self._rows_rejected = counter("rows_rejected")
        self._bytes_read = counter("bytes_read")
        self._rejected_by_reason = {reason: counter(f"rows_rejected_{reason}")
                                    for reason in REJECT_REASONS}

    def setup(self) -> None:
        self._filesystem: Any = None

    def process(self, split: Split) -> Iterator[Any]:
        # One filesystem per DoFn instance, built on the worker (never pickled).
        self._filesystem = filesystem_for(split.url, self._read_options["storage_options"],
                                          self._filesystem)
        for batch in iter_split(split, filesystem=self._filesystem, **self._read_options):
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
        storage_options: fsspec options (endpoint, credentials) for the inputs; they travel
            with the DoFn to the workers, so prefer credentials from the environment.

    The plan (files, splits, dim, total rows) is made when the transform is applied, or first
    asked for through :attr:`plan`; it raises ``InputReadError`` for unreadable files.
    """

    def __init__(self, url: str, *, format: InputFormat = "auto",
                 vector_column: str = "embedding", id_column: str | None = "id",
                 ids_url: str | None = None, dim: int | None = None, batch_rows: int = 8192,
                 reject_zero_vectors: bool = True,
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
        self._storage_options = dict(storage_options) if storage_options else None
        self._plan: InputPlan | None = None

    @property
    def plan(self) -> InputPlan:
        """The input plan (made once, from metadata only)."""
        if self._plan is None:
            self._plan = plan_inputs(
                self._url, format=self._format, vector_column=self._vector_column,
                id_column=self._id_column, ids_url=self._ids_url, dim=self._dim,
                batch_rows=self._batch_rows, storage_options=self._storage_options)
        return self._plan

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        plan = self.plan
        read_fn = _ReadSplitFn(
            vector_column=self._vector_column, id_column=self._id_column,
            ids_url=self._ids_url, dim=plan.dim, batch_rows=self._batch_rows,
            reject_zero_vectors=self._reject_zero_vectors,
            storage_options=self._storage_options)
        return (pbegin
                | "Create splits" >> beam.Create(list(plan.splits))
                | "Spread splits over workers" >> beam.Reshuffle()
                | "Read splits" >> beam.ParDo(read_fn).with_outputs(DEAD_LETTERS, main=BATCHES))


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


__all__ = ["BATCHES", "DEAD_LETTERS", "METRICS_NAMESPACE", "Batch", "ReadEmbeddings",
           "WriteDeadLetters"]
