"""Picklable metadata that shard writers return and the manifest commit step consumes.

Workers (Beam DoFns, threads, processes) write shard files and return :class:`ShardMeta`; one
step then commits a manifest version listing them (the Lance two-level write). Both classes
are frozen dataclasses of plain Python values: they pickle, compare by value and round-trip
through JSON exactly (``to_json`` / ``from_json``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from semq_transforms.errors import FormatError

#: Version of ``.semq`` shard files this code writes: (major, minor). A reader refuses a newer
#: major version; a newer minor version only adds optional fields and is read.
SHARD_FORMAT_VERSION = (3, 0)
#: Version of manifest tables this code writes, same rule.
MANIFEST_FORMAT_VERSION = (1, 0)

ID_TYPES = ("int64", "string")


@dataclass(frozen=True)
class LevelMeta:
    """One code column of a shard: which codec, how wide, and which fitted params.

    Attributes:
        codec: codec spec string (``"semq1"``).
        code_bytes: bytes per row of this level's codes.
        params_sha256: hex SHA-256 of the level's ``CodecParams.to_bytes()``.
    """

    codec: str
    code_bytes: int
    params_sha256: str


@dataclass(frozen=True)
class ShardMeta:
    """What a shard writer returns about one written shard file.

    Attributes:
        path: the shard file's path relative to the index root (``runs/<run_id>/...``).
        rows: number of vectors in the shard.
        dim: vector dimension.
        file_bytes: size of the written file.
        levels: code columns, scan level first, rerank level last.
        content_sha256: hex SHA-256 over the shard's ids, codes, params and input
            fingerprints, if any (see FORMAT.md); independent of the container's bytes.
        file_sha256: hex SHA-256 of the whole file as written.
        id_type: ``"int64"`` or ``"string"``.
        id_min, id_max: smallest and largest id (ints, or strings compared as UTF-8 bytes).
        stats: per-shard statistics (JSON-safe numbers), e.g. mean vector norm.
        validation: per-shard validation figures (JSON-safe), e.g. recall@k; may be empty.
    """

    path: str
    rows: int
    dim: int
    file_bytes: int
    levels: tuple[LevelMeta, ...]
    content_sha256: str
    file_sha256: str
    id_type: str
    id_min: int | str
    id_max: int | str
    stats: Mapping[str, float] = field(default_factory=dict)
    validation: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.id_type not in ID_TYPES:
            raise FormatError(f"shard {self.path!r}: id_type {self.id_type!r} not in {ID_TYPES}")
        if not self.levels:
            raise FormatError(f"shard {self.path!r}: needs at least one code level")
        object.__setattr__(self, "levels", tuple(
            lv if isinstance(lv, LevelMeta) else LevelMeta(**lv) for lv in self.levels))
        object.__setattr__(self, "stats", dict(self.stats))
        object.__setattr__(self, "validation", dict(self.validation))

    @property
    def codecs(self) -> tuple[str, ...]:
        """Codec specs of the levels, scan level first."""
        return tuple(lv.codec for lv in self.levels)

    @property
    def code_bytes_per_row(self) -> int:
        """Bytes of codes per row over all levels."""
        return sum(lv.code_bytes for lv in self.levels)

    def to_json(self) -> dict[str, Any]:
        """JSON-safe dict; :meth:`from_json` inverts it exactly."""
        out = asdict(self)
        out["levels"] = [asdict(lv) for lv in self.levels]
        return out

    @classmethod
    def from_json(cls, obj: Mapping[str, Any]) -> ShardMeta:
        try:
            return cls(**{**obj, "levels": tuple(LevelMeta(**lv) for lv in obj["levels"])})
        except (TypeError, KeyError) as exc:
            raise FormatError(f"bad shard metadata: {exc}") from None
