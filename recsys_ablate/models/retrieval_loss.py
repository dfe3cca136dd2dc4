"""TFRS's in-batch softmax retrieval loss, computed over the distinct rows of a batch.

`tfrs.tasks.Retrieval` scores every query of a batch against every candidate
of the batch: a B x B logit matrix whose softmax, forward and backward, is
most of a training step (B = 2048 in the deep dive). A batch of 2048 ML-1M
ratings holds only ~1,150 distinct movies and, when the query tower reads
nothing but the user id, ~1,150 distinct users (measured on the shared
subset). Identical rows give identical embeddings, so the same loss follows
from the matrix of distinct queries x distinct candidates:

  loss = sum_i [ -s(q_i, c_i) + log sum_j exp s(q_i, c_j) ]
       = sum_u m_u log sum_v n_v exp s(q_u, c_v)  -  sum_i s(q_i, c_i)

where u, v run over the distinct queries and candidates, m_u and n_v count
their occurrences in the batch. Duplicate candidates stay negatives, exactly
as in `Retrieval` without `remove_accidental_hits`; the reduction is a sum,
as there. The logit matrix shrinks to the distinct candidates (and, when the
query tower reads only the user, the distinct users); BENCHMARKS.md has the
measured step times.

The first term runs in a fused native kernel (`recsys_ablate/native`) when it
builds on the machine: logits, softmax and both gradient products per block
of rows, in cache. Otherwise it is composed from TensorFlow ops, with the
same values.
"""

from __future__ import annotations

import tensorflow as tf

from recsys_ablate.native import in_batch_softmax_op


class DeduplicatedRetrieval(tf.keras.layers.Layer):
    """The loss of `tfrs.tasks.Retrieval()` from distinct query and candidate embeddings.

    Equal to `tfrs.tasks.Retrieval()(queries[query_index],
    candidates[candidate_index])` (default arguments, no metrics), with the
    same gradients, up to float rounding.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        # Resolved (and built, the first time on a machine) with the model,
        # so the build is not counted in the first epoch's time and ETA.
        self._fused = in_batch_softmax_op()

    def call(self, queries: tf.Tensor, query_index: tf.Tensor, query_counts: tf.Tensor,
             candidates: tf.Tensor, candidate_index: tf.Tensor, candidate_counts: tf.Tensor) -> tf.Tensor:
        """Returns the summed in-batch softmax loss of a batch.

        Args:
          queries: [distinct queries, d] query embeddings.
          query_index: [batch] row of each example's query in `queries`.
          query_counts: [distinct queries] examples per query row.
          candidates: [distinct candidates, d] candidate embeddings.
          candidate_index: [batch] row of each example's candidate.
          candidate_counts: [distinct candidates] examples per candidate row.

        Returns:
          Scalar loss.
        """
        weights = tf.cast(query_counts, queries.dtype)
        log_counts = tf.math.log(tf.cast(candidate_counts, candidates.dtype))
        fused = self._fused if queries.dtype == tf.float32 else None
        if fused is None:
            logits = tf.matmul(queries, candidates, transpose_b=True) + log_counts
            normalisers = tf.reduce_sum(weights * tf.reduce_logsumexp(logits, axis=1))
        else:
            normalisers = _fused_normalisers(fused, queries, candidates, weights, log_counts)
        positives = tf.reduce_sum(
            tf.gather(queries, query_index) * tf.gather(candidates, candidate_index), axis=1)
        return normalisers - tf.reduce_sum(positives)


def _fused_normalisers(op, queries, candidates, weights, log_counts):
    """sum_u weights_u logsumexp_v (q_u . c_v + log_counts_v), through the native kernel.

    The kernel returns the gradients with the value (they reuse its softmax),
    so the backward pass only scales them.
    """

    @tf.custom_gradient
    def normalisers(queries, candidates):
        loss, query_gradient, candidate_gradient = op(queries, candidates, weights, log_counts)
        return loss, lambda upstream: (upstream * query_gradient, upstream * candidate_gradient)

    return normalisers(queries, candidates)
