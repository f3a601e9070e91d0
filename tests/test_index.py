"""Query-time Index API on real (small) indexes built with build_index: search, restore,
verify, diff, versions, lazy shard cache."""

from __future__ import annotations

import itertools

import numpy as np
import pyarrow.parquet as pq
import pytest

from semq_transforms.build import build_index
from semq_transforms.codecs import get_codec
from semq_transforms.errors import IndexNotFoundError, InputShapeError, InvalidInputError
from semq_transforms.eval import exact_knn, knn_intersection_measure, topk
from semq_transforms.format.shard import read_shard
from semq_transforms.index import Index
from semq_transforms.levels import _rerank_step
from tests.conftest import make_anisotropic


@pytest.fixture()
def corpus() -> np.ndarray:
    return make_anisotropic(1500, 48, seed=11)


@pytest.fixture()
def queries() -> np.ndarray:
    return make_anisotropic(40, 48, seed=12)


@pytest.fixture()
def index_url(tmp_path) -> str:
    return (tmp_path / "index").as_uri()


def test_single_level_search_equals_merged_shard_scores(index_url, corpus, queries):
    """Fan-out + merge gives exactly the global top-k of every shard's codec scores."""
    build_index(index_url, corpus, codecs=["semq4"], rows_per_shard=400)
    index = Index.open(index_url)
    assert len(index.shards) == 4 and index.rows == 1500
    scores, ids = index.search(queries, 7)
    parts = []
    for meta in index.shards:
        with index._store.open_read(meta.path) as f:
            shard = read_shard(f)
        lv = shard.levels[0]
        parts.append(lv.codec.score(queries, lv.codes, lv.params))
    expect_scores, expect_rows = topk(np.concatenate(parts, axis=1), 7)
    np.testing.assert_array_equal(ids, expect_rows)  # ids are 0..n-1 in row order
    np.testing.assert_allclose(scores, expect_scores, rtol=1e-6)


def test_deterministic_search_breaks_exact_ties_by_id_across_shards(index_url):
    """Coordinate permutations of a row tie exactly against a constant query (f16 codes
    restore each value exactly); with deterministic scores every machine returns the copies
    in id order, whichever shards they are in (BLAS scores order them by their last bits)."""
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((40, 64)) * rng.uniform(0.01, 3, 64)).astype(np.float32)
    copies = np.concatenate([x, x[:, ::-1], np.roll(x, 5, axis=1)])
    build_index(index_url, copies, codecs=["f16"], rows_per_shard=50)
    index = Index.open(index_url)
    q = np.full((1, 64), 0.125, dtype=np.float32)
    scores, ids = index.search(q, 30, deterministic=True)
    groups = ids[0].reshape(10, 3)
    assert (groups % 40 == groups[:, :1] % 40).all() and (np.diff(groups, axis=1) == 40).all()
    assert (scores[0].reshape(10, 3) == scores[0].reshape(10, 3)[:, :1]).all()
    fast, _ = index.search(q, 30)
    np.testing.assert_allclose(scores, fast, rtol=1e-5, atol=1e-5)


def test_multi_level_rerank_improves_on_scan_level(index_url, corpus, queries):
    build_index(index_url, corpus, codecs=["semq1", "semq8"], rows_per_shard=500)
    index = Index.open(index_url)
    _, truth = exact_knn(queries, corpus, 10)
    _, scan_only = index.search(queries, 10, rerank=0)
    _, reranked = index.search(queries, 10, rerank=100)
    scan_recall = knn_intersection_measure(scan_only, truth)
    rerank_recall = knn_intersection_measure(reranked, truth)
    assert rerank_recall > scan_recall + 0.05, (scan_recall, rerank_recall)
    assert rerank_recall >= 0.9


def test_rerank_scores_come_from_the_last_level(index_url, corpus, queries):
    build_index(index_url, corpus, codecs=["binary", "semq4"], rows_per_shard=1500)
    index = Index.open(index_url)
    scores, ids = index.search(queries[:3], 5, rerank=1500)   # every row is a candidate
    with index._store.open_read(index.shards[0].path) as f:
        fine = read_shard(f).levels[-1]
    full = fine.codec.score(queries[:3], fine.codes, fine.params)
    expect_scores, expect_ids = topk(full, 5)
    np.testing.assert_array_equal(ids, expect_ids)
    np.testing.assert_allclose(scores, expect_scores, rtol=1e-6)


def test_k_larger_than_index_pads(index_url, corpus):
    build_index(index_url, corpus[:6], codecs=["int8"])
    scores, ids = Index.open(index_url).search(corpus[:2], 10)
    assert ids.shape == (2, 10) and (ids[:, 6:] == -1).all() and (ids[:, :6] >= 0).all()
    assert np.isneginf(scores[:, 6:]).all() and np.isfinite(scores[:, :6]).all()


def test_string_ids(tmp_path, corpus):
    url = str(tmp_path / "strings")
    ids = [f"doc-{i:05d}" for i in range(300)]
    build_index(url, corpus[:300], ids=ids, codecs=["semq4"], rows_per_shard=128)
    index = Index.open(url)
    _, found = index.search(corpus[[5, 250]], 1)
    assert found[:, 0].tolist() == ["doc-00005", "doc-00250"]
    table = index.restore_table(ids=["doc-00003", "doc-00299", "missing"])
    assert sorted(table.column("id").to_pylist()) == ["doc-00003", "doc-00299"]


def test_search_rejects_bad_queries(index_url, corpus):
    build_index(index_url, corpus[:50], codecs=["semq2"])
    with pytest.raises(InputShapeError, match="dimension"):
        Index.open(index_url).search(np.zeros((1, 7), np.float32), 3)


def test_restore_streams_every_row_as_the_codec_decodes_it(index_url, corpus):
    build_index(index_url, corpus, codecs=["semq1", "semq4"], rows_per_shard=600)
    index = Index.open(index_url)
    got_ids, got_vectors = zip(*index.restore())
    assert len(got_ids) == 3                                   # one batch per shard
    ids = np.concatenate(got_ids)
    vectors = np.concatenate(got_vectors)
    np.testing.assert_array_equal(ids, np.arange(1500))
    codec = get_codec("semq4")
    first = corpus[:600]
    params = codec.fit(first)
    np.testing.assert_array_equal(vectors[:600], codec.decode(codec.encode(first, params),
                                                              params))
    error = np.linalg.norm(vectors - corpus, axis=1) / np.linalg.norm(corpus, axis=1)
    assert error.mean() < 0.2


def test_restore_subset_and_parquet_export(index_url, tmp_path, corpus):
    build_index(index_url, corpus, codecs=["int8"], rows_per_shard=500)
    index = Index.open(index_url)
    table = index.restore_table(ids=[3, 700, 1499, 99999])
    assert sorted(table.column("id").to_pylist()) == [3, 700, 1499]
    full = dict(zip(*(np.concatenate(a) for a in zip(*index.restore()))))
    for row in table.to_pylist():
        np.testing.assert_allclose(row["vector"], full[row["id"]], rtol=1e-6)
    dest = tmp_path / "restored.parquet"
    assert index.export_parquet(str(dest)) == 1500
    exported = pq.read_table(dest)
    assert exported.num_rows == 1500 and exported.column("id").to_pylist() == list(range(1500))
    assert exported.schema.field("vector").type.list_size == 48


def test_verify_names_the_corrupt_and_the_missing_shard(tmp_path, corpus):
    root = tmp_path / "index"
    build_index(str(root), corpus, codecs=["semq4"], rows_per_shard=500)
    index = Index.open(str(root))
    assert index.verify().ok
    first, second = (root / s.path for s in index.shards[:2])
    data = bytearray(first.read_bytes())
    data[len(data) // 2] ^= 0xFF
    first.write_bytes(bytes(data))
    second.unlink()
    report = Index.open(str(root)).verify()
    assert not report.ok and report.shards_checked == 3
    by_path = {p.path for p in report.problems}
    assert by_path == {index.shards[0].path, index.shards[1].path}
    assert any("SHA-256" in p.problem for p in report.problems if p.path == index.shards[0].path)


def test_versions_and_opening_an_older_version(index_url, corpus):
    build_index(index_url, corpus[:500], codecs=["semq2"], run_id="r1")
    build_index(index_url, corpus[:800], codecs=["semq2"], run_id="r2")
    latest = Index.open(index_url)
    assert latest.versions() == [1, 2] and latest.version == 2 and latest.rows == 800
    assert Index.open(index_url, 1).rows == 500
    with pytest.raises(IndexNotFoundError):
        Index.open(index_url, 3)


def test_open_missing_index(tmp_path):
    with pytest.raises(IndexNotFoundError):
        Index.open(str(tmp_path / "nothing-here"))


def test_diff_counts_ids_and_measures_drift(index_url, corpus):
    ids_v1 = np.arange(1000)
    build_index(index_url, corpus[:1000], ids=ids_v1, codecs=["semq4"], rows_per_shard=500,
                run_id="v1")
    # v2: the first shard unchanged; in the second, ids 500..599 removed, 2000..2099 added,
    # and the remaining rows moved a little.
    second = corpus[600:1000] * 1.02
    x2 = np.concatenate([corpus[:500], second, corpus[1000:1100]])
    ids_v2 = np.concatenate([np.arange(500), np.arange(600, 1000), np.arange(2000, 2100)])
    build_index(index_url, x2, ids=ids_v2, codecs=["semq4"], rows_per_shard=500, run_id="v2")
    report = Index.open(index_url, 1).diff(Index.open(index_url, 2), k=10, sample_queries=50)
    assert report.removed.tolist() == list(range(500, 600))
    assert report.added.tolist() == list(range(2000, 2100))
    # input fingerprints: exactly the rows whose input moved
    assert report.fingerprints and report.changed.tolist() == list(range(600, 1000))
    assert report.unchanged.tolist() == list(range(500))           # identical first shard
    assert report.drift_unchanged.max == 0 < report.drift_changed.mean
    assert 0 < report.drift_mean and report.drift_max < 1.0
    assert 0.5 < report.neighbor_overlap < 1.0
    same = Index.open(index_url, 2).diff(Index.open(index_url, 2))
    assert same.changed.size == 0 and same.neighbor_overlap == 1.0 and same.drift_max == 0
    assert same.unchanged.size == 1000


def test_shard_cache_is_bounded_by_bytes(tmp_path, corpus, queries):
    url = str(tmp_path / "many")
    build_index(url, corpus, codecs=["semq2"], rows_per_shard=100)     # 15 shards
    per_shard = 100 * (get_codec("semq2").code_bytes(48) + 8 + 8)  # codes, int64 ids, input fps
    index = Index.open(url, cache_bytes=2 * per_shard)
    expected = index.search(queries, 5)
    assert list(index._cache) == [s.path for s in index.shards[-2:]]
    tiny = Index.open(url, cache_bytes=1)          # every shard is over budget: none is kept
    got = tiny.search(queries, 5)
    assert not tiny._cache
    np.testing.assert_array_equal(got[1], expected[1])


@pytest.mark.parametrize("codecs", [["semq1", "semq4"], ["semq1", "semqr4"]])
def test_search_in_row_blocks_gives_identical_results(index_url, corpus, queries, monkeypatch,
                                                       codecs):
    build_index(index_url, corpus, codecs=codecs, rows_per_shard=500)
    index = Index.open(index_url)
    whole = index.search(queries, 5)
    # 1,500 scores at a time for 40 queries: blocks of 50 rows (the 50 candidates kept per
    # query), 10 per shard, each cut to the entries reaching the running top list; the
    # candidates are re-scored 30 queries at a time (1,500 // 50 candidates), or 5 for the
    # refining level (5 x min(5 x 50, 500) distinct rows <= 1,500)
    monkeypatch.setattr("semq_transforms.index.SCORE_BUDGET", 1500)
    chunked = index.search(queries, 5)
    np.testing.assert_array_equal(whole[1], chunked[1])
    # BLAS rounds differently for other block shapes: scores agree to float32 ulps.
    np.testing.assert_allclose(whole[0], chunked[0], rtol=1e-6)


def test_rerank_steps_hold_about_the_score_budget():
    for budget, keep, rows in itertools.product([1, 99, 1500, 1 << 22, 1 << 24], [1, 10, 100],
                                                [1, 100, 500, 65_536]):
        keep = min(keep, rows)
        plain = _rerank_step(budget, keep, rows, refines=False)
        refining = _rerank_step(budget, keep, rows, refines=True)
        assert plain * keep <= budget or plain == 1
        assert refining * min(refining * keep, rows) <= budget or refining == 1
        assert plain >= 1 and refining >= 1
    assert _rerank_step(1 << 22, 100, 65_536, refines=False) == 41_943    # all 256 at once
    assert _rerank_step(1 << 22, 100, 65_536, refines=True) == 204        # two steps of 256


@pytest.mark.parametrize("k", [0, -1, True, 2.0, "3"])
def test_search_rejects_bad_k(index_url, corpus, k):
    build_index(index_url, corpus[:50], codecs=["semq2"])
    with pytest.raises(InvalidInputError, match="k must be an int"):
        Index.open(index_url).search(corpus[:2], k)


def test_search_accepts_numpy_integers(index_url, corpus):
    build_index(index_url, corpus[:50], codecs=["semq2"])
    _, ids = Index.open(index_url).search(corpus[:2], np.int64(3), rerank=np.int32(5))
    assert ids.shape == (2, 3)


def test_build_search_verify_on_s3(s3_url, s3_storage_options, tmp_path, corpus, queries):
    """The whole query-time path against a real S3 endpoint (moto's server over loopback);
    the same build on local disk gives identical shards and identical search results."""
    build_index(s3_url, corpus, codecs=["semq1", "semq4"], rows_per_shard=700,
                storage_options=s3_storage_options)
    build_index(s3_url, corpus[:900], codecs=["semq1", "semq4"], rows_per_shard=700,
                run_id="second", storage_options=s3_storage_options)
    index = Index.open(s3_url, storage_options=s3_storage_options)
    assert index.versions() == [1, 2] and index.rows == 900
    local = build_index(str(tmp_path / "local"), corpus[:900], codecs=["semq1", "semq4"],
                        rows_per_shard=700, run_id="second")
    assert [s.file_sha256 for s in local.shards] == [s.file_sha256 for s in index.shards]
    scores, found = index.search(queries, 10)
    local_scores, local_found = Index.open(str(tmp_path / "local")).search(queries, 10)
    np.testing.assert_array_equal(found, local_found)
    np.testing.assert_array_equal(scores, local_scores)
    _, truth = exact_knn(queries, corpus[:900], 10)
    assert knn_intersection_measure(found, truth) >= 0.8
    assert index.verify().ok
    older = Index.open(s3_url, 1, storage_options=s3_storage_options)
    assert older.rows == 1500 and sum(len(i) for i, _ in older.restore()) == 1500
    assert older.diff(index, sample_queries=10).removed.size == 600
