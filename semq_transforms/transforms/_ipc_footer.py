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

from semq_transforms._flatbuffer import I64, U8, FlatBuffer

MAGIC = b"ARROW1"
_TRAILER = 4 + len(MAGIC)   # int32 footer size + magic
_BLOCK = struct.Struct("<qi4xq")  # offset, metaDataLength, padding, bodyLength
_RECORD_BATCH_HEADER = 3
_CONTINUATION = 0xFFFFFFFF
_MAX_FOOTER_BYTES = 64 << 20
_MAX_METADATA_BYTES = 16 << 20

# read_range(start, stop) -> the file's bytes [start, stop)
ReadRange = Callable[[int, int], bytes]


def _flatbuffer(buf: bytes, lo: int = 0) -> FlatBuffer:
    """The flatbuffer in ``buf[lo:]``; malformed references raise ``ValueError``."""
    return FlatBuffer(buf, lo, len(buf),
                      lambda detail: ValueError(f"malformed Arrow IPC metadata ({detail})"))


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
    footer = _flatbuffer(read_range(footer_start, size - _TRAILER))
    first, count = footer.vector(footer.root(), 3, _BLOCK.size)
    rows = []
    for number in range(count):
        offset, meta_len, body_len = footer.struct(_BLOCK, first + number * _BLOCK.size)
        if (offset < 8 or not 8 <= meta_len <= _MAX_METADATA_BYTES or body_len < 0
                or offset + meta_len + body_len > footer_start):
            raise ValueError(f"record batch {number}: block (offset {offset}, metadata "
                             f"{meta_len} bytes, body {body_len} bytes) lies outside the data")
        meta = read_range(offset, offset + meta_len)
        if len(meta) != meta_len:
            raise ValueError(f"record batch {number}: truncated metadata")
        start = 8 if struct.unpack_from("<I", meta, 0)[0] == _CONTINUATION else 4
        message = _flatbuffer(meta, start)
        root = message.root()
        if message.scalar(root, 1, U8, 0) != _RECORD_BATCH_HEADER:
            raise ValueError(f"record batch {number}: the block does not hold a record batch")
        header = message.table(root, 2)
        length = message.scalar(header, 0, I64, 0) if header is not None else -1
        if length < 0:
            raise ValueError(f"record batch {number}: no valid row count ({length})")
        rows.append(int(length))
    return rows
