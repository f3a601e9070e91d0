"""Codecs: pure numpy ``fit`` / ``encode`` / ``decode`` / ``score``, no I/O, no Beam.

>>> from semq_transforms.codecs import get_codec
>>> get_codec("semq4").get_config()
{'id': 'semq', 'bits': 4}
>>> sorted(SPECS)
['binary', 'block4', 'block8', 'f16', 'int4', 'int8', 'semq1', 'semq2', 'semq3', 'semq4', 'semq5', 'semq6', 'semq7', 'semq8']
"""

from semq_transforms.codecs import binary, block, refine, scalar, semq  # noqa: F401  (registration)
from semq_transforms.codecs.base import BaseLevel, Codec, check_vectors
from semq_transforms.codecs.params import CodecParams
from semq_transforms.codecs.registry import (
    get_codec,
    max_abs_value,
    parse_spec,
    register_codec,
    registered_ids,
)

#: Every spec string the built-in codecs answer to.
SPECS = ("f16", "int8", "int4", "block4", "block8", "binary",
         *(f"semq{b}" for b in range(1, 9)))
#: Specs of codecs that refine the level before them (a ``semq`` level): usable only as a
#: shard's later level, e.g. ``["semq1", "semqr4"]``.
REFINING_SPECS = tuple(f"semqr{b}" for b in range(1, 9))

__all__ = ["REFINING_SPECS", "SPECS", "BaseLevel", "Codec", "CodecParams", "check_vectors",
           "get_codec", "max_abs_value", "parse_spec", "register_codec", "registered_ids"]
