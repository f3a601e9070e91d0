"""Bit packing shared by the codecs. Pure numpy; all layouts are little-endian in bit order.

* nibbles: two 4-bit codes per byte, element ``2i`` in the low nibble, ``2i + 1`` in the high.
* bits: one bit per element, element ``i`` in bit ``i % 8`` of byte ``i // 8``
  (``np.packbits(..., bitorder="little")``).
* bit planes: codes of different widths, columns sorted by width (widest first). Plane ``j``
  holds bit ``j`` of every column whose width exceeds ``j``; planes follow each other from
  ``j = 0`` up and the concatenated bits are packed as in *bits*.
"""

from __future__ import annotations

import numpy as np


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """uint8 ``[n, m]`` with values < 16 -> uint8 ``[n, ceil(m / 2)]``."""
    n, m = codes.shape
    if m % 2:
        codes = np.concatenate([codes, np.zeros((n, 1), np.uint8)], axis=1)
    low, high = codes[:, 0::2], codes[:, 1::2]
    return low | (high << 4)


def unpack_nibbles(packed: np.ndarray, m: int) -> np.ndarray:
    """Inverse of :func:`pack_nibbles`: uint8 ``[n, ceil(m / 2)]`` -> uint8 ``[n, m]``."""
    out = np.empty((packed.shape[0], packed.shape[1] * 2), dtype=np.uint8)
    np.bitwise_and(packed, 0x0F, out=out[:, 0::2])
    np.right_shift(packed, 4, out=out[:, 1::2])
    return out[:, :m]


def plane_sizes(widths: np.ndarray) -> list[int]:
    """For non-increasing ``widths`` [k], the number of columns in each bit plane."""
    return [int(np.count_nonzero(widths > j)) for j in range(int(widths.max(initial=0)))]


def pack_planes(codes: np.ndarray, sizes: list[int]) -> np.ndarray:
    """uint16 ``[n, k]`` codes (column ``c`` below ``2**width[c]``) -> uint8 packed planes.

    Returns uint8 ``[n, ceil(sum(sizes) / 8)]``.
    """
    n = codes.shape[0]
    # np.packbits takes any nonzero byte as a 1 bit, so one AND per plane does the work.
    bits = np.empty((n, sum(sizes)), dtype=np.uint8)
    low = codes.astype(np.uint8)
    high = (codes[:, :sizes[8]] >> 8).astype(np.uint8) if len(sizes) > 8 else None
    offset = 0
    for j, k in enumerate(sizes):
        source, bit = (low, j) if j < 8 else (high, j - 8)
        np.bitwise_and(source[:, :k], np.uint8(1 << bit), out=bits[:, offset:offset + k])
        offset += k
    return np.packbits(bits, axis=1, bitorder="little")


def unpack_planes(packed: np.ndarray, sizes: list[int], k: int) -> np.ndarray:
    """Inverse of :func:`pack_planes`: uint8 packed planes -> uint16 ``[n, k]`` codes."""
    total = sum(sizes)
    bits = np.unpackbits(packed, axis=1, count=total, bitorder="little").view(np.bool_)
    codes = np.zeros((packed.shape[0], k), dtype=np.uint16)
    scratch = np.empty_like(codes)
    offset = 0
    for j, kj in enumerate(sizes):
        np.left_shift(bits[:, offset:offset + kj], j, out=scratch[:, :kj], dtype=np.uint16)
        np.bitwise_or(codes[:, :kj], scratch[:, :kj], out=codes[:, :kj])
        offset += kj
    return codes
