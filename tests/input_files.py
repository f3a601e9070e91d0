"""Small embedding input files for the input-stage tests (Parquet, Arrow IPC, NPY), written
through fsspec so the same helpers fill local folders, ``memory://`` and ``s3://``."""

from __future__ import annotations

from typing import Any

import fsspec
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import ipc

DIM = 8


def vectors(n: int, seed: int, dim: int = DIM) -> np.ndarray:
    """Seeded float32 [n, dim] with no zero rows."""
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)
    x[:, 0] += np.float32(3.0)  # keeps every row away from all-zero
    return x


def fixed_list(x: np.ndarray, value_type: pa.DataType | None = None) -> pa.Array:
    return pa.FixedSizeListArray.from_arrays(pa.array(x.ravel(), value_type or pa.float32()),
                                             x.shape[1])


def _open(url: str, storage_options: dict[str, Any] | None) -> Any:
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    if "file" in (fs.protocol if isinstance(fs.protocol, tuple) else (fs.protocol,)):
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    return fs.open(path, "wb")


def write_parquet(url: str, table: pa.Table, *, row_group_size: int,
                  storage_options: dict[str, Any] | None = None,
                  data_page_size: int | None = None) -> str:
    with _open(url, storage_options) as f:
        pq.write_table(table, f, row_group_size=row_group_size, data_page_size=data_page_size)
    return url


def write_arrow(url: str, table: pa.Table, *, batch_rows: int,
                storage_options: dict[str, Any] | None = None) -> str:
    """An Arrow IPC file with record batches of ``batch_rows`` rows."""
    with _open(url, storage_options) as f, ipc.new_file(f, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=batch_rows):
            writer.write_batch(batch)
    return url


def write_npy(url: str, array: np.ndarray,
              storage_options: dict[str, Any] | None = None) -> str:
    with _open(url, storage_options) as f:
        np.save(f, array, allow_pickle=False)
    return url


def embedding_table(ids: Any, x: np.ndarray, *, fixed: bool = True) -> pa.Table:
    """``id`` + ``embedding`` (fixed_size_list<float32>, or list<float32> if not ``fixed``)
    columns."""
    vectors = fixed_list(x) if fixed else pa.array(list(x), pa.list_(pa.float32()))
    return pa.table({"id": pa.array(ids), "embedding": vectors})


def bad_rows_table() -> tuple[pa.Table, dict[int, str]]:
    """14 rows of string ids and ``list<float32>`` vectors of width 4 that trigger every reject
    reason; returns the table and ``{row: reason}`` of the rows to reject (zero_vector only
    when zero vectors are rejected)."""
    good = [1.0, 2.0, 3.0, 4.0]
    rows: list[tuple[str | None, list[float | None] | None, str | None]] = [
        ("a0", good, None),
        (None, good, "null_id"),
        ("a2", None, "null_vector"),
        ("a3", [1.0, 2.0, 3.0], "wrong_dimension"),
        ("a4", [1.0, float("nan"), 3.0, 4.0], "non_finite"),
        ("a5", [1.0, None, 3.0, 4.0], "non_finite"),
        ("a6", [0.0, 0.0, 0.0, 0.0], "zero_vector"),
        ("a7", [float("inf"), 2.0, 3.0, 4.0], "non_finite"),
        ("a8", good, None),
        (None, None, "null_id"),               # the first reason that applies wins
        ("a10", [1.0, 2.0, 3.0, 4.0, 5.0], "wrong_dimension"),
        ("a11", [-1.0, 0.5, 0.25, 2.0], None),
        ("a12", [1.0, 2.0, -1e17, 4.0], "out_of_range"),  # beyond every codec's limit
        ("\u00e9" * 8193, None, "id_too_long"),  # 16386 UTF-8 bytes (the id's reason first)
    ]
    table = pa.table({
        "id": pa.array([r[0] for r in rows], pa.string()),
        "embedding": pa.array([r[1] for r in rows], pa.list_(pa.float32())),
    })
    return table, {i: r[2] for i, r in enumerate(rows) if r[2] is not None}
