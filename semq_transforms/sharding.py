"""Which rows each shard holds: the one rule shared by the ingestion job (rows are global
input positions, rejected rows included) and ``build_index`` (rows of an array).

Shards are contiguous ranges of ``rows_per_shard`` rows, and a remainder of fewer than
:data:`MIN_TAIL_FRACTION` of a shard joins the last full one. Why: a shard's params (its
frame and quantizer tables) cost the same whatever its rows, so a small last shard would be
the least compressed one, at a few hundred rows bigger than its float32 input.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["MIN_TAIL_FRACTION", "ShardLayout"]

#: A last shard of fewer than this fraction of ``rows_per_shard`` positions joins the shard
#: before it (:class:`ShardLayout`).
MIN_TAIL_FRACTION = 0.5


@dataclass(frozen=True)
class ShardLayout:
    """Which global input positions each shard holds: ``[n * rows_per_shard, (n + 1) *
    rows_per_shard)`` for shard ``n``, except the last, which runs to ``total_rows``. The
    positions after the last full shard form a shard of their own only when they are at least
    :data:`MIN_TAIL_FRACTION` of a shard; fewer join the last full one. So with two or more
    shards every shard holds between ``rows_per_shard / 2`` and ``1.5 * rows_per_shard``
    positions (one shard holds the whole input, however small).

    Attributes:
        rows_per_shard: positions per shard (``encode.rows_per_shard``).
        total_rows: positions in the input (rows read, accepted or not).
    """

    rows_per_shard: int
    total_rows: int

    def __post_init__(self) -> None:
        if type(self.rows_per_shard) is not int or self.rows_per_shard < 1:
            raise ValueError(f"rows_per_shard must be an int >= 1, got {self.rows_per_shard!r}")
        if type(self.total_rows) is not int or self.total_rows < 0:
            raise ValueError(f"total_rows must be an int >= 0, got {self.total_rows!r}")

    @property
    def shards(self) -> int:
        """Number of shards (0 for an empty input)."""
        full, tail = divmod(self.total_rows, self.rows_per_shard)
        if full and tail < MIN_TAIL_FRACTION * self.rows_per_shard:
            return full
        return full + (1 if tail else 0)

    def shard_of(self, positions: np.ndarray) -> np.ndarray:
        """int64 shard number of each global position in int ``positions`` (any shape);
        positions past the input count for the last shard."""
        n = np.asarray(positions, dtype=np.int64) // self.rows_per_shard
        return np.minimum(n, max(self.shards - 1, 0))

    def shard_of_position(self, position: int) -> int:
        """:meth:`shard_of` one position."""
        return min(position // self.rows_per_shard, max(self.shards - 1, 0))

    def bounds(self, shard_no: int) -> tuple[int, int]:
        """``(start, stop)``: shard ``shard_no`` holds positions ``[start, stop)``."""
        start = shard_no * self.rows_per_shard
        last = shard_no == self.shards - 1
        return start, self.total_rows if last else start + self.rows_per_shard

    def ranges(self) -> list[tuple[int, int]]:
        """:meth:`bounds` of every shard, in order."""
        return [self.bounds(n) for n in range(self.shards)]
