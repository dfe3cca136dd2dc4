"""Small Keras layers the features share."""

from __future__ import annotations

import numpy as np
import tensorflow as tf


class GatherThen(tf.keras.layers.Layer):
    """Gathers per-row attributes from a constant table, then applies a layer.

    Precomputing per-user/per-movie attributes once and gathering them by row
    keeps strings and lookups out of the per-step path. The table gets one
    all-zero row at the end: row `rows` stands for an unknown user or movie
    (an exported model maps ids it has never seen there), and zero is every
    feature's out-of-vocabulary value.

    Args:
      key: Tower input holding the rows ("user" or "movie").
      table: [rows, ...] numpy array of attributes.
      inner: Layer applied to the gathered attributes.
    """

    def __init__(self, key: str, table: np.ndarray, inner: tf.keras.layers.Layer, **kwargs):
        super().__init__(**kwargs)
        self.key = key
        table = np.asarray(table)
        self.table = tf.constant(np.concatenate([table, np.zeros((1,) + table.shape[1:], table.dtype)]))
        self.inner = inner

    def call(self, inputs):
        return self.inner(tf.gather(self.table, inputs[self.key]))


class MaskedMeanEmbedding(tf.keras.layers.Layer):
    """Mean of the embeddings of non-zero token ids (zero is padding).

    The padded [rows, max tokens] ids become a sparse tensor first: ML-1M
    titles hold 4 tokens on average in 16 columns, so looking up only the real
    tokens gathers, and sends sparse updates to, a quarter of the rows. A row
    without tokens (the unknown-movie row) gets zeros.

    Args:
      vocabulary_size: Number of token ids, padding included.
      embedding_size: Width of the embeddings.
    """

    def __init__(self, vocabulary_size: int, embedding_size: int, **kwargs):
        super().__init__(**kwargs)
        self.embedding = tf.keras.layers.Embedding(vocabulary_size, embedding_size)

    def build(self, input_shape):
        self.embedding.build(input_shape)
        super().build(input_shape)

    def call(self, tokens):
        return tf.nn.safe_embedding_lookup_sparse(self.embedding.embeddings, tf.sparse.from_dense(tokens),
                                                  combiner="mean")


class MultiHotMean(tf.keras.layers.Layer):
    """Mean of the embeddings of the active columns of a multi-hot vector.

    Args:
      num_columns: Width of the multi-hot input.
      embedding_size: Width of the embeddings.
    """

    def __init__(self, num_columns: int, embedding_size: int, **kwargs):
        super().__init__(**kwargs)
        self.num_columns = num_columns
        self.embedding_size = embedding_size

    def build(self, input_shape):
        self.embeddings = self.add_weight(
            name="embeddings", shape=(self.num_columns, self.embedding_size),
            initializer="uniform")

    def call(self, multi_hot):
        multi_hot = tf.cast(multi_hot, tf.float32)
        counts = tf.maximum(tf.reduce_sum(multi_hot, axis=1, keepdims=True), 1.0)
        return tf.matmul(multi_hot, self.embeddings) / counts
