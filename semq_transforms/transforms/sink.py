"""Write embeddings a pipeline already holds as a new version of a ``.semq`` index: the
Beam-native entry point, for an embedding step's output, ``MLTransform`` rows or
``apache_beam.ml.rag`` chunks.

    report = (embeddings                       # PCollection of (id, vector), Rows or Chunks
              | "Write index" >> WriteSemqIndex("gs://bucket/index", run_id="nightly-1205",
                                                dim=384, validation=validation))

Elements: ``(id, vector)`` pairs, ``beam.Row`` s / named tuples / dicts with ``id`` and
``embedding`` fields (names configurable), or RAG ``Chunk`` / ``EmbeddableItem`` objects
(``.id``, ``.embedding.dense_embedding``). Ids are int64 or strings (``id_type``).

What the sink does, and how it differs from the file job (which reads each shard where it
encodes it):

1. **Checks** every element as the file readers check a row
   (:func:`~semq_transforms.transforms.sources.check_rows`: same reasons, same dead-letter
   details), plus ``bad_element`` for an element that is not one of the shapes above or
   whose id is not of ``id_type`` (the detail says what was found).
2. **Shards without global positions**: the number of shards is ``ceil(accepted rows /
   rows_per_shard)``, counted first (duplicates included); a row goes to shard
   ``id_hash(id) % shards`` (:func:`~semq_transforms.transforms.planning.id_hash`, the same
   in every process), and a shard's rows are ordered by id. Shards are as even as the hash
   makes them, and each is grouped and sorted in one worker's memory. So the same set of rows gives byte-identical shards
   whatever order, bundling or runner delivers them in. The rows are shuffled once (a
   GroupByKey by shard), which the file job avoids.
3. **Duplicate ids** meet in one shard: the copy whose vector bytes sort first is kept, every
   other is rejected as ``duplicate_id`` (independent of arrival order, unlike the file job's
   "first position wins", which has no meaning here).
4. **Fits, encodes, validates and publishes** with the job's own transforms
   (``SampleQueries``, ``EncodeShards``, ``MergeNeighbors``, ``PublishIndex``, the same gate
   and report under ``runs/<run_id>/``). A row's position (what the query sample and the
   recall measure key rows by) is ``shard << 32 | rank of its id in the shard``.

For ``apache_beam.ml.rag`` ingestion pipelines, :class:`SemqWriteConfig` is the
``VectorDatabaseWriteConfig`` that ``VectorDatabaseWriteTransform`` applies.

The run folder must not belong to a committed version (``RunFolderInUseError`` when the
transform is applied, before anything is written); reusing a run id after a failed run
rewrites the same bytes. The output is the run's report dict (a singleton PCollection).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import apache_beam as beam
import numpy as np
from apache_beam.ml.rag.ingestion.base import VectorDatabaseWriteConfig

from semq_transforms._urls import redact_url
from semq_transforms.codecs import max_abs_value
from semq_transforms.config import EncodeConfig, ValidationConfig
from semq_transforms.format.store import IndexStore
from semq_transforms.transforms.encode import (
    EncodeShards,
    MergeNeighbors,
    SampleQueries,
)
from semq_transforms.transforms.planning import ShardRows, id_hash
from semq_transforms.transforms.preflight import check_output_location, probe_output
from semq_transforms.transforms.publish import Gate, PublishIndex, ReadTotals
from semq_transforms.transforms.read import COUNTS, DEAD_LETTERS, WriteDeadLetters
from semq_transforms.transforms.rows import check_rows

__all__ = ["ElementFields", "SemqWriteConfig", "WriteSemqIndex"]

#: ``source`` of the sink's dead letters (they have no file; their ``row`` is null).
SOURCE = "pcollection"
#: Elements checked together (a batch of Beam's BatchElements).
CHECK_BATCH = 4096
_ROWS = "rows"


@dataclass(frozen=True)
class ElementFields:
    """Where a ``beam.Row`` / named tuple / dict element keeps its id and vector."""

    id: str = "id"
    vector: str = "embedding"


def _unpack(element: Any, fields: ElementFields) -> tuple[Any, Any] | str:
    """``(id, vector)`` of one element, or why it is not an element the sink understands."""
    embedding = getattr(element, "embedding", None)
    if embedding is not None and hasattr(embedding, "dense_embedding"):   # RAG Chunk
        return getattr(element, "id", None), embedding.dense_embedding
    if isinstance(element, Mapping):
        if fields.id in element and fields.vector in element:
            return element[fields.id], element[fields.vector]
    elif hasattr(element, fields.id) and hasattr(element, fields.vector):  # Row, NamedTuple
        return getattr(element, fields.id), getattr(element, fields.vector)
    elif (isinstance(element, (tuple, list)) and len(element) == 2
          and not hasattr(element, "_fields")):      # a pair, not a NamedTuple of other names
        return element[0], element[1]
    return (f"not an (id, vector) pair, a Row or dict with fields {fields.id!r} and "
            f"{fields.vector!r}, or a RAG Chunk: got {type(element).__name__}")


def _id_problem(value: Any, id_type: str) -> str | None:
    if value is None:
        return None                                   # null_id, as the file readers say
    if id_type == "int64":
        ok = (isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_))
              and -2**63 <= int(value) < 2**63)
    else:
        ok = isinstance(value, str)
        if ok:
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                return (f"the id {repr(value)[:60]} is not valid Unicode (a lone surrogate); "
                        f"a shard stores UTF-8")
    return None if ok else (f"the id {repr(value)[:60]} ({type(value).__name__}) is not "
                            f"{'an int64' if id_type == 'int64' else 'a string'} (id_type)")


def _vector(value: Any) -> tuple[np.ndarray | None, int | str]:
    """``(float32 [length] or None, length)``; ``(None, why)`` for a value that is no
    vector."""
    if value is None:
        return None, 0
    try:
        array = np.asarray(value)
        if array.dtype.kind == "O":               # e.g. ints beyond int64: as floats
            array = array.astype(np.float64)
    except (TypeError, ValueError, OverflowError) as exc:
        return None, (f"the vector is not a list of numbers ({type(value).__name__}: "
                      f"{type(exc).__name__})")
    if array.dtype.kind in "US":
        return None, f"the vector is text ({type(value).__name__}), not numbers"
    if array.dtype.kind not in "iuf":             # bool, complex, ...
        return None, f"the vector holds {array.dtype} values, not real numbers"
    if array.ndim != 1:
        return None, f"the vector has shape {list(array.shape)}, not one dimension"
    with np.errstate(over="ignore"):          # beyond float32: inf, rejected as non_finite
        return array.astype(np.float32), int(array.shape[0])


class _CheckFn(beam.DoFn):
    """A list of elements -> accepted ``(id hash, id, float32 [dim])`` (main; the hash of
    :func:`~semq_transforms.transforms.planning.id_hash`, computed for the whole batch at
    once), dead letters and one counts dict (tagged)."""

    def __init__(self, *, dim: int, id_type: str, fields: ElementFields,
                 reject_zero_vectors: bool, max_abs_value: float) -> None:
        super().__init__()
        self._dim, self._id_type, self._fields = dim, id_type, fields
        self._reject_zero, self._max_abs = reject_zero_vectors, max_abs_value

    def process(self, elements: list) -> Iterator[Any]:
        dim, n = self._dim, len(elements)
        ids = np.empty(n, dtype=np.int64 if self._id_type == "int64" else object)
        id_null, vector_null = np.zeros(n, bool), np.zeros(n, bool)
        right_length, lengths = np.ones(n, bool), np.full(n, dim, np.int64)
        vectors = np.zeros((n, dim), np.float32)
        bad: list[dict[str, Any]] = []
        keep = np.ones(n, bool)
        for i, element in enumerate(elements):
            unpacked = _unpack(element, self._fields)
            why = unpacked if isinstance(unpacked, str) else _id_problem(unpacked[0],
                                                                         self._id_type)
            vector: Any = None
            if why is None:
                vector, length = _vector(unpacked[1])
                why = length if isinstance(length, str) else None
            if why is not None:
                keep[i] = False
                raw_id = None if isinstance(unpacked, str) else unpacked[0]
                bad.append({"id": None if raw_id is None else str(raw_id)[:200],
                            "source": SOURCE, "row": None, "reason": "bad_element",
                            "detail": why})
                continue
            if unpacked[0] is None:
                id_null[i] = True
            else:
                ids[i] = unpacked[0]
            if vector is None:
                vector_null[i] = True
            elif length != dim:
                right_length[i], lengths[i] = False, length
            else:
                vectors[i] = vector
        if self._id_type == "string":
            ids[id_null | ~keep] = ""
        checked = check_rows(source=SOURCE, row_start=0, global_row_offset=0, ids=ids[keep],
                             id_null=id_null[keep], vectors=vectors[keep],
                             vector_null=vector_null[keep], right_length=right_length[keep],
                             lengths=lengths[keep], reject_zero_vectors=self._reject_zero,
                             max_abs_value=self._max_abs, bytes_read=0)
        dead = [{**d, "row": None} for d in checked.rejected] + bad
        for d in dead:
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, d)
        counts = {"rows_read": n, "rows_accepted": checked.accepted,
                  "rows_rejected": len(dead), "bytes_read": 0}
        for d in dead:
            counts[f"rejected_{d['reason']}"] = counts.get(f"rejected_{d['reason']}", 0) + 1
        yield beam.pvalue.TaggedOutput(COUNTS, counts)
        hashes = id_hash(checked.ids).tolist()
        for i in range(checked.accepted):
            yield (hashes[i], checked.ids[i].item() if self._id_type == "int64"
                   else checked.ids[i], checked.vectors[i])


def _shard_count(rows: int, rows_per_shard: int) -> int:
    """Shards for ``rows`` accepted rows (duplicates included: they are found per shard)."""
    shards = max(1, math.ceil(rows / rows_per_shard))
    if shards >= 1 << 31:      # positions are shard << 32 | rank, in int64
        raise ValueError(f"{rows} rows at {rows_per_shard} per shard is {shards} shards; at "
                         f"most 2**31 - 1 are allowed: raise encode.rows_per_shard")
    return shards


def _shard_key(row: tuple[int, Any, np.ndarray], shards: int
               ) -> tuple[int, tuple[Any, np.ndarray]]:
    """``(id hash, id, vector)`` -> ``(shard, (id, vector))``."""
    return row[0] % shards, row[1:]


def _assemble(item: tuple[int, Iterable[tuple[Any, np.ndarray]]], id_type: str
              ) -> Iterator[Any]:
    """``(shard, rows)`` -> its ShardRows (rows by id; of a repeated id, the copy whose vector
    bytes sort first), dead letters for the other copies, and a counts correction."""
    shard, rows = item
    ordered = sorted(rows, key=lambda r: (r[0], r[1].tobytes()))
    kept: list[tuple[Any, np.ndarray]] = []
    dead = 0
    for row in ordered:
        if kept and kept[-1][0] == row[0]:
            dead += 1
            yield beam.pvalue.TaggedOutput(DEAD_LETTERS, {
                "id": str(row[0]), "source": SOURCE, "row": None, "reason": "duplicate_id",
                "detail": "the id is repeated in the input; the copy whose vector bytes sort "
                          "first is kept"})
        else:
            kept.append(row)
    if dead:
        yield beam.pvalue.TaggedOutput(COUNTS, {"rows_read": 0, "rows_accepted": -dead,
                                                "rows_rejected": dead, "bytes_read": 0,
                                                "rejected_duplicate_id": dead})
    if len(kept) >= 1 << 32:   # positions are shard << 32 | rank
        raise ValueError(f"shard {shard} holds {len(kept)} rows; at most 2**32 - 1 are "
                         f"allowed: lower encode.rows_per_shard")
    ids = np.array([r[0] for r in kept], dtype=np.int64 if id_type == "int64" else object)
    vectors = np.ascontiguousarray(np.stack([r[1] for r in kept]), dtype=np.float32)
    positions = (np.int64(shard) << np.int64(32)) + np.arange(len(kept), dtype=np.int64)
    yield ShardRows(shard, ids, vectors, positions)


@beam.typehints.with_output_types(dict)
class WriteSemqIndex(beam.PTransform):
    """PCollection of embeddings -> the run's report (one dict); a new index version is
    committed if the gate passes (see the module docstring).

    Args:
        index_url: the index prefix (any fsspec URL).
        run_id: names the run folder ``runs/<run_id>/`` (required: the sink cannot derive
            one from files it does not read).
        dim: the vector width; other widths are rejected (``wrong_dimension``).
        validation: the gate and the query sample (``ValidationConfig``).
        encode: code levels and rows per shard (default ``EncodeConfig()``: semq4, 100,000).
        id_type: ``"string"`` (RAG chunk ids) or ``"int64"``.
        fields: the id and vector field names of Row / dict elements.
        storage_options: fsspec options of the index's storage.
        allow_unsafe_commit, signing_key_pem: as for ``PublishIndex``.
    """

    def __init__(self, index_url: str, *, run_id: str, dim: int,
                 validation: ValidationConfig, encode: EncodeConfig | None = None,
                 id_type: Literal["int64", "string"] = "string",
                 fields: ElementFields = ElementFields(),
                 storage_options: Mapping[str, Any] | None = None,
                 allow_unsafe_commit: bool = False,
                 signing_key_pem: bytes | None = None) -> None:
        super().__init__()
        if id_type not in ("int64", "string"):
            raise ValueError(f"id_type must be 'int64' or 'string', got {id_type!r}")
        if type(dim) is not int or dim < 1:
            raise ValueError(f"dim must be an int >= 1, got {dim!r}")
        self._index_url = index_url.rstrip("/")
        self._run_id, self._dim, self._id_type, self._fields = run_id, dim, id_type, fields
        self._validation = validation
        self._encode = encode or EncodeConfig.model_validate({})
        self._storage_options = dict(storage_options or {})
        self._allow_unsafe_commit = allow_unsafe_commit
        self._signing_key_pem = signing_key_pem
        self._started_at = time.time()

    def expand(self, elements: beam.PCollection) -> beam.PCollection:
        validation, encode, run_id = self._validation, self._encode, self._run_id
        store = IndexStore(self._index_url, storage_options=self._storage_options)
        # before anything is written: the output location, the run folder, a probe write
        check_output_location(store, run_id)
        checked_through = store.latest_version() or 0
        store.refuse_published_run(run_id)
        probe_output(store, run_id)
        checked = (elements
                   | "Batch elements" >> beam.BatchElements(min_batch_size=1,
                                                            max_batch_size=CHECK_BATCH)
                   | "Check rows" >> beam.ParDo(_CheckFn(
                       dim=self._dim, id_type=self._id_type, fields=self._fields,
                       reject_zero_vectors=validation.reject_zero_vectors,
                       max_abs_value=max_abs_value(encode.codecs))).with_outputs(
                           DEAD_LETTERS, COUNTS, main=_ROWS))
        rows = checked[_ROWS]
        shards = (rows
                  | "Count rows" >> beam.combiners.Count.Globally()
                  | "Shards" >> beam.Map(_shard_count, encode.rows_per_shard))
        assembled = (rows
                     | "Key by shard" >> beam.Map(_shard_key, beam.pvalue.AsSingleton(shards))
                     | "Group shards" >> beam.GroupByKey()
                     | "Order shards by id" >> beam.FlatMap(
                         _assemble, self._id_type).with_outputs(
                         DEAD_LETTERS, COUNTS, main=_ROWS))
        shard_rows = assembled[_ROWS]
        dead_letters = ((checked[DEAD_LETTERS], assembled[DEAD_LETTERS])
                        | "All dead letters" >> beam.Flatten())
        counts = (checked[COUNTS], assembled[COUNTS]) | "All counts" >> beam.Flatten()
        sample = shard_rows | "Sample queries" >> SampleQueries(n=validation.sample_queries,
                                                                seed=validation.seed)
        encoded = shard_rows | "Encode shards" >> EncodeShards(
            self._index_url, run_id=run_id, codecs=encode.codecs, queries=sample,
            k=validation.k, folder_checked_through=checked_through,
            storage_options=self._storage_options)
        _ = dead_letters | "Write dead letters" >> WriteDeadLetters(
            f"{self._index_url}/runs/{run_id}/dead_letters.parquet",
            storage_options=self._storage_options)
        return encoded.metas | "Validate and publish" >> PublishIndex(
            self._index_url, run_id=run_id, dim=self._dim, codecs=encode.codecs,
            totals=counts | "Sum counts" >> ReadTotals(), dead_letters=dead_letters,
            neighbors=encoded.neighbors | "Merge neighbors" >> MergeNeighbors(k=validation.k),
            sample=sample, rows_planned=None,
            gate=Gate(k=validation.k, min_recall_at_k=validation.min_recall_at_k,
                      max_rejected_fraction=validation.max_rejected_fraction,
                      min_compression_ratio=validation.min_compression_ratio),
            safe_config={"sink": {"index_url": redact_url(self._index_url), "dim": self._dim,
                                  "id_type": self._id_type},
                         "encode": encode.model_dump(), "validation": validation.model_dump()},
            folder_checked_through=checked_through, storage_options=self._storage_options,
            allow_unsafe_commit=self._allow_unsafe_commit,
            signing_key_pem=self._signing_key_pem, shard_bytes=encoded.shard_bytes,
            started_at=self._started_at)


class SemqWriteConfig(VectorDatabaseWriteConfig):
    """Beam RAG's writer config for a ``.semq`` index:
    ``chunks | VectorDatabaseWriteTransform(SemqWriteConfig(url, run_id=..., dim=...,
    validation=...))`` writes the chunks' dense embeddings, keyed by chunk id, as
    :class:`WriteSemqIndex` does (its arguments, ``id_type`` fixed to ``"string"``: RAG ids
    are strings)."""

    def __init__(self, index_url: str, *, run_id: str, dim: int,
                 validation: ValidationConfig, encode: EncodeConfig | None = None,
                 storage_options: Mapping[str, Any] | None = None,
                 allow_unsafe_commit: bool = False,
                 signing_key_pem: bytes | None = None) -> None:
        self.index_url, self.run_id, self.dim = index_url, run_id, dim
        self.validation, self.encode = validation, encode
        self.storage_options = dict(storage_options or {})
        self.allow_unsafe_commit, self.signing_key_pem = allow_unsafe_commit, signing_key_pem

    def create_write_transform(self) -> WriteSemqIndex:
        return WriteSemqIndex(self.index_url, run_id=self.run_id, dim=self.dim,
                              validation=self.validation, encode=self.encode,
                              id_type="string", storage_options=self.storage_options,
                              allow_unsafe_commit=self.allow_unsafe_commit,
                              signing_key_pem=self.signing_key_pem)
