import numpy as np
import pytest

from recsys_ablate.evaluation import catalogue
from recsys_ablate.evaluation.metrics import mean_interval, paired_bootstrap, per_user_recall_ndcg
from tests.helpers import small_model


def test_recall_and_ndcg_per_user_by_hand():
    # user 0: ranks 0 and 5 -> recall@3 = 1/2, ndcg@3 = (1/log2(2)) / (1/log2(2) + 1/log2(3))
    # user 1: rank 1 -> recall@3 = 1, ndcg@3 = (1/log2(3)) / 1
    ranks = np.array([0, 5, 1])
    users = np.array([0, 0, 1])
    recall, ndcg = per_user_recall_ndcg(ranks, users, 3)
    assert recall == pytest.approx((0.5 + 1.0) / 2)
    assert ndcg == pytest.approx((1.0 / (1.0 + 1.0 / np.log2(3)) + 1.0 / np.log2(3)) / 2)


def test_mean_interval_uses_student_t():
    mean, half = mean_interval([0.1, 0.2, 0.3])
    assert mean == pytest.approx(0.2)
    assert half == pytest.approx(4.303 * 0.1 / np.sqrt(3))
    assert mean_interval([0.5]) == (0.5, 0.0)


def test_paired_bootstrap_finds_a_real_gain_and_not_a_null_one():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(400), 10)
    base = (rng.random(4000) < 0.2).astype(float)
    better = np.maximum(base, (rng.random(4000) < 0.1).astype(float))  # strictly more hits
    result = paired_bootstrap(better, base, users, samples=1000)
    assert result["difference"] == pytest.approx(better.mean() - base.mean())
    assert 0 < result["low"] < result["difference"] < result["high"]
    assert result["p_value"] < 0.01
    shuffled = base[rng.permutation(4000)]  # same hit rate, no real difference
    null = paired_bootstrap(shuffled, base, users, samples=1000)
    assert null["low"] < 0 < null["high"] and null["p_value"] > 0.05


def test_exclude_seen_drops_only_the_users_training_movies(demo_data):
    _, data = demo_data
    model = small_model(data)
    rows = data.validation[:500]
    full = catalogue.example_ranks(model, data, rows)
    excluded = catalogue.example_ranks(model, data, rows, exclude_seen=True)
    assert (excluded <= full).all() and (excluded < full).any()
    # By hand for one example: remove the user's training movies (not the true one) and count.
    i = int(np.argmax(full - excluded))
    row = rows[i]
    candidates = model.candidate_embeddings().numpy()
    query = model.query_tower({"user": data.user[[row]], "timestamp": data.timestamp[[row]]}).numpy()[0]
    scores = candidates @ query
    seen = set(data.movie[data.train][data.user[data.train] == data.user[row]]) - {data.movie[row]}
    true_score = float(np.sum(query * candidates[data.movie[row]]))
    expected = sum(1 for m in range(data.num_movies) if m not in seen and scores[m] > true_score)
    assert excluded[i] == expected
