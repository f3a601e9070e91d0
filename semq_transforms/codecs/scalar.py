"""Per-dimension scalar codecs: ``f16`` (the baseline) and ``int8`` / ``int4``.

``int<b>`` is asymmetric per-dimension quantization fitted on the shard:
``code = clip(round(x / scale + zero_point), 0, 2**b - 1)`` and
``restored = (code - zero_point) * scale``, with the range chosen by the calibration rule in
:mod:`semq_transforms.codecs.calibration`. ``zero_point`` is kept as a float (no integer
arithmetic ever runs on the codes, so rounding it would only shift the range). int4 packs two
codes per byte (see :mod:`semq_transforms.codecs.bitpack`).
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
from semq_transforms.codecs.calibration import calibrate_range
from semq_transforms.codecs.exact import inner_products
from semq_transforms.codecs.params import CodecParams
from semq_transforms.codecs.registry import register_codec
from semq_transforms.errors import ParamsError


@register_codec
class Float16Codec(Codec):
    """Each value stored as IEEE float16 (little-endian). 16 bits/dim, no fitted state."""

    codec_id = "f16"
    max_abs_value = F16_MAX

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id}

    @property
    def spec(self) -> str:
        return "f16"

    def code_bytes(self, dim: int) -> int:
        return 2 * dim

    def _fit(self, x: np.ndarray, cache: FitCache) -> CodecParams:
        return CodecParams(codec=self.spec, dim=x.shape[1])

    def _check_encodable(self, x: np.ndarray) -> None:
        check_float16_range(x, self.spec)

    def _encode(self, x: np.ndarray, params: CodecParams) -> np.ndarray:
        return x.astype("<f2").view(np.uint8)

    def _decode(self, codes: np.ndarray, params: CodecParams) -> np.ndarray:
        return codes.view("<f2").astype(np.float32)


@register_codec
class IntCodec(Codec):
    """Per-dimension asymmetric scalar quantization to ``bits`` = 8 or 4 bits per value."""

    codec_id = "int"

    def __init__(self, *, bits: int = 8) -> None:
        self.bits = check_bits(self.codec_id, bits, (4, 8))
        self.levels = 1 << self.bits

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, "bits": self.bits}

    @property
    def spec(self) -> str:
        return f"int{self.bits}"

    def code_bytes(self, dim: int) -> int:
        return dim if self.bits == 8 else (dim + 1) // 2

    def param_shapes(self, dim: int):
        return {"scale": (np.float32, (dim,)), "zero_point": (np.float32, (dim,))}

    def _check_params_values(self, params: CodecParams) -> None:
        if (params["scale"] <= 0).any():
            raise ParamsError(f"{self.spec} params 'scale' must be > 0")

    def _fit(self, x: np.ndarray, cache: FitCache) -> CodecParams:
        lo, hi = calibrate_range(x, self.levels)
        # The float32 scale must be positive and large enough that zero_point = -lo / scale
        # stays finite: a constant column (or one varying below float32 resolution) gets the
        # smallest scale that still represents its magnitude, and restores to ~its value.
        floor = np.maximum(np.maximum(np.abs(lo), np.abs(hi)) * 2.0**-20, 2.0**-100)
        scale = np.maximum((hi - lo) / (self.levels - 1), floor).astype(np.float32)
        zero_point = (-lo / scale.astype(np.float64)).astype(np.float32)
        return CodecParams(codec=self.spec, dim=x.shape[1],
                           arrays={"scale": scale, "zero_point": zero_point})

    def _encode(self, x: np.ndarray, params: CodecParams) -> np.ndarray:
        inv_scale = np.float32(1.0) / params["scale"]
        shift = params["zero_point"] + np.float32(0.5)   # +0.5 then truncation = round
        t = np.multiply(x, inv_scale)
        np.add(t, shift, out=t)
        np.clip(t, 0, self.levels - 1, out=t)
        codes = t.astype(np.uint8)
        return codes if self.bits == 8 else pack_nibbles(codes)

    def _codes_as_float(self, codes: np.ndarray, dim: int) -> np.ndarray:
        values = codes if self.bits == 8 else unpack_nibbles(codes, dim)
        return values.astype(np.float32)

    def _decode(self, codes: np.ndarray, params: CodecParams) -> np.ndarray:
        values = self._codes_as_float(codes, params.dim)
        values -= params["zero_point"]
        values *= params["scale"]
        return values

    def _prepare_queries(self, q: np.ndarray, params: CodecParams, *,
                         deterministic: bool) -> Any:
        # <q, (c - z) * s> = <q * s, c> - <q * s, z>
        q_scaled = q * params["scale"]
        return q_scaled, inner_products(q_scaled, params["zero_point"][None, :],
                                        deterministic=deterministic)[:, 0]

    def _score(self, prepared: Any, codes: np.ndarray, params: CodecParams, *,
               deterministic: bool) -> np.ndarray:
        q_scaled, offset = prepared
        scores = inner_products(q_scaled, self._codes_as_float(codes, params.dim),
                                deterministic=deterministic)
        scores -= offset[:, None]
        return scores
