import numpy as np
import pytest

from recsys_ablate.evaluation import catalogue
from recsys_ablate.evaluation.metrics import (Metric, ValidationUsers, mean_interval, per_user,
                                             per_user_recall_ndcg)
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
    assert half == pytest.approx(4.303 * 0.1 / np.sqrt(3), rel=1e-4)  # t(0.975, 2 df) = 4.3027
    assert mean_interval([0.5]) == (0.5, 0.0)


def test_per_user_sums_give_each_metric_back():
    # What the verdicts pair and resample: metric = sums.sum() / weights.sum().
    ranks = np.array([0, 5, 1, 150, 20])
    users = ValidationUsers.of(np.array([7, 7, 3, 3, 9]))  # users 3, 7, 9 -> 0, 1, 2
    sums, weights = per_user(Metric("top", 10), ranks, users)
    np.testing.assert_array_equal(sums, [1, 2, 0])
    np.testing.assert_array_equal(weights, [2, 2, 1])
    assert sums.sum() / weights.sum() == pytest.approx(np.mean(ranks < 10))  # examples weigh equally
    recall, ones = per_user(Metric("recall", 10), ranks, users)
    np.testing.assert_allclose(recall, [0.5, 1.0, 0.0])  # users weigh equally
    np.testing.assert_array_equal(ones, [1, 1, 1])
    ndcg, _ = per_user(Metric("ndcg", 10), ranks, users)
    assert ndcg.mean() == pytest.approx(per_user_recall_ndcg(ranks, np.array([7, 7, 3, 3, 9]), 10)[1])


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
