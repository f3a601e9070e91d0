"""Canonical Huffman codes for many small tables, packed and unpacked row-parallel (numpy).

Used by ``semqr`` (:mod:`semq_transforms.codecs.refine`): every row of a shard is a sequence of
``k`` symbols, symbol ``j`` coded with the table that row chose for position ``j``. Tables are
stored as code lengths only (canonical codes are rebuilt from them), concatenated:

* ``sizes`` int ``[T]``: symbols per table (table ``t`` covers symbol offsets ``0..sizes[t]-1``);
* ``lengths`` uint8 ``[sum(sizes)]``: the code length of each symbol, ``1..MAX_CODE_BITS``.

A valid table is a *complete* prefix code (Kraft sum exactly 1), so any bit string decodes:
corrupt or hostile codes give wrong symbols, never a crash or an endless loop.

Bits are written most significant first, rows independently; packing works on whole
``[rows, k]`` arrays at once, unpacking walks the ``k`` positions with every row in step.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

#: Longest code a table may hold (decoding peeks this many bits at once).
MAX_CODE_BITS = 24


def code_lengths(counts: np.ndarray) -> np.ndarray:
    """Huffman code lengths for one table.

    Args:
        counts: float64 ``[m]``, ``m >= 2``, every entry > 0 (callers add a pseudo-count).
    Returns:
        int64 ``[m]`` lengths of an optimal complete prefix code. Ties are broken by symbol
        index (deterministic).
    """
    m = counts.shape[0]
    heap = [(float(c), i) for i, c in enumerate(counts)]
    heapq.heapify(heap)
    parent = [0] * (2 * m - 1)
    node = m
    while len(heap) > 1:
        a_count, a = heapq.heappop(heap)
        b_count, b = heapq.heappop(heap)
        parent[a] = parent[b] = node
        heapq.heappush(heap, (a_count + b_count, node))
        node += 1
    depth = [0] * (2 * m - 1)
    for i in range(2 * m - 3, -1, -1):   # children are numbered below their parent
        depth[i] = depth[parent[i]] + 1
    return np.array(depth[:m], dtype=np.int64)


def limited_code_lengths(counts: np.ndarray, pseudo: float) -> np.ndarray:
    """:func:`code_lengths` of ``counts + pseudo``, with the pseudo-count raised (x4 at a
    time) until no code is longer than :data:`MAX_CODE_BITS`."""
    while True:
        lengths = code_lengths(counts + pseudo)
        if lengths.max() <= MAX_CODE_BITS:
            return lengths
        pseudo *= 4


def kraft_complete(lengths: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """bool ``[T]``: which tables' lengths (each ``1..MAX_CODE_BITS``) form a complete code."""
    units = np.left_shift(np.int64(1), MAX_CODE_BITS - lengths.astype(np.int64))
    starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    sums = np.add.reduceat(units, starts) if units.size else np.zeros(0, np.int64)
    return (sizes > 0) & (sums == (1 << MAX_CODE_BITS))


@dataclass(frozen=True)
class CodeBook:
    """Canonical codes of concatenated tables, ready to pack and unpack.

    Attributes:
        starts: int64 ``[T]``, offset of each table in the concatenated symbol arrays.
        sizes: int64 ``[T]``.
        lengths: int64 ``[S]`` code length per symbol.
        codes: int64 ``[S]`` code value per symbol (``lengths`` bits).
        ends: int64 ``[T, MAX_CODE_BITS]``; ``ends[t, l-1]`` is the first ``MAX_CODE_BITS``-
            bit window value above every code of length ``<= l`` (non-decreasing in ``l``).
        first: int64 ``[T, MAX_CODE_BITS]`` first code value of each length.
        base: int64 ``[T, MAX_CODE_BITS]`` index (into ``symbols``) of that first code.
        symbols: int64 ``[S]`` symbol offsets (within their table) in canonical order.
    """

    starts: np.ndarray
    sizes: np.ndarray
    lengths: np.ndarray
    codes: np.ndarray
    ends: np.ndarray
    first: np.ndarray
    base: np.ndarray
    symbols: np.ndarray

    @classmethod
    def build(cls, lengths: np.ndarray, sizes: np.ndarray) -> CodeBook:
        """Canonical codes from checked lengths (see :func:`kraft_complete`)."""
        sizes = sizes.astype(np.int64)
        lengths = lengths.astype(np.int64)
        t_count = sizes.shape[0]
        starts = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
        table = np.repeat(np.arange(t_count), sizes)
        offset = np.arange(lengths.shape[0]) - starts[table]
        order = np.lexsort((offset, lengths, table))            # canonical order
        count = np.zeros((t_count, MAX_CODE_BITS + 1), dtype=np.int64)
        np.add.at(count, (table, lengths), 1)
        first = np.zeros_like(count)
        code = np.zeros(t_count, dtype=np.int64)
        for length in range(1, MAX_CODE_BITS + 1):
            first[:, length] = code
            code = (code + count[:, length]) << 1
        group_start = np.concatenate(
            [np.zeros((t_count, 1), np.int64), np.cumsum(count, axis=1)[:, :-1]], axis=1)
        base = starts[:, None] + group_start                  # index into canonical order
        rank = np.arange(lengths.shape[0]) - base[table[order], lengths[order]]
        codes = np.empty_like(lengths)
        codes[order] = first[table[order], lengths[order]] + rank
        shift = MAX_CODE_BITS - np.arange(MAX_CODE_BITS + 1)
        ends = (first + count) << np.maximum(shift, 0)
        return cls(starts=starts, sizes=sizes, lengths=lengths, codes=codes,
                   ends=ends[:, 1:], first=first[:, 1:], base=base[:, 1:],
                   symbols=offset[order])


def pack(book: CodeBook, tables: np.ndarray, symbols: np.ndarray, nbytes: int) -> np.ndarray:
    """Write each row's symbols, in column order, into ``nbytes`` bytes.

    Args:
        tables: int64 ``[n, k]`` table of each position; symbols: int64 ``[n, k]`` offsets
            within those tables (callers checked the ranges and that every row fits).
    Returns:
        uint8 ``[n, nbytes]``, zero-padded.
    """
    n, k = symbols.shape
    flat = book.starts[tables] + symbols
    lengths = book.lengths[flat]
    codes = book.codes[flat]
    ends = np.cumsum(lengths, axis=1)
    bits = np.zeros((n, nbytes * 8), dtype=np.uint8)
    rows = np.broadcast_to(np.arange(n)[:, None], (n, k))
    for b in range(MAX_CODE_BITS):
        used = lengths > b
        if not used.any():
            break
        position = ends - lengths + b
        bit = (codes >> np.maximum(lengths - 1 - b, 0)) & 1
        bits[rows[used], position[used]] = bit[used]
    return np.packbits(bits, axis=1)


def unpack(book: CodeBook, tables: np.ndarray, packed: np.ndarray
           ) -> tuple[np.ndarray, np.ndarray]:
    """Inverse of :func:`pack`.

    Args:
        tables: int64 ``[n, k]`` table of each position (as the writer chose them).
        packed: uint8 ``[n, nbytes]``.
    Returns:
        ``symbols`` int64 ``[n, k]`` and ``used`` int64 ``[n]``, the bits each row consumed
        (more than ``8 * nbytes`` means the row is corrupt: its tail was read as zeros).
    """
    n, k = tables.shape
    nbytes = packed.shape[1]
    padded = np.zeros((n, nbytes + 4), dtype=np.uint8)
    padded[:, :nbytes] = packed
    words = padded.astype(np.int64)
    limit = 8 * nbytes
    position = np.zeros(n, dtype=np.int64)
    rows = np.arange(n)
    out = np.empty((n, k), dtype=np.int64)
    for j in range(k):
        at = np.minimum(position, limit)
        byte = at >> 3
        window = ((words[rows, byte] << 24) | (words[rows, byte + 1] << 16)
                  | (words[rows, byte + 2] << 8) | words[rows, byte + 3])
        peek = (window >> (8 - (at & 7))) & ((1 << MAX_CODE_BITS) - 1)
        t = tables[:, j]
        length = 1 + (peek[:, None] >= book.ends[t, :-1]).sum(axis=1)
        index = book.base[t, length - 1] + (peek >> (MAX_CODE_BITS - length)) \
            - book.first[t, length - 1]
        out[:, j] = book.symbols[index]
        position += length
    return out, position
