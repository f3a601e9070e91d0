"""Arrow columns to numpy for the input stage: list vectors to float32 ``[n, dim]`` with
null and length masks, id columns to int64 or str arrays."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from semq_transforms.transforms._storage import int64_ids


def to_float32(values: pa.Array) -> np.ndarray:
    """Float values as float32 (nulls become NaN; float64 beyond float32's range becomes
    +/-Inf, so both end up rejected as non-finite)."""
    if pa.types.is_float16(values.type):
        values = values.cast(pa.float32())
    array = values.to_numpy(zero_copy_only=False)
    with np.errstate(over="ignore"):
        return array.astype(np.float32, copy=False)


def most_common(lengths: np.ndarray) -> int:
    """The most common positive value of int ``lengths`` ``[n]`` (the smallest on a tie), 0
    when there is none: an empty vector gives no width."""
    lengths = lengths[lengths > 0]
    if not lengths.size:
        return 0
    values, counts = np.unique(lengths, return_counts=True)
    return int(values[np.argmax(counts)])


def zero_rows(n: int, dim: int) -> np.ndarray:
    """float32 zeros ``[n, dim]`` for rows that are all rejected, taking one row's memory (a
    read-only view: a ``dim`` far from the data's must not cost ``n * dim``)."""
    return np.broadcast_to(np.zeros((1, dim), np.float32), (n, dim))


def vector_lengths(column: pa.Array) -> int | np.ndarray:
    """The length of each vector of a list column: the width of a ``fixed_size_list``, else
    int64 ``[n]`` (null rows' entries are meaningless): what a ``wrong_dimension`` dead letter
    says it got."""
    if pa.types.is_fixed_size_list(column.type):
        return int(column.type.list_size)
    return np.diff(column.offsets.to_numpy().astype(np.int64, copy=False))


def vectors_from_arrow(column: pa.Array, dim: int | None
                        ) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """``(vectors float32 [n, dim], null bool [n], right_length bool [n], dim)`` from a list
    column; rows that are null or of another length hold zeros (a read-only view when no
    row has the length)."""
    n = len(column)
    null = ~column.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_fixed_size_list(column.type):
        width = column.type.list_size
        dim = width if dim is None else dim
        if width != dim:
            return zero_rows(n, dim), null, np.zeros(n, bool), dim
        flat = to_float32(column.values.slice(column.offset * width, n * width))
        return flat.reshape(n, width), null, np.ones(n, bool), dim
    offsets = column.offsets.to_numpy().astype(np.int64, copy=False)
    lengths = np.diff(offsets)
    if dim is None:
        dim = most_common(lengths[~null])
    right_length = (lengths == dim) & ~null
    first = int(offsets[0])
    flat = to_float32(column.values.slice(first, int(offsets[-1]) - first))
    if right_length.all():  # the common case: one contiguous block of n * dim values
        return flat.reshape(n, dim), null, right_length, dim
    if not right_length.any():
        return zero_rows(n, dim), null, right_length, dim
    vectors = np.zeros((n, dim), np.float32)
    gather = (offsets[:-1][right_length] - first)[:, None] + np.arange(dim)
    vectors[right_length] = flat[gather]
    return vectors, null, right_length, dim


def ids_from_arrow(column: pa.Array, *, url: str,
                   row_start: int) -> tuple[np.ndarray, np.ndarray]:
    """``(ids [n], null bool [n])``: int64 for integer columns, object (str) for strings.
    ``url`` and ``row_start`` (the file row of the first id) name a uint64 id above int64."""
    if pa.types.is_dictionary(column.type):
        column = column.dictionary_decode()
    null = ~column.is_valid().to_numpy(zero_copy_only=False)
    if pa.types.is_integer(column.type):
        values = column.fill_null(0)
        if pa.types.is_uint64(values.type):
            return int64_ids(values.to_numpy(), url, row_start), null
        return values.cast(pa.int64()).to_numpy(), null
    ids = column.cast(pa.large_string()).to_numpy(zero_copy_only=False)
    return np.asarray(ids, dtype=object), null
