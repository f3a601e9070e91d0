"""The ``.semq`` shard file, the Arrow manifest and the versioned index layout. No Beam.

``FORMAT.md`` beside this file is the byte-level specification of both.
"""

from semq_transforms.format.manifest import Manifest
from semq_transforms.format.meta import (
    MANIFEST_FORMAT_VERSION,
    SHARD_FORMAT_VERSION,
    LevelMeta,
    ShardMeta,
)
from semq_transforms.format.shard import (
    EncodedLevel,
    Shard,
    ShardCheck,
    read_shard,
    read_shard_header,
    verify_shard,
    write_shard,
)
from semq_transforms.format.store import IndexStore, manifest_path, shard_path

__all__ = ["MANIFEST_FORMAT_VERSION", "SHARD_FORMAT_VERSION", "EncodedLevel", "IndexStore",
           "LevelMeta", "Manifest", "Shard", "ShardCheck", "ShardMeta",
           "manifest_path", "read_shard", "read_shard_header", "shard_path", "verify_shard",
           "write_shard"]
