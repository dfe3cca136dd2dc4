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


@pytest.mark.parametrize("temperature", [1.0, 0.2])
@pytest.mark.parametrize("logq", [False, True])
@pytest.mark.parametrize("remove_hits", [False, True])
@pytest.mark.parametrize("negatives", [0, 7])
def test_objective_options_equal_tfrs_retrieval(temperature, logq, remove_hits, negatives):
    """Each objective option, alone and combined, against `tfrs.tasks.Retrieval` with the same option."""
    user_rows, movie_rows, user_table, movie_table = _batch_with_repeats(seed=3)
    rng = np.random.default_rng(7)
    probability = rng.dirichlet(np.ones(25)).astype(np.float32)  # per movie, as from training counts
    negative_rows = rng.integers(0, 25, negatives)  # some equal to batch movies: accidental hits
    negative_probability = np.full(negatives, negatives / (len(movie_rows) * 25), np.float32)
    with tf.GradientTape(persistent=True) as tape:
        columns = tf.concat([tf.gather(movie_table, movie_rows), tf.gather(movie_table, negative_rows)], 0)
        expected = tfrs.tasks.Retrieval(temperature=temperature, remove_accidental_hits=remove_hits)(
            tf.gather(user_table, user_rows), columns,
            candidate_sampling_probability=(np.concatenate([probability[movie_rows], negative_probability])
                                            if logq else None),
            candidate_ids=np.concatenate([movie_rows, negative_rows]) if remove_hits else None,
            compute_metrics=False)
        movies, movie_index, movie_counts = tf.unique_with_counts(movie_rows)
        users, user_index, user_counts = tf.unique_with_counts(user_rows)
        loss = DeduplicatedRetrieval(temperature=temperature, remove_accidental_hits=remove_hits)(
            tf.gather(user_table, users), user_index, user_counts,
            tf.gather(movie_table, movies), movie_index, movie_counts, candidate_ids=movies,
            candidate_log_q=tf.math.log(tf.gather(probability, movies)) if logq else None,
            negatives=tf.gather(movie_table, negative_rows) if negatives else None,
            negative_ids=negative_rows if negatives else None,
            negative_log_q=np.log(negative_probability) if logq and negatives else None)
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    for variable in (user_table, movie_table):
        got = tf.convert_to_tensor(tape.gradient(loss, variable))
        want = tf.convert_to_tensor(tape.gradient(expected, variable))
        np.testing.assert_allclose(got.numpy(), want.numpy(), rtol=1e-4, atol=1e-4)


def test_model_objective_equals_tfrs_retrieval_on_the_full_batch(demo_data, capsys):
    """The model's loss with every option on: temperature, logQ from training frequency, accidental hits
    removed, uniform negatives drawn from (seed, step)."""
    from recsys_ablate.settings import ObjectiveConfig
    from recsys_ablate.models.retrieval import build_model
    from tests.helpers import context_for

    _, data = demo_data
    objective = ObjectiveConfig(temperature=0.5, logq_correction=True, remove_accidental_hits=True,
                                uniform_negatives=16)
    model = build_model(("movie_genres",), context_for(data), (16, 8), 3, objective)
    if native_available():
        assert "remove_accidental_hits is computed with TensorFlow ops" in capsys.readouterr().err
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    rows = data.train[:512]
    batch = {"user": data.user[rows], "movie": data.movie[rows], "timestamp": data.timestamp[rows]}
    negatives = tf.random.stateless_uniform([16], tf.constant([3, 0], tf.int32), minval=0,
                                            maxval=data.num_movies, dtype=tf.int32)
    frequency = np.bincount(data.movie[data.train], minlength=data.num_movies) / len(data.train)
    movies = np.concatenate([data.movie[rows], negatives.numpy()])
    uniform = np.full(16, 16 / (512 * data.num_movies))
    probability = np.concatenate([frequency[data.movie[rows]], uniform]).astype(np.float32)
    expected = tfrs.tasks.Retrieval(temperature=0.5, remove_accidental_hits=True)(
        model.query_tower(batch), model.candidate_tower({"movie": movies}),
        candidate_sampling_probability=probability, candidate_ids=movies, compute_metrics=False)
    assert float(model.compute_loss(batch)) == pytest.approx(float(expected), rel=1e-5)


def native_available():
    from recsys_ablate import native

    return native.in_batch_softmax_op() is not None
