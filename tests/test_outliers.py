"""One extreme row must not ruin its shard (the fit is robust to norm outliers).

Among 1,000 unit rows, one legal row of norm 1e10 or 1e15 used to stretch every fitted
range or rotate semq's frame until the other rows shared one code (recall@10 0.81 -> 0.14,
restored at median cosine 0.001). Now semq's mean and axes see rows shrunk to at most
``semq.NORM_CLIP`` times the median norm, and the range-fitting codecs (int8, int4, binary)
leave rows beyond ``calibration.OUTLIER_NORM`` times the median norm out of their fit.
"""

from __future__ import annotations

import numpy as np
import pytest

from semq_transforms.eval import exact_knn, recall_at_k
from semq_transforms.levels import encode_levels, level_base
from tests.conftest import make_anisotropic

CHAINS = [["semq1"], ["semq4"], ["semq8"], ["semq1", "semqr4"], ["int8"], ["int4"],
          ["binary"]]


def _quality(chain, x, queries):
    """recall@10 of the last level's scores over rows 1.. (the outlier is row 0), and the
    median cosine of those rows restored."""
    levels = encode_levels(x, chain)
    last = levels[-1]
    base = level_base(levels, -1)
    scores = last.codec.score(queries, last.codes, last.params, base=base)[:, 1:]
    restored = last.codec.decode(last.codes, last.params, base=base)[1:]
    others = x[1:]
    _, truth = exact_knn(queries, others, 10)
    got = np.argsort(-scores, axis=1, kind="stable")[:, :10]
    cos = np.sum(restored * others, 1) / (np.linalg.norm(restored, axis=1)
                                          * np.linalg.norm(others, axis=1))
    return recall_at_k(got, truth, 10), float(np.median(cos))


@pytest.mark.parametrize("chain", CHAINS, ids=lambda c: "+".join(c))
@pytest.mark.parametrize("norm", [1e10, 1e15])
def test_one_extreme_row_leaves_the_others_their_recall(chain, norm):
    x = make_anisotropic(1000, 128, seed=3)
    queries = make_anisotropic(100, 128, seed=4)
    clean_recall, clean_cos = _quality(chain, x, queries)
    spoiled = x.copy()
    spoiled[0] *= np.float32(norm)
    recall, cos = _quality(chain, spoiled, queries)
    assert recall >= clean_recall - 0.03, (chain, norm, recall, clean_recall)
    assert cos >= clean_cos - 0.01, (chain, norm, cos, clean_cos)
