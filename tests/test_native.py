"""The native kernels: same values as TensorFlow ops, and a clear fallback."""

import numpy as np
import pytest
import tensorflow as tf

from recsys_ablate.evaluation import catalogue

from recsys_ablate import native
from recsys_ablate.models.retrieval_loss import DeduplicatedRetrieval

# The kernels step aside where a GPU is visible (native/__init__.py: a CPU kernel would copy tensors to the
# host every step), so there is nothing of theirs to test there; CI and the CPU machines run these.
pytestmark = pytest.mark.skipif(bool(tf.config.list_logical_devices("GPU")),
                                reason="a GPU is visible: the native CPU kernels are not used here")


@pytest.fixture
def fresh_op(monkeypatch):
    """The kernels looked up again under the test's environment, and after it."""
    native._library.cache_clear()
    yield monkeypatch
    monkeypatch.undo()
    native._library.cache_clear()


def _composed(queries, candidates, weights, log_counts):
    logits = tf.matmul(queries, candidates, transpose_b=True) + log_counts
    return tf.reduce_sum(weights * tf.reduce_logsumexp(logits, axis=1))


# 20 rows: one block; 300 and 2,000 rows: several blocks, and one shard per
# TensorFlow thread (a partial last block included).
@pytest.mark.parametrize("rows, columns", [(20, 7), (300, 41), (2000, 1150)])
def test_kernel_equals_composed_loss_and_gradients(rows, columns):
    op = native.in_batch_softmax_op()
    assert op is not None, "the kernel did not build on this machine (see the warning above)"
    rng = np.random.default_rng(rows)
    queries = tf.constant(rng.normal(size=(rows, 32)).astype(np.float32))
    candidates = tf.constant(rng.normal(size=(columns, 32)).astype(np.float32))
    weights = tf.constant(rng.integers(1, 4, rows).astype(np.float32))
    log_counts = tf.math.log(tf.constant(rng.integers(1, 6, columns).astype(np.float32)))
    loss, query_gradient, candidate_gradient = op(queries, candidates, weights, log_counts)
    with tf.GradientTape() as tape:
        tape.watch([queries, candidates])
        expected = _composed(queries, candidates, weights, log_counts)
    want_query, want_candidate = tape.gradient(expected, [queries, candidates])
    assert float(loss) == pytest.approx(float(expected), rel=1e-5)
    np.testing.assert_allclose(query_gradient.numpy(), want_query.numpy(), rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(candidate_gradient.numpy(), want_candidate.numpy(), rtol=1e-4, atol=1e-4)
    # Same inputs, same thread count: bit-identical (resumed runs depend on it).
    again = op(queries, candidates, weights, log_counts)
    assert np.array_equal(again[2].numpy(), candidate_gradient.numpy())


def test_loss_layer_gives_the_same_values_with_and_without_the_kernel(fresh_op):
    rng = np.random.default_rng(3)
    tables = [tf.Variable(rng.normal(size=(n, 16)).astype(np.float32)) for n in (50, 30)]
    user_rows, movie_rows = rng.integers(0, 50, 400), rng.integers(0, 30, 400)

    def loss_and_gradients():
        with tf.GradientTape() as tape:
            users, user_index, user_counts = tf.unique_with_counts(user_rows)
            movies, movie_index, movie_counts = tf.unique_with_counts(movie_rows)
            loss = DeduplicatedRetrieval()(tf.gather(tables[0], users), user_index, user_counts,
                                           tf.gather(tables[1], movies), movie_index, movie_counts)
        return float(loss), [tf.convert_to_tensor(g).numpy() for g in tape.gradient(loss, tables)]

    fused_loss, fused_gradients = loss_and_gradients()
    fresh_op.setenv(native.SWITCH, "0")
    native._library.cache_clear()
    assert native.in_batch_softmax_op() is None and native.count_higher_scores_op() is None
    composed_loss, composed_gradients = loss_and_gradients()
    assert fused_loss == pytest.approx(composed_loss, rel=1e-5)
    for fused, composed in zip(fused_gradients, composed_gradients):
        np.testing.assert_allclose(fused, composed, rtol=1e-4, atol=1e-5)


def test_failed_build_warns_once_and_falls_back(fresh_op, tmp_path, capsys):
    fresh_op.setenv("XDG_CACHE_HOME", str(tmp_path))
    fresh_op.setenv("CXX", "false")  # a "compiler" that always fails
    assert native.in_batch_softmax_op() is None
    assert native.in_batch_softmax_op() is None
    assert native.count_higher_scores_op() is None
    err = capsys.readouterr().err
    assert err.count("warning: native kernels unavailable (building them into") == 1
    assert "training and evaluation use TensorFlow ops" in err and native.SWITCH in err
    assert not list(tmp_path.rglob("*.so")) and not list(tmp_path.rglob("*.tmp"))


def test_missing_compiler_warns_and_falls_back(fresh_op, tmp_path, capsys):
    fresh_op.setenv("CXX", "")
    fresh_op.setenv("PATH", str(tmp_path))  # no g++ or c++ on it
    assert native.in_batch_softmax_op() is None
    assert "no C++ compiler (g++) found" in capsys.readouterr().err


# 5 queries: one partial block; 3,000: many blocks over the thread pool.
@pytest.mark.parametrize("rows", [5, 3000])
def test_rank_kernel_equals_composed_count(rows):
    op = native.count_higher_scores_op()
    assert op is not None, "the kernel did not build on this machine (see the warning above)"
    rng = np.random.default_rng(rows)
    # Small integers: every dot product is exact in float32 whatever the
    # summation order, so both sides must agree exactly, on the many exact
    # ties with the true score (which never count) too.
    queries = tf.constant(rng.integers(-3, 4, (rows, 32)).astype(np.float32))
    candidates = tf.constant(rng.integers(-3, 4, (500, 32)).astype(np.float32))
    true = tf.gather(candidates, rng.integers(0, 500, rows))
    got = catalogue._ranks(queries, true, candidates, None, op).numpy()
    want = catalogue._ranks(queries, true, candidates).numpy()
    exact = queries.numpy().astype(np.int64) @ candidates.numpy().T.astype(np.int64)
    positive = np.sum(queries.numpy().astype(np.int64) * true.numpy().astype(np.int64), axis=1)
    assert np.array_equal(got, (exact > positive[:, None]).sum(1)) and np.array_equal(got, want)
    nan_query = tf.tensor_scatter_nd_update(queries, [[0]], [tf.fill([32], np.nan)])
    assert catalogue._ranks(nan_query, true, candidates, None, op).numpy()[0] == 500  # a miss


# 5 queries: one partial block; 3,000: many blocks over the pool; k from 1 to the whole catalogue.
@pytest.mark.parametrize("rows, k", [(5, 100), (3000, 100), (37, 500), (3000, 1)])
def test_top_scores_kernel_gives_tensorflow_top_k_order(rows, k):
    op = native.top_scores_op()
    assert op is not None, "the kernel did not build on this machine (see the warning above)"
    rng = np.random.default_rng(rows + k)
    # Small integers: exact scores whatever the summation order, and many exact ties, which both sides
    # must break the same way (the lower index first).
    queries = tf.constant(rng.integers(-3, 4, (rows, 32)).astype(np.float32))
    candidates = tf.constant(rng.integers(-3, 4, (500, 32)).astype(np.float32))
    got = catalogue._top_items(queries, candidates, k, None, op).numpy()
    want = catalogue._top_items(queries, candidates, k).numpy()
    exact = queries.numpy().astype(np.int64) @ candidates.numpy().T.astype(np.int64)
    by_score_then_index = np.lexsort((np.broadcast_to(np.arange(500), exact.shape), -exact), axis=1)[:, :k]
    assert np.array_equal(got, want) and np.array_equal(got, by_score_then_index)
    # A NaN query (a diverged model) scores every candidate NaN, ranked as -inf: the lowest indices.
    nan_query = tf.tensor_scatter_nd_update(queries, [[0]], [tf.fill([32], np.nan)])
    assert np.array_equal(op(nan_query, candidates, k).numpy()[0], np.arange(k))
    with pytest.raises(tf.errors.InvalidArgumentError, match="k must be between 1 and the number"):
        op(queries, candidates, 501)


# 1 user: one partial block; 700 users, some with no examples and one with many: blocks over the pool.
@pytest.mark.parametrize("users", [1, 700])
def test_grouped_rank_kernel_equals_one_query_per_example(users):
    grouped, op = native.count_higher_scores_grouped_op(), native.count_higher_scores_op()
    assert grouped is not None, "the kernel did not build on this machine (see the warning above)"
    rng = np.random.default_rng(users)
    queries = rng.integers(-3, 4, (users, 32)).astype(np.float32)
    candidates = tf.constant(rng.integers(-3, 4, (500, 32)).astype(np.float32))
    counts = rng.integers(0, 6, users)
    counts[-1] = 40
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    example_query = np.repeat(np.arange(users), counts)
    true = tf.gather(candidates, rng.integers(0, 500, len(example_query)))
    positive = tf.reduce_sum(tf.gather(queries, example_query) * true, axis=1)
    got = grouped(queries, candidates, starts, positive).numpy()
    want = catalogue._ranks(tf.gather(queries, example_query), true, candidates, None, op).numpy()
    assert np.array_equal(got, want)
    with pytest.raises(tf.errors.InvalidArgumentError, match="group starts"):
        grouped(queries, candidates, starts[::-1].copy(), positive)


def test_evaluation_groups_examples_by_user_with_the_same_ranks(monkeypatch, demo_data):
    from tests.helpers import small_model

    _, data = demo_data
    model = small_model(data, ("movie_genres",))
    validation = catalogue.EvaluationSet(data.validation, data.validation)
    grouped = catalogue.example_ranks(model, data, validation)
    monkeypatch.setattr(catalogue, "count_higher_scores_grouped_op", lambda: None)
    assert np.array_equal(grouped, catalogue.example_ranks(model, data, validation))
