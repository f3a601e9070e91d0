"""Signed versions: an Ed25519 signature over a manifest file's bytes, beside it.

A manifest's digest proves integrity, not authorship: whoever can write the index can rewrite
a manifest (drop a shard, list other files) and recompute the digest. A publisher that holds a
private key signs each manifest it commits; a reader given the matching public key refuses
any version whose manifest does not carry a valid signature (``IntegrityError``).

What is signed: ``SIGNATURE_CONTEXT + version (8 bytes, big-endian) + SHA-256 of the manifest
file``, so every byte of the file (padding included) and the version slot it sits in are
covered. Where: ``manifests/v<version>.manifest.arrow.<sha256 hex>.sig``, 64 raw bytes. The
name holds the file's hash, so the signature is written *before* the manifest is created:
a committed signed version never lacks its signature, and a writer that loses the commit race
leaves only a signature of a file that does not exist (listings ignore it).

Keys are Ed25519 in PEM (PKCS#8 private, SubjectPublicKeyInfo public), e.g. from
``openssl genpkey -algorithm ed25519``. Needs ``cryptography`` (the ``[sign]`` extra).
"""

from __future__ import annotations

import hashlib
import struct
from typing import Any

from semq_transforms.errors import IntegrityError, InvalidInputError

#: Domain separation: these bytes start every signed message.
SIGNATURE_CONTEXT = b"semq-manifest-signature-v1\x00"
#: Bytes of an Ed25519 signature.
SIGNATURE_BYTES = 64


def signature_path(manifest_rel_path: str, manifest_bytes: bytes) -> str:
    """Where the signature of ``manifest_bytes`` stored at ``manifest_rel_path`` lives."""
    return f"{manifest_rel_path}.{hashlib.sha256(manifest_bytes).hexdigest()}.sig"


def _message(version: int, manifest_bytes: bytes) -> bytes:
    return SIGNATURE_CONTEXT + struct.pack(">Q", version) + hashlib.sha256(
        manifest_bytes).digest()


def _ed25519() -> Any:
    try:
        from cryptography.hazmat.primitives.asymmetric import ed25519
    except ImportError:
        raise InvalidInputError("signed versions need the 'cryptography' package: pip install "
                                "'semq-transforms[sign]'") from None
    return ed25519


def load_private_key(pem: bytes) -> Any:
    """An Ed25519 private key from unencrypted PKCS#8 PEM bytes (InvalidInputError else)."""
    ed25519 = _ed25519()
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"not an unencrypted PEM private key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PrivateKey):
        raise InvalidInputError(f"the signing key must be Ed25519, got {type(key).__name__}")
    return key


def load_public_key(pem: bytes) -> Any:
    """An Ed25519 public key from PEM bytes (InvalidInputError else)."""
    ed25519 = _ed25519()
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_public_key(pem)
    except (ValueError, TypeError) as exc:
        raise InvalidInputError(f"not a PEM public key ({exc})") from None
    if not isinstance(key, ed25519.Ed25519PublicKey):
        raise InvalidInputError(f"the public key must be Ed25519, got {type(key).__name__}")
    return key


def sign(private_key: Any, version: int, manifest_bytes: bytes) -> bytes:
    """The 64-byte signature of version ``version``'s manifest file ``manifest_bytes``."""
    return private_key.sign(_message(version, manifest_bytes))


def check_signature(public_key: Any, version: int, manifest_bytes: bytes,
                    signature: bytes | None, source: str) -> None:
    """Raise IntegrityError unless ``signature`` is ``public_key``'s signature of version
    ``version``'s manifest ``manifest_bytes`` (``source`` names it in the message)."""
    from cryptography.exceptions import InvalidSignature

    if signature is None:
        raise IntegrityError(f"manifest {source}: not signed (no signature of this file); "
                             f"refused: a public key was given")
    try:
        if len(signature) != SIGNATURE_BYTES:
            raise InvalidSignature
        public_key.verify(signature, _message(version, manifest_bytes))
    except InvalidSignature:
        raise IntegrityError(f"manifest {source}: its signature does not verify with the "
                             f"given public key; refused") from None
