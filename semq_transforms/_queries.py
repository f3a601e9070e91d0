"""Query vectors for ``semq-index search``: read from a file, or restored from the index by id.

Files: ``.npy`` (float ``[nq, d]`` or ``[d]``; never unpickled), Parquet (``.parquet``) and
Arrow IPC files (``.arrow``, ``.feather``; an IPC stream is read too) with a list or
fixed_size_list column of floats (``column``: which; default the only such column). Every
error is a :class:`~semq_transforms.errors.InvalidInputError` naming the file (URL redacted).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from semq_transforms._formats import SUFFIX_FORMATS, infer_format
from semq_transforms._urls import check_url_credentials, redact_url
from semq_transforms.errors import InvalidInputError

#: Accepted query file suffixes (lower case) and their format.

#: Ids named in an "unknown ids" message, at most.
_NAMED_IDS = 20


def load_queries(url: str, *, column: str | None = None) -> np.ndarray:
    """The query vectors in the file at ``url`` (a path or fsspec URL) as float32 ``[nq, d]``
    (a ``.npy`` vector ``[d]`` is one query). Values are not checked here (``check_vectors``
    does: finite, not empty, the index's dimension)."""
    import fsspec

    where = redact_url(url)
    try:
        check_url_credentials(url)
    except ValueError as exc:
        raise InvalidInputError(f"queries {exc}") from None
    name = url.rsplit("/", 1)[-1].partition("?")[0]
    suffix = "." + name.rpartition(".")[2].lower() if "." in name else ""
    fmt = infer_format(url)
    if fmt == "npy" and column is not None:
        raise InvalidInputError(f"queries {where}: --query-column is for Parquet and Arrow "
                                f"files, not .npy")
    try:
        with fsspec.open(url, "rb") as f:
            if fmt is None:
                raise InvalidInputError(f"queries {where}: unknown file type "
                                        f"{suffix or '(none)'!r}; use {', '.join(SUFFIX_FORMATS)}")
            if fmt == "npy":
                vectors = _npy(f, where)
            else:
                vectors = _table_column(_read_table(f, fmt, column, where), column, where)
    except InvalidInputError:
        raise
    except FileNotFoundError:
        raise InvalidInputError(f"queries {where}: no such file") from None
    except (OSError, ValueError, EOFError) as exc:       # pyarrow's errors included
        raise InvalidInputError(f"cannot read queries {where}: {exc}") from None
    if vectors.dtype.kind != "f":
        raise InvalidInputError(f"queries {where}: need float vectors, got dtype "
                                f"{vectors.dtype}")
    return vectors[None, :] if vectors.ndim == 1 else vectors


def _npy(f: Any, where: str) -> np.ndarray:
    if f.read(6) != b"\x93NUMPY":       # np.load would take it for a pickle
        raise InvalidInputError(f"queries {where}: not a .npy file")
    f.seek(0)
    array = np.load(f, allow_pickle=False)
    if not isinstance(array, np.ndarray) or array.ndim not in (1, 2):
        shape = list(getattr(array, "shape", ()))
        raise InvalidInputError(f"queries {where}: need an array [nq, d] or [d], got shape "
                                f"{shape}")
    return array


def _read_table(f: Any, fmt: str, column: str | None, where: str) -> Any:
    """The table (only ``column`` of it, once chosen) of a Parquet or Arrow IPC file."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import ipc

    if fmt == "parquet":
        parquet = pq.ParquetFile(f)
        name = _pick_column(parquet.schema_arrow, column, where)
        return parquet.read(columns=[name])
    try:
        table = ipc.open_file(f).read_all()
    except pa.ArrowInvalid:              # not the IPC file format: an IPC stream?
        f.seek(0)
        table = ipc.open_stream(f).read_all()
    return table.select([_pick_column(table.schema, column, where)])


def _is_float_list(type_: Any) -> bool:
    import pyarrow as pa

    return ((pa.types.is_list(type_) or pa.types.is_large_list(type_)
             or pa.types.is_fixed_size_list(type_))
            and pa.types.is_floating(type_.value_type))


def _pick_column(schema: Any, column: str | None, where: str) -> str:
    """``column`` if it is a list-of-float column of ``schema``, or the only such column."""
    candidates = [field.name for field in schema if _is_float_list(field.type)]
    described = ", ".join(f"{field.name} ({field.type})" for field in schema) or "none"
    if column is not None:
        if column not in candidates:
            raise InvalidInputError(f"queries {where}: no list-of-float column {column!r}; "
                                    f"its columns: {described}")
        return column
    if len(candidates) != 1:
        raise InvalidInputError(
            f"queries {where}: " + ("no list-of-float column" if not candidates else
                                    f"{len(candidates)} list-of-float columns")
            + f" (its columns: {described}); pick one with --query-column")
    return candidates[0]


def _table_column(table: Any, column: str | None, where: str) -> np.ndarray:
    """The one list column of ``table`` as ``[rows, d]`` (every row of the same length)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    name = table.column_names[0]
    array = table.column(0).combine_chunks()
    if array.null_count:
        raise InvalidInputError(f"queries {where}: column {name!r} has {array.null_count} "
                                f"null row(s)")
    lengths = np.asarray(pc.list_value_length(array).to_numpy(zero_copy_only=False))
    if lengths.size and (lengths != lengths[0]).any():
        row = int(np.flatnonzero(lengths != lengths[0])[0])
        raise InvalidInputError(f"queries {where}: column {name!r} rows have different "
                                f"lengths ({lengths[0]} in row 0, {lengths[row]} in row {row})")
    values = array.flatten()
    if values.null_count:
        raise InvalidInputError(f"queries {where}: column {name!r} holds null values")
    if values.type == pa.float16():
        values = values.cast(pa.float32())
    dim = int(lengths[0]) if lengths.size else 0
    return values.to_numpy(zero_copy_only=False).reshape(len(array), dim)


def parse_ids(texts: Iterable[str], id_type: str) -> list[int | str]:
    """The ids in ``--query-ids`` values (``ID[,ID...]`` each): ints for an ``"int64"``
    index, strings for a ``"string"`` one (a text that is not an int stays a string: an id
    the int64 index does not hold)."""
    tokens = [t.strip() for text in texts for t in text.split(",")]
    if not tokens or any(not t for t in tokens):
        raise InvalidInputError("--query-ids: empty id (use ID[,ID...])")
    if id_type != "int64":
        return list(tokens)
    return [int(t) if _is_int(t) else t for t in tokens]


def _is_int(text: str) -> bool:
    try:
        return -(2**63) <= int(text) < 2**63
    except ValueError:
        return False


def restored_queries(index: Any, ids: Sequence[int | str], *, level: int = -1) -> np.ndarray:
    """float32 ``[len(ids), d]``: the vectors of ``ids`` restored from ``index`` (an
    :class:`~semq_transforms.index.Index`), in the order given; an id it does not hold is an
    InvalidInputError naming the ids and the index version."""
    found: dict[int | str, np.ndarray] = {}
    for batch_ids, vectors in index.restore(list(dict.fromkeys(ids)), level=level):
        found.update(zip(batch_ids.tolist(), vectors))
    missing = [i for i in dict.fromkeys(ids) if i not in found]
    if missing:
        raise InvalidInputError(f"--query-ids: not in {index.url} version {index.version} "
                                f"({index.id_type} ids): {_name_ids(missing)}")
    return np.stack([found[i] for i in ids]).astype(np.float32, copy=False)


def _name_ids(ids: Sequence[Any]) -> str:
    named = ", ".join(repr(i) if isinstance(i, str) else str(i) for i in ids[:_NAMED_IDS])
    return named + (f" and {len(ids) - _NAMED_IDS} more" if len(ids) > _NAMED_IDS else "")
