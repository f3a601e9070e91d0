"""``Index.diff``: what changed between two versions of an index.

Ids are compared exactly. Whether a common id *changed* is decided by its input fingerprint
(``format/fingerprint.py``: 8 bytes of BLAKE2b of the input vector, stored per row) when both
versions store them: re-encoding a row (another codec, other params fitted on another shard)
changes its restored vector but not its fingerprint, so only rows whose input changed are
``changed``. How far the restored vectors moved (drift) is reported for the changed and the
unchanged rows separately. When either version lacks fingerprints (shards written without
them), ``changed`` falls back to "the restored vectors differ" and the report says so.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from semq_transforms.eval import knn_intersection_measure

if TYPE_CHECKING:
    from semq_transforms.index import Index

#: Common rows whose drift is computed at a time (bounds the float64 copies).
_DRIFT_BLOCK = 1 << 16


@dataclass(frozen=True)
class Drift:
    """Euclidean distance between the two versions' restored vectors of the same ids:
    ``rows`` compared, their ``mean`` and ``max`` distance (0.0 over no rows)."""

    rows: int
    mean: float
    max: float

    @classmethod
    def of(cls, distances: np.ndarray) -> Drift:
        if not distances.size:
            return cls(0, 0.0, 0.0)
        return cls(int(distances.size), float(distances.mean()), float(distances.max()))

    def to_json(self) -> dict[str, Any]:
        return {"rows": self.rows, "mean": self.mean, "max": self.max}


@dataclass(frozen=True)
class DiffReport:
    """Result of :meth:`Index.diff`: how a second version (other) differs from the base.

    Attributes:
        added, removed: ids only in the other / only in the base version.
        changed, unchanged: the common ids, split. With ``fingerprints``: ids whose input
            vector changed / did not (their stored input fingerprints differ / are equal),
            whatever their codes. Without: ids whose restored vectors differ / are equal
            (every re-encoded row is then "changed").
        fingerprints: whether both versions store input fingerprints for every row.
        drift: distance between the restored vectors of all common ids; ``drift_changed`` /
            ``drift_unchanged``: of the changed / unchanged ids (None without
            ``fingerprints``: the split then says nothing the drift does not).
        neighbor_overlap: mean recall@k of the other version's search results against the
            base's, on ``sample_queries`` queries drawn from the base's restored vectors
            (1.0 = neighborhoods unchanged); None when either version is empty.
        k, sample_queries: as used; ``base_version``, ``other_version``: the two versions.
        note: why ``changed`` means restored vectors differ (None with ``fingerprints``).
    """

    added: np.ndarray
    removed: np.ndarray
    changed: np.ndarray
    unchanged: np.ndarray
    fingerprints: bool
    drift: Drift
    drift_changed: Drift | None
    drift_unchanged: Drift | None
    neighbor_overlap: float | None
    k: int
    sample_queries: int
    base_version: int
    other_version: int
    note: str | None = None

    @property
    def drift_mean(self) -> float:
        """Mean drift over all common ids (``drift.mean``)."""
        return self.drift.mean

    @property
    def drift_max(self) -> float:
        """Largest drift over all common ids (``drift.max``)."""
        return self.drift.max

    def to_json(self, *, max_ids: int = 100) -> dict[str, Any]:
        def ids(a: np.ndarray) -> dict[str, Any]:
            return {"count": int(a.size), "sample": [_json_id(v) for v in a[:max_ids]]}

        def drift(d: Drift | None) -> dict[str, Any] | None:
            return None if d is None else d.to_json()

        return {"added": ids(self.added), "removed": ids(self.removed),
                "changed": ids(self.changed), "unchanged": ids(self.unchanged),
                "fingerprints": self.fingerprints, "note": self.note,
                "drift_mean": self.drift_mean, "drift_max": self.drift_max,
                "drift": {"common": drift(self.drift), "changed": drift(self.drift_changed),
                          "unchanged": drift(self.drift_unchanged)},
                "neighbor_overlap": self.neighbor_overlap, "k": self.k,
                "sample_queries": self.sample_queries, "base_version": self.base_version,
                "other_version": self.other_version}


class _Rows(NamedTuple):
    """One version's rows: ids (Python values), restored vectors, input fingerprints."""

    ids: list[Any]
    vectors: np.ndarray              # float32 [n, d]
    fingerprints: np.ndarray | None  # uint64 [n]; None if some shard has none
    row_of: dict[Any, int]


def _collect(index: Index) -> _Rows:
    ids: list[Any] = []
    vectors, fingerprints = [], []
    complete = True
    for shard_ids, restored, fp in index._diff_rows():
        ids.extend(shard_ids.tolist())
        vectors.append(restored)
        if fp is None:
            complete = False
        else:
            fingerprints.append(np.ascontiguousarray(fp).view("<u8")[:, 0])
    return _Rows(ids, np.concatenate(vectors) if vectors else np.zeros((0, index.dim),
                                                                        np.float32),
                 (np.concatenate(fingerprints) if fingerprints else np.zeros(0, "<u8"))
                 if complete else None,
                 {value: row for row, value in enumerate(ids)})


def diff_indexes(base: Index, other: Index, *, k: int, sample_queries: int,
                 seed: int) -> DiffReport:
    """:meth:`Index.diff` (arguments checked by it)."""
    mine, theirs = _collect(base), _collect(other)
    common = sorted(set(mine.row_of) & set(theirs.row_of), key=_sort_key)
    added = np.array(sorted(set(theirs.row_of) - set(mine.row_of), key=_sort_key))
    removed = np.array(sorted(set(mine.row_of) - set(theirs.row_of), key=_sort_key))
    rows_a = np.array([mine.row_of[i] for i in common], dtype=np.int64)
    rows_b = np.array([theirs.row_of[i] for i in common], dtype=np.int64)
    drift = np.concatenate([np.zeros(0), *_distances(mine.vectors, theirs.vectors, rows_a,
                                                     rows_b)])
    fingerprints = mine.fingerprints is not None and theirs.fingerprints is not None
    if fingerprints:
        same = mine.fingerprints[rows_a] == theirs.fingerprints[rows_b]
    else:
        same = drift == 0
    changed = np.array([common[j] for j in np.flatnonzero(~same)])
    unchanged = np.array([common[j] for j in np.flatnonzero(same)])
    overlap = None
    n_sample = min(sample_queries, len(mine.ids))
    if n_sample and other.rows:
        rng = np.random.default_rng(seed)
        keys = sorted(mine.row_of, key=_sort_key)
        picks = rng.choice(len(keys), size=n_sample, replace=False)
        queries = mine.vectors[[mine.row_of[keys[p]] for p in picks]].astype(np.float32)
        kk = min(k, base.rows, other.rows)
        _, base_ids = base.search(queries, kk)
        _, other_ids = other.search(queries, kk)
        overlap = knn_intersection_measure(*_id_codes(base_ids, other_ids))
    note = None if fingerprints else _fallback_note(base, other, mine, theirs)
    return DiffReport(
        added=added, removed=removed, changed=changed, unchanged=unchanged,
        fingerprints=fingerprints, drift=Drift.of(drift),
        drift_changed=Drift.of(drift[~same]) if fingerprints else None,
        drift_unchanged=Drift.of(drift[same]) if fingerprints else None,
        neighbor_overlap=overlap, k=k, sample_queries=n_sample, base_version=base.version,
        other_version=other.version, note=note)


def _distances(a: np.ndarray, b: np.ndarray, rows_a: np.ndarray,
               rows_b: np.ndarray) -> Iterator[np.ndarray]:
    """Euclidean distances ``|a[rows_a] - b[rows_b]|`` (float64; 0 exactly when equal), a
    block of rows at a time."""
    for lo in range(0, rows_a.size, _DRIFT_BLOCK):
        hi = lo + _DRIFT_BLOCK
        delta = a[rows_a[lo:hi]].astype(np.float64) - b[rows_b[lo:hi]]
        yield np.sqrt(np.einsum("ij,ij->i", delta, delta))


def _fallback_note(base: Index, other: Index, mine: _Rows, theirs: _Rows) -> str:
    lacking = [f"{which} (version {index.version})"
               for which, index, rows in (("the base", base, mine), ("the other", other, theirs))
               if rows.fingerprints is None]
    verb = "have" if len(lacking) > 1 else "has"
    return (f"{' and '.join(lacking)} {verb} shards without input fingerprints, so 'changed' "
            f"means the restored vectors differ: a row re-encoded with other params counts as "
            f"changed even if its input did not change")


def _json_id(value: Any) -> Any:
    return value.item() if isinstance(value, np.generic) else value


def _sort_key(value: Any) -> tuple[int, Any]:
    return (0, value) if isinstance(value, int) else (1, str(value))


def _id_codes(*results: np.ndarray) -> list[np.ndarray]:
    """Map the ids of several result tables (int or str, no padding) to int64 codes >= 0,
    one code per id across all of them (an int and a str never share one)."""
    lookup: dict[tuple[bool, Any], int] = {}
    out = []
    for ids in results:
        codes = [lookup.setdefault((isinstance(v, str), v), len(lookup))
                 for v in ids.ravel().tolist()]
        out.append(np.array(codes, dtype=np.int64).reshape(ids.shape))
    return out
