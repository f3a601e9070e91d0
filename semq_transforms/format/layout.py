"""Where the bytes of a written ``.semq`` shard file go: codes per level, params, ids, input
fingerprints, other.

    meta = write_shard(f, ids=ids, levels=levels, path=path, fingerprints=fp)
    split = shard_bytes(meta, ids, levels, fp)   # ShardBytes(codes=(..), params=.., ...)

The split is computed from what the writer was given (no byte of the file is read again),
following the layout ``write_shard`` produces (FORMAT.md):

* ``codes``: each level's code column, ``rows * code_bytes`` (its fixed-size binary values);
* ``params``: the levels' params as stored: record batch 0's ``semq.params`` value, once
  (base64 text, columns shared between levels stored once; shard format 3.0, FORMAT.md);
* ``ids``: the id column's values: 8 bytes per int64 id; for string ids their UTF-8 bytes
  plus the int32 offsets (``rows + 1`` per record batch);
* ``fingerprints``: the ``input_fp`` column's values, 8 bytes per row (0 for a shard written
  without it): a part of its own, not counted in ``ids``;
* ``other``: the rest: the header's other fields (both copies), Arrow message metadata,
  the footer, magic bytes and buffer padding.

``codes + params + ids + fingerprints + other == meta.file_bytes``. Pure Python; no Beam.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from semq_transforms.format._header import params_metadata
from semq_transforms.format.meta import ShardMeta
from semq_transforms.format.shard import MAX_BATCH_ROWS

__all__ = ["ShardBytes", "shard_bytes"]



@dataclass(frozen=True)
class ShardBytes:
    """The byte split of one shard file (all sizes in bytes).

    Attributes:
        path: the shard's path relative to the index root (as in its ShardMeta).
        codes: bytes of codes of each level, scan level first.
        params: bytes of the levels' params as stored (``semq.params``, base64 JSON).
        ids: bytes of the id column's values and offsets.
        other: everything else (header fields, Arrow metadata, footer, padding).
        fingerprints: bytes of the input fingerprint column (8 per row; 0 without it).
    """

    path: str
    codes: tuple[int, ...]
    params: int
    ids: int
    other: int
    fingerprints: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "codes", tuple(self.codes))

    @property
    def file_bytes(self) -> int:
        """The file's size: the sum of the parts."""
        return sum(self.codes) + self.params + self.ids + self.fingerprints + self.other


def _id_bytes(meta: ShardMeta, ids: Any, batch_rows: int) -> int:
    if meta.id_type == "int64":
        return 8 * meta.rows
    batches = math.ceil(meta.rows / batch_rows)
    return 4 * (meta.rows + batches) + sum(len(str(i).encode("utf-8")) for i in ids)


def shard_bytes(meta: ShardMeta, ids: Any, levels: Sequence[Any],
                fingerprints: Any = None) -> ShardBytes:
    """The :class:`ShardBytes` of the shard ``write_shard`` wrote from ``ids``, ``levels``
    (EncodedLevels) and ``fingerprints`` (uint8 ``[rows, 8]``, or None) and described as
    ``meta``."""
    codes = tuple(int(lv.codes.shape[0]) * int(lv.codes.shape[1]) for lv in levels)
    params = len(params_metadata(levels))
    id_bytes = _id_bytes(meta, ids, MAX_BATCH_ROWS)
    fp_bytes = 0 if fingerprints is None else int(fingerprints.nbytes)
    other = meta.file_bytes - sum(codes) - params - id_bytes - fp_bytes
    if other < 0:
        raise ValueError(f"shard {meta.path}: codes, params, ids and fingerprints add up to "
                         f"more than its {meta.file_bytes} bytes (the file layout is not the "
                         f"one assumed)")
    return ShardBytes(meta.path, codes, params, id_bytes, other, fp_bytes)
