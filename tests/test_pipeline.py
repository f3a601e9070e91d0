"""The ingestion pipeline end to end on local folders (pipelines.ingest on the pinned local
runner): publish and search, dead-letter reconciliation, the gate refusing to publish,
byte-identical reruns, and the command line in a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.ingest import build_pipeline, main
from semq_transforms.config import parse_config
from semq_transforms.eval import exact_knn, knn_intersection_measure
from semq_transforms.format.store import IndexStore
from semq_transforms.index import Index
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
        "validation": {"k": 10, "sample_queries": 64, "seed": 1, "min_recall_at_k": 0.9,
                       "max_rejected_fraction": 0.01, **validation},
    }


def run_job(data: dict) -> tuple[str, dict]:
    config = parse_config(data)
    pipeline = beam.Pipeline(options=direct_options())
    run_id = build_pipeline(pipeline, config)
    pipeline.run().wait_until_finish()
    store = IndexStore(config.output.index_url)
    with store.open_read(f"runs/{run_id}/report.json") as f:
        return run_id, json.loads(f.read())


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
    assert len(shards) == 4 and all(s["recall_at_k"] >= 0.8 for s in shards)
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
    assert counts["rows_read"] == counts["rows_planned"] == ROWS + 5
    assert counts["rows_read"] == counts["rows_encoded"] + dead.num_rows
    assert counts["dead_letters"] == counts["rows_rejected"] == 3
    index = Index.open(index_url)
    assert index.manifest.rows == ROWS + 2


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
    assert [p.name for p in first] == [p.name for p in second] and len(first) == 4
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes()


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
    assert Index.open(index_url).manifest.rows == 20_000
    report = json.loads(next(Path(index_url).glob("runs/*/report.json")).read_text())
    assert report["gate"]["passed"] and report["config"]["output"]["index_url"] == index_url
