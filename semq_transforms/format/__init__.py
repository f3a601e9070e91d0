"""The ``.semq`` shard file, the Arrow manifest and the versioned index layout. No Beam.

See ``FORMAT.md`` beside this file for the byte-level specification.
"""

from semq_transforms.format.meta import (
    MANIFEST_FORMAT_VERSION,
    SHARD_FORMAT_VERSION,
    LevelMeta,
    ShardMeta,
)

__all__ = ["MANIFEST_FORMAT_VERSION", "SHARD_FORMAT_VERSION", "LevelMeta", "ShardMeta"]
