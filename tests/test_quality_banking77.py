"""Ranking quality on real sentence embeddings: Banking77 (MiniLM-L6-v2, d=384).

Corpus: the train split (10003 rows); queries: all 3080 test rows. Recall@10 is the
intersection measure of each codec's top-10 (by ``codec.score``) with the exact inner-product
top-10. Skips cleanly when the optional ../shared checkout is absent.
"""

from __future__ import annotations

import numpy as np
import pytest

from semq_transforms.codecs import get_codec
from semq_transforms.eval import exact_knn, recall_at_k

K = 10

#: spec -> (minimum recall@10, maximum bits per dimension, side data included).
REQUIREMENTS = {
    "semq1": (0.861, 1 + 0.34),
    "semq2": (0.934, 2 + 0.34),
    "semq4": (0.981, 4 + 0.34),
    "semq8": (0.998, 8 + 0.34),
    "int8": (0.995, 8.0),
    "int4": (0.93, 4.0),
}


@pytest.fixture(scope="module")
def banking(banking77_data):
    corpus = banking77_data["train_x"]
    queries = banking77_data["test_x"]
    _, truth = exact_knn(queries, corpus, K)
    return corpus, queries, truth


@pytest.mark.parametrize("spec", sorted(REQUIREMENTS))
def test_recall_at_10(spec, banking):
    corpus, queries, truth = banking
    min_recall, max_bits = REQUIREMENTS[spec]
    codec = get_codec(spec)
    assert codec.bits_per_dim(corpus.shape[1]) <= max_bits
    params = codec.fit(corpus)
    scores = codec.score(queries, codec.encode(corpus, params), params)
    recall = recall_at_k(scores, truth, K)
    assert recall >= min_recall, f"{spec}: recall@{K} {recall:.4f} < required {min_recall}"


def test_exact_scores_give_perfect_recall(banking):
    """Sanity check of the measure itself on the same data."""
    corpus, queries, truth = banking
    assert recall_at_k(queries @ corpus.T, truth, K) == 1.0
    assert recall_at_k(np.zeros((queries.shape[0], corpus.shape[0]), np.float32), truth, K) < 0.01


def test_multi_level_target_through_the_index(banking):
    """Issue 3's multi-level target: recall@10 >= 0.995 with <= 5.34 bits/dim stored (code
    bytes of every level, side data included), searched through ``Index.search`` with its
    default rerank."""
    from semq_transforms.build import build_index
    from semq_transforms.index import Index

    corpus, queries, truth = banking
    url = "memory://banking77-target/semq1-semqr4"
    build_index(url, corpus, codecs=["semq1", "semqr4"], rows_per_shard=corpus.shape[0])
    index = Index.open(url)
    shards = index.manifest.shards
    bits = sum(s.rows * s.code_bytes_per_row for s in shards) * 8 / (
        index.manifest.rows * corpus.shape[1])
    assert bits <= 5.34
    recall = recall_at_k(index.search(queries, K)[1], truth, K)
    assert recall >= 0.995, f"semq1+semqr4: recall@{K} {recall:.4f} < 0.995 at {bits:.3f} bits/dim"
