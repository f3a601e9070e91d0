"""semq-transforms: compact, verifiable embedding indexes built in batch with Apache Beam.

``semq_transforms.Index`` (query time) and ``semq_transforms.build_index`` are imported
lazily, so ``import semq_transforms.codecs`` stays light.
"""

from typing import Any

__version__ = "0.5.0"

__all__ = ["Index", "__version__", "build_index"]


def __getattr__(name: str) -> Any:
    if name == "Index":
        from semq_transforms.index import Index

        return Index
    if name == "build_index":
        from semq_transforms.build import build_index

        return build_index
    raise AttributeError(f"module 'semq_transforms' has no attribute {name!r}")
