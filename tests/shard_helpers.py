"""Builders shared by the shard tests: small real shards, and a re-writer that produces a
valid Arrow container with an edited header or table (to corrupt content, not the container)."""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import pyarrow as pa
import pytest

from semq_transforms.errors import IntegrityError
from semq_transforms.format._header import PARAMS_KEY
from semq_transforms.format.shard import EncodedLevel, read_shard, verify_shard, write_shard
from semq_transforms.levels import encode_levels
from tests.conftest import make_anisotropic


def make_levels(n: int = 300, d: int = 32, specs: Sequence[str] = ("semq1", "semq4"),
                seed: int = 5) -> tuple[np.ndarray, list[EncodedLevel]]:
    x = make_anisotropic(n, d, seed=seed)
    return x, encode_levels(x, list(specs))


def string_ids(n: int) -> list[str]:
    """Ids with multi-byte UTF-8, an empty string and a 4-byte character."""
    ids = [f"doc-{i:05d}-ü" for i in range(n)]
    ids[1], ids[2] = "", "emoji-\U0001F600"
    return ids


def shard_bytes(ids: Any, levels: Sequence[EncodedLevel], **kwargs: Any) -> bytes:
    buf = io.BytesIO()
    write_shard(buf, ids=ids, levels=levels, path=kwargs.pop("path", "runs/t/s.semq"),
                **kwargs)
    return buf.getvalue()


def check_only(data_bytes: bytes, part: str) -> None:
    """verify_shard names exactly ``part``; read_shard raises IntegrityError naming it."""
    check = verify_shard(io.BytesIO(data_bytes))
    assert not check.ok
    assert [p.split(":")[0] for p in check.problems] == [part], check.problems
    f = io.BytesIO(data_bytes)
    f.name = "runs/x/shard-00007.semq"
    with pytest.raises(IntegrityError) as err:
        read_shard(f)
    assert "runs/x/shard-00007.semq" in str(err.value) and part in str(err.value)
    read_shard(io.BytesIO(data_bytes), verify=False)  # the structure itself is fine


def header_of(data: bytes) -> dict[str, Any]:
    return json.loads(pa.ipc.open_file(data).schema.metadata[b"semq"])


def params_texts(data: bytes) -> list[Any]:
    """Record batch 0's ``semq.params``: each level's params in base64 (format 2.x)."""
    _, metadata = pa.ipc.open_file(data).get_batch_with_custom_metadata(0)
    return json.loads(metadata[PARAMS_KEY.encode()])


def dump_header(header: dict[str, Any]) -> bytes:
    return json.dumps(header, sort_keys=True, separators=(",", ":")).encode()


def rewrite(data: bytes, *, edit_header: Callable[[dict], None] | None = None,
            raw_header: bytes | None = None,
            edit_table: Callable[[pa.Table], pa.Table] | None = None,
            compression: str | None = None) -> bytes:
    """Re-write shard ``data`` with pyarrow: a valid IPC file whose header / table are edited
    (the stored digests are kept, so edited content no longer matches them).

    ``edit_header`` sees each level's params text as ``levels[i]["params"]`` (where format 1.x
    kept it); what it leaves there is written back to record batch 0's ``semq.params``.
    """
    table = pa.ipc.open_file(data).read_all()
    header = header_of(data)
    texts = params_texts(data)
    for level, text in zip(header["levels"], texts):
        level["params"] = text
    if edit_header is not None:
        edit_header(header)
    levels = header.get("levels")
    if isinstance(levels, list):
        texts = [lv.pop("params", None) if isinstance(lv, dict) else None for lv in levels]
    raw = raw_header if raw_header is not None else dump_header(header)
    if edit_table is not None:
        table = edit_table(table)
    table = table.replace_schema_metadata({"semq": raw})
    sink = pa.BufferOutputStream()
    options = pa.ipc.IpcWriteOptions(compression=compression)
    params = json.dumps(texts, separators=(",", ":")).encode()
    with pa.ipc.new_file(sink, table.schema, options=options) as writer:
        for i, batch in enumerate(table.to_batches(max_chunksize=65536)):
            writer.write_batch(batch, custom_metadata={PARAMS_KEY: params} if i == 0 else None)
    return sink.getvalue().to_pybytes()


def replace_column(table: pa.Table, name: str, array: pa.Array,
                   field: pa.Field | None = None) -> pa.Table:
    index = table.schema.get_field_index(name)
    return table.set_column(index, field or table.schema.field(index), array)
