"""The reference: a plain tutorial-style TFRS retrieval model (kept for benchmarks).

As in the TFRS basic/deep retrieval tutorials: string ids go through
`StringLookup` inside the towers on every step, the candidate id is the movie
title, tf.data shuffles string records, and validation top-K comes from
`tfrs.metrics.FactorizedTopK` over a dataset of candidate embeddings,
computed only when evaluating (`compute_metrics=not training`).
"""

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs


def dense_stack(layer_sizes):
    return [tf.keras.layers.Dense(size, activation="relu" if i < len(layer_sizes) - 1 else None)
            for i, size in enumerate(layer_sizes)]


class ReferenceModel(tfrs.Model):
    """User-id and title-id towers with Dense layers, TFRS Retrieval task.

    Args:
      user_ids: Vocabulary of user id strings.
      titles: Vocabulary (and candidate catalogue) of movie titles.
      embedding_size: Embedding width.
      layer_sizes: Dense sizes of each tower.
    """

    def __init__(self, user_ids, titles, embedding_size, layer_sizes):
        super().__init__()
        self.query_model = tf.keras.Sequential(
            [tf.keras.layers.StringLookup(vocabulary=user_ids, mask_token=None),
             tf.keras.layers.Embedding(len(user_ids) + 1, embedding_size)] + dense_stack(layer_sizes))
        self.candidate_model = tf.keras.Sequential(
            [tf.keras.layers.StringLookup(vocabulary=titles, mask_token=None),
             tf.keras.layers.Embedding(len(titles) + 1, embedding_size)] + dense_stack(layer_sizes))
        candidates = tf.data.Dataset.from_tensor_slices(titles).batch(128).map(self.candidate_model)
        self.task = tfrs.tasks.Retrieval(metrics=tfrs.metrics.FactorizedTopK(candidates=candidates))

    def compute_loss(self, features, training=False):
        return self.task(self.query_model(features["user_id"]), self.candidate_model(features["movie_title"]),
                         compute_metrics=not training)


def string_dataset(data, rows):
    """Tutorial-style records: user id and movie title strings."""
    return tf.data.Dataset.from_tensor_slices({
        "user_id": data.user_ids[data.user[rows]].astype(object),
        "movie_title": data.movie_titles[data.movie[rows]].astype(object)})


def build(data, embedding_size, layer_sizes, batch_size, learning_rate, seed):
    """Returns (model, train dataset, validation dataset)."""
    tf.keras.utils.set_random_seed(seed)
    train_users = np.unique(data.user_ids[data.user[data.train]])
    model = ReferenceModel(train_users, data.movie_titles, embedding_size, list(layer_sizes))
    model.compile(optimizer=tf.keras.optimizers.Adagrad(learning_rate))
    train = string_dataset(data, data.train).shuffle(len(data.train), seed=seed,
                                                      reshuffle_each_iteration=True).batch(batch_size)
    validation = string_dataset(data, data.validation).batch(4096).cache()
    return model, train, validation
