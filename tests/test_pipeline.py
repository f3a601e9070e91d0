"""The ingestion pipeline end to end on local folders (pipelines.ingest on the pinned local
runner): publish and search, dead-letter reconciliation, the gate refusing to publish,
byte-identical reruns, and the command line in a subprocess."""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import ClassVar

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.ingest import build_pipeline, main
from semq_transforms.config import parse_config
from semq_transforms.eval import exact_knn, knn_intersection_measure
from semq_transforms.format.fingerprint import row_fingerprints
from semq_transforms.format.shard import read_shard
from semq_transforms.format.store import IndexStore
from semq_transforms.index import Index
from semq_transforms.levels import encode_levels
from semq_transforms.sample_data import sample_embeddings, write_sample_embeddings
from semq_transforms.transforms import direct_options
from semq_transforms.transforms.encode import ShardNeighbors, _MergeNeighborsFn

ROOT = Path(__file__).resolve().parents[1]
ROWS, DIM = 3000, 32
BAD_IDS = [1_000_000 + i for i in range(5)]


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory) -> Path:
    """3000 sample rows (dim 32) in 3 files, plus a file of 5 rows of which 3 are bad."""
    folder = tmp_path_factory.mktemp("input")
    write_sample_embeddings(str(folder), rows=ROWS, dim=DIM, seed=3, files=3)
    good = np.full(DIM, 0.1, dtype=np.float32).tolist()
    vectors = [good, [float("nan")] * DIM, [0.5] * (DIM - 1), [0.0] * DIM, good]
    table = pa.table({"id": pa.array(BAD_IDS, pa.int64()),
                      "embedding": pa.array(vectors, pa.list_(pa.float32()))})
    pq.write_table(table, folder / "part-00003.parquet")
    return folder


def job(input_dir: Path, index_url: str, **validation) -> dict:
    return {
        "name": "test-job",
        "input": {"url": f"{input_dir}/*.parquet", "dim": DIM, "batch_rows": 500},
        "output": {"index_url": index_url},
        "encode": {"codecs": ["semq2", "semq8"], "rows_per_shard": 1000},
        # (shards of a few hundred rows of d = 32 are about as big as their input: the size
        # gate has a test of its own)
        "validation": {"k": 10, "sample_queries": 64, "seed": 1, "min_recall_at_k": 0.9,
                       "max_rejected_fraction": 0.01, "min_compression_ratio": 0,
                       **validation},
    }


def run_job(data: dict) -> tuple[str, dict]:
    config = parse_config(data)
    pipeline = beam.Pipeline(options=direct_options())
    run_id = build_pipeline(pipeline, config)
    pipeline.run().wait_until_finish()
    store = IndexStore(config.output.index_url)
    with store.open_read(f"runs/{run_id}/report.json") as f:
        return run_id, json.loads(f.read())


def run_in_mode(config, mode: str) -> str:
    """Run the job on the local runner in ``mode`` with two workers; returns the run id.
    Worker processes (multi_processing: every DoFn pickled into them) import this checkout."""
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env_path] if p)
    try:
        pipeline = beam.Pipeline(options=direct_options(mode, 2))
        run_id = build_pipeline(pipeline, config)
        pipeline.run().wait_until_finish()
    finally:
        os.environ["PYTHONPATH"] = env_path
    return run_id


@pytest.fixture(scope="module")
def published(input_dir, tmp_path_factory) -> tuple[str, str, dict]:
    index_url = str(tmp_path_factory.mktemp("index") / "idx")
    run_id, report = run_job(job(input_dir, index_url))
    return index_url, run_id, report


def test_publishes_a_searchable_version(published):
    index_url, run_id, report = published
    assert report["gate"] == {"passed": True, "problems": []}
    assert report["version"] == 1
    index = Index.open(index_url)
    x = sample_embeddings(ROWS, DIM, seed=3)
    rng = np.random.default_rng(5)
    queries = x[rng.choice(ROWS, 50, replace=False)]
    _, I = index.search(queries, k=10)
    _, gt = exact_knn(queries, np.concatenate([x, np.full((2, DIM), 0.1, np.float32)]), 10)
    gt_ids = np.where(gt < ROWS, gt, np.array(BAD_IDS)[[0, 4]][np.clip(gt - ROWS, 0, 1)])
    assert knn_intersection_measure(I, gt_ids) >= 0.9
    assert report["validation"]["recall_at_k"] >= 0.9
    shards = report["validation"]["shards"]
    # 3,005 rows in shards of 1,000: the last holds 1,005 (5 left over join it)
    assert len(shards) == 3 and all(s["recall_at_k"] >= 0.8 for s in shards)
    assert report["bytes"]["compression_ratio"] > 1  # d=32, 10.3 bits/dim + params
    md = (Path(index_url) / "runs" / run_id / "report.md").read_text()
    assert "PUBLISHED version 1" in md


def test_dead_letters_reconcile(published):
    index_url, run_id, report = published
    counts = report["counts"]
    dead = pq.read_table(Path(index_url) / "runs" / run_id / "dead_letters.parquet")
    assert sorted(dead.column("reason").to_pylist()) == sorted(
        ["non_finite", "wrong_dimension", "zero_vector"])
    assert sorted(dead.column("id").to_pylist()) == [str(i) for i in BAD_IDS[1:4]]
    # each says what was wrong with its row
    assert {d["reason"]: d["detail"] for d in dead.to_pylist()} == {
        "non_finite": "vector element 0 is nan",
        "wrong_dimension": f"got {DIM - 1}, expected {DIM}",
        "zero_vector": "every element is 0 (zero vectors have no direction to encode)"}
    assert counts["rows_read"] == counts["rows_planned"] == ROWS + 5
    assert counts["rows_read"] == counts["rows_encoded"] + dead.num_rows
    assert counts["dead_letters"] == counts["rows_rejected"] == 3
    by_reason = {k.removeprefix("rejected_"): v for k, v in counts.items()
                 if k.startswith("rejected_") and v}
    assert by_reason == {"non_finite": 1, "wrong_dimension": 1, "zero_vector": 1}
    index = Index.open(index_url)
    assert index.manifest.rows == ROWS + 2


def test_an_index_bigger_than_min_compression_ratio_allows_is_not_published(input_dir,
                                                                            tmp_path, capsys):
    """Shards of 40 rows: each shard's params outweigh its codes, the index is not 1.5x
    smaller than its float32 input: exit 1 naming the ratio and what to change; with the
    check off (0) the same job publishes."""
    index_url = str(tmp_path / "idx")
    data = job(input_dir, index_url, min_recall_at_k=0.01, max_rejected_fraction=1.0,
               min_compression_ratio=1.5)
    data["encode"]["rows_per_shard"] = 40
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(data))
    assert main(["--config", str(config_file)]) == 1
    out = capsys.readouterr().out
    assert "compression below min_compression_ratio 1.5 in " in out
    assert "raise encode.rows_per_shard" in out
    assert IndexStore(index_url).versions() == []
    [report_file] = Path(index_url).glob("runs/*/report.json")
    report = json.loads(report_file.read_text())
    assert report["bytes"]["compression_ratio"] < 1.5
    assert report["validation"]["min_compression_ratio"] == 1.5
    data["validation"]["min_compression_ratio"] = 0
    config_file.write_text(yaml.safe_dump(data))
    assert main(["--config", str(config_file)]) == 0
    assert IndexStore(index_url).versions() == [1]


def test_gate_failure_publishes_nothing(input_dir, tmp_path, capsys):
    """semq1 cannot reach recall 1.0: main() exits 1, no version, the report says why."""
    index_url = str(tmp_path / "idx")
    data = job(input_dir, index_url, min_recall_at_k=1.0)
    data["encode"]["codecs"] = ["semq1"]
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(data))
    assert main(["--config", str(config_file)]) == 1
    assert "NOT published: recall@10" in capsys.readouterr().out
    assert IndexStore(index_url).versions() == []
    [report_file] = Path(index_url).glob("runs/*/report.json")
    report = json.loads(report_file.read_text())
    assert report["gate"]["passed"] is False and report["version"] is None
    assert any("recall@10" in p and "min_recall_at_k 1.0" in p
               for p in report["gate"]["problems"])
    assert "NOT PUBLISHED" in report_file.with_suffix(".md").read_text()


def test_rejected_fraction_gate(input_dir, tmp_path):
    _, report = run_job(job(input_dir, str(tmp_path / "idx"), max_rejected_fraction=0.0))
    assert not report["gate"]["passed"]
    assert any("rejected fraction" in p for p in report["gate"]["problems"])


def test_rerun_is_byte_identical(input_dir, published, tmp_path):
    index_url, run_id, _ = published
    data = job(input_dir, str(tmp_path / "other"))
    data["output"]["run_id"] = run_id
    run_job(data)
    first = sorted((Path(index_url) / "runs" / run_id).glob("*.semq"))
    second = sorted((tmp_path / "other" / "runs" / run_id).glob("*.semq"))
    assert [p.name for p in first] == [p.name for p in second] and len(first) == 3
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()


def test_shards_carry_input_fingerprints_and_a_re_encoded_run_changes_no_input(
        input_dir, published, tmp_path):
    """Each row's input fingerprint is in its shard; the same input published with other
    codecs and shard sizes diffs as all unchanged (issue 16)."""
    index_url, _, _ = published
    good = np.full(DIM, 0.1, dtype=np.float32)
    by_id = dict(enumerate(sample_embeddings(ROWS, DIM, seed=3))) | {BAD_IDS[0]: good,
                                                                     BAD_IDS[4]: good}
    index = Index.open(index_url)
    for meta in index.shards:
        with index._store.open_read(meta.path) as f:
            shard = read_shard(f)
        np.testing.assert_array_equal(
            shard.fingerprints, row_fingerprints(np.stack([by_id[i] for i in shard.ids.tolist()])))
    data = job(input_dir, str(tmp_path / "other"), min_recall_at_k=0.01)
    data["encode"] = {"codecs": ["semq4"], "rows_per_shard": 700}
    run_job(data)
    report = index.diff(Index.open(str(tmp_path / "other")), sample_queries=20)
    assert report.fingerprints and report.changed.size == 0
    assert report.added.size == report.removed.size == 0
    assert report.unchanged.size == index.rows == ROWS + 2
    assert report.drift_unchanged.max > 0          # re-encoded: the restored vectors moved


def _shard_outputs(tag: str, *, metas, neighbors, dead_letters,
                   counts) -> list[beam.PCollection]:
    """The four outputs of an encode step as (tag, kind, comparable value) elements."""
    return [
        metas | f"{tag} metas" >> beam.Map(lambda m: (tag, "meta", dataclasses.astuple(m))),
        neighbors | f"{tag} neighbors" >> beam.Map(
            lambda n: (tag, "neighbors", tuple(a.tobytes() for a in (
                n.exact_D, n.exact_I, n.approx_D, n.approx_I)))),
        dead_letters | f"{tag} dead" >> beam.Map(
            lambda d: (tag, "dead", tuple(sorted(d.items())))),
        counts | f"{tag} counts" >> beam.Map(
            lambda c: (tag, "counts", tuple(sorted(c.items())))),
    ]


def test_read_encode_shards_equals_read_shards_then_encode_shards(input_dir, tmp_path):
    """The job's one-step ReadEncodeShards gives what ReadShards | EncodeShards gives: the
    same shard files, metas, neighbors, dead letters (bad rows included) and counts."""
    from apache_beam.testing.util import assert_that

    from semq_transforms.transforms.encode import (
        EncodeShards,
        ReadEncodeShards,
        SampleQueries,
    )
    from semq_transforms.transforms.ingest import make_read
    from semq_transforms.transforms.read import ReadShards

    config = parse_config(job(input_dir, str(tmp_path / "unused")))
    read = make_read(config)
    p = beam.Pipeline(options=direct_options())
    queries = (p | "Read" >> read).batches | "Sample" >> SampleQueries(n=32, seed=1)

    def encode(name: str) -> EncodeShards:
        return EncodeShards(str(tmp_path / name), run_id="r", codecs=["semq2", "semq8"],
                            queries=queries, k=10)

    two = p | "Two steps" >> ReadShards(read, rows_per_shard=1000)
    encoded = two.shards | "Encode" >> encode("two")
    one = p | "One step" >> ReadEncodeShards(ReadShards(read, rows_per_shard=1000),
                                             encode("one"))
    parts = [*_shard_outputs("two", metas=encoded.metas, neighbors=encoded.neighbors,
                             dead_letters=two.dead_letters, counts=two.counts),
             *_shard_outputs("one", metas=one.metas, neighbors=one.neighbors,
                             dead_letters=one.dead_letters, counts=one.counts)]

    def same(elements: list) -> None:
        by_tag: dict[str, list] = {"one": [], "two": []}
        for tag, kind, value in elements:
            by_tag[tag].append((kind, value))
        assert sorted(by_tag["one"]) == sorted(by_tag["two"])
        kinds = [kind for kind, _ in by_tag["one"]]
        assert kinds.count("meta") == kinds.count("neighbors") == kinds.count("counts") == 3
        assert kinds.count("dead") == 3

    assert_that(parts | beam.Flatten(), same)
    p.run().wait_until_finish()
    files = sorted(f.name for f in (tmp_path / "one" / "runs" / "r").iterdir())
    assert len(files) == 3
    for name in files:
        assert ((tmp_path / "one" / "runs" / "r" / name).read_bytes()
                == (tmp_path / "two" / "runs" / "r" / name).read_bytes())


def test_job_holds_no_shard_rows_between_steps(input_dir, tmp_path):
    """The job reads and encodes each shard in one step: no PCollection of its graph carries
    ShardRows (a runner keeps a DoFn's last input element alive until the next arrives)."""
    from semq_transforms.transforms.planning import ShardRows

    pipeline = beam.Pipeline(options=direct_options())
    build_pipeline(pipeline, parse_config(job(input_dir, str(tmp_path / "idx"))))
    types = []

    class Visitor(beam.pipeline.PipelineVisitor):
        def visit_transform(self, node):
            types.extend(out.element_type for out in node.outputs.values())

    pipeline.visit(Visitor())
    assert types and ShardRows not in types


def test_merge_neighbors_keeps_running_topk():
    fn = _MergeNeighborsFn(2)
    a = ShardNeighbors(np.array([[3.0, 1.0]]), np.array([[5, 6]]),
                       np.array([[2.0, 1.0]]), np.array([[5, 6]]))
    b = ShardNeighbors(np.array([[2.0, 0.0]]), np.array([[9, 8]]),
                       np.array([[3.0, 0.0]]), np.array([[9, 8]]))
    merged = fn.merge_accumulators([fn.add_input(fn.create_accumulator(), b),
                                    fn.add_input(fn.create_accumulator(), a)])
    assert merged.exact_I.tolist() == [[5, 9]] and merged.approx_I.tolist() == [[9, 5]]


def test_config_errors_exit_2(tmp_path, capsys):
    assert main(["--config", str(tmp_path / "missing.yaml")]) == 2
    assert "missing.yaml" in capsys.readouterr().err


def test_misspelt_job_options_stop_the_job_and_index_url_takes_either_spelling(
        input_dir, tmp_path, capsys):
    """Beam only warns about options it does not know: "--index_url X" was ignored and the
    job published into the config's index. A near-miss of a job option stops the job; other
    unknown options (a PipelineOptions class of the user's, never imported here) are passed
    on with a warning."""
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(job(input_dir, str(tmp_path / "configured"))))
    assert main(["--config", str(config_file), "--index-url-x", "y", "--bogus=1"]) == 2
    err = capsys.readouterr().err
    assert "unknown option(s) --index-url-x: did you mean" in err and "--bogus" not in err
    assert not (tmp_path / "configured").exists()
    assert main(["--config", str(config_file), "--index_url", str(tmp_path / "other"),
                 "--my_team_option=7"]) == 0
    assert "option(s) --my_team_option are neither job options" in capsys.readouterr().err
    assert Index.open(str(tmp_path / "other")).version == 1
    assert not (tmp_path / "configured").exists()


def test_unreachable_storage_is_exit_2_with_a_message(input_dir, tmp_path, capsys):
    """An S3 endpoint nobody listens on: botocore's errors are not OSErrors, and escaped as a
    traceback with exit 1 (which means "gate failed")."""
    data = job(input_dir, "s3://bucket/idx")
    data["output"]["storage_options"] = {"key": "k", "secret": "s", "client_kwargs": {
        "endpoint_url": "http://127.0.0.1:9"}, "config_kwargs": {
        "retries": {"max_attempts": 1}, "connect_timeout": 1}}
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(data))
    assert main(["--config", str(config_file)]) == 2
    err = capsys.readouterr().err
    assert "ingest: output s3://bucket/idx: cannot reach the bucket 'bucket'" in err, err


def test_command_line_local_config(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    index_url = str(tmp_path / "local-index")
    result = subprocess.run(
        [sys.executable, "-m", "pipelines.ingest", "--config", "configs/local.yaml",
         "--index-url", index_url],
        check=False, cwd=ROOT, env=env, capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "published version 1" in result.stdout
    assert "apitools" not in result.stderr        # Beam's warning about its GCP extra
    assert Index.open(index_url).manifest.rows == 20_000
    report = json.loads(next(Path(index_url).glob("runs/*/report.json")).read_text())
    assert report["gate"]["passed"] and report["config"]["output"]["index_url"] == index_url


def _write_ids_file(folder: Path, name: str, ids: list, vectors: np.ndarray) -> None:
    pq.write_table(pa.table({"id": ids, "embedding": pa.FixedSizeListArray.from_arrays(
        pa.array(vectors.reshape(-1)), vectors.shape[1])}), folder / name, row_group_size=50)


@pytest.mark.parametrize("kind", ["int", "str"])
def test_duplicate_ids_are_dead_letters(tmp_path, kind):
    """Repeated ids across files and shards: the first row (by file, then row) keeps the id;
    every later one is a ``duplicate_id`` dead letter naming that first row."""
    folder = tmp_path / "in"
    folder.mkdir()
    x = sample_embeddings(600, DIM, seed=9)
    ids = list(range(600))
    for later, first in [(250, 3), (420, 3), (599, 100), (310, 309)]:
        ids[later] = ids[first]
    ids = ids if kind == "int" else [f"doc-{i}" for i in ids]
    _write_ids_file(folder, "a.parquet", ids[:300], x[:300])
    _write_ids_file(folder, "b.parquet", ids[300:], x[300:])
    data = job(folder, str(tmp_path / "idx"), max_rejected_fraction=0.01)
    data["input"]["batch_rows"] = 100
    data["encode"]["rows_per_shard"] = 200
    run_id, report = run_job(data)
    assert report["gate"]["passed"], report["gate"]
    dead = pq.read_table(tmp_path / "idx" / "runs" / run_id / "dead_letters.parquet")
    rows = {(Path(d["source"]).name, d["row"]): d for d in dead.to_pylist()}
    assert set(rows) == {("a.parquet", 250), ("b.parquet", 120), ("b.parquet", 299),
                         ("b.parquet", 10)}
    assert {d["reason"] for d in rows.values()} == {"duplicate_id"}
    assert rows[("b.parquet", 120)]["detail"].endswith("a.parquet row 3")
    assert rows[("b.parquet", 299)]["detail"].endswith("a.parquet row 100")
    assert rows[("b.parquet", 10)]["detail"].endswith("b.parquet row 9")
    assert rows[("a.parquet", 250)]["id"] == str(ids[3])
    assert report["counts"]["rows_encoded"] == 596 and report["counts"]["dead_letters"] == 4
    index = Index.open(str(tmp_path / "idx"))
    got_ids, got_vectors = [], []
    for shard_ids, vectors in index.restore():
        got_ids += np.asarray(shard_ids).tolist()
        got_vectors.append(vectors)
    assert len(got_ids) == len(set(got_ids)) == 596
    kept = np.concatenate(got_vectors)[got_ids.index(ids[3])]
    assert kept @ x[3] > kept @ x[250]  # the id keeps the first row's vector
    assert index.manifest.rows == 596


@pytest.mark.parametrize("codecs, value, limit", [(["semq2", "semq8"], 1e17, "1e+16"),
                                                  (["f16"], -70000.0, "65504")])
def test_values_the_codecs_cannot_encode_are_dead_letters(tmp_path, codecs, value, limit):
    """A finite value beyond the limit of the job's codecs (1e16 for all, float16's 65504 for
    f16) rejects its row as ``out_of_range`` when it is read, naming file, row, element and
    value; it never reaches a codec or the query sample, and the run publishes."""
    folder = tmp_path / "in"
    folder.mkdir()
    x = sample_embeddings(120, DIM, seed=12)
    x[70, 5] = value
    _write_ids_file(folder, "a.parquet", list(range(120)), x)
    data = job(folder, str(tmp_path / "idx"), max_rejected_fraction=0.01)
    data["encode"].update(codecs=codecs, rows_per_shard=50)
    run_id, report = run_job(data)
    assert report["gate"]["passed"], report["gate"]
    dead = pq.read_table(tmp_path / "idx" / "runs" / run_id / "dead_letters.parquet")
    assert dead.to_pylist() == [
        {"id": "70", "source": f"file://{folder}/a.parquet", "row": 70,
         "reason": "out_of_range",
         "detail": f"vector element 5 is {value:g}; the codecs encode magnitudes up to {limit}"}]
    counts = report["counts"]
    assert counts["rows_read"] == 120 == counts["rows_encoded"] + dead.num_rows
    assert counts["rows_rejected"] == counts["dead_letters"] == 1
    assert Index.open(str(tmp_path / "idx")).manifest.rows == 119


def test_string_ids_a_shard_cannot_store_are_dead_letters(tmp_path):
    """A string id over MAX_ID_BYTES UTF-8 bytes is rejected (``id_too_long``) when its row
    is read, not when the shard is written: the run publishes the other rows."""
    folder = tmp_path / "in"
    folder.mkdir()
    ids = [f"doc-{i}" for i in range(120)]
    ids[33] = "x" * 20000
    _write_ids_file(folder, "a.parquet", ids, sample_embeddings(120, DIM, seed=13))
    data = job(folder, str(tmp_path / "idx"), max_rejected_fraction=0.01)
    data["encode"]["rows_per_shard"] = 50
    run_id, report = run_job(data)
    assert report["gate"]["passed"], report["gate"]
    dead = pq.read_table(tmp_path / "idx" / "runs" / run_id / "dead_letters.parquet")
    assert dead.to_pylist() == [
        {"id": ids[33], "source": f"file://{folder}/a.parquet", "row": 33,
         "reason": "id_too_long",
         "detail": "the id is 20000 UTF-8 bytes; a shard stores at most 16384"}]
    assert report["counts"]["rows_read"] == 120 == report["counts"]["rows_encoded"] + 1
    got = [i for shard_ids, _ in Index.open(str(tmp_path / "idx")).restore() for i in shard_ids]
    assert sorted(got) == sorted(ids[:33] + ids[34:])


def test_credentials_in_input_urls_reach_no_output(tmp_path, http_folder, capsys, caplog):
    """A signed input URL (``?sig=...``): dead letters name the file by its redacted URL (in
    ``source`` and in a duplicate's ``detail``), and so do errors for an input that does not
    exist or cannot be read; the token is in no file the run writes, nor its output or log."""
    import logging

    caplog.set_level(logging.INFO)
    served, base = http_folder
    secret = "sig=SECRET123"
    x = sample_embeddings(60, DIM, seed=14)
    x[3] = 0.0
    ids = list(range(60))
    ids[40] = ids[10]
    _write_ids_file(served, "a.parquet", ids, x)
    (served / "bad.parquet").write_bytes(b"not parquet" * 20)
    data = job(tmp_path, str(tmp_path / "idx"), max_rejected_fraction=0.1)
    data["input"].update(url=f"{base}/a.parquet?{secret}", format="parquet")
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(data))
    assert main(["--config", str(config_file)]) == 0
    printed = [capsys.readouterr()]
    source = f"{base}/a.parquet?***"
    [dead_file] = (tmp_path / "idx").glob("runs/*/dead_letters.parquet")
    assert pq.read_table(dead_file).to_pylist() == [
        {"id": "3", "source": source, "row": 3, "reason": "zero_vector",
         "detail": "every element is 0 (zero vectors have no direction to encode)"},
        {"id": "10", "source": source, "row": 40, "reason": "duplicate_id",
         "detail": f"first occurrence: {source} row 10"}]
    for name, message in (("missing.parquet", "no input files match"),
                          ("bad.parquet", "cannot read")):
        data["input"]["url"] = f"{base}/{name}?{secret}"
        config_file.write_text(yaml.safe_dump(data))
        assert main(["--config", str(config_file)]) == 2
        printed.append(capsys.readouterr())
        assert f"{message} {base}/{name}?***" in printed[-1].err
    assert not [o for o in printed if "SECRET123" in o.out + o.err]
    assert "SECRET123" not in caplog.text
    written = [p for p in (tmp_path / "idx").rglob("*") if p.is_file()]
    assert written and not [p for p in written if b"SECRET123" in p.read_bytes()]


@pytest.mark.parametrize("mode", ["in_process", "multi_processing"])
def test_a_signature_expiring_mid_job_reaches_no_output(tmp_path, http_folder, capfd, caplog,
                                                         mode):
    """The signed input URL works while the job is planned, then the server refuses it (403)
    inside the pipeline: the job exits 2 naming the file and the HTTP status, and the token
    is in no line printed or logged, by us, by Beam (its failed-bundle traceback, in the
    launcher or a worker process) or by aiohttp, nor in any file the run writes."""
    import logging

    caplog.set_level(logging.INFO)
    served, base = http_folder
    _write_ids_file(served, "a.parquet", list(range(60)), sample_embeddings(60, DIM, seed=16))
    (served / ".deny-ranges-after").write_text("1")        # planning reads the file once
    data = job(tmp_path, str(tmp_path / "idx"))
    data["input"].update(url=f"{base}/a.parquet?X-Amz-Signature=SECRET123", format="parquet")
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(data))
    if mode == "in_process":
        assert main(["--config", str(config_file)]) == 2
    else:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            p for p in [str(ROOT), os.environ.get("PYTHONPATH", "")] if p)}
        done = subprocess.run(
            [sys.executable, "-m", "pipelines.ingest", "--config", str(config_file),
             "--direct_running_mode=multi_processing", "--direct_num_workers=2"],
            check=False, env=env, cwd=ROOT, timeout=600)
        assert done.returncode == 2
    printed = capfd.readouterr()
    output = printed.out + printed.err + caplog.text
    assert f"cannot read {base}/a.parquet?***: ClientResponseError: 403" in printed.err
    assert "SECRET123" not in output
    written = [p for p in (tmp_path / "idx").rglob("*") if p.is_file()]
    assert written and not [p for p in written if b"SECRET123" in p.read_bytes()]


def test_the_query_sample_reads_past_rejected_split_heads(tmp_path):
    """The first row of every split rejected, one query wanted (a head of one row per
    split): the sample still comes from accepted rows, read further into the heads."""
    folder = tmp_path / "in"
    folder.mkdir()
    x = sample_embeddings(100, DIM, seed=15)
    x[::10] = 0.0
    pq.write_table(pa.table({"id": pa.array(range(100)), "embedding": pa.FixedSizeListArray
                             .from_arrays(pa.array(x.reshape(-1)), DIM)}),
                   folder / "a.parquet", row_group_size=10)
    data = job(folder, str(tmp_path / "idx"), max_rejected_fraction=0.2, sample_queries=1,
               min_recall_at_k=0.5)
    data["input"]["batch_rows"] = 10
    data["encode"]["rows_per_shard"] = 50
    _, report = run_job(data)
    assert report["gate"] == {"passed": True, "problems": []}
    assert report["validation"]["queries"] == 1
    assert report["counts"]["rows_read"] == 100 and report["counts"]["dead_letters"] == 10


def test_a_k_of_every_row_is_noted_as_saying_nothing(tmp_path, capsys):
    """k at or above the rows encoded makes recall@k 1.0 whatever the codes, and so for a
    shard of at most k rows: the report (JSON and Markdown) and the summary say so; a k
    below every shard's rows notes nothing."""
    folder = tmp_path / "in"
    folder.mkdir()
    _write_ids_file(folder, "a.parquet", list(range(12)), sample_embeddings(12, DIM, seed=2))
    notes = {}
    for k, rows_per_shard in [(12, 1000), (11, 1000), (4, 8)]:   # (4, 8): shards 8, 4
        data = job(folder, str(tmp_path / f"idx{k}"), k=k, sample_queries=4)
        data["encode"]["rows_per_shard"] = rows_per_shard
        config_file = tmp_path / f"job{k}.yaml"
        config_file.write_text(yaml.safe_dump(data))
        assert main(["--config", str(config_file)]) == 0
        out = capsys.readouterr().out
        [report_file] = (tmp_path / f"idx{k}").glob("runs/*/report.json")
        notes[k] = json.loads(report_file.read_text())["validation"]["notes"]
        markdown = report_file.with_suffix(".md").read_text()
        for note in notes[k]:
            assert f"note: {note}" in out and f"* note: {note}" in markdown
    assert notes[11] == [] and len(notes[12]) == 1
    assert "k (12) >= rows encoded (12)" in notes[12][0]
    assert notes[4] == [("1 of 2 shards hold at most k (4) rows: their recall@4 is 1.0 "
                        "whatever the codes")]


def test_every_row_rejected_publishes_nothing(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    nan = np.full((40, DIM), np.nan, np.float32)
    _write_ids_file(folder, "bad.parquet", list(range(40)), nan)
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(job(folder, str(tmp_path / "idx"),
                                              max_rejected_fraction=1.0)))
    assert main(["--config", str(config_file)]) == 1
    assert "no row was accepted" in capsys.readouterr().out
    assert IndexStore(str(tmp_path / "idx")).versions() == []
    [report_file] = (tmp_path / "idx").glob("runs/*/report.json")
    report = json.loads(report_file.read_text())
    assert report["counts"]["rows_read"] == 40 and report["counts"]["dead_letters"] == 40
    assert report["counts"]["shards"] == 0
    dead = pq.read_table(report_file.parent / "dead_letters.parquet")
    assert dead.column("reason").to_pylist() == ["non_finite"] * 40


def test_unchanged_rerun_publishes_nothing_new(input_dir, tmp_path, capsys):
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(job(input_dir, str(tmp_path / "idx"))))
    assert main(["--config", str(config_file)]) == 0
    shard_files = sorted((tmp_path / "idx").glob("runs/*/*.semq"))
    stamps = [p.stat().st_mtime_ns for p in shard_files]
    capsys.readouterr()
    assert main(["--config", str(config_file)]) == 0
    assert "unchanged since version 1; nothing to publish" in capsys.readouterr().out
    assert IndexStore(str(tmp_path / "idx")).versions() == [1]
    assert [p.stat().st_mtime_ns for p in shard_files] == stamps  # served files untouched


def test_runner_modes_give_identical_shards_and_manifest(input_dir, tmp_path):
    """In-memory and multi-process runs (DoFns pickled into two worker processes) write
    byte-identical shards and manifests with the same digest."""
    digests, files = [], []
    for mode in ("in_memory", "multi_processing"):
        index_url = str(tmp_path / mode)
        data = job(input_dir, index_url)
        data["output"]["run_id"] = "same-run"  # else derived from the config (index_url)
        run_in_mode(parse_config(data), mode)
        digests.append(IndexStore(index_url).read_manifest().digest)
        files.append({p.name: p.read_bytes()
                      for p in sorted(Path(index_url).glob("runs/*/*.semq"))})
    assert len(files[0]) == 3 and files[0] == files[1]
    assert digests[0] == digests[1]


def test_row_groups_larger_than_shards_are_read_in_runs_and_give_the_same_shards(tmp_path):
    """One 24,000-row row group in shards of 2,000 (as pyarrow's default 1Mi-row groups meet
    the default 100,000-row shards): the job reads it in runs of shards (each shard used to
    decode the group from its start: ~6.5 reads of its bytes), in worker processes too, and
    writes the same shard bytes and dead letters as from row groups of one shard each."""
    rows, dim = 24_000, 128
    x = sample_embeddings(rows, dim, seed=4)
    x[[7, 13_001]] = np.nan
    ids = np.arange(rows)
    ids[9_000] = ids[8_999]   # a repeated id inside a run
    table = pa.table({"id": ids, "embedding": pa.FixedSizeListArray.from_arrays(
        pa.array(x.reshape(-1)), dim)})
    outputs = {}
    for layout, group_rows, mode in [("aligned", 2000, "in_memory"),
                                     ("one-group", rows, "multi_processing")]:
        folder = tmp_path / layout
        folder.mkdir()
        pq.write_table(table, folder / "part.parquet", row_group_size=group_rows,
                       data_page_size=1 << 16)
        data = job(folder, str(tmp_path / f"idx-{layout}"), max_rejected_fraction=0.01)
        data["input"].update(dim=dim, batch_rows=1000)
        data["encode"]["rows_per_shard"] = 2000
        data["output"]["run_id"] = "same-run"
        run_in_mode(parse_config(data), mode)
        run = tmp_path / f"idx-{layout}" / "runs" / "same-run"
        report = json.loads((run / "report.json").read_text())
        assert report["gate"]["passed"], report["gate"]
        outputs[layout] = ({p.name: p.read_bytes() for p in sorted(run.glob("*.semq"))},
                           [{**d, "source": Path(d["source"]).name, "detail": (d["detail"] or "")
                             .replace(str(folder), "")}
                            for d in pq.read_table(run / "dead_letters.parquet").to_pylist()],
                           report["bytes"]["read"])
    aligned, big = outputs["aligned"], outputs["one-group"]
    assert len(aligned[0]) == 12 and big[0] == aligned[0]
    assert big[1] == aligned[1] and [d["row"] for d in big[1]] == [7, 9_000, 13_001]
    assert big[2] < 2.5 * aligned[2], (big[2], aligned[2])


def test_refining_levels_in_worker_processes(input_dir, tmp_path):
    """semq1 + semqr4 (a level that refines the one before it) through the job with its DoFns
    pickled into two worker processes: the shards hold exactly the codes encode_levels gives
    for their rows, the validation reranks with the refinement, and the index searches."""
    index_url = str(tmp_path / "refined")
    data = job(input_dir, index_url)
    data["encode"]["codecs"] = ["semq1", "semqr4"]
    run_id = run_in_mode(parse_config(data), "multi_processing")
    report = json.loads((Path(index_url) / "runs" / run_id / "report.json").read_text())
    assert report["gate"]["passed"] and report["validation"]["recall_at_k"] >= 0.95
    x = sample_embeddings(ROWS, DIM, seed=3)
    # the three files of good rows; the last shard also holds the small file's 2 good rows
    extra = np.full((2, DIM), 0.1, np.float32)
    for shard_no, rows in enumerate([x[:1000], x[1000:2000], np.concatenate([x[2000:], extra])]):
        shard = read_shard(str(Path(index_url) / IndexStore.shard_path(run_id, shard_no)))
        expected = encode_levels(rows, ["semq1", "semqr4"])
        assert [lv.codec.spec for lv in shard.levels] == ["semq1", "semqr4"]
        for got, want in zip(shard.levels, expected, strict=True):
            assert got.params == want.params
            np.testing.assert_array_equal(got.codes, want.codes)
    _, I = Index.open(index_url).search(x[:50], k=10)
    assert knn_intersection_measure(I, exact_knn(x[:50], x, 10)[1]) >= 0.95


def test_written_shards_are_read_back_and_checked(tmp_path):
    """check_written (run on every shard the job writes) refuses a file that storage lost
    or altered: one flipped byte, or a truncated file."""
    from semq_transforms.errors import IntegrityError
    from semq_transforms.format.shard import write_shard
    from semq_transforms.levels import encode_levels
    from semq_transforms.transforms.encode import check_written

    store = IndexStore(str(tmp_path / "idx"))
    x = sample_embeddings(300, DIM, seed=4)
    path = store.shard_path("run-1", 0)
    with store.open_write(path) as f:
        meta = write_shard(f, ids=np.arange(300), levels=encode_levels(x, ["semq2"]), path=path)
    check_written(store, meta)  # as written: fine
    file = tmp_path / "idx" / path
    data = bytearray(file.read_bytes())
    data[len(data) // 2] ^= 0x01
    file.write_bytes(bytes(data))
    with pytest.raises(IntegrityError, match="did not keep what was written"):
        check_written(store, meta)
    file.write_bytes(bytes(data[:-10]))
    with pytest.raises(IntegrityError, match=r"read back as \d+ bytes"):
        check_written(store, meta)


def test_memory_filesystem_end_to_end():
    """Input and index both on memory:// (one process: the in-memory runner shares it)."""
    root = "memory://semq-pipeline-e2e"
    write_sample_embeddings(f"{root}/in", rows=1200, dim=DIM, seed=6, files=2)
    data = job(Path("unused"), f"{root}/idx")
    data["input"]["url"] = f"{root}/in/*.parquet"
    data["encode"]["rows_per_shard"] = 500
    try:
        run_id, report = run_job(data)
        assert report["gate"]["passed"] and report["counts"]["rows_encoded"] == 1200
        index = Index.open(f"{root}/idx")
        assert index.versions() == [1] and index.manifest.rows == 1200
        assert index.verify().ok
        x = sample_embeddings(1200, DIM, seed=6)
        _, I = index.search(x[:40], k=10)
        assert knn_intersection_measure(I, exact_knn(x[:40], x, 10)[1]) >= 0.9
        store = IndexStore(f"{root}/idx")
        assert store.exists(f"runs/{run_id}/dead_letters.parquet")
    finally:
        import fsspec
        fsspec.filesystem("memory").rm(root, recursive=True)


def test_empty_input_publishes_nothing(tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    _write_ids_file(folder, "empty.parquet", pa.array([], pa.int64()), np.zeros((0, DIM), np.float32))
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(job(folder, str(tmp_path / "idx"))))
    assert main(["--config", str(config_file)]) == 1
    assert "read 0 rows" in capsys.readouterr().out
    assert IndexStore(str(tmp_path / "idx")).versions() == []


def _zero_rows(folder: Path, kind: str) -> None:
    if kind == "npy":
        np.save(folder / "a.npy", np.zeros((0, 8), np.float32))
        return
    vector_type = pa.list_(pa.float32(), 8 if kind == "fixed" else -1)
    pq.write_table(pa.table({"id": pa.array([], pa.int64()),
                             "embedding": pa.array([], vector_type)}), folder / "a.parquet")


@pytest.mark.parametrize("kind, dim", [("npy", 8), ("fixed", 8), ("list", None)])
def test_zero_row_inputs_without_dim_write_a_report(tmp_path, capsys, kind, dim):
    """Files that exist but hold no row, and no ``dim`` in the config: the width comes from
    the metadata (NPY shape, fixed_size_list size) of files with no rows too; where nothing
    gives it (a list column), the report says so (dim null). Exit 1, nothing published."""
    folder = tmp_path / "in"
    folder.mkdir()
    _zero_rows(folder, kind)
    data = job(folder, str(tmp_path / "idx"))
    data["input"].update(url=f"{folder}/*", dim=None)
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(data))
    assert main(["--config", str(config_file)]) == 1
    assert "read 0 rows" in capsys.readouterr().out
    assert IndexStore(str(tmp_path / "idx")).versions() == []
    [report_file] = (tmp_path / "idx").glob("runs/*/report.json")
    report = json.loads(report_file.read_text())
    assert report["dim"] == dim and report["counts"]["rows_read"] == 0
    assert report["gate"]["problems"] == ["no row was accepted: nothing to publish"]
    assert pq.read_table(report_file.parent / "dead_letters.parquet").num_rows == 0


@pytest.mark.parametrize("vectors, reject_zero, reasons", [
    ([None, None, None], True, ["null_vector"] * 3),
    ([[], [], None], False, ["wrong_dimension", "wrong_dimension", "null_vector"])])
def test_no_row_with_a_vector_and_no_dim_rejects_every_row(tmp_path, capsys, vectors,
                                                           reject_zero, reasons):
    """A list<float> column whose vectors are all null (or empty: no values, no width) and
    no ``dim``: the width cannot be inferred, every row is a dead letter, exit 1 with a
    report."""
    folder = tmp_path / "in"
    folder.mkdir()
    pq.write_table(pa.table({"id": pa.array([1, 2, 3], pa.int64()),
                             "embedding": pa.array(vectors, pa.list_(pa.float32()))}),
                   folder / "a.parquet")
    data = job(folder, str(tmp_path / "idx"), max_rejected_fraction=1.0,
               reject_zero_vectors=reject_zero)
    data["input"]["dim"] = None
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(data))
    assert main(["--config", str(config_file)]) == 1
    assert "no row was accepted" in capsys.readouterr().out
    [report_file] = (tmp_path / "idx").glob("runs/*/report.json")
    report = json.loads(report_file.read_text())
    assert report["dim"] is None
    assert report["counts"]["rows_read"] == 3 == report["counts"]["dead_letters"]
    dead = pq.read_table(report_file.parent / "dead_letters.parquet").to_pylist()
    details = {"null_vector": "the vector is null", "wrong_dimension":
               "got 0; no width is known (no row has a vector to take it from)"}
    assert dead == [{"id": str(i + 1), "source": f"file://{folder}/a.parquet", "row": i,
                     "reason": reason, "detail": details[reason]}
                    for i, reason in enumerate(reasons)]
    assert IndexStore(str(tmp_path / "idx")).versions() == []


def test_npy_input_with_an_ids_file_rejects_repeated_ids(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    x = sample_embeddings(400, DIM, seed=8)
    np.save(folder / "a.npy", x[:250])
    np.save(folder / "b.npy", x[250:])
    ids = np.arange(400, dtype=np.int64) * 10
    ids[300] = ids[20]   # b.npy row 50 repeats a.npy row 20
    np.save(tmp_path / "ids.npy", ids)
    data = job(folder, str(tmp_path / "idx"), max_rejected_fraction=0.01)
    data["input"].update(url=f"{folder}/*.npy", format="npy", ids_url=str(tmp_path / "ids.npy"),
                         batch_rows=64)
    data["encode"]["rows_per_shard"] = 128
    run_id, report = run_job(data)
    assert report["gate"]["passed"], report["gate"]
    dead = pq.read_table(tmp_path / "idx" / "runs" / run_id / "dead_letters.parquet").to_pylist()
    assert [(Path(d["source"]).name, d["row"], d["reason"], d["id"]) for d in dead] == [
        ("b.npy", 50, "duplicate_id", "200")]
    assert dead[0]["detail"].endswith("a.npy row 20")
    assert Index.open(str(tmp_path / "idx")).manifest.rows == 399


class _LossyFile:
    """Wraps a memory file; on close, stores it with one byte flipped (a storage fault)."""

    def __init__(self, inner):
        self._inner = inner

    def write(self, data):
        return self._inner.write(data)

    def close(self):
        buf = self._inner.getbuffer()
        if len(buf):
            buf[len(buf) // 2] ^= 0x01
        self._inner.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getattr__(self, name):
        return getattr(self._inner, name)


def test_a_storage_fault_in_a_shard_fails_the_run_and_publishes_nothing(tmp_path, capsys):
    """The job reads every shard back: an fsspec memory filesystem whose shard writes come back
    altered (a real filesystem with a fault, registered under its own protocol) fails the run
    with exit 2 and no version."""
    import fsspec
    from fsspec.implementations.memory import MemoryFileSystem

    class LossyMemory(MemoryFileSystem):
        protocol = ("lossymem",)
        store: ClassVar[dict] = {}  # its own store, apart from memory://
        pseudo_dirs: ClassVar[list] = [""]

        def _open(self, path, mode="rb", **kwargs):
            f = super()._open(path, mode, **kwargs)
            return _LossyFile(f) if "w" in mode and path.endswith(".semq") else f

    fsspec.register_implementation("lossymem", LossyMemory, clobber=True)
    folder = tmp_path / "in"
    write_sample_embeddings(str(folder), rows=600, dim=DIM, seed=2, files=1)
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(job(folder, "lossymem://idx")))
    assert main(["--config", str(config_file)]) == 2
    assert "the storage did not keep what was written" in capsys.readouterr().err
    assert IndexStore("lossymem://idx").versions() == []


def test_a_run_that_fails_before_its_gate_still_writes_its_report(tmp_path, capsys):
    """A data page that cannot be decoded (the footer is fine, so planning passes): exit 2
    naming the file, nothing published, and a report saying why (there was none)."""
    x = np.random.default_rng(4).standard_normal((300, 16)).astype(np.float32)
    path = tmp_path / "in" / "a.parquet"
    path.parent.mkdir()
    pq.write_table(pa.table({"id": pa.array(np.arange(300)), "embedding": pa.array(
        x.tolist(), pa.list_(pa.float32()))}), str(path), row_group_size=100)
    page = pq.ParquetFile(str(path)).metadata.row_group(2).column(1).data_page_offset
    with open(path, "r+b") as f:
        f.seek(page)
        f.write(b"\xff" * 64)
    data = {"name": "fails", "input": {"url": str(path), "dim": 16, "batch_rows": 100},
            "output": {"index_url": str(tmp_path / "idx")},
            "encode": {"codecs": ["semq4"], "rows_per_shard": 100},
            "validation": {"k": 5, "sample_queries": 16, "min_recall_at_k": 0.1,
                           "max_rejected_fraction": 0.0}}
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(data))
    assert main(["--config", str(config_file)]) == 2
    assert "a.parquet" in capsys.readouterr().err
    [report_file] = (tmp_path / "idx" / "runs").glob("*/report.json")
    report = json.loads(report_file.read_text())
    assert report["gate"]["passed"] is False and report["version"] is None
    assert "a.parquet" in report["gate"]["problems"][0]
    assert "NOT PUBLISHED" in report_file.with_suffix(".md").read_text()
    assert not (tmp_path / "idx" / "manifests").exists() or not any(
        (tmp_path / "idx" / "manifests").iterdir())
