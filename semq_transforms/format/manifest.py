"""The Arrow manifest: one table per index version, one row per shard file.

A manifest is an Arrow IPC file (uncompressed) whose rows are the shards' :class:`ShardMeta`
and whose schema metadata key ``semq.manifest`` holds the version-level fields as compact JSON
with sorted keys. ``FORMAT.md`` beside this file ("Manifest and index layout") is the specification; in short:

* :data:`MANIFEST_SCHEMA` is the only definition of the columns (writer and reader use it).
* ``id_min`` / ``id_max`` are strings in both id types: the decimal form of the integer
  (``"-12"``, no ``+``, no leading zeros) for ``int64`` ids, the id itself for ``string`` ids.
  One column type keeps the schema fixed whatever the id type.
* ``digest`` = SHA-256 of the canonical JSON (sorted keys, no spaces, UTF-8, no NaN) of
  ``{"manifest": <metadata without created_at and digest>, "shards": <every row, every
  column>}``. ``created_at`` is left out on purpose: it is the one field that makes the bytes
  of two otherwise identical commits differ, and the digest identifies the content.
* A reader treats the bytes as untrusted: size limit, exact schema, strict JSON, version rule
  (newer major refused with an "upgrade" message, newer minor read), digest recomputed, every
  field type-checked; every failure is a :class:`~semq_transforms.errors.FormatError`
  (:class:`~semq_transforms.errors.IntegrityError` for a digest mismatch).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

import semq_transforms
from semq_transforms.errors import FormatError, IntegrityError
from semq_transforms.format import _arrowio as arrowio
from semq_transforms.format.meta import ID_TYPES, MANIFEST_FORMAT_VERSION, LevelMeta, ShardMeta

#: Schema metadata key holding the manifest's version-level fields (canonical JSON).
MANIFEST_METADATA_KEY = b"semq.manifest"
#: Metadata keys the digest does not cover: the wall-clock time, and the digest itself.
DIGEST_EXCLUDED_KEYS = frozenset({"created_at", "digest"})
#: A reader refuses larger manifests (about 600,000 shards at ~450 bytes per row).
MAX_MANIFEST_BYTES = 256 * 2**20

#: The manifest's columns, one row per shard. The only definition of the schema.
MANIFEST_SCHEMA = pa.schema([
    pa.field("path", pa.utf8(), nullable=False),             # relative to the index root
    pa.field("rows", pa.int64(), nullable=False),
    pa.field("file_bytes", pa.int64(), nullable=False),
    pa.field("code_bytes_per_row", pa.int32(), nullable=False),  # sum over the levels
    pa.field("codecs", pa.list_(pa.utf8()), nullable=False),     # scan level first
    pa.field("code_bytes", pa.list_(pa.int32()), nullable=False),  # per level
    pa.field("params_sha256", pa.list_(pa.utf8()), nullable=False),  # per level
    pa.field("content_sha256", pa.utf8(), nullable=False),
    pa.field("file_sha256", pa.utf8(), nullable=False),
    pa.field("id_type", pa.utf8(), nullable=False),           # "int64" | "string"
    pa.field("id_min", pa.utf8(), nullable=False),            # decimal for int64 ids
    pa.field("id_max", pa.utf8(), nullable=False),
    pa.field("stats", pa.utf8(), nullable=False),             # canonical JSON object
    pa.field("validation", pa.utf8(), nullable=False),        # canonical JSON object
])

#: Metadata keys a manifest of this format version holds, all required.
METADATA_KEYS = frozenset({
    "format_version", "version", "dim", "codecs", "created_by", "created_at", "run_id",
    "parent_version", "input_fingerprint", "rows", "digest",
})

_INT64_MAX = 2**63 - 1
_INT32_MAX = 2**31 - 1
_HEX64 = re.compile(r"[0-9a-f]{64}")
_RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_PATH_PART = re.compile(r"[A-Za-z0-9._-]+")
_DECIMAL = re.compile(r"-?(0|[1-9][0-9]{0,18})")
_FORMAT_VERSION = re.compile(r"([0-9]{1,6})\.([0-9]{1,6})")
_CREATED_AT = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,6})?Z")
# What malformed bytes can make pyarrow or the json module raise while a manifest is decoded.
_DECODE_ERRORS = (pa.ArrowException, OSError, ValueError, TypeError, KeyError, IndexError,
                  AttributeError, OverflowError, RecursionError, MemoryError)


def canonical_json(obj: Any) -> bytes:
    """Canonical JSON bytes: sorted keys, no spaces, UTF-8, NaN/Infinity refused."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def compute_digest(metadata: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> str:
    """Hex SHA-256 of a manifest: every metadata key but :data:`DIGEST_EXCLUDED_KEYS`, and
    every column of every row (``Table.to_pylist()`` order), as canonical JSON.

    Covering whatever keys and columns are present (not a fixed list) lets a reader check the
    digest of a newer-minor manifest that added fields it does not know.
    """
    covered = {key: value for key, value in metadata.items() if key not in DIGEST_EXCLUDED_KEYS}
    return hashlib.sha256(canonical_json({"manifest": covered, "shards": list(rows)})).hexdigest()


def check_rel_path(path: Any, what: str = "path") -> str:
    """Return ``path`` if it is a safe relative path inside an index, else raise FormatError.

    Safe: a non-empty str of ``/``-separated parts, each 1+ of ``[A-Za-z0-9._-]`` and none
    ``.`` or ``..``. Nothing else: no leading ``/``, ``\\``, ``:`` (URL scheme, drive letter),
    ``%`` (an HTTP server decodes ``%2e%2e`` to ``..``), ``?`` or ``#`` (a query or fragment
    to an HTTP filesystem), glob characters, white space or non-ASCII look-alikes. Every path
    the writers make (``runs/<run_id>/shard-00000.semq``, ``manifests/...``) is of this form.
    """
    if not isinstance(path, str) or not path:
        raise FormatError(f"{what} must be a non-empty relative path string, got {path!r}")
    if len(path) > 1024:
        raise FormatError(f"{what} is {len(path)} characters long, the limit is 1024: {path!r}")
    parts = path.split("/")
    if any(part in (".", "..") for part in parts):
        raise FormatError(f"{what} must not contain '.' or '..' parts, got {path!r}")
    if not all(_PATH_PART.fullmatch(part) for part in parts):
        raise FormatError(f"{what} must be a relative path of '/'-separated non-empty parts "
                          f"of [A-Za-z0-9._-] (no leading '/', no '%', ':', '?', '\\'), got "
                          f"{path!r}")
    return path


def check_run_id(run_id: Any) -> str:
    """Return ``run_id`` if it is 1-128 of ``[A-Za-z0-9._-]`` starting alphanumeric."""
    if not isinstance(run_id, str) or not _RUN_ID.fullmatch(run_id):
        raise FormatError(f"run_id must be 1-128 characters of [A-Za-z0-9._-] starting with a "
                          f"letter or digit (it names a folder), got {run_id!r}")
    return run_id


def utc_now_iso() -> str:
    """The current UTC time as ISO 8601 with microseconds and ``Z``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(frozen=True)
class Manifest:
    """One committed index version: its shards and version-level fields.

    Build a new one with :meth:`new` (which fills ``created_by``, ``created_at`` and
    ``digest``); read one with :meth:`from_bytes`. Construction validates every field and
    raises :class:`FormatError`; ``dataclasses.replace`` keeps the old digest, so
    :meth:`to_table` refuses the result (build with :meth:`new` instead).

    Attributes:
        version: index version number, >= 1.
        dim: vector dimension of every shard.
        codecs: codec specs of the levels, scan level first; every shard has exactly these.
        run_id: the ingestion run that committed the version.
        parent_version: the version this one was committed on top of (None for the first).
        input_fingerprint: caller's identifier of the input data (e.g. a digest), or None.
        created_by: ``"semq-transforms <version>"`` of the writer.
        created_at: UTC ISO 8601 (``2026-11-22T10:00:00.000000Z``); not covered by the digest.
        shards: the shards, in manifest row order.
        digest: hex SHA-256 (see the module docstring).
        format_version: (major, minor) of the manifest format this was written in.
    """

    version: int
    dim: int
    codecs: tuple[str, ...]
    run_id: str
    parent_version: int | None
    input_fingerprint: str | None
    created_by: str
    created_at: str
    shards: tuple[ShardMeta, ...]
    digest: str
    format_version: tuple[int, int] = MANIFEST_FORMAT_VERSION

    def __post_init__(self) -> None:
        object.__setattr__(self, "codecs", tuple(self.codecs)
                           if isinstance(self.codecs, list | tuple) else self.codecs)
        object.__setattr__(self, "shards", tuple(self.shards)
                           if isinstance(self.shards, list | tuple) else self.shards)
        object.__setattr__(self, "format_version", tuple(self.format_version)
                           if isinstance(self.format_version, list | tuple)
                           else self.format_version)
        self._validate()

    # -- construction ---------------------------------------------------------------------

    @classmethod
    def new(cls, *, version: int, dim: int, codecs: Sequence[str], shards: Iterable[ShardMeta],
            run_id: str, parent_version: int | None = None,
            input_fingerprint: str | None = None, created_at: str | None = None) -> Manifest:
        """A new manifest with ``created_by`` = this library, ``created_at`` = now (unless
        given, e.g. for reproducible bytes) and its digest computed."""
        draft = cls(version=version, dim=dim, codecs=tuple(codecs), run_id=run_id,
                    parent_version=parent_version, input_fingerprint=input_fingerprint,
                    created_by=f"semq-transforms {semq_transforms.__version__}",
                    created_at=created_at if created_at is not None else utc_now_iso(),
                    shards=tuple(shards), digest="0" * 64)
        digest = compute_digest(draft._metadata(), draft._rows_table().to_pylist())
        object.__setattr__(draft, "digest", digest)  # draft is new and validated: no replace()
        return draft

    # -- properties -----------------------------------------------------------------------

    @property
    def rows(self) -> int:
        """Total number of vectors over all shards."""
        return sum(shard.rows for shard in self.shards)

    # -- writing --------------------------------------------------------------------------

    def to_table(self) -> pa.Table:
        """The manifest as an Arrow table with :data:`MANIFEST_SCHEMA` and its metadata.

        Raises:
            FormatError: the manifest was read from a different format version (it cannot be
                rewritten as this version without changing its digest).
            IntegrityError: ``digest`` does not match the fields (e.g. after
                ``dataclasses.replace``; build with :meth:`new`).
        """
        if self.format_version != MANIFEST_FORMAT_VERSION:
            raise FormatError(
                f"manifest v{self.version} was read from format version "
                f"{_version_str(self.format_version)}; this library writes "
                f"{_version_str(MANIFEST_FORMAT_VERSION)} and cannot rewrite it unchanged")
        table = self._rows_table()
        metadata = self._metadata()
        expected = compute_digest(metadata, table.to_pylist())
        if expected != self.digest:
            raise IntegrityError(
                f"manifest v{self.version}: digest {self.digest[:16]}... does not match its "
                f"fields ({expected[:16]}...); build manifests with Manifest.new() "
                f"(dataclasses.replace keeps the old digest)")
        return table.replace_schema_metadata({MANIFEST_METADATA_KEY: canonical_json(metadata)})

    def to_bytes(self) -> bytes:
        """The manifest as an uncompressed Arrow IPC file. Deterministic for equal manifests
        (``created_at`` included, so two commits of the same content differ there)."""
        table = self.to_table()
        sink = pa.BufferOutputStream()
        options = pa.ipc.IpcWriteOptions(compression=None)
        with pa.ipc.new_file(sink, table.schema, options=options) as writer:
            writer.write_table(table)
        return sink.getvalue().to_pybytes()

    def _metadata(self) -> dict[str, Any]:
        return {
            "format_version": _version_str(self.format_version),
            "version": self.version,
            "dim": self.dim,
            "codecs": list(self.codecs),
            "created_by": self.created_by,
            "created_at": self.created_at,
            "run_id": self.run_id,
            "parent_version": self.parent_version,
            "input_fingerprint": self.input_fingerprint,
            "rows": self.rows,
            "digest": self.digest,
        }

    def _rows_table(self) -> pa.Table:
        columns: dict[str, list[Any]] = {name: [] for name in MANIFEST_SCHEMA.names}
        for shard in self.shards:
            for name, value in _shard_to_row(shard).items():
                columns[name].append(value)
        try:
            return pa.Table.from_pydict(columns, schema=MANIFEST_SCHEMA)
        except (pa.ArrowException, UnicodeError) as exc:  # e.g. a lone surrogate in an id
            raise FormatError(f"manifest v{self.version}: shard metadata cannot be stored "
                              f"({exc})") from exc

    # -- reading --------------------------------------------------------------------------

    @classmethod
    def from_bytes(cls, data: bytes | bytearray | memoryview, *, source: str = "<bytes>",
                   max_bytes: int = MAX_MANIFEST_BYTES) -> Manifest:
        """Parse and verify untrusted manifest bytes.

        Args:
            data: an Arrow IPC file as written by :meth:`to_bytes`.
            source: where the bytes came from (a URL), used in every error message.
            max_bytes: refuse larger inputs.

        Raises:
            FormatError: not a manifest, malformed, unsupported (newer major) version, or
                fields out of range; the message names ``source`` and the part that is wrong.
            IntegrityError: the stored digest does not match the content.
        """
        try:
            return cls._decode(data, max_bytes)
        except FormatError as exc:
            raise type(exc)(f"manifest {source}: {exc}") from exc
        except _DECODE_ERRORS as exc:
            raise FormatError(f"manifest {source}: not a readable semq manifest "
                              f"({type(exc).__name__}: {exc})") from exc

    @classmethod
    def _decode(cls, data: Any, max_bytes: int) -> Manifest:
        if not isinstance(data, bytes | bytearray | memoryview):
            raise FormatError(f"expected bytes, got {type(data).__name__}")
        if len(data) > max_bytes:
            raise FormatError(f"{len(data)} bytes is over the {max_bytes}-byte limit")
        data = bytes(data)
        footer_start, blocks = _check_container(data)
        reader = pa.ipc.open_file(pa.py_buffer(data))
        schema = reader.schema
        _check_stream_copy(data, blocks, footer_start, schema)
        batches = [reader.get_batch(i) for i in range(reader.num_record_batches)]
        for batch in batches:
            batch.validate(full=True)  # before any value is touched: offsets, UTF-8, lengths
        raw = (schema.metadata or {}).get(MANIFEST_METADATA_KEY)
        if raw is None:
            raise FormatError("no 'semq.manifest' schema metadata: not a semq manifest")
        metadata = _strict_json_loads(raw, "the 'semq.manifest' metadata")
        if not isinstance(metadata, dict):
            raise FormatError("the 'semq.manifest' metadata is not a JSON object")
        format_version = _parse_format_version(metadata.get("format_version"))
        newer_minor = format_version[1] > MANIFEST_FORMAT_VERSION[1]
        _check_schema(schema, newer_minor)
        missing = sorted(METADATA_KEYS - metadata.keys())
        if missing:
            raise FormatError(f"metadata lacks required keys {missing}")
        unknown = sorted(metadata.keys() - METADATA_KEYS)
        if unknown and not newer_minor:
            raise FormatError(f"metadata has unknown keys {unknown} for format version "
                              f"{metadata['format_version']}")

        table = pa.Table.from_batches(batches, schema=schema)
        rows = table.to_pylist()
        stored = metadata["digest"]
        if not isinstance(stored, str) or not _HEX64.fullmatch(stored):
            raise FormatError(f"metadata 'digest' must be 64 lowercase hex digits, got "
                              f"{stored!r}")
        actual = compute_digest(metadata, rows)
        if actual != stored:
            raise IntegrityError(f"digest mismatch: stored {stored[:16]}..., content hashes to "
                                 f"{actual[:16]}...; the manifest was altered or corrupted")

        dim = metadata["dim"]
        shards = tuple(_row_to_shard(row, dim, number) for number, row in enumerate(rows))
        manifest = cls(version=metadata["version"], dim=dim, codecs=_as_tuple(
                           metadata["codecs"], "codecs"),
                       run_id=metadata["run_id"], parent_version=metadata["parent_version"],
                       input_fingerprint=metadata["input_fingerprint"],
                       created_by=metadata["created_by"], created_at=metadata["created_at"],
                       shards=shards, digest=stored, format_version=format_version)
        if metadata["rows"] != manifest.rows or type(metadata["rows"]) is not int:
            raise FormatError(f"metadata 'rows' is {metadata['rows']!r} but the shards hold "
                              f"{manifest.rows} rows")
        return manifest

    # -- validation -----------------------------------------------------------------------

    def _validate(self) -> None:
        where = f"manifest v{self.version}"
        fv = self.format_version
        if not (isinstance(fv, tuple) and len(fv) == 2
                and all(type(part) is int and part >= 0 for part in fv)):
            raise FormatError(f"{where}: format_version must be (major, minor), got {fv!r}")
        _check_int(self.version, "version", 1, _INT64_MAX, "manifest")
        _check_int(self.dim, "dim", 1, _INT32_MAX, where)
        if not (isinstance(self.codecs, tuple) and self.codecs
                and all(isinstance(c, str) and c for c in self.codecs)):
            raise FormatError(f"{where}: codecs must be a non-empty sequence of codec spec "
                              f"strings, got {self.codecs!r}")
        check_run_id(self.run_id)
        if self.parent_version is not None:
            _check_int(self.parent_version, "parent_version", 1, self.version - 1, where)
        if self.input_fingerprint is not None and not isinstance(self.input_fingerprint, str):
            raise FormatError(f"{where}: input_fingerprint must be a str or None, got "
                              f"{self.input_fingerprint!r}")
        if not isinstance(self.created_by, str) or not self.created_by:
            raise FormatError(f"{where}: created_by must be a non-empty str, got "
                              f"{self.created_by!r}")
        _check_created_at(self.created_at, where)
        if not isinstance(self.digest, str) or not _HEX64.fullmatch(self.digest):
            raise FormatError(f"{where}: digest must be 64 lowercase hex digits, got "
                              f"{self.digest!r}")
        if not isinstance(self.shards, tuple):
            raise FormatError(f"{where}: shards must be a sequence of ShardMeta")
        seen: set[str] = set()
        code_bytes: tuple[int, ...] | None = None
        id_types = {shard.id_type for shard in self.shards if isinstance(shard, ShardMeta)}
        if len(id_types) > 1:
            raise FormatError(f"{where}: shards mix id types {sorted(id_types)}; the ids of "
                              f"one version are all int64 or all strings")
        for number, shard in enumerate(self.shards):
            if not isinstance(shard, ShardMeta):
                raise FormatError(f"{where}: shard {number} is a {type(shard).__name__}, "
                                  f"expected ShardMeta")
            _check_shard(shard, self.dim, self.codecs, f"{where}: shard {number}")
            if shard.path in seen:
                raise FormatError(f"{where}: shard path {shard.path!r} is listed twice")
            seen.add(shard.path)
            widths = tuple(level.code_bytes for level in shard.levels)
            if code_bytes is not None and widths != code_bytes:
                raise FormatError(f"{where}: shard {number} ({shard.path!r}) has code_bytes "
                                  f"{list(widths)} per level, shard 0 has {list(code_bytes)}; "
                                  f"shards of one version share their codec configuration")
            code_bytes = widths
        if self.rows > _INT64_MAX:
            raise FormatError(f"{where}: {self.rows} rows in total is over int64")


# -- rows <-> ShardMeta -------------------------------------------------------------------


def _shard_to_row(shard: ShardMeta) -> dict[str, Any]:
    return {
        "path": shard.path,
        "rows": shard.rows,
        "file_bytes": shard.file_bytes,
        "code_bytes_per_row": shard.code_bytes_per_row,
        "codecs": [level.codec for level in shard.levels],
        "code_bytes": [level.code_bytes for level in shard.levels],
        "params_sha256": [level.params_sha256 for level in shard.levels],
        "content_sha256": shard.content_sha256,
        "file_sha256": shard.file_sha256,
        "id_type": shard.id_type,
        "id_min": _encode_id(shard.id_min),
        "id_max": _encode_id(shard.id_max),
        "stats": canonical_json(dict(shard.stats)).decode("utf-8"),
        "validation": canonical_json(dict(shard.validation)).decode("utf-8"),
    }


def _row_to_shard(row: Mapping[str, Any], dim: Any, number: int) -> ShardMeta:
    where = f"shard row {number}"
    codecs = _as_list(row["codecs"], f"{where} codecs")
    code_bytes = _as_list(row["code_bytes"], f"{where} code_bytes")
    params = _as_list(row["params_sha256"], f"{where} params_sha256")
    if not len(codecs) == len(code_bytes) == len(params):
        raise FormatError(f"{where}: codecs, code_bytes and params_sha256 have different "
                          f"lengths ({len(codecs)}, {len(code_bytes)}, {len(params)})")
    levels = tuple(LevelMeta(codec=c, code_bytes=b, params_sha256=p)
                   for c, b, p in zip(codecs, code_bytes, params, strict=True))
    if row["code_bytes_per_row"] != sum(b for b in code_bytes if type(b) is int):
        raise FormatError(f"{where}: code_bytes_per_row {row['code_bytes_per_row']!r} is not "
                          f"the sum of code_bytes {code_bytes}")
    id_type = row["id_type"]
    if id_type not in ID_TYPES:
        raise FormatError(f"{where}: id_type {id_type!r} not in {ID_TYPES}")
    return ShardMeta(
        path=row["path"], rows=row["rows"], dim=dim, file_bytes=row["file_bytes"],
        levels=levels, content_sha256=row["content_sha256"], file_sha256=row["file_sha256"],
        id_type=id_type, id_min=_decode_id(row["id_min"], id_type, f"{where} id_min"),
        id_max=_decode_id(row["id_max"], id_type, f"{where} id_max"),
        stats=_json_object(row["stats"], f"{where} stats"),
        validation=_json_object(row["validation"], f"{where} validation"))


def _check_container(data: bytes) -> tuple[int, list[arrowio.Block]]:
    """Check the IPC file structure before pyarrow reads a record batch: a compressed buffer
    declares the size pyarrow allocates before decompressing it (a few KB could ask for GBs),
    and manifests are written uncompressed, with no dictionaries, little-endian. Returns the
    footer's offset and its record batch blocks."""
    try:
        footer_start, blocks = arrowio.parse_footer(data, len(data), len(data), "manifest",
                                                    allow_no_batches=True)
        arrowio.check_batches(data, blocks, _INT32_MAX, "manifest", min_rows=0)
    except FormatError as exc:
        raise FormatError(getattr(exc, "problem", str(exc))) from None
    return footer_start, blocks


def _check_stream_copy(data: bytes, blocks: list[arrowio.Block], footer_start: int,
                       schema: pa.Schema) -> None:
    try:
        arrowio.check_stream_copy(data, blocks, footer_start, schema, "manifest")
    except FormatError as exc:
        raise FormatError(getattr(exc, "problem", str(exc))) from None


def _check_shard(shard: ShardMeta, dim: int, codecs: tuple[str, ...], where: str) -> None:
    where = f"{where} ({shard.path!r})"
    check_rel_path(shard.path, f"{where} path")
    _check_int(shard.rows, "rows", 0, _INT64_MAX, where)
    _check_int(shard.file_bytes, "file_bytes", 0, _INT64_MAX, where)
    if shard.dim != dim:
        raise FormatError(f"{where}: dim {shard.dim!r}, the manifest's dim is {dim}")
    if shard.codecs != codecs:
        raise FormatError(f"{where}: codecs {list(shard.codecs)}, the manifest's codecs are "
                          f"{list(codecs)}")
    for level in shard.levels:
        _check_int(level.code_bytes, f"code_bytes of level {level.codec!r}", 1, _INT32_MAX,
                   where)
        _check_hex(level.params_sha256, f"params_sha256 of level {level.codec!r}", where)
    _check_int(shard.code_bytes_per_row, "code_bytes_per_row", 1, _INT32_MAX, where)
    _check_hex(shard.content_sha256, "content_sha256", where)
    _check_hex(shard.file_sha256, "file_sha256", where)
    if shard.id_type == "int64":
        for name in ("id_min", "id_max"):
            _check_int(getattr(shard, name), name, -_INT64_MAX - 1, _INT64_MAX, where)
        ordered = shard.id_min <= shard.id_max
    else:
        for name in ("id_min", "id_max"):
            if not isinstance(getattr(shard, name), str):
                raise FormatError(f"{where}: {name} must be a str for string ids, got "
                                  f"{getattr(shard, name)!r}")
        ordered = shard.id_min.encode("utf-8", "surrogatepass") <= shard.id_max.encode(
            "utf-8", "surrogatepass")
    if shard.rows > 0 and not ordered:
        raise FormatError(f"{where}: id_min {shard.id_min!r} > id_max {shard.id_max!r}")
    for name in ("stats", "validation"):
        for key, value in getattr(shard, name).items():
            if not isinstance(key, str) or type(value) not in (int, float) or (
                    type(value) is float and not math.isfinite(value)):
                raise FormatError(f"{where}: {name} must map str to finite numbers, got "
                                  f"{key!r}: {value!r}")


# -- small checks and conversions ---------------------------------------------------------


def _version_str(version: tuple[int, int]) -> str:
    return f"{version[0]}.{version[1]}"


def _parse_format_version(value: Any) -> tuple[int, int]:
    match = _FORMAT_VERSION.fullmatch(value) if isinstance(value, str) else None
    if match is None:
        raise FormatError(f"metadata 'format_version' must be 'MAJOR.MINOR', got {value!r}")
    version = (int(match.group(1)), int(match.group(2)))
    ours = _version_str(MANIFEST_FORMAT_VERSION)
    if version[0] > MANIFEST_FORMAT_VERSION[0]:
        raise FormatError(f"format version {value} is newer than this semq-transforms "
                          f"({semq_transforms.__version__}) reads (major "
                          f"{MANIFEST_FORMAT_VERSION[0]}, up to {ours}); upgrade semq-transforms "
                          f"(pip install -U semq-transforms) to read it")
    if version[0] < MANIFEST_FORMAT_VERSION[0]:
        raise FormatError(f"format version {value} is older than this semq-transforms "
                          f"supports ({ours}); read it with the release that wrote it")
    return version


def _check_schema(schema: pa.Schema, newer_minor: bool) -> None:
    if not newer_minor:
        if not schema.remove_metadata().equals(MANIFEST_SCHEMA):
            raise FormatError(f"schema is not the manifest schema:\n{schema.remove_metadata()}"
                              f"\nexpected:\n{MANIFEST_SCHEMA}")
        return
    # A newer minor version may add columns; the ones this version defines must be there,
    # once each, with their exact types.
    for field in MANIFEST_SCHEMA:
        index = schema.get_field_index(field.name)
        if index < 0 or not schema.field(index).equals(field):
            raise FormatError(f"column {field.name!r} missing, repeated or not {field.type}")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"JSON constant {name} is not allowed")


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("duplicate keys in a JSON object")
    return out


def _strict_json_loads(raw: bytes | str, what: str) -> Any:
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        return json.loads(text, parse_constant=_reject_constant, object_pairs_hook=_unique_keys)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError and UnicodeError included
        raise FormatError(f"{what} is not valid JSON: {exc}") from exc


def _json_object(text: Any, what: str) -> dict[str, Any]:
    if not isinstance(text, str):
        raise FormatError(f"{what} must be a JSON string, got {text!r}")
    value = _strict_json_loads(text, what)
    if not isinstance(value, dict):
        raise FormatError(f"{what} must be a JSON object, got {text[:80]!r}")
    return value


def _as_list(value: Any, what: str) -> list[Any]:
    if not isinstance(value, list):
        raise FormatError(f"{what} must be a list, got {value!r}")
    return value


def _as_tuple(value: Any, what: str) -> tuple[Any, ...]:
    return tuple(_as_list(value, f"metadata '{what}'"))


def _check_int(value: Any, name: str, low: int, high: int, where: str) -> None:
    if type(value) is not int or not low <= value <= high:
        raise FormatError(f"{where}: {name} must be an int in [{low}, {high}], got {value!r}")


def _check_hex(value: Any, name: str, where: str) -> None:
    if not isinstance(value, str) or not _HEX64.fullmatch(value):
        raise FormatError(f"{where}: {name} must be 64 lowercase hex digits (SHA-256), got "
                          f"{value!r}")


def _check_created_at(value: Any, where: str) -> None:
    ok = isinstance(value, str) and _CREATED_AT.fullmatch(value) is not None
    if ok:
        try:
            datetime.fromisoformat(value)
        except ValueError:
            ok = False
    if not ok:
        raise FormatError(f"{where}: created_at must be UTC ISO 8601 like "
                          f"'2026-11-22T10:00:00.000000Z', got {value!r}")


def _encode_id(value: int | str) -> str:
    # int64 ids as decimal text, string ids as themselves (the column is utf8 either way);
    # the id type was checked by Manifest validation before a row is built.
    return str(value) if type(value) is int else value


def _decode_id(text: Any, id_type: str, what: str) -> int | str:
    if not isinstance(text, str):
        raise FormatError(f"{what} must be a string, got {text!r}")
    if id_type == "string":
        return text
    if not _DECIMAL.fullmatch(text):
        raise FormatError(f"{what} must be a canonical decimal int64, got {text!r}")
    value = int(text)
    if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
        raise FormatError(f"{what} {text} is out of the int64 range")
    return value
