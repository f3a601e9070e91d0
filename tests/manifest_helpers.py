"""Builders shared by the manifest and store tests.

ShardMeta objects are built directly (the shard writer is developed separately); shard files
are dummy bytes of the declared size, which is all the commit step checks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from typing import Any

from semq_transforms.format.meta import LevelMeta, ShardMeta

DIM = 64
CODECS = ("semq1", "int8")
CREATED_AT = "2026-11-22T10:00:00.000000Z"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def make_shard(number: int = 0, *, run_id: str = "run-1", rows: int = 100,
               file_bytes: int | None = None, dim: int = DIM,
               codecs: Sequence[str] = CODECS, id_type: str = "int64",
               **overrides: Any) -> ShardMeta:
    """A plausible ShardMeta for shard ``number`` of ``run_id`` (ids ``number*rows ...``)."""
    widths = {"semq1": 16, "int8": dim, "f16": 2 * dim}
    levels = tuple(LevelMeta(codec=c, code_bytes=widths.get(c, 8), params_sha256=sha(f"{c}"))
                   for c in codecs)
    ids: tuple[Any, Any] = (number * rows, number * rows + rows - 1)
    if id_type == "string":
        ids = (f"doc-{number:04d}-0000", f"doc-{number:04d}-{rows - 1:04d}")
    fields: dict[str, Any] = {
        "path": f"runs/{run_id}/shard-{number:05d}.semq", "rows": rows, "dim": dim,
        "file_bytes": file_bytes if file_bytes is not None else 200 + 7 * number,
        "levels": levels, "content_sha256": sha(f"content {run_id} {number}"),
        "file_sha256": sha(f"file {run_id} {number}"), "id_type": id_type,
        "id_min": ids[0], "id_max": ids[1],
        "stats": {"mean_norm": 0.1 + number, "rows": rows},
        "validation": {"recall@10": 0.95} if number % 2 == 0 else {}}
    fields.update(overrides)
    return ShardMeta(**fields)


def make_shards(count: int, **kwargs: Any) -> list[ShardMeta]:
    return [make_shard(number, **kwargs) for number in range(count)]


def write_shard_files(store: Any, shards: Sequence[ShardMeta]) -> None:
    """Write dummy shard files of exactly ``file_bytes`` bytes each."""
    for shard in shards:
        with store.open_write(shard.path) as f:
            f.write(b"\x5a" * shard.file_bytes)


def commit_in_process(url: str, storage_options: dict[str, Any] | None, run_id: str,
                      barrier: Any, results: Any) -> None:
    """Worker for the multi-process commit race: commit version 1 (parent None) at ``url``
    after all workers reach ``barrier``; put ``("won", digest)`` or ``("conflict", msg)``."""
    from semq_transforms.errors import VersionConflictError
    from semq_transforms.format.store import IndexStore

    store = IndexStore(url, storage_options=storage_options)
    shards = make_shards(2)  # written by the parent process
    barrier.wait(timeout=60)
    try:
        manifest = store.commit(shards, dim=DIM, codecs=CODECS, run_id=run_id,
                                parent_version=None)
        results.put(("won", manifest.digest))
    except VersionConflictError as exc:
        results.put(("conflict", str(exc)))
    except Exception as exc:  # noqa: BLE001  (any error goes to the parent, which fails)
        results.put(("error", f"{type(exc).__name__}: {exc}"))
