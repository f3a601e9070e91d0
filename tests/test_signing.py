"""Signed versions (``format/signing.py``): a publisher's Ed25519 key signs each manifest
file; a reader given the public key refuses what that key did not sign, including the
rewrites a manifest's own digest cannot catch (a shard dropped, the digest recomputed) and
bytes outside that digest (Arrow padding)."""

from __future__ import annotations

import json

import pytest
import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from semq_transforms.build import build_index
from semq_transforms.cli import main as cli_main
from semq_transforms.errors import IntegrityError, InvalidInputError, VersionConflictError
from semq_transforms.format import manifest as manifest_module
from semq_transforms.format.signing import load_private_key, load_public_key
from semq_transforms.format.store import IndexStore
from semq_transforms.index import Index
from tests.conftest import make_anisotropic


def _pem_pair() -> tuple[bytes, bytes]:
    key = ed25519.Ed25519PrivateKey.generate()
    private = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    public = key.public_key().public_bytes(serialization.Encoding.PEM,
                                           serialization.PublicFormat.SubjectPublicKeyInfo)
    return private, public


@pytest.fixture()
def signed(tmp_path):
    """A signed index of two versions: (root, corpus, private PEM, public key)."""
    private, public = _pem_pair()
    x = make_anisotropic(600, 16, seed=8)
    root = tmp_path / "index"
    key = load_private_key(private)
    build_index(str(root), x, codecs=["semq4"], rows_per_shard=300, signing_key=key)
    build_index(str(root), x[:300], codecs=["semq4"], rows_per_shard=300, signing_key=key)
    return root, x, private, load_public_key(public)


def test_signed_versions_open_with_their_key_only(signed, tmp_path):
    root, x, _, public = signed
    for version in (1, 2):
        index = Index.open(str(root), version, public_key=public)
        assert index.verify().ok
    _, ids = Index.open(str(root), 1, public_key=public).search(x[:3], k=1)
    assert ids[:, 0].tolist() == [0, 1, 2]
    other = load_public_key(_pem_pair()[1])
    with pytest.raises(IntegrityError, match="does not verify with the given public key"):
        Index.open(str(root), public_key=other)
    unsigned = tmp_path / "unsigned"
    build_index(str(unsigned), x, codecs=["semq4"], rows_per_shard=300)
    with pytest.raises(IntegrityError, match="not signed"):
        Index.open(str(unsigned), public_key=public)
    assert Index.open(str(unsigned)).verify().ok            # no key: no signature needed


def test_a_rewritten_manifest_is_refused_with_the_key(signed, monkeypatch):
    """A writer without the private key drops a shard and recomputes the digest: readers
    without the key still accept it (integrity, not authenticity); with it, refused."""
    root, _, _, public = signed
    index = Index.open(str(root), 1)
    with monkeypatch.context() as patch:
        patch.setattr(manifest_module, "check_rel_path", lambda path, what="path": path)
        forged = manifest_module.Manifest.new(
            version=1, dim=index.dim, codecs=index.codecs, shards=index.shards[1:],
            run_id=index.manifest.run_id)
    path = root / "manifests" / "v00000001.manifest.arrow"
    path.write_bytes(forged.to_bytes())
    assert Index.open(str(root), 1).verify().ok
    with pytest.raises(IntegrityError, match="not signed"):
        Index.open(str(root), 1, public_key=public)


def test_a_byte_outside_the_manifest_digest_is_refused_with_the_key(signed):
    """Some bytes of a manifest file are read by nobody (Arrow padding, fields pyarrow
    ignores): flipping one changes nothing its own checks see, and the unsigned reader
    accepts it (14 of 1,000 mutations in benchmarks/reliability.py). The signature covers
    every byte of the file."""
    from semq_transforms.errors import SemqError

    root, _, _, public = signed
    path = root / "manifests" / "v00000002.manifest.arrow"
    original = path.read_bytes()
    for offset in range(len(original)):
        data = bytearray(original)
        data[offset] ^= 0x01
        path.write_bytes(bytes(data))
        try:
            if Index.open(str(root), 2).verify().ok:
                break                          # a byte the unsigned reader does not see
        except SemqError:
            continue
    else:
        pytest.fail("every single-bit flip was refused without a key")
    with pytest.raises(IntegrityError, match="not signed"):
        Index.open(str(root), 2, public_key=public)


def test_the_loser_of_a_commit_race_leaves_the_winners_signature_intact(signed):
    """The signature is written before the manifest and named by the file's hash: a writer
    that loses version 3 leaves a signature of a file that never appeared."""
    root, _, private, public = signed
    winner, loser = IndexStore(str(root)), IndexStore(str(root))
    shards = Index.open(str(root), 2).shards
    key = load_private_key(private)
    winner.commit(shards, dim=16, codecs=["semq4"], run_id="winner", signing_key=key)
    with pytest.raises(VersionConflictError):
        loser.commit(shards, dim=16, codecs=["semq4"], run_id="loser", parent_version=2,
                     signing_key=key)
    assert len(list((root / "manifests").glob("v00000003.*.sig"))) == 2
    assert IndexStore(str(root)).versions() == [1, 2, 3]
    assert Index.open(str(root), 3, public_key=public).manifest.run_id == "winner"


def test_keys_are_checked_and_the_cli_takes_a_public_key(signed, tmp_path, capsys):
    root, _, private, _ = signed
    with pytest.raises(InvalidInputError, match="PEM private key"):
        load_private_key(b"not a key")
    with pytest.raises(InvalidInputError, match="PEM public key"):
        load_public_key(private)
    public_file, other_file = tmp_path / "pub.pem", tmp_path / "other.pem"
    public_file.write_bytes(load_private_key(private).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    other_file.write_bytes(_pem_pair()[1])
    assert cli_main(["verify", str(root), "--public-key", str(public_file), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
    assert cli_main(["verify", str(root), "--public-key", str(other_file)]) == 2
    assert "does not verify with the given public key" in capsys.readouterr().err


def test_the_job_signs_what_it_publishes(tmp_path):
    """output.signing_key_file: the published version opens with the public key."""
    from pipelines.ingest import main
    from semq_transforms.sample_data import write_sample_embeddings

    private, public = _pem_pair()
    (tmp_path / "key.pem").write_bytes(private)
    write_sample_embeddings(str(tmp_path / "in"), rows=600, dim=16, seed=2, files=1)
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({
        "name": "signed", "input": {"url": "in/*.parquet", "dim": 16},
        "output": {"index_url": "idx", "signing_key_file": "key.pem"},
        "encode": {"codecs": ["semq4"], "rows_per_shard": 300},
        # (d = 16: params and the 64-bit input fingerprints weigh more than the codes)
        "validation": {"k": 5, "sample_queries": 16, "seed": 0, "min_recall_at_k": 0.5,
                       "max_rejected_fraction": 0.0, "min_compression_ratio": 0}}))
    assert main(["--config", str(config)]) == 0
    index = Index.open(str(tmp_path / "idx"), public_key=load_public_key(public))
    assert index.rows == 600 and index.verify().ok
    with pytest.raises(IntegrityError, match="does not verify"):
        Index.open(str(tmp_path / "idx"), public_key=load_public_key(_pem_pair()[1]))
