"""Reusable pieces of the ingestion pipeline.

* :mod:`~semq_transforms.transforms.sources`: find input files, plan splits from metadata, read
  batches of vectors (pure Python, pyarrow, fsspec; no Beam).
* :mod:`~semq_transforms.transforms.rows`: how a row is checked (reject reasons, dead
  letters with a detail, the dead-letter file), the same for the file readers and the sink.
* :mod:`~semq_transforms.transforms.planning`: shards planned from metadata, duplicate ids,
  the query sample's splits, reading one shard (no Beam).
* :mod:`~semq_transforms.transforms.read`: ``ReadEmbeddings``, ``ReadShards``,
  ``FindDuplicateIds`` and ``WriteDeadLetters``, the Beam transforms of the input stage.
* :mod:`~semq_transforms.transforms.encode`, :mod:`~semq_transforms.transforms.publish`:
  ``EncodeShards``, ``ReadEncodeShards`` (``ReadShards | EncodeShards`` in one step, as the
  job runs them), ``SampleQueries``, ``MergeNeighbors``; ``PublishIndex``.
* :mod:`~semq_transforms.transforms.ingest`: the whole job, built by
  ``JobConfig.create_transform()``.
* :mod:`~semq_transforms.transforms.sink`: ``WriteSemqIndex``, the same job for embeddings
  already in a PCollection (pairs, Rows, Beam RAG chunks), and ``SemqWriteConfig``, its
  ``VectorDatabaseWriteConfig`` for ``apache_beam.ml.rag`` ingestion.
* :mod:`~semq_transforms.transforms.runners`: ``direct_options``, a local runner that works
  offline.

The Beam names are imported lazily, so ``import semq_transforms.transforms`` does not import
Beam.
"""

from typing import Any

from semq_transforms.transforms.rows import REJECT_REASONS, Batch, write_dead_letters
from semq_transforms.transforms.sources import (
    InputPlan,
    Split,
    expand_inputs,
    find_duplicate_ids,
    iter_split,
    plan_inputs,
    plan_splits,
    read_split,
)

_LAZY = {"ReadEmbeddings": "read", "ReadShards": "read", "FindDuplicateIds": "read",
         "WriteDeadLetters": "read", "direct_options": "runners",
         "WriteSemqIndex": "sink", "SemqWriteConfig": "sink", "ElementFields": "sink"}

__all__ = ["REJECT_REASONS", "Batch", "ElementFields", "FindDuplicateIds", "InputPlan",
           "ReadEmbeddings", "ReadShards", "SemqWriteConfig", "Split", "WriteDeadLetters",
           "WriteSemqIndex", "direct_options", "expand_inputs",
           "find_duplicate_ids", "iter_split", "plan_inputs", "plan_splits", "read_split",
           "write_dead_letters"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module = importlib.import_module(f"semq_transforms.transforms.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'semq_transforms.transforms' has no attribute {name!r}")
