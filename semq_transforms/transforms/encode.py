"""The middle of the ingestion pipeline as Beam transforms: encode and write each shard, and
measure retrieval on a query sample.

    shards = (pbegin | "Read shards" >> ReadShards(read, rows_per_shard=100_000)).shards
    queries = read.batches | "Sample queries" >> SampleQueries(n=256, seed=0)
    encoded = shards | "Encode shards" >> EncodeShards(index_url, run_id=run_id,
                                                       codecs=["semq1", "semq4"],
                                                       queries=queries, k=10)
    encoded.metas       # PCollection[ShardMeta]
    encoded.neighbors   # PCollection[ShardNeighbors]: per shard exact and compressed top-k
    encoded.shard_bytes # PCollection[ShardBytes]: per shard bytes of codes, params, ids, ...

**Shards** (:class:`~semq_transforms.transforms.planning.ShardRows`) come from the file job's
``ReadShards`` (contiguous ranges of global positions, each read where it is encoded: see
:mod:`~semq_transforms.transforms.planning`) or from the PCollection sink (rows grouped by id
hash: :mod:`~semq_transforms.transforms.sink`). Memory is bounded by one shard.

**Fingerprints.** Every shard stores its rows' input fingerprints (``format/fingerprint.py``,
64 bits per row), so ``Index.diff`` tells a row whose input changed from one re-encoded.

**Checks.** Every shard is read back from storage after it is written and its size and SHA-256
compared with what the writer produced (:func:`check_written`), on the worker that wrote it.

**Determinism.** ``encode_levels`` and ``write_shard`` are deterministic in their inputs, so
the same input and config give byte-identical shard files.

**Queries.** :class:`SampleQueries` picks the ``n`` accepted rows whose position hashes
(splitmix64 of ``position ^ seed``) are smallest: a seeded, order-independent sample, kept as
a bounded running selection (never all rows in one list). Neighbors are identified by global
position (unique int64, whatever the id type), so recall is computed on positions.

**Reading and encoding in one step.** ``ReadEncodeShards(ReadShards(...), EncodeShards(...))``
gives what ``ReadShards | EncodeShards`` gives, but reads, encodes and writes the shards of a
read task (a run of shards sharing a row group, else one shard) in one DoFn call, each shard
encoded as soon as it is read, so no shard's rows outlive its step (the ingestion job uses
it).

**Progress.** Each written shard is also recorded for a launcher that shows progress
(:func:`~semq_transforms.transforms.progress.record_shard`: nothing unless the launcher asked
for it); no shard byte depends on it.

Counters (namespace ``semq``): ``shards_written``, ``bytes_out``, ``rows_encoded``.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import apache_beam as beam
import numpy as np
from apache_beam.metrics import Metrics

from semq_transforms.errors import IntegrityError
from semq_transforms.eval import exact_knn, knn_intersection_measure, merge_topk
from semq_transforms.format.fingerprint import row_fingerprints
from semq_transforms.format.layout import shard_bytes
from semq_transforms.format.meta import ShardMeta
from semq_transforms.format.shard import EncodedLevel, write_shard
from semq_transforms.format.store import IndexStore
from semq_transforms.index import DEFAULT_RERANK_FACTOR, check_count
from semq_transforms.levels import encode_levels, level_codecs, search_levels
from semq_transforms.transforms._worker import worker_setup
from semq_transforms.transforms.planning import ShardRows, splitmix64
from semq_transforms.transforms.progress import record_shard
from semq_transforms.transforms.read import (
    COUNTS,
    DEAD_LETTERS,
    METRICS_NAMESPACE,
    ReadShards,
)
from semq_transforms.transforms.rows import Batch

__all__ = ["DEFAULT_RERANK_FACTOR", "EncodeShards", "MergeNeighbors",
           "ReadEncodeShards", "SampleQueries", "ShardNeighbors", "ShardRows", "check_written",
           "position_hash"]

#: Float32 scan scores held at once while searching a shard's codes (blocks of
#: ``_SCORE_BUDGET // queries`` rows; see ``search_levels``).
_SCORE_BUDGET = 1 << 22
NEIGHBORS = "neighbors"
METAS = "metas"
SHARD_BYTES = "shard_bytes"


@dataclass(frozen=True, eq=False)
class ShardNeighbors:
    """Top-k of the sample queries within one shard (or merged over shards).

    ``exact_D/exact_I``: float inner products and positions, ``[nq, <= k]``;
    ``approx_D/approx_I``: compressed scores (scan level, reranked by the last level) and
    positions. Positions are global input positions; rows sorted best first.
    """

    exact_D: np.ndarray
    exact_I: np.ndarray
    approx_D: np.ndarray
    approx_I: np.ndarray


def position_hash(positions: np.ndarray, seed: int) -> np.ndarray:
    """splitmix64 of ``positions ^ seed`` as uint64 ``[n]`` (the query-sampling key)."""
    return splitmix64(np.asarray(positions, dtype=np.int64).astype(np.uint64) ^ np.uint64(seed))


# -- the query sample -----------------------------------------------------------------------


def _batch_candidates(batch: Batch | ShardRows, *, n: int, seed: int
                      ) -> Iterator[tuple[int, int, Any]]:
    """The ``n`` rows of a batch (or shard) with the smallest position hashes: (hash,
    position, vector)."""
    if not batch.positions.shape[0]:
        return
    hashes = position_hash(batch.positions, seed)
    keep = np.argsort(hashes, kind="stable")[:n]
    for i in keep:
        yield int(hashes[i]), int(batch.positions[i]), batch.vectors[i].copy()


def _stack_queries(sample: list) -> tuple[np.ndarray, np.ndarray]:
    """Selected (hash, position, vector) -> (positions int64 [nq], float32 [nq, d]) by
    position; ``[0]`` and ``[0, 0]`` when nothing was accepted."""
    sample = sorted(sample, key=lambda s: s[1])
    if not sample:
        return np.zeros(0, np.int64), np.zeros((0, 0), np.float32)
    return (np.array([s[1] for s in sample], np.int64),
            np.stack([s[2] for s in sample]).astype(np.float32))


@beam.typehints.with_input_types(Batch | ShardRows)
class SampleQueries(beam.PTransform):
    """Batches (or ShardRows) -> one element ``(positions [nq], queries float32 [nq, d])``:
    the ``n`` accepted rows with the smallest :func:`position_hash` under ``seed``."""

    def __init__(self, *, n: int, seed: int) -> None:
        super().__init__()
        self._n = n
        self._seed = seed

    def expand(self, batches: beam.PCollection) -> beam.PCollection:
        return (batches
                | "Pick candidates per batch" >> beam.FlatMap(
                    _batch_candidates, n=self._n, seed=self._seed)
                | "Keep smallest hashes" >> beam.combiners.Top.Smallest(
                    self._n, key=lambda s: (s[0], s[1]))
                | "Stack queries" >> beam.Map(_stack_queries))


# -- encoding -------------------------------------------------------------------------------


def check_written(store: IndexStore, meta: ShardMeta) -> None:
    """Read a just-written shard back from storage and check its size and SHA-256 against
    what the writer produced; raises :class:`IntegrityError` naming the file otherwise (a
    storage layer that lost or altered bytes fails the run before anything is published)."""
    digest = hashlib.sha256()
    size = 0
    with store.open_read(meta.path) as f:
        # at most one byte more than was written: enough to tell the file grew
        while size <= meta.file_bytes and (block := f.read(min(1 << 22,
                                                                 meta.file_bytes + 1 - size))):
            digest.update(block)
            size += len(block)
    if size != meta.file_bytes or digest.hexdigest() != meta.file_sha256:
        raise IntegrityError(
            f"shard {store.url_of(meta.path)} read back as {size} bytes with SHA-256 "
            f"{digest.hexdigest()[:16]}..., written as {meta.file_bytes} bytes with "
            f"{meta.file_sha256[:16]}...: the storage did not keep what was written")


class _EncodeShardFn(beam.DoFn):
    """ShardRows -> ShardMeta (main), ShardNeighbors (``neighbors`` output) and ShardBytes
    (``shard_bytes`` output)."""

    def __init__(self, index_url: str, *, run_id: str, codecs: Sequence[str], k: int,
                 rerank: int, folder_checked_through: int,
                 storage_options: Mapping[str, Any] | None) -> None:
        super().__init__()
        self._index_url = index_url
        self._run_id = run_id
        self._folder_checked_through = folder_checked_through
        self._codecs = list(codecs)
        self._k = k
        self._rerank = rerank
        self._storage_options = dict(storage_options) if storage_options else None
        self._shards_written = Metrics.counter(METRICS_NAMESPACE, "shards_written")
        self._bytes_out = Metrics.counter(METRICS_NAMESPACE, "bytes_out")
        self._rows_encoded = Metrics.counter(METRICS_NAMESPACE, "rows_encoded")

    def setup(self) -> None:
        worker_setup()
        self._store = IndexStore(self._index_url, storage_options=self._storage_options)
        self._folder_checked = False

    def process(self, shard: ShardRows, sample: tuple | None = None) -> Iterator[Any]:
        levels = encode_levels(shard.vectors, self._codecs)
        validation: dict[str, float] = {}
        if sample is not None and sample[0].size:
            neighbors = self._neighbors(shard, levels, sample[1])
            # a shard smaller than k compares all its rows (its whole exact top)
            validation = {f"recall_at_{self._k}": knn_intersection_measure(
                neighbors.exact_I, neighbors.approx_I)}
            yield beam.pvalue.TaggedOutput(NEIGHBORS, neighbors)
        path = self._store.shard_path(self._run_id, shard.shard_no)
        if not self._folder_checked and self._store.exists(path):
            # a file there already: a rerun, or a version published into this run folder
            # since the pipeline was built (its files must not change)
            self._store.refuse_published_run(self._run_id,
                                             after=self._folder_checked_through)
            self._folder_checked = True
        fingerprints = row_fingerprints(shard.vectors)      # what Index.diff compares
        with self._store.open_write(path) as f:
            meta = write_shard(f, ids=shard.ids, levels=levels, path=path,
                               fingerprints=fingerprints)
        check_written(self._store, meta)
        yield beam.pvalue.TaggedOutput(SHARD_BYTES, shard_bytes(meta, shard.ids, levels,
                                                                fingerprints))
        meta = dataclasses.replace(meta, validation=validation)
        self._shards_written.inc()
        self._bytes_out.inc(meta.file_bytes)
        self._rows_encoded.inc(meta.rows)
        record_shard(shard.shard_no, meta.rows)
        yield meta

    def _neighbors(self, shard: ShardRows, levels: Sequence[EncodedLevel],
                   queries: np.ndarray) -> ShardNeighbors:
        k = min(self._k, shard.rows)
        # Both searches score deterministically (exact products on fixed-point grids): the
        # recall recorded in the manifest, and the gate's verdict, must not depend on which
        # BLAS kernel breaks a near-tie at the k-th neighbor.
        exact_D, exact_rows = exact_knn(queries, shard.vectors, k, deterministic=True)
        # the index's own per-shard search (Index.search), on the codes just encoded
        approx_D, approx_rows = search_levels(levels, queries, k, rerank=self._rerank,
                                              score_budget=_SCORE_BUDGET, deterministic=True)
        return ShardNeighbors(exact_D, shard.positions[exact_rows],
                              approx_D, shard.positions[approx_rows])


@beam.typehints.with_input_types(ShardRows)
class EncodeShards(beam.PTransform):
    """ShardRows -> :class:`ShardMeta` (output ``metas``), per-shard
    :class:`ShardNeighbors` (output ``neighbors``, only when ``queries`` is given) and
    per-shard :class:`~semq_transforms.format.layout.ShardBytes` (output ``shard_bytes``).

    Args:
        index_url: index prefix; shard ``n`` is written to ``runs/<run_id>/`` + its name.
        run_id: the run folder.
        codecs: code levels, scan level first.
        queries: optional singleton PCollection from :class:`SampleQueries` (side input).
        k: neighbors per query for recall; rerank: candidates re-scored (default ``10 k``).
        folder_checked_through: versions up to this one are known not to use the run folder
            (the ingestion job checks them when it is built); when a shard write first finds
            a file in the folder, only later versions are read to check it again.
        storage_options: fsspec options for writing.

    Each ShardMeta carries ``validation = {"recall_at_<k>": ...}`` (within-shard recall of
    the compressed top-k against exact float top-k) when queries are given.
    """

    def __init__(self, index_url: str, *, run_id: str, codecs: Sequence[str],
                 queries: beam.PCollection | None = None, k: int = 10,
                 rerank: int | None = None, folder_checked_through: int = 0,
                 storage_options: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        level_codecs(codecs)            # a typed error now, not on a worker at run time
        check_count(k, "k", minimum=1)
        if rerank is not None:
            check_count(rerank, "rerank", minimum=0)
        self._fn = _EncodeShardFn(
            index_url, run_id=run_id, codecs=codecs, k=k,
            rerank=DEFAULT_RERANK_FACTOR * k if rerank is None else rerank,
            folder_checked_through=folder_checked_through, storage_options=storage_options)
        self._queries = queries

    def expand(self, shards: beam.PCollection) -> beam.pvalue.DoOutputsTuple:
        return shards | "Encode and write shards" >> beam.ParDo(
            self._fn, *self.query_inputs()).with_outputs(NEIGHBORS, SHARD_BYTES, main=METAS)

    def query_inputs(self) -> list[Any]:
        """The DoFn's side inputs: the query sample, if any."""
        return [beam.pvalue.AsSingleton(self._queries)] if self._queries is not None else []

    def encode_fn(self) -> beam.DoFn:
        """The DoFn: ShardRows -> ShardMeta (main), ShardNeighbors (``neighbors``) and
        ShardBytes (``shard_bytes``)."""
        return self._fn


class _ReadEncodeShardFn(beam.DoFn):
    """A ReadShards DoFn and an EncodeShards DoFn in one ``process`` call per read task (each
    shard of a run encoded as soon as it is read)."""

    def __init__(self, read_fn: beam.DoFn, encode_fn: beam.DoFn) -> None:
        super().__init__()
        self._read_fn = read_fn
        self._encode_fn = encode_fn

    def setup(self) -> None:
        self._read_fn.setup()
        self._encode_fn.setup()

    def teardown(self) -> None:
        self._read_fn.teardown()
        self._encode_fn.teardown()

    def process(self, item: tuple[int, Mapping[str, Any]],
                sample: tuple | None = None) -> Iterator[Any]:
        for out in self._read_fn.process(item):
            if isinstance(out, ShardRows):
                yield from self._encode_fn.process(out, sample)
            else:
                yield out
            del out  # a run's next shard is read before the loop rebinds it: hold no rows


class ReadEncodeShards(beam.PTransform):
    """``ReadShards | EncodeShards`` with each shard read, encoded and written in one step.

    The outputs and counters are those of the two transforms: ``metas`` (main),
    ``neighbors`` and ``shard_bytes`` as :class:`EncodeShards`, ``dead_letters`` and ``counts`` as
    :class:`~semq_transforms.transforms.read.ReadShards`; the shard files are the same bytes.
    What differs is memory: a runner keeps the last element a DoFn processed until the next
    one arrives, so between the two transforms each worker thread holds its previous shard's
    rows (a ``ShardRows``, 96 MiB at 65,536 x 384) while it reads the next. Here the rows
    live only inside one ``process`` call. Use the two transforms to put a step of your own
    between reading and encoding; the ingestion job uses this one.

    Args:
        shards: the ReadShards to run (its planned shard tasks and read options).
        encode: the EncodeShards to run on each shard (codecs, output, query sample).
    """

    def __init__(self, shards: ReadShards, encode: EncodeShards) -> None:
        super().__init__()
        self._shards = shards
        self._encode = encode

    def expand(self, pbegin: beam.pvalue.PBegin) -> beam.pvalue.DoOutputsTuple:
        fn = _ReadEncodeShardFn(self._shards.read_fn(), self._encode.encode_fn())
        return (self._shards.keyed_tasks(pbegin)
                | "Read, encode and write shards" >> beam.ParDo(
                    fn, *self._encode.query_inputs()).with_outputs(
                    NEIGHBORS, SHARD_BYTES, DEAD_LETTERS, COUNTS, main=METAS))


# -- merging neighbors ----------------------------------------------------------------------


class _MergeNeighborsFn(beam.CombineFn):
    """Running top-k over ShardNeighbors (accumulator: one ShardNeighbors or None)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self._k = k

    def create_accumulator(self) -> ShardNeighbors | None:
        return None

    def add_input(self, acc: ShardNeighbors | None,
                  item: ShardNeighbors) -> ShardNeighbors | None:
        return self.merge_accumulators([acc, item])

    def merge_accumulators(self, accs: Any) -> ShardNeighbors | None:
        merged = None
        for acc in accs:
            if acc is None:
                continue
            if merged is None:
                merged = acc
                continue
            # ties go to the lower position, whatever order the shards arrive in
            eD, eI = merge_topk(merged.exact_D, merged.exact_I, acc.exact_D, acc.exact_I,
                                self._k)
            aD, aI = merge_topk(merged.approx_D, merged.approx_I, acc.approx_D,
                                acc.approx_I, self._k)
            merged = ShardNeighbors(eD, eI, aD, aI)
        return merged

    def extract_output(self, acc: ShardNeighbors | None) -> ShardNeighbors | None:
        return acc


@beam.typehints.with_input_types(ShardNeighbors)
class MergeNeighbors(beam.PTransform):
    """ShardNeighbors -> one element: the global running top-k (or None if there were no
    shards), a CombineGlobally that never holds more than ``[nq, 2k]`` per merge."""

    def __init__(self, *, k: int) -> None:
        super().__init__()
        self._k = k

    def expand(self, neighbors: beam.PCollection) -> beam.PCollection:
        return neighbors | "Keep running top-k" >> beam.CombineGlobally(
            _MergeNeighborsFn(self._k))
