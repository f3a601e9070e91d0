"""The shard header (the ``semq`` schema metadata JSON), the levels' params (record batch 0's
``semq.params`` metadata since format 2.0; columns shared between levels since 3.0,
:mod:`~semq_transforms.format._shared_params`) and the shard digests.

The header is built by :func:`build_header` and :func:`params_metadata` and parsed by
:func:`parse_header`, which treats both as untrusted: size-limited, no duplicate keys, no
NaN/Infinity, every field's type and range checked, params decoded and checked against their
codec. FORMAT.md documents every field.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NoReturn

import numpy as np

from semq_transforms.codecs import Codec, CodecParams, get_codec
from semq_transforms.codecs.base import check_chain
from semq_transforms.errors import (
    CodecConfigError,
    InputDtypeError,
    InvalidInputError,
    ParamsError,
)
from semq_transforms.format import fingerprint as fp_
from semq_transforms.format._arrowio import problem
from semq_transforms.format._shared_params import pack_params, unb64, unpack_params
from semq_transforms.format.meta import ID_TYPES, SHARD_FORMAT_VERSION

FORMAT_TAG = "semq-shard"
#: Largest header, and largest params metadata, a reader parses (the params hold a semq
#: rotation per level: 32 MiB at d = 4096 in float16, 43 MiB in base64).
MAX_HEADER_BYTES = 256 << 20
#: Key of record batch 0's custom metadata holding the levels' params (format 2.x; 1.x kept
#: them in the header, which the Arrow file stores twice).
PARAMS_KEY = "semq.params"
#: Minor versions this reader knows, per major version it reads.
KNOWN_MINOR = {1: 0, 2: 0, 3: SHARD_FORMAT_VERSION[1]}
MAX_DIM = 1 << 20
MAX_ROWS = 1 << 40
MAX_LEVELS = 16
#: First bytes of the content digest's input (see FORMAT.md, "Digests").
CONTENT_TAG = b"semq-shard-content\x00"
_HEX64 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"([0-9]{1,6})\.([0-9]{1,6})")
_KEYS = {"format", "version", "dim", "rows", "id_type", "levels", "digests", "stats"}
_LEVEL_KEYS = {"codec", "code_bytes", "column", "params_sha256"}
_LEVEL_KEYS_1 = _LEVEL_KEYS | {"params"}          # format 1.x: params in the header
_DIGEST_KEYS = {"ids", "codes", "params", "content"}
#: Optional in format 2.0: present together with the ``input_fp`` column.
_FINGERPRINT_KEY, _FINGERPRINT_DIGEST = "input_fingerprint", "fingerprints"


@dataclass(frozen=True)
class LevelHeader:
    codec: Codec
    code_bytes: int
    column: str
    params: CodecParams | None      # None only from a header read without its params
    params_sha256: str


@dataclass(frozen=True)
class Header:
    """A parsed, checked header; ``raw`` is the JSON object as stored."""

    version: tuple[int, int]
    dim: int
    rows: int
    id_type: str
    levels: tuple[LevelHeader, ...]
    ids_sha256: str
    codes_sha256: tuple[str, ...]
    content_sha256: str
    stats: dict[str, float]
    raw: dict[str, Any]
    fingerprint: str | None = None          # the input fingerprint scheme, if the shard has them
    fingerprints_sha256: str | None = None


def version_string(version: tuple[int, int] = SHARD_FORMAT_VERSION) -> str:
    return f"{version[0]}.{version[1]}"


def build_header(*, dim: int, rows: int, id_type: str, levels: Sequence[Any], ids_sha256: str,
                 codes_sha256: Sequence[str], stats: Mapping[str, float],
                 fingerprints_sha256: str | None = None) -> tuple[bytes, str]:
    """(compact, sorted-keys, ASCII JSON of the header, content digest); ``levels`` are
    EncodedLevels. Their params go to record batch 0 (:func:`params_metadata`).
    ``fingerprints_sha256``: the digest of the ``input_fp`` column, if the shard has one."""
    params_sha256 = [lv.params.digest() for lv in levels]
    content = content_sha256(dim=dim, rows=rows, id_type=id_type,
                             specs=[lv.codec.spec for lv in levels],
                             code_bytes=[lv.codes.shape[1] for lv in levels],
                             ids_sha256=ids_sha256, params_sha256=params_sha256,
                             codes_sha256=codes_sha256, fingerprints_sha256=fingerprints_sha256)
    header = {
        "format": FORMAT_TAG, "version": version_string(), "dim": dim, "rows": rows,
        "id_type": id_type, "stats": dict(stats),
        "levels": [{"codec": lv.codec.spec, "code_bytes": int(lv.codes.shape[1]),
                    "column": f"codes_{i}", "params_sha256": digest}
                   for i, (lv, digest) in enumerate(zip(levels, params_sha256))],
        "digests": {"ids": ids_sha256, "codes": list(codes_sha256), "params": params_sha256,
                    "content": content},
    }
    if fingerprints_sha256 is not None:
        header[_FINGERPRINT_KEY] = fp_.SCHEME
        header["digests"][_FINGERPRINT_DIGEST] = fingerprints_sha256
    raw = json.dumps(header, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()
    return raw, content


def params_metadata(levels: Sequence[Any]) -> bytes:
    """Record batch 0's ``semq.params`` value: each level's params, in level order, columns
    shared with a later level stored once (:func:`~semq_transforms.format._shared_params.
    pack_params`; the whole value is stored once: the header is stored twice)."""
    return pack_params([lv.params for lv in levels])


# -- digests ----------------------------------------------------------------------------------


def content_sha256(*, dim: int, rows: int, id_type: str, specs: Sequence[str],
                   code_bytes: Sequence[int], ids_sha256: str, params_sha256: Sequence[str],
                   codes_sha256: Sequence[str], fingerprints_sha256: str | None = None) -> str:
    """SHA-256 of the canonical content record (FORMAT.md, "Digests"): it commits to the
    shape, the id type and every part digest, so it never depends on container bytes. The
    input fingerprints' scheme and digest end the record only when the shard has them (a
    shard without them keeps the digest it had)."""
    record = [CONTENT_TAG, struct.pack("<IQBI", dim, rows, ID_TYPES.index(id_type), len(specs)),
              bytes.fromhex(ids_sha256)]
    for spec, width, p_sha, c_sha in zip(specs, code_bytes, params_sha256, codes_sha256):
        name = spec.encode("ascii")
        record += [struct.pack("<H", len(name)), name, struct.pack("<I", width),
                   bytes.fromhex(p_sha), bytes.fromhex(c_sha)]
    if fingerprints_sha256 is not None:
        name = fp_.SCHEME.encode("ascii")
        record += [struct.pack("<H", len(name)), name, bytes.fromhex(fingerprints_sha256)]
    return hashlib.sha256(b"".join(record)).hexdigest()


def codes_sha256(codes: np.ndarray) -> str:
    """SHA-256 of one level's codes, uint8 ``[rows, code_bytes]``, row-major."""
    return hashlib.sha256(np.ascontiguousarray(codes).data).hexdigest()


# -- parsing ----------------------------------------------------------------------------------


def parse_header(raw: bytes, name: str, params_raw: bytes | None = None, *,
                 header_only: bool = False) -> Header:
    """Parse and check the header JSON of shard ``name`` and its levels' params (untrusted).

    ``params_raw``: record batch 0's ``semq.params`` metadata (format 2.x; None if absent).
    ``header_only``: a 2.x header read without record batch 0 (levels' params None).
    """
    def fail(detail: str) -> NoReturn:
        raise problem(name, "header", detail)

    if len(raw) > MAX_HEADER_BYTES:
        fail(f"{len(raw)} bytes is more than the {MAX_HEADER_BYTES}-byte limit")
    try:
        obj = json.loads(raw.decode("utf-8"), object_pairs_hook=_no_duplicates,
                         parse_constant=_no_constant)
    except (ValueError, RecursionError) as exc:  # bad UTF-8 / JSON, dup keys, NaN, huge ints
        raise problem(name, "header", f"not valid JSON ({type(exc).__name__}: "
                                      f"{str(exc)[:120]})") from None
    if not isinstance(obj, dict):
        fail("must be a JSON object")
    if obj.get("format") != FORMAT_TAG:
        fail(f"format is {str(obj.get('format'))[:40]!r}, expected {FORMAT_TAG!r}")
    version = obj.get("version")
    match = _VERSION.fullmatch(version) if isinstance(version, str) else None
    if match is None:
        fail(f"version {str(version)[:40]!r} is not 'MAJOR.MINOR'")
    major, minor = int(match[1]), int(match[2])
    if major > SHARD_FORMAT_VERSION[0]:
        fail(f"shard format {version} was written by a newer semq-transforms (this one reads "
             f"{SHARD_FORMAT_VERSION[0]}.x); upgrade semq-transforms")
    if major not in KNOWN_MINOR:
        fail(f"shard format {version} is older than any this reader supports")
    newer_minor = minor > KNOWN_MINOR[major]
    _keys(obj, _KEYS, newer_minor, "header", fail,
          optional={_FINGERPRINT_KEY} if major > 1 else set())
    fingerprint = obj.get(_FINGERPRINT_KEY)
    if _FINGERPRINT_KEY in obj and fingerprint != fp_.SCHEME:
        fail(f"{_FINGERPRINT_KEY} is {str(fingerprint)[:40]!r}; this reader knows "
             f"{fp_.SCHEME!r}")
    dim = _int(obj["dim"], 1, MAX_DIM, "dim", fail)
    rows = _int(obj["rows"], 1, MAX_ROWS, "rows", fail)
    id_type = obj["id_type"]
    if id_type not in ID_TYPES:
        fail(f"id_type {str(id_type)[:40]!r} is not one of {list(ID_TYPES)}")
    stats = obj["stats"]
    if not isinstance(stats, dict) or not all(
            isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            for v in stats.values()):
        fail("stats must be an object of finite numbers")
    levels_raw, digests = obj["levels"], obj["digests"]
    if not isinstance(levels_raw, list) or not 1 <= len(levels_raw) <= MAX_LEVELS:
        fail(f"levels must be a list of 1 to {MAX_LEVELS} objects")
    blobs = _params_blobs(major, params_raw, levels_raw, header_only, name, fail)
    levels = tuple(_level(lv, i, dim, newer_minor, name, fail, major, blobs[i])
                   for i, lv in enumerate(levels_raw))
    if blobs[0] is not None:
        try:
            check_chain([(lv.codec, lv.params) for lv in levels])
        except (CodecConfigError, ParamsError) as exc:
            fail(f"levels: {str(exc)[:300]}")
    if not isinstance(digests, dict):
        fail("digests must be an object")
    # digests.fingerprints is there exactly when input_fingerprint is
    _keys(digests, _DIGEST_KEYS | ({_FINGERPRINT_DIGEST} if fingerprint else set()),
          newer_minor, "digests", fail)
    fingerprints_digest = (_hex(digests[_FINGERPRINT_DIGEST], f"digests.{_FINGERPRINT_DIGEST}",
                                fail) if fingerprint else None)
    ids_digest, content = _hex(digests["ids"], "digests.ids", fail), digests["content"]
    _hex(content, "digests.content", fail)
    lists = []
    for key in ("codes", "params"):
        values = digests[key]
        if not isinstance(values, list) or len(values) != len(levels):
            fail(f"digests.{key} must list one digest per level ({len(levels)})")
        lists.append(tuple(_hex(v, f"digests.{key}[{i}]", fail) for i, v in enumerate(values)))
    for i, (lv, listed) in enumerate(zip(levels, lists[1])):
        if lv.params_sha256 != listed:
            fail(f"levels[{i}].params_sha256 differs from digests.params[{i}]")
    return Header((major, minor), dim, rows, id_type, levels, ids_digest, lists[0], content,
                  dict(stats), obj, fingerprint, fingerprints_digest)


def _params_blobs(major: int, params_raw: bytes | None, levels_raw: list, header_only: bool,
                  name: str, fail) -> list[bytes | None]:
    """Each level's params blob (``CodecParams.to_bytes()``, not yet parsed): from the header
    (1.x) or from record batch 0 (2.x; 3.x with columns shared between levels). None for
    every level of a 2.x/3.x header read without record batch 0."""
    if major == 1:
        if params_raw is not None:
            fail(f"format 1.x keeps params in the header; record batch 0 must not carry "
                 f"{PARAMS_KEY!r}")
        # (a level that is no object, or has no params, fails its own checks in _level)
        return [unb64(lv["params"], f"levels[{i}].params", fail)
                if isinstance(lv, dict) and "params" in lv else None
                for i, lv in enumerate(levels_raw)]
    if params_raw is None:
        if header_only:
            return [None] * len(levels_raw)
        raise problem(name, "params", f"record batch 0 lacks the levels' params "
                                      f"({PARAMS_KEY!r} metadata)")
    if len(params_raw) > MAX_HEADER_BYTES:
        raise problem(name, "params", f"{len(params_raw)} bytes is more than the "
                                      f"{MAX_HEADER_BYTES}-byte limit")

    def params_fail(detail: str) -> NoReturn:
        raise problem(name, "params", f"{PARAMS_KEY!r}: {detail}")

    return list(unpack_params(params_raw, len(levels_raw), params_fail,
                              allow_shared=major >= 3))


def _level(obj: Any, i: int, dim: int, lenient: bool, name: str, fail, major: int,
           blob: bytes | None) -> LevelHeader:
    where = f"levels[{i}]"
    if not isinstance(obj, dict):
        fail(f"{where} must be an object")
    _keys(obj, _LEVEL_KEYS_1 if major == 1 else _LEVEL_KEYS, lenient, where, fail)
    spec = obj["codec"]
    if not isinstance(spec, str) or not 0 < len(spec) <= 64:
        fail(f"{where}.codec must be a codec spec string")
    try:
        codec = get_codec(spec)
    except ValueError as exc:  # CodecConfigError, UnknownCodecError, absurd bit widths
        fail(f"{where}.codec: {str(exc)[:200]} (a newer semq-transforms may know it)")
    if codec.spec != spec:
        fail(f"{where}.codec {str(spec)[:40]!r} is not a canonical codec spec")
    expected = codec.code_bytes(dim)
    code_bytes = _int(obj["code_bytes"], 1, 1 << 31, f"{where}.code_bytes", fail)
    if code_bytes != expected:
        fail(f"{where}.code_bytes is {code_bytes}; {spec} at dim {dim} has {expected}")
    if obj["column"] != f"codes_{i}":
        fail(f"{where}.column must be 'codes_{i}'")
    params_sha256 = _hex(obj["params_sha256"], f"{where}.params_sha256", fail)
    if blob is None:                           # a header read without record batch 0
        return LevelHeader(codec, code_bytes, obj["column"], None, params_sha256)
    label = f"{where}.params" if major == 1 else f"{PARAMS_KEY}[{i}]"
    try:
        params = CodecParams.from_bytes(blob)
        codec.check_params(params)
    except ParamsError as exc:
        raise problem(name, f"params of level {i} ({spec})", str(exc)) from None
    if params.to_bytes() != blob:
        raise problem(name, f"params of level {i} ({spec})", "blob is not in canonical form")
    if params.dim != dim:
        fail(f"{label} were fitted for dim {params.dim}, the shard has dim {dim}")
    return LevelHeader(codec, code_bytes, obj["column"], params, params_sha256)


def _keys(obj: dict, expected: set[str], lenient: bool, where: str, fail, *,
          optional: Sequence[str] | set[str] = ()) -> None:
    missing, extra = expected - obj.keys(), obj.keys() - expected - set(optional)
    if missing:
        fail(f"{where} lacks {sorted(missing)}")
    if extra and not lenient:
        fail(f"{where} has unknown keys {sorted(extra)[:5]} (allowed only in a newer minor "
             f"version)")


def _int(value: Any, lo: int, hi: int, what: str, fail) -> int:
    if not isinstance(value, int) or isinstance(value, bool) or not lo <= value <= hi:
        fail(f"{what} must be an integer in [{lo}, {hi}], got {str(value)[:40]!r}")
    return value


def _hex(value: Any, what: str, fail) -> str:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        fail(f"{what} must be 64 lowercase hex digits")
    return value


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate key")
    return out


def _no_constant(token: str) -> Any:
    raise ValueError(f"{token} is not allowed")


def check_stats(stats: Mapping[str, Any] | None) -> dict[str, float]:
    """The caller's stats as a JSON-safe dict of finite numbers, or an input error."""
    out: dict[str, float] = {}
    for key, value in dict(stats or {}).items():
        if not isinstance(key, str):
            raise InputDtypeError(f"stats keys must be strings, got {key!r}")
        if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.number)):
            raise InputDtypeError(f"stats[{key!r}] must be a number, got "
                                  f"{type(value).__name__}")
        number = int(value) if isinstance(value, (int, np.integer)) else float(value)
        if not math.isfinite(number):
            raise InvalidInputError(f"stats[{key!r}] must be finite, got {value!r}")
        out[key] = number
    return out
