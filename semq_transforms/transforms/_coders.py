"""Beam coders for the array-carrying elements (:class:`ShardRows`, :class:`Batch`).

Beam samples output elements to estimate PCollection byte sizes for its metrics, and the
default coder learns an element's size by pickling it: for a 65,536 x 384 shard that is a
100 MB copy per sampled element, on a path that never leaves the worker (fused stages hand
elements over in memory). These coders encode as the default does (pickle; elements cross
workers only between Beam's own stages, never from a file) but estimate the size from the
arrays' ``nbytes``.
"""

from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import apache_beam as beam
import numpy as np

from semq_transforms.transforms.planning import ShardRows
from semq_transforms.transforms.rows import Batch

#: Bytes counted per element beyond its arrays (the estimate needs no precision).
_OVERHEAD = 64


def estimated_size(value: Any) -> int:
    """``nbytes`` of a dataclass element's numpy fields (``object`` arrays: 8 bytes an item
    plus the strings' lengths), plus a constant."""
    size = _OVERHEAD
    for f in dataclasses.fields(value):
        item = getattr(value, f.name)
        if isinstance(item, np.ndarray):
            size += item.nbytes
            if item.dtype == object:
                size += sum(len(s) for s in item.ravel() if isinstance(s, str))
        elif isinstance(item, (tuple, list)):
            size += 64 * len(item)
    return size


class _ArrayElementCoder(beam.coders.Coder):
    """Pickle (highest protocol) with a size estimate that reads array sizes."""

    element_type: type = object

    def encode(self, value: Any) -> bytes:
        return pickle.dumps(value, pickle.HIGHEST_PROTOCOL)

    def decode(self, encoded: bytes) -> Any:
        return pickle.loads(encoded)

    def is_deterministic(self) -> bool:
        return False

    def estimate_size(self, value: Any) -> int:
        return estimated_size(value)

    def to_type_hint(self) -> type:
        return self.element_type


class ShardRowsCoder(_ArrayElementCoder):
    element_type = ShardRows


class BatchCoder(_ArrayElementCoder):
    element_type = Batch


beam.coders.registry.register_coder(ShardRows, ShardRowsCoder)
beam.coders.registry.register_coder(Batch, BatchCoder)
