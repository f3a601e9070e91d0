"""The levels' params as a shard stores them (record batch 0's ``semq.params``, format 3.0):
each level's params blob, except that an array whose columns all appear in a later level's array
of the same name is stored as a list of those columns.

Why: a shard's semq levels are fitted on one frame (the principal axes of the shard), and a
coarse level keeps a subset of the axes a finer one keeps (``semq1``'s 418 axes are among
``semq4``'s 1,355 at d = 1536), so storing the coarse level's basis again took about a
fifth of a shard's params (1.7 of 7.9 MB). Only the container changes: each level's params
are rebuilt exactly (:meth:`CodecParams.to_bytes` gives the blob the header's
``params_sha256`` and the content digest were computed over), so digests and codes are what
they were.

``semq.params`` is a JSON array with one entry per level, in level order, each either

* the canonical base64 of the level's ``CodecParams.to_bytes()``, or
* ``{"params": <base64 of the params without the shared arrays>, "shared": {<array name>:
  [<level>, [[<first column>, <count>], ...]]}}``: array ``name`` of this level is the
  listed columns of array ``name`` of level ``<level>`` (a later level), in the listed order:
  each run is ``count`` consecutive columns; no column is listed twice, and a run never
  starts where the one before it ends (canonical: merged).

Readers rebuild levels from the last to the first, so a reference always finds its source
rebuilt (chains resolve; cycles cannot be written). Everything is checked: entry shapes,
levels, column bounds and order, the source array's dtype and rows, and the canonical form of
the whole value: the rebuilt params, packed again, must give exactly the bytes read, so the
writer's bytes are the only ones accepted. A rebuilt array is never larger than its source
(its runs are counted before anything is allocated), so the value cannot expand beyond 16
times (levels) its size, and each level is parsed once.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Sequence
from typing import Any, NoReturn

import numpy as np

from semq_transforms.codecs import CodecParams
from semq_transforms.errors import ParamsError

__all__ = ["MIN_SHARED_BYTES", "pack_params", "unb64", "unpack_params"]

#: Arrays smaller than this are always stored whole (a reference would save next to nothing).
MIN_SHARED_BYTES = 64

Fail = Callable[[str], NoReturn]


def pack_params(params: Sequence[CodecParams]) -> bytes:
    """The ``semq.params`` value for levels with ``params`` (in level order), ASCII JSON."""
    entries: list[Any] = []
    for i, level in enumerate(params):
        shared: dict[str, list[Any]] = {}
        for name, array in level.arrays.items():
            found = None if array.ndim != 2 or array.nbytes < MIN_SHARED_BYTES else next(
                ((j, runs) for j in range(i + 1, len(params))
                 if (runs := _column_runs(array, params[j].arrays.get(name))) is not None),
                None)
            if found is not None:
                shared[name] = [found[0], found[1]]
        if not shared:
            entries.append(_b64(level.to_bytes()))
            continue
        rest = CodecParams(level.codec, level.dim,
                           {k: v for k, v in level.arrays.items() if k not in shared})
        entries.append({"params": _b64(rest.to_bytes()), "shared": shared})
    return _canonical(entries)


def unpack_params(raw: bytes, levels: int, fail: Fail, *, allow_shared: bool) -> list[bytes]:
    """Each level's params blob (``CodecParams.to_bytes()``, to be checked against its codec
    by the caller) from a ``semq.params`` value ``raw`` of a shard with ``levels`` levels.
    ``allow_shared``: format 3.0 and later (2.x lists whole blobs only); then ``raw`` must be
    exactly what :func:`pack_params` writes for the rebuilt params. ``fail(detail)`` raises
    the caller's error."""
    try:
        entries = json.loads(raw.decode("ascii"), parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:
        fail(f"not a JSON array ({type(exc).__name__})")
    if not isinstance(entries, list) or len(entries) != levels:
        fail(f"must list one entry per level ({levels})")
    if _canonical(entries) != raw:
        fail("not in canonical form")
    if not allow_shared:
        if not all(isinstance(entry, str) for entry in entries):
            fail("each entry must be a base64 string")
        return [unb64(entry, f"[{i}]", fail) for i, entry in enumerate(entries)]
    params: list[CodecParams | None] = [None] * levels
    for i in reversed(range(levels)):      # a reference names a later level: rebuilt first
        entry = entries[i]
        if isinstance(entry, str):
            params[i] = _parse(unb64(entry, f"[{i}]", fail), f"[{i}]", fail)
        elif isinstance(entry, dict):
            params[i] = _rebuild(entry, i, params, fail)
        else:
            fail(f"[{i}] must be a base64 string or an object")
    rebuilt = [p for p in params if p is not None]
    if pack_params(rebuilt) != raw:
        fail("not in canonical form (not as the writer stores these params: a level stored "
             "whole that shares columns, or the reverse, or a blob in another encoding)")
    return [p.to_bytes() for p in rebuilt]


def _parse(blob: bytes, label: str, fail: Fail) -> CodecParams:
    try:
        return CodecParams.from_bytes(blob)
    except ParamsError as exc:
        fail(f"{label}: {str(exc)[:200]}")


def _rebuild(entry: dict, i: int, params: list[CodecParams | None], fail: Fail
             ) -> CodecParams:
    """Level ``i``'s params from its partial params and the shared columns of later
    levels (``params[j]`` for ``j > i``, rebuilt already)."""
    where = f"[{i}]"
    if set(entry) != {"params", "shared"} or not isinstance(entry["shared"], dict) \
            or not entry["shared"] or not isinstance(entry["params"], str):
        fail(f"{where} must be an object with a base64 'params' and a non-empty 'shared'")
    partial = _parse(unb64(entry["params"], f"{where}.params", fail), f"{where}.params", fail)
    arrays = dict(partial.arrays)
    for name, ref in entry["shared"].items():
        label = f"{where}.shared.{name[:40]}"
        if name in arrays:
            fail(f"{label}: the params also hold the array")
        if not (isinstance(ref, list) and len(ref) == 2 and type(ref[0]) is int
                and i < ref[0] < len(params) and isinstance(ref[1], list) and ref[1]):
            fail(f"{label} must be [a later level, [[first column, count], ...]]")
        later = params[ref[0]]
        source = None if later is None else later.arrays.get(name)
        if source is None or source.ndim != 2:
            fail(f"{label}: level {ref[0]} has no 2-D array {name[:40]!r}")
        arrays[name] = source[:, _columns(ref[1], source.shape[1], label, fail)]
    try:
        return CodecParams(partial.codec, partial.dim, arrays)
    except ParamsError as exc:
        fail(f"{where}: {str(exc)[:200]}")


def _columns(runs: list, available: int, label: str, fail: Fail) -> np.ndarray:
    """The column indices of ``runs`` ([[first, count], ...]: distinct columns below
    ``available``, each run starting anywhere but where the one before it ends). Checked
    before anything is allocated: at most ``available`` columns in all."""
    total, end = 0, -1
    for run in runs:
        if not (isinstance(run, list) and len(run) == 2 and all(type(v) is int for v in run)
                and 0 <= run[0] != end and run[1] >= 1 and run[0] + run[1] <= available):
            fail(f"{label}: column runs must be [first, count] pairs within the source's "
                 f"{available} columns, each starting where the one before it does not end")
        total += run[1]
        if total > available:
            fail(f"{label}: more columns than the source's {available}")
        end = run[0] + run[1]
    columns = np.concatenate([np.arange(first, first + count) for first, count in runs])
    if np.unique(columns).shape[0] != columns.shape[0]:
        fail(f"{label}: a column is listed twice")
    return columns


def _column_runs(array: np.ndarray, source: np.ndarray | None) -> list[list[int]] | None:
    """``array``'s columns as runs of ``source``'s columns ([[first, count], ...]), or None
    when they are not all there, or two are the same column (bytes compared exactly)."""
    if (source is None or source.ndim != 2 or source.dtype != array.dtype
            or source.shape[0] != array.shape[0] or source.shape[1] < array.shape[1]):
        return None
    where: dict[bytes, int] = {}
    for column in range(source.shape[1]):
        where.setdefault(source[:, column].tobytes(), column)
    runs: list[list[int]] = []
    used: set[int] = set()
    for c in range(array.shape[1]):
        found = where.get(array[:, c].tobytes())
        if found is None or found in used:
            return None
        j = found
        used.add(j)
        if runs and runs[-1][0] + runs[-1][1] == j:
            runs[-1][1] += 1
        else:
            runs.append([j, 1])
    return runs


def _canonical(entries: list) -> bytes:
    return json.dumps(entries, separators=(",", ":"), sort_keys=True).encode("ascii")


def _b64(blob: bytes) -> str:
    return base64.b64encode(blob).decode("ascii")


def unb64(text: Any, label: str, fail: Fail) -> bytes:
    """The bytes of ``text``, which must be canonical base64 (padded; re-encodes the same)."""
    try:
        blob = base64.b64decode(text, validate=True) if isinstance(text, str) else None
    except (binascii.Error, ValueError):
        blob = None
    if blob is None or _b64(blob) != text:
        fail(f"{label} is not canonical base64")
    return blob


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not allowed")
