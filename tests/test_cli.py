"""The ``semq-index`` command line: every subcommand, --json output, exit codes 0 / 1 / 2."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

from semq_transforms.build import build_index
from semq_transforms.cli import main
from tests.conftest import make_anisotropic

SUBCOMMANDS = ("versions", "inspect", "verify", "search", "restore", "diff")


@pytest.fixture()
def built(tmp_path):
    root = tmp_path / "index"
    x = make_anisotropic(600, 24, seed=3)
    build_index(str(root), x[:400], codecs=["semq1", "semq4"], rows_per_shard=200, run_id="a")
    build_index(str(root), x[100:600], ids=np.arange(100, 600), codecs=["semq1", "semq4"],
                rows_per_shard=200, run_id="b")
    return root, x


def run_json(capsys, *argv: str) -> tuple[int, dict]:
    code = main([*argv, "--json"])
    out = capsys.readouterr().out
    return code, json.loads(out)


def test_versions_and_inspect(built, capsys):
    root, _ = built
    code, payload = run_json(capsys, "versions", str(root))
    assert code == 0 and payload["versions"] == [1, 2]
    code, payload = run_json(capsys, "inspect", str(root), "--version", "1")
    assert code == 0 and payload["rows"] == 400 and payload["codecs"] == ["semq1", "semq4"]
    assert [s["rows"] for s in payload["shards"]] == [200, 200]
    assert main(["inspect", str(root)]) == 0
    assert "version 2: 500 rows" in capsys.readouterr().out


def test_verify_exit_codes(built, capsys):
    root, _ = built
    code, payload = run_json(capsys, "verify", str(root))
    assert code == 0 and payload["ok"] and payload["shards_checked"] == 3
    shard = next((root / "runs" / "b").glob("*.semq"))
    data = bytearray(shard.read_bytes())
    data[-100] ^= 0x01
    shard.write_bytes(bytes(data))
    code, payload = run_json(capsys, "verify", str(root))
    assert code == 1 and not payload["ok"]
    assert payload["problems"][0]["path"].endswith(shard.name)


def test_search(built, tmp_path, capsys):
    root, x = built
    queries = tmp_path / "q.npy"
    np.save(queries, x[[150, 599]])
    code, payload = run_json(capsys, "search", str(root), "--queries", str(queries), "-k", "3")
    assert code == 0 and payload["version"] == 2
    assert [row[0]["id"] for row in payload["results"]] == [150, 599]
    assert all(len(row) == 3 for row in payload["results"])
    code, exact = run_json(capsys, "search", str(root), "--queries", str(queries), "-k", "3",
                           "--deterministic")
    assert code == 0 and [[r["id"] for r in row] for row in exact["results"]] == [
        [r["id"] for r in row] for row in payload["results"]]


def test_restore_to_parquet(built, tmp_path, capsys):
    root, _ = built
    dest = tmp_path / "out.parquet"
    code, payload = run_json(capsys, "restore", str(root), "--version", "1", "--out", str(dest))
    assert code == 0 and payload["rows"] == 400
    assert pq.read_table(dest).num_rows == 400


def test_diff_defaults_to_the_last_two_versions(built, capsys):
    root, _ = built
    code, payload = run_json(capsys, "diff", str(root), "--sample-queries", "20")
    assert code == 0
    assert payload["base_version"] == 1 and payload["other_version"] == 2
    assert payload["removed"]["count"] == 100 and payload["added"]["count"] == 200


@pytest.mark.parametrize("argv", [
    ["inspect", "{missing}"],
    ["verify", "{root}", "--version", "9"],
    ["search", "{root}", "--queries", "{missing}"],
    ["diff", "{missing}"],
    ["inspect", "{root}", "--storage-options", "not json"],
])
def test_could_not_run_exits_2(built, tmp_path, capsys, argv):
    root, _ = built
    args = [a.format(root=root, missing=tmp_path / "missing") for a in argv]
    with pytest.raises(SystemExit) as info:
        raise SystemExit(main(args))
    assert info.value.code == 2
    assert "semq-index: error:" in capsys.readouterr().err


@pytest.mark.parametrize("command", SUBCOMMANDS)
def test_help_for_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as info:
        main([command, "--help"])
    assert info.value.code == 0
    assert "--json" in capsys.readouterr().out


def test_console_script_is_installed_or_module_runs(built):
    root, _ = built
    proc = subprocess.run([sys.executable, "-m", "semq_transforms.cli", "versions", str(root)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0 and proc.stdout.split() == ["1", "2"]
