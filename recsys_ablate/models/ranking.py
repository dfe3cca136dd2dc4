"""Ranking stage: predict the rating from the user and movie towers (TFRS ranking tutorial).

The towers are the retrieval model's (same features, same Dense sizes); their
outputs are concatenated and passed through an MLP 256-64-1 trained with MSE,
RMSE as the metric, on the same split as retrieval.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys_ablate.models.retrieval import CANDIDATE_KEYS, build_towers

MLP_SIZES = (256, 64, 1)


class RankingModel(tfrs.Model):
    """Rating prediction from the concatenated tower outputs.

    Args:
      query_tower, candidate_tower: Towers from `build_towers`.
      seed: Seed of the MLP initialisers.
    """

    def __init__(self, query_tower, candidate_tower, seed: int):
        super().__init__()
        self.query_tower = query_tower
        self.candidate_tower = candidate_tower
        self.rating_mlp = tf.keras.Sequential([
            tf.keras.layers.Dense(size, activation="relu" if i < len(MLP_SIZES) - 1 else None,
                                  kernel_initializer=tf.keras.initializers.GlorotUniform(seed + 200 + i))
            for i, size in enumerate(MLP_SIZES)])
        self.task = tfrs.tasks.Ranking(loss=tf.keras.losses.MeanSquaredError(),
                                       metrics=[tf.keras.metrics.RootMeanSquaredError()])

    def call(self, features):
        queries = self.query_tower({k: features[k] for k in self.query_tower.input_keys})
        candidates = self.candidate_tower({k: features[k] for k in CANDIDATE_KEYS})
        return self.rating_mlp(tf.concat([queries, candidates], axis=1))[:, 0]

    def compute_loss(self, features, training=False):
        return self.task(labels=features["rating"], predictions=self(features),
                         compute_metrics=not training)


def build_ranking_model(features, context, layer_sizes, seed: int) -> RankingModel:
    """Builds (and creates the variables of) a ranking model for a feature set."""
    query_tower, candidate_tower = build_towers(features, context, layer_sizes, seed)
    model = RankingModel(query_tower, candidate_tower, seed)
    model({**context.data.query_inputs(slice(0, 1)), "movie": np.zeros(1, np.int32)})
    return model


def rated_rows(data, rows: np.ndarray) -> np.ndarray:
    """The rows that have a rating (CSV data may have none)."""
    return rows[np.isfinite(data.rating[rows])]


def predict_ratings(model, queries: dict, movies, batch_size: int = 65536) -> np.ndarray:
    """Predicted ratings for (query inputs, movie row) pairs.

    Args:
      model: A `RankingModel`.
      queries: Query tower inputs, one row per pair (`EncodedDataset.query_inputs`).
      movies: Movie row per pair.
    """
    out = []
    for start in range(0, len(movies), batch_size):
        end = start + batch_size
        out.append(model({**{k: v[start:end] for k, v in queries.items()},
                          "movie": movies[start:end]}).numpy())
    return np.concatenate(out) if out else np.zeros(0, np.float32)


def validation_rmse(model, data, part: str = "validation") -> float:
    """Root mean squared error of the predicted ratings on a held-out part (validation or test)."""
    rows = rated_rows(data, getattr(data, part))
    predicted = predict_ratings(model, data.query_inputs(rows), data.movie[rows])
    return float(np.sqrt(np.mean((predicted - data.rating[rows]) ** 2)))
