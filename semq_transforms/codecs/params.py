"""Fitted, per-shard codec parameters and their exact serialization.

:class:`CodecParams` holds everything a codec needs to encode, decode and score one shard:
the codec spec, the vector dimension, and a few named numpy arrays (means, rotation, scales).
It has two exact round trips:

* ``to_bytes()`` / ``from_bytes()``: a compact binary blob (see ``PARAMS_MAGIC`` below) that
  is safe to read from untrusted storage: every length, offset, dtype and shape is checked
  before any array is built, and nothing is ever unpickled.
* ``to_json()`` / ``from_json()``: JSON-safe data (arrays as base64 of their little-endian
  bytes).

Both are deterministic: the same params give the same bytes, so ``digest()`` (SHA-256 of
``to_bytes()``) identifies a fit.
"""

from __future__ import annotations

import base64
import hashlib
import json
import struct
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np

from semq_transforms.errors import ParamsError

#: First 8 bytes of a serialized params blob; the trailing digit is the blob's major version.
PARAMS_MAGIC = b"SEMQPRM1"
#: Largest header a reader accepts (the header is a short JSON object).
MAX_HEADER_BYTES = 1 << 20
#: Largest single array a reader accepts (a 16384 x 16384 float32 rotation is 1 GiB).
MAX_ARRAY_BYTES = 1 << 30
#: dtypes an array may have; all stored little-endian.
ALLOWED_DTYPES = {"<f2": np.float16, "<f4": np.float32, "<f8": np.float64, "|u1": np.uint8,
                  "<u2": np.uint16, "<i4": np.int32, "<i8": np.int64}

_HEADER = struct.Struct("<8sI")  # magic, header length


def _frozen_le(array: np.ndarray) -> np.ndarray:
    """A read-only, C-contiguous, little-endian copy of ``array`` with an allowed dtype.

    The copy is a view of an immutable ``bytes`` object, so it cannot be made writable again.
    """
    arr = np.asarray(array)
    dtype = arr.dtype.newbyteorder("<")
    if dtype.str not in ALLOWED_DTYPES:
        raise ParamsError(
            f"params array dtype {arr.dtype} is not allowed; use one of {sorted(ALLOWED_DTYPES)}"
        )
    raw = np.ascontiguousarray(arr, dtype=dtype).tobytes()
    return np.frombuffer(raw, dtype=dtype).reshape(arr.shape)


@dataclass(frozen=True, eq=False)
class CodecParams:
    """Parameters one codec fitted on one shard.

    Attributes:
        codec: the codec's spec string, e.g. ``"semq4"``.
        dim: the vector dimension ``d`` the params were fitted for.
        arrays: named read-only arrays (little-endian); their names and shapes are the codec's.
    """

    codec: str
    dim: int
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.codec, str) or not self.codec:
            raise ParamsError(f"params codec must be a non-empty spec string, got {self.codec!r}")
        if not isinstance(self.dim, int) or isinstance(self.dim, bool) or self.dim < 1:
            raise ParamsError(f"params dim must be a positive int, got {self.dim!r}")
        frozen = {str(k): _frozen_le(v) for k, v in sorted(self.arrays.items())}
        object.__setattr__(self, "arrays", MappingProxyType(frozen))

    def __getitem__(self, name: str) -> np.ndarray:
        try:
            return self.arrays[name]
        except KeyError:
            raise ParamsError(
                f"{self.codec} params have no array {name!r}; they have {sorted(self.arrays)}"
            ) from None

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CodecParams):
            return NotImplemented
        return self.to_bytes() == other.to_bytes()

    def __hash__(self) -> int:
        return hash(self.to_bytes())

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}: {v.dtype.str}{list(v.shape)}" for k, v in self.arrays.items())
        return f"CodecParams(codec={self.codec!r}, dim={self.dim}, arrays={{{shapes}}})"

    @property
    def nbytes(self) -> int:
        """Bytes of array data held (what storing these params costs, roughly)."""
        return sum(a.nbytes for a in self.arrays.values())

    # -- binary ---------------------------------------------------------------------------

    def _header(self) -> tuple[dict[str, Any], list[bytes]]:
        entries, blobs, offset = [], [], 0
        for name, arr in self.arrays.items():
            raw = arr.tobytes(order="C")
            entries.append({"name": name, "dtype": arr.dtype.str, "shape": list(arr.shape),
                            "offset": offset, "nbytes": len(raw)})
            blobs.append(raw)
            offset += len(raw)
        return {"codec": self.codec, "dim": self.dim, "arrays": entries}, blobs

    def to_bytes(self) -> bytes:
        """Serialize to a deterministic binary blob: magic, u32 header length, JSON header, data."""
        header, blobs = self._header()
        head = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
        return _HEADER.pack(PARAMS_MAGIC, len(head)) + head + b"".join(blobs)

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview) -> CodecParams:
        """Parse a blob written by :meth:`to_bytes`, checking every length before reading.

        Raises:
            ParamsError: the blob is truncated, has the wrong magic or version, or its header
                does not describe its data exactly.
        """
        data = bytes(data)
        if len(data) < _HEADER.size:
            raise ParamsError(f"params blob is {len(data)} bytes; shorter than its header")
        magic, head_len = _HEADER.unpack_from(data)
        if magic[:7] != PARAMS_MAGIC[:7]:
            raise ParamsError(f"params blob magic is {magic!r}, expected {PARAMS_MAGIC!r}")
        if magic != PARAMS_MAGIC:
            raise ParamsError(
                f"params blob version {magic[7:]!r} is not supported by this reader "
                f"(it reads {PARAMS_MAGIC[7:]!r}); upgrade semq-transforms"
            )
        if head_len > MAX_HEADER_BYTES or _HEADER.size + head_len > len(data):
            raise ParamsError(f"params header length {head_len} exceeds the blob ({len(data)} B)")
        try:
            header = json.loads(data[_HEADER.size:_HEADER.size + head_len])
        except (ValueError, RecursionError) as exc:  # bad UTF-8/JSON, huge ints, deep nesting
            raise ParamsError(f"params header is not valid JSON: {type(exc).__name__}") from None
        body = memoryview(data)[_HEADER.size + head_len:]
        return cls._from_header(header, lambda e: body[e["offset"]:e["offset"] + e["nbytes"]],
                                body_len=len(body))

    @classmethod
    def _from_header(cls, header: Any, read, *, body_len: int | None) -> CodecParams:
        if not isinstance(header, dict) or set(header) != {"codec", "dim", "arrays"}:
            raise ParamsError("params header must be an object with keys codec, dim, arrays")
        entries = header["arrays"]
        if not isinstance(entries, list):
            raise ParamsError("params header 'arrays' must be a list")
        arrays, expect_offset = {}, 0
        for i, entry in enumerate(entries):
            name, dtype, shape, nbytes = _check_entry(entry, i)
            if body_len is not None:
                if entry["offset"] != expect_offset:
                    raise ParamsError(f"params array {name!r} offset {entry['offset']} is not "
                                      f"the expected {expect_offset}")
                if expect_offset + nbytes > body_len:
                    raise ParamsError(f"params array {name!r} runs past the end of the blob")
                expect_offset += nbytes
            raw = read(entry)
            if len(raw) != nbytes:
                raise ParamsError(f"params array {name!r} has {len(raw)} bytes, header says "
                                  f"{nbytes}")
            if name in arrays:
                raise ParamsError(f"params array {name!r} appears twice")
            arrays[name] = np.frombuffer(raw, dtype=dtype).reshape(shape)
        if body_len is not None and expect_offset != body_len:
            raise ParamsError(f"params blob has {body_len - expect_offset} trailing bytes")
        return cls(codec=header["codec"], dim=header["dim"], arrays=arrays)

    # -- JSON -----------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict; arrays are base64 of their little-endian bytes."""
        header, blobs = self._header()
        for entry, raw in zip(header["arrays"], blobs):
            del entry["offset"]
            entry["data"] = base64.b64encode(raw).decode("ascii")
        return header

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> CodecParams:
        """Inverse of :meth:`to_json`; validates like :meth:`from_bytes`."""
        if not isinstance(obj, Mapping):
            raise ParamsError(f"params JSON must be an object, got {type(obj).__name__}")
        entries = obj.get("arrays")
        if not isinstance(entries, list):
            raise ParamsError("params JSON 'arrays' must be a list")
        fixed = []
        for i, entry in enumerate(entries):
            if not isinstance(entry, dict) or not isinstance(entry.get("data"), str):
                raise ParamsError(f"params JSON array #{i} needs a base64 'data' string")
            try:
                raw = base64.b64decode(entry["data"], validate=True)
            except ValueError as exc:
                raise ParamsError(f"params JSON array #{i} data is not base64: {exc}") from None
            fixed.append({**{k: v for k, v in entry.items() if k != "data"}, "offset": 0,
                          "_raw": raw})
        header = {"codec": obj.get("codec"), "dim": obj.get("dim"),
                  "arrays": [{k: v for k, v in e.items() if k != "_raw"} for e in fixed]}
        raws = iter([e["_raw"] for e in fixed])
        return cls._from_header(header, lambda _e: next(raws), body_len=None)

    def digest(self) -> str:
        """Hex SHA-256 of :meth:`to_bytes`."""
        return hashlib.sha256(self.to_bytes()).hexdigest()


def _check_entry(entry: Any, i: int) -> tuple[str, np.dtype, tuple[int, ...], int]:
    if not isinstance(entry, dict):
        raise ParamsError(f"params array entry #{i} must be an object")
    name, dtype, shape = entry.get("name"), entry.get("dtype"), entry.get("shape")
    offset, nbytes = entry.get("offset"), entry.get("nbytes")
    if not isinstance(name, str) or not name:
        raise ParamsError(f"params array entry #{i} has no name")
    if not isinstance(dtype, str) or dtype not in ALLOWED_DTYPES:
        raise ParamsError(f"params array {name!r} dtype {dtype!r} is not one of "
                          f"{sorted(ALLOWED_DTYPES)}")
    if (not isinstance(shape, list) or len(shape) > 4
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s for s in shape)):
        raise ParamsError(f"params array {name!r} shape {shape!r} is not a list of <= 4 sizes")
    for label, value in (("offset", offset), ("nbytes", nbytes)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ParamsError(f"params array {name!r} {label} {value!r} is not a size")
    np_dtype = np.dtype(ALLOWED_DTYPES[dtype]).newbyteorder("<")
    expected = np_dtype.itemsize
    for s in shape:
        expected *= s
        if expected > MAX_ARRAY_BYTES:
            raise ParamsError(f"params array {name!r} shape {shape} is larger than "
                              f"{MAX_ARRAY_BYTES} bytes")
    if nbytes != expected:
        raise ParamsError(f"params array {name!r} nbytes {nbytes} does not match shape {shape} "
                          f"of {dtype} ({expected} bytes)")
    return name, np_dtype, tuple(shape), nbytes
