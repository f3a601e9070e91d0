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
