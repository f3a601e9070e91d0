"""Choosing codecs from evidence: fit every candidate on a sample of the user's vectors.

    x = load_data("embeddings.parquet")                 # float32 [n, d]
    corpus_rows, query_rows = split_sample(len(x), 20_000, 500, seed=0)   # disjoint
    rows = evaluate(x[corpus_rows], x[query_rows], parse_candidates("semq1+semq4,int8"), k=10)
    svg = tune_svg(rows, k=10, target=0.95)

A candidate is one shard's code levels (``"semq1+semq4"``: scan semq1, rerank semq4). Each is
fitted and encoded on the corpus sample (:func:`~semq_transforms.levels.encode_levels`),
searched with the index's own per-shard search (:func:`~semq_transforms.levels.search_levels`,
rerank ``10 * k`` by default, as ``Index.search``) and scored by recall@k against exact float
inner-product search. Queries are held-out rows, never rows of the corpus. Scores are
deterministic (:func:`~semq_transforms.eval.exact_knn`'s ``deterministic``), so the same data
and seed give the same table (but the seconds). Pure numpy; no Beam; the only I/O is reading
the file the caller names (:func:`load_data`).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from xml.sax.saxutils import escape, quoteattr

import numpy as np

from semq_transforms.errors import InvalidInputError, SemqError

#: Candidates tried when none are given: single levels, then scan+rerank pairs.
DEFAULT_CANDIDATES = ("semq1", "semq2", "semq4", "semq8", "int8", "int4", "binary",
                      "semq1+semq4", "semq2+semq4", "semq1+semqr4", "semq2+semqr3")
DEFAULT_SAMPLE, DEFAULT_QUERIES, DEFAULT_TARGET = 20_000, 500, 0.95
#: Rerank candidates per query when not given, as a multiple of k (``Index.search``'s).
DEFAULT_RERANK_FACTOR = 10
#: Scores held at once while scanning (``Index.search``'s ``SCORE_BUDGET``).
SCORE_BUDGET = 1 << 24


@dataclass(frozen=True)
class TuneRow:
    """One candidate's result.

    Attributes:
        name: the candidate as given, ``"semq1+semq4"``; ``codecs``: its level specs.
        code_bytes: code bytes per row, all levels; ``bits_per_dim``: ``code_bytes * 8 / d``.
        params_bytes: the levels' serialized params (stored once per shard).
        bits_per_dim_all_in: codes and params of one shard of the corpus sample's rows.
        recall_at_k: mean over queries of |found top-k ∩ exact top-k| / k.
        fit_encode_seconds: wall time of fit + encode (the only value that varies on reruns).
        pareto: no other candidate has at most as many bits/dim and at least the recall,
            one of the two strictly.
    """

    name: str
    codecs: tuple[str, ...]
    code_bytes: int
    bits_per_dim: float
    params_bytes: int
    bits_per_dim_all_in: float
    recall_at_k: float
    fit_encode_seconds: float
    pareto: bool = False

    def to_json(self) -> dict:
        return {**asdict(self), "codecs": list(self.codecs)}


def parse_candidates(text: str | Sequence[str] | None) -> list[tuple[str, ...]]:
    """``"semq1+semq4,int8"`` (or a list of such names) as level spec tuples, each checked
    (known codecs, refining levels after a level they refine); None: the defaults.
    Raises InvalidInputError naming the bad candidate."""
    from semq_transforms.levels import level_codecs

    names = DEFAULT_CANDIDATES if text is None else (
        text.split(",") if isinstance(text, str) else list(text))
    found: list[tuple[str, ...]] = []
    for name in names:
        specs = tuple(s.strip().lower() for s in name.split("+"))
        if not all(specs):
            raise InvalidInputError(f"--codecs: empty codec in {name!r} (use e.g. "
                                    f"'semq1+semq4,int8')")
        try:
            level_codecs(list(specs))
        except SemqError as exc:          # unknown id, bad bit width, bad order
            raise InvalidInputError(f"--codecs: {name.strip()!r}: {exc}") from None
        if specs not in found:
            found.append(specs)
    if not found:
        raise InvalidInputError("--codecs: no candidate given")
    return found


def load_data(url: str, *, column: str | None = None) -> np.ndarray:
    """The vectors of a ``.npy``, ``.parquet``, ``.arrow`` / ``.feather`` file (or of every
    file a glob matches, concatenated in path order) as float ``[n, d]``. Errors are
    InvalidInputError naming the file."""
    import fsspec

    from semq_transforms._queries import load_queries

    urls = [url]
    if any(c in url for c in "*?["):
        fs, _, paths = fsspec.core.get_fs_token_paths(url)
        if not paths:
            raise InvalidInputError(f"data {url}: no file matches")
        urls = [fs.unstrip_protocol(p) if "://" in url else p for p in sorted(paths)]
    parts = []
    for u in urls:
        try:
            parts.append(load_queries(u, column=column))
        except InvalidInputError as exc:
            message = str(exc).replace("queries ", "data ", 1).replace("--query-column",
                                                                       "--column")
            raise InvalidInputError(message) from None
        if parts[-1].shape[1] != parts[0].shape[1]:
            raise InvalidInputError(f"data {u}: dimension {parts[-1].shape[1]}, but {urls[0]} "
                                    f"has {parts[0].shape[1]}")
    return parts[0] if len(parts) == 1 else np.concatenate(parts)


def split_sample(n: int, sample: int, queries: int, seed: int
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Seeded, disjoint row numbers (int64, increasing): ``(corpus [s], queries [q])``.

    ``q = min(queries, n // 2)`` rows are held out as queries first, then ``s = min(sample,
    n - q)`` of the others form the corpus, so a small file still gets both."""
    if n < 2 or sample < 1 or queries < 1:
        raise InvalidInputError(f"need at least 2 rows, --sample >= 1 and --queries >= 1; got "
                                f"{n} rows, --sample {sample}, --queries {queries}")
    q = min(queries, n // 2)
    s = min(sample, n - q)
    order = np.random.default_rng(seed).permutation(n)
    return np.sort(order[q:q + s]), np.sort(order[:q])


def pareto_front(bits: Sequence[float], recall: Sequence[float]) -> list[bool]:
    """For each point, whether no other point has ``bits <=`` and ``recall >=`` it, one of
    the two strictly (equal points are all on the front)."""
    return [not any(b2 <= b and r2 >= r and (b2 < b or r2 > r)
                    for b2, r2 in zip(bits, recall)) for b, r in zip(bits, recall)]


def evaluate(corpus: np.ndarray, queries: np.ndarray, candidates: Sequence[Sequence[str]],
             k: int = 10, *, rerank: int | None = None) -> list[TuneRow]:
    """Fit, encode, search and score every candidate.

    Args:
        corpus: float32 ``[n, d]``, checked (finite, non-empty); ``queries``: float32
            ``[nq, d]``, rows not in ``corpus``.
        candidates: level spec lists (:func:`parse_candidates`).
        k: recall cut-off, ``1 <= k <= n``; ``rerank``: candidates re-scored per query by a
            pair's last level (default ``10 * k``).
    Returns:
        One :class:`TuneRow` per candidate, sorted by bits/dim (then recall, best first,
        then name), with the Pareto front marked.
    """
    from semq_transforms.eval import exact_knn, knn_intersection_measure
    from semq_transforms.levels import encode_levels, search_levels

    n, d = corpus.shape
    rerank = DEFAULT_RERANK_FACTOR * k if rerank is None else rerank
    _, truth = exact_knn(queries, corpus, k, deterministic=True)
    rows = []
    for specs in candidates:
        start = time.perf_counter()
        levels = encode_levels(corpus, list(specs))
        seconds = time.perf_counter() - start
        _, found = search_levels(levels, queries, k, rerank=min(rerank, n),
                                 score_budget=SCORE_BUDGET, deterministic=True)
        code_bytes = sum(int(lv.codes.shape[1]) for lv in levels)
        params_bytes = sum(len(lv.params.to_bytes()) for lv in levels)
        rows.append(TuneRow(
            name="+".join(specs), codecs=tuple(specs), code_bytes=code_bytes,
            bits_per_dim=code_bytes * 8 / d, params_bytes=params_bytes,
            bits_per_dim_all_in=(code_bytes * n + params_bytes) * 8 / (n * d),
            recall_at_k=knn_intersection_measure(found, truth), fit_encode_seconds=seconds))
    rows.sort(key=lambda r: (r.bits_per_dim, -r.recall_at_k, r.name))
    front = pareto_front([r.bits_per_dim for r in rows], [r.recall_at_k for r in rows])
    return [TuneRow(**{**asdict(r), "pareto": p}) for r, p in zip(rows, front)]


def choose(rows: Sequence[TuneRow], target: float) -> TuneRow | None:
    """The candidate with the fewest bits/dim whose recall reaches ``target`` (ties: the
    higher recall, then the name), or None."""
    reaching = [r for r in rows if r.recall_at_k >= target]
    return min(reaching, key=lambda r: (r.bits_per_dim, -r.recall_at_k, r.name), default=None)


# -- plot ----------------------------------------------------------------------------------------

_W, _H, _LEFT, _RIGHT, _TOP, _BOTTOM = 720, 440, 64, 40, 40, 50


def tune_svg(rows: Sequence[TuneRow], *, k: int, target: float | None = None) -> str:
    """An SVG scatter of recall@k (up) against bits/dim (right): one labelled ``<circle
    class="candidate">`` per row (``data-name``, ``data-bits``, ``data-recall``; filled when
    on the Pareto front), the front as a polyline, ``target`` as a dashed line. Text written
    by hand: the same rows give the same bytes."""
    from semq_transforms.report.plot import _line, _num, _recall_floor, _text

    if not rows:
        raise InvalidInputError("nothing to plot: no candidate")
    recalls = [r.recall_at_k for r in rows]
    lo = _recall_floor(recalls + ([target] if target is not None else []))
    hi_bits = max(r.bits_per_dim for r in rows) * 1.08
    width, height = _W - _LEFT - _RIGHT, _H - _TOP - _BOTTOM

    def x(bits: float) -> float:
        return _LEFT + bits / hi_bits * width

    def y(recall: float) -> float:
        return _TOP + (1.0 - recall) / ((1.0 - lo) or 1.0) * height

    bottom = _TOP + height
    parts = [(f'<svg xmlns="http://www.w3.org/2000/svg" width="{_W}" height="{_H}" '
              f'viewBox="0 0 {_W} {_H}" role="img">'),
             f"<title>recall@{k} against bits/dim per candidate</title>",
             f'<rect width="{_W}" height="{_H}" fill="white"/>',
             _text(_LEFT, _TOP - 14, f"recall@{k} against bits/dim (filled: Pareto front)",
                   extra=' font-weight="bold"'),
             _line(_LEFT, _TOP, _LEFT, bottom, 'stroke="#444"'),
             _line(_LEFT, bottom, _LEFT + width, bottom, 'stroke="#444"')]
    for tick in (lo, (lo + 1) / 2, 1.0):
        parts += [_line(_LEFT - 4, y(tick), _LEFT + width, y(tick), 'stroke="#ddd"'),
                  _text(_LEFT - 8, y(tick) + 4, f"{tick:.2f}", "end")]
    step = max(1, int(hi_bits) // 8)
    for tick in range(0, int(hi_bits) + 1, step):
        parts += [_line(x(tick), bottom, x(tick), bottom + 4, 'stroke="#444"'),
                  _text(x(tick), bottom + 18, str(tick), "middle")]
    parts.append(_text(_LEFT + width / 2, _H - 8, "bits per dimension (codes, all levels)",
                       "middle"))
    if target is not None:
        parts += [_line(_LEFT, y(target), _LEFT + width, y(target),
                        'stroke="#c0392b" stroke-dasharray="6 4"'),
                  _text(_LEFT + 6, y(target) - 6, f"target {target:g}", "start",
                        ' fill="#c0392b"')]
    front = [r for r in rows if r.pareto]
    parts.append('<polyline class="pareto" fill="none" stroke="#2c7fb8" stroke-width="1.5" '
                 'points="' + " ".join(f"{_num(x(r.bits_per_dim))},{_num(y(r.recall_at_k))}"
                                        for r in front) + '"/>')
    points = [(x(r.bits_per_dim), y(r.recall_at_k)) for r in rows]
    for r, (cx, cy), (lx, ly, anchor) in zip(rows, points, _place_labels(
            points, [r.name for r in rows])):
        fill = "#2c7fb8" if r.pareto else "white"
        parts += [(f'<circle class="candidate" data-name={quoteattr(r.name)} '
                   f'data-bits="{r.bits_per_dim:.4f}" data-recall="{r.recall_at_k:.6f}" '
                   f'cx="{_num(cx)}" cy="{_num(cy)}" r="4" fill="{fill}" stroke="#2c7fb8">'
                   f'<title>{escape(r.name)}: {r.bits_per_dim:.2f} bits/dim, recall@{k} '
                   f'{r.recall_at_k:.4f}</title></circle>'),
                  _text(lx, ly, r.name, anchor)]
        if abs(ly - cy) > 14:           # a label moved away from its point: a leader line
            parts.append(_line(cx, cy, lx, ly - 4 if ly < cy else ly - 12, 'stroke="#bbb"'))
    return "\n".join(parts + ["</svg>", ""])


#: Label positions tried around a point, in order: (dx, dy of the baseline, anchor).
_SPOTS = [(6, -6, "start"), (6, 14, "start"), (-6, -6, "end"), (-6, 14, "end"),
          *((dx, dy, a) for dy in (-20, 28, -34, 42) for dx, a in ((6, "start"), (-6, "end")))]


def _place_labels(points: Sequence[tuple[float, float]], names: Sequence[str]
                  ) -> list[tuple[float, float, str]]:
    """A label position ``(x, y, anchor)`` per point: the first of :data:`_SPOTS` whose box
    (about 7 px a character, 12 px high) overlaps no point and no label placed before, and
    stays in the picture; else the first spot."""
    taken = [(px - 4, py - 4, px + 4, py + 4) for px, py in points]
    placed = []
    for (px, py), name in zip(points, names):
        w = 7 * len(name)
        boxes = []
        for dx, dy, anchor in _SPOTS:
            x0 = px + dx if anchor == "start" else px + dx - w
            boxes.append((px + dx, py + dy, anchor, (x0, py + dy - 11, x0 + w, py + dy + 2)))
        free = [b for b in boxes if b[3][0] >= 0 and b[3][2] <= _W and b[3][1] >= _TOP - 12
                and not any(_overlap(b[3], t) for t in taken)]
        lx, ly, anchor, box = (free or boxes)[0]
        taken.append(box)
        placed.append((lx, ly, anchor))
    return placed


def _overlap(a: tuple[float, ...], b: tuple[float, ...]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]
