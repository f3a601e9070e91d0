"""Hostile bytes (FORMAT.md, "Untrusted input"): mutated real shards are refused with a
FormatError or read back identical, verify_shard reports instead of raising, and no file makes
the reader allocate much memory."""

from __future__ import annotations

import io
import random
import resource
import struct
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from semq_transforms.errors import FormatError
from semq_transforms.format.fingerprint import row_fingerprints
from semq_transforms.format.shard import Shard, read_shard, read_shard_header, verify_shard
from tests.shard_helpers import make_levels, rewrite, shard_bytes, string_ids

#: Most a read of a mutated ~10 KB shard may allocate (Arrow pool peak, and peak RSS growth).
MEMORY_LIMIT = 64 << 20


@dataclass(frozen=True)
class Base:
    data: bytes
    shard: Shard
    bodies: tuple[int, int]  # byte range of the record batch bodies (ids, codes, fingerprints)


def _base(ids, specs, *, fingerprints: bool = False) -> Base:
    x, levels = make_levels(120, 16, specs, seed=11)
    data = shard_bytes(ids, levels, fingerprints=row_fingerprints(x) if fingerprints else None)
    buf = pa.py_buffer(data)
    messages = pa.ipc.MessageReader.open_stream(buf.slice(8))
    messages.read_next_message()  # the schema
    body = messages.read_next_message().body
    start = body.address - buf.address
    return Base(data, read_shard(io.BytesIO(data)), (start, start + body.size))


BASES = {"int64": _base(np.arange(120, dtype=np.int64) * 5 - 7, ("semq1", "int8"),
                        fingerprints=True),
         "string": _base(string_ids(120), ("int4",)),
         "refine": _base(np.arange(120, dtype=np.int64), ("semq1", "semqr2"))}


#: Proxy pools stay alive: buffers allocated through one may outlive the ``with`` block, and
#: freeing such a buffer after its pool is gone crashes the process.
_POOLS: list[pa.MemoryPool] = []


@contextmanager
def arrow_peak() -> Iterator[Callable[[], int]]:
    """Route pyarrow's default allocations through a fresh proxy pool; yield its peak."""
    pool = pa.proxy_memory_pool(pa.default_memory_pool())
    _POOLS.append(pool)
    previous = pa.default_memory_pool()
    pa.set_memory_pool(pool)
    try:
        yield pool.max_memory
    finally:
        pa.set_memory_pool(previous)


def _max_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


@st.composite
def mutated(draw) -> tuple[str, bytes]:
    """A base shard and 1-3 mutations of its bytes, at positions spread uniformly over the
    file, its last 600 bytes (the footer), or its record batch bodies (ids and codes)."""
    which = draw(st.sampled_from(sorted(BASES)))
    base = BASES[which]
    data = bytearray(base.data)
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))  # positions: uniform, not shrunk-small
    for _ in range(draw(st.integers(1, 3))):
        n = len(data)
        op = draw(st.sampled_from(["truncate", "flip", "overwrite", "insert", "delete"]))
        if n == 0:
            op = "insert"
        lo, hi = {"file": (0, n), "footer": (max(n - 600, 0), n),
                  "bodies": base.bodies}[draw(st.sampled_from(["file", "footer", "bodies"]))]
        pos = min(rng.randrange(lo, hi), max(n - 1, 0)) if hi > lo else 0
        if op == "truncate":
            del data[pos:]
        elif op == "flip":
            data[pos] ^= 1 << rng.randrange(8)
        elif op == "overwrite":
            chunk = draw(st.one_of(st.binary(min_size=1, max_size=64),
                                   st.sampled_from([b"\x00" * 8, b"\xff" * 8, b"\x7f" * 4])))
            data[pos:pos + len(chunk)] = chunk[:n - pos]
        elif op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=16))
        else:
            del data[pos:pos + draw(st.integers(1, 64))]
    return which, bytes(data)


def _identical(got: Shard, want: Shard) -> bool:
    return (got.header == want.header and got.levels == want.levels
            and got.ids.dtype == want.ids.dtype and np.array_equal(got.ids, want.ids)
            and (got.fingerprints is None) == (want.fingerprints is None)
            and (got.fingerprints is None or np.array_equal(got.fingerprints,
                                                            want.fingerprints)))


_RSS_START: list[int] = []


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=mutated())
def test_mutated_shards_are_refused_or_read_identically(case):
    which, data = case
    base = BASES[which]
    if not _RSS_START:
        _RSS_START.append(_max_rss_bytes())
    with arrow_peak() as peak:
        try:
            shard = read_shard(io.BytesIO(data))
        except FormatError:
            shard = None
        check = verify_shard(io.BytesIO(data))
        try:
            header = read_shard_header(io.BytesIO(data))
        except FormatError:
            header = None
        assert peak() < MEMORY_LIMIT, f"reading a {len(data)}-byte file allocated {peak()} B"
    assert _max_rss_bytes() - _RSS_START[0] < MEMORY_LIMIT
    if shard is not None:
        assert _identical(shard, base.shard), "a mutated file was read as different content"
        assert header == shard.header
    assert check.ok == (shard is not None), check.problems
    event("read identical" if check.ok else f"refused: {check.problems[0].split(':')[0]}")
    assert all(isinstance(p, str) and p for p in check.problems)


def test_every_base_is_read_and_verified():
    for base in BASES.values():
        assert verify_shard(io.BytesIO(base.data)).ok
        assert read_shard_header(io.BytesIO(base.data)) == base.shard.header


def test_memory_probe_sees_ipc_reader_allocations():
    """The fuzz test's memory check is live: decompression inside pyarrow's IPC reader is
    counted by the probe (so a reader that decompressed would be caught)."""
    compressed = rewrite(BASES["int64"].data, compression="zstd")
    with arrow_peak() as peak:
        table = pa.ipc.open_file(compressed).read_all()
        assert peak() >= table.column("codes_1").chunk(0).buffers()[1].size


def test_decompression_bomb_is_refused_without_allocating():
    """A compressed batch whose first buffer declares 1 GiB uncompressed: pyarrow alone would
    allocate the 1 GiB before failing; the reader refuses the file first."""
    bomb = bytearray(rewrite(BASES["int64"].data, compression="zstd"))
    buf = pa.py_buffer(bytes(bomb))
    messages = pa.ipc.MessageReader.open_stream(buf.slice(8))
    messages.read_next_message()  # the schema
    body = messages.read_next_message().body
    body_offset = body.address - buf.address
    assert 0 < body_offset < len(bomb)
    struct.pack_into("<q", bomb, body_offset, 1 << 30)
    with arrow_peak() as peak:
        try:
            read_shard(io.BytesIO(bytes(bomb)))
        except FormatError as exc:
            assert "compressed" in str(exc)
        else:
            raise AssertionError("a compressed shard was read")
        assert peak() < MEMORY_LIMIT
