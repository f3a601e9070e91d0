"""The search benchmark script runs end to end (on small synthetic data) and writes its JSON,
so it cannot rot unnoticed between benchmark runs. faiss is not needed: only semq configs
are selected."""

from __future__ import annotations

import json

from tests.conftest import run_benchmark, write_tiny_embeddings


def test_search_benchmark_runs_and_reports(tmp_path):
    data = write_tiny_embeddings(tmp_path / "tiny.npz")
    out = tmp_path / "search.json"
    proc = run_benchmark("search.py", "--data", data, "--out", out, "--configs",
                         "semq2,semq1+semq4", "--repeat", "1", "--shards", "2")
    assert proc.returncode == 0, proc.stderr
    assert "| config | levels | bits/dim | recall@10 | QPS | notes |" in proc.stdout
    assert "| semq1+semq4 | semq1 + semq4 |" in proc.stdout
    assert "multi-level recall@10 >= 0.995 with <= 5.34 bits/dim" in proc.stdout
    report = json.loads(out.read_text())
    rows = {r["config"]: r for r in report["rows"]}
    assert set(rows) == {"semq2", "semq1+semq4"}
    for r in rows.values():
        assert 0 < r["recall_at_10"] <= 1 and r["bits_per_dim"] > 0 and r["qps"] > 0
        assert r["shards"] == 2
    assert [s["rerank"] for s in rows["semq1+semq4"]["rerank_sweep"]] == [20, 50, 100, 200]
    assert rows["semq1+semq4"]["bits_per_dim"] > rows["semq2"]["bits_per_dim"]
    assert [c["config"] for c in report["targets"]["checks"]] == ["semq1+semq4"]


def test_search_benchmark_rejects_unknown_config(tmp_path):
    proc = run_benchmark("search.py", "--configs", "semq2+nope",
                         "--out", str(tmp_path / "r.json"), timeout=120)
    assert proc.returncode == 2 and "unknown config" in proc.stderr
