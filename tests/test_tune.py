"""``semq-index tune``: every candidate fitted on a sample, recall@k against bits/dim."""

from __future__ import annotations

import contextlib
import io
import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from semq_transforms import tune
from semq_transforms.cli import build_parser, main
from tests.conftest import make_anisotropic

ROWS, DIM = 1400, 32
SMALL = ["--sample", "1000", "--queries", "120"]
SVG = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> tuple[Path, np.ndarray]:
    folder = tmp_path_factory.mktemp("tune")
    x = make_anisotropic(ROWS, DIM, seed=7)
    np.save(folder / "vectors.npy", x)
    return folder / "vectors.npy", x


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(["tune", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def result(data, tmp_path_factory) -> tuple[dict, str]:
    """The --json document and the SVG of one run with the default candidates."""
    path, _ = data
    plot = tmp_path_factory.mktemp("plot") / "tune.svg"
    out = io.StringIO()                 # capsys is function-scoped
    with contextlib.redirect_stdout(out):
        assert main(["tune", str(path), *SMALL, "--json", "--plot", str(plot)]) == 0
    return json.loads(out.getvalue()), plot.read_text()


def test_json_has_a_row_per_candidate_and_its_schema(result, data):
    doc, _ = result
    assert set(doc) == {"data", "rows", "dim", "corpus_rows", "query_rows", "seed", "k",
                        "rerank", "target", "candidates", "choice", "plot"}
    assert (doc["rows"], doc["dim"], doc["corpus_rows"], doc["query_rows"]) == (ROWS, DIM,
                                                                                 1000, 120)
    assert (doc["k"], doc["rerank"], doc["seed"], doc["target"]) == (10, 100, 0, 0.95)
    assert doc["data"] == str(data[0])
    rows = doc["candidates"]
    assert sorted(r["name"] for r in rows) == sorted(tune.DEFAULT_CANDIDATES)
    for r in rows:
        assert set(r) == {"name", "codecs", "code_bytes", "bits_per_dim", "params_bytes",
                          "bits_per_dim_all_in", "recall_at_k", "fit_encode_seconds", "pareto"}
        assert r["codecs"] == r["name"].split("+")
        assert r["bits_per_dim"] == r["code_bytes"] * 8 / DIM
        assert r["bits_per_dim_all_in"] == pytest.approx(
            (r["code_bytes"] * 1000 + r["params_bytes"]) * 8 / (1000 * DIM))
        assert 0 <= r["recall_at_k"] <= 1 and r["params_bytes"] > 0
        assert isinstance(r["pareto"], bool) and r["fit_encode_seconds"] >= 0
    bits = [r["bits_per_dim"] for r in rows]
    assert bits == sorted(bits)
    by_name = {r["name"]: r for r in rows}
    assert by_name["binary"]["bits_per_dim"] == 1.0 and by_name["int8"]["bits_per_dim"] == 8.0
    assert (by_name["semq1+semq4"]["code_bytes"]
            == by_name["semq1"]["code_bytes"] + by_name["semq4"]["code_bytes"])


def test_recall_grows_with_bits(result):
    recall = {r["name"]: r["recall_at_k"] for r in result[0]["candidates"]}
    assert recall["semq8"] >= recall["semq1"]
    assert recall["semq8"] > 0.9 and recall["int8"] >= recall["int4"] >= recall["binary"]


def test_pareto_marks_match_a_sweep(result):
    rows = result[0]["candidates"]
    # independent: walk groups of equal bits/dim in increasing order; a point is on the
    # front iff it has its group's best recall and beats every recall of fewer bits
    expected, best_before = {}, -1.0
    for bits in sorted({r["bits_per_dim"] for r in rows}):
        group = [r for r in rows if r["bits_per_dim"] == bits]
        top = max(r["recall_at_k"] for r in group)
        for r in group:
            expected[r["name"]] = r["recall_at_k"] == top and top > best_before
        best_before = max(best_before, top)
    assert {r["name"]: r["pareto"] for r in rows} == expected
    assert rows[0]["pareto"]                         # the smallest is always on the front
    choice = result[0]["choice"]
    reaching = [r for r in rows if r["recall_at_k"] >= 0.95]
    assert choice == (reaching[0]["name"] if reaching else None)


def test_pareto_front_ties():
    bits = [1.0, 2.0, 2.0, 3.0, 3.0, 4.0]
    recall = [0.5, 0.7, 0.6, 0.7, 0.9, 0.9]
    assert tune.pareto_front(bits, recall) == [True, True, False, False, True, False]
    assert tune.pareto_front([1.0, 1.0], [0.5, 0.5]) == [True, True]


def test_svg_has_one_point_per_candidate(result):
    doc, svg = result
    root = ET.fromstring(svg)
    circles = [c for c in root.iter(f"{SVG}circle") if c.get("class") == "candidate"]
    assert sorted(c.get("data-name") for c in circles) == sorted(tune.DEFAULT_CANDIDATES)
    by_name = {r["name"]: r for r in doc["candidates"]}
    for c in circles:
        r = by_name[c.get("data-name")]
        assert float(c.get("data-recall")) == pytest.approx(r["recall_at_k"], abs=1e-6)
        assert float(c.get("data-bits")) == pytest.approx(r["bits_per_dim"], abs=1e-4)
    labels = {t.text for t in root.iter(f"{SVG}text")}
    assert set(tune.DEFAULT_CANDIDATES) <= labels
    (front,) = [p for p in root.iter(f"{SVG}polyline") if p.get("class") == "pareto"]
    assert len(front.get("points").split()) == sum(r["pareto"] for r in doc["candidates"])


def test_table_is_sorted_marks_the_front_and_names_the_choice(data, capsys):
    path, _ = data
    code, out, err = run(capsys, path, *SMALL, "--codecs", "semq8,semq1,int8,binary",
                         "--target", "0.5")
    assert (code, err) == (0, "")
    lines = out.splitlines()
    assert lines[0].startswith(f"{path}: 1,400 rows of dim 32; corpus 1,000 rows, 120 held-out")
    assert lines[1].split()[:3] == ["candidate", "bits/dim", "recall@10"]
    table = [line.split() for line in lines[2:6]]
    assert [row[0] for row in table] == ["binary", "semq1", "int8", "semq8"]
    assert table[0][-1] == "*" and table[-1][-1] == "*"        # smallest and best recall
    chosen = next(line for line in lines if line.startswith("smallest reaching recall@10"))
    reaching = [row[0] for row in table if float(row[2]) >= 0.5]
    assert f">= 0.5: {reaching[0]} (" in chosen


def test_reruns_give_the_same_table(data, capsys):
    path, _ = data
    docs = []
    for _ in range(2):
        code, out, _err = run(capsys, path, *SMALL, "--codecs", "semq2+semqr3,semq1+semq4,int4",
                              "--json", "--seed", "3")
        assert code == 0
        doc = json.loads(out)
        for r in doc["candidates"]:
            r.pop("fit_encode_seconds")
        docs.append(doc)
    assert docs[0] == docs[1]


def test_queries_are_held_out_rows(data, capsys, monkeypatch):
    path, x = data
    seen = {}
    real = tune.evaluate

    def spy(corpus, queries, candidates, k=10, **kw):
        seen.update(corpus=corpus, queries=queries)
        return real(corpus, queries, candidates, k, **kw)

    monkeypatch.setattr(tune, "evaluate", spy)
    code, _out, _err = run(capsys, path, *SMALL, "--codecs", "int8")
    assert code == 0
    corpus = {row.tobytes() for row in seen["corpus"]}
    queries = {row.tobytes() for row in seen["queries"]}
    everything = {row.tobytes() for row in x}
    assert len(corpus) == 1000 and len(queries) == 120 and not corpus & queries
    assert corpus | queries <= everything


def test_split_sample_is_seeded_disjoint_and_fits_small_files():
    corpus, queries = tune.split_sample(1000, 700, 100, seed=1)
    assert (corpus.size, queries.size) == (700, 100)
    assert not set(corpus) & set(queries) and (np.diff(corpus) > 0).all()
    again = tune.split_sample(1000, 700, 100, seed=1)
    assert all(np.array_equal(a, b) for a, b in zip((corpus, queries), again))
    assert not np.array_equal(tune.split_sample(1000, 700, 100, seed=2)[1], queries)
    corpus, queries = tune.split_sample(300, 20_000, 500, seed=0)   # a small file: both fit
    assert (corpus.size, queries.size) == (150, 150) and not set(corpus) & set(queries)


def test_parquet_glob_and_column(tmp_path, capsys):
    x = make_anisotropic(600, 16, seed=2)
    for i, part in enumerate((x[:300], x[300:])):
        table = pa.table({"id": np.arange(len(part)),
                          "emb": pa.FixedSizeListArray.from_arrays(pa.array(part.ravel()), 16),
                          "other": pa.array(list(part[:, :4]), pa.list_(pa.float32()))})
        pq.write_table(table, tmp_path / f"part-{i}.parquet")
    code, out, err = run(capsys, tmp_path / "part-*.parquet", "--column", "emb", "--codecs",
                         "semq4", "--json", "--sample", "400", "--queries", "50", "-k", "5")
    assert (code, err) == (0, "")
    doc = json.loads(out)
    assert (doc["rows"], doc["dim"], doc["corpus_rows"], doc["query_rows"]) == (600, 16, 400, 50)
    code, _out, err = run(capsys, tmp_path / "part-0.parquet")     # two float list columns
    assert code == 2 and "part-0.parquet" in err and "--column" in err


@pytest.mark.parametrize("make, argv, named", [
    (None, ["{tmp}/missing.npy"], "missing.npy"),
    (lambda p: p.write_bytes(b"not parquet at all"), ["{file}"], "bad.parquet"),
    (lambda p: np.save(p, np.arange(10)), ["{file}"], "ints.npy"),
    (lambda p: np.save(p, np.ones((1, 8), np.float32)), ["{file}"], "one.npy"),
    (lambda p: np.save(p, np.full((50, 8), np.nan, np.float32)), ["{file}"], "nan.npy"),
    (lambda p: np.save(p, np.ones((30, 8), np.float32)), ["{file}", "-k", "20"], "few.npy"),
    (lambda p: p.write_text("x"), ["{file}"], "data.csv"),
    (lambda p: np.save(p, np.ones((30, 8), np.float32)), ["{file}", "--codecs", "semq9x"],
     "semq9x"),
    (lambda p: np.save(p, np.ones((30, 8), np.float32)), ["{file}", "--codecs", "semqr4"],
     "semqr4"),
    (lambda p: np.save(p, np.ones((30, 8), np.float32)), ["{file}", "--target", "2"],
     "--target"),
    (lambda p: np.save(p, np.ones((30, 8), np.float32)), ["{file}", "--sample", "0"],
     "--sample"),
])
def test_bad_input_exits_2_naming_it(tmp_path, capsys, make, argv, named):
    file = tmp_path / named if named.endswith((".npy", ".parquet", ".csv")) else (
        tmp_path / "ok.npy")
    if make is not None:
        make(file)
    code, out, err = run(capsys, *(a.format(tmp=tmp_path, file=file) for a in argv))
    assert code == 2 and out == "" and err.startswith("semq-index: error:")
    assert named in err and "Traceback" not in err


def test_help_and_no_beam(data, tmp_path):
    (parser,) = [a for a in build_parser()._actions if hasattr(a, "choices")
                 and isinstance(a.choices, dict) and "tune" in a.choices]
    tune_parser = parser.choices["tune"]
    assert all((a.help or "").strip() for a in tune_parser._actions)
    assert "--json" in tune_parser.format_help() and "``" not in tune_parser.format_help()
    path, _ = data
    script = ("import sys, semq_transforms.cli as cli\n"
              f"assert cli.main(['tune', {str(path)!r}, '--codecs', 'int8', '--sample', '200',"
              f" '--queries', '20', '--plot', {str(tmp_path / 'p.svg')!r}]) == 0\n"
              "print([m for m in sys.modules if m.startswith('apache_beam')], file=sys.stderr)")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120, check=False)
    assert (proc.returncode, proc.stderr) == (0, "[]\n")
    assert ET.parse(tmp_path / "p.svg").getroot().tag == f"{SVG}svg"
