"""The run report: the byte split of the published shards (codes per level, params, ids,
input fingerprints, other; bits/dim), the wall time, report.md (human-readable sizes, zero counters left out,
pooled vs per-shard recall), the SVG plot beside it, and the job's summary lines."""

from __future__ import annotations

import base64
import copy
import io
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from pipelines.ingest import main
from semq_transforms.config import parse_config
from semq_transforms.format.fingerprint import row_fingerprints
from semq_transforms.format.layout import shard_bytes
from semq_transforms.format.shard import write_shard
from semq_transforms.format.store import IndexStore
from semq_transforms.levels import encode_levels
from semq_transforms.report import human_bytes, human_count, human_seconds, report_markdown
from semq_transforms.report.figures import byte_split
from semq_transforms.report.markdown import pooled_recall_note
from semq_transforms.report.plot import report_svg
from semq_transforms.sample_data import sample_embeddings, write_sample_embeddings
from semq_transforms.transforms import direct_options
from semq_transforms.transforms.publish import failure_report

SVG = "{http://www.w3.org/2000/svg}"
ROWS, DIM = 3000, 32


# -- units -----------------------------------------------------------------------------------


def test_human_units():
    assert [human_bytes(n) for n in (0, 1023, 1024, 1536, 10_239, 13_002_342, 1.5 * 2**30)] \
        == ["0 B", "1023 B", "1.00 KiB", "1.50 KiB", "10.0 KiB", "12.4 MiB", "1.50 GiB"]
    assert human_bytes(1024**2 - 1) == "1.00 MiB"          # not "1024 KiB"
    assert [human_seconds(s) for s in (0.42, 12.34, 245, 7380)] \
        == ["0.42 s", "12.3 s", "4 min 05 s", "2 h 03 min"]
    assert human_count(20000) == "20,000" and human_count(3845.6) == "3,846"


# -- the byte split of a shard file ------------------------------------------------------------


@pytest.mark.parametrize("with_fp", [True, False], ids=["fingerprints", "no-fingerprints"])
@pytest.mark.parametrize("ids", [np.arange(700) * 3, [f"doc-{i:05d}-é" for i in range(700)]],
                         ids=["int64", "string"])
def test_shard_bytes_split_the_written_file(ids, with_fp):
    """Codes, params, ids, input fingerprints (a part of their own, 8 bytes a row) and other
    add up to the file; the levels' params (base64 in record batch 0's metadata) are in the
    file exactly once; what is left (header fields, Arrow metadata, footer, padding) is
    small."""
    x = sample_embeddings(700, DIM, seed=1)
    levels = encode_levels(x, ["semq2", "semq8"])
    fp = row_fingerprints(x) if with_fp else None
    buf = io.BytesIO()
    meta = write_shard(buf, ids=ids, levels=levels, path="runs/r/shard-00000.semq",
                       fingerprints=fp)
    data = buf.getvalue()
    split = shard_bytes(meta, ids, levels, fp)
    assert split.fingerprints == (8 * 700 if with_fp else 0)
    assert split.path == meta.path and split.file_bytes == meta.file_bytes == len(data)
    assert split.codes == tuple(700 * lv.code_bytes for lv in meta.levels)
    _, metadata = pa.ipc.open_file(data).get_batch_with_custom_metadata(0)
    stored = metadata[b"semq.params"]
    assert data.count(stored) == 1 and split.params == len(stored)
    # semq8's params whole, semq2's basis as columns of semq8's: less than both whole
    assert data.count(base64.b64encode(levels[1].params.to_bytes())) == 1
    assert split.params < sum(len(base64.b64encode(lv.params.to_bytes())) for lv in levels)
    utf8 = sum(len(str(i).encode()) for i in ids)
    assert split.ids == (8 * 700 if meta.id_type == "int64" else utf8 + 4 * 701)
    assert 0 < split.other < 4096


# -- the job's report, end to end ----------------------------------------------------------------


def job(input_dir: Path, index_url: str) -> dict:
    return {
        "name": "report-job",
        "input": {"url": f"{input_dir}/*.parquet", "dim": DIM, "batch_rows": 500},
        "output": {"index_url": index_url, "run_id": "same-run"},
        "encode": {"codecs": ["semq2", "semq8"], "rows_per_shard": 1000},
        "validation": {"k": 10, "sample_queries": 64, "seed": 1, "min_recall_at_k": 0.9,
                       "max_rejected_fraction": 0.01},
    }


@pytest.fixture(scope="module")
def input_dir(tmp_path_factory) -> Path:
    """3000 rows in 3 files, and a file of 2 rows, one of them not finite (one reason
    counts a row, the others none)."""
    folder = tmp_path_factory.mktemp("input")
    write_sample_embeddings(str(folder), rows=ROWS, dim=DIM, seed=3, files=3)
    vectors = [[0.1] * DIM, [float("nan")] * DIM]
    pq.write_table(pa.table({"id": pa.array([10**6, 10**6 + 1], pa.int64()),
                             "embedding": pa.array(vectors, pa.list_(pa.float32()))}),
                   folder / "part-00003.parquet")
    return folder


def run(data: dict, *, earlier: float = 0.0) -> Path:
    """Run the job (its start moved ``earlier`` seconds back); returns its run folder."""
    transform = parse_config(data).create_transform()
    transform.started_at -= earlier
    with beam.Pipeline(options=direct_options()) as pipeline:
        _ = pipeline | "Ingest" >> transform
    return Path(data["output"]["index_url"]) / "runs" / transform.run_id


@pytest.fixture(scope="module")
def runs(input_dir, tmp_path_factory) -> list[tuple[Path, dict]]:
    """The same job into two indexes, the second started (it says) 1000 s earlier."""
    out = []
    for name, earlier in (("a", 0.0), ("b", 1000.0)):
        folder = run(job(input_dir, str(tmp_path_factory.mktemp(name) / "idx")),
                     earlier=earlier)
        out.append((folder, json.loads((folder / "report.json").read_text())))
    return out


def test_the_report_splits_the_published_bytes(runs):
    folder, report = runs[0]
    b, shards = report["bytes"], report["validation"]["shards"]
    assert report["gate"]["passed"] and len(shards) == 3   # 3,002 rows: 1,000, 1,000, 1,002
    files = {p.name: p.stat().st_size for p in folder.glob("*.semq")}
    assert b["out"] == sum(files.values())
    assert [(lv["codec"], lv["bits_per_dim"]) for lv in b["levels"]] == [
        (lv["codec"], lv["code_bytes_per_row"] * 8 / DIM) for lv in b["levels"]]
    assert [lv["codec"] for lv in b["levels"]] == ["semq2", "semq8"]
    rows = report["counts"]["rows_encoded"]
    assert [lv["codes"] for lv in b["levels"]] == [rows * lv["code_bytes_per_row"]
                                                  for lv in b["levels"]]
    assert sum(lv["codes"] for lv in b["levels"]) + b["params"] + b["ids"] \
        + b["fingerprints"] + b["other"] == b["out"]
    assert b["ids"] == b["fingerprints"] == 8 * rows and b["params"] > 0 and b["other"] > 0
    assert b["bits_per_dim"] == pytest.approx(b["out"] * 8 / (rows * DIM))
    for shard in shards:
        parts = shard["bytes"]
        assert sum(parts["codes"]) + parts["params"] + parts["ids"] + parts["fingerprints"] \
            + parts["other"] == shard["file_bytes"] == files[Path(shard["path"]).name]
        assert shard["compression_ratio"] == pytest.approx(
            shard["rows"] * DIM * 4 / shard["file_bytes"])


def test_time_is_in_the_report_only(runs):
    """The run's wall time and rows/s are reported; a run that started 1000 s earlier
    writes the same shard bytes and a manifest with the same digest."""
    (folder_a, report_a), (folder_b, report_b) = runs
    timing = report_b["timing"]
    assert timing["wall_seconds"] >= 1000 > report_a["timing"]["wall_seconds"]
    assert timing["rows_per_second"] == pytest.approx(
        report_b["counts"]["rows_read"] / timing["wall_seconds"], rel=1e-3, abs=0.06)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", timing["started_at"])
    assert ({p.name: p.read_bytes() for p in folder_a.glob("*.semq")}
            == {p.name: p.read_bytes() for p in folder_b.glob("*.semq")})
    digests = [IndexStore(str(folder.parents[1])).read_manifest().digest
               for folder in (folder_a, folder_b)]
    assert digests[0] == digests[1]


def test_report_md_reads_at_a_glance(runs):
    folder, report = runs[0]
    md = (folder / "report.md").read_text()
    b, counts = report["bytes"], report["counts"]
    # human-readable sizes; the raw byte counts stay in report.json
    assert f"{human_bytes(b['out'])} written" in md and str(b["out"]) not in md
    assert f"| bytes_read | {human_bytes(counts['bytes_read'])} |" in md
    for lv in b["levels"]:
        assert (f"| codes, level {lv['level']} ({lv['codec']}) | {human_bytes(lv['codes'])} "
                f"|" in md) and f"| {lv['bits_per_dim']:.2f} |" in md
    for part in ("codec params", "ids", "input fingerprints (8 bytes/row)",
                 "other (headers, footers, padding)"):
        assert f"| {part} | " in md
    assert f"| time | {human_seconds(report['timing']['wall_seconds'])}, " in md
    # zero counters left out of the Markdown, all kept in the JSON
    zero = [k for k, v in counts.items() if k.startswith("rejected_") and not v]
    assert len(zero) == 8 and all(k in counts for k in zero)
    assert not any(k in md for k in zero)
    assert "| rejected_non_finite | 1 |" in md
    assert "8 rejection reasons with no row are left out" in md
    # the plot beside it
    assert "](report.svg)" in md and (folder / "report.svg").is_file()


def test_pooled_recall_is_explained(runs):
    v = copy.deepcopy(runs[0][1]["validation"])
    lowest = min(s["recall_at_k"] for s in v["shards"])
    v["recall_at_k"] = lowest - 0.01
    note = pooled_recall_note(v)
    assert "merged over all shards" in note and note.endswith("every shard's (as here).")
    v["recall_at_k"] = lowest
    assert not pooled_recall_note(v).endswith("(as here).")
    v["shards"] = v["shards"][:1]
    assert pooled_recall_note(v) is None
    report = copy.deepcopy(runs[0][1])
    report["validation"]["recall_at_k"] = lowest - 0.01
    assert "every shard's (as here)." in report_markdown(report)


def _marks(svg: str, kind: str) -> list[ET.Element]:
    root = ET.fromstring(svg)                     # well-formed XML, or this raises
    assert root.tag == f"{SVG}svg"
    tag = "circle" if kind == "recall" else "rect"
    return [e for e in root.iter(f"{SVG}{tag}") if e.get("class") == kind]


def test_the_plot_has_one_mark_per_shard_at_the_reports_values(runs):
    folder, report = runs[0]
    svg = (folder / "report.svg").read_text()
    assert svg == report_svg(report)                # deterministic in the report
    shards = report["validation"]["shards"]
    names = [Path(s["path"]).name for s in shards]
    dots, bars = _marks(svg, "recall"), _marks(svg, "compression")
    assert [d.get("data-shard") for d in dots] == names == [r.get("data-shard") for r in bars]
    assert [float(d.get("data-value")) for d in dots] == pytest.approx(
        [s["recall_at_k"] for s in shards], abs=1e-6)
    assert [float(r.get("data-value")) for r in bars] == pytest.approx(
        [s["compression_ratio"] for s in shards], abs=1e-6)
    # bar heights are proportional to the ratios; higher recall, higher dot (smaller y)
    ratios = [s["compression_ratio"] for s in shards]
    scale = float(bars[ratios.index(max(ratios))].get("height")) / max(ratios)
    assert [float(r.get("height")) for r in bars] == pytest.approx(
        [ratio * scale for ratio in ratios], abs=0.01)
    ys = [float(d.get("cy")) for d in dots]
    for (y1, s1), (y2, s2) in zip(zip(ys, shards), zip(ys[1:], shards[1:])):
        if abs(s1["recall_at_k"] - s2["recall_at_k"]) > 1e-3:
            assert (y1 < y2) == (s1["recall_at_k"] > s2["recall_at_k"])
    # the gate's threshold is a line below every dot (every shard passes it)
    root = ET.fromstring(svg)
    gate = [t for t in root.iter(f"{SVG}text") if (t.text or "").startswith("gate ")]
    assert [t.text for t in gate] == [f"gate {report['validation']['min_recall_at_k']:g}"]
    assert float(gate[0].get("y")) - 4 > max(ys)


def test_a_report_without_the_split_or_shards_still_renders(runs):
    """A report written before the split and the time were recorded (a pending report a
    rerun completes), and a failed run's report: Markdown without those parts, no plot."""
    report = copy.deepcopy(runs[0][1])
    for key in ("levels", "params", "ids", "fingerprints", "other", "bits_per_dim"):
        del report["bytes"][key]
    del report["timing"]
    for shard in report["validation"]["shards"]:
        del shard["compression_ratio"], shard["bytes"]
    md = report_markdown(report)
    assert "codec params" not in md and "| time |" not in md and "x |" in md
    assert len(_marks(report_svg(report), "compression")) == 3
    failed = failure_report(run_id="r", index_url="/x", input_fingerprint=None, codecs=["semq4"],
                            dim=8, safe_config={}, error="boom")
    assert report_svg(failed) is None and "report.svg" not in report_markdown(failed)
    assert byte_split([], None, dim=8) == {"bits_per_dim": None, "levels": [], "params": None,
                                           "ids": None, "fingerprints": None, "other": None}


def test_the_summary_prints_sizes_time_and_the_report_md_path(input_dir, tmp_path, capsys):
    data = job(input_dir, str(tmp_path / "idx"))
    config_file = tmp_path / "job.yaml"
    config_file.write_text(yaml.safe_dump(data))
    assert main(["--config", str(config_file), "--quiet"]) == 0
    out = capsys.readouterr().out
    report = json.loads((tmp_path / "idx/runs/same-run/report.json").read_text())
    b = report["bytes"]
    assert f"{human_bytes(b['out'])} written for {human_bytes(b['float32'])} of float32" in out
    assert f"; {human_seconds(report['timing']['wall_seconds'])}, " in out
    assert f"(report: {tmp_path}/idx/runs/same-run/report.md)" in out
    assert "report.json" not in out and "file://" not in out
