"""Build an index in-process from arrays: cut shards, fit and encode per shard, write, commit.

For data that fits in memory (tests, benchmarks, small collections). The Beam pipeline does
the same steps at scale with the same format calls (``write_shard`` per shard, one
``IndexStore.commit``).

>>> manifest = build_index("memory://demo", x, codecs=["semq1", "semq4"])  # doctest: +SKIP
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from semq_transforms.codecs import check_vectors
from semq_transforms.errors import InvalidInputError
from semq_transforms.format.fingerprint import row_fingerprints
from semq_transforms.format.manifest import Manifest
from semq_transforms.format.shard import write_shard
from semq_transforms.format.store import IndexStore
from semq_transforms.levels import encode_levels
from semq_transforms.sharding import ShardLayout

DEFAULT_ROWS_PER_SHARD = 100_000


def _check_unique(ids: np.ndarray | Sequence[str]) -> None:
    """An index maps each id to one row: refuse repeated ids, naming the first and its rows."""
    first_row: dict[Any, int] = {}
    for row, value in enumerate(ids.tolist() if isinstance(ids, np.ndarray) else ids):
        seen = first_row.setdefault(value, row)
        if seen != row:
            raise InvalidInputError(f"ids must be unique: id {value!r} is at rows {seen} and "
                                    f"{row}")


def build_index(url: str, x: np.ndarray, *, ids: np.ndarray | Sequence[str] | None = None,
                codecs: Sequence[str] = ("semq4",), rows_per_shard: int = DEFAULT_ROWS_PER_SHARD,
                run_id: str | None = None, parent_version: int | None | str = "latest",
                input_fingerprint: str | None = None,
                storage_options: Mapping[str, Any] | None = None,
                allow_unsafe_commit: bool = False, signing_key: Any = None) -> Manifest:
    """Encode ``x`` into shards under ``url`` and commit a new version.

    Each shard stores its rows' input fingerprints (``format/fingerprint.py``, 64 bits per
    row), so :meth:`Index.diff` tells rows whose input changed from rows only re-encoded.

    Args:
        url: index prefix (any fsspec URL).
        x: float32 ``[n, d]``.
        ids: int64 ``[n]`` or ``n`` strings, unique (default: ``0..n-1``).
        codecs: code levels per shard, scan level first (``["semq1", "semq4"]``).
        rows_per_shard: shard size; each shard fits its own codec parameters. A remainder
            of fewer than half a shard joins the last shard (``sharding.ShardLayout``).
        run_id: names the run folder the shards are written to (default: a new
            ``build-<16 hex>`` per call). A folder a committed version uses is refused
            (``RunFolderInUseError``): its files must not change.
        allow_unsafe_commit: publish on storage without a create-if-absent write
            (``IndexStore.check_commit``; refused otherwise, before anything is written).
        signing_key: an Ed25519 private key (``format.signing.load_private_key``): the
            version is signed (``Index.open(..., public_key=...)`` then checks it).
    Returns:
        The committed manifest.
    """
    x = check_vectors(x, "x")
    if isinstance(rows_per_shard, bool) or not isinstance(rows_per_shard, (int, np.integer)) \
            or rows_per_shard < 1:
        raise InvalidInputError(f"rows_per_shard must be an int >= 1, got {rows_per_shard!r}")
    layout = ShardLayout(int(rows_per_shard), x.shape[0])
    ids = np.arange(x.shape[0], dtype=np.int64) if ids is None else ids
    if len(ids) != x.shape[0]:
        raise InvalidInputError(f"ids has {len(ids)} entries, x has {x.shape[0]} rows")
    _check_unique(ids)
    store = IndexStore(url, storage_options=storage_options)
    store.check_commit(allow_unsafe=allow_unsafe_commit)
    if run_id is None:
        run_id = f"build-{secrets.token_hex(8)}"
    else:
        store.refuse_published_run(run_id)
    shards = []
    for number, (start, stop) in enumerate(layout.ranges()):
        levels = encode_levels(x[start:stop], codecs)
        path = store.shard_path(run_id, number)
        with store.open_write(path) as f:
            shards.append(write_shard(f, ids=ids[start:stop], levels=levels, path=path,
                                      fingerprints=row_fingerprints(x[start:stop])))
    return store.commit(shards, dim=x.shape[1], codecs=list(codecs), run_id=run_id,
                        parent_version=parent_version, input_fingerprint=input_fingerprint,
                        allow_unsafe_commit=allow_unsafe_commit, signing_key=signing_key)
