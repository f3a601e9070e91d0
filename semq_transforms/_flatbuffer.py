"""A bounds-checked reader of flatbuffer tables, for the Arrow IPC metadata the project reads
by hand (shard footers in ``format/_arrowio.py``, input-file footers in
``transforms/_ipc_footer.py``). Every read is checked against ``[lo, hi)``; a malformed buffer
calls ``fail(detail)`` and raises what it returns, so each caller keeps its own error type.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Any

U8, U16, I16 = struct.Struct("<B"), struct.Struct("<H"), struct.Struct("<h")
U32, I32, I64 = struct.Struct("<I"), struct.Struct("<i"), struct.Struct("<q")


class FlatBuffer:
    """Bounds-checked reads of one flatbuffer lying in ``data[lo:hi]`` (absolute positions)."""

    def __init__(self, data: bytes, lo: int, hi: int,
                 fail: Callable[[str], Exception]) -> None:
        self.data, self.lo, self.hi, self.fail = data, lo, hi, fail

    def struct(self, fmt: struct.Struct, pos: int) -> tuple[Any, ...]:
        if pos < self.lo or pos + fmt.size > self.hi:
            raise self.fail("reference out of bounds")
        return fmt.unpack_from(self.data, pos)

    def root(self) -> int:
        return self.lo + self.struct(U32, self.lo)[0]

    def _field(self, table: int, index: int) -> int | None:
        vtable = table - self.struct(I32, table)[0]
        vtable_size = self.struct(U16, vtable)[0]
        slot = 4 + 2 * index
        if slot + 2 > vtable_size:
            return None
        offset = self.struct(U16, vtable + slot)[0]
        return table + offset if offset else None

    def scalar(self, table: int, index: int, fmt: struct.Struct, default: int) -> int:
        pos = self._field(table, index)
        return default if pos is None else self.struct(fmt, pos)[0]

    def table(self, table: int, index: int) -> int | None:
        pos = self._field(table, index)
        return None if pos is None else pos + self.struct(U32, pos)[0]

    def vector(self, table: int, index: int, item_size: int) -> tuple[int, int]:
        """(position of the first item, item count); (0, 0) when the field is absent."""
        pos = self.table(table, index)
        if pos is None:
            return 0, 0
        count = self.struct(U32, pos)[0]
        if pos + 4 + count * item_size > self.hi:
            raise self.fail("vector runs past its end")
        return pos + 4, count
