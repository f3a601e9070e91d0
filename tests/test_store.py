"""The versioned index layout and the commit step, on local paths, file://, memory:// and a
real S3 endpoint (moto's server on loopback, see tests/s3_server.py)."""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import fsspec
import numpy as np
import pytest

from semq_transforms.errors import (
    FormatError,
    IndexNotFoundError,
    IntegrityError,
    VersionConflictError,
)
from semq_transforms.format.manifest import Manifest
from semq_transforms.format.store import IndexStore, manifest_path, shard_path
from tests.manifest_helpers import (
    CODECS,
    DIM,
    commit_in_process,
    make_shard,
    make_shards,
    write_shard_files,
)

BACKENDS = ["local", "file_url", "memory", "s3", "gcs", "azure"]
StoreFactory = Callable[[], IndexStore]


@pytest.fixture(params=BACKENDS)
def new_store(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[StoreFactory]:
    """A factory of IndexStore objects on one fresh, empty index of the given backend; each
    call is a new object (and, on s3, a new filesystem instance), as separate writers are."""
    options = None
    if request.param == "local":
        url = str(tmp_path / "index")
    elif request.param == "file_url":
        url = (tmp_path / "index").as_uri()
    elif request.param == "memory":
        url = f"memory://semq-test-{uuid.uuid4().hex}/index"
    else:       # a real server on loopback: s3_url / gcs_url / azure_url
        url = request.getfixturevalue(f"{request.param}_url")
        options = request.getfixturevalue(f"{request.param}_storage_options")
    yield lambda: IndexStore(url, storage_options=options)
    if request.param == "memory":
        fs = fsspec.filesystem("memory")
        top = "/" + url.removeprefix("memory://").split("/")[0]
        if fs.exists(top):
            fs.rm(top, recursive=True)


def commit(store: IndexStore, shards: list | None = None, **kwargs: Any) -> Manifest:
    shards = make_shards(3) if shards is None else shards
    write_shard_files(store, shards)
    kwargs.setdefault("run_id", "run-1")
    return store.commit(shards, dim=DIM, codecs=CODECS, **kwargs)


# -- layout --------------------------------------------------------------------------------


def test_layout_paths() -> None:
    assert shard_path("run-1", 0) == "runs/run-1/shard-00000.semq"
    assert shard_path("2026-11-22.a_b", 123456) == "runs/2026-11-22.a_b/shard-123456.semq"
    assert manifest_path(1) == "manifests/v00000001.manifest.arrow"
    assert IndexStore.shard_path("r", 7) == "runs/r/shard-00007.semq"
    for bad in ["", "../x", "a/b", "a:b", ".hidden"]:
        with pytest.raises(FormatError, match="run_id"):
            shard_path(bad, 0)
    with pytest.raises(FormatError):
        manifest_path(0)


def test_paths_outside_the_index_are_refused(tmp_path: Any) -> None:
    store = IndexStore(str(tmp_path))
    for bad in ["/etc/passwd", "../x", "a/../../b", "a//b", "s3://b/k", "a\\b", ""]:
        with pytest.raises(FormatError):
            store.open_write(bad)


def test_url_of_and_repr(tmp_path: Any) -> None:
    store = IndexStore(str(tmp_path / "idx") + "/")
    assert store.url_of("runs/r/a.semq") == f"file://{tmp_path}/idx/runs/r/a.semq"
    assert repr(store) == f"IndexStore({str(tmp_path / 'idx')!r})"
    mem = IndexStore("memory://semq-url-test/idx")
    assert mem.url_of("_latest") == "memory:///semq-url-test/idx/_latest"
    # one redaction rule everywhere (semq_transforms._urls): no user info, no signed query
    signed = IndexStore("https://user:hunter2@example.invalid:8443/x?sig=abc")
    assert signed.url == "https://***@example.invalid:8443/x?***"
    assert "hunter2" not in repr(signed) and "abc" not in signed.url_of("manifests/v1")


# -- every backend ---------------------------------------------------------------------------


def test_empty_index(new_store: StoreFactory) -> None:
    store = new_store()
    assert store.versions() == []
    assert store.latest_version() is None
    with pytest.raises(IndexNotFoundError, match="no index"):
        store.read_manifest()
    with pytest.raises(IndexNotFoundError, match="version 3 not found"):
        store.read_manifest(3)


def test_file_round_trip_and_create_exclusive(new_store: StoreFactory) -> None:
    store = new_store()
    with store.open_write("runs/r/a.bin") as f:
        f.write(b"abc")
    assert store.exists("runs/r/a.bin") and not store.exists("runs/r/b.bin")
    with store.open_read("runs/r/a.bin") as f:
        assert f.read() == b"abc"
    store.create_exclusive("x/once.bin", b"first")
    with pytest.raises(VersionConflictError, match="already exists"):
        store.create_exclusive("x/once.bin", b"second")
    with new_store().open_read("x/once.bin") as f:
        assert f.read() == b"first"


def test_commit_chain(new_store: StoreFactory) -> None:
    store = new_store()
    first = commit(store, input_fingerprint="in-1")
    assert (first.version, first.parent_version, first.rows) == (1, None, 300)
    second = commit(store, make_shards(2, run_id="run-2"), run_id="run-2")
    assert (second.version, second.parent_version) == (2, 1)
    reader = new_store()  # a separate reader sees both versions
    assert reader.versions() == [1, 2]
    assert reader.latest_version() == 2
    assert reader.read_manifest() == second
    assert reader.read_manifest(1) == first
    assert reader.read_manifest(1).input_fingerprint == "in-1"
    # A commit on an explicit older parent would be version 2 again: refused, not retried.
    with pytest.raises(VersionConflictError, match="version 2 .* another writer"):
        commit(store, run_id="run-3", parent_version=1)
    with pytest.raises(IndexNotFoundError, match="parent_version 7"):
        commit(store, run_id="run-3", parent_version=7)
    assert reader.versions() == [1, 2]
    with reader.open_read(manifest_path(2)) as f:
        assert f.read() == second.to_bytes()


def test_run_version_finds_the_version_using_a_run_folder(new_store: StoreFactory) -> None:
    """run_version: the newest version whose run id, or one of whose shards, names the run
    folder; None for a folder no version uses (a failed run's) or one that does not exist."""
    store = new_store()
    assert store.run_version("run-1") is None                  # empty index
    commit(store, run_id="run-1")                               # v1: its own folder
    commit(store, make_shards(2, run_id="run-2"), run_id="run-2")
    # v3, committed by "merge", lists a shard of run-2's folder
    commit(store, [*make_shards(1, run_id="merge"), make_shard(5, run_id="run-2")],
           run_id="merge")
    with store.open_write("runs/failed/report.json") as f:     # a run that published nothing
        f.write(b"{}")
    reader = new_store()
    assert reader.run_version("run-1").version == 1
    assert reader.run_version("run-2").version == 3
    assert reader.run_version("merge").version == 3
    assert reader.run_version("failed") is None
    assert reader.run_version("never") is None
    with pytest.raises(FormatError, match="run_id"):
        reader.run_version("../x")
    # versions up to `after` were checked before: only later ones are read
    read: list[int] = []
    original = reader.read_manifest
    reader.read_manifest = lambda version=None: read.append(version) or original(version)
    assert reader.run_version("failed", after=2) is None and read == [3]
    assert reader.run_version("run-1", after=1) is None
    assert reader.run_version("run-2", after=2).version == 3


def test_latest_hint_is_only_a_hint(new_store: StoreFactory) -> None:
    store = new_store()
    for run in range(3):
        commit(store, make_shards(1, run_id=f"run-{run}"), run_id=f"run-{run}")
    expected = ([1, 2, 3], 3, store.read_manifest(3))
    with store.open_read("_latest") as f:
        assert f.read() == b"3\n"

    reader = new_store()  # a separate reader; no listing cache on any backend here

    def observed() -> tuple:
        return reader.versions(), reader.latest_version(), reader.read_manifest()

    for hint in [b"garbage\xff", b"1\n", b"2", b"99\n", b"-4", b"", b"9" * 100]:
        with store.open_write("_latest") as f:
            f.write(hint)
        assert observed() == expected, hint
    store.fs.rm(store.root + "/_latest")
    assert observed() == expected
    # Committing on top of a stale hint still finds the real latest.
    with store.open_write("_latest") as f:
        f.write(b"1\n")
    assert commit(store, make_shards(1, run_id="run-9"), run_id="run-9").version == 4


def test_valid_hint_skips_the_listing(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    store = IndexStore(str(tmp_path))
    commit(store)
    commit(store, run_id="run-2")

    def no_listing() -> list[int]:
        raise AssertionError("listed the manifests although the hint was valid")

    monkeypatch.setattr(store, "versions", no_listing)
    assert store.latest_version() == 2


def test_commit_refuses_missing_or_short_shard_files(new_store: StoreFactory) -> None:
    store = new_store()
    shards = make_shards(3)
    write_shard_files(store, shards[:2])
    with pytest.raises(FormatError, match=r"1 shard file\(s\) missing.*shard-00002"):
        store.commit(shards, dim=DIM, codecs=CODECS, run_id="run-1")
    with store.open_write(shards[2].path) as f:
        f.write(b"\0" * (shards[2].file_bytes - 1))
    with pytest.raises(IntegrityError, match=r"shard-00002.semq \(213 bytes, metadata says 214"):
        store.commit(shards, dim=DIM, codecs=CODECS, run_id="run-1")
    assert store.versions() == []
    write_shard_files(store, shards)
    assert store.commit(shards, dim=DIM, codecs=CODECS, run_id="run-1").version == 1


def test_commit_refuses_inconsistent_metadata(new_store: StoreFactory) -> None:
    store = new_store()
    shards = [make_shard(0), make_shard(1, dim=32)]
    write_shard_files(store, shards)
    with pytest.raises(FormatError, match="dim 32"):
        store.commit(shards, dim=DIM, codecs=CODECS, run_id="run-1")
    with pytest.raises(FormatError, match="parent_version"):
        store.commit(shards[:1], dim=DIM, codecs=CODECS, run_id="run-1", parent_version=0)
    assert store.versions() == []


def test_concurrent_commits_of_one_version_threads(new_store: StoreFactory) -> None:
    """Several writers race to commit version 1: exactly one wins, the rest are told.

    On s3 the arbiter is the server's If-None-Match: * check. moto performs that check and the
    store without a lock (moto/s3/responses.py put_object), so its atomicity under concurrent
    requests rests on the GIL and a window of microseconds; 0 double winners were seen in 300
    four-way races against this server. AWS S3 guarantees it.
    """
    write_shard_files(new_store(), make_shards(2))
    writers = 4
    barrier = threading.Barrier(writers)
    outcomes: list[tuple[str, Any]] = []
    lock = threading.Lock()

    def race(number: int) -> None:
        store = new_store()
        barrier.wait(timeout=30)
        try:
            manifest = store.commit(make_shards(2), dim=DIM, codecs=CODECS,
                                    run_id=f"writer-{number}", parent_version=None)
            outcome: tuple[str, Any] = ("won", manifest)
        except VersionConflictError as exc:
            outcome = ("conflict", str(exc))
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=race, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    kinds = sorted(kind for kind, _ in outcomes)
    assert kinds == ["conflict"] * (writers - 1) + ["won"]
    winner = next(value for kind, value in outcomes if kind == "won")
    assert all("version 1" in value for kind, value in outcomes if kind == "conflict")
    reader = new_store()
    assert reader.versions() == [1]
    assert reader.read_manifest() == winner


def test_concurrent_commits_of_one_version_processes(tmp_path: Any) -> None:
    """Two processes race on a local index (the os.link create): one wins."""
    url = str(tmp_path / "index")
    write_shard_files(IndexStore(url), make_shards(2))
    context = multiprocessing.get_context("spawn")  # no fork of a threaded test process
    barrier = context.Barrier(2)
    results = context.Queue()
    processes = [context.Process(target=commit_in_process,
                                 args=(url, None, f"proc-{n}", barrier, results))
                 for n in range(2)]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert sorted(kind for kind, _ in outcomes) == ["conflict", "won"], outcomes
    winner_digest = next(value for kind, value in outcomes if kind == "won")
    assert IndexStore(url).read_manifest().digest == winner_digest
    leftovers = sorted(p.name for p in (tmp_path / "index" / "manifests").iterdir())
    assert leftovers == ["v00000001.manifest.arrow"]  # no temporary file left behind


@pytest.mark.parametrize("backend", ["local", "s3", "gcs", "azure"])
def test_exclusivity_is_enforced_by_the_storage_not_a_precheck(
        backend: str, tmp_path: Any, request: pytest.FixtureRequest,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """With existence checks blinded, the second create still fails: on local files
    os.link refuses an existing name; S3 and Azure answer If-None-Match: * with 412 / 409,
    GCS answers ifGenerationMatch=0 with 412."""
    if backend == "local":
        store = IndexStore(str(tmp_path))
    else:
        store = IndexStore(request.getfixturevalue(f"{backend}_url"),
                           storage_options=request.getfixturevalue(
                               f"{backend}_storage_options"))
    store.create_exclusive("manifests/v00000001.manifest.arrow", b"one")
    monkeypatch.setattr(store.fs, "exists", lambda *a, **k: False)
    with pytest.raises(VersionConflictError):
        store.create_exclusive("manifests/v00000001.manifest.arrow", b"two")
    with store.open_read("manifests/v00000001.manifest.arrow") as f:
        assert f.read() == b"one"


def test_moto_honours_if_none_match(s3_url: str, s3_storage_options: dict) -> None:
    """The S3 endpoint itself (not our code) refuses a conditional PUT on an existing key."""
    fs = fsspec.filesystem("s3", **s3_storage_options)
    key = s3_url.removeprefix("s3://") + "/probe"
    fs.pipe_file(key, b"first", mode="create")
    with pytest.raises(FileExistsError):
        fs.pipe_file(key, b"second", mode="create")
    with pytest.raises(FileExistsError), fs.open(key, "xb") as f:
        f.write(b"third")
    assert fs.cat_file(key) == b"first"


def test_other_backends_refuse_to_commit_unless_an_unsafe_commit_is_accepted(
        caplog: pytest.LogCaptureFixture, tmp_path: Any) -> None:
    """A backend without a create-if-absent write (here fsspec's ``dir::`` wrapper) would let
    two committers of one version both succeed: commit and build_index refuse it before
    writing anything; accepted explicitly, the commit warns loudly and still refuses a
    version it can see exists."""
    from semq_transforms.build import build_index
    from semq_transforms.errors import UnsafeCommitError

    url = f"dir::memory://semq-fallback-{uuid.uuid4().hex}"
    store = IndexStore(url)
    assert store.exclusive_create() is None
    with pytest.raises(UnsafeCommitError, match="no create-if-absent write"):
        commit(store)
    assert store.versions() == []
    with pytest.raises(UnsafeCommitError, match="allow_unsafe_commit"):
        build_index(url, np.ones((4, 8), np.float32), run_id="b1")
    assert not store.exists("runs/b1")
    with caplog.at_level(logging.WARNING, logger="semq_transforms.format.store"):
        manifest = commit(store, allow_unsafe_commit=True)
    assert "UNSAFE COMMIT" in caplog.text and "one committer at a time" in caplog.text
    with pytest.raises(VersionConflictError):
        commit(store, parent_version=None, allow_unsafe_commit=True)
    assert store.read_manifest() == manifest


def test_versions_sort_numerically_and_ignore_other_files(tmp_path: Any) -> None:
    store = IndexStore(str(tmp_path))
    for version in [10, 2, 99_999_999, 100_000_000, 1]:  # 9 digits sorts before 8 as text
        store.create_exclusive(manifest_path(version), b"x")
    for junk in ["manifests/.v00000003.manifest.arrow.1234.tmp", "manifests/v3.manifest.arrow",
                 "manifests/notes.txt", "manifests/v00000004.manifest.arrow.bak"]:
        store.create_exclusive(junk, b"junk")
    assert store.versions() == [1, 2, 10, 99_999_999, 100_000_000]
    assert store.latest_version() == 100_000_000


def test_read_manifest_checks_the_file(tmp_path: Any) -> None:
    store = IndexStore(str(tmp_path))
    first = commit(store)
    store.create_exclusive(manifest_path(2), first.to_bytes())  # v1's content under v2
    with pytest.raises(FormatError, match="holds version 1, its file name says 2"):
        store.read_manifest(2)
    store.create_exclusive(manifest_path(3), first.to_bytes()[:-20])
    with pytest.raises(FormatError, match=r"manifest file://.*v00000003\.manifest\.arrow"):
        store.read_manifest(3)


def test_no_credentials_are_written_or_logged(s3_url: str, s3_storage_options: dict,
                                              caplog: pytest.LogCaptureFixture) -> None:
    secret = "semq-secret-" + uuid.uuid4().hex  # moto accepts any credentials
    options = {**s3_storage_options, "key": "AKIDSEMQ" + uuid.uuid4().hex[:8].upper(),
               "secret": secret}
    store = IndexStore(s3_url, storage_options=options)
    with caplog.at_level(logging.DEBUG, logger="semq_transforms"):
        commit(store)
        commit(store, run_id="run-2")
    everything = b"".join(store.fs.cat_file(path)
                          for path in store.fs.find(store.root))
    for value in (secret, options["key"]):
        assert value.encode() not in everything
        assert value not in caplog.text and value not in repr(store)
    assert "committed version 2" in caplog.text


def test_a_local_commit_removes_temporary_files_killed_commits_left(tmp_path: Any) -> None:
    """A commit killed between writing its temporary file and linking it leaves the file
    (ignored by listings); the next commit removes such files once an hour old, and leaves
    a young one (a commit in flight) and anything else alone."""
    from semq_transforms.format.store import STALE_TEMP_SECONDS

    store = IndexStore(str(tmp_path))
    commit(store)
    folder = tmp_path / "manifests"
    stale = folder / f".v00000002.manifest.arrow.{uuid.uuid4().hex}.tmp"
    young = folder / f".v00000002.manifest.arrow.{uuid.uuid4().hex}.tmp"
    other = folder / "notes.tmp"
    for path in (stale, young, other):
        path.write_bytes(b"partial")
    old = time.time() - STALE_TEMP_SECONDS - 60
    os.utime(stale, (old, old))
    os.utime(other, (old, old))
    assert store.versions() == [1]
    commit(store, make_shards(2, run_id="run-2"), run_id="run-2")
    assert store.versions() == [1, 2]
    assert not stale.exists() and young.exists() and other.exists()


@pytest.mark.parametrize("backend", ["gcs", "azure"])
def test_an_index_is_built_searched_and_verified_on_gcs_and_azure(
        backend: str, request: pytest.FixtureRequest) -> None:
    """The whole index path over gcsfs / adlfs against the emulators: shards and manifests
    written, a second version on top, search and verify over the wire."""
    from semq_transforms.build import build_index
    from semq_transforms.index import Index
    from tests.conftest import make_anisotropic

    url = request.getfixturevalue(f"{backend}_url")
    options = request.getfixturevalue(f"{backend}_storage_options")
    x = make_anisotropic(600, 16, seed=4)
    build_index(url, x, codecs=["semq4"], rows_per_shard=250, storage_options=options)
    build_index(url, x[:300], codecs=["semq4"], rows_per_shard=250, storage_options=options)
    index = Index.open(url, storage_options=options)
    assert index.version == 2 and index.versions() == [1, 2]
    _, ids = Index.open(url, 1, storage_options=options).search(x[:5], k=1)
    assert ids[:, 0].tolist() == [0, 1, 2, 3, 4]
    assert index.verify().ok and Index.open(url, 1, storage_options=options).verify().ok
