"""Query-time API: open a published index and search, restore, verify and diff it.

>>> index = Index.open("file:///data/my-index")           # latest version    # doctest: +SKIP
>>> D, I = index.search(queries, k=10)                     # float32 [nq, k], ids [nq, k]

An index is a prefix on any fsspec URL holding shard files and numbered manifest versions
(``semq_transforms.format.store``). Shards are read lazily, on first use, and kept in a small
LRU cache, so memory is bounded by the shards a query touches, not by the index size.

Search fans out over shards: in each shard the first code level (the scan level) scores every
row, its best ``rerank`` candidates per query are re-scored with the last level (the rerank
level), and the per-shard top-k lists are merged. Everything is scored from compressed codes;
float originals are never stored. Rows are scanned in blocks so the score matrix of one step
stays under about :data:`SCORE_BUDGET` entries; shards are cached up to ``cache_bytes``.
"""

from __future__ import annotations

import hashlib
import io
from collections import OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from semq_transforms._diff import DiffReport, Drift, diff_indexes
from semq_transforms.codecs import check_vectors
from semq_transforms.errors import FormatError, IntegrityError, InvalidInputError
from semq_transforms.eval import topk
from semq_transforms.format.manifest import Manifest
from semq_transforms.format.meta import ShardMeta
from semq_transforms.format.shard import DEFAULT_MAX_BYTES, Shard, read_shard, verify_shard
from semq_transforms.format.store import IndexStore, read_at_most
from semq_transforms.levels import decode_rows, search_levels

#: Bytes of shard codes kept in memory per open index (least recently used shards are dropped
#: beyond it; a shard larger than the budget is still read, used, then dropped).
DEFAULT_CACHE_BYTES = 1 << 30
#: Query-by-row scores held at once while scanning a shard (bounds search memory: rows are
#: scanned in blocks of ``SCORE_BUDGET // queries``, each code decoded once).
SCORE_BUDGET = 1 << 24
#: Scan-level candidates re-scored per query and shard when ``rerank`` is not given, as a
#: multiple of ``k``.
DEFAULT_RERANK_FACTOR = 10
#: Most ``queries x k`` entries one search returns (its padded result arrays: ~800 MB).
MAX_RESULT_ENTRIES = 1 << 26
#: Rows per row group of :meth:`Index.export_parquet` (whatever the shard sizes): it divides
#: every round ``rows_per_shard`` of 1000 rows or more, so re-ingesting an export reads each
#: row once (groups that straddle shard boundaries are read by both shards).
EXPORT_ROW_GROUP_ROWS = 1000


@dataclass(frozen=True)
class ShardProblem:
    """One thing ``verify`` found wrong: which shard (path) and what."""

    path: str
    problem: str


@dataclass(frozen=True)
class VerifyReport:
    """Result of :meth:`Index.verify`."""

    url: str
    version: int
    shards_checked: int
    problems: tuple[ShardProblem, ...]

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"url": self.url, "version": self.version, "ok": self.ok,
                "shards_checked": self.shards_checked,
                "problems": [{"path": p.path, "problem": p.problem} for p in self.problems]}


class Index:
    """A read-only view of one manifest version of an index. Build with :meth:`open`."""

    def __init__(self, store: IndexStore, manifest: Manifest, *,
                 cache_bytes: int = DEFAULT_CACHE_BYTES, verify_shards: bool = True) -> None:
        self._store = store
        self.manifest = manifest
        self._cache: OrderedDict[str, Shard] = OrderedDict()
        self._cache_bytes = cache_bytes
        self._verify_shards = verify_shards

    # -- opening ------------------------------------------------------------------------

    @classmethod
    def open(cls, url: str, version: int | None = None, *,
             storage_options: dict[str, Any] | None = None,
             cache_bytes: int = DEFAULT_CACHE_BYTES, verify_shards: bool = True,
             public_key: Any = None) -> Index:
        """Open ``version`` (default: the latest) of the index at ``url``.

        ``cache_bytes`` bounds the shard codes kept in memory between calls; shards are read
        (and, with ``verify_shards``, checked against their digests) on first use.
        ``public_key`` (Ed25519, ``format.signing.load_public_key``): open only a version
        whose manifest carries a valid signature by the matching private key (signed
        versions); an unsigned or re-signed manifest is an ``IntegrityError``.

        Raises:
            IndexNotFoundError: no index, or no such version, at ``url``.
            FormatError: the manifest is malformed or of a newer major format version.
        """
        store = IndexStore(url, storage_options=storage_options, public_key=public_key)
        return cls(store, store.read_manifest(version), cache_bytes=cache_bytes,
                   verify_shards=verify_shards)

    def versions(self) -> list[int]:
        """All committed versions of this index, ascending."""
        return self._store.versions()

    @property
    def url(self) -> str:
        return self._store.url

    @property
    def version(self) -> int:
        return self.manifest.version

    @property
    def dim(self) -> int:
        return self.manifest.dim

    @property
    def codecs(self) -> tuple[str, ...]:
        return tuple(self.manifest.codecs)

    @property
    def rows(self) -> int:
        return self.manifest.rows

    @property
    def shards(self) -> tuple[ShardMeta, ...]:
        return tuple(self.manifest.shards)

    @property
    def id_type(self) -> str:
        """``"int64"`` or ``"string"`` (``"int64"`` for an index with no shards)."""
        return self.manifest.shards[0].id_type if self.manifest.shards else "int64"

    def __repr__(self) -> str:
        return (f"Index({self.url!r}, version={self.version}, rows={self.rows}, "
                f"dim={self.dim}, codecs={list(self.codecs)})")

    # -- shards -------------------------------------------------------------------------

    def _shard(self, meta: ShardMeta) -> Shard:
        """The decoded shard, from the LRU cache or read (and verified) now."""
        shard = self._cache.pop(meta.path, None)
        if shard is None:
            shard = self._read_listed(meta)
        self._cache[meta.path] = shard
        cached = sum(_shard_bytes(s) for s in self._cache.values())
        while len(self._cache) > 1 and cached > self._cache_bytes:
            _, dropped = self._cache.popitem(last=False)
            cached -= _shard_bytes(dropped)
        if cached > self._cache_bytes:          # the newest alone is over budget: use once
            self._cache.clear()
        return shard

    def _read_listed(self, meta: ShardMeta) -> Shard:
        """Read the shard file at ``meta.path`` and check it is the shard the manifest lists
        (its own digests, with ``verify_shards``; rows, dim, codecs, id type and range,
        params and content digests against ``meta`` always), else IntegrityError."""
        url = self._store.url_of(meta.path)
        try:
            # never more than the manifest lists (a huge file there is refused unread)
            with self._store.open_read(meta.path, size=meta.file_bytes) as f:
                shard = read_shard(f, verify=self._verify_shards, max_bytes=meta.file_bytes)
        except FileNotFoundError:
            raise IntegrityError(f"shard {url}: listed in manifest version {self.version} but "
                                 f"missing") from None
        except IntegrityError as exc:       # its size, before any byte was read
            raise IntegrityError(f"shard {url} is not the shard manifest version "
                                 f"{self.version} lists ({exc})") from None
        differences = shard.differences(meta)
        if differences:
            raise IntegrityError(f"shard {url} is not the shard manifest version {self.version} "
                                 f"lists: " + "; ".join(differences))
        return shard

    # -- search -------------------------------------------------------------------------

    def search(self, queries: np.ndarray, k: int = 10, *, rerank: int | None = None,
               deterministic: bool = False) -> tuple[np.ndarray, np.ndarray]:
        """Top-``k`` rows by estimated inner product for each float query.

        Args:
            queries: float32 ``[nq, d]``.
            k: results per query.
            rerank: scan-level candidates per query and shard re-scored with the rerank
                level (multi-level indexes); default ``10 * k``; ``0`` scores with the scan
                level only.
            deterministic: the same scores and results on every machine (inner products
                exact on fixed-point grids, as the job's validation scores; about 2x the
                time); default: BLAS scores, whose last bits (and so the order of near-ties)
                depend on the CPU kernel.
        Returns:
            ``(D, I)``: float32 scores ``[nq, k]`` and ids ``[nq, k]`` (int64, or object for
            string ids), best first. If the index has fewer than ``k`` rows, missing entries
            are ``-inf`` / ``-1`` (``""`` for string ids).
        """
        queries = check_vectors(queries, "queries", dim=self.dim)
        k = check_count(k, "k", minimum=1)
        rerank = (DEFAULT_RERANK_FACTOR * k if rerank is None
                  else check_count(rerank, "rerank", minimum=0))
        nq = queries.shape[0]
        if nq * k > MAX_RESULT_ENTRIES:
            raise InvalidInputError(f"{nq} queries x k={k} is over {MAX_RESULT_ENTRIES} result "
                                    f"entries; search in smaller batches or with a smaller k")
        # no shard returns more than its rows: the rest of the k columns is padding
        k_found, rerank = min(k, max(self.rows, 1)), min(rerank, max(self.rows, 1))
        best_scores = np.full((nq, 0), -np.inf, dtype=np.float32)
        best_ids: np.ndarray | None = None
        for meta in self.manifest.shards:
            scores, ids = self._search_shard(self._shard(meta), queries, k_found, rerank,
                                             deterministic)
            if best_ids is None:
                best_ids = ids[:, :0]
            merged_scores = np.concatenate([best_scores, scores], axis=1)
            merged_ids = np.concatenate([best_ids, ids], axis=1)
            keep = min(k_found, merged_scores.shape[1])
            best_scores, order = topk(merged_scores, keep)
            best_ids = np.take_along_axis(merged_ids, order, axis=1)
        return _pad_results(best_scores, best_ids, nq, k, self.manifest)

    @staticmethod
    def _search_shard(shard: Shard, queries: np.ndarray, k: int, rerank: int,
                      deterministic: bool) -> tuple[np.ndarray, np.ndarray]:
        """Top-k of all queries in one shard -> (scores, ids), each [nq, <= k]."""
        scores, rows = search_levels(shard.levels, queries, k, rerank=rerank,
                                     score_budget=SCORE_BUDGET, deterministic=deterministic)
        return scores, shard.ids[rows]

    # -- restore ------------------------------------------------------------------------

    def restore(self, ids: Sequence[Any] | np.ndarray | None = None, *,
                level: int = -1) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Stream ``(ids, vectors)`` batches, one per shard, restored from ``level`` codes.

        Args:
            ids: only these ids (default: all rows); ids that cannot be ids of this index
                (strings in an int64 index, ints in a string one) match nothing.
            level: which code level restores (default: the last, finest); checked before
                anything is read.
        Yields:
            ids ``[m]`` and float32 vectors ``[m, d]``; shards with no wanted id are skipped.
        """
        level = _level(level, len(self.codecs))
        wanted = None if ids is None else _wanted_ids(ids, self.id_type)
        return self._restore(wanted, level)

    def _restore(self, wanted: np.ndarray | None,
                 level: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for meta in self.manifest.shards:
            if wanted is not None and not _may_hold(meta, wanted):
                continue
            shard = self._shard(meta)
            rows = np.arange(shard.rows) if wanted is None else np.flatnonzero(
                np.isin(shard.ids, wanted))
            if rows.size == 0:
                continue
            yield shard.ids[rows], decode_rows(shard.levels, level, rows)

    def restore_table(self, ids: Sequence[Any] | np.ndarray | None = None, *,
                      level: int = -1) -> pa.Table:
        """Restored vectors as an Arrow table: ``id`` and ``vector`` (fixed_size_list<float>)."""
        batches = [_as_batch(i, v, self.dim) for i, v in self.restore(ids, level=level)]
        if not batches:
            return _empty_table(self.dim, self.id_type)
        return pa.Table.from_batches(batches)

    def export_parquet(self, dest: str, *, level: int = -1,
                       storage_options: dict[str, Any] | None = None,
                       id_column: str = "id", vector_column: str = "vector",
                       row_group_rows: int = EXPORT_ROW_GROUP_ROWS) -> int:
        """Write all restored vectors to a Parquet file at ``dest`` (any fsspec URL):
        ``id_column`` (int64 or string) and ``vector_column`` (fixed_size_list<float32>[d]),
        streaming shard by shard, in row groups of ``row_group_rows`` rows (the last one
        fewer). Returns the number of rows written.

        If reading a shard fails midway, the partial file is removed before the error
        propagates (a file at ``dest`` is always a complete export)."""
        import fsspec
        import pyarrow.parquet as pq

        row_group_rows = check_count(row_group_rows, "row_group_rows", minimum=1)
        if id_column == vector_column:
            raise InvalidInputError(f"id_column and vector_column are both {id_column!r}")
        names = (id_column, vector_column)
        batches = self.restore(level=level)
        written = 0
        schema = _empty_table(self.dim, self.id_type, names).schema
        fs, path = fsspec.core.url_to_fs(dest, **(storage_options or {}))
        fs.makedirs(fs._parent(path), exist_ok=True)   # as fsspec.open does for writing
        try:
            with fs.open(path, "wb") as f, pq.ParquetWriter(f, schema) as writer:
                pending: list[pa.RecordBatch] = []      # fewer than row_group_rows rows
                for ids, vectors in batches:
                    table = pa.Table.from_batches(
                        [*pending, _as_batch(ids, vectors, self.dim, names)], schema)
                    full = table.num_rows - table.num_rows % row_group_rows
                    if full:
                        writer.write_table(table.slice(0, full), row_group_size=row_group_rows)
                    pending = table.slice(full).to_batches()
                    written += len(ids)
                if pending:
                    writer.write_table(pa.Table.from_batches(pending, schema))
        except BaseException:
            if fs.exists(path):
                fs.rm(path)
            raise
        return written

    # -- verify -------------------------------------------------------------------------

    def verify(self) -> VerifyReport:
        """Check every shard of this version against the manifest and its own digests.

        Reads each shard once (not through the cache); reports, never raises, for shards
        that are missing, truncated, corrupt, or differ from what the manifest recorded.
        """
        problems: list[ShardProblem] = []
        for meta in self.manifest.shards:
            problems.extend(self._verify_shard(meta))
        return VerifyReport(url=self.url, version=self.version,
                            shards_checked=len(self.manifest.shards), problems=tuple(problems))

    def _verify_shard(self, meta: ShardMeta) -> list[ShardProblem]:
        limit = min(meta.file_bytes, DEFAULT_MAX_BYTES)
        try:
            with self._store.open_read(meta.path) as f:
                data = read_at_most(f, limit + 1)   # never the whole of a huge file
        except FormatError as exc:                  # not a regular file
            return [ShardProblem(meta.path, str(exc))]
        except OSError as exc:
            return [ShardProblem(meta.path, f"cannot read shard file: {exc}")]
        if len(data) > limit:
            return [ShardProblem(meta.path, f"file is over {limit} bytes (the manifest says "
                                            f"{meta.file_bytes}, the reader's limit is "
                                            f"{DEFAULT_MAX_BYTES})")]
        try:
            shard = read_shard(io.BytesIO(data))   # parses and checks every digest
        except FormatError:
            # only on failure: the full list of what is wrong (read_shard stops at the first)
            found = []
            if len(data) != meta.file_bytes:
                found.append(f"file_bytes is {len(data)}, the manifest says {meta.file_bytes}")
            if hashlib.sha256(data).hexdigest() != meta.file_sha256:
                found.append("file SHA-256 differs from the manifest")
            found.extend(verify_shard(io.BytesIO(data)).problems)
        else:
            found = shard.differences(meta)
        return [ShardProblem(meta.path, p) for p in found]

    # -- diff ---------------------------------------------------------------------------

    def diff(self, other: Index, *, k: int = 10, sample_queries: int = 100,
             seed: int = 0) -> DiffReport:
        """Compare this index (the base) with ``other`` (e.g. a newer version).

        Ids are compared exactly. When both versions store input fingerprints (shards
        written by ``build_index`` or the job: ``format/fingerprint.py``), a common id is
        ``changed`` if its input vector changed and ``unchanged`` otherwise, however it was
        re-encoded; else (``report.fingerprints`` False, ``report.note`` says why) if its
        restored vector differs. Drift (distance between the restored vectors of each
        version's finest level) is reported for all common ids and, with fingerprints, for
        the changed and unchanged ones apart. Neighborhoods are compared by searching both
        indexes with ``sample_queries`` rows restored from this index (seeded sample).
        Both versions' restored vectors are held in memory (``2 * rows * d`` floats): meant
        for indexes that fit, not for streaming billions of rows.
        """
        if other.dim != self.dim:
            raise InvalidInputError(f"cannot diff indexes of dimension {self.dim} and "
                                    f"{other.dim}")
        k = check_count(k, "k", minimum=1)
        sample_queries = check_count(sample_queries, "sample_queries", minimum=0)
        return diff_indexes(self, other, k=k, sample_queries=sample_queries, seed=seed)

    def _diff_rows(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray | None]]:
        """Each shard's ids, vectors restored by the finest level, and input fingerprints
        (uint8 ``[rows, 8]``; None for a shard written without them)."""
        for meta in self.manifest.shards:
            shard = self._shard(meta)
            yield (shard.ids, decode_rows(shard.levels, -1, np.arange(shard.rows)),
                   shard.fingerprints)


# -- helpers ----------------------------------------------------------------------------------

def check_count(value: Any, name: str, *, minimum: int) -> int:
    """``value`` as an int >= ``minimum`` (numpy integers accepted, bools refused)."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise InvalidInputError(f"{name} must be an int >= {minimum}, got {value!r}")
    return int(value)


def _shard_bytes(shard: Shard) -> int:
    fingerprints = 0 if shard.fingerprints is None else shard.fingerprints.nbytes
    return sum(lv.codes.nbytes for lv in shard.levels) + shard.ids.nbytes + fingerprints


def _may_hold(meta: ShardMeta, wanted: np.ndarray) -> bool:
    """Whether a shard's id range can contain any of ``wanted`` (cheap pruning)."""
    if meta.id_type == "int64" and wanted.dtype.kind in "iu":
        return bool(((wanted >= int(meta.id_min)) & (wanted <= int(meta.id_max))).any())
    return True


def _level(level: Any, levels: int) -> int:
    """``level`` checked as an index into ``levels`` code levels (negative from the end)."""
    if isinstance(level, bool) or not isinstance(level, (int, np.integer)) or not (
            -levels <= level < levels):
        raise InvalidInputError(f"level must be an int in [{-levels}, {levels - 1}] for an "
                                f"index of {levels} code level(s), got {level!r}")
    return int(level)


def _wanted_ids(ids: Any, id_type: str) -> np.ndarray:
    """The ids asked for that can be ids of an index of ``id_type``: int64 ``[m]`` or an
    object array of str (others are dropped: they match nothing)."""
    if isinstance(ids, np.ndarray):
        values = ids.reshape(-1)
    else:   # any iterable of ids (a set, a generator, a Series), or one id
        many = isinstance(ids, Iterable) and not isinstance(ids, (str, bytes))
        values = np.array(list(ids) if many else [ids], dtype=object)
    if id_type == "int64":
        if values.dtype.kind in "iu":
            return values
        return np.array([v for v in values.tolist()
                         if isinstance(v, (int, np.integer)) and not isinstance(v, bool)
                         and -(2**63) <= v < 2**63], dtype=np.int64)
    return np.array([v for v in values.tolist() if isinstance(v, str)], dtype=object)


def _pad_results(scores: np.ndarray, ids: np.ndarray | None, nq: int, k: int,
                 manifest: Manifest) -> tuple[np.ndarray, np.ndarray]:
    string_ids = bool(manifest.shards) and manifest.shards[0].id_type == "string"
    fill = "" if string_ids else -1
    out_ids = np.full((nq, k), fill, dtype=object if string_ids else np.int64)
    out_scores = np.full((nq, k), -np.inf, dtype=np.float32)
    if ids is not None and ids.shape[1]:
        out_ids[:, :ids.shape[1]] = ids
        out_scores[:, :scores.shape[1]] = scores
    return out_scores, out_ids


def _as_batch(ids: np.ndarray, vectors: np.ndarray, dim: int,
              names: tuple[str, str] = ("id", "vector")) -> pa.RecordBatch:
    id_array = pa.array(ids.tolist(), type=pa.string()) if ids.dtype == object else pa.array(
        ids, type=pa.int64())
    values = pa.array(np.ascontiguousarray(vectors, dtype=np.float32).ravel(), type=pa.float32())
    return pa.RecordBatch.from_arrays(
        [id_array, pa.FixedSizeListArray.from_arrays(values, dim)], names=list(names))


def _empty_table(dim: int, id_type: str,
                 names: tuple[str, str] = ("id", "vector")) -> pa.Table:
    schema = pa.schema([(names[0], pa.string() if id_type == "string" else pa.int64()),
                        (names[1], pa.list_(pa.float32(), dim))])
    return schema.empty_table()


__all__ = ["DiffReport", "Drift", "Index", "ShardProblem", "VerifyReport", "check_count"]
