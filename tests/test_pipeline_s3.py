"""The ingestion job end to end against a real S3 endpoint on loopback (moto's standalone
server, ``tests/s3_server.py``): input Parquet read from the bucket, shards, report, dead
letters and manifests written to it, credentials given as ``${ENV:NAME}`` references in
``storage_options``; the published index is then opened, searched and verified over S3, and a
second run whose gate cannot pass is shown to publish nothing."""

from __future__ import annotations

import json
import logging
import re
from typing import Any

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.ingest import build_pipeline, main
from semq_transforms.config import parse_config
from semq_transforms.eval import exact_knn, knn_intersection_measure
from semq_transforms.format.store import IndexStore, manifest_path
from semq_transforms.index import Index
from semq_transforms.sample_data import sample_embeddings
from semq_transforms.transforms import direct_options

s3fs = pytest.importorskip("s3fs")

ROWS, DIM, SEED = 2000, 32, 3
GOOD_EXTRA_ID = 1_000_003
BAD_IDS = [1_000_000, 1_000_001, 1_000_002]   # non-finite, zero, wrong dimension
K = 10

# Distinctive credential values (moto accepts any), so a leak is found by a plain text search.
ACCESS_KEY = "AKIASEMQPIPELINEE2E"
SECRET_KEY = "semq-e2e-secret-0f9c2b7d41a6"
ENV_KEY, ENV_SECRET, ENV_ENDPOINT = "SEMQ_E2E_S3_KEY", "SEMQ_E2E_S3_SECRET", "SEMQ_E2E_S3_ENDPOINT"


def _extra_vector() -> np.ndarray:
    v = np.random.default_rng(11).standard_normal(DIM).astype(np.float32)
    return v / np.linalg.norm(v)


def _embedding_table(ids: list[int], vectors: np.ndarray) -> pa.Table:
    values = pa.array(np.ascontiguousarray(vectors, np.float32).reshape(-1), pa.float32())
    return pa.table({"id": pa.array(ids, pa.int64()),
                     "embedding": pa.FixedSizeListArray.from_arrays(values, DIM)})


def write_input(fs: Any, bucket: str) -> tuple[np.ndarray, np.ndarray]:
    """Parquet input under ``s3://<bucket>/input/``: the 2000 sample rows in two files, plus a
    file of four rows of which three are rejected. Returns the accepted vectors and their ids
    (the corpus the index must reproduce)."""
    x = sample_embeddings(ROWS, DIM, seed=SEED)
    half = ROWS // 2
    for number, (start, stop) in enumerate([(0, half), (half, ROWS)]):
        with fs.open(f"{bucket}/input/part-{number:05d}.parquet", "wb") as f:
            pq.write_table(_embedding_table(list(range(start, stop)), x[start:stop]), f,
                           row_group_size=400)
    extra = _extra_vector()
    vectors = [[float("nan")] * DIM, [0.0] * DIM, [0.5] * (DIM - 1), extra.tolist()]
    bad = pa.table({"id": pa.array([*BAD_IDS, GOOD_EXTRA_ID], pa.int64()),
                    "embedding": pa.array(vectors, pa.list_(pa.float32()))})
    with fs.open(f"{bucket}/input/part-00002.parquet", "wb") as f:
        pq.write_table(bad, f)
    corpus = np.concatenate([x, extra[None, :]])
    ids = np.concatenate([np.arange(ROWS, dtype=np.int64), [GOOD_EXTRA_ID]])
    return corpus, ids


def env_storage_options(s3_storage_options: dict[str, Any]) -> dict[str, Any]:
    """The moto options with key, secret and endpoint as ``${ENV:...}`` references, plus the
    optional (``:-``) and defaulted (``:-default``) reference forms."""
    return {
        "key": f"${{ENV:{ENV_KEY}}}",
        "secret": f"${{ENV:{ENV_SECRET}}}",
        "token": "${ENV:SEMQ_E2E_S3_UNSET_TOKEN:-}",      # unset: the key is left out
        "client_kwargs": {
            "endpoint_url": f"${{ENV:{ENV_ENDPOINT}}}",
            "region_name": "${ENV:SEMQ_E2E_S3_UNSET_REGION:-us-east-1}",
        },
        "skip_instance_cache": s3_storage_options["skip_instance_cache"],
        "use_listings_cache": s3_storage_options["use_listings_cache"],
    }


@pytest.fixture
def s3_job(s3_url: str, s3_storage_options: dict[str, Any],
           monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    """A fresh bucket with the input written, the credential variables set, and what the tests
    need: the job dict, the real options, the bucket, the corpus and its ids."""
    monkeypatch.setenv(ENV_KEY, ACCESS_KEY)
    monkeypatch.setenv(ENV_SECRET, SECRET_KEY)
    monkeypatch.setenv(ENV_ENDPOINT, s3_storage_options["client_kwargs"]["endpoint_url"])
    monkeypatch.delenv("SEMQ_E2E_S3_UNSET_TOKEN", raising=False)
    monkeypatch.delenv("SEMQ_E2E_S3_UNSET_REGION", raising=False)
    options = {**s3_storage_options, "key": ACCESS_KEY, "secret": SECRET_KEY}
    fs = s3fs.S3FileSystem(**options)
    bucket = s3_url.removeprefix("s3://").split("/")[0]
    corpus, ids = write_input(fs, bucket)
    data = {
        "name": "s3-e2e",
        "input": {"url": f"s3://{bucket}/input/*.parquet", "format": "parquet", "dim": DIM,
                  "batch_rows": 500, "storage_options": env_storage_options(options)},
        "output": {"index_url": s3_url, "storage_options": env_storage_options(options)},
        "encode": {"codecs": ["semq2", "semq8"], "rows_per_shard": 500},
        "validation": {"k": K, "sample_queries": 64, "seed": 1, "min_recall_at_k": 0.9,
                       "max_rejected_fraction": 0.01, "min_compression_ratio": 0},
    }
    return {"data": data, "options": options, "fs": fs, "bucket": bucket, "url": s3_url,
            "corpus": corpus, "ids": ids}


def write_yaml(tmp_path, data: dict[str, Any], name: str = "job.yaml") -> str:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    text = path.read_text()
    assert SECRET_KEY not in text and ACCESS_KEY not in text    # only references in the file
    return str(path)


def run_id_from(stdout: str) -> str:
    match = re.search(r"^run (\S+):", stdout, re.MULTILINE)
    assert match, stdout
    return match.group(1)


def read_report(job: dict[str, Any], run_id: str) -> tuple[str, dict[str, Any]]:
    store = IndexStore(job["url"], storage_options=job["options"])
    with store.open_read(f"runs/{run_id}/report.json") as f:
        text = f.read().decode("utf-8")
    return text, json.loads(text)


def assert_no_credentials_in_bucket(job: dict[str, Any]) -> None:
    """No object in the bucket (input, shards, manifests, hint, reports, dead letters) holds
    a credential value."""
    fs = job["fs"]
    paths = fs.find(job["bucket"])
    assert paths
    for path in paths:
        data = fs.cat_file(path)
        for value in (SECRET_KEY, ACCESS_KEY):
            assert value.encode() not in data, path


def test_cli_publishes_to_s3_and_index_searches_over_s3(s3_job, tmp_path, capsys, caplog):
    job = s3_job
    config_file = write_yaml(tmp_path, job["data"])
    with caplog.at_level(logging.DEBUG, logger="semq_transforms"), \
            caplog.at_level(logging.DEBUG, logger="pipelines"):
        assert main(["--config", config_file]) == 0
    out, err = capsys.readouterr()
    for value in (SECRET_KEY, ACCESS_KEY):
        assert value not in out and value not in err and value not in caplog.text
    assert "published version 1" in out
    run_id = run_id_from(out)

    # The run folder on S3: shards, report and dead letters.
    fs, run_dir = job["fs"], f"{job['url'].removeprefix('s3://')}/runs/{run_id}"
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.ls(run_dir, detail=False))
    assert {"report.json", "report.md", "dead_letters.parquet"} <= set(names)
    assert [n for n in names if n.endswith(".semq")] == [
        f"shard-{i:05d}.semq" for i in range(4)]   # 2004 rows / 500: the last holds 504

    text, report = read_report(job, run_id)
    assert report["gate"] == {"passed": True, "problems": []}
    assert report["version"] == 1
    counts = report["counts"]
    assert counts["rows_read"] == counts["rows_planned"] == ROWS + 4
    assert counts["rows_encoded"] == ROWS + 1
    assert counts["dead_letters"] == counts["rows_rejected"] == 3
    assert report["validation"]["recall_at_k"] >= 0.9
    # Credentials: never in the report (safe dump shows "***"), nor anywhere in the bucket.
    assert SECRET_KEY not in text and ACCESS_KEY not in text
    reported = report["config"]["input"]["storage_options"]
    assert reported["secret"] == reported["key"] == "***"
    assert reported["client_kwargs"]["endpoint_url"] == "***"
    assert "token" not in reported                             # the optional ref was unset
    assert report["config"]["output"]["storage_options"]["secret"] == "***"
    assert_no_credentials_in_bucket(job)

    with fs.open(f"{run_dir}/dead_letters.parquet", "rb") as f:
        dead = pq.read_table(f)
    assert sorted(dead.column("id").to_pylist()) == [str(i) for i in BAD_IDS]
    assert sorted(dead.column("reason").to_pylist()) == sorted(
        ["non_finite", "wrong_dimension", "zero_vector"])

    # Open the published index over S3, search it, compare with exact float search.
    index = Index.open(job["url"], storage_options=job["options"])
    assert index.versions() == [1] and index.version == 1
    assert index.rows == ROWS + 1 and index.dim == DIM
    assert tuple(index.codecs) == ("semq2", "semq8")
    corpus, ids = job["corpus"], job["ids"]
    rng = np.random.default_rng(5)
    queries = corpus[rng.choice(len(corpus), 50, replace=False)]
    _, found = index.search(queries, k=K)
    _, gt = exact_knn(queries, corpus, K)
    recall = knn_intersection_measure(found, ids[gt])
    assert recall >= 0.9, recall
    verified = index.verify()
    assert verified.ok, verified.problems
    assert verified.shards_checked == 4


def test_second_run_failing_gate_publishes_nothing_on_s3(s3_job, tmp_path, capsys):
    """First run (API path) publishes version 1; a second run of a changed job whose gate
    cannot pass (3 rows rejected, max_rejected_fraction 0) exits 1 and leaves the index
    exactly as it was: same versions, same manifest bytes, same latest hint."""
    job = s3_job
    config = parse_config(job["data"])
    assert config.output.storage_options["secret"] == SECRET_KEY     # resolved from the env
    assert SECRET_KEY not in repr(config)
    pipeline = beam.Pipeline(options=direct_options())
    first_run = build_pipeline(pipeline, config)
    pipeline.run().wait_until_finish()
    _, first = read_report(job, first_run)
    assert first["gate"]["passed"] and first["version"] == 1

    store = IndexStore(job["url"], storage_options=job["options"])
    assert store.versions() == [1]
    manifest_before = store.fs.cat_file(store.url_of(manifest_path(1)))
    objects_before = set(store.fs.find(store.root))

    data = json.loads(json.dumps(job["data"]))
    data["validation"]["max_rejected_fraction"] = 0.0
    assert main(["--config", write_yaml(tmp_path, data, "failing.yaml")]) == 1
    out = capsys.readouterr().out
    assert "NOT published" in out and "rejected fraction" in out
    second_run = run_id_from(out)
    assert second_run != first_run                      # the changed config: a new run folder

    assert store.versions() == [1]
    assert store.latest_version() == 1
    assert store.fs.cat_file(store.url_of(manifest_path(1))) == manifest_before
    new_objects = set(store.fs.find(store.root)) - objects_before
    assert new_objects and all(f"/runs/{second_run}/" in p for p in new_objects), new_objects
    assert not any("/manifests/" in p for p in new_objects)

    text, report = read_report(job, second_run)
    assert report["gate"]["passed"] is False and report["version"] is None
    assert any("rejected fraction" in p for p in report["gate"]["problems"])
    assert SECRET_KEY not in text and ACCESS_KEY not in text
    with store.open_read(f"runs/{second_run}/report.md") as f:
        assert "NOT PUBLISHED" in f.read().decode("utf-8")
    assert_no_credentials_in_bucket(job)

    index = Index.open(job["url"], storage_options=job["options"])
    assert index.version == 1 and index.rows == ROWS + 1


def test_unset_credential_variable_exits_2_naming_it(s3_job, tmp_path, capsys, monkeypatch):
    monkeypatch.delenv(ENV_SECRET)
    assert main(["--config", write_yaml(tmp_path, s3_job["data"])]) == 2
    err = capsys.readouterr().err
    assert ENV_SECRET in err and "storage_options.secret" in err
    assert SECRET_KEY not in err
    store = IndexStore(s3_job["url"], storage_options=s3_job["options"])
    assert store.versions() == [] and not store.fs.exists(f"{store.root}/runs")


def test_a_missing_output_bucket_stops_the_job_before_it_runs(s3_job, tmp_path, capsys):
    """Before: every shard was read and encoded, then the first write failed with a 50-line
    traceback naming no bucket, and no report. Now one line naming the index URL and the
    bucket, exit 2, before the pipeline runs; a dry run stops the same way."""
    data = json.loads(json.dumps(s3_job["data"]))
    data["output"]["index_url"] = "s3://semq-no-such-bucket/index"
    config_file = write_yaml(tmp_path, data)
    for flag in ([], ["--dry-run"]):
        assert main(["--config", config_file, *flag]) == 2
        out, err = capsys.readouterr()
        assert [line for line in err.splitlines() if line.startswith("ingest:")] == [
            ("ingest: output s3://semq-no-such-bucket/index: the bucket 'semq-no-such-bucket' "
             "does not exist; create it, or fix output.index_url")]
        assert "Traceback" not in err and not out
        for value in (SECRET_KEY, ACCESS_KEY):
            assert value not in err


def test_dry_run_on_s3_probes_the_bucket_and_leaves_it_as_it_was(s3_job, tmp_path, capsys):
    """The dry run checks the bucket (it exists) and writes and deletes a probe object under
    the run folder: afterwards the bucket holds exactly the objects it held before."""
    job, fs, bucket = s3_job, s3_job["fs"], s3_job["bucket"]
    before = {path: fs.info(path)["ETag"] for path in fs.find(bucket)}
    assert main(["--config", write_yaml(tmp_path, job["data"]), "--dry-run"]) == 0
    out, err = capsys.readouterr()
    assert {path: fs.info(path)["ETag"] for path in fs.find(bucket)} == before
    run_id = re.search(r"^dry run of run (\S+):", out, re.MULTILINE).group(1)
    assert (f"nothing written but a probe object, deleted again "
            f"({job['url']}/runs/{run_id}/.write-probe)") in out
    assert f"input: s3://{bucket}/input/*.parquet: 3 file(s), parquet, {ROWS + 4} rows" in out
    assert f"s3://{bucket}/input/part-00000.parquet: 1000 rows, vectors fixed_size_list " \
           f"of {DIM}" in out
    assert (f"s3://{bucket}/input/part-00002.parquet: 4 rows, vectors variable-length "
            f"lists") in out
    assert f"dimension: {DIM} (input.dim;" in out and "1 file(s) of variable-length" in out
    assert ("shards: 4 of 500 rows (encode.rows_per_shard), the last 504 (a remainder under "
            "half a shard joins it)\n") in out and "codecs: semq2, semq8" in out
    assert f"output: {job['url']} (bucket '{bucket}' exists); run folder " \
           f"{job['url']}/runs/{run_id}/" in out
    for value in (SECRET_KEY, ACCESS_KEY):
        assert value not in out and value not in err
    # the real run then publishes under the run id the dry run printed
    assert main(["--config", write_yaml(tmp_path, job["data"])]) == 0
    assert run_id_from(capsys.readouterr().out) == run_id
