"""Storage helpers of the input stage: filesystems, exact range reads, NPY headers, and file
views that count or cache bytes. Errors name the file (InputReadError)."""

from __future__ import annotations

import contextlib
import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import fsspec
import numpy as np
from numpy.lib import format as npy_format

from semq_transforms.errors import InputReadError, SemqError


def fs_for(url: str, storage_options: Mapping[str, Any] | None,
           filesystem: Any = None) -> tuple[Any, str]:
    """``(filesystem, path)`` for ``url``: ``filesystem`` when it serves the URL's protocol
    (building an fsspec filesystem is not free, and some options turn its cache off), else a
    filesystem built from ``storage_options``."""
    if filesystem is not None:
        protocol = fsspec.core.split_protocol(url)[0] or "file"
        served = filesystem.protocol
        if protocol in (served if isinstance(served, tuple) else (served,)):
            return filesystem, filesystem._strip_protocol(url)
    return fsspec.core.url_to_fs(url, **dict(storage_options or {}))


@dataclass(frozen=True)
class NpyHeader:
    """A checked NPY header: array shape and dtype, and where the data starts."""

    shape: tuple[int, ...]
    dtype: np.dtype
    offset: int

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape[1:], dtype=np.int64)) * self.dtype.itemsize


def npy_header(fs: Any, path: str, url: str, ids: bool = False) -> NpyHeader:
    """Parse and check an NPY header (no pickle: object dtypes are refused)."""
    # A 4 KiB readahead block holds the header of any ordinary array: one request.
    with fs.open(path, "rb", block_size=4096, cache_type="readahead") as f:
        size = file_size(f, fs, path)
        try:
            version = npy_format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = npy_format.read_array_header_1_0(f)
            elif version == (2, 0):
                shape, fortran, dtype = npy_format.read_array_header_2_0(f)
            else:
                raise ValueError(f"NPY format version {version} is not supported (1.0, 2.0)")
        except (ValueError, EOFError, SyntaxError) as exc:
            raise InputReadError(f"cannot read {url}: not a valid NPY file ({exc})") from exc
        offset = f.tell()
    what = "ids file" if ids else "NPY input"
    if ids:
        if len(shape) != 1 or dtype.kind not in "iuU":
            raise InputReadError(f"cannot read {url}: an {what} must be a 1-D integer or "
                                 f"string array, got shape {shape} dtype {dtype}")
    elif len(shape) != 2 or dtype.kind != "f" or dtype.itemsize not in (4, 8) or shape[1] < 1:
        raise InputReadError(f"cannot read {url}: an {what} must be a 2-D float32 or float64 "
                             f"array with at least one column, got shape {shape} dtype {dtype}")
    if fortran and len(shape) > 1:
        raise InputReadError(f"cannot read {url}: the array is in Fortran order, so rows are "
                             f"not contiguous; save it with np.ascontiguousarray")
    header = NpyHeader(tuple(int(n) for n in shape), dtype, offset)
    expected = header.offset + header.shape[0] * header.row_bytes
    if size != expected:
        raise InputReadError(f"cannot read {url}: truncated or padded NPY file: the header "
                             f"says {shape} {dtype} ({expected} bytes), the file has {size}")
    return header


def file_size(f: Any, fs: Any, path: str) -> int:
    """Size of an open fsspec file (known from opening it), else asked from the store."""
    size = getattr(f, "size", None)
    return int(size) if isinstance(size, int) else int(fs.size(path))


class TailCachedFile(io.RawIOBase):
    """A seekable read-only view of ``f`` (``size`` bytes) that reads the last ``tail`` bytes
    once and serves reads inside them from memory (footers live there)."""

    def __init__(self, f: Any, size: int, tail: int = 64 << 10) -> None:
        super().__init__()
        self._f, self.size, self._pos = f, size, 0
        self._tail_start = max(0, size - tail)
        f.seek(self._tail_start)
        self._tail = f.read(size - self._tail_start)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._pos, io.SEEK_END: self.size}[whence]
        self._pos = max(0, base + offset)
        return self._pos

    def read_range(self, start: int, stop: int) -> bytes:
        stop = min(stop, self.size)
        if start >= self._tail_start:
            return self._tail[start - self._tail_start: stop - self._tail_start]
        self._f.seek(start)
        return self._f.read(max(0, stop - start))

    def read(self, size: int | None = -1) -> bytes:
        stop = self.size if size is None or size < 0 else self._pos + size
        data = self.read_range(self._pos, stop)
        self._pos += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)


def is_local(fs: Any) -> bool:
    """Whether ``fs`` is the local disk (``file://`` / ``local://``)."""
    protocols = fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)
    return "file" in protocols or "local" in protocols


def read_bytes(fs: Any, path: str, start: int, end: int) -> bytes:
    """Bytes ``[start, end)`` of a file: one range request. Keywords matter: s3fs's
    ``cat_file`` takes ``version_id`` as its second positional argument."""
    return fs.cat_file(path, start=start, end=end)


#: pyarrow's message for null entries of a fixed_size_list column in Parquet, and the advice.
_NULL_FIXED_LISTS = "Expected all lists to be of size"
_NULL_FIXED_LISTS_HINT = ("; pyarrow cannot read null entries of a fixed_size_list column from "
                          "Parquet (apache/arrow#35692): write the vectors as list<float>, or "
                          "without null vectors")


@contextlib.contextmanager
def read_errors(url: str) -> Iterator[None]:
    """Turn any failure of a storage or decoding library inside the block into
    InputReadError naming ``url`` (our own errors pass through unchanged).

    The new error's message is redacted and it has no chained cause: a library's error
    (botocore's, aiohttp's ``ClientResponseError``) quotes the URL as it was given, signed
    query included, and a runner prints the whole chain of a failed bundle.
    """
    try:
        yield
    except SemqError:
        raise
    except FileNotFoundError:
        raise InputReadError(f"cannot read {url}: file not found") from None
    except Exception as exc:  # noqa: BLE001  (every library's error, re-raised redacted)
        text = str(exc)
        hint = _NULL_FIXED_LISTS_HINT if _NULL_FIXED_LISTS in text else ""
        raise InputReadError(f"cannot read {url}: {type(exc).__name__}: {text}{hint}"
                             ) from None


def guard(url: str, step: Any, *args: Any) -> Any:
    """Run ``step(*args)`` under :func:`read_errors`."""
    with read_errors(url):
        return step(*args)


class CountingFile(io.RawIOBase):
    """A read-only view of a binary file that counts the bytes handed out."""

    def __init__(self, f: Any) -> None:
        super().__init__()
        self._f = f
        self.count = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return self._f.seek(offset, whence)

    def tell(self) -> int:
        return self._f.tell()

    def read(self, size: int | None = -1) -> bytes:
        data = self._f.read(-1 if size is None else size)
        self.count += len(data)
        return data

    def readinto(self, buffer: Any) -> int:
        data = self.read(len(memoryview(buffer)))
        memoryview(buffer).cast("B")[: len(data)] = data
        return len(data)


def read_range(fs: Any, path: str, url: str, header: NpyHeader, start: int,
                stop: int) -> bytes:
    """Rows ``[start, stop)`` of an NPY file: one range read of exactly their bytes."""
    begin = header.offset + start * header.row_bytes
    end = header.offset + stop * header.row_bytes
    data = guard(url, read_bytes, fs, path, begin, end)
    if len(data) != end - begin:
        raise InputReadError(f"cannot read {url}: rows {start}..{stop} (bytes {begin}..{end}) "
                             f"came back as {len(data)} bytes; the file is truncated")
    return data


def int64_ids(raw: np.ndarray, url: str, row_start: int) -> np.ndarray:
    """Integer ids ``raw`` ``[n]`` (rows ``row_start`` on of ``url``) as int64; uint64 ids
    above int64 fail the file, naming the first such row."""
    if raw.dtype.kind == "u" and raw.dtype.itemsize == 8 and raw.size:
        over = np.flatnonzero(raw > np.iinfo(np.int64).max)
        if over.size:
            raise InputReadError(f"cannot read {url}: id {int(raw[over[0]])} at row "
                                 f"{row_start + int(over[0])} does not fit int64 (uint64 ids "
                                 f"above 2**63 - 1)")
    return raw.astype(np.int64)
