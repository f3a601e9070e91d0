"""The run report's plot: recall@k and compression ratio per shard, as a small SVG.

    svg = report_svg(report)     # str, or None for a report without shards

Two panels, one mark per shard in each: recall@k as a dot (on an axis that ends at 1.0,
with the gate's ``min_recall_at_k`` and the overall, pooled recall as lines) and the
compression ratio (float32 bytes / shard file bytes) as a bar from 0. Written by hand as
text: no plotting library, and the same report always gives the same bytes. Each mark
carries its shard's path and value (``data-shard``, ``data-value``) and a ``<title>``
tooltip. Pure functions; no Beam.
"""

from __future__ import annotations

import math
import posixpath
from collections.abc import Mapping, Sequence
from typing import Any
from xml.sax.saxutils import escape, quoteattr

__all__ = ["PLOT_NAME", "has_plot", "report_svg", "shard_ratio"]

#: The plot's file name, beside ``report.md``.
PLOT_NAME = "report.svg"

_W, _LEFT, _RIGHT = 720, 64, 110
_PANEL_H, _TOP, _GAP, _BOTTOM = 190, 40, 70, 40
_H = _TOP + 2 * _PANEL_H + _GAP + _BOTTOM
_FONT = 'font-family="sans-serif" font-size="12"'
_LABELLED_SHARDS = 24        # more shards: only the first and the last are numbered


def has_plot(report: Mapping[str, Any]) -> bool:
    """Whether :func:`report_svg` draws ``report`` (it lists at least one shard)."""
    return bool((report.get("validation") or {}).get("shards"))


def shard_ratio(shard: Mapping[str, Any], dim: int | None) -> float | None:
    """A shard's compression ratio: its ``compression_ratio``, or (a report written before
    it was recorded) float32 bytes of its rows over its file bytes."""
    ratio = shard.get("compression_ratio")
    if ratio is None and dim and shard.get("file_bytes"):
        ratio = shard["rows"] * dim * 4 / shard["file_bytes"]
    return ratio


def _num(x: float) -> str:
    return f"{x:.2f}".rstrip("0").rstrip(".") if x != int(x) else str(int(x))


def _text(x: float, y: float, label: str, anchor: str = "start", extra: str = "") -> str:
    return (f'<text x="{_num(x)}" y="{_num(y)}" text-anchor="{anchor}" {_FONT}{extra}>'
            f'{escape(label)}</text>')


def _line(x1: float, y1: float, x2: float, y2: float, style: str) -> str:
    return (f'<line x1="{_num(x1)}" y1="{_num(y1)}" x2="{_num(x2)}" y2="{_num(y2)}" '
            f'{style}/>')


class _Panel:
    """One plot area: shard ``i`` at the middle of slot ``i``, values ``lo..hi`` upwards."""

    def __init__(self, top: float, n: int, lo: float, hi: float) -> None:
        self.top, self.n, self.lo, self.hi = top, n, lo, hi
        self.width = _W - _LEFT - _RIGHT
        self.slot = self.width / n

    def x(self, i: int) -> float:
        return _LEFT + (i + 0.5) * self.slot

    def y(self, value: float) -> float:
        return self.top + (self.hi - value) / (self.hi - self.lo) * _PANEL_H

    def frame(self, title: str, ticks: Sequence[float], fmt: Any) -> list[str]:
        bottom = self.top + _PANEL_H
        out = [_text(_LEFT, self.top - 10, title, extra=' font-weight="bold"'),
               _line(_LEFT, self.top, _LEFT, bottom, 'stroke="#444"'),
               _line(_LEFT, bottom, _LEFT + self.width, bottom, 'stroke="#444"')]
        for tick in ticks:
            y = self.y(tick)
            out += [_line(_LEFT - 4, y, _LEFT + self.width, y, 'stroke="#ddd"'),
                    _text(_LEFT - 8, y + 4, fmt(tick), "end")]
        labelled = (range(self.n) if self.n <= _LABELLED_SHARDS
                    else sorted({0, self.n - 1}))
        out += [_text(self.x(i), bottom + 16, str(i), "middle") for i in labelled]
        return out

    def rule(self, value: float, label: str, colour: str) -> list[str]:
        y = self.y(value)
        return [_line(_LEFT, y, _LEFT + self.width, y,
                      f'stroke="{colour}" stroke-width="1.5" stroke-dasharray="6 4"'),
                _text(_LEFT + self.width + 6, y + 4, label, extra=f' fill="{colour}"')]


def _recall_floor(values: Sequence[float]) -> float:
    """The recall axis' lower end: a multiple of 0.05 at least 0.01 below every value."""
    return max(0.0, math.floor((min(values) - 0.01) * 20) / 20)


def report_svg(report: Mapping[str, Any]) -> str | None:
    """The SVG text of ``report``'s plot (None when it lists no shard, :func:`has_plot`)."""
    if not has_plot(report):
        return None
    v = report["validation"]
    shards, k = v["shards"], v["k"]
    names = [posixpath.basename(s["path"]) for s in shards]
    n = len(shards)
    recalls = [s.get("recall_at_k") for s in shards]
    ratios = [shard_ratio(s, report.get("dim")) for s in shards]
    gate, overall = v.get("min_recall_at_k"), v.get("recall_at_k")
    run = escape(str(report["run_id"]))
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
              f'viewBox="0 0 {_W} {_H}" role="img">'),
             f"<title>recall@{k} and compression ratio per shard, run {run}</title>",
             f'<rect width="{_W}" height="{_H}" fill="white"/>']
    known = [r for r in recalls if r is not None]
    lo = _recall_floor(known + [x for x in (gate, overall) if x is not None]) if known else 0.0
    top = _Panel(_TOP, n, lo, 1.0)
    parts += top.frame(f"recall@{k} per shard (dots)", [lo, (lo + 1) / 2, 1.0],
                       lambda t: f"{t:.2f}")
    if gate is not None:
        parts += top.rule(gate, f"gate {gate:g}", "#c0392b")
    if overall is not None:
        parts += top.rule(overall, f"overall {overall:.4f}", "#7f8c8d")
    radius = max(1.5, min(5.0, top.slot / 3))
    for i, (name, r) in enumerate(zip(names, recalls)):
        if r is not None:
            parts.append(f'<circle class="recall" data-shard={quoteattr(name)} '
                         f'data-value="{r:.6f}" cx="{_num(top.x(i))}" cy="{_num(top.y(r))}" '
                         f'r="{_num(radius)}" fill="#2c7fb8"><title>{escape(name)}: '
                         f'recall@{k} {r:.4f}</title></circle>')
    known_ratios = [x for x in ratios if x is not None]
    hi = max(known_ratios, default=1.0) * 1.1 or 1.0
    low = _Panel(_TOP + _PANEL_H + _GAP, n, 0.0, hi)
    parts += low.frame("compression ratio per shard (float32 bytes / file bytes)",
                       [0.0, hi / 2, hi], lambda t: f"{t:.1f}x")
    bar = max(1.0, low.slot * 0.7)
    for i, (name, ratio) in enumerate(zip(names, ratios)):
        if ratio is not None:
            y = low.y(ratio)
            parts.append(f'<rect class="compression" data-shard={quoteattr(name)} '
                         f'data-value="{ratio:.6f}" x="{_num(low.x(i) - bar / 2)}" '
                         f'y="{_num(y)}" width="{_num(bar)}" '
                         f'height="{_num(low.y(0.0) - y)}" fill="#41ab5d"><title>'
                         f'{escape(name)}: {ratio:.2f}x</title></rect>')
            if n <= _LABELLED_SHARDS:
                parts.append(_text(low.x(i), y - 4, f"{ratio:.2f}x", "middle"))
    parts += [_text(_LEFT + low.width / 2, _H - 8, "shard (in path order)", "middle"),
              "</svg>", ""]
    return "\n".join(parts)
