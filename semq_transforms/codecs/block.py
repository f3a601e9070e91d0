"""Per-vector block codecs ``block4`` / ``block8``: every block of 32 values gets its own
float16 scale and offset (minimum), like llama.cpp's Q4_1 / Q8_1.

Layout of one vector's code (``nb = ceil(d / 32)`` blocks; the last one may be shorter):
``[codes: d bytes (block8) or ceil(d / 2) bytes of nibbles (block4)]``
``[scale: nb x float16 LE][offset: nb x float16 LE]``.
``restored = offset + code * scale``. No fitted state: params only record the dimension.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from semq_transforms.codecs.base import (
    F16_MAX,
    Codec,
    FitCache,
    check_bits,
    check_float16_range,
)
from semq_transforms.codecs.bitpack import pack_nibbles, unpack_nibbles
from semq_transforms.codecs.params import CodecParams
from semq_transforms.codecs.registry import register_codec

BLOCK = 32


def _padded(x: np.ndarray, nb: int) -> np.ndarray:
    """``x`` [n, d] -> [n, nb, BLOCK], padding the last block by repeating its last value."""
    n, d = x.shape
    if d == nb * BLOCK:
        return x.reshape(n, nb, BLOCK)
    pad = np.repeat(x[:, -1:], nb * BLOCK - d, axis=1)
    return np.concatenate([x, pad], axis=1).reshape(n, nb, BLOCK)


@register_codec
class BlockCodec(Codec):
    """Block-wise (32 values) scale + offset quantization to 4 or 8 bits per value."""

    codec_id = "block"
    max_abs_value = F16_MAX

    def __init__(self, *, bits: int = 4) -> None:
        self.bits = check_bits(self.codec_id, bits, (4, 8))
        self.levels = 1 << self.bits

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, "bits": self.bits}

    @property
    def spec(self) -> str:
        return f"block{self.bits}"

    def _value_bytes(self, dim: int) -> int:
        return dim if self.bits == 8 else (dim + 1) // 2

    def code_bytes(self, dim: int) -> int:
        return self._value_bytes(dim) + 4 * (-(-dim // BLOCK))

    def _fit(self, x: np.ndarray, cache: FitCache) -> CodecParams:
        return CodecParams(codec=self.spec, dim=x.shape[1])

    def _check_encodable(self, x: np.ndarray) -> None:
        check_float16_range(x, self.spec)  # block offsets are float16

    def _encode(self, x: np.ndarray, params: CodecParams) -> np.ndarray:
        n, d = x.shape
        nb = -(-d // BLOCK)
        blocks = _padded(x, nb)
        lo, hi = blocks.min(axis=2), blocks.max(axis=2)
        offset = lo.astype(np.float16)
        # The scale is computed from the rounded offset so the top of the block stays in range.
        scale = ((hi - offset.astype(np.float32)) / (self.levels - 1)).astype(np.float16)
        scale32 = scale.astype(np.float32)
        inv = np.divide(1.0, scale32, out=np.zeros_like(scale32), where=scale32 > 0)
        t = (blocks - offset.astype(np.float32)[:, :, None]) * inv[:, :, None] + 0.5
        np.clip(t, 0, self.levels - 1, out=t)
        values = t.astype(np.uint8).reshape(n, nb * BLOCK)[:, :d]
        if self.bits == 4:
            values = pack_nibbles(values)
        side = np.concatenate([scale.astype("<f2"), offset.astype("<f2")], axis=1)
        return np.concatenate([values, side.view(np.uint8)], axis=1)

    def _decode(self, codes: np.ndarray, params: CodecParams) -> np.ndarray:
        n, d = codes.shape[0], params.dim
        nb = -(-d // BLOCK)
        vb = self._value_bytes(d)
        values = codes[:, :vb] if self.bits == 8 else unpack_nibbles(codes[:, :vb], d)
        side = np.ascontiguousarray(codes[:, vb:]).view("<f2").astype(np.float32)
        scale, offset = side[:, :nb], side[:, nb:]
        full = np.zeros((n, nb * BLOCK), dtype=np.float32)
        full[:, :d] = values
        restored = full.reshape(n, nb, BLOCK) * scale[:, :, None] + offset[:, :, None]
        return restored.reshape(n, nb * BLOCK)[:, :d]
