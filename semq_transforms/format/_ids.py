"""Shard ids: checking the caller's ids, their Arrow arrays, their canonical bytes and digest.

Ids are int64, or strings (UTF-8, at most :data:`MAX_ID_BYTES` each). The canonical bytes
that the ids digest covers are defined in FORMAT.md ("Digests") and by :func:`canonical_ids`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from semq_transforms.errors import (
    EmptyInputError,
    InputDtypeError,
    InputShapeError,
    InvalidInputError,
)
from semq_transforms.format._arrowio import problem

#: Longest string id (UTF-8 bytes); keeps one batch's string data far below 2 GiB.
MAX_ID_BYTES = 16384
_INT64_MAX = int(np.iinfo(np.int64).max)


def id_batches(ids: Any, rows: int, batch_rows: int
               ) -> tuple[str, list[pa.Array], int | str, int | str]:
    """(id_type, one Arrow array per batch of ``batch_rows``, id_min, id_max) of the caller's
    ids, checked: int64 (or any integers that fit) or str, one per row."""
    ints, strs = _classify_ids(ids)
    count = len(strs) if strs is not None else int(ints.shape[0])
    if count != rows:
        raise InputShapeError(f"ids must hold one id per row ({rows} rows), got {count}")
    if rows == 0:
        raise EmptyInputError("a shard needs at least one row")
    bounds = range(0, rows, batch_rows)
    if ints is not None:
        if ints.dtype.kind == "u" and int(ints.max()) > _INT64_MAX:
            raise InvalidInputError(f"id {int(ints.max())} does not fit in int64")
        ints = ints.astype(np.int64)
        arrays = [pa.array(ints[s:s + batch_rows], type=pa.int64()) for s in bounds]
        return "int64", arrays, int(ints.min()), int(ints.max())
    try:
        arrays = [pa.array(strs[s:s + batch_rows], type=pa.string()) for s in bounds]
    except (pa.ArrowException, UnicodeError) as exc:
        raise InvalidInputError(f"string ids must be valid Unicode text: {exc}") from None
    longest = max(int(np.diff(np.frombuffer(a.buffers()[1], "<i4", len(a) + 1)).max())
                  for a in arrays)
    if longest > MAX_ID_BYTES:
        raise InvalidInputError(f"a string id is {longest} UTF-8 bytes; at most "
                                f"{MAX_ID_BYTES} are allowed")
    # Code point order is UTF-8 byte order, the order ShardMeta documents.
    return "string", arrays, min(strs), max(strs)


def _classify_ids(ids: Any) -> tuple[np.ndarray | None, list[str] | None]:
    """(integer array, None) or (None, list of str)."""
    if isinstance(ids, np.ndarray):
        if ids.ndim != 1:
            raise InputShapeError(f"ids must be 1-D, got shape {list(ids.shape)}")
        if ids.dtype.kind in "iu":
            return ids, None
        if ids.dtype.kind not in "OU":
            raise InputDtypeError(f"ids must be int64 or str, got dtype {ids.dtype}")
        values = ids.tolist()
    elif isinstance(ids, Sequence) and not isinstance(ids, (str, bytes)):
        values = list(ids)
    else:
        raise InputDtypeError(f"ids must be an int64 array or a sequence of str, got "
                              f"{type(ids).__name__}")
    if all(isinstance(v, str) for v in values):
        return None, values
    if all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in values):
        try:
            return np.array(values, dtype=np.int64), None
        except OverflowError:
            raise InvalidInputError("integer ids must fit in int64") from None
    raise InputDtypeError("ids must be all int or all str")


def ids_array(chunks: list[pa.Array], id_type: str, name: str) -> np.ndarray:
    """Read-only ids of validated Arrow chunks: int64 ``[rows]`` or an object array of str."""
    if id_type == "string":
        for chunk in chunks:
            offsets = np.frombuffer(chunk.buffers()[1], "<i4", len(chunk) + 1, chunk.offset * 4)
            if int(np.diff(offsets).max()) > MAX_ID_BYTES:
                raise problem(name, "ids", f"a string id is longer than {MAX_ID_BYTES} "
                                           f"UTF-8 bytes")
        ids = np.array([v for chunk in chunks for v in chunk.to_pylist()], dtype=object)
    else:
        parts = [np.frombuffer(c.buffers()[1], "<i8", len(c), c.offset * 8) for c in chunks]
        ids = (parts[0] if len(parts) == 1 else np.concatenate(parts)).astype(np.int64,
                                                                               copy=False)
    ids.setflags(write=False)
    return ids


def ids_sha256(arrays: Iterable[pa.Array]) -> str:
    """SHA-256 of the canonical id bytes of int64 or utf8 Arrow arrays, in order.

    int64: each id as 8 bytes little-endian. string: each id as its UTF-8 length (u32 LE)
    followed by its UTF-8 bytes.
    """
    sha = hashlib.sha256()
    for arr in arrays:
        sha.update(canonical_ids(arr))
    return sha.hexdigest()


def canonical_ids(arr: pa.Array) -> np.ndarray:
    """uint8 canonical bytes of one int64 / utf8 Arrow array (no nulls)."""
    n, bufs = len(arr), arr.buffers()
    if pa.types.is_int64(arr.type):
        return np.frombuffer(bufs[1], dtype="<i8", count=n, offset=arr.offset * 8).view(np.uint8)
    offsets = np.frombuffer(bufs[1], dtype="<i4", count=n + 1, offset=arr.offset * 4)
    lengths = np.diff(offsets).astype("<u4")
    data = np.frombuffer(bufs[2] or b"", dtype=np.uint8)[offsets[0]:offsets[-1]]
    out = np.empty(4 * n + data.size, dtype=np.uint8)
    record_start = (offsets[:-1] - offsets[0]) + 4 * np.arange(n)  # where each u32 goes
    prefix = (record_start[:, None] + np.arange(4)).ravel()
    out[prefix] = lengths.view(np.uint8)
    is_data = np.ones(out.size, dtype=bool)
    is_data[prefix] = False
    out[is_data] = data
    return out
