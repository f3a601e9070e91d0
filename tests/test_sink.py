"""WriteSemqIndex: embeddings a pipeline already holds (pairs, Rows, dicts, Beam RAG chunks)
written as an index version on Beam's local runner, in process and in worker processes."""

from __future__ import annotations

import json
import os
from pathlib import Path

import apache_beam as beam
import numpy as np
import pyarrow.parquet as pq
import pytest
from apache_beam.ml.rag.types import Chunk, Content, Embedding
from apache_beam.testing.util import assert_that, equal_to

from semq_transforms.config import EncodeConfig, ValidationConfig
from semq_transforms.errors import RunFolderInUseError
from semq_transforms.eval import exact_knn, knn_intersection_measure
from semq_transforms.format.store import IndexStore
from semq_transforms.index import Index
from semq_transforms.transforms import direct_options
from semq_transforms.transforms.sink import ElementFields, WriteSemqIndex
from tests.conftest import ROOT, make_anisotropic

N, DIM = 2_500, 24
VALIDATION = ValidationConfig(k=10, sample_queries=64, seed=3, min_recall_at_k=0.8,
                              max_rejected_fraction=0.01, min_compression_ratio=0)
ENCODE = EncodeConfig(codecs=["semq2", "semq8"], rows_per_shard=1_000)


@pytest.fixture(scope="module")
def corpus() -> np.ndarray:
    return make_anisotropic(N, DIM, seed=11)


def _bad_rows(x: np.ndarray) -> list:
    """One row for each way an element can be refused, with its expected reason."""
    return [("nan-row", [float("nan")] * DIM), ("short-row", x[0, :-1].tolist()),
            ("zero-row", [0.0] * DIM), (None, x[1].tolist()), ("doc-7", x[2].tolist()),
            (17, x[3].tolist()), "not an element", ("no-vector", None),
            ("text-vector", "0.1, 0.2")]


EXPECTED_REASONS = sorted(["non_finite", "wrong_dimension", "zero_vector", "null_id",
                           "duplicate_id", "bad_element", "bad_element", "null_vector",
                           "bad_element"])


def _write(elements: list, index_url: str, *, mode: str = "in_memory",
           run_id: str = "sink-run", **kwargs) -> dict:
    """Run WriteSemqIndex over ``elements``; returns the run's report (report.json)."""
    env_path = os.environ.get("PYTHONPATH", "")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in [str(ROOT), env_path] if p)
    try:
        with beam.Pipeline(options=direct_options(mode, 2)) as p:
            report = (p | beam.Create(elements, reshuffle=False)
                      | WriteSemqIndex(index_url, run_id=run_id, dim=DIM, validation=VALIDATION,
                                       encode=kwargs.pop("encode", ENCODE), **kwargs))
            # the transform's output is that report: one dict
            assert_that(report | beam.Map(lambda r: (r["run_id"], r["version"])),
                        equal_to([(run_id, 1)]))
    finally:
        os.environ["PYTHONPATH"] = env_path
    return json.loads((Path(index_url) / "runs" / run_id / "report.json").read_text())


def _shard_files(index_url: str) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(Path(index_url).glob("runs/*/*.semq"))}


def test_pairs_publish_a_searchable_version_and_every_element_is_accounted(corpus, tmp_path):
    ids = [f"doc-{i}" for i in range(N)]
    elements = list(zip(ids, corpus.tolist(), strict=True)) + _bad_rows(corpus)
    report = _write(elements, str(tmp_path / "idx"))
    assert report["gate"] == {"passed": True, "problems": []} and report["version"] == 1
    counts = report["counts"]
    assert counts["rows_read"] == len(elements) == N + 9
    assert counts["rows_encoded"] == counts["rows_accepted"] == N
    assert counts["rows_rejected"] == counts["dead_letters"] == 9
    dead = pq.read_table(tmp_path / "idx/runs/sink-run/dead_letters.parquet").to_pylist()
    assert sorted(d["reason"] for d in dead) == EXPECTED_REASONS
    assert all(d["source"] == "pcollection" and d["row"] is None and d["detail"] for d in dead)
    by_reason = {d["reason"]: d for d in dead if d["reason"] != "bad_element"}
    assert by_reason["non_finite"]["detail"] == "vector element 0 is nan"
    assert by_reason["wrong_dimension"]["detail"] == f"got {DIM - 1}, expected {DIM}"
    assert by_reason["duplicate_id"]["id"] == "doc-7"
    details = sorted(d["detail"] for d in dead if d["reason"] == "bad_element")
    assert "the id 17 (int) is not a string (id_type)" in details
    assert any(d.startswith("not an (id, vector) pair") for d in details)
    assert "the vector is text (str), not numbers" in details
    index = Index.open(str(tmp_path / "idx"))
    assert index.rows == N and index.id_type == "string"
    _, found = index.search(corpus[:50], k=10)
    _, truth = exact_knn(corpus[:50], corpus, 10)
    positions = np.array([[int(i.removeprefix("doc-")) for i in row] for row in found])
    assert knn_intersection_measure(positions, truth) >= 0.9
    # of doc-7's two copies, the one whose vector bytes sort first is kept
    copies = [corpus[7], corpus[2]]
    kept = min(copies, key=lambda v: ("doc-7", v.astype(np.float32).tobytes()))
    [(_, restored)] = list(index.restore(["doc-7"], level=-1))
    assert np.allclose(restored[0], kept, atol=0.1)


def test_same_rows_in_any_order_and_runner_mode_give_identical_bytes(corpus, tmp_path):
    """Shards come from the set of rows: another order, other bundles, worker processes (every
    DoFn pickled) write the same shard files and the same manifest digest."""
    elements = [(i * 7 - 3, corpus[i].tolist()) for i in range(N)]
    rng = np.random.default_rng(0)
    shuffled = [elements[i] for i in rng.permutation(N)]
    runs = {"in order": (elements, "in_memory"), "shuffled": (shuffled, "in_memory"),
            "processes": (shuffled, "multi_processing")}
    files, digests = {}, {}
    for name, (rows, mode) in runs.items():
        url = str(tmp_path / name.replace(" ", "-"))
        report = _write(rows, url, mode=mode, id_type="int64")
        assert report["gate"]["passed"] and report["counts"]["rows_encoded"] == N
        files[name] = _shard_files(url)
        digests[name] = IndexStore(url).read_manifest().digest
    assert len(files["in order"]) == 3   # ceil(2,500 / 1,000)
    assert files["in order"] == files["shuffled"] == files["processes"]
    assert len(set(digests.values())) == 1
    index = Index.open(str(tmp_path / "in-order"))
    assert index.id_type == "int64" and sorted(
        i for ids, _ in index.restore() for i in ids.tolist()) == sorted(
        i * 7 - 3 for i in range(N))


def test_rows_dicts_and_rag_chunks_are_read(corpus, tmp_path):
    """beam.Row and dict elements (field names given), and Beam RAG Chunks with dense
    embeddings, give the same index as pairs do."""
    ids = [f"c{i}" for i in range(600)]
    x = corpus[:600]
    pairs = list(zip(ids, x.tolist(), strict=True))
    rows = [beam.Row(key=i, vec=v) for i, v in pairs]
    dicts = [{"key": i, "vec": v} for i, v in pairs]
    chunks = [Chunk(content=Content(text=f"text {i}"), id=i,
                    embedding=Embedding(dense_embedding=v)) for i, v in pairs]
    fields = ElementFields(id="key", vector="vec")
    files = {}
    for name, elements, kwargs in [("pairs", pairs, {}), ("rows", rows, {"fields": fields}),
                                   ("dicts", dicts, {"fields": fields}),
                                   ("chunks", chunks, {})]:
        report = _write(elements, str(tmp_path / name), **kwargs)
        assert report["counts"]["rows_encoded"] == 600, name
        files[name] = _shard_files(str(tmp_path / name))
    assert files["pairs"] == files["rows"] == files["dicts"] == files["chunks"]
    # a chunk without an embedding is a null vector, not a crash
    empty = Chunk(content=Content(text="no embedding yet"), id="e1")
    report = _write([*chunks[:100], empty], str(tmp_path / "empty"))
    assert report["counts"]["rejected_null_vector"] == 1
    assert report["counts"]["rows_encoded"] == 100


def test_a_published_run_folder_and_bad_arguments_are_refused_before_anything_runs(
        corpus, tmp_path):
    url = str(tmp_path / "idx")
    elements = [(f"d{i}", corpus[i].tolist()) for i in range(300)]
    _write(elements, url)
    with pytest.raises(RunFolderInUseError, match="sink-run"):
        _write(elements, url)
    with pytest.raises(ValueError, match="id_type"):
        WriteSemqIndex(url, run_id="x", dim=DIM, validation=VALIDATION, id_type="uuid")
    with pytest.raises(ValueError, match="dim"):
        WriteSemqIndex(url, run_id="x", dim=0, validation=VALIDATION)
    report = json.loads((Path(url) / "runs/sink-run/report.json").read_text())
    assert report["counts"]["rows_planned"] is None
    assert "| rows_planned |" not in (Path(url) / "runs/sink-run/report.md").read_text()


def test_a_beam_rag_pipeline_writes_through_vector_database_write_transform(corpus, tmp_path):
    """Beam's own RAG ingestion entry point: VectorDatabaseWriteTransform with SemqWriteConfig
    writes the chunks' embeddings, the same shards as WriteSemqIndex."""
    from apache_beam.ml.rag.ingestion.base import VectorDatabaseWriteTransform

    from semq_transforms.transforms import SemqWriteConfig

    chunks = [Chunk(content=Content(text=f"t{i}"), id=f"c{i}",
                    embedding=Embedding(dense_embedding=corpus[i].tolist())) for i in range(500)]
    url = str(tmp_path / "rag")
    config = SemqWriteConfig(url, run_id="rag-run", dim=DIM, validation=VALIDATION,
                             encode=ENCODE)
    with beam.Pipeline(options=direct_options()) as p:
        _ = p | beam.Create(chunks) | VectorDatabaseWriteTransform(config)
    report = json.loads((Path(url) / "runs/rag-run/report.json").read_text())
    assert report["gate"]["passed"] and report["counts"]["rows_encoded"] == 500
    _write(chunks, str(tmp_path / "direct"), run_id="rag-run")
    assert _shard_files(url) == _shard_files(str(tmp_path / "direct"))
    assert Index.open(url).id_type == "string"


def test_the_portable_runner_writes_the_same_bytes(corpus, tmp_path):
    """Beam's portable runner (a job service, the protocol Dataflow, Flink and Spark speak,
    with a loopback worker) writes the shards the local runner writes."""
    import subprocess
    import sys

    url = str(tmp_path / "portable")
    np.save(tmp_path / "x.npy", corpus[:800])
    script = f"""
import numpy as np, apache_beam as beam
from apache_beam.options.pipeline_options import PipelineOptions
from semq_transforms.config import EncodeConfig, ValidationConfig
from semq_transforms.transforms import WriteSemqIndex
x = np.load({str(tmp_path / "x.npy")!r})
options = PipelineOptions(["--runner=PortableRunner", "--job_endpoint=embed",
                           "--environment_type=LOOPBACK"])
with beam.Pipeline(options=options) as p:
    _ = (p | beam.Create([(f"d{{i}}", x[i].tolist()) for i in range(len(x))])
         | WriteSemqIndex({url!r}, run_id="sink-run", dim={DIM},
                          validation=ValidationConfig.model_validate({VALIDATION.model_dump()!r}),
                          encode=EncodeConfig.model_validate({ENCODE.model_dump()!r})))
"""
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=600, env=env, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    _write([(f"d{i}", corpus[i].tolist()) for i in range(800)], str(tmp_path / "local"))
    assert _shard_files(url) == _shard_files(str(tmp_path / "local")) != {}
    assert IndexStore(url).read_manifest().digest == \
        IndexStore(str(tmp_path / "local")).read_manifest().digest


def test_elements_the_checks_must_not_crash_on_are_dead_letters():
    """Values that would raise deep in numpy or at the id hash become bad_element dead
    letters with a detail, and a NamedTuple of other field names is not taken for a pair."""
    from collections import namedtuple

    from semq_transforms.transforms.planning import id_hash
    from semq_transforms.transforms.sink import _CheckFn

    Text = namedtuple("Text", ["text", "embedding"])
    fn = _CheckFn(dim=2, id_type="string", fields=ElementFields(), reject_zero_vectors=True,
                  max_abs_value=1e16)
    elements = [("huge", [10**400, 1.0]), ("bools", [True, False]), ("strings", ["1", "2"]),
                ("complex", np.array([1 + 2j, 3.0])), ("\ud800", [1.0, 2.0]),
                Text("a sentence", [1.0, 2.0]), ("ok", (0.5, 0.25))]
    out = list(fn.process(elements))
    dead = [o.value for o in out if getattr(o, "tag", None) == "dead_letters"]
    rows = [o for o in out if not hasattr(o, "tag")]
    assert [r[1] for r in rows] == ["ok"] and rows[0][2].tolist() == [0.5, 0.25]
    assert rows[0][0] == int(id_hash(np.array(["ok"], dtype=object))[0])  # the routing hash
    assert sorted(d["reason"] for d in dead) == ["bad_element"] * 6
    details = {d["id"]: d["detail"] for d in dead}
    assert "OverflowError" in details["huge"]
    assert details["bools"] == "the vector holds bool values, not real numbers"
    assert details["strings"] == "the vector is text (list), not numbers"
    assert details["complex"] == "the vector holds complex128 values, not real numbers"
    assert "not valid Unicode" in details["\ud800"]
    assert details[None].startswith("not an (id, vector) pair")


def test_pairs_handed_to_the_inner_transforms_fail_when_the_pipeline_is_built(tmp_path):
    """The job's inner transforms carry Beam type hints: (id, vector) pairs handed to
    EncodeShards (which wants ShardRows; WriteSemqIndex is the entry point for pairs) are
    refused when the pipeline is built, not with an AttributeError on a worker."""
    from apache_beam.typehints.decorators import TypeCheckError

    from semq_transforms.transforms.encode import EncodeShards, SampleQueries

    p = beam.Pipeline(options=direct_options())
    pairs = p | beam.Create([("a", [1.0, 2.0])])
    with pytest.raises(TypeCheckError, match="SampleQueries"):
        _ = pairs | SampleQueries(n=4, seed=0)
    queries = p | "No queries" >> beam.Create([(np.zeros(0, np.int64),
                                               np.zeros((0, 2), np.float32))])
    with pytest.raises(TypeCheckError, match="EncodeShards"):
        _ = pairs | EncodeShards(str(tmp_path / "idx"), run_id="r", codecs=["semq4"],
                                 queries=queries, k=10)
