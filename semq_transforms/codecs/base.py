"""The :class:`Codec` interface every codec implements, and the input checks they share.

A codec is a small, immutable description (its config: an ``id`` and a few options such as
``bits``). It holds no fitted state: :meth:`Codec.fit` returns a :class:`CodecParams` per
shard, and every other method takes those params explicitly::

    codec  = get_codec("semq4")
    params = codec.fit(x)                  # x: float32 [n, d]
    codes  = codec.encode(x, params)       # uint8 [n, codec.code_bytes(d)]
    y      = codec.decode(codes, params)   # float32 [n, d]
    s      = codec.score(q, codes, params) # float32 [nq, n], estimates of q @ x.T

The public methods validate their arguments and then call the ``_fit`` / ``_encode`` /
``_decode`` / ``_score`` hooks, which subclasses implement on already-checked inputs.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from typing import Any, ClassVar, NamedTuple

import numpy as np

from semq_transforms.codecs.exact import inner_products, paired_products
from semq_transforms.codecs.params import CodecParams
from semq_transforms.errors import (
    CodecConfigError,
    CodesMismatchError,
    EmptyInputError,
    InputDtypeError,
    InputShapeError,
    NonFiniteError,
    OutOfRangeError,
    ParamsError,
)

#: Rows processed per step inside encode/decode/score: large enough to amortize numpy call
#: overhead, small enough that the temporaries of one step stay in the CPU's L2 cache.
CHUNK_ROWS = 512
#: Documents scored per step in ``score`` (bounds the [nq, chunk] float32 temporary).
SCORE_CHUNK_ROWS = 8192
#: Largest magnitude accepted in vectors and queries: beyond it, squared norms and inner
#: products can overflow float32 (1e16**2 * d stays finite for d up to 1e6).
MAX_ABS_VALUE = 1e16
#: Largest magnitude of any float param: twice the largest value a codec encodes (a mean,
#: a scale, an amplitude of accepted data stays below it). Larger ones, from a params block
#: edited with its digests recomputed, would restore or score to Inf.
MAX_PARAM_MAGNITUDE = 2 * MAX_ABS_VALUE
#: Smallest quantizer step (semq, semqr): 1 / step stays a normal float32.
MIN_STEP = 1e-30
#: Largest float16 magnitude: the limit of codecs that store values (or offsets) as float16.
F16_MAX = float(np.finfo(np.float16).max)


class FitCache:
    """Statistics of one array that several codecs fitting and encoding it can share:
    ``cache.get(key, compute)`` runs ``compute()`` once per key. Valid for one ``x`` only."""

    def __init__(self) -> None:
        self._values: dict[str, Any] = {}
        self._checked: tuple[np.ndarray, np.ndarray] | None = None

    def get(self, key: str, compute: Callable[[], Any]) -> Any:
        if key not in self._values:
            self._values[key] = compute()
        return self._values[key]

    def checked(self, x: Any, dim: int | None = None) -> np.ndarray:
        """``check_vectors(x, "x", dim=dim)``, scanned once for the same array object: the
        levels of one shard each fit and encode the same rows, and the NaN/Inf/range scan
        of a 100 MB shard is not free."""
        if self._checked is None or self._checked[0] is not x:
            self._checked = (x, check_vectors(x, "x"))
        x32 = self._checked[1]
        return x32 if dim is None or x32.shape[1] == dim else check_vectors(x, "x", dim=dim)


class BaseLevel(NamedTuple):
    """The level a refining codec's codes refine (see :attr:`Codec.refines`).

    Attributes:
        codec, params: the base level's codec and fitted params.
        codes: the base level's codes of the same rows, uint8 ``[n, w]``; in
            :meth:`Codec.score_candidates`, ``[nq, c, w]`` like the candidates.
    """

    codec: Codec
    params: CodecParams
    codes: np.ndarray


class Codec(ABC):
    """Base class of all codecs. Subclasses set ``codec_id`` and implement the hooks."""

    #: Registry id, the ``"id"`` of :meth:`get_config` (e.g. ``"semq"``).
    codec_id: ClassVar[str]
    #: True for codecs whose codes refine the level before them in a shard (``semqr``): they
    #: store only what that level's codes do not say, so every method takes it as ``base``
    #: (a :class:`BaseLevel`) and the hooks receive the base codes of their rows.
    refines: ClassVar[bool] = False
    #: Rows per step in encode/decode/score_candidates.
    chunk_rows: ClassVar[int] = CHUNK_ROWS
    #: Largest magnitude of a vector value the codec encodes: :data:`MAX_ABS_VALUE`, or
    #: :data:`F16_MAX` for codecs that store values as float16. ``encode`` refuses larger
    #: values; the ingestion job rejects such rows as ``out_of_range`` when it reads them.
    max_abs_value: ClassVar[float] = MAX_ABS_VALUE

    # -- configuration --------------------------------------------------------------------

    @abstractmethod
    def get_config(self) -> dict[str, Any]:
        """JSON-safe config with key ``"id"``; ``get_codec(config)`` rebuilds an equal codec."""

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> Codec:
        """Build the codec from a config dict as returned by :meth:`get_config`.

        The dict is not modified. Unknown keys are an error (a typo should not pass silently).
        """
        options = {k: v for k, v in config.items() if k != "id"}
        if config.get("id", cls.codec_id) != cls.codec_id:
            raise CodecConfigError(f"config id {config.get('id')!r} is not {cls.codec_id!r}")
        try:
            return cls(**options)
        except TypeError as exc:
            raise CodecConfigError(f"bad config for codec {cls.codec_id!r}: {exc}") from None

    @property
    @abstractmethod
    def spec(self) -> str:
        """The short spec string (``"semq4"``, ``"int8"``) that :func:`get_codec` parses."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Codec) and self.get_config() == other.get_config()

    def __hash__(self) -> int:
        return hash(self.spec)

    def __repr__(self) -> str:
        return f"get_codec({self.spec!r})"

    # -- sizes ----------------------------------------------------------------------------

    @abstractmethod
    def code_bytes(self, dim: int) -> int:
        """Bytes per encoded vector of dimension ``dim``, side data included."""

    def bits_per_dim(self, dim: int) -> float:
        """Stored bits per dimension, side data included: ``code_bytes(dim) * 8 / dim``."""
        return self.code_bytes(dim) * 8 / dim

    # -- public operations (validate, then call the hooks) ---------------------------------

    def accepts_base(self, codec: Codec) -> bool:
        """Whether a refining codec can refine a level coded with ``codec``."""
        return False

    def check_base_params(self, params: CodecParams, base_params: CodecParams) -> None:
        """Raise :class:`ParamsError` unless a refining codec's ``params`` were fitted
        against ``base_params`` (no-op for other codecs)."""

    def fit(self, x: np.ndarray, *, cache: FitCache | None = None,
            base: BaseLevel | None = None) -> CodecParams:
        """Fit this shard's parameters.

        Args:
            x: float32 (or float64) array ``[n, d]``, finite, ``n >= 1``.
            cache: statistics of this same ``x`` shared between the codecs of one shard's
                levels (``semq1`` and ``semq4`` need the same principal axes); None: a
                fresh one. Never reuse a cache for another ``x``.
            base: for refining codecs only (:attr:`refines`), the level refined, with its
                codes of the rows of ``x``.
        Returns:
            The shard's :class:`CodecParams`; deterministic in ``x`` (with or without a
            cache).
        """
        cache = FitCache() if cache is None else cache
        x = cache.checked(x)
        if self._check_base(base, x.shape[0]) is None:
            return self._fit(x, cache)
        return self._fit(x, cache, base)

    def encode(self, x: np.ndarray, params: CodecParams, *,
               base: BaseLevel | None = None, cache: FitCache | None = None) -> np.ndarray:
        """Encode vectors with fitted params.

        Args:
            x: float array ``[n, d]`` with ``d == params.dim``, finite.
            params: from :meth:`fit` on this codec.
            base: refining codecs only: the level refined (its codes of the rows of ``x``).
            cache: the :class:`FitCache` ``x`` was fitted with, if any (``x`` is then not
                checked again).
        Returns:
            uint8 ``[n, code_bytes(d)]``: all per-vector data, side data included.
        """
        self.check_params(params)
        x = (FitCache() if cache is None else cache).checked(x, dim=params.dim)
        self._check_encodable(x)
        base = self._check_base(base, x.shape[0])
        state = self._state(params, base)
        out = np.empty((x.shape[0], self.code_bytes(params.dim)), dtype=np.uint8)
        for start in range(0, x.shape[0], self.chunk_rows):
            stop = min(start + self.chunk_rows, x.shape[0])
            out[start:stop] = self._encode(x[start:stop], state, *_rows(base, start, stop))
        return out

    def decode(self, codes: np.ndarray, params: CodecParams, *,
               base: BaseLevel | None = None) -> np.ndarray:
        """Restore vectors: uint8 codes ``[n, code_bytes(d)]`` -> float32 ``[n, d]``
        (refining codecs: ``base`` holds the refined level's codes of the same rows)."""
        self.check_params(params)
        codes = self.check_codes(codes, params)
        base = self._check_base(base, codes.shape[0])
        state = self._state(params, base)
        out = np.empty((codes.shape[0], params.dim), dtype=np.float32)
        for start in range(0, codes.shape[0], self.chunk_rows):
            stop = min(start + self.chunk_rows, codes.shape[0])
            out[start:stop] = self._decode(codes[start:stop], state, *_rows(base, start, stop))
        return out

    def score(self, q: np.ndarray, codes: np.ndarray, params: CodecParams, *,
              base: BaseLevel | None = None, deterministic: bool = False) -> np.ndarray:
        """Estimate inner products of float queries with encoded vectors.

        Args:
            q: float queries ``[nq, d]``.
            codes: uint8 ``[n, code_bytes(d)]`` from :meth:`encode` with ``params``.
            base: refining codecs only: the level refined (its codes of the same rows).
            deterministic: the same bits on every machine (every inner product exact on
                ``2**-20`` row grids, :func:`~semq_transforms.codecs.exact.inner_products`;
                about 2-4x the time), for scores whose order is recorded; else BLAS.
        Returns:
            float32 ``[nq, n]``; entry ``(i, j)`` estimates ``<q_i, x_j>``.
        """
        self.check_params(params)
        q = check_vectors(q, "q", dim=params.dim)
        codes = self.check_codes(codes, params)
        base = self._check_base(base, codes.shape[0])
        state = self._state(params, base)
        prepared = self._prepare_queries(q, state, deterministic=deterministic)
        out = np.empty((q.shape[0], codes.shape[0]), dtype=np.float32)
        for start in range(0, codes.shape[0], SCORE_CHUNK_ROWS):
            stop = min(start + SCORE_CHUNK_ROWS, codes.shape[0])
            out[:, start:stop] = self._score(prepared, codes[start:stop], state,
                                             *_rows(base, start, stop),
                                             deterministic=deterministic)
        return out

    def score_candidates(self, q: np.ndarray, codes: np.ndarray, params: CodecParams, *,
                         base: BaseLevel | None = None, deterministic: bool = False
                         ) -> np.ndarray:
        """Score each query against its own candidates (reranking).

        Args:
            q: float queries ``[nq, d]``.
            codes: uint8 ``[nq, c, code_bytes]``; ``codes[i]`` are query ``i``'s candidates.
            base: refining codecs only: the refined level's codes of the same candidates,
                ``[nq, c, w]``.
            deterministic: as in :meth:`score`.
        Returns:
            float32 ``[nq, c]``: entry ``(i, j)`` is what ``score`` gives for query ``i`` and
            code ``codes[i, j]``.
        """
        self.check_params(params)
        q = check_vectors(q, "q", dim=params.dim)
        width = self.code_bytes(params.dim)
        if (not isinstance(codes, np.ndarray) or codes.dtype != np.uint8 or codes.ndim != 3
                or codes.shape[0] != q.shape[0] or codes.shape[2] != width):
            raise CodesMismatchError(
                f"candidate codes must be uint8 [{q.shape[0]}, c, {width}], got "
                f"{getattr(codes, 'dtype', type(codes).__name__)} "
                f"{list(getattr(codes, 'shape', []))}")
        nq, c = codes.shape[:2]
        base = self._check_base(base, None)
        if base is not None:
            shape = list(getattr(base.codes, "shape", []))
            if len(shape) != 3 or shape[:2] != [nq, c]:
                raise CodesMismatchError(f"base candidate codes must be [{nq}, {c}, w], got "
                                         f"{shape}")
            if nq * c:
                base.codec.check_codes(base.codes.reshape(nq * c, -1), base.params)
        if nq * c == 0:                 # no candidates (or no query): nothing to score
            return np.zeros((nq, c), dtype=np.float32)
        state = self._state(params, base)
        out = np.empty((nq, c), dtype=np.float32)
        step = max(1, self.chunk_rows // c)
        for start in range(0, nq, step):
            stop = min(start + step, nq)
            flat = np.ascontiguousarray(codes[start:stop]).reshape(-1, width)
            extra = () if base is None else (
                np.ascontiguousarray(base.codes[start:stop]).reshape(flat.shape[0], -1),)
            out[start:stop] = self._score_candidates(q[start:stop], flat, state, c, *extra,
                                                     deterministic=deterministic)
        return out

    # -- checks ---------------------------------------------------------------------------

    def param_shapes(self, dim: int) -> Mapping[str, tuple[Any, tuple[int, ...] | None]]:
        """Expected params arrays: name -> (dtype, or a tuple of the dtypes accepted, and shape
        or None for 'checked by the codec')."""
        return {}

    def check_params(self, params: CodecParams) -> None:
        """Raise :class:`ParamsError` unless ``params`` were fitted by this codec."""
        if not isinstance(params, CodecParams):
            raise ParamsError(f"params must be CodecParams, got {type(params).__name__}")
        if params.codec != self.spec:
            raise ParamsError(f"params were fitted by codec {params.codec!r}, not {self.spec!r}")
        expected = self.param_shapes(params.dim)
        if set(params.arrays) != set(expected):
            raise ParamsError(f"{self.spec} params must hold arrays {sorted(expected)}, "
                              f"got {sorted(params.arrays)}")
        for name, (dtype, shape) in expected.items():
            arr = params.arrays[name]
            accepted = dtype if isinstance(dtype, tuple) else (dtype,)
            if arr.dtype not in [np.dtype(t).newbyteorder("<") for t in accepted]:
                raise ParamsError(f"{self.spec} params array {name!r} has dtype {arr.dtype}, "
                                  f"expected {' or '.join(str(np.dtype(t)) for t in accepted)}")
            if shape is not None and arr.shape != shape:
                raise ParamsError(f"{self.spec} params array {name!r} has shape {arr.shape}, "
                                  f"expected {shape} for dim {params.dim}")
            if arr.dtype.kind == "f" and not np.isfinite(arr).all():
                raise ParamsError(f"{self.spec} params array {name!r} holds NaN or Inf")
            if arr.dtype.kind == "f" and arr.size and (
                    float(np.abs(arr).max()) > MAX_PARAM_MAGNITUDE):
                raise ParamsError(f"{self.spec} params array {name!r} holds a value beyond "
                                  f"{MAX_PARAM_MAGNITUDE:g}, more than any fit gives")
        self._check_params_values(params)

    def _check_params_values(self, params: CodecParams) -> None:
        """Codec-specific consistency checks beyond names, dtypes and shapes."""

    def _check_base(self, base: Any, rows: int | None) -> BaseLevel | None:
        """Check ``base`` against :attr:`refines`: required (a :class:`BaseLevel` of an
        accepted codec, valid params, codes of ``rows`` rows unless None) or forbidden."""
        if not self.refines:
            if base is not None:
                raise CodecConfigError(f"{self.spec} does not refine another level; "
                                       f"base must be None")
            return None
        if not isinstance(base, BaseLevel):
            raise CodecConfigError(f"{self.spec} refines the level before it: pass "
                                   f"base=BaseLevel(codec, params, codes) of that level")
        if not isinstance(base.codec, Codec) or not self.accepts_base(base.codec):
            raise CodecConfigError(f"{self.spec} cannot refine a "
                                   f"{getattr(base.codec, 'spec', base.codec)!r} level")
        base.codec.check_params(base.params)
        if rows is not None:
            codes = base.codec.check_codes(base.codes, base.params)
            if codes.shape[0] != rows:
                raise CodesMismatchError(f"base level has codes of {codes.shape[0]} rows, "
                                         f"expected {rows}")
            return BaseLevel(base.codec, base.params, codes)
        return base

    def _state(self, params: CodecParams, base: BaseLevel | None) -> Any:
        if base is None:
            return self._prepare(params)
        if base.params.dim != params.dim:
            raise ParamsError(f"{self.spec} params are for dim {params.dim}, the base level's "
                              f"for dim {base.params.dim}")
        return self._prepare(params, base)

    def _check_encodable(self, x: np.ndarray) -> None:
        """Codec-specific checks of checked float32 ``x`` [n, d] before encoding (rows are
        numbered as the caller passed them)."""

    def check_codes(self, codes: np.ndarray, params: CodecParams) -> np.ndarray:
        """Return ``codes`` as a C-contiguous uint8 ``[n, code_bytes]`` array, or raise."""
        if not isinstance(codes, np.ndarray):
            raise CodesMismatchError(f"codes must be a numpy array, got {type(codes).__name__}")
        if codes.dtype != np.uint8:
            raise CodesMismatchError(f"codes must be uint8, got {codes.dtype}")
        width = self.code_bytes(params.dim)
        if codes.ndim != 2 or codes.shape[1] != width:
            raise CodesMismatchError(
                f"{self.spec} codes for dim {params.dim} must have shape [n, {width}], "
                f"got {list(codes.shape)}")
        if codes.shape[0] == 0:
            raise EmptyInputError("codes has no rows")
        return np.ascontiguousarray(codes)

    # -- hooks ----------------------------------------------------------------------------
    # ``state`` is what :meth:`_prepare` derived from checked params, once per public call
    # (the params themselves unless a codec needs more); chunks of rows share it.

    @abstractmethod
    def _fit(self, x: np.ndarray, cache: FitCache) -> CodecParams: ...

    def _prepare(self, params: CodecParams) -> Any:
        """Derive per-call state from checked params (default: the params as given)."""
        return params

    @abstractmethod
    def _encode(self, x: np.ndarray, state: Any) -> np.ndarray:
        """float32 [m, d] rows -> uint8 [m, code_bytes]."""

    @abstractmethod
    def _decode(self, codes: np.ndarray, state: Any) -> np.ndarray:
        """uint8 [m, code_bytes] -> float32 [m, d]."""

    # The scoring hooks take ``deterministic`` (see :meth:`score`): every inner product goes
    # through exact.inner_products / exact.paired_products with it, everything else is
    # elementwise. Decoding is elementwise for the codecs that use the defaults.

    def _prepare_queries(self, q: np.ndarray, state: Any, *, deterministic: bool) -> Any:
        """Per-call query preprocessing for :meth:`_score` (default: the queries as given)."""
        return q

    def _score(self, prepared: Any, codes: np.ndarray, state: Any, *,
               deterministic: bool) -> np.ndarray:
        """Default scoring: decode the chunk and take inner products -> float32 [nq, m]."""
        return inner_products(prepared, self._decode(codes, state), deterministic=deterministic)

    def _score_candidates(self, q: np.ndarray, codes: np.ndarray, state: Any,
                          c: int, *, deterministic: bool) -> np.ndarray:
        """``q`` [m, d], ``codes`` [m * c, code_bytes] (c per query) -> float32 [m, c].

        Default: inner products with the decoded candidates, which equals ``score`` for every
        codec whose score is ``<q, decode(code)>``; codecs that score otherwise override it.
        """
        restored = self._decode(codes, state).reshape(q.shape[0], c, -1)
        return paired_products(q, restored, deterministic=deterministic)


_DEFAULT: Any = object()   # "bits not given" (None is a bad value, not a default)


class BitsCodec(Codec):
    """A codec whose one option is ``bits`` and whose spec is ``<id><bits>`` (``"semq4"``)."""

    #: The widths ``bits`` may take, and its default.
    allowed_bits: ClassVar[tuple[int, ...]]
    default_bits: ClassVar[int]

    def __init__(self, *, bits: Any = _DEFAULT) -> None:
        self.bits = check_bits(self.codec_id, self.default_bits if bits is _DEFAULT else bits,
                               self.allowed_bits)

    def get_config(self) -> dict[str, Any]:
        return {"id": self.codec_id, "bits": self.bits}

    @property
    def spec(self) -> str:
        return f"{self.codec_id}{self.bits}"


def check_order(codecs: Sequence[Codec]) -> None:
    """Raise :class:`CodecConfigError` (naming the level) unless every refining codec in one
    shard's level list (scan level first) follows a level it can refine."""
    for i, codec in enumerate(codecs):
        if codec.refines and (i == 0 or not codec.accepts_base(codecs[i - 1])):
            what = "the first level" if i == 0 else f"after a {codecs[i - 1].spec} level"
            raise CodecConfigError(f"level {i} ({codec.spec}) refines the level before it and "
                                   f"cannot be {what}; e.g. ['semq1', '{codec.spec}']")


def check_chain(levels: Sequence[tuple[Codec, CodecParams]]) -> None:
    """:func:`check_order` of one shard's ``(codec, params)`` levels, and that every refining
    level's params were fitted against the level before it (:class:`ParamsError`)."""
    check_order([codec for codec, _ in levels])
    for i, (codec, params) in enumerate(levels):
        if codec.refines:
            codec.check_base_params(params, levels[i - 1][1])


def _rows(base: BaseLevel | None, start: int, stop: int) -> tuple[np.ndarray, ...]:
    """The extra hook argument of refining codecs: the base codes of rows start..stop."""
    return () if base is None else (base.codes[start:stop],)


def check_bits(codec_id: str, bits: Any, allowed: tuple[int, ...]) -> int:
    """Validate a ``bits`` option against the codec's allowed values."""
    if not isinstance(bits, int) or isinstance(bits, bool) or bits not in allowed:
        raise CodecConfigError(f"codec {codec_id!r} takes bits in {list(allowed)}, got {bits!r}")
    return bits


def rowwise_matmul(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``a @ b`` for ``a`` [m, n] with ``m <= CHUNK_ROWS``; every output row is independent of
    ``m`` and of the other rows.

    BLAS picks its kernel by matrix size (gemv for one row, a small-matrix kernel for small
    products, blocked gemm otherwise), and the kernels round differently. Codes must not
    depend on how callers batch rows, so ``a`` is always multiplied as exactly
    ``CHUNK_ROWS`` rows (zero-padded): one shape, one kernel.
    """
    m = a.shape[0]
    if m > CHUNK_ROWS:
        raise ValueError(f"rowwise_matmul takes at most {CHUNK_ROWS} rows, got {m}")
    if m < CHUNK_ROWS:
        padded = np.zeros((CHUNK_ROWS, a.shape[1]), dtype=a.dtype)
        padded[:m] = a
        return (padded @ b)[:m]
    return a @ b


def check_float16_range(x: np.ndarray, spec: str) -> None:
    """Raise :class:`OutOfRangeError` if float32 ``x`` [n, d] has a value float16 cannot hold."""
    if max(-float(x.min()), float(x.max())) > F16_MAX:
        row, col = (int(i) for i in np.argwhere(np.abs(x) > F16_MAX)[0])
        raise OutOfRangeError(
            f"x row {row}, column {col} is {float(x[row, col]):g}, beyond the float16 range "
            f"(|v| <= {F16_MAX:g}) that {spec} stores values in; use a codec such as 'int8'")


def check_vectors(x: Any, name: str, *, dim: int | None = None) -> np.ndarray:
    """Return ``x`` as a C-contiguous float32 ``[n, d]`` array, or raise a typed error.

    Accepts float16/32/64 numpy arrays (others are converted to float32). Rejects non-arrays,
    non-float dtypes, anything not 2-D, empty arrays, a ``d`` other than ``dim``, NaN/Inf
    (including float64 values too large for float32), and magnitudes above
    :data:`MAX_ABS_VALUE`. The error names ``name``, what was expected and what was received.
    """
    if not isinstance(x, np.ndarray):
        raise InputDtypeError(f"{name} must be a numpy array of float32 [n, d], got "
                              f"{type(x).__name__}")
    if x.dtype.kind != "f":
        raise InputDtypeError(f"{name} must be float32 [n, d], got dtype {x.dtype}; "
                              f"convert with {name}.astype(np.float32)")
    if x.ndim != 2:
        hint = f" (for one vector use {name}[None, :])" if x.ndim == 1 else ""
        raise InputShapeError(f"{name} must be 2-D [n, d], got shape {list(x.shape)}{hint}")
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise EmptyInputError(f"{name} is empty: shape {list(x.shape)}")
    if dim is not None and x.shape[1] != dim:
        raise InputShapeError(f"{name} has dimension {x.shape[1]}, expected dimension {dim} "
                              f"(that of the codec params / index)")
    with np.errstate(over="ignore"):  # float64 beyond float32 becomes Inf, reported below
        x32 = np.ascontiguousarray(x, dtype=np.float32)
    # min/max propagate NaN and show Inf without allocating a boolean mask.
    lo, hi = x32.min(), x32.max()
    if not (np.isfinite(lo) and np.isfinite(hi)):
        bad = ~np.isfinite(x32)
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise NonFiniteError(
            f"{name} holds {int(bad.sum())} non-finite value(s) (NaN/Inf, or too large for "
            f"float32); first at row {row}, column {col}: {x[row, col]!r}")
    if max(-lo, hi) > MAX_ABS_VALUE:
        row, col = (int(i) for i in np.argwhere(np.abs(x32) > MAX_ABS_VALUE)[0])
        raise OutOfRangeError(
            f"{name} row {row}, column {col} is {float(x32[row, col]):g}; magnitudes above "
            f"{MAX_ABS_VALUE:g} overflow float32 inner products: rescale the vectors")
    return x32
