"""``report.md``: a run report (the dict written as ``report.json``) for people.

It answers at a glance what was published, how small, how good and how long (a table
first), then gives the byte split, recall per shard, the counts and the redacted config.
Sizes are human-readable here (``12.4 MiB``); ``report.json`` keeps raw byte counts.
Counters that are zero (``rejected_<reason>``) are left out; ``report.json`` has them all.
Reports written before a figure was recorded render without it. Pure functions; no Beam.
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Mapping
from typing import Any

from semq_transforms.report.plot import PLOT_NAME, has_plot, shard_ratio
from semq_transforms.report.units import human_bytes, human_count, human_seconds

__all__ = ["pooled_recall_note", "report_markdown"]


def _recall(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _bits(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def pooled_recall_note(validation: Mapping[str, Any]) -> str | None:
    """Why overall recall@k may be below every shard's (None for fewer than two shards
    with a recall)."""
    k, overall = validation["k"], validation.get("recall_at_k")
    per_shard = [s["recall_at_k"] for s in validation.get("shards", ())
                 if s.get("recall_at_k") is not None]
    if overall is None or len(per_shard) < 2:
        return None
    here = " (as here)" if overall < min(per_shard) else ""
    return (f"Overall recall@{k} compares the top-{k} merged over all shards with the exact "
            f"top-{k} of the whole index, while a shard's recall@{k} uses that shard's own "
            f"exact top-{k}, so the overall figure can be below every shard's{here}.")


def _glance(report: Mapping[str, Any]) -> list[str]:
    """The first table: what was published, how small, how good, how long."""
    counts, b, v = report["counts"], report["bytes"], report["validation"]
    version = report["version"]
    shards = (f"{human_count(counts['rows_encoded'])} rows of dim {report['dim']} in "
              f"{human_count(counts['shards'])} shards; codecs {', '.join(report['codecs'])}")
    rows = [("published", f"version {version} of `{report['index_url']}`: {shards}"
             if version is not None else f"nothing ({shards} written, not committed)")]
    size = f"{human_bytes(b['out'])} written"
    if b.get("compression_ratio"):
        size += (f" for {human_bytes(b['float32'])} of float32: "
                 f"{b['compression_ratio']:.2f}x smaller")
    if b.get("bits_per_dim") is not None:
        size += f", {b['bits_per_dim']:.2f} bits/dim all in"
    rows.append(("size", size))
    rows.append((f"recall@{v['k']}", (f"{_recall(v['recall_at_k'])} on {v['queries']} "
                                      f"sampled queries (gate: at least "
                                      f"{v['min_recall_at_k']})")))
    timing = report.get("timing")
    if timing:
        speed = timing.get("rows_per_second")
        rows.append(("time", f"{human_seconds(timing['wall_seconds'])}"
                     + (f", {human_count(speed)} rows read/s" if speed else "")
                     + f" (started {timing['started_at']})"))
    rows.append(("input", (f"{human_count(counts['rows_read'])} rows read "
                           f"({human_bytes(b['read'])}), "
                           f"{human_count(counts['dead_letters'])} rejected")))
    return ["| | |", "|---|---|", *(f"| {name} | {value} |" for name, value in rows)]


def _size_table(b: Mapping[str, Any]) -> list[str]:
    """Bytes by part: codes of each level (with bits/dim), params, ids, input fingerprints,
    other, total."""
    out = b["out"]

    def share(n: int) -> str:
        return f"{100 * n / out:.1f}%" if out else ""

    lines = ["| part | size | share | bits/dim |", "|---|---:|---:|---:|"]
    for lv in b.get("levels", ()):
        lines.append(f"| codes, level {lv['level']} ({lv['codec']}) | "
                     f"{human_bytes(lv['codes'])} | {share(lv['codes'])} | "
                     f"{_bits(lv['bits_per_dim'])} |")
    labels = {"params": "codec params", "ids": "ids",
              "fingerprints": "input fingerprints (8 bytes/row)",
              "other": "other (headers, footers, padding)"}
    for part, label in labels.items():
        if b.get(part) is not None:
            lines.append(f"| {label} | {human_bytes(b[part])} | {share(b[part])} | |")
    lines.append(f"| **total** | **{human_bytes(out)}** | {share(out)} | "
                 f"{_bits(b.get('bits_per_dim'))} |")
    return lines


def _shard_table(report: Mapping[str, Any]) -> list[str]:
    v = report["validation"]
    lines = [f"| shard | rows | size | compression | recall@{v['k']} |",
             "|---|---:|---:|---:|---:|"]
    for s in v["shards"]:
        ratio = shard_ratio(s, report.get("dim"))
        lines.append(f"| {posixpath.basename(s['path'])} | {human_count(s['rows'])} | "
                     f"{human_bytes(s['file_bytes'])} | "
                     f"{'' if ratio is None else f'{ratio:.2f}x'} | "
                     f"{_recall(s['recall_at_k'])} |")
    return lines


def _counts_table(counts: Mapping[str, Any]) -> list[str]:
    lines = ["| count | value |", "|---|---:|"]
    hidden = 0
    for key, value in counts.items():
        if value is None:        # rows_planned of a run with no plan (a PCollection)
            continue
        if key.startswith("rejected_") and not value:
            hidden += 1
            continue
        shown = human_bytes(value) if key.startswith("bytes_") else human_count(value)
        lines.append(f"| {key} | {shown} |")
    if hidden:
        lines += ["", (f"{hidden} rejection reasons with no row are left out "
                       f"(report.json lists every counter).")]
    return lines


def _config(report: Mapping[str, Any]) -> list[str]:
    return ["## Config (redacted)", "", "```json",
            json.dumps(report["config"], indent=2, sort_keys=True), "```", ""]


def report_markdown(report: Mapping[str, Any]) -> str:
    """``report.md`` for a report dict (a failed run's too: then its problems and config)."""
    gate = report["gate"]
    verdict = (f"PUBLISHED version {report['version']}" if gate["passed"]
               else "NOT PUBLISHED")
    lines = [f"# Ingestion run `{report['run_id']}`", "", f"**Verdict: {verdict}**", ""]
    lines += [f"* {problem}" for problem in gate["problems"]]
    if gate["problems"]:
        lines.append("")
    if report["counts"] is None:          # the run failed before its gate: nothing counted
        return "\n".join(lines + _config(report))
    lines += [*_glance(report), ""]
    if has_plot(report):
        k = report["validation"]["k"]
        lines += [f"![recall@{k} and compression ratio per shard]({PLOT_NAME})", ""]
    lines += ["## Size", "", *_size_table(report["bytes"]), ""]
    v = report["validation"]
    overall = (f"recall@{v['k']} on {v['queries']} sampled queries: "
               f"{_recall(v['recall_at_k'])} (min {v['min_recall_at_k']})")
    lines += ["## Recall", "", overall, ""]
    notes = [f"* note: {note}" for note in v.get("notes", ())]
    pooled = pooled_recall_note(v)
    lines += [*notes, *([""] if notes else []), *([pooled, ""] if pooled else [])]
    if v["shards"]:
        lines += [*_shard_table(report), ""]
    lines += ["## Counts", "", *_counts_table(report["counts"]), ""]
    return "\n".join(lines + _config(report))
