"""The input stage without Beam: find input files, plan splits from metadata, read a split into
validated batches of vectors.

Three steps, each usable on its own and all deterministic:

* :func:`expand_inputs` turns a URL, a folder or a glob (any fsspec filesystem) into the sorted
  list of input files.
* :func:`plan_splits` reads only metadata (the Parquet footer, the Arrow IPC footer and record
  batch headers, the NPY header) and cuts the files into :class:`Split` s: runs of Parquet row
  groups, runs of Arrow record batches, NPY row ranges, each about ``batch_rows`` rows. Every
  input row gets a global position: files in sorted order, then rows in file order.
  :func:`plan_inputs` wraps both with the checks a pipeline wants before it starts (one format,
  one id type, one vector width).
* :func:`iter_split` / :func:`read_split` read one split into :class:`Batch` es. Every row read
  ends up either accepted (in ``Batch.vectors``) or rejected as a dead letter with a reason, so
  ``rows == accepted + len(rejected)`` for every batch. Duplicate ids span splits and are left to
  a global step (:mod:`~semq_transforms.transforms.planning` in a pipeline,
  :func:`find_duplicate_ids` for data that fits in memory); :func:`iter_split_ids` reads only
  the ids for it.

A file that cannot be read at all (missing, truncated, not of its format, the vector column
missing or not a list of floats, an id column that is neither integer nor string) raises
:class:`~semq_transforms.errors.InputReadError` naming the file.

Formats:

* Parquet: the vector column is ``fixed_size_list<float>`` or ``list`` / ``large_list<float>``
  (float16/32/64), the id column an integer or string column; only the split's row groups and the
  two columns are read.
* Arrow IPC files (``.arrow``, ``.feather`` v2, ``.ipc``): as Parquet, per record batch. The
  IPC *stream* format has no footer to plan from and is refused.
* NPY: a 2-D float32 or float64 C-order array. A split reads exactly its rows' bytes (one range
  request at ``header + row_start * row_bytes``). Ids are the rows' global positions, or come
  from ``ids_url``: an NPY of integer (or fixed-width string) ids, one per input row in global
  order, read by the same range requests.
"""

from __future__ import annotations

import dataclasses
import logging
import posixpath
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import ipc

from semq_transforms._formats import infer_format
from semq_transforms._urls import redact_url
from semq_transforms.codecs.base import MAX_ABS_VALUE
from semq_transforms.errors import InputReadError
from semq_transforms.transforms import _ipc_footer
from semq_transforms.transforms._columns import (
    ids_from_arrow,
    most_common,
    vector_lengths,
    vectors_from_arrow,
    zero_rows,
)
from semq_transforms.transforms._storage import (
    CountingFile,
    TailCachedFile,
    file_size,
    fs_for,
    guard,
    int64_ids,
    is_local,
    npy_header,
    read_bytes,
    read_errors,
    read_range,
)
from semq_transforms.transforms.rows import Batch, check_rows

logger = logging.getLogger(__name__)

InputFormat = Literal["auto", "parquet", "arrow", "npy"]
FORMATS = ("parquet", "arrow", "npy")
_MAGIC = ((b"PAR1", "parquet"), (b"ARROW1", "arrow"), (b"\x93NUMPY", "npy"))


@dataclass(frozen=True)
class Split:
    """A contiguous run of rows of one input file: the unit of work of a reader.

    Attributes:
        url: the file (full fsspec URL, as :func:`expand_inputs` returns it).
        format: ``"parquet"``, ``"arrow"`` or ``"npy"``.
        row_start, row_stop: the rows ``[row_start, row_stop)`` of the file.
        global_row_offset: global position of row ``row_start`` (files sorted, then rows).
        row_groups: the Parquet row groups (Arrow IPC: record batches) that hold exactly these
            rows, ascending; empty for NPY.
        vector_width: the vector length the file's metadata fixes (``fixed_size_list`` size,
            NPY columns), or None for variable-length lists.
        group_rows: the rows of each of ``row_groups`` (so a reader can skip the groups
            before the row it starts at); empty when not known (the split is then read as one
            group) and for NPY.
    """

    url: str
    format: str
    row_start: int
    row_stop: int
    global_row_offset: int
    row_groups: tuple[int, ...] = ()
    vector_width: int | None = None
    group_rows: tuple[int, ...] = ()

    @property
    def rows(self) -> int:
        return self.row_stop - self.row_start


@dataclass(frozen=True)
class InputPlan:
    """What :func:`plan_inputs` found: the files, their splits, the vector width and the total
    number of input rows (the global positions are ``0 .. total_rows - 1``). ``widths``: the
    vector width each file's metadata fixes, in ``files`` order (None: variable-length
    lists, checked row by row)."""

    files: tuple[str, ...]
    splits: tuple[Split, ...]
    dim: int | None
    total_rows: int
    formats: tuple[str, ...] = ()
    widths: tuple[int | None, ...] = ()


# -- finding and planning -------------------------------------------------------------------


def expand_inputs(url_or_glob: str, *, storage_options: Mapping[str, Any] | None = None,
                  filesystem: Any = None) -> list[str]:
    """The input files named by ``url_or_glob``, as full URLs sorted by path.

    ``url_or_glob`` is a file, a folder (every file below it, recursively, except names starting
    with ``.`` or ``_`` such as ``_SUCCESS``) or a glob (``*``, ``?``, ``[...]``, ``**``) on any
    fsspec filesystem. Raises InputReadError if nothing matches.
    """
    if not isinstance(url_or_glob, str) or not url_or_glob:
        raise ValueError(f"url_or_glob must be a non-empty string, got {url_or_glob!r}")
    fs, path = fs_for(url_or_glob, storage_options, filesystem)
    try:
        # A path without wildcards globs to itself if it exists; detail=True gives each
        # match's type without one more request per match.
        matches = fs.glob(path, detail=True)
        files: set[str] = set()
        for match, info in matches.items():
            if info.get("type") == "directory":
                files.update(p for p in fs.find(match) if not _hidden(p, match))
            else:
                files.add(match)
    except OSError as exc:  # no chained cause (it quotes the URL unredacted)
        raise InputReadError(f"cannot list inputs {url_or_glob}: {exc}") from None
    if not files:
        raise InputReadError(f"no input files match {url_or_glob}: check the URL, the glob "
                             f"and the storage options")
    return [fs.unstrip_protocol(p) for p in sorted(files)]


def _hidden(path: str, root: str) -> bool:
    rel = posixpath.relpath(path, root) if path != root else posixpath.basename(path)
    return any(part.startswith((".", "_")) for part in rel.split("/"))


def detect_format(url: str, *, storage_options: Mapping[str, Any] | None = None,
                  filesystem: Any = None) -> str:
    """``"parquet"``, ``"arrow"`` or ``"npy"`` from the file extension, else from its first
    bytes. Raises InputReadError when neither tells."""
    ext = posixpath.splitext(url.rstrip("/"))[1].lower()
    fmt = infer_format(url)
    if fmt is not None:
        return fmt
    fs, path = fs_for(url, storage_options, filesystem)
    head = guard(url, read_bytes, fs, path, 0, 8)
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    raise InputReadError(f"cannot read {url}: unknown format (extension {ext or 'none'!r}, "
                         f"first bytes {head!r}); expected Parquet, Arrow IPC or NPY, or pass "
                         f"format=")


def plan_splits(files: Sequence[str], *, format: InputFormat = "auto", batch_rows: int = 8192,
                vector_column: str | None = None, id_column: str | None = None,
                storage_options: Mapping[str, Any] | None = None,
                filesystem: Any = None) -> list[Split]:
    """Cut ``files`` into splits of about ``batch_rows`` rows, reading metadata only.

    Splits follow ``files`` in the order given (pass :func:`expand_inputs`' sorted list), and
    ``global_row_offset`` numbers every row: file order, then row order. Parquet splits are runs
    of whole row groups (merged while they total at most ``batch_rows`` rows; a larger row group
    is a split of its own, read in batches of ``batch_rows``), Arrow IPC splits runs of record
    batches, NPY splits row ranges of exactly ``batch_rows`` rows (the last one shorter). Files
    with no rows produce no split.

    With ``vector_column`` (and ``id_column``) given, Parquet and Arrow schemas are checked now,
    so a missing column or a wrong type fails before any data is read. ``filesystem``: an
    fsspec filesystem to use for the files (else one is built from ``storage_options``).
    """
    return _plan_files(files, format=format, batch_rows=batch_rows,
                       vector_column=vector_column, id_column=id_column,
                       storage_options=storage_options, filesystem=filesystem)[0]


def _plan_files(files: Sequence[str], *, format: InputFormat, batch_rows: int,
                vector_column: str | None, id_column: str | None,
                storage_options: Mapping[str, Any] | None,
                filesystem: Any) -> tuple[list[Split], dict[str, int | None]]:
    """:func:`plan_splits`, plus the vector width each file's metadata fixes (None: variable
    length lists), files with no rows included (they have no split to carry it)."""
    if type(batch_rows) is not int or batch_rows < 1:
        raise ValueError(f"batch_rows must be an int >= 1, got {batch_rows!r}")
    if format != "auto" and format not in FORMATS:
        raise ValueError(f"format must be 'auto' or one of {FORMATS}, got {format!r}")
    splits: list[Split] = []
    widths: dict[str, int | None] = {}
    id_kinds: dict[str, str] = {}
    offset = 0
    for url in files:
        fs, path = fs_for(url, storage_options, filesystem)
        filesystem = fs
        fmt = (detect_format(url, storage_options=storage_options, filesystem=fs)
               if format == "auto" else format)
        if fmt == "npy":
            header = guard(url, npy_header, fs, path, url)
            rows, width = header.shape
            cuts = [(start, min(start + batch_rows, rows), ()) for start in
                    range(0, rows, batch_rows)]
        else:
            counts, width, id_kind = guard(
                url, _chunk_rows, fs, path, url, fmt, vector_column, id_column)
            rows = sum(counts)
            if id_kind is not None:
                id_kinds.setdefault(id_kind, url)
                if len(id_kinds) > 1:
                    raise InputReadError(f"input files disagree on the id type: {id_kinds['int']} "
                                         f"has integer ids, {id_kinds['str']} string ids")
            cuts = _group_chunks(counts, batch_rows)
        for start, stop, groups in cuts:
            splits.append(Split(url, fmt, start, stop, offset + start, groups, width,
                                tuple(counts[i] for i in groups) if groups else ()))
        widths[url] = width
        offset += rows
    return splits, widths


def _group_chunks(counts: Sequence[int], batch_rows: int) -> list[tuple[int, int, tuple]]:
    """Runs of consecutive chunks (row groups, record batches) of at most ``batch_rows`` rows
    (a larger chunk alone); chunks with no rows are skipped."""
    cuts: list[tuple[int, int, tuple]] = []
    start = stop = 0
    group: list[int] = []
    for index, count in enumerate(counts):
        if group and stop - start + count > batch_rows:
            cuts.append((start, stop, tuple(group)))
            start, group = stop, []
        if count:
            group.append(index)
        stop += count
    if group:
        cuts.append((start, stop, tuple(group)))
    return cuts


def plan_inputs(url_or_glob: str, *, format: InputFormat = "auto",
                vector_column: str = "embedding", id_column: str | None = "id",
                ids_url: str | None = None, dim: int | None = None, batch_rows: int = 8192,
                storage_options: Mapping[str, Any] | None = None) -> InputPlan:
    """:func:`expand_inputs` then :func:`plan_splits`, plus the checks that span files: one
    format, one id type (checked in :func:`plan_splits`' schema pass), one vector width, and an
    ``ids_url`` side file that has one id per input row.

    ``dim`` None takes the width the metadata fixes (all files must agree, files with no
    rows included); for variable-length list columns it is inferred from the first rows (the
    most common length among the first ``batch_rows`` non-null vectors) and logged: pass
    ``dim`` to be sure. The plan's ``dim`` is None only when no file fixes a width and no row
    has a vector: then no row can be accepted.
    """
    if dim is not None and (type(dim) is not int or dim < 1):
        raise ValueError(f"dim must be None or an int >= 1, got {dim!r}")
    fs, _ = fs_for(url_or_glob, storage_options)
    files = expand_inputs(url_or_glob, storage_options=storage_options, filesystem=fs)
    splits, widths = _plan_files(files, format=format, batch_rows=batch_rows,
                                 vector_column=vector_column, id_column=id_column,
                                 storage_options=storage_options, filesystem=fs)
    formats = tuple(sorted({s.format for s in splits}))
    if len(formats) > 1:
        raise InputReadError(f"inputs {url_or_glob} mix formats {', '.join(formats)}: ids and "
                             f"columns mean different things per format; read them separately")
    if ids_url is not None and formats and formats != ("npy",):
        raise ValueError("ids_url applies to NPY inputs only; Parquet and Arrow inputs take "
                         "ids from id_column")
    total_rows = max((s.global_row_offset + s.rows for s in splits), default=0)
    if ids_url is not None:
        _check_ids_file(ids_url, total_rows, storage_options, fs)
    if dim is None:
        dim = _resolve_dim(splits, widths, vector_column, storage_options, fs)
    return InputPlan(tuple(files), tuple(splits), dim, total_rows, formats,
                     tuple(widths[f] for f in files))


def _resolve_dim(splits: Sequence[Split], file_widths: Mapping[str, int | None],
                 vector_column: str, storage_options: Mapping[str, Any] | None,
                 filesystem: Any) -> int | None:
    """The width every file's metadata fixes (files with no rows included), else the most
    common length among the first non-null, non-empty vectors; None when no file fixes one
    and no row has a vector of at least one value (then no row can be accepted)."""
    widths: dict[int, str] = {}
    for url, width in file_widths.items():
        if width is not None:
            widths.setdefault(width, url)
    if len(widths) > 1:
        (w1, f1), (w2, f2) = sorted(widths.items(), key=lambda item: item[1])[:2]
        raise InputReadError(f"input files disagree on the vector width: {f1} has {w1}, {f2} "
                             f"has {w2}; pass dim= to keep rows of one width and reject the "
                             f"others")
    if widths:
        return next(iter(widths))
    for s in splits:
        dim = most_common(_first_lengths(s, vector_column, storage_options, filesystem))
        if dim:
            logger.info("vector width %d inferred from the first rows of %s (pass dim= to "
                        "fix it)", dim, redact_url(s.url))
            return dim
    return None


def _first_lengths(split: Split, vector_column: str, storage_options: Mapping[str, Any] | None,
                   filesystem: Any) -> np.ndarray:
    with read_errors(split.url):
        for chunk in _arrow_chunks(split, vector_column, None, split.rows, storage_options,
                                   filesystem):
            column = chunk.vectors
            lengths = np.diff(column.offsets.to_numpy())[column.is_valid().to_numpy(
                zero_copy_only=False)]
            if lengths.any():
                return lengths
    return np.zeros(0, np.int64)


def _check_ids_file(ids_url: str, total_rows: int, storage_options: Mapping[str, Any] | None,
                    filesystem: Any) -> None:
    fs, path = fs_for(ids_url, storage_options, filesystem)
    header = guard(ids_url, npy_header, fs, path, ids_url, True)
    if header.shape[0] != total_rows:
        raise InputReadError(f"ids file {ids_url} holds {header.shape[0]} ids but the inputs "
                             f"have {total_rows} rows: it needs one id per input row, in "
                             f"global order (files sorted, then rows)")


# -- metadata -------------------------------------------------------------------------------


def _chunk_rows(fs: Any, path: str, url: str, fmt: str, vector_column: str | None,
                id_column: str | None) -> tuple[list[int], int | None, str | None]:
    """Rows per row group / record batch, the fixed vector width if the schema has one, and
    the id kind (``"int"`` / ``"str"``) when ``id_column`` is given."""
    with fs.open(path, "rb", cache_type="none") as raw:
        if fmt == "parquet":
            try:
                meta = pq.ParquetFile(raw).metadata
            except pa.ArrowException as exc:
                raise InputReadError(f"cannot read {url}: not a valid Parquet file "
                                     f"({exc})") from exc
            schema = meta.schema.to_arrow_schema()
            counts = [meta.row_group(i).num_rows for i in range(meta.num_row_groups)]
        else:
            # One read of the file's tail serves pyarrow's footer reads (for the schema) and
            # the footer parse; then one small read per record batch header.
            f = TailCachedFile(raw, file_size(raw, fs, path))
            try:
                # the footer parse first: it tells the IPC stream format (no footer) apart
                counts = _ipc_footer.record_batch_rows(f.read_range, f.size)
                schema = ipc.open_file(f).schema
            except (pa.ArrowException, ValueError) as exc:
                raise InputReadError(f"cannot read {url}: not a valid Arrow IPC file "
                                     f"({exc})") from exc
    width = None
    if vector_column is not None:
        vector_type = _check_vector_type(schema, vector_column, url)
        if pa.types.is_fixed_size_list(vector_type):
            width = vector_type.list_size
    id_kind = _check_id_type(schema, id_column, url) if id_column is not None else None
    return counts, width, id_kind


def _check_vector_type(schema: pa.Schema, name: str, url: str) -> pa.DataType:
    if name not in schema.names:
        raise InputReadError(f"cannot read {url}: no vector column {name!r}; columns: "
                             f"{', '.join(schema.names)} (set vector_column=)")
    vtype = schema.field(name).type
    if not ((pa.types.is_list(vtype) or pa.types.is_large_list(vtype)
             or pa.types.is_fixed_size_list(vtype)) and pa.types.is_floating(vtype.value_type)):
        raise InputReadError(f"cannot read {url}: vector column {name!r} must be a list, "
                             f"large_list or fixed_size_list of float16/32/64, got {vtype}")
    return vtype


def _check_id_type(schema: pa.Schema, name: str, url: str) -> str:
    if name not in schema.names:
        raise InputReadError(f"cannot read {url}: no id column {name!r}; columns: "
                             f"{', '.join(schema.names)} (set id_column=, or id_column=None "
                             f"to use global row positions)")
    itype = schema.field(name).type
    if pa.types.is_dictionary(itype):
        itype = itype.value_type
    if pa.types.is_integer(itype):
        return "int"
    if pa.types.is_string(itype) or pa.types.is_large_string(itype) or (
            pa.types.is_string_view(itype)):
        return "str"
    raise InputReadError(f"cannot read {url}: id column {name!r} must be an integer or string "
                         f"column, got {itype}")


# -- reading --------------------------------------------------------------------------------


@dataclass
class _Chunk:
    """Columns of consecutive rows of a Parquet / Arrow split, starting at file row
    ``row_start``."""

    row_start: int
    vectors: pa.Array | None
    ids: pa.Array | None
    bytes_read: int


def _read_buffer(fs: Any) -> int:
    """Parquet read-buffer size: 1 MiB on a local disk, 8 MiB on remote stores."""
    return 1 << 20 if is_local(fs) else 8 << 20


def _arrow_chunks(split: Split, vector_column: str | None, id_column: str | None,
                  batch_rows: int, storage_options: Mapping[str, Any] | None,
                  filesystem: Any = None, limit: int | None = None) -> Iterator[_Chunk]:
    """The split's rows, at most ``batch_rows`` at a time, reading only its row groups /
    record batches and the needed columns (``vector_column`` None: the ids only).
    ``limit``: only the first ``limit`` rows (Parquet pages are streamed, so a look at a
    split's head costs about a page)."""
    expected = split.rows if limit is None else min(limit, split.rows)
    fs, path = fs_for(split.url, storage_options, filesystem)
    columns = (([vector_column] if vector_column is not None else [])
               + ([id_column] if id_column is not None else []))
    # No fsspec cache: pyarrow issues one read per column chunk / message, so every request
    # is exactly the bytes it needs (a readahead block would fetch unrelated row groups).
    with fs.open(path, "rb", cache_type="none") as raw:
        f = CountingFile(raw)
        seen = 0
        if split.format == "parquet":
            # Pages are streamed through a read buffer instead of pre-buffering whole column
            # chunks: a 100 MB row group costs a few MB of memory, not 2-3x its size. Remote
            # stores get a larger buffer (fewer, bigger range requests).
            pf = pq.ParquetFile(f, pre_buffer=False, buffer_size=_read_buffer(fs))
            schema = pf.schema_arrow
            meta = pf.metadata
            if (split.row_groups and split.row_groups[-1] >= meta.num_row_groups) or sum(
                    meta.row_group(i).num_rows for i in split.row_groups) != split.rows:
                raise InputReadError(f"cannot read {split.url}: the file changed since it was "
                                     f"planned (row groups {split.row_groups} no longer hold "
                                     f"rows {split.row_start}..{split.row_stop})")
            if vector_column is not None:
                _check_vector_type(schema, vector_column, split.url)
            if id_column is not None:
                _check_id_type(schema, id_column, split.url)
            batches: Iterable[pa.RecordBatch] = pf.iter_batches(
                batch_size=max(1, min(batch_rows, expected)), row_groups=list(split.row_groups),
                columns=columns)
        else:
            reader = ipc.open_file(f)
            if vector_column is not None:
                _check_vector_type(reader.schema, vector_column, split.url)
            if id_column is not None:
                _check_id_type(reader.schema, id_column, split.url)
            if split.row_groups and split.row_groups[-1] >= reader.num_record_batches:
                raise InputReadError(f"cannot read {split.url}: the file changed since it was "
                                     f"planned (record batch {split.row_groups[-1]} is gone)")
            batches = (record_batch.slice(start, batch_rows)
                       for record_batch in map(reader.get_batch, split.row_groups)
                       for start in range(0, record_batch.num_rows, batch_rows))
        counted = 0
        for record_batch in batches:   # (expected >= 1: a split has rows, a limit too)
            if record_batch.num_rows == 0:
                continue
            record_batch = record_batch.slice(0, expected - seen)
            yield _Chunk(split.row_start + seen,
                         record_batch.column(vector_column) if vector_column is not None
                         else None,
                         record_batch.column(id_column) if id_column is not None else None,
                         f.count - counted)
            counted = f.count
            seen += record_batch.num_rows
            if seen >= expected:  # (pulling one more batch would decode it for nothing)
                break
    if seen != expected:
        raise InputReadError(f"cannot read {split.url}: read {seen} rows where the plan has "
                             f"{split.rows} (rows {split.row_start}..{split.row_stop}); the "
                             f"file changed since it was planned")


def _npy_batches(split: Split, *, ids_url: str | None, dim: int | None, batch_rows: int,
                 reject_zero_vectors: bool, max_abs_value: float,
                 storage_options: Mapping[str, Any] | None,
                 filesystem: Any) -> Iterator[Batch]:
    fs, path = fs_for(split.url, storage_options, filesystem)
    header = npy_header(fs, path, split.url)
    if header.shape[0] < split.row_stop:
        raise InputReadError(f"cannot read {split.url}: it has {header.shape[0]} rows, the plan "
                             f"reads rows {split.row_start}..{split.row_stop}; the file changed "
                             f"since it was planned")
    width = header.shape[1]
    dim = width if dim is None else dim
    ids_fs = ids_path = ids_header = None
    if ids_url is not None:
        ids_fs, ids_path = fs_for(ids_url, storage_options, fs)
        ids_header = guard(ids_url, npy_header, ids_fs, ids_path, ids_url, True)
    metadata_bytes = header.offset + (ids_header.offset if ids_header else 0)
    for start in range(split.row_start, split.row_stop, batch_rows):
        stop = min(start + batch_rows, split.row_stop)
        n = stop - start
        global_start = split.global_row_offset + start - split.row_start
        data = read_range(fs, path, split.url, header, start, stop)
        bytes_read = len(data) + metadata_bytes
        metadata_bytes = 0
        with np.errstate(over="ignore"):
            values = np.frombuffer(data, header.dtype).reshape(n, width).astype(np.float32)
        if ids_header is not None:
            id_data = read_range(ids_fs, ids_path, ids_url, ids_header, global_start,
                                  global_start + n)
            bytes_read += len(id_data)
            raw_ids = np.frombuffer(id_data, ids_header.dtype)
            ids = (raw_ids.astype(object) if raw_ids.dtype.kind == "U"
                   else int64_ids(raw_ids, ids_url, global_start))
        else:
            ids = np.arange(global_start, global_start + n, dtype=np.int64)
        right_length = np.full(n, width == dim)
        if width != dim:  # every row rejected
            values = zero_rows(n, dim)
        yield check_rows(source=split.url, row_start=start, global_row_offset=global_start,
                          ids=ids, id_null=np.zeros(n, bool), vectors=values,
                          vector_null=np.zeros(n, bool), right_length=right_length,
                          lengths=width, reject_zero_vectors=reject_zero_vectors,
                          max_abs_value=max_abs_value, bytes_read=bytes_read)


def iter_split(split: Split, *, vector_column: str = "embedding", id_column: str | None = "id",
               ids_url: str | None = None, dim: int | None = None, batch_rows: int = 8192,
               reject_zero_vectors: bool = True, max_abs_value: float = MAX_ABS_VALUE,
               storage_options: Mapping[str, Any] | None = None,
               filesystem: Any = None, limit_rows: int | None = None) -> Iterator[Batch]:
    """Read ``split`` as batches of at most ``batch_rows`` rows, in row order.

    Args:
        split: from :func:`plan_splits`.
        vector_column, id_column: Parquet / Arrow columns (ignored for NPY). ``id_column`` None
            uses each row's global position as its id.
        ids_url: NPY inputs only: an NPY of ids in global row order (see the module docstring);
            None uses global positions.
        dim: the vector width to accept; other lengths are rejected as ``wrong_dimension``.
            None takes the width from the file (``fixed_size_list`` size, NPY columns), or, for
            variable-length lists, the most common length in each batch: pass it (ReadEmbeddings
            resolves it once for all splits).
        reject_zero_vectors: reject all-zero vectors (``zero_vector``).
        max_abs_value: reject finite vectors holding a value beyond ``+/-max_abs_value``
            (``out_of_range``): the limit of the codecs the rows go to (see
            :func:`semq_transforms.codecs.max_abs_value`); the default is every codec's.
        storage_options, filesystem: how to reach the files: an fsspec filesystem to reuse, or
            options to build one.
        limit_rows: read only the split's first ``limit_rows`` rows (a cheap look at its
            head, as the query sample takes); None reads it all.

    Yields:
        :class:`Batch` es covering the split's rows (or its first ``limit_rows``) exactly
        once.

    Raises:
        InputReadError: the file cannot be read (names the file and the problem).
    """
    if type(batch_rows) is not int or batch_rows < 1:
        raise ValueError(f"batch_rows must be an int >= 1, got {batch_rows!r}")
    if limit_rows is not None and (type(limit_rows) is not int or limit_rows < 1):
        raise ValueError(f"limit_rows must be None or an int >= 1, got {limit_rows!r}")
    with read_errors(split.url):
        if split.format == "npy":
            if limit_rows is not None and limit_rows < split.rows:
                split = dataclasses.replace(split, row_stop=split.row_start + limit_rows)
            yield from _npy_batches(split, ids_url=ids_url, dim=dim, batch_rows=batch_rows,
                                    reject_zero_vectors=reject_zero_vectors,
                                    max_abs_value=max_abs_value,
                                    storage_options=storage_options, filesystem=filesystem)
            return
        if split.format not in FORMATS:
            raise ValueError(f"unknown split format {split.format!r}")
        for chunk in _arrow_chunks(split, vector_column, id_column, batch_rows,
                                   storage_options, filesystem, limit_rows):
            n = len(chunk.vectors)
            global_start = split.global_row_offset + chunk.row_start - split.row_start
            vectors, vector_null, right_length, dim = vectors_from_arrow(chunk.vectors, dim)
            if chunk.ids is None:
                ids, id_null = np.arange(global_start, global_start + n), np.zeros(n, bool)
            else:
                ids, id_null = ids_from_arrow(chunk.ids, url=split.url,
                                              row_start=chunk.row_start)
            yield check_rows(source=split.url, row_start=chunk.row_start,
                              global_row_offset=global_start, ids=ids, id_null=id_null,
                              vectors=vectors, vector_null=vector_null,
                              right_length=right_length,
                              lengths=vector_lengths(chunk.vectors),
                              reject_zero_vectors=reject_zero_vectors,
                              max_abs_value=max_abs_value, bytes_read=chunk.bytes_read)


def iter_split_head(split: Split, accepted_rows: int, **options: Any) -> Iterator[Batch]:
    """The first rows of ``split`` that hold ``accepted_rows`` accepted rows (or all its rows
    if it has fewer), as :class:`Batch` es covering them exactly once (``options``: those of
    :func:`iter_split`, but ``limit_rows``).

    A look at a split's head (the query sample): it reads ``accepted_rows`` rows, and only
    when some of them are rejected it reads again from the start, four times as many rows
    each time, so the rows it yields do not depend on how rows are batched.
    """
    if type(accepted_rows) is not int or accepted_rows < 1:
        raise ValueError(f"accepted_rows must be an int >= 1, got {accepted_rows!r}")
    limit = accepted_rows
    while True:
        batches = list(iter_split(split, limit_rows=limit, **options))
        if limit >= split.rows or sum(b.accepted for b in batches) >= accepted_rows:
            yield from batches
            return
        limit = min(4 * limit, split.rows)


def read_split(split: Split, *, vector_column: str = "embedding", id_column: str | None = "id",
               ids_url: str | None = None, dim: int | None = None,
               reject_zero_vectors: bool = True, max_abs_value: float = MAX_ABS_VALUE,
               storage_options: Mapping[str, Any] | None = None,
               filesystem: Any = None) -> Batch:
    """The whole of ``split`` as one :class:`Batch` (see :func:`iter_split` for the
    arguments; a pipeline uses :func:`iter_split` to bound the size of its elements)."""
    batches = list(iter_split(split, vector_column=vector_column, id_column=id_column,
                              ids_url=ids_url, dim=dim, batch_rows=max(split.rows, 1),
                              reject_zero_vectors=reject_zero_vectors,
                              max_abs_value=max_abs_value,
                              storage_options=storage_options, filesystem=filesystem))
    if len(batches) == 1:
        return batches[0]
    width = dim if dim is not None else split.vector_width or 0
    ids = [b.ids for b in batches]
    return Batch(source=redact_url(split.url), row_start=split.row_start,
                 rows=sum(b.rows for b in batches), global_row_offset=split.global_row_offset,
                 ids=np.concatenate(ids) if ids else np.zeros(0, np.int64),
                 vectors=(np.concatenate([b.vectors for b in batches]) if batches
                          else np.zeros((0, width), np.float32)),
                 positions=(np.concatenate([b.positions for b in batches]) if batches
                            else np.zeros(0, np.int64)),
                 rejected=tuple(d for b in batches for d in b.rejected),
                 bytes_read=sum(b.bytes_read for b in batches))


def ids_are_positions(format: str, id_column: str | None, ids_url: str | None) -> bool:
    """Whether rows of this ``format`` get their global positions as ids (no id column, or
    NPY without an ids file): such ids are unique by construction."""
    return ids_url is None if format == "npy" else id_column is None


def iter_split_ids(split: Split, *, id_column: str | None = "id", ids_url: str | None = None,
                   batch_rows: int = 65536, storage_options: Mapping[str, Any] | None = None,
                   filesystem: Any = None) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """The ids of ``split`` without its vectors (only the id column, or the ``ids_url`` range):
    ``(ids, id_null, positions)`` per chunk of at most ``batch_rows`` rows, in row order.

    ``ids``: int64 or object (``str``) ``[n]``; ``id_null``: bool ``[n]``; ``positions``: int64
    ``[n]`` global positions. Rows without an id source (``id_column`` None, NPY without
    ``ids_url``) get their global positions as ids, as :func:`iter_split` does.
    """
    def ranges() -> Iterator[tuple[int, np.ndarray]]:
        for start in range(split.row_start, split.row_stop, batch_rows):
            g0 = split.global_row_offset + start - split.row_start
            stop = min(start + batch_rows, split.row_stop)
            yield g0, np.arange(g0, g0 + stop - start, dtype=np.int64)

    with read_errors(split.url):
        if ids_are_positions(split.format, id_column, ids_url):
            for _, positions in ranges():
                yield positions, np.zeros(positions.shape[0], bool), positions
        elif split.format == "npy":
            fs, _ = fs_for(split.url, storage_options, filesystem)
            ids_fs, ids_path = fs_for(ids_url, storage_options, fs)
            header = guard(ids_url, npy_header, ids_fs, ids_path, ids_url, True)
            for g0, positions in ranges():
                raw = np.frombuffer(read_range(ids_fs, ids_path, ids_url, header, g0,
                                               g0 + positions.shape[0]), header.dtype)
                ids = (raw.astype(object) if raw.dtype.kind == "U"
                       else int64_ids(raw, ids_url, g0))
                yield ids, np.zeros(positions.shape[0], bool), positions
        else:
            for chunk in _arrow_chunks(split, None, id_column, batch_rows, storage_options,
                                       filesystem):
                g0 = split.global_row_offset + chunk.row_start - split.row_start
                ids, id_null = ids_from_arrow(chunk.ids, url=split.url,
                                              row_start=chunk.row_start)
                yield ids, id_null, np.arange(g0, g0 + len(chunk.ids), dtype=np.int64)


def find_duplicate_ids(batches: Iterable[Batch]) -> dict[Any, list[int]]:
    """Ids accepted more than once across ``batches``, each mapped to its global positions
    (ascending), in id order.

    Splits are read independently, so duplicates can only be found after reading: this is the
    in-memory form of that global step (all accepted ids at once; fine for tests and data of a
    few hundred million ids). A pipeline does the same per shard once rows are cut into
    shards, or with a keyed count over ``(id, position)`` pairs.
    """
    batches = list(batches)
    if not batches:
        return {}
    ids = np.concatenate([b.ids for b in batches])
    positions = np.concatenate([b.positions for b in batches])
    if not ids.size:
        return {}
    unique, inverse, counts = np.unique(ids, return_inverse=True, return_counts=True)
    duplicated = np.flatnonzero(counts > 1)
    if not duplicated.size:
        return {}
    found: dict[Any, list[int]] = {}
    for index in duplicated:
        value = unique[index]
        key = value.item() if isinstance(value, np.generic) else value
        found[key] = sorted(int(p) for p in positions[inverse == index])
    return found


# -- dead letters ---------------------------------------------------------------------------

def filesystem_for(url: str, storage_options: Mapping[str, Any] | None = None,
                   filesystem: Any = None) -> Any:
    """An fsspec filesystem for ``url``: ``filesystem`` if it serves the URL's protocol, else
    a new one from ``storage_options`` (for callers that read many splits)."""
    return fs_for(url, storage_options, filesystem)[0]
