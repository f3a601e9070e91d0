"""Shard layout: which rows each shard holds (``sharding.ShardLayout``), as the job's planner,
its Beam cut and ``build_index`` use it, and the gate that refuses a shard bigger than the
``validation.min_compression_ratio`` allows."""

from __future__ import annotations

import numpy as np
import pytest

from semq_transforms.build import build_index
from semq_transforms.index import Index
from semq_transforms.sharding import MIN_TAIL_FRACTION, ShardLayout
from semq_transforms.transforms.publish import Gate, gate_problems
from tests.conftest import make_anisotropic


@pytest.mark.parametrize("total, rows_per_shard, sizes", [
    (0, 100, []),
    (1, 100, [1]),                       # one shard holds the whole input, however small
    (149, 100, [149]),                   # 49 left over: fewer than half a shard, joins
    (150, 100, [100, 50]),               # exactly half a shard: a shard of its own
    (300, 100, [100, 100, 100]),
    (2_400, 1_000, [1_000, 1_400]),
    (2_500, 1_000, [1_000, 1_000, 500]),
    (7, 1, [1] * 7),
])
def test_a_remainder_under_half_a_shard_joins_the_last_one(total, rows_per_shard, sizes):
    layout = ShardLayout(rows_per_shard, total)
    assert layout.shards == len(sizes)
    assert [stop - start for start, stop in layout.ranges()] == sizes


def test_every_position_is_in_the_shard_whose_range_holds_it():
    rng = np.random.default_rng(3)
    for _ in range(300):
        rows_per_shard = int(rng.integers(1, 60))
        layout = ShardLayout(rows_per_shard, int(rng.integers(0, 400)))
        ranges = layout.ranges()
        # the ranges tile [0, total) in order
        assert [start for start, _ in ranges[1:]] == [stop for _, stop in ranges[:-1]]
        assert ranges == [] if not layout.total_rows else (
            ranges[0][0] == 0 and ranges[-1][1] == layout.total_rows)
        if len(ranges) > 1:
            assert all(MIN_TAIL_FRACTION * rows_per_shard <= stop - start
                       < (1 + MIN_TAIL_FRACTION) * rows_per_shard for start, stop in ranges)
        positions = np.arange(layout.total_rows)
        expected = np.repeat(np.arange(len(ranges)), [b - a for a, b in ranges])
        assert np.array_equal(layout.shard_of(positions), expected)
        assert [layout.shard_of_position(int(p)) for p in positions] == expected.tolist()


def test_a_layout_refuses_what_is_not_a_count():
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="rows_per_shard"):
            ShardLayout(bad, 10)
    with pytest.raises(ValueError, match="total_rows"):
        ShardLayout(10, -1)


def test_build_index_folds_a_small_remainder_into_the_last_shard(tmp_path):
    x = make_anisotropic(2_300, 16, seed=2)
    build_index(str(tmp_path / "idx"), x, codecs=["semq4"], rows_per_shard=1_000)
    index = Index.open(str(tmp_path / "idx"))
    assert [s.rows for s in index.shards] == [1_000, 1_300]
    ids = np.concatenate([batch_ids for batch_ids, _ in index.restore()])
    assert np.array_equal(ids, np.arange(2_300))


def _problems(shard_sizes, minimum=1.5):
    rows = sum(f for _, f, _ in shard_sizes) // 16
    return gate_problems(gate=Gate(k=10, min_recall_at_k=0.5, max_rejected_fraction=0.0,
                                   min_compression_ratio=minimum),
                         rows_planned=rows, totals={"rows_read": rows, "rows_rejected": 0},
                         dead_letters=0, rows_encoded=rows, recall=0.9,
                         shard_sizes=shard_sizes)


def test_the_gate_refuses_one_shard_below_the_ratio_even_when_the_index_is_above():
    """Two shards of 4.0x and one of 1.2x: the whole index is 3.3x, above 1.5, but one
    shard is not: refused, naming the shard, its ratio and what to change."""
    sizes = [("runs/r/shard-00000.semq", 40_000, 10_000),
             ("runs/r/shard-00001.semq", 40_000, 10_000),
             ("runs/r/shard-00002.semq", 12_000, 10_000)]
    [problem] = _problems(sizes)
    assert "in 1 of 3 shards (whole index 3.07x)" in problem
    assert "runs/r/shard-00002.semq, 1.20x < 1.5" in problem
    assert "raise encode.rows_per_shard" in problem
    assert _problems(sizes[:2]) == []
    assert _problems(sizes, minimum=1.2) == []     # 1.2 exactly is enough
    assert _problems(sizes, minimum=0) == []       # 0: no check
