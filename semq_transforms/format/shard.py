"""The ``.semq`` shard file: one Arrow IPC file holds one shard's ids and code levels.

::

    levels = encode_levels(x, ["semq1", "semq4"])     # semq_transforms.levels
    meta   = write_shard("s3://bucket/idx/runs/r1/shard-00000.semq", ids=ids, levels=levels,
                         path="runs/r1/shard-00000.semq")
    shard  = read_shard("s3://bucket/idx/runs/r1/shard-00000.semq")   # digests verified
    check  = verify_shard(url)                          # reports problems, never raises on them

The byte layout, the header fields, the digests and the rules for untrusted input are in
``FORMAT.md`` beside this module. Writing is deterministic: the same ids, levels and stats give
byte-identical files in any process.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, BinaryIO, NamedTuple

import numpy as np
import pyarrow as pa

from semq_transforms.codecs import Codec, CodecParams, get_codec
from semq_transforms.codecs.base import check_chain
from semq_transforms.errors import (
    CodecConfigError,
    FormatError,
    InputShapeError,
    IntegrityError,
    InvalidInputError,
    ParamsError,
)
from semq_transforms.format import _arrowio as io_
from semq_transforms.format import _header as hdr
from semq_transforms.format import _ids as ids_
from semq_transforms.format import fingerprint as fp_
from semq_transforms.format.meta import LevelMeta, ShardMeta

#: Rows per Arrow record batch (the last batch holds the rest).
MAX_BATCH_ROWS = 65536
#: Default largest shard file a reader accepts; pass ``max_bytes`` to change it.
DEFAULT_MAX_BYTES = 4 << 30
_MAX_FOOTER = hdr.MAX_HEADER_BYTES + (16 << 20)
_WRITE_OPTIONS = pa.ipc.IpcWriteOptions(metadata_version=pa.ipc.MetadataVersion.V5,
                                        compression=None, use_threads=False)
_READ_OPTIONS = pa.ipc.IpcReadOptions(use_threads=False)


@dataclass(frozen=True, eq=False)
class EncodedLevel:
    """One code level of a shard: a codec, the params it fitted, and the rows' codes.

    Attributes:
        codec: the codec (a spec string or config is accepted and turned into one).
        params: the level's fitted params; must belong to ``codec``.
        codes: uint8 ``[n, codec.code_bytes(params.dim)]``, one row per shard row.
    """

    codec: Codec
    params: CodecParams
    codes: np.ndarray

    def __post_init__(self) -> None:
        codec = get_codec(self.codec)
        codec.check_params(self.params)
        object.__setattr__(self, "codec", codec)
        object.__setattr__(self, "codes", codec.check_codes(self.codes, self.params))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EncodedLevel):
            return NotImplemented
        return (self.codec == other.codec and self.params == other.params
                and np.array_equal(self.codes, other.codes))

    __hash__ = None  # type: ignore[assignment]  (holds a mutable-typed array)

    @property
    def rows(self) -> int:
        return int(self.codes.shape[0])

    @property
    def dim(self) -> int:
        return self.params.dim


# -- writing ---------------------------------------------------------------------------------


def write_shard(dest: str | os.PathLike | BinaryIO, *, ids: np.ndarray | Sequence[str],
                levels: Sequence[EncodedLevel], path: str,
                stats: Mapping[str, float] | None = None,
                fingerprints: np.ndarray | None = None) -> ShardMeta:
    """Write one shard file and return its :class:`ShardMeta`.

    Args:
        dest: an fsspec URL or local path (parent directories are created), or a writable
            binary file object (written from its current position, not closed).
        ids: int64 ``[n]`` (any integer array whose values fit int64), or ``n`` strings.
        levels: the code levels of the same ``n`` rows, scan level first.
        path: the shard's path relative to the index root, recorded in the ShardMeta only
            (the file's bytes do not depend on where it is written).
        stats: JSON-safe finite numbers stored in the header and the ShardMeta.
        fingerprints: uint8 ``[n, 8]``, the rows' input fingerprints
            (:func:`~semq_transforms.format.fingerprint.row_fingerprints`), stored in the
            ``input_fp`` column; None (default) writes a shard without them.
    Raises:
        InvalidInputError (and subclasses): ids, levels, stats or fingerprints are not as
            described.
    """
    levels = _check_levels(levels)
    rows, dim = levels[0].rows, levels[0].dim
    if not isinstance(path, str) or not path:
        raise InvalidInputError(f"path must be a non-empty relative path string, got {path!r}")
    stats = hdr.check_stats(stats)
    if fingerprints is not None:
        fingerprints = fp_.check_fingerprints(fingerprints, rows)
    id_type, id_arrays, id_min, id_max = ids_.id_batches(ids, rows, MAX_BATCH_ROWS)
    codes_sha256 = [hdr.codes_sha256(lv.codes) for lv in levels]
    header, content_sha256 = hdr.build_header(
        dim=dim, rows=rows, id_type=id_type, levels=levels, ids_sha256=ids_.ids_sha256(id_arrays),
        codes_sha256=codes_sha256, stats=stats, fingerprints_sha256=(
            None if fingerprints is None else fp_.fingerprints_sha256(fingerprints)))
    params = hdr.params_metadata(levels)
    if max(len(header), len(params)) > hdr.MAX_HEADER_BYTES:  # a reader would refuse it
        raise InvalidInputError(f"the header is {len(header)} bytes and the params "
                                f"{len(params)}; at most {hdr.MAX_HEADER_BYTES} are allowed")
    columns = [lv.codes for lv in levels] + ([] if fingerprints is None else [fingerprints])
    schema = _schema(id_type, [lv.codes.shape[1] for lv in levels],
                     fingerprints is not None).with_metadata({"semq": header})
    with io_.open_dest(dest) as f:
        sink = io_.HashingSink(f)
        with pa.ipc.new_file(sink, schema, options=_WRITE_OPTIONS) as writer:
            for b, start in enumerate(range(0, rows, MAX_BATCH_ROWS)):
                stop = min(start + MAX_BATCH_ROWS, rows)
                batch = [id_arrays[b], *(_fixed_binary(c[start:stop]) for c in columns)]
                writer.write_batch(pa.record_batch(batch, schema=schema), custom_metadata=(
                    {hdr.PARAMS_KEY: params} if b == 0 else None))
    return ShardMeta(
        path=path, rows=rows, dim=dim, file_bytes=sink.nbytes,
        levels=tuple(LevelMeta(lv.codec.spec, int(lv.codes.shape[1]), lv.params.digest())
                     for lv in levels),
        content_sha256=content_sha256, file_sha256=sink.sha.hexdigest(), id_type=id_type,
        id_min=id_min, id_max=id_max, stats=stats)


def _check_levels(levels: Any) -> list[EncodedLevel]:
    if isinstance(levels, EncodedLevel) or not isinstance(levels, Sequence) or not levels:
        raise InvalidInputError("levels must be a non-empty list of EncodedLevel")
    if not all(isinstance(lv, EncodedLevel) for lv in levels):
        raise InvalidInputError("levels must hold EncodedLevel objects (see levels.encode_levels)")
    if len(levels) > hdr.MAX_LEVELS:
        raise InvalidInputError(f"a shard holds at most {hdr.MAX_LEVELS} levels")
    first = levels[0]
    if first.dim > hdr.MAX_DIM:
        raise InputShapeError(f"dimension {first.dim} is above the format's {hdr.MAX_DIM}")
    for i, lv in enumerate(levels):
        if lv.rows != first.rows or lv.dim != first.dim:
            raise InputShapeError(f"level {i} ({lv.codec.spec}) has {lv.rows} rows of dim "
                                  f"{lv.dim}; level 0 has {first.rows} rows of dim {first.dim}")
    try:
        check_chain([(lv.codec, lv.params) for lv in levels])
    except (CodecConfigError, ParamsError) as exc:
        raise InvalidInputError(str(exc)) from None
    return list(levels)


def _schema(id_type: str, widths: Sequence[int], fingerprints: bool) -> pa.Schema:
    id_field = pa.field("id", pa.int64() if id_type == "int64" else pa.string(), nullable=False)
    fp_fields = [pa.field(fp_.COLUMN, pa.binary(fp_.FINGERPRINT_BYTES), nullable=False)]
    return pa.schema([id_field, *(pa.field(f"codes_{i}", pa.binary(w), nullable=False)
                                  for i, w in enumerate(widths)),
                      *(fp_fields if fingerprints else [])])


def _fixed_binary(codes: np.ndarray) -> pa.Array:
    codes = np.ascontiguousarray(codes)
    return pa.FixedSizeBinaryArray.from_buffers(pa.binary(codes.shape[1]), codes.shape[0],
                                                [None, pa.py_buffer(codes)])


# -- reading ---------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class Shard:
    """One shard read back from a file.

    Attributes:
        path: the URL / path it was read from (a file object's ``name``, if it has one).
        dim, rows: vector dimension and number of rows.
        id_type: ``"int64"`` or ``"string"``.
        ids: int64 ``[rows]``, or an object array of ``rows`` str.
        levels: the code levels, scan level first (codes are read-only uint8 arrays).
        header: the parsed header JSON (FORMAT.md lists its fields).
        file_bytes: size of the file.
        file_sha256: hex SHA-256 of the file, when read with ``verify=True`` (else None).
        fingerprints: the rows' input fingerprints, read-only uint8 ``[rows, 8]``
            (``format/fingerprint.py``); None for a shard written without them.
    """

    path: str
    dim: int
    rows: int
    id_type: str
    ids: np.ndarray
    levels: list[EncodedLevel]
    header: dict[str, Any]
    file_bytes: int
    file_sha256: str | None = None
    fingerprints: np.ndarray | None = None

    @property
    def content_sha256(self) -> str:
        """The header's content digest (checked against the content when verified)."""
        return self.header["digests"]["content"]

    @property
    def stats(self) -> dict[str, float]:
        return dict(self.header["stats"])

    @property
    def codecs(self) -> tuple[str, ...]:
        return tuple(lv.codec.spec for lv in self.levels)

    def differences(self, meta: ShardMeta) -> list[str]:
        """How this shard differs from what a manifest row (``meta``) says of it; empty when
        it is the shard the manifest listed. Compares the header fields, each level's width
        and params digest, the content digest, the file's size (and SHA-256 when it was
        read with ``verify``) and the id range, so a shard file swapped, replaced or edited
        together with its own digests is still caught."""
        found = []
        for name, mine, listed in (("rows", self.rows, meta.rows), ("dim", self.dim, meta.dim),
                                   ("id_type", self.id_type, meta.id_type),
                                   ("codecs", list(self.codecs), list(meta.codecs)),
                                   ("file_bytes", self.file_bytes, meta.file_bytes)):
            if mine != listed:
                found.append(f"{name} is {mine!r}, the manifest says {listed!r}")
        for i, (lv, listed) in enumerate(zip(self.levels, meta.levels)):
            if lv.codes.shape[1] != listed.code_bytes:
                found.append(f"level {i} has {lv.codes.shape[1]} code bytes per row, the "
                             f"manifest says {listed.code_bytes}")
            if lv.params.digest() != listed.params_sha256:
                found.append(f"params digest of level {i} differs from the manifest")
        if self.content_sha256 != meta.content_sha256:
            found.append("content digest differs from the manifest")
        if self.file_sha256 is not None and self.file_sha256 != meta.file_sha256:
            found.append("file SHA-256 differs from the manifest")
        if self.rows and self.id_type == meta.id_type:
            id_min, id_max = self.ids.min(), self.ids.max()   # str: code point = UTF-8 order
            id_min, id_max = (v.item() if isinstance(v, np.generic) else v
                              for v in (id_min, id_max))
            if (id_min, id_max) != (meta.id_min, meta.id_max):
                found.append(f"ids range over [{id_min!r}, {id_max!r}], the manifest says "
                             f"[{meta.id_min!r}, {meta.id_max!r}]")
        return found


@dataclass(frozen=True)
class ShardCheck:
    """What :func:`verify_shard` found: ``ok`` is True when ``problems`` is empty; each
    problem starts with the part that is wrong (``"ids: ..."``, ``"codes of level 1 ..."``)."""

    path: str
    ok: bool
    problems: list[str] = field(default_factory=list)


def read_shard(source: str | os.PathLike | BinaryIO, *, verify: bool = True,
               max_bytes: int = DEFAULT_MAX_BYTES) -> Shard:
    """Read a shard file from a URL / path or a readable binary file object (untrusted).

    The whole file (at most ``max_bytes``; a larger file is refused before it is read) is read
    into memory; ids and codes are read-only views of it where the layout allows.

    Raises:
        FormatError: the file is not a well-formed shard (the message names the file and
            the part); :class:`IntegrityError` (with ``verify``): a digest does not match.
        OSError: the file cannot be opened or read.
    """
    with io_.open_source(source, max_bytes) as src:
        data = io_.read_all(src, max_bytes)
    loaded = _load(data, src.name)
    if not verify:
        return loaded.shard
    problems = _digest_problems(loaded)
    if problems:
        raise IntegrityError(f"shard {src.name!r}: " + "; ".join(problems))
    return replace(loaded.shard, file_sha256=hashlib.sha256(data).hexdigest())


def read_shard_header(source: str | os.PathLike | BinaryIO, *,
                      max_bytes: int = DEFAULT_MAX_BYTES) -> dict[str, Any]:
    """The checked header of a shard, reading only the file's footer (no record batch).

    Checks the header fields and the schema, and a 1.0 header's params (a 2.0 or 3.0 shard keeps
    them in record batch 0, not read here; nor are the digests: those need the content, see
    :func:`verify_shard`). Raises like :func:`read_shard`.
    """
    with io_.open_source(source, max_bytes) as src:
        head_and_footer, file_size = io_.read_head_and_tail(src, _MAX_FOOTER, max_bytes)
    io_.parse_footer(head_and_footer, file_size, _MAX_FOOTER, src.name)
    _, header = _open_ipc(pa.py_buffer(head_and_footer), src.name, header_only=True)
    return header.raw


def verify_shard(source: str | os.PathLike | BinaryIO, *,
                 max_bytes: int = DEFAULT_MAX_BYTES) -> ShardCheck:
    """Check a shard file completely (like ``read_shard``) and report what is wrong.

    Never raises for a malformed, corrupt or oversized file; raises ``OSError`` only when the
    file cannot be opened or read at all.
    """
    name = io_.source_name(source)
    try:
        with io_.open_source(source, max_bytes) as src:
            data = io_.read_all(src, max_bytes)
        problems = _digest_problems(_load(data, name))
    except FormatError as exc:
        problems = [getattr(exc, "problem", str(exc))]
    return ShardCheck(name, not problems, problems)


class _Loaded(NamedTuple):
    shard: Shard
    header: hdr.Header
    columns: list[list[pa.Array]]  # Arrow chunks of each column, id column first


def _load(data: bytes, name: str) -> _Loaded:
    """Parse and check everything but the digests."""
    footer_start, blocks = io_.parse_footer(data, len(data), _MAX_FOOTER, name)
    batch_rows = io_.check_batches(data, blocks, MAX_BATCH_ROWS, name)
    buf = pa.py_buffer(data)
    reader, header = _open_ipc(buf, name)
    if reader.num_record_batches != len(blocks) or sum(batch_rows) != header.rows:
        raise io_.problem(name, "container", f"record batches hold {sum(batch_rows)} rows, "
                                             f"the header says {header.rows}")
    io_.check_stream_copy(data, blocks, footer_start, reader.schema, name)
    columns: list[list[pa.Array]] = [[] for _ in reader.schema]
    for i, rows in enumerate(batch_rows):
        try:
            batch = reader.get_batch(i)
            batch.validate(full=True)
        except (pa.ArrowException, OSError) as exc:
            raise io_.problem(name, "container", f"record batch {i}: {str(exc)[:200]}") from None
        for j, column in enumerate(batch.columns):
            if len(column) != rows or column.null_count:
                raise io_.problem(name, _part(header, j), f"record batch {i} has "
                                  f"{column.null_count} nulls in {len(column)} rows, expected "
                                  f"no nulls in {rows}")
            columns[j].append(column)
    levels = [EncodedLevel(lv.codec, lv.params, _codes(columns[1 + k], lv.code_bytes))
              for k, lv in enumerate(header.levels)]
    fingerprints = (_codes(columns[-1], fp_.FINGERPRINT_BYTES) if header.fingerprint
                    else None)
    shard = Shard(path=name, dim=header.dim, rows=header.rows, id_type=header.id_type,
                  ids=ids_.ids_array(columns[0], header.id_type, name), levels=levels,
                  header=header.raw, file_bytes=len(data), fingerprints=fingerprints)
    return _Loaded(shard, header, columns)


def _open_ipc(buf: pa.Buffer, name: str, *, header_only: bool = False
              ) -> tuple[Any, hdr.Header]:
    """Open the IPC file in ``buf``, parse the header and the levels' params (from record
    batch 0's metadata, unless ``header_only``) and check the schema against them."""
    try:
        reader = pa.ipc.open_file(pa.BufferReader(buf), options=_READ_OPTIONS)
        schema = reader.schema
    except (pa.ArrowException, OSError) as exc:
        raise io_.problem(name, "container", f"not a readable Arrow IPC file "
                                             f"({str(exc)[:200]})") from None
    raw = (schema.metadata or {}).get(b"semq")
    if raw is None:
        raise io_.problem(name, "header", "no 'semq' schema metadata: not a .semq shard")
    params = None if header_only else _params_metadata(reader, name)
    header = hdr.parse_header(raw, name, params, header_only=header_only)
    expected = _schema(header.id_type, [lv.code_bytes for lv in header.levels],
                       header.fingerprint is not None)
    if not schema.remove_metadata().equals(expected, check_metadata=True):
        raise io_.problem(name, "schema", f"columns are {_describe(schema)}; the header "
                                          f"implies {_describe(expected)} (and no field "
                                          f"metadata)")
    return reader, header


def _params_metadata(reader: Any, name: str) -> bytes | None:
    """Record batch 0's ``semq.params`` metadata (None: the batch has no custom metadata);
    any other key is refused (check_batches refuses metadata on later batches)."""
    if not reader.num_record_batches:
        return None
    try:
        _, metadata = reader.get_batch_with_custom_metadata(0)
    except (pa.ArrowException, OSError) as exc:
        raise io_.problem(name, "container", f"record batch 0: {str(exc)[:200]}") from None
    if metadata is None or not len(metadata):
        return None
    found = dict(metadata)
    if set(found) != {hdr.PARAMS_KEY.encode()}:
        raise io_.problem(name, "params", f"record batch 0 metadata holds keys "
                                          f"{sorted(found)[:5]}, expected only "
                                          f"{hdr.PARAMS_KEY!r}")
    return found[hdr.PARAMS_KEY.encode()]


def _describe(schema: pa.Schema) -> str:
    try:
        fields = [f"{f.name}: {f.type}{'' if f.nullable else ' not null'}"
                  for f in list(schema)[:8]]
    except UnicodeDecodeError:
        return "(field names that are not UTF-8)"
    return "[" + ", ".join(fields) + (", ...]" if len(schema) > 8 else "]")


def _part(header: hdr.Header, column: int) -> str:
    if column == 0:
        return "ids"
    if column > len(header.levels):
        return "fingerprints"
    return f"codes of level {column - 1} ({header.levels[column - 1].codec.spec})"


def _codes(chunks: list[pa.Array], width: int) -> np.ndarray:
    parts = [np.frombuffer(c.buffers()[1], np.uint8, len(c) * width, c.offset * width)
             .reshape(len(c), width) for c in chunks]
    codes = parts[0] if len(parts) == 1 else np.concatenate(parts)
    codes.setflags(write=False)
    return codes


def _digest_problems(loaded: _Loaded) -> list[str]:
    """Each part whose digest does not match, as ``"<part>: ..."``; the content digest is
    reported (as a header problem) only when every part matches."""
    header, levels = loaded.header, loaded.shard.levels
    found = {"ids": ids_.ids_sha256(loaded.columns[0])}
    stored = {"ids": header.ids_sha256}
    for i, lv in enumerate(header.levels):
        label = f" of level {i} ({lv.codec.spec})"
        found["params" + label] = lv.params.digest()
        stored["params" + label] = lv.params_sha256
        found["codes" + label] = hdr.codes_sha256(levels[i].codes)
        stored["codes" + label] = header.codes_sha256[i]
    if header.fingerprints_sha256 is not None:
        found["fingerprints"] = fp_.fingerprints_sha256(loaded.shard.fingerprints)
        stored["fingerprints"] = header.fingerprints_sha256
    problems = [f"{part}: digest mismatch (stored {stored[part][:16]}..., content hashes to "
                f"{found[part][:16]}...)" for part in found if found[part] != stored[part]]
    if problems:
        return problems
    content = hdr.content_sha256(
        dim=header.dim, rows=header.rows, id_type=header.id_type,
        specs=[lv.codec.spec for lv in header.levels],
        code_bytes=[lv.code_bytes for lv in header.levels], ids_sha256=found["ids"],
        params_sha256=[lv.params_sha256 for lv in header.levels],
        codes_sha256=list(header.codes_sha256), fingerprints_sha256=header.fingerprints_sha256)
    if content != header.content_sha256:
        return [(f"header: content digest mismatch (stored {header.content_sha256[:16]}..., "
                 f"content hashes to {content[:16]}...)")]
    return []
