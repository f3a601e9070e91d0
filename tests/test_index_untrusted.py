"""The query-time index over files it cannot trust: shard files swapped or edited behind the
manifest's back, manifests edited with a recomputed digest, things that are not regular files,
and API arguments that would otherwise escape as raw numpy errors or huge allocations."""

from __future__ import annotations

import dataclasses
import os
import shutil
import threading
import tracemalloc

import numpy as np
import pyarrow.parquet as pq
import pytest

from semq_transforms.build import build_index
from semq_transforms.cli import main as cli_main
from semq_transforms.errors import (
    FormatError,
    IntegrityError,
    InvalidInputError,
    RunFolderInUseError,
)
from semq_transforms.format.manifest import Manifest
from semq_transforms.format.meta import LevelMeta
from semq_transforms.format.store import IndexStore, manifest_path
from semq_transforms.index import Index
from tests.conftest import make_anisotropic


@pytest.fixture()
def corpus() -> np.ndarray:
    return make_anisotropic(1200, 32, seed=21)


@pytest.fixture()
def root(tmp_path, corpus):
    """An index of three 400-row semq4 shards (int ids 0..1199)."""
    path = tmp_path / "index"
    build_index(str(path), corpus, codecs=["semq4"], rows_per_shard=400)
    return path


def _replacement(kind: str, tmp_path, corpus, root) -> bytes:
    """Bytes of a well-formed shard file that is not shard 0 of ``root``."""
    if kind == "another shard of the index":
        return (root / Index.open(str(root)).shards[1].path).read_bytes()
    other = tmp_path / f"other-{kind.split()[0]}"
    if kind == "int8 shard":
        build_index(str(other), corpus[:400], codecs=["int8"], rows_per_shard=400)
    elif kind == "string-id shard":
        build_index(str(other), corpus[:400], ids=[f"s{i}" for i in range(400)],
                    codecs=["semq4"], rows_per_shard=400)
    else:  # the same ids and codec, other vectors
        build_index(str(other), corpus[400:800], codecs=["semq4"], rows_per_shard=400)
    return (other / Index.open(str(other)).shards[0].path).read_bytes()


@pytest.mark.parametrize("kind", ["another shard of the index", "int8 shard",
                                  "string-id shard", "other vectors, same ids"])
def test_a_shard_file_replaced_behind_the_manifest_is_refused(kind, tmp_path, corpus, root):
    """Each replacement is a valid shard whose own digests check out; only the manifest says
    it is the wrong one. Search and restore must refuse it (they returned wrong rows, or
    failed with raw errors), and verify must report it."""
    index = Index.open(str(root))
    first = index.shards[0].path
    (root / first).write_bytes(_replacement(kind, tmp_path, corpus, root))
    with pytest.raises(IntegrityError, match="not the shard manifest version 1 lists"):
        Index.open(str(root)).search(corpus[:3], 5)
    with pytest.raises(IntegrityError, match=first):
        list(Index.open(str(root)).restore([0, 500]))
    report = Index.open(str(root)).verify()
    assert [p.path for p in report.problems] and {p.path for p in report.problems} == {first}


@pytest.mark.parametrize("edit", [
    {"rows": 401},
    {"id_min": 50, "id_max": 60},
    {"levels": (LevelMeta("semq4", 16 + 8, "0" * 64),)},
])
def test_manifest_rows_edited_with_a_recomputed_digest_are_caught(edit, root, corpus):
    """A writer can recompute a manifest's digest: its fields must still agree with the
    shard files. verify reported such a manifest ok. (restore(ids) prunes shards by the
    manifest's id ranges, so an edited range hides ids from it; verify is what catches it.)"""
    index = Index.open(str(root))
    shard0 = index.shards[0]
    if "levels" in edit:   # keep the real code width, forge the params digest
        edit = {"levels": (dataclasses.replace(shard0.levels[0], params_sha256="0" * 64),)}
    forged = [dataclasses.replace(shard0, **edit), *index.shards[1:]]
    store = IndexStore(str(root))
    store.commit(forged, dim=index.dim, codecs=list(index.codecs), run_id="forged")
    tampered = Index.open(str(root), 2)
    problems = tampered.verify().problems
    assert len(problems) == 1 and problems[0].path == shard0.path
    with pytest.raises(IntegrityError, match=shard0.path):
        tampered.search(corpus[:2], 3)
    with pytest.raises(IntegrityError):
        list(Index.open(str(root), 2).restore())
    assert Index.open(str(root), 1).verify().ok


def test_a_missing_shard_file_is_an_integrity_error_naming_it(root, corpus):
    index = Index.open(str(root))
    (root / index.shards[1].path).unlink()
    with pytest.raises(IntegrityError, match=f"{index.shards[1].path}: listed in manifest "
                                             f"version 1 but missing"):
        Index.open(str(root)).search(corpus[:1], 3)


def _finishes(func, seconds: float = 30.0) -> BaseException | None:
    """Run ``func`` in a daemon thread; fail if it is still running after ``seconds`` (a read
    blocked forever on a FIFO), else return what it raised (None if nothing)."""
    outcome: list[BaseException | None] = []

    def target() -> None:
        try:
            func()
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - handed to the test
            outcome.append(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    thread.join(seconds)
    assert not thread.is_alive(), "blocked: the reader waited on something not a file"
    return outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_in_place_of_a_shard_or_manifest_is_refused_not_waited_on(root, corpus):
    index = Index.open(str(root))
    shard_file = root / index.shards[0].path
    shard_file.unlink()
    os.mkfifo(shard_file)
    err = _finishes(lambda: Index.open(str(root)).search(corpus[:1], 3))
    assert isinstance(err, FormatError) and "not a regular file" in str(err)
    report = Index.open(str(root)).verify()
    assert [p.path for p in report.problems] == [index.shards[0].path]
    manifest = next((root / "manifests").glob("*.arrow"))
    manifest.unlink()
    os.mkfifo(manifest)
    err = _finishes(lambda: Index.open(str(root), 1))
    assert isinstance(err, FormatError) and "not a regular file" in str(err)


HUGE = 64 << 20


def _peak_with_huge_shard(root, action) -> int:
    """Grow shard 0 of ``root`` to :data:`HUGE` bytes (sparse: cheap on disk), run
    ``action()`` and return the peak of Python allocations meanwhile."""
    with open(root / Index.open(str(root)).shards[0].path, "r+b") as f:
        f.truncate(HUGE)
    tracemalloc.start()
    try:
        action()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_verify_reads_no_more_than_the_manifest_lists(root):
    """A huge file at a shard path is reported, not read whole into memory."""
    index = Index.open(str(root))
    reports = []
    peak = _peak_with_huge_shard(root, lambda: reports.append(index.verify()))
    assert [p.path for p in reports[0].problems] == [index.shards[0].path]
    assert "over" in reports[0].problems[0].problem
    assert peak < HUGE // 8


def test_verify_of_a_manifest_claiming_a_huge_shard_allocates_no_such_buffer(root):
    """A manifest (digest recomputed) that lists 3 GiB for a 25 KB shard: verify reports the
    size and allocates nothing near 3 GiB (one read of the listed size would)."""
    index = Index.open(str(root))
    shard0 = index.shards[0]
    claimed = 3 << 30
    m = index.manifest
    forged = Manifest.new(version=m.version, dim=m.dim, codecs=m.codecs, run_id=m.run_id,
                          shards=[dataclasses.replace(shard0, file_bytes=claimed),
                                  *index.shards[1:]])
    (root / manifest_path(m.version)).write_bytes(forged.to_bytes())
    tampered = Index.open(str(root), m.version)
    tracemalloc.start()
    try:
        problems = tampered.verify().problems
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert [p.path for p in problems] == [shard0.path]
    assert f"file_bytes is {shard0.file_bytes}, the manifest says {claimed}" in problems[0].problem
    assert peak < HUGE


def test_restore_checks_the_level_before_reading_anything(root, tmp_path):
    index = Index.open(str(root))
    for level in (1, -2, "0", True):
        with pytest.raises(InvalidInputError, match="level"):
            index.restore(level=level)
    dest = tmp_path / "out.parquet"
    with pytest.raises(InvalidInputError):
        index.export_parquet(str(dest), level=5)
    assert not dest.exists()
    assert cli_main(["restore", str(root), "--out", str(dest), "--level", "5"]) == 2
    assert not dest.exists()


def test_an_export_that_fails_midway_leaves_no_file(root, tmp_path):
    """The last shard is corrupt: the first two were written before the error; the file
    would have looked like a complete export of 800 rows."""
    index = Index.open(str(root))
    last = root / index.shards[-1].path
    data = bytearray(last.read_bytes())
    data[len(data) // 2] ^= 0xFF
    last.write_bytes(bytes(data))
    dest = tmp_path / "out.parquet"
    with pytest.raises(IntegrityError):
        index.export_parquet(str(dest))
    assert not dest.exists()
    shutil.copy(root / index.shards[0].path, last)      # still wrong, but as another shard
    with pytest.raises(IntegrityError):
        Index.open(str(root)).export_parquet(str(dest))
    assert not dest.exists()


def test_restore_finds_the_ids_of_its_type_in_a_mixed_list(root):
    index = Index.open(str(root))
    for ids in ([5, "x"], ["x", 5, 7.0, True], np.array([5], dtype=np.uint64), {5, 10**30},
                (i for i in (5, "5")), 5, np.int64(5)):
        table = index.restore_table(ids)
        assert table.column("id").to_pylist() == [5]
    strings = Index.open(str(root)).restore_table(["5"])
    assert strings.num_rows == 0


def test_diff_overlap_tells_string_ids_apart(tmp_path, corpus):
    """Ids were numbered by rank within each result table, so two indexes of the same vectors
    under disjoint string ids overlapped 1.0."""
    a, b, c = (str(tmp_path / name) for name in "abc")
    build_index(a, corpus, ids=[f"a{i}" for i in range(1200)], codecs=["semq4"])
    build_index(b, corpus, ids=[f"b{i}" for i in range(1200)], codecs=["semq4"])
    build_index(c, corpus, ids=[f"a{i}" for i in range(1200)], codecs=["semq4"])
    assert Index.open(a).diff(Index.open(b), sample_queries=20).neighbor_overlap == 0.0
    assert Index.open(a).diff(Index.open(c), sample_queries=20).neighbor_overlap == 1.0


def test_diff_counts_negative_int_ids(tmp_path, corpus):
    """Negative ids are real ids (the overlap measure ignores negatives as padding)."""
    url = str(tmp_path / "neg")
    build_index(url, corpus, ids=-1 - np.arange(1200), codecs=["semq4"])
    assert Index.open(url).diff(Index.open(url), sample_queries=20).neighbor_overlap == 1.0


def test_diff_checks_its_arguments(root):
    index = Index.open(str(root))
    for kwargs in ({"sample_queries": -1}, {"k": 0}, {"k": 2.5}):
        with pytest.raises(InvalidInputError):
            index.diff(index, **kwargs)


def test_build_index_refuses_repeated_ids(tmp_path, corpus):
    with pytest.raises(InvalidInputError, match="id 0 is at rows 0 and 3"):
        build_index(str(tmp_path / "dup"), corpus[:4], ids=np.array([0, 1, 2, 0]))
    with pytest.raises(InvalidInputError, match="'b' is at rows 1 and 2"):
        build_index(str(tmp_path / "dup-s"), corpus[:3], ids=["a", "b", "b"])
    assert not (tmp_path / "dup").exists() and not (tmp_path / "dup-s").exists()


def test_search_refuses_a_result_too_large_to_allocate(root, corpus):
    index = Index.open(str(root))
    with pytest.raises(InvalidInputError, match="result entries"):
        index.search(corpus[:4], 2**40)
    scores, ids = index.search(corpus[:1], 5000, rerank=2**40)   # padded, computed on 1200
    assert ids.shape == (1, 5000) and (ids[0, :1200] >= 0).all() and (ids[0, 1200:] == -1).all()
    assert np.isneginf(scores[0, 1200:]).all()


def test_cli_diff_against_another_index_takes_its_latest_version(root, tmp_path, corpus,
                                                                 capsys):
    other = tmp_path / "other"
    build_index(str(other), corpus, codecs=["semq4"], rows_per_shard=400)
    assert cli_main(["diff", str(root), "--other-url", str(other), "--json",
                     "--sample-queries", "10"]) == 0
    assert '"neighbor_overlap": 1.0' in capsys.readouterr().out


def test_export_of_a_good_index_still_round_trips(root, tmp_path):
    dest = tmp_path / "new" / "folder" / "ok.parquet"      # folders made as needed
    assert Index.open(str(root)).export_parquet(str(dest)) == 1200
    assert pq.read_table(dest).num_rows == 1200


def test_build_index_twice_keeps_the_first_version_intact(tmp_path, corpus):
    """build_index wrote every call's shards to runs/local/: the second call rewrote the first
    version's files. Each call now gets a run folder of its own; a folder a committed version
    uses is refused."""
    url = str(tmp_path / "twice")
    build_index(url, corpus[:800], codecs=["semq4"], rows_per_shard=400)
    build_index(url, corpus[400:], codecs=["semq4"], rows_per_shard=400)
    assert Index.open(url, 1).verify().ok and Index.open(url, 2).verify().ok
    assert Index.open(url, 1).manifest.run_id != Index.open(url, 2).manifest.run_id
    build_index(url, corpus, codecs=["semq2"], run_id="mine")
    before = {p: p.read_bytes() for p in (tmp_path / "twice" / "runs" / "mine").iterdir()}
    with pytest.raises(RunFolderInUseError, match="'mine'.*version 3"):
        build_index(url, corpus[:10], codecs=["semq2"], run_id="mine")
    assert {p: p.read_bytes() for p in (tmp_path / "twice" / "runs" / "mine").iterdir()} \
        == before


def test_credentials_in_an_object_store_url_are_refused_unprinted(capsys):
    url = "s3://AKIAEXAMPLE:SuperSecretValue123@bucket/index"
    with pytest.raises(InvalidInputError, match="take no credentials") as caught:
        Index.open(url)
    assert "SuperSecretValue123" not in str(caught.value)
    assert cli_main(["versions", url]) == 2
    assert "SuperSecretValue123" not in capsys.readouterr().err


def test_encode_and_publish_transforms_check_their_codecs_when_built():
    """EncodeShards(codecs="semq4") failed on a worker, as "unknown codec id 's'"."""
    from semq_transforms.transforms.encode import EncodeShards

    with pytest.raises(InvalidInputError, match="non-empty list of codec specs"):
        EncodeShards("memory://x", run_id="r", codecs="semq4")
    with pytest.raises(InvalidInputError, match="k must be"):
        EncodeShards("memory://x", run_id="r", codecs=["semq4"], k=0)


# -- nothing outside the index prefix, nothing beyond what the manifest lists ----------------


def _forge_manifest(root, shards, monkeypatch) -> None:
    """Write version 2 of ``root`` listing ``shards`` as a writer that skips our path check
    would (digest computed, so only the path rules can refuse it)."""
    from semq_transforms.format import manifest as manifest_module

    index = Index.open(str(root))
    with monkeypatch.context() as patch:
        patch.setattr(manifest_module, "check_rel_path", lambda path, what="path": path)
        forged = manifest_module.Manifest.new(version=2, dim=index.dim, codecs=index.codecs,
                                              shards=shards, run_id="forged", parent_version=1)
        data = forged.to_bytes()
    (root / "manifests" / "v00000002.manifest.arrow").write_bytes(data)


@pytest.mark.parametrize("path", [
    "runs/%2e%2e/%2e%2e/secret.semq",      # an HTTP server decodes this to ../../secret.semq
    "runs/x/shard-00000.semq?a=b",          # a query string to an HTTP filesystem
    "runs/x/shard-0000#.semq",
    "runs/x/shard-*.semq",                  # a glob
    "runs/\uff0e\uff0e/secret.semq",         # full-width dots
    "runs/x /shard.semq",
])
def test_manifest_paths_that_could_leave_the_prefix_are_refused(path, root, monkeypatch):
    index = Index.open(str(root))
    _forge_manifest(root, [dataclasses.replace(index.shards[0], path=path),
                           *index.shards[1:]], monkeypatch)
    with pytest.raises(FormatError, match="relative path of '/'-separated non-empty parts"):
        Index.open(str(root), 2)
    assert Index.open(str(root), 1).verify().ok


def test_symbolic_links_out_of_a_local_index_are_refused(root, tmp_path, corpus):
    """A shard path that is a link to a file outside the index is refused, even when that
    file is the very shard listed (so no other check could catch it); a link loop is a
    FormatError, not a bare OSError; an index folder that is itself a link works."""
    index = Index.open(str(root))
    shard_file = root / index.shards[0].path
    outside = tmp_path / "outside.semq"
    shutil.copyfile(shard_file, outside)
    shard_file.unlink()
    shard_file.symlink_to(outside)
    with pytest.raises(FormatError, match="symbolic link leads outside the index folder"):
        Index.open(str(root)).search(corpus[:1], 3)
    assert [p.path for p in Index.open(str(root)).verify().problems] == [index.shards[0].path]
    shard_file.unlink()
    shard_file.symlink_to(shard_file)
    with pytest.raises(FormatError, match="cannot resolve the path"):
        Index.open(str(root)).search(corpus[:1], 3)
    shard_file.unlink()
    shutil.copyfile(outside, shard_file)
    link = tmp_path / "link-to-index"
    link.symlink_to(root)
    _, ids = Index.open(str(link)).search(corpus[:1], 1)
    assert ids[0, 0] == 0
    (root / "manifests").rename(tmp_path / "manifests-elsewhere")
    (root / "manifests").symlink_to(tmp_path / "manifests-elsewhere")
    with pytest.raises(FormatError, match="symbolic link leads outside"):
        Index.open(str(root), 1)


def test_search_reads_no_more_than_the_manifest_lists(root, corpus):
    """A huge file where a 25 KB shard is listed: refused by its size, not read into memory
    (search and restore read it whole before, 4 GiB of RSS for a 3.9 GiB file)."""
    listed = Index.open(str(root)).shards[0].file_bytes

    def search_and_restore() -> None:
        with pytest.raises(IntegrityError, match=f"{HUGE} bytes, expected {listed}"):
            Index.open(str(root)).search(corpus[:1], 3)
        with pytest.raises(IntegrityError, match="not the shard manifest version 1 lists"):
            list(Index.open(str(root)).restore())

    assert _peak_with_huge_shard(root, search_and_restore) < HUGE // 8


def test_a_manifest_whose_two_schema_copies_disagree_is_refused(root):
    """An Arrow IPC file holds its schema twice: a message at the start (what a stream reader
    sees) and the footer (what a file reader sees). ``created_at`` lies outside the digest,
    so editing it in the first copy only kept the digest valid and the file readable."""
    path = next((root / "manifests").glob("*.arrow"))
    data = bytearray(path.read_bytes())
    created = Index.open(str(root)).manifest.created_at.encode()
    first = data.find(created)
    assert first > 0 and data.find(created, first + 1) > first     # both copies hold it
    data[first + 3] = ord("0") if data[first + 3] != ord("0") else ord("1")
    path.write_bytes(bytes(data))
    with pytest.raises(FormatError, match="schema message at the start of the file differs"):
        Index.open(str(root))
