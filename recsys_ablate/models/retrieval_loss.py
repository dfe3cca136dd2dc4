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

import sys

import numpy as np
import tensorflow as tf

from recsys_ablate.native import in_batch_softmax_op


# TFRS's value for a removed logit (`tfrs.layers.loss.MIN_FLOAT`): exp of it is 0 in float32.
MIN_FLOAT = np.finfo(np.float32).min / 100.0


class DeduplicatedRetrieval(tf.keras.layers.Layer):
    """The loss of `tfrs.tasks.Retrieval` from distinct query and candidate embeddings.

    Equal to `tfrs.tasks.Retrieval(temperature, remove_accidental_hits)(
    queries[query_index], concat(candidates[candidate_index], negatives),
    candidate_sampling_probability=exp(concat(candidate_log_q[candidate_index],
    negative_log_q)), candidate_ids=...)` (no metrics), with the same
    gradients, up to float rounding. With the defaults it is the plain
    `Retrieval()` loss, computed as before.

    Args:
      temperature: Scores are divided by it.
      remove_accidental_hits: Another example's candidate equal to an
        example's own is not its negative. The fused kernel cannot express
        this per-example change, so the loss is composed from TensorFlow ops
        (one printed line says so).
    """

    def __init__(self, temperature: float = 1.0, remove_accidental_hits: bool = False, **kwargs):
        super().__init__(**kwargs)
        self.temperature = temperature
        self.remove_accidental_hits = remove_accidental_hits
        # Resolved (and built, the first time on a machine) with the model,
        # so the build is not counted in the first epoch's time and ETA.
        self._fused = in_batch_softmax_op()
        if remove_accidental_hits and self._fused is not None:
            print("note: remove_accidental_hits is computed with TensorFlow ops (the fused in-batch softmax "
                  "kernel cannot express it): slower steps, same loss", file=sys.stderr)
            self._fused = None

    def call(self, queries: tf.Tensor, query_index: tf.Tensor, query_counts: tf.Tensor,
             candidates: tf.Tensor, candidate_index: tf.Tensor, candidate_counts: tf.Tensor,
             candidate_ids=None, candidate_log_q=None, negatives=None, negative_ids=None,
             negative_log_q=None) -> tf.Tensor:
        """Returns the summed in-batch softmax loss of a batch.

        Args:
          queries: [distinct queries, d] query embeddings.
          query_index: [batch] row of each example's query in `queries`.
          query_counts: [distinct queries] examples per query row.
          candidates: [distinct candidates, d] candidate embeddings.
          candidate_index: [batch] row of each example's candidate.
          candidate_counts: [distinct candidates] examples per candidate row.
          candidate_ids: [distinct candidates] ids (needed to remove accidental hits).
          candidate_log_q: [distinct candidates] log sampling probability
            (logQ correction: subtracted from their logits), or None.
          negatives: [n, d] extra negative candidates (uniformly sampled), or None.
          negative_ids: [n] their ids.
          negative_log_q: [n] their log sampling probability, or None.

        Returns:
          Scalar loss.
        """
        if self.temperature != 1.0:
            queries = queries / self.temperature
        correction = tf.zeros_like(candidate_counts, queries.dtype) if candidate_log_q is None else -tf.cast(
            candidate_log_q, queries.dtype)
        bias = tf.math.log(tf.cast(candidate_counts, candidates.dtype)) + correction
        columns = candidates
        if negatives is not None:
            columns = tf.concat([candidates, negatives], axis=0)
            negative_bias = (tf.zeros([tf.shape(negatives)[0]], queries.dtype) if negative_log_q is None
                             else -tf.cast(negative_log_q, queries.dtype))
            bias = tf.concat([bias, negative_bias], axis=0)
        positives = tf.reduce_sum(
            tf.gather(queries, query_index) * tf.gather(candidates, candidate_index), axis=1)
        positives = positives + tf.gather(correction, candidate_index)
        if self.remove_accidental_hits:
            normalisers = self._without_accidental_hits(queries, query_index, columns, bias, candidate_index,
                                                        candidate_counts, candidate_ids, negative_ids)
        elif self._fused is not None and queries.dtype == tf.float32:
            weights = tf.cast(query_counts, queries.dtype)
            normalisers = _fused_normalisers(self._fused, queries, columns, weights, bias)
        else:
            weights = tf.cast(query_counts, queries.dtype)
            logits = tf.matmul(queries, columns, transpose_b=True) + bias
            normalisers = tf.reduce_sum(weights * tf.reduce_logsumexp(logits, axis=1))
        return normalisers - tf.reduce_sum(positives)

    @staticmethod
    def _without_accidental_hits(queries, query_index, columns, bias, candidate_index, candidate_counts,
                                 candidate_ids, negative_ids):
        """Per example: its own candidate counted once, other occurrences of its id (in-batch duplicates,
        sampled negatives) removed, as TFRS's `RemoveAccidentalHits` does on the full matrix."""
        distinct = tf.shape(candidate_counts)[0]
        logits = tf.matmul(tf.gather(queries, query_index), columns, transpose_b=True) + bias
        own = tf.one_hot(candidate_index, tf.shape(columns)[0], dtype=logits.dtype)
        own_count = tf.math.log(tf.cast(tf.gather(candidate_counts, candidate_index), logits.dtype))
        logits = logits - own * own_count[:, None]
        if negative_ids is not None:
            example_ids = tf.gather(candidate_ids, candidate_index)
            hit = tf.cast(tf.equal(example_ids[:, None], tf.cast(negative_ids, example_ids.dtype)[None, :]),
                          logits.dtype)
            hit = tf.pad(hit, [[0, 0], [distinct, 0]])
            logits = logits + hit * MIN_FLOAT
        return tf.reduce_sum(tf.reduce_logsumexp(logits, axis=1))


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
