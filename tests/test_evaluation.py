import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys_ablate.evaluation import catalogue
from recsys_ablate.evaluation.metrics import retrieval_metrics
from tests.helpers import small_model

KS = (1, 5, 10, 50, 100)


def _tfrs_factorized_top_k(model, data, rows):
    """Validation top-K exactly as the TFRS tutorials compute it."""
    candidates = (tf.data.Dataset.from_tensor_slices({"movie": np.arange(data.num_movies, dtype=np.int32)})
                  .batch(128).map(model.candidate_tower))
    metric = tfrs.metrics.FactorizedTopK(candidates=candidates, ks=KS)
    for start in range(0, len(rows), 512):
        batch = rows[start:start + 512]
        queries = model.query_tower({"user": data.user[batch], "timestamp": data.timestamp[batch]})
        true = model.candidate_tower({"movie": data.movie[batch]})
        metric.update_state(queries, true)
    return dict(zip(KS, (float(v) for v in metric.result())))


def test_fast_evaluation_equals_tfrs_factorized_top_k(demo_data):
    _, data = demo_data
    model = small_model(data, ("movie_genres", "timestamp"))
    # Move off the initialisation, so scores are spread as in a trained model.
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.5))
    train = data.train[:8192]
    model.fit(tf.data.Dataset.from_tensor_slices(
        {"user": data.user[train], "movie": data.movie[train],
         "timestamp": data.timestamp[train]}).batch(1024),
        epochs=2, verbose=0)
    rows = data.validation[:3000]
    expected = _tfrs_factorized_top_k(model, data, rows)
    metrics, scores = catalogue.evaluate(model, data, catalogue.EvaluationSet(rows, rows),
                                         retrieval_metrics(KS))
    ranks = scores.ranks
    # The two sides compute the same float32 dot products through different
    # matmul shapes, so a candidate whose score equals the true one's up to
    # rounding may count as higher on one side only. Exact ranks in float64
    # bound every example's rank; only examples whose bound straddles K may
    # differ, and they must be rare.
    queries = model.query_tower({"user": data.user[rows], "timestamp": data.timestamp[rows]}).numpy()
    candidates = model.candidate_embeddings().numpy()
    scores = queries.astype(np.float64) @ candidates.T.astype(np.float64)
    positive = scores[np.arange(len(rows)), data.movie[rows]][:, None]
    rounding = 1e-5 * (np.abs(queries) @ np.abs(candidates).T).astype(np.float64)
    fewest, most = (scores > positive + rounding).sum(1), (scores > positive - rounding).sum(1)
    assert np.all((fewest <= ranks) & (ranks <= most))
    for k in KS:
        ambiguous = int(np.sum((fewest < k) & (most >= k)))
        assert ambiguous <= len(rows) // 300, (k, ambiguous)  # at most 0.3% of examples
        assert abs(metrics[f"top_{k}"] - expected[k]) <= ambiguous / len(rows) + 1e-6, (k, metrics, expected)
    assert 0 < metrics["top_100"] < 1 and metrics["top_1"] <= metrics["top_100"]
    assert ranks.shape == (3000,) and ranks.min() >= 0


def test_rank_counts_strictly_higher_scores():
    queries = tf.constant([[1.0, 0.0], [0.0, 1.0]])
    candidates = tf.constant([[3.0, 0.0], [2.0, 0.0], [1.0, 1.0], [0.0, 5.0]])
    true = tf.gather(candidates, [1, 2])
    ranks = catalogue._ranks(queries, true, candidates).numpy()
    assert list(ranks) == [1, 1]  # query 1: only 3.0 beats 2.0; query 2: only 5 beats 1 (ties don't count)
    assert catalogue.top_k_accuracy(np.array([0, 1, 5, 200]), (1, 5, 100)) == {
        "top_1": 0.25, "top_5": 0.5, "top_100": 0.75}
