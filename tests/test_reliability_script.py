"""The reliability script runs end to end (few trials, local and in-memory stores) and
reports no bad outcome, so it cannot rot between runs of its full version."""

from __future__ import annotations

import json

from tests.conftest import run_benchmark


def test_reliability_script_runs_and_counts(tmp_path):
    out = tmp_path / "reliability.json"
    proc = run_benchmark("reliability.py", "--trials", "40",
                         "--stores", "local,memory", "--out", str(out), timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "PASS: 0 bad outcome(s)" in proc.stdout
    results = json.loads(out.read_text())["results"]
    assert sum(results["corruption"]["outcomes"].values()) == 40
    assert results["corruption"]["bad"] == 0
    assert {r["store"]: r["one_winner_rounds"] for r in results["publishers"]} == {
        "local": 2, "memory": 2}
    forged = {r["forgery"]: r["outcome"] for r in results["forgery"]}
    assert all(outcome.startswith("refused") for name, outcome in forged.items()
               if name.startswith("shard path") or "signed" in name)
    assert forged["a shard dropped"] == "accepted, verify ok"      # without a key
    assert results["kills"]["trials"] == 2 and results["kills"]["bad"] == 0
