import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys_ablate.models.retrieval_loss import DeduplicatedRetrieval
from tests.helpers import small_model


def _batch_with_repeats(size=300, users=40, movies=25, dim=8, seed=0):
    rng = np.random.default_rng(seed)
    user_rows = rng.integers(0, users, size)
    movie_rows = rng.zipf(1.5, size) % movies  # popular movies repeat, as in ratings
    user_table = tf.Variable(rng.normal(size=(users, dim)).astype(np.float32))
    movie_table = tf.Variable(rng.normal(size=(movies, dim)).astype(np.float32))
    return user_rows, movie_rows, user_table, movie_table


@pytest.mark.parametrize("distinct_queries", [True, False])
def test_equals_tfrs_retrieval_loss_and_gradients(distinct_queries):
    user_rows, movie_rows, user_table, movie_table = _batch_with_repeats()
    with tf.GradientTape(persistent=True) as tape:
        expected = tfrs.tasks.Retrieval()(tf.gather(user_table, user_rows),
                                          tf.gather(movie_table, movie_rows),
                                          compute_metrics=False)
        movies, movie_index, movie_counts = tf.unique_with_counts(movie_rows)
        if distinct_queries:
            users, user_index, user_counts = tf.unique_with_counts(user_rows)
        else:
            users, user_index, user_counts = user_rows, tf.range(
                len(user_rows)), tf.ones(len(user_rows), tf.int32)
        assert len(movies) < len(movie_rows) / 2  # the batch really has repeats
        loss = DeduplicatedRetrieval()(tf.gather(user_table, users), user_index, user_counts,
                                       tf.gather(movie_table, movies), movie_index, movie_counts)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    for variable in (user_table, movie_table):
        got = tf.convert_to_tensor(tape.gradient(loss, variable))
        want = tf.convert_to_tensor(tape.gradient(expected, variable))
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("features, query_is_per_user", [((), True), (("timestamp",), False),
                                                          (("movie_genres", "user_age"), True)])
def test_model_loss_is_tfrs_retrieval_on_the_full_batch(demo_data, features, query_is_per_user):
    _, data = demo_data
    model = small_model(data, features, (16, 8))
    assert (model.query_tower.input_keys == ("user",)) == query_is_per_user
    assert model.candidate_tower.input_keys == ("movie",)
    rows = data.train[:512]
    batch = {"user": data.user[rows], "movie": data.movie[rows], "timestamp": data.timestamp[rows]}
    queries = model.query_tower(batch)
    candidates = model.candidate_tower(batch)
    expected = tfrs.tasks.Retrieval()(queries, candidates, compute_metrics=False)
    assert float(model.compute_loss(batch)) == pytest.approx(float(expected), rel=1e-5)
