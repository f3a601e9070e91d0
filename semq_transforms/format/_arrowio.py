"""Bounded reading and structural checks of Arrow IPC files from untrusted storage.

pyarrow verifies every flatbuffer it parses and checks that buffers lie inside the message
body, but two things must be settled before it is allowed to read a record batch:

* compression: a compressed IPC buffer starts with its *declared* uncompressed length, and
  pyarrow allocates that much before decompressing. pyarrow does not expose whether a batch is
  compressed, so :func:`check_batches` reads the ``compression`` field of each record batch
  message itself (the footer's block list, then each message's flatbuffer) and refuses any;
* sizes: the file is never larger than the caller's ``max_bytes``, and everything pyarrow sees
  is an in-memory buffer of that file, so a length field can only point inside it.

Once the structure is checked, :func:`check_stream_copy` makes sure the stream half of the file
(the leading schema message and the batches that follow it) says what the footer says.

The flatbuffer reader here is minimal and read-only: every read is bounds-checked against the
flatbuffer's own byte range, nothing recurses, and every vector length is checked against the
bytes available before it is used.
"""

from __future__ import annotations

import hashlib
import os
import struct
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO

import fsspec
import pyarrow as pa

from semq_transforms import _flatbuffer as fb_
from semq_transforms.errors import FormatError

FILE_MAGIC = b"ARROW1"
#: Bytes at the end of an IPC file: int32 footer length, then the magic.
_TAIL = 10
#: Smallest possible file: leading magic + padding (8), trailing length + magic (10).
_MIN_FILE = 8 + _TAIL
_CONTINUATION = 0xFFFFFFFF
_END_OF_STREAM = b"\xff\xff\xff\xff\x00\x00\x00\x00"
_METADATA_V5 = 4  # org.apache.arrow.flatbuf.MetadataVersion.V5
_HEADER_RECORD_BATCH = 3  # MessageHeader union type of RecordBatch
_LITTLE_ENDIAN = 0  # org.apache.arrow.flatbuf.Endianness.Little
_U8, _I16, _I32, _I64 = fb_.U8, fb_.I16, fb_.I32, fb_.I64
_BLOCK = struct.Struct("<qi4xq")  # Block struct: offset, metaDataLength, padding, bodyLength


def problem(name: str, part: str, detail: str, cls: type[FormatError] = FormatError) -> FormatError:
    """A :class:`FormatError` (or subclass) saying ``shard <name>: <part>: <detail>``.

    The instance also carries ``problem = "<part>: <detail>"`` (what ``verify_shard`` lists).
    """
    exc = cls(f"shard {name!r}: {part}: {detail}")
    exc.problem = f"{part}: {detail}"  # type: ignore[attr-defined]
    return exc


# -- sources --------------------------------------------------------------------------------


@dataclass
class Source:
    """An open shard source: a binary file object, the name errors use, and its size when
    known (None for a stream that cannot seek)."""

    file: BinaryIO
    name: str
    size: int | None


@contextmanager
def open_source(source: Any, max_bytes: int) -> Iterator[Source]:
    """Open an fsspec URL / local path, or take a readable binary file object as it is.

    A file larger than ``max_bytes`` is refused before any of it is read. Errors opening the
    file (missing, no permission) propagate as the file system raises them (``OSError``).
    """
    if isinstance(source, (str, os.PathLike)):
        name = os.fspath(source)
        fs, fs_path = fsspec.core.url_to_fs(name)
        size = int(fs.size(fs_path))
        _check_size(name, size, max_bytes)
        with fs.open(fs_path, "rb") as f:
            yield Source(f, name, size)
        return
    if not hasattr(source, "read"):
        raise TypeError(f"a shard source must be a URL, a path or a readable binary file "
                        f"object, got {type(source).__name__}")
    name = source_name(source)
    size = None
    if _seekable(source):
        start = source.tell()
        size = source.seek(0, os.SEEK_END) - start
        source.seek(start)
        _check_size(name, size, max_bytes)
    yield Source(source, name, size)


def source_name(source: Any) -> str:
    """What errors call ``source``: the URL / path, or a file object's ``name``."""
    if isinstance(source, (str, os.PathLike)):
        return os.fspath(source)
    for attr in ("name", "path"):  # io / local files; fsspec buffered files
        name = getattr(source, attr, None)
        if isinstance(name, str) and name:
            return name
    return f"<{type(source).__name__}>"


def _seekable(f: Any) -> bool:
    try:
        return bool(f.seekable())
    except (AttributeError, OSError, ValueError):
        return False


def _check_size(name: str, size: int, max_bytes: int) -> None:
    if size > max_bytes:
        raise problem(name, "file", f"{size} bytes is more than max_bytes={max_bytes}; refusing "
                                    f"to read it (raise max_bytes if the shard is trusted)")


def read_all(src: Source, max_bytes: int) -> bytes:
    """The whole file, at most ``max_bytes`` (a stream that runs longer is refused)."""
    if src.size is not None:
        data = _read(src.file, src.size)
        if len(data) != src.size:
            raise problem(src.name, "file", f"read {len(data)} bytes, expected {src.size} "
                                            f"(truncated or changed while reading)")
        return data
    data = _read(src.file, max_bytes + 1)
    _check_size(src.name, len(data), max_bytes)
    return data


def read_head_and_tail(src: Source, max_footer: int, max_bytes: int) -> tuple[bytes, int]:
    """(the first 8 bytes and the footer region (footer, length, magic) of the file, joined;
    the file's size): enough to parse the footer's schema without reading any record batch."""
    if src.size is None:  # a stream that cannot seek: read it (bounded) and cut
        data = read_all(src, max_bytes)
        footer_len = footer_length(data[-_TAIL:], len(data), max_footer, src.name)
        return data[:8] + data[len(data) - _TAIL - footer_len:], len(data)
    start = src.file.tell()
    tail = _read_at(src, start + max(src.size - _TAIL, 0), min(_TAIL, src.size))
    footer_len = footer_length(tail, src.size, max_footer, src.name)
    head = _read_at(src, start, 8)
    footer = _read_at(src, start + src.size - _TAIL - footer_len, footer_len)
    return head + footer + tail, src.size


def _read_at(src: Source, offset: int, length: int) -> bytes:
    src.file.seek(offset)
    data = _read(src.file, length)
    if len(data) != length:
        raise problem(src.name, "file", f"short read at offset {offset} (truncated or changed "
                                        f"while reading)")
    return data


def _read(f: Any, length: int) -> bytes:
    chunks, got = [], 0
    while got < length:
        chunk = f.read(length - got)
        if not chunk:
            break
        chunks.append(bytes(chunk))
        got += len(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


@contextmanager
def open_dest(dest: Any) -> Iterator[Any]:
    if isinstance(dest, (str, os.PathLike)):
        with fsspec.open(os.fspath(dest), "wb", auto_mkdir=True) as f:
            yield f
    elif hasattr(dest, "write"):
        yield dest
    else:
        raise TypeError(f"dest must be a URL, a path or a writable binary file object, got "
                        f"{type(dest).__name__}")


class HashingSink:
    """What pyarrow writes into: passes bytes on to ``raw`` and hashes and counts them."""

    def __init__(self, raw: Any) -> None:
        self.raw, self.sha, self.nbytes, self.closed = raw, hashlib.sha256(), 0, False

    def write(self, data: Any) -> int:
        view = memoryview(data).cast("B")
        self.sha.update(view)
        done = 0
        while done < len(view):  # raw (unbuffered) files may write less than asked
            written = self.raw.write(view[done:])
            if written is None:  # buffered file objects take everything
                break
            if written <= 0:
                raise OSError("the destination file object accepted no bytes")
            done += written
        self.nbytes += len(view)
        return len(view)

    def flush(self) -> None:
        pass


# -- the IPC file structure -------------------------------------------------------------------


@dataclass(frozen=True)
class Block:
    """One footer entry: where a record batch message sits."""

    offset: int
    metadata_length: int
    body_length: int


def footer_length(tail: bytes, file_size: int, max_footer: int, name: str) -> int:
    """Check the trailing magic of an IPC file and return the footer length it declares."""
    if file_size < _MIN_FILE:
        raise problem(name, "file", f"{file_size} bytes is too short for an Arrow IPC file")
    if tail[-len(FILE_MAGIC):] != FILE_MAGIC:
        raise problem(name, "container", "not an Arrow IPC file (no trailing ARROW1 magic)")
    (length,) = _I32.unpack_from(tail, 0)
    if not 0 < length <= min(max_footer, file_size - _MIN_FILE):
        raise problem(name, "container", f"footer length {length} is impossible for a file of "
                                         f"{file_size} bytes (limit {max_footer})")
    return length


def parse_footer(data: bytes, file_size: int, max_footer: int, name: str, *,
                 allow_no_batches: bool = False) -> tuple[int, list[Block]]:
    """Check the file's magic and footer; return the footer's offset and its record batches.

    ``data`` is the whole file, or its first 8 bytes joined to its footer region (what
    :func:`read_head_and_tail` returns); ``file_size`` is the whole file's size. Refuses: a
    bad magic, a footer that is not metadata V5, big-endian data, dictionary batches, no
    record batches (unless ``allow_no_batches``), and blocks that are unaligned or overlap
    the footer.
    """
    footer_len = footer_length(data[-_TAIL:], file_size, max_footer, name)
    if data[:len(FILE_MAGIC)] != FILE_MAGIC or len(data) < 8 + footer_len + _TAIL:
        raise problem(name, "container", "not an Arrow IPC file (no leading ARROW1 magic)")
    footer_start = file_size - _TAIL - footer_len  # in the file
    lo = len(data) - _TAIL - footer_len  # in data
    fb = _flatbuffer(data, lo, lo + footer_len, "footer", name)
    root = fb.root()
    if fb.scalar(root, 0, _I16, 0) != _METADATA_V5:
        raise problem(name, "container", "footer is not Arrow metadata version V5")
    schema = fb.table(root, 1)
    if schema is None:
        raise problem(name, "container", "footer has no schema")
    if fb.scalar(schema, 0, _I16, _LITTLE_ENDIAN) != _LITTLE_ENDIAN:
        raise problem(name, "container", "data is big-endian; semq files are little-endian")
    if fb.vector(root, 2, _BLOCK.size)[1]:
        raise problem(name, "container", "has dictionary batches; semq files have none")
    start, count = fb.vector(root, 3, _BLOCK.size)
    if count == 0 and not allow_no_batches:
        raise problem(name, "container", "has no record batches")
    blocks = []
    for i in range(count):
        offset, meta_len, body_len = fb.struct(_BLOCK, start + i * _BLOCK.size)
        if (offset < 8 or offset % 8 or meta_len < 8 or meta_len % 8 or body_len < 0
                or offset + meta_len + body_len > footer_start):
            raise problem(name, "container", f"record batch block {i} (offset {offset}, "
                                             f"lengths {meta_len}+{body_len}) is out of bounds")
        blocks.append(Block(offset, meta_len, body_len))
    return footer_start, blocks


def check_batches(data: bytes, blocks: list[Block], max_rows: int, name: str, *,
                  min_rows: int = 1) -> list[int]:
    """Read each record batch message's flatbuffer (before pyarrow does) and return the batch
    row counts. Refuses compressed batches, counts outside ``[min_rows, max_rows]`` and any
    message that is not a V5 record batch whose lengths agree with its footer block."""
    rows = []
    for i, block in enumerate(blocks):
        where = f"record batch {i}"
        cont, fb_len = struct.unpack_from("<Ii", data, block.offset)
        if cont != _CONTINUATION or fb_len + 8 != block.metadata_length:
            raise problem(name, "container", f"{where}: message prefix does not match its block")
        lo = block.offset + 8
        fb = _flatbuffer(data, lo, lo + fb_len, where, name)
        msg = fb.root()
        if fb.scalar(msg, 0, _I16, 0) != _METADATA_V5:
            raise problem(name, "container", f"{where}: not Arrow metadata version V5")
        if fb.scalar(msg, 1, _U8, 0) != _HEADER_RECORD_BATCH:
            raise problem(name, "container", f"{where}: message is not a record batch")
        if fb.scalar(msg, 3, _I64, 0) != block.body_length:
            raise problem(name, "container", f"{where}: body length does not match its block")
        batch = fb.table(msg, 2)
        if batch is None:
            raise problem(name, "container", f"{where}: message has no record batch header")
        if fb.table(batch, 3) is not None:
            raise problem(name, "container", f"{where} is compressed; semq files are never "
                                             f"compressed, refusing before decompression")
        if i and fb.vector(msg, 4, 4)[1]:          # Message.custom_metadata
            raise problem(name, "container", f"{where} carries custom metadata; only the "
                                             f"first record batch may")
        length = fb.scalar(batch, 0, _I64, 0)
        if not min_rows <= length <= max_rows:
            raise problem(name, "container", f"{where} has {length} rows; expected {min_rows} "
                                             f"to {max_rows}")
        rows.append(length)
    return rows


def check_stream_copy(data: bytes, blocks: list[Block], footer_start: int, schema: Any,
                      name: str) -> None:
    """Check that the stream half of the IPC file ``data`` (what a stream reader reads, from
    byte 8 on) says what its footer says: the leading schema message equals ``schema`` (the
    footer's, metadata included), the record batches follow it back to back in footer
    order, and only the end-of-stream marker lies between them and the footer. A file whose
    two copies disagree would show other rows or metadata to other readers."""
    mismatch = problem(name, "container", "the schema message at the start of the file "
                                          "differs from the footer's schema")
    if len(data) < 16:
        raise mismatch
    cont, meta_len = struct.unpack_from("<Ii", data, 8)
    end = 16 + meta_len
    if cont != _CONTINUATION or meta_len <= 0 or meta_len % 8 or end > footer_start:
        raise mismatch
    try:
        message = pa.ipc.read_message(pa.py_buffer(data).slice(8, end - 8))
        same = (message.type == "schema" and not message.body.size
                and pa.ipc.read_schema(message).equals(schema, check_metadata=True))
    except (pa.ArrowException, OSError, ValueError):
        same = False
    if not same:
        raise mismatch
    for i, block in enumerate(blocks):
        if block.offset != end:
            raise problem(name, "container", f"record batch {i} is at offset {block.offset}; "
                                             f"the stream continues at {end}")
        end = block.offset + block.metadata_length + block.body_length
    if end + 8 != footer_start or data[end:end + 8] != _END_OF_STREAM:
        raise problem(name, "container", "the bytes between the last record batch and the "
                                         "footer are not the end-of-stream marker")


def _flatbuffer(data: bytes, lo: int, hi: int, what: str, name: str) -> fb_.FlatBuffer:
    """The flatbuffer in ``data[lo:hi]``; malformed references are FormatErrors naming the
    shard and ``what`` (the footer, or a record batch)."""
    return fb_.FlatBuffer(data, lo, hi, lambda detail: problem(
        name, "container", f"{what} flatbuffer is malformed ({detail})"))
