"""The ``semq-index`` command line: every subcommand, --json output, exit codes 0 / 1 / 2
(141 on a closed pipe), query files, help texts, and a quiet stderr."""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from pyarrow import feather, ipc

from semq_transforms.build import build_index
from semq_transforms.cli import build_parser, main
from semq_transforms.index import Index
from tests.conftest import make_anisotropic

SUBCOMMANDS = ("versions", "inspect", "verify", "search", "restore", "diff", "tune")
CLI = [sys.executable, "-m", "semq_transforms.cli"]


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


def run_err(capsys, *argv: str) -> tuple[int, str]:
    """Exit code and stderr of a run (argparse's own usage errors included)."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    return code, capsys.readouterr().err


def test_versions_and_inspect(built, capsys):
    root, _ = built
    code, payload = run_json(capsys, "versions", str(root))
    assert code == 0 and [v["version"] for v in payload["versions"]] == [1, 2]
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
    # ids 100..399 were re-encoded from the same input: none changed (input fingerprints)
    assert payload["fingerprints"] is True and payload["note"] is None
    assert payload["changed"]["count"] == 0 and payload["unchanged"]["count"] == 300
    assert payload["drift"]["unchanged"]["rows"] == 300
    assert main(["diff", str(root), "--sample-queries", "20"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "version 1 -> 2: +200 added, -100 removed, 0 changed input, 300 unchanged"
    assert lines[1].startswith("drift of changed rows: mean 0, max 0; of unchanged rows: mean ")
    assert lines[2].startswith("neighbor overlap@10: ")


@pytest.mark.parametrize(("argv", "named"), [
    (["inspect", "{missing}"], "{missing}"),
    (["versions", "{missing}"], "{missing}"),
    (["verify", "{root}", "--version", "9"], "{root}"),
    (["search", "{root}", "--queries", "{missing}"], "{missing}"),
    (["search", "{missing}", "--queries", "{npy}"], "{missing}"),
    (["search", "{root}", "--queries", "{bad}"], "{bad}"),
    (["search", "{root}", "--queries", "{root}"], "{root}"),
    (["restore", "{missing}", "--out", "{tmp}/out.parquet"], "{missing}"),
    (["restore", "{root}", "--out", "{npy}/out.parquet"], "{npy}"),
    (["diff", "{missing}"], "{missing}"),
    (["inspect", "{root}", "--storage-options", "not json"], "--storage-options"),
])
def test_could_not_run_exits_2_naming_the_url(built, tmp_path, capsys, argv, named):
    root, x = built
    np.save(tmp_path / "q.npy", x[:2])
    (tmp_path / "bad.parquet").write_bytes(b"not parquet at all")
    paths = {"root": root, "missing": tmp_path / "missing", "npy": tmp_path / "q.npy",
             "bad": tmp_path / "bad.parquet", "tmp": tmp_path}
    code, err = run_err(capsys, *(a.format(**paths) for a in argv))
    assert code == 2 and err.startswith("semq-index: error:")
    assert named.format(**paths) in err and "Traceback" not in err


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
    assert proc.returncode == 0 and proc.stderr == ""
    assert [line.split()[0] for line in proc.stdout.splitlines()[1:]] == ["1", "2"]


# -- search: query files and query ids ---------------------------------------------------------

def _search_ids(capsys, root, *argv: str) -> list[list]:
    code, payload = run_json(capsys, "search", str(root), *argv, "-k", "3")
    assert code == 0, argv
    return [[r["id"] for r in row] for row in payload["results"]]


def test_search_reads_parquet_arrow_and_feather_queries(built, tmp_path, capsys):
    root, x = built
    np.save(tmp_path / "q.npy", x[[150, 599]])
    expected = _search_ids(capsys, root, "--queries", str(tmp_path / "q.npy"))
    assert [row[0] for row in expected] == [150, 599]
    fixed = pa.table({"id": [150, 599],
                      "emb": pa.array(list(x[[150, 599]]), pa.list_(pa.float32(), 24))})
    pq.write_table(fixed, tmp_path / "q.parquet")
    with ipc.new_file(tmp_path / "q.arrow", fixed.schema) as writer:
        writer.write_table(fixed)
    variable = pa.table({"vec": pa.array(x[[150, 599]].astype(np.float64).tolist(),
                                         pa.list_(pa.float64())), "note": ["a", "b"]})
    feather.write_feather(variable, tmp_path / "q.feather")
    for name in ("q.parquet", "q.arrow", "q.feather"):
        assert _search_ids(capsys, root, "--queries", str(tmp_path / name)) == expected, name


def test_search_picks_the_query_column(built, tmp_path, capsys):
    root, x = built
    table = pa.table({"a": pa.array(list(x[[150, 599]]), pa.list_(pa.float32(), 24)),
                      "b": pa.array(list(x[[300, 301]]), pa.list_(pa.float32())),
                      "label": ["p", "q"]})
    path = tmp_path / "two.parquet"
    pq.write_table(table, path)
    code, err = run_err(capsys, "search", str(root), "--queries", str(path))
    assert code == 2 and str(path) in err and "--query-column" in err
    assert "a (fixed_size_list" in err and "b (list" in err and "label (string)" in err
    assert [r[0] for r in _search_ids(capsys, root, "--queries", str(path),
                                      "--query-column", "b")] == [300, 301]
    code, err = run_err(capsys, "search", str(root), "--queries", str(path),
                        "--query-column", "label")
    assert code == 2 and "no list-of-float column 'label'" in err
    pq.write_table(pa.table({"x": [1.0, 2.0]}), tmp_path / "flat.parquet")
    code, err = run_err(capsys, "search", str(root), "--queries", str(tmp_path / "flat.parquet"))
    assert code == 2 and "no list-of-float column" in err and "x (double)" in err


def test_search_never_unpickles_queries(built, tmp_path, capsys):
    root, _ = built
    marker = tmp_path / "unpickled"
    payload = (b"cos\nsystem\n(S'touch " + str(marker).encode() + b"'\ntR.")
    for name in ("q.npy", "q.parquet"):
        (tmp_path / name).write_bytes(payload)
        code, err = run_err(capsys, "search", str(root), "--queries", str(tmp_path / name))
        assert code == 2 and str(tmp_path / name) in err
    np.save(tmp_path / "objects.npy", np.array([[1.0, "x"]], dtype=object), allow_pickle=True)
    code, err = run_err(capsys, "search", str(root), "--queries", str(tmp_path / "objects.npy"))
    assert code == 2 and "objects.npy" in err
    assert not marker.exists()


def test_search_with_the_vectors_of_ids(built, tmp_path, capsys):
    root, _ = built
    code, payload = run_json(capsys, "search", str(root), "--query-ids", "150,599", "-k", "3")
    assert code == 0 and payload["queries"] == [150, 599]
    assert [row[0]["id"] for row in payload["results"]] == [150, 599]
    assert _search_ids(capsys, root, "--query-ids", "150", "--query-ids", "599") == [
        [r["id"] for r in row] for row in payload["results"]]
    code, err = run_err(capsys, "search", str(root), "--query-ids", "5,150,99999,abc")
    assert code == 2 and "5, 99999, 'abc'" in err and str(root) in err and "150" not in err
    strings = tmp_path / "strings"
    x = make_anisotropic(300, 16, seed=4)
    build_index(str(strings), x, ids=[f"doc-{i}" for i in range(300)], codecs=["semq4"],
                rows_per_shard=100)
    code, payload = run_json(capsys, "search", str(strings), "--query-ids", "doc-7,doc-250")
    assert code == 0 and [row[0]["id"] for row in payload["results"]] == ["doc-7", "doc-250"]
    code, err = run_err(capsys, "search", str(strings), "--query-ids", "7,doc-1000")
    assert code == 2 and "'7', 'doc-1000'" in err


@pytest.mark.parametrize("argv", [[], ["--queries", "q.npy", "--query-ids", "1"],
                                  ["--query-ids", "1", "--query-column", "v"]])
def test_search_takes_exactly_one_source_of_queries(built, capsys, argv):
    root, _ = built
    code, err = run_err(capsys, "search", str(root), *argv)
    assert code == 2 and ("--queries" in err or "--query-ids" in err)


# -- versions ----------------------------------------------------------------------------------

def test_versions_shows_date_rows_shards_run_and_recall(built, capsys):
    root, _ = built
    code, payload = run_json(capsys, "versions", str(root))
    assert code == 0
    manifests = [Index.open(str(root), v).manifest for v in (1, 2)]
    assert payload["versions"] == [
        {"version": m.version, "created_at": m.created_at, "rows": m.rows,
         "shards": len(m.shards), "run_id": m.run_id, "recall_at_k": None, "k": None}
        for m in manifests]
    assert main(["versions", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["version", "created", "rows", "shards", "run", "recall@k"]
    assert [line.split() for line in lines[1:]] == [
        [str(m.version), m.created_at[:19] + "Z", str(m.rows), str(len(m.shards)), m.run_id, "-"]
        for m in manifests]
    # aligned: every column starts where its header does
    starts = [lines[0].index(h) for h in ("created", "run", "recall@k")]
    assert all(line[s - 1] == " " and line[s] != " " for line in lines[1:] for s in starts)


def test_versions_lists_an_unreadable_manifest_and_exits_1(built, capsys):
    root, _ = built
    manifest = root / "manifests" / "v00000001.manifest.arrow"
    data = bytearray(manifest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    manifest.write_bytes(bytes(data))
    code, payload = run_json(capsys, "versions", str(root))
    assert code == 1 and str(manifest.name) in payload["versions"][0]["error"]
    assert payload["versions"][1]["rows"] == 500
    assert main(["versions", str(root)]) == 1
    assert "1  unreadable: " in capsys.readouterr().out


@pytest.mark.parametrize("layout", ["missing", "empty folder", "empty manifests"])
def test_versions_of_no_index_exits_2(tmp_path, capsys, layout):
    url = tmp_path / "index"
    if layout != "missing":
        url.mkdir()
    if layout == "empty manifests":
        (url / "manifests").mkdir()
    code, err = run_err(capsys, "versions", str(url))
    assert code == 2 and f"no index at {url}" in err


@pytest.fixture(scope="module")
def published(tmp_path_factory) -> tuple[Path, dict, np.ndarray]:
    """An index published by the ingestion job from Parquet columns doc_id / emb: its root,
    its run report and the input ids."""
    import apache_beam as beam

    from pipelines.ingest import build_pipeline
    from semq_transforms.config import parse_config
    from semq_transforms.transforms import direct_options

    folder = tmp_path_factory.mktemp("published")
    x, ids = make_anisotropic(600, 16, seed=5), np.arange(600, dtype=np.int64) * 10 + 7
    pq.write_table(pa.table({"doc_id": ids, "emb": pa.array(list(x), pa.list_(pa.float32(), 16))}),
                   folder / "in.parquet", row_group_size=300)
    config = parse_config({
        "name": "cli-test", "output": {"index_url": str(folder / "index")},
        "input": {"url": str(folder / "in.parquet"), "vector_column": "emb",
                  "id_column": "doc_id"},
        "encode": {"codecs": ["semq4"], "rows_per_shard": 300},
        "validation": {"k": 5, "sample_queries": 32, "min_recall_at_k": 0.01,
                       "max_rejected_fraction": 0.0, "min_compression_ratio": 0}})
    pipeline = beam.Pipeline(options=direct_options())
    run_id = build_pipeline(pipeline, config)
    pipeline.run().wait_until_finish()
    report = json.loads((folder / "index" / "runs" / run_id / "report.json").read_text())
    return folder / "index", report, ids


def test_versions_shows_the_recall_of_the_run_report(published, capsys):
    root, report, _ = published
    recall = report["validation"]["recall_at_k"]
    code, payload = run_json(capsys, "versions", str(root))
    assert code == 0 and payload["versions"][0]["recall_at_k"] == recall
    assert payload["versions"][0]["k"] == 5 and payload["versions"][0]["run_id"] == report[
        "run_id"]
    assert main(["versions", str(root)]) == 0
    assert capsys.readouterr().out.splitlines()[1].endswith(f"{recall:.4f} (k=5)")


# -- restore -----------------------------------------------------------------------------------

def test_restore_keeps_the_input_column_names(published, tmp_path, capsys):
    root, _, ids = published
    dest = tmp_path / "restored.parquet"
    code, payload = run_json(capsys, "restore", str(root), "--out", str(dest))
    assert code == 0 and (payload["id_column"], payload["vector_column"]) == ("doc_id", "emb")
    table = pq.read_table(dest)
    assert table.column_names == ["doc_id", "emb"]
    assert sorted(table.column("doc_id").to_pylist()) == ids.tolist()


def test_restore_column_names_default_and_options(built, tmp_path, capsys):
    root, _ = built
    assert main(["restore", str(root), "--out", str(tmp_path / "a.parquet")]) == 0
    assert pq.read_schema(tmp_path / "a.parquet").names == ["id", "embedding"]
    assert main(["restore", str(root), "--out", str(tmp_path / "b.parquet"), "--id-column",
                 "key", "--vector-column", "vec"]) == 0
    assert pq.read_schema(tmp_path / "b.parquet").names == ["key", "vec"]
    code, err = run_err(capsys, "restore", str(root), "--out", str(tmp_path / "c.parquet"),
                        "--vector-column", "id")
    assert code == 2 and "two different" in err and not (tmp_path / "c.parquet").exists()


def test_restore_writes_row_groups_that_reingest_without_rereads(tmp_path, capsys):
    from semq_transforms.transforms.planning import decoded_rows, plan_runs, plan_shards
    from semq_transforms.transforms.sources import plan_splits

    root, dest = tmp_path / "index", tmp_path / "restored.parquet"
    build_index(str(root), make_anisotropic(2500, 16, seed=6), codecs=["semq4"],
                rows_per_shard=700)
    assert main(["restore", str(root), "--out", str(dest)]) == 0
    meta = pq.ParquetFile(dest).metadata
    assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [1000, 1000, 500]
    splits = plan_splits([str(dest)], vector_column="embedding", id_column="id")
    for rows_per_shard in (1000, 2000):
        runs = plan_runs(plan_shards(splits, rows_per_shard))
        assert sum(decoded_rows(run) for run in runs) == 2500


# -- help --------------------------------------------------------------------------------------

def _parsers() -> list[argparse.ArgumentParser]:
    parser = build_parser()
    subparsers = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return [parser, *subparsers.choices.values()]


def test_every_option_of_every_command_has_help():
    missing = [(p.prog, a.dest) for p in _parsers() for a in p._actions
               if not isinstance(a, argparse._HelpAction) and not (a.help or "").strip()]
    assert missing == []
    assert {p.prog.split()[-1] for p in _parsers()[1:]} == set(SUBCOMMANDS)


def test_help_has_no_sphinx_markup():
    for parser in _parsers():
        text = parser.format_help()
        assert not re.search(r"``|:(class|meth|func|data|mod|attr|exc):", text), parser.prog


# -- pipes and stderr --------------------------------------------------------------------------

def test_a_pipe_closed_before_the_output_exits_quietly(built):
    root, _ = built
    read_end, write_end = os.pipe()
    proc = subprocess.Popen([*CLI, "diff", str(root), "--json", "--sample-queries", "5"],
                            stdout=write_end, stderr=subprocess.PIPE, text=True)
    os.close(write_end)
    os.close(read_end)                # the reader is gone before the command writes
    _, err = proc.communicate(timeout=120)
    assert (proc.returncode, err) == (141, "")


def test_a_pipe_closed_mid_output_exits_quietly(built, tmp_path):
    root, x = built
    np.save(tmp_path / "many.npy", np.tile(x[:50], (40, 1)))       # ~250 KB of text out
    proc = subprocess.Popen([*CLI, "search", str(root), "--queries", str(tmp_path / "many.npy")],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().startswith(b"query 0: ")          # | head -1
    proc.stdout.close()
    err = proc.stderr.read().decode()
    assert (proc.wait(timeout=120), err) == (141, "")


def test_commands_print_nothing_on_stderr_and_import_no_beam(built, tmp_path):
    root, x = built
    np.save(tmp_path / "q.npy", x[:3])
    commands = [["versions", str(root)], ["inspect", str(root)], ["verify", str(root)],
                ["search", str(root), "--queries", str(tmp_path / "q.npy")],
                ["search", str(root), "--query-ids", "150"],
                ["restore", str(root), "--out", str(tmp_path / "out.parquet")],
                ["diff", str(root), "--sample-queries", "5"]]
    for argv in commands:
        proc = subprocess.run([*CLI, *argv], capture_output=True, text=True, timeout=120,
                              check=False)
        assert (proc.returncode, proc.stderr) == (0, ""), argv
        assert proc.stdout.strip(), argv
    script = ("import sys, semq_transforms.cli as cli\n"
              f"for argv in {commands!r}:\n    assert cli.main(argv) == 0\n"
              "print([m for m in sys.modules if m.startswith('apache_beam')], file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, check=False)
    assert (proc.returncode, proc.stderr) == (0, "[]\n")
