"""A run's identity and its run folder: what makes input "changed", when a rerun has nothing
to publish, and that no run ever writes into the run folder of a published version.

The input fingerprint covers each planned file's path, size and change token (ETag on S3, the
file's ``ukey`` from its metadata locally and on ``memory://``), so NPY inputs of the same
shape (same size) but other values are new input. Runs are real (DirectRunner, real files on
local folders, ``memory://`` and a loopback S3 server)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import apache_beam as beam
import fsspec
import numpy as np
import pytest
import yaml

from pipelines.ingest import main
from semq_transforms.config import parse_config
from semq_transforms.errors import NothingToPublishError, RunFolderInUseError
from semq_transforms.format.store import IndexStore
from semq_transforms.index import Index
from semq_transforms.transforms import direct_options
from semq_transforms.transforms.ingest import input_fingerprint, make_read

ROWS, DIM = 120, 8


def vectors(seed: int, rows: int = ROWS) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((rows, DIM)).astype(np.float32)
    x[:, 0] += np.float32(3.0)  # no zero rows
    return x


def npy_job(input_url: str, index_url: str, **output: Any) -> dict[str, Any]:
    """One NPY input file (ids are row numbers): same shape -> same file size."""
    return {
        "name": "run-folder",
        "input": {"url": input_url, "format": "npy", "dim": DIM, "batch_rows": 60},
        "output": {"index_url": index_url, **output},
        "encode": {"codecs": ["semq4"], "rows_per_shard": 50},
        "validation": {"k": 5, "sample_queries": 32, "seed": 0, "min_recall_at_k": 0.01,
                       "max_rejected_fraction": 0.0, "min_compression_ratio": 0},
    }


def write_npy(url: str, x: np.ndarray, storage_options: dict[str, Any] | None = None) -> None:
    fs, path = fsspec.core.url_to_fs(url, **(storage_options or {}))
    with fs.open(path, "wb") as f:
        np.save(f, x, allow_pickle=False)


def run_cli(tmp_path: Path, data: dict[str, Any]) -> int:
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(data))
    return main(["--config", str(config_file)])


def run_api(data: dict[str, Any]) -> str:
    """The PTransform path: ``config.create_transform()`` applied and run; returns the run id."""
    job = parse_config(data).create_transform()
    with beam.Pipeline(options=direct_options()) as pipeline:
        _ = pipeline | "Ingest" >> job
    return job.run_id


def snapshot(folder: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``folder``: its SHA-256 and modification time (ns)."""
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest(),
                                         p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def publish_and_rerun(tmp_path: Path, capsys: Any,
                      **output: Any) -> tuple[Path, Path, dict, dict]:
    """Publish version 1 through the command line, run it again unchanged: exit 0, "nothing
    to publish", not one file written or touched. Returns the input file, the index folder,
    the job dict and the index's snapshot."""
    src, index = tmp_path / "emb.npy", tmp_path / "idx"
    data = npy_job(str(src), str(index), **output)
    write_npy(str(src), vectors(1))
    assert run_cli(tmp_path, data) == 0
    before = snapshot(index)
    capsys.readouterr()
    assert run_cli(tmp_path, data) == 0
    assert "unchanged since version 1; nothing to publish" in capsys.readouterr().out
    assert snapshot(index) == before
    return src, index, data, before


def test_same_size_new_content_is_published(tmp_path, capsys):
    """Input rewritten with other values of the same shape (the same file size): a new
    version. Then the first input's values again: a third version; every version verifies."""
    src, index_url = tmp_path / "emb.npy", str(tmp_path / "idx")
    data = npy_job(str(src), index_url)
    a, c = vectors(1), vectors(3)
    write_npy(str(src), a)
    assert run_cli(tmp_path, data) == 0
    size = src.stat().st_size
    write_npy(str(src), c)
    assert src.stat().st_size == size
    capsys.readouterr()
    assert run_cli(tmp_path, data) == 0
    out = capsys.readouterr().out
    assert "nothing to publish" not in out and "published version 2" in out
    write_npy(str(src), a)
    assert run_cli(tmp_path, data) == 0
    assert IndexStore(index_url).versions() == [1, 2, 3]
    manifests = []
    for version in (1, 2, 3):
        index = Index.open(index_url, version)
        assert index.verify().ok, version
        manifests.append(index.manifest)
    assert len({m.run_id for m in manifests}) == 3          # three run folders
    contents = [[s.content_sha256 for s in m.shards] for m in manifests]
    assert contents[0] == contents[2] != contents[1]        # A, C, A again


def test_unchanged_rerun_writes_nothing(tmp_path, capsys):
    """The same input and config again: "nothing to publish", exit 0, not one file written
    or touched; the same through the PTransform API raises NothingToPublishError while the
    pipeline is built."""
    _, index, data, before = publish_and_rerun(tmp_path, capsys)
    job = parse_config(data).create_transform()
    with pytest.raises(NothingToPublishError, match=r"version 1") as caught:
        _ = beam.Pipeline(options=direct_options()) | "Ingest" >> job
    assert caught.value.version == 1 and caught.value.run_id == job.run_id
    assert snapshot(index) == before


def test_fixed_run_id_refuses_changed_input_and_config(tmp_path, capsys):
    """``output.run_id`` fixed: an identical rerun has nothing to publish, but changed input
    or a changed config must not be taken for unchanged, nor write into the published run
    folder: exit 2 naming the run id, the version and output.run_id, nothing written."""
    src, index, data, before = publish_and_rerun(tmp_path, capsys, run_id="nightly")
    changed_config = json.loads(json.dumps(data))
    changed_config["validation"]["min_recall_at_k"] = 0.02
    write_npy(str(src), vectors(2, rows=ROWS * 3))           # changed input (another size)
    for job_data in (data, changed_config):
        assert run_cli(tmp_path, job_data) == 2
        captured = capsys.readouterr()
        assert "nothing to publish" not in captured.out
        assert "'nightly'" in captured.err and "version 1" in captured.err
        assert "output.run_id" in captured.err
    write_npy(str(src), vectors(1))                           # the input back, same bytes
    assert run_cli(tmp_path, changed_config) == 2             # the config alone changed
    assert "output.run_id" in capsys.readouterr().err
    assert snapshot(index) == before
    assert Index.open(str(index)).verify().ok


def test_api_colliding_run_folder_fails_before_writing(tmp_path):
    """Through ``config.create_transform()``, a run whose folder is a published version's
    fails with RunFolderInUseError while the pipeline is built: nothing is written."""
    src, index = tmp_path / "emb.npy", tmp_path / "idx"
    data = npy_job(str(src), str(index), run_id="api-run")
    write_npy(str(src), vectors(1))
    assert run_api(data) == "api-run"
    before = snapshot(index)
    write_npy(str(src), vectors(5))
    job = parse_config(data).create_transform()
    pipeline = beam.Pipeline(options=direct_options())
    with pytest.raises(RunFolderInUseError, match=r"'api-run'.*version 1.*output\.run_id") \
            as caught:
        _ = pipeline | "Ingest" >> job
    assert not isinstance(caught.value, NothingToPublishError)
    assert caught.value.version == 1 and caught.value.run_id == "api-run"
    assert snapshot(index) == before
    assert Index.open(str(index)).verify().ok


def test_older_version_run_folder_is_protected(tmp_path):
    """A run folder is protected whichever version it belongs to: after version 2 (another
    run id), a job with version 1's fixed run id is refused, naming version 1."""
    src, index = tmp_path / "emb.npy", tmp_path / "idx"
    write_npy(str(src), vectors(1))
    run_api(npy_job(str(src), str(index), run_id="first"))
    run_api(npy_job(str(src), str(index), run_id="second"))
    before = snapshot(index)
    job = parse_config(npy_job(str(src), str(index), run_id="first")).create_transform()
    with pytest.raises(RunFolderInUseError, match=r"'first'.*version 1\b") as caught:
        _ = beam.Pipeline(options=direct_options()) | "Ingest" >> job
    assert not isinstance(caught.value, NothingToPublishError)  # version 1 is not the latest
    assert snapshot(index) == before


def test_gate_failure_leaves_current_version_intact(tmp_path):
    """Version 1 from input A; then input C of A's size (same names and sizes: the same run
    folder under the old rule) with a zero row, so the gate fails (max_rejected_fraction 0).
    Version 1's files stay byte-identical and it verifies; the failed run's report is in a
    folder of its own."""
    src, index = tmp_path / "emb.npy", tmp_path / "idx"
    data = npy_job(str(src), str(index))
    write_npy(str(src), vectors(1))
    first = run_api(data)
    before = snapshot(index)
    c = vectors(3)
    c[10] = 0.0
    write_npy(str(src), c)
    second = run_api(data)
    assert IndexStore(str(index)).versions() == [1]
    after = snapshot(index)
    assert {path: after[path] for path in before} == before
    assert Index.open(str(index)).verify().ok
    assert second != first
    report = json.loads((index / "runs" / second / "report.json").read_text())
    assert report["gate"]["passed"] is False


# -- the fingerprint itself ------------------------------------------------------------------


def _fingerprint(data: dict[str, Any]) -> str:
    config = parse_config(data)
    return input_fingerprint(make_read(config), config)


@pytest.mark.parametrize("where", ["local", "memory"])
def test_fingerprint_changes_with_same_size_rewrite(tmp_path, where):
    """Stable across repeated reads of an unchanged file; changes when the file is rewritten
    with other bytes of the same size."""
    root = str(tmp_path) if where == "local" else f"memory://semq-fingerprint-{os.getpid()}"
    url = f"{root}/emb.npy"
    data = npy_job(url, f"{root}/idx")
    try:
        write_npy(url, vectors(1))
        first = _fingerprint(data)
        with fsspec.open(url, "rb") as f:
            f.read()
        assert _fingerprint(data) == first
        write_npy(url, vectors(2))
        assert _fingerprint(data) != first
    finally:
        if where == "memory":
            fsspec.filesystem("memory").rm(root, recursive=True)


def test_fingerprint_on_s3_uses_the_etag(s3_url, s3_storage_options):
    """On S3 the token is the ETag: the same whether s3fs answers from a listing or a HEAD
    request (their info dicts differ), new when the object is rewritten with other bytes of
    the same size."""
    bucket = s3_url.removeprefix("s3://").split("/")[0]
    url = f"s3://{bucket}/input/emb.npy"
    cached = {**s3_storage_options, "use_listings_cache": True}
    data = npy_job(url, s3_url)
    data["input"]["storage_options"] = s3_storage_options
    write_npy(url, vectors(1), s3_storage_options)
    first = _fingerprint(data)
    data["input"]["storage_options"] = cached                   # info from the listing
    assert _fingerprint(data) == first
    write_npy(url, vectors(2), s3_storage_options)
    data["input"]["storage_options"] = s3_storage_options
    assert _fingerprint(data) != first


def test_same_size_new_content_is_published_on_s3(s3_url, s3_storage_options, tmp_path):
    """The end-to-end case on S3: a same-size rewrite is a new version; version 1 verifies."""
    bucket = s3_url.removeprefix("s3://").split("/")[0]
    url = f"s3://{bucket}/input/emb.npy"
    data = npy_job(url, s3_url)
    data["input"]["storage_options"] = data["output"]["storage_options"] = s3_storage_options
    write_npy(url, vectors(1), s3_storage_options)
    first = run_api(data)
    write_npy(url, vectors(3), s3_storage_options)
    second = run_api(data)
    assert second != first
    store = IndexStore(s3_url, storage_options=s3_storage_options)
    assert store.versions() == [1, 2]
    for version in (1, 2):
        assert Index.open(s3_url, version, storage_options=s3_storage_options).verify().ok


def test_a_version_published_into_the_folder_after_the_job_was_built_stops_it(tmp_path):
    """Two jobs with one fixed run id: B is built (its check passes: nothing is published),
    then A publishes version 1 into runs/nightly/, then B runs. B stops before its first
    shard write (it overwrote version 1's shards and published version 2 beside them)."""
    index = tmp_path / "idx"
    for name, seed in (("a.npy", 1), ("b.npy", 2)):
        write_npy(str(tmp_path / name), vectors(seed))
    job_b = parse_config(npy_job(str(tmp_path / "b.npy"), str(index), run_id="nightly"))
    pipeline_b = beam.Pipeline(options=direct_options())
    _ = pipeline_b | "Ingest" >> job_b.create_transform()
    run_api(npy_job(str(tmp_path / "a.npy"), str(index), run_id="nightly"))
    before = snapshot(index)
    with pytest.raises(Exception, match=r"RunFolderInUseError|version 1"):
        pipeline_b.run().wait_until_finish()
    assert snapshot(index) == before
    assert IndexStore(str(index)).versions() == [1] and Index.open(str(index)).verify().ok


def test_the_publish_step_refuses_a_folder_a_version_took_meanwhile(tmp_path):
    """The last guard, at commit: shards written, then a version appears in the folder (a
    concurrent run won); publishing would list two runs' files in one folder."""
    from semq_transforms.build import build_index

    index = tmp_path / "idx"
    write_npy(str(tmp_path / "b.npy"), vectors(2))
    job = parse_config(npy_job(str(tmp_path / "b.npy"), str(index), run_id="nightly"))
    pipeline = beam.Pipeline(options=direct_options())
    _ = pipeline | "Ingest" >> job.create_transform()
    # the competing version owns runs/nightly/ but wrote no file this job writes
    build_index(str(index), vectors(3), codecs=["semq4"], rows_per_shard=1000,
                run_id="nightly")
    (index / "runs" / "nightly" / "shard-00000.semq").rename(index / "moved")
    with pytest.raises(Exception, match=r"RunFolderInUseError|version 1"):
        pipeline.run().wait_until_finish()
    assert IndexStore(str(index)).versions() == [1]
    assert not (index / "runs" / "nightly" / "report.json").exists()


# -- retries and crashes ---------------------------------------------------------------------


def test_a_retried_publish_step_reports_the_version_it_committed(tmp_path):
    """Every distributed runner may run a bundle again. With each bundle run twice
    (``direct_runner_bundle_repeat``), the publish step finds its own commit: one version,
    its report, success (the replay raised RunFolderInUseError after committing)."""
    src, index = tmp_path / "emb.npy", tmp_path / "idx"
    write_npy(str(src), vectors(1))
    job = parse_config(npy_job(str(src), str(index))).create_transform()
    with beam.Pipeline(options=direct_options(direct_runner_bundle_repeat=1)) as pipeline:
        _ = pipeline | "Ingest" >> job
    assert IndexStore(str(index)).versions() == [1]
    report = json.loads((index / "runs" / job.run_id / "report.json").read_text())
    assert report["version"] == 1 and report["gate"] == {"passed": True, "problems": []}
    assert not list(index.rglob("*.pending.json"))
    assert Index.open(str(index)).verify().ok


_DIE_AFTER_COMMIT = """
import os, sys
import semq_transforms.transforms.publish as publish
from pipelines.ingest import main

def die(store, report):          # the process is killed between the commit and the report
    os._exit(9)

publish.write_report = die
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.parametrize("output", [{}, {"run_id": "nightly"}], ids=["derived", "fixed"])
def test_a_run_killed_between_commit_and_report_is_completed_by_a_rerun(tmp_path, capsys,
                                                                         output):
    """The job dies right after its commit (version 1 committed, no report of it: only an
    earlier failed attempt's). A rerun completes the report from the copy the run wrote
    before committing and has nothing else to do: exit 0, version 1 unchanged, its report in
    place. (The rerun said
    "nothing to publish" and left no report for good; with a fixed run id it exited 2,
    claiming the input changed.)"""
    import subprocess
    import sys

    src, index = tmp_path / "emb.npy", tmp_path / "idx"
    write_npy(str(src), vectors(1))
    data = npy_job(str(src), str(index), **output)
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(data))
    root = Path(__file__).resolve().parents[1]
    done = subprocess.run([sys.executable, "-c", _DIE_AFTER_COMMIT, "--config",
                           str(config_file)], cwd=root, check=False, capture_output=True,
                          env={**os.environ, "PYTHONPATH": str(root)}, timeout=600)
    assert done.returncode == 9, done.stderr[-2000:]
    assert IndexStore(str(index)).versions() == [1]
    [run_folder] = (index / "runs").iterdir()
    assert not (run_folder / "report.json").exists()
    assert (run_folder / "report.pending.json").exists()
    manifest = (index / "manifests" / "v00000001.manifest.arrow").read_bytes()
    # what an earlier attempt of the run that failed (and published nothing) left there
    (run_folder / "report.json").write_text(json.dumps(
        {"run_id": run_folder.name, "version": None, "gate": {"passed": False}}))

    assert run_cli(tmp_path, data) == 0
    assert "unchanged since version 1; nothing to publish" in capsys.readouterr().out
    report = json.loads((run_folder / "report.json").read_text())
    assert report["version"] == 1 and report["gate"]["passed"]
    assert report["counts"]["rows_encoded"] == ROWS
    assert (run_folder / "report.md").exists() and not (run_folder / "report.pending.json"
                                                       ).exists()
    assert (index / "manifests" / "v00000001.manifest.arrow").read_bytes() == manifest
    assert IndexStore(str(index)).versions() == [1] and Index.open(str(index)).verify().ok
