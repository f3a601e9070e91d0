"""The codec benchmark script runs end to end (on small synthetic data) and writes its JSON,
so it cannot rot unnoticed between benchmark runs."""

from __future__ import annotations

import json

from tests.conftest import run_benchmark, write_tiny_embeddings


def test_benchmark_runs_and_reports(tmp_path):
    data = write_tiny_embeddings(tmp_path / "tiny.npz")
    out = tmp_path / "result.json"
    proc = run_benchmark("codecs.py", "--data", str(data), "--out",
                         str(out), "--codecs", "semq2,int8", "--no-lr", "--repeat", "1")
    assert proc.returncode == 0, proc.stderr
    assert "| semq2 |" in proc.stdout and "## targets" in proc.stdout
    report = json.loads(out.read_text())
    rows = {r["codec"]: r for r in report["codecs"]}
    assert set(rows) == {"semq2", "int8"}
    for r in rows.values():
        assert 0.5 < r["recall_at_10"] <= 1.0
        assert r["encode_mb_s"] > 0
    assert abs(rows["semq2"]["bits_per_dim"] - (2 + 64 / 32)) < 1e-9  # 8 side bytes at d=32


def test_benchmark_without_data_exits_2(tmp_path):
    proc = run_benchmark("codecs.py", "--data", tmp_path / "missing.npz",
                         "--out", tmp_path / "r.json", timeout=120)
    assert proc.returncode == 2 and "not found" in proc.stderr


def test_multilevel_experiments_run_and_report(tmp_path):
    data = write_tiny_embeddings(tmp_path / "tiny.npz")
    out = tmp_path / "multilevel.json"
    proc = run_benchmark("multilevel_experiments.py", "--data", str(data),
                         "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    report = json.loads(out.read_text())
    assert report["bits_per_dim"] <= 5.34
    for row in report["results"].values():
        assert 0.3 < row["rerank_100"] <= 1.0 and 0.0 < row["scan_alone"] <= 1.0


def test_pipeline_benchmark_runs_and_reports(tmp_path):
    """Three small sizes on one runner, the job variants and the input layouts: the tables,
    the checks and the JSON come out."""
    out = tmp_path / "pipeline.json"
    proc = run_benchmark("pipeline.py", "--rows", "2000", "4000", "8000", "--dim", "64",
                         "--runners", "in_memory:1", "--repeat", "1",
                         "--workdir", tmp_path / "work", "--out", out, "--variants", "--layouts",
                         timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| in_memory:1 | 8,000 |" in proc.stdout and "least squares" in proc.stdout
    report = json.loads(out.read_text())
    assert [r["rows"] for r in report["results"]] == [2000, 4000, 8000]
    everything = report["results"] + report["variants"] + report["layouts"]
    for r in report["results"]:
        assert r["pipeline_s"] > 0 and r["bare_read_s"] > 0 and r["pipeline_peak_rss"] > 0
        # the baseline of a size: the fastest bare read of that input in the whole run
        assert len(r["bare_read_runs_s"]) == 1 and r["bare_read_s"] == min(
            b for o in everything if (o["rows"], o["row_group_rows"]) == (r["rows"], 65_536)
            for b in o["bare_read_runs_s"])
        assert r["ratio"] == r["pipeline_s"] / r["bare_read_s"]
        assert 0.5 < r["recall_at_10"] <= 1.0
    assert report["linear_fits"]["in_memory:1"] is not None
    assert len(report["checks"]) == 3
    assert "What the ratio target would take" in proc.stdout
    variants = report["variants"]
    assert [v["sample_queries"] for v in variants] == [256, 64, 1, 256, 256, 1]
    assert [v["codecs"] for v in variants][3:] == [["semq4"], ["int8"], ["semq1"]]
    for v in variants:
        assert v["rows"] == 8000 and v["ratio"] == v["pipeline_s"] / v["bare_read_s"]
        assert v["bare_read_s"] == report["results"][-1]["bare_read_s"]
    # the layouts: the run above, then pyarrow's default row groups against their own read
    assert "Input layouts" in proc.stdout
    tuned, default = report["layouts"]
    assert tuned["pipeline_s"] == report["results"][-1]["pipeline_s"]
    assert (default["row_group_rows"], default["rows_per_shard"]) == (1 << 20, 100_000)
    assert default["rows"] == 8000 and default["bare_read_s"] == min(
        default["bare_read_runs_s"]) and default["bytes_read"] >= default["input_bytes"] / 2


def test_fit_encode_benchmark_runs_and_reports(tmp_path):
    out = tmp_path / "fit_encode.json"
    proc = run_benchmark("fit_encode.py", "--quick", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "| 64 | 2000 | semq4 |" in proc.stdout
    (result,) = json.loads(out.read_text())["results"]
    assert set(result["codecs"]) == {"semq1", "semq4", "semq8", "int8"}
    assert all(m["fit_s"] > 0 and m["encode_mb_s"] > 0 for m in result["codecs"].values())
    assert set(result["chains"]) == {"semq1+semq4", "semq1+semqr4"}


def test_level_shapes_experiment_runs_and_reports(tmp_path):
    out = tmp_path / "level_shapes.json"
    proc = run_benchmark("level_shapes.py", "--quick", "--datasets",
                         "gaussian", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "| gaussian | 4 |" in proc.stdout
    results = json.loads(out.read_text())["results"]
    assert set(results) == {"gaussian/semq2", "gaussian/semq4"}
    assert all(0 < v <= 1 for r in results.values() for v in r.values())


def test_shard_bytes_benchmark_splits_each_shard(tmp_path):
    out = tmp_path / "shard_bytes.json"
    proc = run_benchmark("shard_bytes.py", "--dims", "32",
                         "--rows", "300,3000", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "| 32 | 3,000 |" in proc.stdout
    small, large = json.loads(out.read_text())["results"]
    for r in (small, large):
        assert sum(r["codes"]) + r["params"] + r["ids"] + r["other"] == r["file_bytes"]
        assert r["compression"] == r["rows"] * 32 * 4 / r["file_bytes"]
    # params are a fixed cost per shard: their share falls as the shard grows
    assert large["params_share"] < small["params_share"]


def test_basis_precision_experiment_runs_and_reports(tmp_path):
    out = tmp_path / "basis_precision.json"
    proc = run_benchmark("basis_precision.py", "--datasets", "token",
                         "--rows", "1500", "--bits", "6", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "| token | f16 |" in proc.stdout and "| token | 6 |" in proc.stdout
    half, six = json.loads(out.read_text())["results"]
    assert (half["bits"], six["bits"]) == ("float16", 6)
    # a 6-bit basis loses semq8 recall and restore accuracy that float16 keeps
    assert six["semq8"]["recall"] < half["semq8"]["recall"] <= 1
    assert six["semq8"]["cosine"] < half["semq8"]["cosine"] <= 1


def test_pipeline_benchmark_times_the_pcollection_sink(tmp_path):
    out = tmp_path / "pipeline.json"
    proc = run_benchmark("pipeline.py", "--rows", "3000", "--dim", "32",
                         "--runners", "in_memory:1", "--repeat", "1",
                         "--workdir", tmp_path / "work", "--out", str(out), "--sink", timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "The PCollection sink" in proc.stdout and "| in_memory:1 | 3,000 |" in proc.stdout
    [result] = json.loads(out.read_text())["results"]
    assert result["sink_s"] > 0 and result["sink_peak_rss"] > 0
    # the sink wrote an index of every row (the driver checks the count; the index reads)
    from semq_transforms.index import Index
    assert Index.open(str(tmp_path / "work" / "sink-3000x32")).rows == 3000
