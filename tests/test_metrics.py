import numpy as np
import pytest

from recsys_ablate.evaluation import catalogue
from recsys_ablate.evaluation.metrics import (ItemPopularity, Metric, TopLists, ValidationUsers, compute,
                                             mean_interval, per_user, per_user_recall_ndcg, retrieval_metrics)
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
    full = catalogue.example_ranks(model, data, catalogue.EvaluationSet(rows, rows))
    excluded = catalogue.example_ranks(model, data,
                                       catalogue.EvaluationSet(rows, rows, catalogue.seen_movies(data)))
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


class _Split:
    """The fields of an encoded dataset that item popularity reads."""

    def __init__(self, movie, train, num_movies):
        self.movie, self.train, self.num_movies = np.asarray(movie), np.asarray(train), num_movies


def test_item_popularity_percentiles_and_tail_by_hand():
    # Training counts per item: [5, 0, 2, 2, 1] (item 4 also has a validation rating, not counted).
    movies = [0] * 5 + [2, 2, 3, 3, 4, 4]
    data = _Split(movies, np.arange(10), 5)
    popularity = ItemPopularity.of(data)
    np.testing.assert_array_equal(popularity.counts, [5, 0, 2, 2, 1])
    # Share of the 4 other items less often rated, ties half: item 0 beats all 4 -> 100; items 2 and 3
    # beat 2 and tie each other -> (2 + 0.5) / 4.
    np.testing.assert_allclose(popularity.percentile, [100, 0, 62.5, 62.5, 25])
    # The least-popular half: the 2 items with the fewest training interactions.
    np.testing.assert_array_equal(popularity.tail, [False, True, False, False, True])


def test_tail_coverage_and_popularity_by_hand():
    ranks = np.array([0, 20, 5, 3])
    users = np.array([0, 0, 1, 1])
    tail = np.array([True, True, False, True])  # example 2's item is popular
    lists = TopLists(users=np.array([0, 1]), popularity=np.array([[40.0, 45.0], [60.0, 55.0]]),
                     recommended=np.array([[1, 0, 2, 0, 0], [1, 1, 2, 1, 1]]))
    values = compute(retrieval_metrics((10,)), ranks, users, tail, lists)
    assert values["tail_10"] == pytest.approx(2 / 3)  # tail examples ranked 0, 20, 3
    assert values["coverage_10"] == pytest.approx(2 / 5) and values["coverage_100"] == 1.0
    assert values["popularity_10"] == pytest.approx(50.0) and values["popularity_100"] == pytest.approx(50.0)
    # Per-user sums give each back; coverage is not a per-user sum.
    by_user = ValidationUsers.of(users, tail)
    sums, weights = per_user(Metric("tail", 10), ranks, by_user, lists)
    np.testing.assert_array_equal(sums, [1, 1])
    np.testing.assert_array_equal(weights, [2, 1])
    sums, weights = per_user(Metric("popularity", 100, None), ranks, by_user, lists)
    assert sums.sum() / weights.sum() == pytest.approx(50.0)
    assert per_user(Metric("coverage", 10), ranks, by_user, lists) is None
    # Lists of other users than the examples' (a mismatch) are not paired.
    other = TopLists(np.array([0, 2]), lists.popularity, lists.recommended)
    assert per_user(Metric("popularity", 10, None), ranks, by_user, other) is None


def test_top_lists_equal_a_brute_force_top_k(demo_data):
    """Each user's list: the top 100 of the query of their latest validation rating, training movies
    excluded with --exclude_seen; popularity and coverage from those lists."""
    _, data = demo_data
    model = small_model(data, ("timestamp",))
    rows = data.validation[:800]
    popularity = ItemPopularity.of(data)
    candidates = model.candidate_embeddings().numpy().astype(np.float64)
    for exclude_seen in (False, True):
        seen = catalogue.seen_movies(data) if exclude_seen else None
        lists = catalogue.top_lists(model, data, catalogue.EvaluationSet(rows, rows, seen), popularity)
        users = np.unique(data.user[rows])
        np.testing.assert_array_equal(lists.users, users)
        recommended, expected = np.zeros((2, data.num_movies), int), np.zeros((len(users), 2))
        for i, user in enumerate(users):
            mine = rows[data.user[rows] == user]
            latest = mine[np.lexsort((mine, data.timestamp[mine]))][-1]
            query = model.query_tower(data.query_inputs(np.array([latest]), ("user", "timestamp")))
            scores = candidates @ query.numpy()[0].astype(np.float64)
            if exclude_seen:
                scores[data.movie[data.train][data.user[data.train] == user]] = -np.inf
            top = np.argsort(-scores, kind="stable")[:100]
            for j, k in enumerate((10, 100)):
                expected[i, j] = popularity.percentile[top[:k]].mean()
                recommended[j, top[:k]] += 1
        # float32 against float64 may swap a near-tie at the cut: every list but a rare one is exact.
        assert np.mean(np.isclose(lists.popularity, expected, rtol=0, atol=1e-9)) >= 0.99
        assert np.abs(lists.recommended - recommended).sum() <= 0.002 * recommended.sum()
        assert lists.recommended.sum(axis=1).tolist() == [10 * len(users), 100 * len(users)]
