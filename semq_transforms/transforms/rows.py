"""Rows as the job checks them, whatever they come from (a file reader or the PCollection
sink): the reasons a row is rejected, :func:`check_rows` (accepted vectors and dead letters
with a detail), the :class:`Batch` it returns, and the dead-letter file. No Beam, no I/O but
:func:`write_dead_letters`.
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from semq_transforms._urls import redact_url
from semq_transforms.format._ids import MAX_ID_BYTES
from semq_transforms.transforms._storage import fs_for, is_local

__all__ = ["DEAD_LETTER_SCHEMA", "REJECT_REASONS", "Batch", "check_rows", "write_dead_letters"]

REJECT_REASONS = ("null_id", "id_too_long", "null_vector", "wrong_dimension", "non_finite",
                  "out_of_range", "zero_vector", "duplicate_id", "bad_element")
"""Why a row is rejected, in order of precedence: a row gets the first reason that applies.
``id_too_long``: a string id of more than :data:`~semq_transforms.format._ids.MAX_ID_BYTES`
UTF-8 bytes, which a shard cannot store (``detail`` gives its length).
``out_of_range``: a finite value of a magnitude the codecs cannot encode (beyond
``max_abs_value``, see :attr:`~semq_transforms.codecs.base.Codec.max_abs_value`); its dead
letter's ``detail`` names the vector element and its value. ``duplicate_id`` is decided by a
global step over all ids (see :mod:`semq_transforms.transforms.planning`), not by
:func:`iter_split`. Every dead letter has a ``detail``: ``wrong_dimension`` "got 384, expected
768"; ``non_finite`` the first such element, "vector element 17 is nan" (a null element
reads as nan, a float64 value beyond float32's range as inf); ``duplicate_id`` the first
occurrence's file and row; the others say what was found ("the id is null").
``bad_element`` is the PCollection sink's (:mod:`~semq_transforms.transforms.sink`): an
element it cannot read as an id and a vector (its detail says what it got)."""


@dataclass(frozen=True, eq=False)
class Batch:
    """Rows read from one split: the accepted vectors and the rejected rows.

    Attributes:
        source: the file the rows come from (its URL redacted, as ``redact_url`` does).
        row_start: row number within the file of the first row read.
        rows: rows read; always ``len(ids) + len(rejected)``.
        global_row_offset: global position of row ``row_start``.
        ids: ``[n]`` ids of the accepted rows: int64, or object (``str``) for string ids.
        vectors: float32 ``[n, d]``, the accepted rows' vectors (C order).
        positions: int64 ``[n]``, global positions of the accepted rows (ascending).
        rejected: one dead letter per rejected row: ``{"id", "source", "row", "reason"}``
            (``id`` None when unknown, ``row`` the row number within the file) and
            ``"detail"`` (what was wrong with the row, see :data:`REJECT_REASONS`).
        bytes_read: bytes read from storage to produce this batch (metadata included).
    """

    source: str
    row_start: int
    rows: int
    global_row_offset: int
    ids: np.ndarray
    vectors: np.ndarray
    positions: np.ndarray
    rejected: tuple[dict[str, Any], ...] = ()
    bytes_read: int = 0

    @property
    def accepted(self) -> int:
        return int(self.ids.shape[0])

    def __repr__(self) -> str:
        return (f"Batch({self.source!r}, rows {self.row_start}..{self.row_start + self.rows}, "
                f"accepted={self.accepted}, rejected={len(self.rejected)}, "
                f"vectors={self.vectors.shape})")


def _beyond(vectors: np.ndarray, limit: float) -> np.ndarray | None:
    """bool ``[n]``: rows of float32 ``vectors`` ``[n, d]`` holding a value that is not
    within ``+/-limit`` (NaN and Inf included); None when every value is within (one min and
    one max over the batch, no mask, in that common case)."""
    if not vectors.size:
        return None
    with np.errstate(invalid="ignore"):
        if max(-float(vectors.min()), float(vectors.max())) <= limit:  # False for NaN
            return None
    return ~(np.abs(vectors) <= limit).all(axis=1)


def _out_of_range_detail(vector: np.ndarray, limit: float) -> str:
    """Names the first element of float32 ``vector`` ``[d]`` beyond ``+/-limit``."""
    column = int(np.flatnonzero(np.abs(vector) > limit)[0])
    return (f"vector element {column} is {float(vector[column]):g}; the codecs encode "
            f"magnitudes up to {limit:g}")


#: The ``detail`` of the reasons that need no more than their row to say.
_DETAILS = {"null_id": "the id is null", "null_vector": "the vector is null",
            "zero_vector": "every element is 0 (zero vectors have no direction to encode)"}


def _non_finite_detail(vector: np.ndarray) -> str:
    """Names the first NaN or +/-Inf element of float32 ``vector`` ``[d]``."""
    column = int(np.flatnonzero(~np.isfinite(vector))[0])
    return f"vector element {column} is {float(vector[column])}"


def _id_bytes(ids: np.ndarray, id_null: np.ndarray) -> np.ndarray | None:
    """int64 ``[n]``: the UTF-8 length of each string id in object ``ids`` ``[n]`` that may be
    longer than :data:`MAX_ID_BYTES` (0 elsewhere); None for integer ids or when none can be
    (a character is at most 4 bytes, so most ids are never encoded)."""
    if ids.dtype != object or not ids.size:
        return None
    chars = np.fromiter((0 if null else len(i) for i, null in zip(ids, id_null, strict=True)),
                        np.int64, count=ids.shape[0])
    maybe = np.flatnonzero(chars * 4 > MAX_ID_BYTES)
    if not maybe.size:
        return None
    size = np.zeros(ids.shape[0], np.int64)
    size[maybe] = [len(ids[i].encode("utf-8", "surrogatepass")) for i in maybe]
    return size


def check_rows(*, source: str, row_start: int, global_row_offset: int, ids: np.ndarray,
                id_null: np.ndarray, vectors: np.ndarray, vector_null: np.ndarray,
                right_length: np.ndarray, lengths: int | np.ndarray, reject_zero_vectors: bool,
                max_abs_value: float, bytes_read: int) -> Batch:
    """Validate rows and split them into accepted vectors and dead letters (``source``, the
    file, is stored redacted: dead letters are written out), each with a ``detail``.

    ``ids`` ``[n]`` (int64 or object str), ``id_null``/``vector_null``/``right_length`` bool
    ``[n]``, ``vectors`` float32 ``[n, d]``, ``lengths`` the length of each row's vector as
    read (one int for all, or int ``[n]``)."""
    n = vectors.shape[0]
    source = redact_url(source)
    reason = np.zeros(n, np.int8)  # 0: accepted, k: REJECT_REASONS[k - 1]

    def mark(mask: np.ndarray | None, name: str) -> None:
        if mask is not None:
            reason[(reason == 0) & mask] = REJECT_REASONS.index(name) + 1

    mark(id_null, "null_id")
    id_bytes = _id_bytes(ids, id_null)
    mark(None if id_bytes is None else id_bytes > MAX_ID_BYTES, "id_too_long")
    mark(vector_null, "null_vector")
    mark(~right_length | (vectors.shape[1] == 0), "wrong_dimension")  # no values: no width
    if (reason == 0).any():   # (else no value to look at: a dim far from the data's)
        beyond = _beyond(vectors, max_abs_value)   # None: every value finite and in range
        if beyond is not None:
            mark(~np.isfinite(vectors).all(axis=1), "non_finite")
            mark(beyond, "out_of_range")
        if reject_zero_vectors:
            mark(~vectors.any(axis=1), "zero_vector")
    ok = reason == 0

    def dead_letter(i: int) -> dict[str, Any]:
        name = REJECT_REASONS[reason[i] - 1]
        letter = {"id": None if id_null[i] else ids[i].item()
                  if isinstance(ids[i], np.generic) else ids[i],
                  "source": source, "row": row_start + int(i), "reason": name}
        if name == "out_of_range":
            letter["detail"] = _out_of_range_detail(vectors[i], max_abs_value)
        elif name == "non_finite":
            letter["detail"] = _non_finite_detail(vectors[i])
        elif name == "wrong_dimension":
            got = int(lengths if isinstance(lengths, int) else lengths[i])
            letter["detail"] = (f"got {got}, expected {vectors.shape[1]}" if vectors.shape[1]
                                else f"got {got}; no width is known (no row has a vector "
                                     f"to take it from)")
        elif name == "id_too_long":
            letter["detail"] = (f"the id is {int(id_bytes[i])} UTF-8 bytes; a shard stores "
                                f"at most {MAX_ID_BYTES}")
        else:
            letter["detail"] = _DETAILS[name]
        return letter

    rejected = tuple(dead_letter(i) for i in np.flatnonzero(~ok))
    if ok.all():
        accepted_ids, accepted = ids, vectors
    else:
        accepted_ids, accepted = ids[ok], vectors[ok]
    return Batch(source=source, row_start=row_start, rows=n,
                 global_row_offset=global_row_offset, ids=accepted_ids,
                 vectors=np.ascontiguousarray(accepted, dtype=np.float32),
                 positions=global_row_offset + np.flatnonzero(ok).astype(np.int64),
                 rejected=rejected, bytes_read=bytes_read)


DEAD_LETTER_SCHEMA = pa.schema([
    pa.field("id", pa.string()),        # the row's id as text (integer ids in decimal), or null
    pa.field("source", pa.string(), nullable=False),
    pa.field("row", pa.int64()),        # row number within the source file (null: a
                                        # PCollection element, which has none)
    pa.field("reason", pa.string(), nullable=False),  # one of REJECT_REASONS
    pa.field("detail", pa.string()),    # more about the reason (duplicate_id: the first row;
                                        # id_too_long: its length; out_of_range, non_finite:
                                        # the element and its value; wrong_dimension: "got
                                        # 384, expected 768"; see REJECT_REASONS)
])


def _dead_letter_order(d: Mapping[str, Any]) -> tuple:
    """Files' dead letters by (source, row); a PCollection's (no row) by id, reason, detail."""
    return (d["source"], -1 if d["row"] is None else d["row"],
            "" if d["id"] is None else str(d["id"]), d["reason"], d.get("detail") or "")


def write_dead_letters(dead_letters: Iterable[Mapping[str, Any]], dest_url: str, *,
                       storage_options: Mapping[str, Any] | None = None) -> int:
    """Write dead letters to one Parquet file at ``dest_url`` (replacing it), sorted by
    ``(source, row)``, with :data:`DEAD_LETTER_SCHEMA`; returns the number of rows. No dead
    letters still writes a file (with no rows), so its absence never means "none"."""
    rows = sorted(dead_letters, key=_dead_letter_order)
    table = pa.table({
        "id": pa.array([None if d["id"] is None else str(d["id"]) for d in rows], pa.string()),
        "source": pa.array([d["source"] for d in rows], pa.string()),
        "row": pa.array([d["row"] for d in rows], pa.int64()),
        "reason": pa.array([d["reason"] for d in rows], pa.string()),
        "detail": pa.array([d.get("detail") for d in rows], pa.string()),
    }, schema=DEAD_LETTER_SCHEMA)
    fs, path = fs_for(dest_url, storage_options)
    if is_local(fs):
        fs.makedirs(posixpath.dirname(path), exist_ok=True)
    with fs.open(path, "wb") as f:
        pq.write_table(table, f)
    return len(rows)
