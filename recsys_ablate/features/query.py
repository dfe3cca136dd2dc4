"""Query-tower features: user id, timestamp, age, gender, occupation."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from recsys_ablate.features.base import Feature, register
from recsys_ablate.features.layers import GatherThen

TIMESTAMP_BUCKETS = 1000


def training_rows_vocabulary(rows: np.ndarray, num_rows: int) -> tuple[np.ndarray, int]:
    """Maps rows seen in training to 1..k and all others to 0 (out of vocabulary).

    Returns:
      ([num_rows] int32 mapping table, k + 1 embedding rows).
    """
    seen = np.unique(rows)
    table = np.zeros(num_rows, np.int32)
    table[seen] = np.arange(1, len(seen) + 1, dtype=np.int32)
    return table, len(seen) + 1


def id_embedding(key: str, ids: np.ndarray, count: int, embedding_size: int, name: str):
    """Embedding of an id whose vocabulary is the ids seen in training.

    Args:
      key: Tower input holding the rows ("user" or "movie").
      ids: Rows seen in the training split.
      count: Number of rows in the table.
      embedding_size: Embedding width.
      name: Layer name.
    """
    table, rows = training_rows_vocabulary(ids, count)
    return GatherThen(key, table, tf.keras.layers.Embedding(rows, embedding_size), name=name)


def categorical_user_attribute(context, values: np.ndarray, name: str):
    """Embedding of a per-user categorical attribute, vocabulary from training users.

    Values never seen among training users share the out-of-vocabulary row.
    """
    train_users = np.unique(context.data.user[context.data.train])
    vocabulary = np.unique(values[train_users])
    index = np.searchsorted(vocabulary, values)
    index = np.clip(index, 0, len(vocabulary) - 1)
    table = np.where(vocabulary[index] == values, index + 1, 0).astype(np.int32)
    embedding = tf.keras.layers.Embedding(len(vocabulary) + 1, context.embedding_size)
    return GatherThen("user", table, embedding, name=name)


@register
class UserIdFeature(Feature):
    """Embedding of the user id (users without training ratings share one row)."""

    name, tower, always, inputs = "user_id", "query", True, ("user",)

    def layer(self):
        data = self.context.data
        return id_embedding("user", data.user[data.train], data.num_users, self.context.embedding_size,
                            "user_id")


class TimestampLayer(tf.keras.layers.Layer):
    """1000 equal-width bucket embedding plus the z-scored value (TFRS deep retrieval).

    Timestamps are shifted by the training minimum in int64 before the cast
    to float32, which would otherwise round 1e9-second values to ~64 s.
    """

    def __init__(self, origin: int, boundaries, mean: float, variance: float, embedding_size: int,
                 **kwargs):
        super().__init__(**kwargs)
        self.origin = origin
        self.discretization = tf.keras.layers.Discretization(bin_boundaries=list(boundaries))
        self.embedding = tf.keras.layers.Embedding(len(boundaries) + 1, embedding_size)
        self.normalization = tf.keras.layers.Normalization(mean=mean, variance=variance, axis=None)

    def call(self, inputs):
        seconds = tf.cast(inputs["timestamp"] - self.origin, tf.float32)
        return tf.concat([self.embedding(self.discretization(seconds)),
                          tf.reshape(self.normalization(seconds), (-1, 1))], axis=1)


@register
class TimestampFeature(Feature):
    """The rating's timestamp: bucket embedding and normalised value."""

    name, tower, inputs = "timestamp", "query", ("timestamp",)

    @classmethod
    def width(cls, embedding_size: int) -> int:
        return embedding_size + 1  # the bucket embedding and the normalised value

    def layer(self):
        train = self.context.data.timestamp[self.context.data.train]
        origin = int(train.min())
        shifted = (train - origin).astype(np.float64)
        boundaries = np.linspace(0.0, shifted.max(), num=TIMESTAMP_BUCKETS)
        return TimestampLayer(origin, boundaries, float(shifted.mean()), float(max(shifted.var(), 1e-12)),
                              self.context.embedding_size, name="timestamp")


@register
class UserAgeFeature(Feature):
    """Embedding of the user's age bucket."""

    name, tower, inputs = "user_age", "query", ("user",)

    def layer(self):
        return categorical_user_attribute(self.context, self.context.data.user_age, "user_age")


@register
class UserGenderFeature(Feature):
    """Embedding of the user's gender."""

    name, tower, inputs = "user_gender", "query", ("user",)

    def layer(self):
        return categorical_user_attribute(self.context, self.context.data.user_gender, "user_gender")


@register
class UserOccupationFeature(Feature):
    """Embedding of the user's occupation."""

    name, tower, inputs = "user_occupation", "query", ("user",)

    def layer(self):
        return categorical_user_attribute(self.context, self.context.data.user_occupation,
                                          "user_occupation")


@register
class UserPlaceboFeature(Feature):
    """A placebo: one learned vector, the same for every user.

    It reads the user input like any user feature but carries no information
    and adds no capacity (in front of a dense layer it is one more bias), so
    an ablation including it should find "no evidence" for it: a check of
    the verdicts on one's own data. (A random group per user is not a
    placebo: on the demo data 8 random groups cost about 0.01 top-100 in
    every seed.)
    """

    name, tower, inputs = "user_placebo", "query", ("user",)

    def layer(self):
        same_row = np.zeros(self.context.data.num_users, np.int32)
        embedding = tf.keras.layers.Embedding(1, self.context.embedding_size)
        return GatherThen("user", same_row, embedding, name="user_placebo")
