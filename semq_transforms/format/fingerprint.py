"""Input fingerprints: 8 bytes per row that say whether a row's input vector changed.

    fp = row_fingerprints(x)              # uint8 [n, 8]
    meta = write_shard(f, ids=ids, levels=levels, path=path, fingerprints=fp)

A row's codes depend on the params fitted on its whole shard, so the same input re-encoded
(another codec, another shard split, new neighbors in its shard) restores to another vector.
The fingerprint depends on the input vector alone: two versions of an index that both store
them tell a row whose input changed from one that was only re-encoded (``Index.diff``).

**Definition** (FORMAT.md, "Input fingerprints"): BLAKE2b with an 8-byte digest
(``hashlib.blake2b(data, digest_size=8)``, no key, salt or personalization; the digest length
is a BLAKE2b parameter, not a cut of the 64-byte digest) of the row's ``d`` values as
little-endian IEEE float32, after the float32 conversion the codecs apply
(:func:`~semq_transforms.codecs.check_vectors`), with every ``-0.0`` replaced by ``0.0`` (the
two compare equal, so equal vectors hash equal). Inputs are finite (checked), so NaN, whose
bit patterns vary, never occurs. Pure hashing of bytes: the same on every machine, and a
row's fingerprint does not depend on the other rows or on the batch it is hashed in.

**Cost.** 64 bits per row, stored in the shard's ``input_fp`` column: ``64 / d`` bits per
dimension (0.17 at d = 384, 0.04 at d = 1536). Computing them for 100,000 x 384 float32 rows
(154 MB) takes about 0.35 s on one core of a 2-CPU x86-64 cloud VM: BLAKE2b itself runs at
about 640 MB/s there (0.24 s); the rest is one hashlib call per row, one pass replacing
``-0.0`` and the finiteness check (15 ms). Fitting and encoding the same rows take seconds.

Equal fingerprints mean equal inputs up to a 64-bit hash collision: between two versions of
``n`` common rows, the chance that some changed row keeps its fingerprint is at most
``n / 2^64`` (5e-12 for 100 million rows).
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

from semq_transforms.codecs import check_vectors
from semq_transforms.errors import InputDtypeError, InputShapeError

#: The scheme's name, as the shard header's ``input_fingerprint`` field records it.
SCHEME = "blake2b-64"
#: Bytes per row.
FINGERPRINT_BYTES = 8
#: The shard column holding them (``fixed_size_binary(8)``, not null, after the codes).
COLUMN = "input_fp"

__all__ = ["COLUMN", "FINGERPRINT_BYTES", "SCHEME", "check_fingerprints",
           "fingerprints_sha256", "row_fingerprints"]


def row_fingerprints(x: Any) -> np.ndarray:
    """The input fingerprint of each row of ``x`` (float ``[n, d]``, finite): uint8 ``[n, 8]``.

    ``x`` is converted and checked as the codecs do (:func:`check_vectors`: float32, 2-D,
    non-empty, finite); any error names ``x``.
    """
    x = check_vectors(x, "x")
    # x + 0.0 is x for every finite value but -0.0, which becomes +0.0 (IEEE round to nearest)
    canonical = (x + np.float32(0.0)).astype("<f4", copy=False)
    row_bytes = 4 * canonical.shape[1]
    data = memoryview(canonical.reshape(-1)).cast("B")
    blake2b = hashlib.blake2b
    digests = b"".join(blake2b(data[i:i + row_bytes], digest_size=FINGERPRINT_BYTES).digest()
                       for i in range(0, len(data), row_bytes))
    return np.frombuffer(digests, dtype=np.uint8).reshape(canonical.shape[0],
                                                          FINGERPRINT_BYTES).copy()


def check_fingerprints(fingerprints: Any, rows: int) -> np.ndarray:
    """``fingerprints`` checked as a shard writer takes them: a C-contiguous uint8 array
    ``[rows, 8]`` (as :func:`row_fingerprints` returns), else a typed input error."""
    if not isinstance(fingerprints, np.ndarray) or fingerprints.dtype != np.uint8:
        kind = (f"dtype {fingerprints.dtype}" if isinstance(fingerprints, np.ndarray)
                else type(fingerprints).__name__)
        raise InputDtypeError(f"fingerprints must be a uint8 numpy array [rows, "
                              f"{FINGERPRINT_BYTES}] (row_fingerprints(x)), got {kind}")
    if fingerprints.shape != (rows, FINGERPRINT_BYTES):
        raise InputShapeError(f"fingerprints must have shape [{rows}, {FINGERPRINT_BYTES}] "
                              f"(one per row), got {list(fingerprints.shape)}")
    return np.ascontiguousarray(fingerprints)


def fingerprints_sha256(fingerprints: np.ndarray) -> str:
    """``digests.fingerprints``: SHA-256 of the column's bytes, ``rows x 8``, row-major."""
    return hashlib.sha256(np.ascontiguousarray(fingerprints).data).hexdigest()
