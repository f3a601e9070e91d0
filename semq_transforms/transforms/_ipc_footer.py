"""Row counts of the record batches of an Arrow IPC file, from metadata only.

pyarrow exposes an IPC file's schema and its number of record batches, but a batch's row count
only by reading that batch, body included. Planning splits must not read the data, so this
module reads the file footer (a flatbuffer ``Footer`` listing one ``Block`` per record batch)
and, per batch, only the batch's metadata message (a flatbuffer ``Message`` whose
``RecordBatch`` header holds ``length``): a few hundred bytes per batch instead of its body.

Layout (Arrow columnar format, "IPC File Format")::

    "ARROW1" <pad to 8> <stream of messages> <Footer flatbuffer> <int32 footer size> "ARROW1"
    Block     = struct { offset: int64; metaDataLength: int32; <pad 4>; bodyLength: int64 }
    Message at Block.offset = [0xFFFFFFFF] <int32 flatbuffer size> <Message flatbuffer> ...

Flatbuffer slots used: Footer.recordBatches (slot 3); Message.header_type (slot 1, 3 =
RecordBatch) and Message.header (slot 2); RecordBatch.length (slot 0). Every offset is bounds
checked; anything inconsistent raises ``ValueError`` (the caller names the file).
"""

from __future__ import annotations

import struct
from collections.abc import Callable

MAGIC = b"ARROW1"
_TRAILER = 4 + len(MAGIC)   # int32 footer size + magic
_BLOCK_SIZE = 24
_RECORD_BATCH_HEADER = 3
_CONTINUATION = 0xFFFFFFFF
_MAX_FOOTER_BYTES = 64 << 20
_MAX_METADATA_BYTES = 16 << 20

# read_range(start, stop) -> the file's bytes [start, stop)
ReadRange = Callable[[int, int], bytes]


class _Table:
    """One flatbuffer table inside ``buf`` (read-only, bounds checked)."""

    def __init__(self, buf: bytes, pos: int) -> None:
        self.buf = buf
        self.pos = _check(buf, pos, 4)
        vtable = pos - struct.unpack_from("<i", buf, pos)[0]
        _check(buf, vtable, 4)
        vt_size, _ = struct.unpack_from("<HH", buf, vtable)
        if vt_size < 4 or vt_size % 2:
            raise ValueError(f"malformed flatbuffer vtable (size {vt_size})")
        _check(buf, vtable, vt_size)
        self.vtable, self.vt_size = vtable, vt_size

    def _field(self, slot: int) -> int:
        """Absolute position of field ``slot``, or 0 when absent (default value)."""
        entry = 4 + 2 * slot
        if entry + 2 > self.vt_size:
            return 0
        offset = struct.unpack_from("<H", self.buf, self.vtable + entry)[0]
        return self.pos + offset if offset else 0

    def scalar(self, slot: int, fmt: str, default: int = 0) -> int:
        pos = self._field(slot)
        if not pos:
            return default
        _check(self.buf, pos, struct.calcsize(fmt))
        return struct.unpack_from(fmt, self.buf, pos)[0]

    def _indirect(self, slot: int) -> int:
        pos = self._field(slot)
        if not pos:
            return 0
        _check(self.buf, pos, 4)
        return _check(self.buf, pos + struct.unpack_from("<I", self.buf, pos)[0], 4)

    def table(self, slot: int) -> _Table | None:
        pos = self._indirect(slot)
        return _Table(self.buf, pos) if pos else None

    def struct_vector(self, slot: int, item_size: int) -> list[bytes]:
        pos = self._indirect(slot)
        if not pos:
            return []
        count = struct.unpack_from("<I", self.buf, pos)[0]
        _check(self.buf, pos + 4, count * item_size)
        return [self.buf[pos + 4 + i * item_size: pos + 4 + (i + 1) * item_size]
                for i in range(count)]


def _check(buf: bytes, pos: int, size: int) -> int:
    if pos < 0 or size < 0 or pos + size > len(buf):
        raise ValueError(f"flatbuffer offset {pos} (+{size} bytes) is outside the "
                         f"{len(buf)}-byte metadata")
    return pos


def _root(buf: bytes) -> _Table:
    _check(buf, 0, 4)
    return _Table(buf, struct.unpack_from("<I", buf, 0)[0])


def record_batch_rows(read_range: ReadRange, size: int) -> list[int]:
    """Row count of each record batch of the Arrow IPC file of ``size`` bytes, in file order.

    Reads the trailer, the footer, and each batch's metadata message: never a batch body
    (the magic at the start of the file is not checked).
    Raises ``ValueError`` if the file is not an Arrow IPC file or its metadata is malformed.
    """
    trailer = read_range(size - _TRAILER, size) if size >= 8 + _TRAILER else b""
    if len(trailer) != _TRAILER or trailer[4:] != MAGIC:
        raise ValueError("not an Arrow IPC file, or a truncated one (no ARROW1 magic at the "
                         "end; the IPC stream format is not supported, write the file format)")
    footer_size = struct.unpack_from("<i", trailer, 0)[0]
    footer_start = size - _TRAILER - footer_size
    if not 0 < footer_size <= _MAX_FOOTER_BYTES or footer_start < 8:
        raise ValueError(f"Arrow IPC footer size {footer_size} does not fit a {size}-byte file")
    footer = _root(read_range(footer_start, size - _TRAILER))
    rows = []
    for number, block in enumerate(footer.struct_vector(3, _BLOCK_SIZE)):
        offset, meta_len, _, body_len = struct.unpack("<qiiq", block)
        if (offset < 8 or not 8 <= meta_len <= _MAX_METADATA_BYTES or body_len < 0
                or offset + meta_len + body_len > footer_start):
            raise ValueError(f"record batch {number}: block (offset {offset}, metadata "
                             f"{meta_len} bytes, body {body_len} bytes) lies outside the data")
        meta = read_range(offset, offset + meta_len)
        if len(meta) != meta_len:
            raise ValueError(f"record batch {number}: truncated metadata")
        start = 8 if struct.unpack_from("<I", meta, 0)[0] == _CONTINUATION else 4
        message = _root(meta[start:])
        if message.scalar(1, "<B") != _RECORD_BATCH_HEADER:
            raise ValueError(f"record batch {number}: the block does not hold a record batch")
        header = message.table(2)
        length = header.scalar(0, "<q") if header is not None else -1
        if length < 0:
            raise ValueError(f"record batch {number}: no valid row count ({length})")
        rows.append(int(length))
    return rows
