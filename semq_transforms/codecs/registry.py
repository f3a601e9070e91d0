"""The codec registry and the spec-string parser.

A spec string is a codec id followed by an optional bit width: ``"f16"``, ``"int8"``,
``"block4"``, ``"binary"``, ``"semq2"``. :func:`parse_spec` turns it into a config dict in one
place, and every codec's ``spec`` property turns it back, so ``spec -> codec -> spec`` is the
identity (tested for every registered codec).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import Any

from semq_transforms.codecs.base import Codec
from semq_transforms.errors import CodecConfigError, UnknownCodecError

_REGISTRY: dict[str, type[Codec]] = {}
_SPEC = re.compile(r"(?P<id>[a-z][a-z_]*?)(?P<bits>[0-9]*)")
#: Ids that end in digits of their own (the digits are part of the id, not a bit width).
_DIGIT_IDS = frozenset({"f16"})


def register_codec(cls: type[Codec]) -> type[Codec]:
    """Class decorator: register ``cls`` under ``cls.codec_id``. Duplicate ids raise."""
    codec_id = getattr(cls, "codec_id", None)
    if not isinstance(codec_id, str) or not codec_id:
        raise CodecConfigError(f"{cls.__name__} has no codec_id")
    if codec_id in _REGISTRY and _REGISTRY[codec_id] is not cls:
        raise CodecConfigError(
            f"codec id {codec_id!r} is already registered by {_REGISTRY[codec_id].__name__}")
    _REGISTRY[codec_id] = cls
    return cls


def registered_ids() -> list[str]:
    """The registered codec ids, sorted."""
    return sorted(_REGISTRY)


def parse_spec(spec: str) -> dict[str, Any]:
    """Turn a spec string into a config dict: ``"semq4" -> {"id": "semq", "bits": 4}``."""
    if not isinstance(spec, str):
        raise CodecConfigError(f"a codec spec must be a string, got {type(spec).__name__}")
    text = spec.strip().lower()
    if text in _DIGIT_IDS:
        return {"id": text}
    match = _SPEC.fullmatch(text)
    if match is None:
        raise CodecConfigError(f"cannot parse codec spec {spec!r}; expected an id and a bit "
                               f"width such as 'semq4' or 'int8' (ids: {registered_ids()})")
    config: dict[str, Any] = {"id": match["id"]}
    if match["bits"]:
        digits = match["bits"].lstrip("0") or "0"
        if len(digits) > 9:   # (int() of 4,300+ digits raises a plain ValueError)
            shown = spec if len(spec) <= 40 else f"{spec[:40]}..."
            raise CodecConfigError(f"codec spec {shown!r}: bit width out of range")
        config["bits"] = int(digits)
    return config


def get_codec(spec: str | Mapping[str, Any] | Codec) -> Codec:
    """Build a codec from a spec string, a config dict, or return a codec as given.

    The config dict is not modified. Raises :class:`UnknownCodecError` (listing the known
    ids) for an unknown id and :class:`CodecConfigError` for bad options.
    """
    if isinstance(spec, Codec):
        return spec
    config = parse_spec(spec) if isinstance(spec, str) else spec
    if not isinstance(config, Mapping):
        raise CodecConfigError(f"a codec must be given as a spec string or config dict, got "
                               f"{type(spec).__name__}")
    codec_id = config.get("id")
    if not isinstance(codec_id, str) or codec_id not in _REGISTRY:
        raise UnknownCodecError(f"unknown codec id {codec_id!r}; known ids: {registered_ids()}")
    return _REGISTRY[codec_id].from_config(dict(config))


def max_abs_value(codecs: Iterable[str | Mapping[str, Any] | Codec]) -> float:
    """The largest vector value magnitude that every one of ``codecs`` encodes: the smallest
    of their :attr:`Codec.max_abs_value` (float16-storage codecs have the lower limit)."""
    return min(get_codec(codec).max_abs_value for codec in codecs)
