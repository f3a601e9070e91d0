"""The ``binary`` codec: one bit per dimension, centered on the shard.

``bit_i = x_i > mean_i``; restored ``x_i = mean_i + (2 * bit_i - 1) * amplitude_i`` where
``amplitude_i = mean |x_i - mean_i|`` over the shard (the squared-error-optimal value for a
sign code), rows of extreme norm left out (:func:`~.calibration.inlier_rows`). Documents are bits; queries stay float, so a score is ``<q, restored>``, computed
without restoring: ``<q, mean - amplitude> + 2 * <q * amplitude, bits>``. Exactly 1 bit/dim,
no per-vector side data (``semq1`` is the codec that spends side data to rank better).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from semq_transforms.codecs.base import Codec, FitCache
from semq_transforms.codecs.calibration import inlier_rows
from semq_transforms.codecs.exact import column_sums, inner_products
from semq_transforms.codecs.params import CodecParams
from semq_transforms.codecs.registry import register_codec


@register_codec
class BinaryCodec(Codec):
    """Sign of the centered value, one bit per dimension (``np.packbits``, little bit order)."""

    codec_id = "binary"

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id}

    @property
    def spec(self) -> str:
        return "binary"

    def code_bytes(self, dim: int) -> int:
        return -(-dim // 8)

    def param_shapes(self, dim: int):
        return {"mean": (np.float32, (dim,)), "amplitude": (np.float32, (dim,))}

    def _fit(self, x: np.ndarray, cache: FitCache) -> CodecParams:
        # fixed-order sums (semq_transforms.codecs.exact): the same bits on every machine;
        # rows of extreme norm are left out (calibration.inlier_rows)
        x = inlier_rows(x)
        mean = column_sums(x) / x.shape[0]
        amplitude = column_sums(x, lambda rows: np.abs(rows - mean)) / x.shape[0]
        return CodecParams(codec=self.spec, dim=x.shape[1],
                           arrays={"mean": mean.astype(np.float32),
                                   "amplitude": amplitude.astype(np.float32)})

    def _encode(self, x: np.ndarray, params: CodecParams) -> np.ndarray:
        return np.packbits(x > params["mean"], axis=1, bitorder="little")

    def _bits(self, codes: np.ndarray, dim: int) -> np.ndarray:
        return np.unpackbits(codes, axis=1, count=dim, bitorder="little").astype(np.float32)

    def _decode(self, codes: np.ndarray, params: CodecParams) -> np.ndarray:
        signs = self._bits(codes, params.dim) * 2.0 - 1.0
        return params["mean"] + signs * params["amplitude"]

    def _prepare_queries(self, q: np.ndarray, params: CodecParams, *,
                         deterministic: bool) -> Any:
        # <q, mean + (2 b - 1) amp> = <2 q amp, b> + <q, mean> - <q, amp>
        q_amp = q * params["amplitude"]
        offset = inner_products(q, np.stack([params["mean"], params["amplitude"]]),
                                deterministic=deterministic)
        return 2.0 * q_amp, offset[:, 0] - offset[:, 1]

    def _score(self, prepared: Any, codes: np.ndarray, params: CodecParams, *,
               deterministic: bool) -> np.ndarray:
        q_amp2, offset = prepared
        scores = inner_products(q_amp2, self._bits(codes, params.dim),
                                deterministic=deterministic)
        scores += offset[:, None]
        return scores.astype(np.float32, copy=False)
