"""The derived figures of a run report: where the published bytes go, and how long it took.

    split = byte_split(metas, shard_bytes, dim=384)   # the report's "bytes" additions
    timing = run_timing(started_at, finished_at, rows=20_000)

Both return JSON-safe dicts (raw byte counts; rendering is :mod:`.markdown`'s). Pure
functions of :class:`~semq_transforms.format.meta.ShardMeta` and
:class:`~semq_transforms.format.layout.ShardBytes`; no Beam.
"""

from __future__ import annotations

import datetime
from collections.abc import Mapping, Sequence
from typing import Any

from semq_transforms.format.layout import ShardBytes
from semq_transforms.format.meta import ShardMeta

__all__ = ["PARTS", "byte_split", "run_timing", "shard_split"]

#: The parts of a shard file besides its codes, in report order.
PARTS = ("params", "ids", "fingerprints", "other")


def _bits_per_dim(nbytes: int, rows: int, dim: int | None) -> float | None:
    return nbytes * 8 / (rows * dim) if rows and dim else None


def shard_split(split: ShardBytes | None) -> dict[str, Any] | None:
    """One shard's byte split as a JSON dict (``codes`` per level, ``params``, ``ids``,
    ``fingerprints`` (input fingerprints), ``other``); None when unknown."""
    if split is None:
        return None
    return {"codes": list(split.codes), "params": split.params, "ids": split.ids,
            "fingerprints": split.fingerprints, "other": split.other}


def byte_split(metas: Sequence[ShardMeta], splits: Mapping[str, ShardBytes] | None, *,
               dim: int | None) -> dict[str, Any]:
    """The published shards' bytes by part, summed over shards.

    Returns ``{"bits_per_dim": all bytes * 8 / (rows * dim), "levels": [{"level", "codec",
    "code_bytes_per_row", "codes", "bits_per_dim"}, ...], "params", "ids", "fingerprints",
    "other"}``. ``codes`` and bits/dim of a level come from the shard metadata (``rows *
    code_bytes``); ``params`` / ``ids`` / ``fingerprints`` / ``other`` need ``splits`` (path ->
    ShardBytes) for every shard and are None otherwise. Bits/dim are None without rows or
    ``dim``.
    """
    rows = sum(m.rows for m in metas)
    total = sum(m.file_bytes for m in metas)
    levels = []
    for i, level in enumerate(metas[0].levels if metas else ()):
        codes = sum(m.rows * m.levels[i].code_bytes for m in metas)
        levels.append({"level": i, "codec": level.codec,
                       "code_bytes_per_row": level.code_bytes, "codes": codes,
                       "bits_per_dim": _bits_per_dim(codes, rows, dim)})
    known = [splits.get(m.path) for m in metas] if splits is not None else [None]
    parts: dict[str, int | None] = dict.fromkeys(PARTS)
    if all(s is not None for s in known):
        parts = {part: sum(getattr(s, part) for s in known) for part in PARTS}
    return {"bits_per_dim": _bits_per_dim(total, rows, dim), "levels": levels, **parts}


def run_timing(started_at: float | None, finished_at: float, *,
               rows: int) -> dict[str, Any] | None:
    """``{"started_at": ISO 8601 UTC, "wall_seconds", "rows_per_second"}`` from two epoch
    times (seconds) and the rows the run read; None when the start is unknown."""
    if started_at is None:
        return None
    seconds = max(0.0, finished_at - started_at)
    start = datetime.datetime.fromtimestamp(started_at, datetime.UTC)
    return {"started_at": start.isoformat(timespec="seconds").replace("+00:00", "Z"),
            "wall_seconds": round(seconds, 3),
            "rows_per_second": round(rows / seconds, 1) if seconds > 0 else None}
