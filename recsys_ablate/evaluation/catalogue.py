"""Validation top-K accuracy over the full catalogue, fast.

The values equal TFRS's `FactorizedTopK` (score-based, BruteForce over every
candidate): an example is a hit at K when fewer than K candidates score
strictly higher than the true candidate, whose score is the dot product of
the query and its embedding (`tf.math.in_top_k` semantics; a non-finite
score is a miss). Instead of a top-k over candidates per query, one matmul
against precomputed candidate embeddings counts the higher-scoring
candidates (in the native `CountHigherScores` kernel when it builds, which
scores and counts in cache). That count (the rank) is kept per example, so
every K, and later metrics, come from one pass.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf

from recsys_ablate.evaluation.metrics import (TRADE_OFF_KS, ItemPopularity, TopLists, compute,
                                             retrieval_metrics)
from recsys_ablate.native import count_higher_scores_grouped_op, count_higher_scores_op

# Queries per score matmul: a [2048, 3883] float32 block (32 MB) stays
# cache-friendly; 4096 was measured 2.8x slower on the 2-core machine.
EVAL_BATCH = 2048
# Rows per query-tower call: one call for a whole validation set of ML-1M.
TOWER_BATCH = 262_144


@tf.function(reduce_retracing=True)
def _ranks(queries, true_candidates, candidates, excluded=None, count_higher_scores=None):
    positive = tf.reduce_sum(queries * true_candidates, axis=1, keepdims=True)
    if count_higher_scores is not None and excluded is None:
        return count_higher_scores(queries, candidates, positive[:, 0])  # native kernel, same count
    scores = tf.matmul(queries, candidates, transpose_b=True)
    if excluded is not None:
        scores = tf.where(excluded, tf.constant(-np.inf, scores.dtype), scores)
    higher = tf.reduce_sum(tf.cast(scores > positive, tf.int32), axis=1)
    finite = tf.math.is_finite(positive[:, 0])
    return tf.where(finite, higher, tf.shape(candidates)[0])


def seen_movies(data) -> tuple[np.ndarray, np.ndarray]:
    """Each user's training movies as CSR (indptr over user rows, movie rows)."""
    train_users = data.user[data.train]
    order = np.argsort(train_users, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(train_users, minlength=data.num_users))])
    return indptr, data.movie[data.train][order]


def _excluded_mask(users, true_movies, seen, num_movies) -> np.ndarray:
    """[batch, movies] True where a movie is one of the user's training movies.

    The rating's own movie is never excluded (it may also be a training movie
    of that user when they rated it twice); None: no rating (a user's list).
    """
    indptr, movies = seen
    lengths = indptr[users + 1] - indptr[users]
    rows = np.repeat(np.arange(len(users)), lengths)
    starts = np.repeat(indptr[users], lengths)
    offsets = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    mask = np.zeros((len(users), num_movies), bool)
    mask[rows, movies[starts + offsets]] = True
    if true_movies is not None:
        mask[np.arange(len(users)), true_movies] = False
    return mask


def example_ranks(model, data, rows: np.ndarray, batch_size: int = EVAL_BATCH,
                  exclude_seen: bool = False) -> np.ndarray:
    """Rank of the true movie for each rating in `rows` (0 is best).

    Args:
      model: A `RetrievalModel`.
      data: The `EncodedDataset`.
      rows: Rating rows to evaluate (e.g. `data.validation`).
      batch_size: Queries per matmul.
      exclude_seen: Leave each user's training movies out of the ranking.

    Returns:
      [len(rows)] int32: how many catalogue movies score strictly higher.
    """
    candidates = model.candidate_embeddings()
    grouped = count_higher_scores_grouped_op()
    if grouped is not None and not exclude_seen and tuple(model.query_tower.input_keys) == ("user",):
        return _ranks_by_user(model, data, rows, candidates, grouped)
    seen = seen_movies(data) if exclude_seen else None
    count_higher_scores = count_higher_scores_op()
    out = np.empty(len(rows), np.int32)
    for start, end, queries in _query_blocks(model, data, rows, batch_size):
        block = rows[start:end]
        excluded = None if seen is None else _excluded_mask(data.user[block], data.movie[block], seen,
                                                            data.num_movies)
        out[start:end] = _ranks(queries, tf.gather(candidates, data.movie[block]), candidates, excluded,
                                count_higher_scores).numpy()
    return out


def _query_blocks(model, data, rows: np.ndarray, batch_size: int):
    """(start, end, the queries of rows[start:end]) in blocks of `batch_size` rows; the query tower runs
    once per `TOWER_BATCH` rows."""
    for tower_start in range(0, len(rows), TOWER_BATCH):
        chunk = rows[tower_start:tower_start + TOWER_BATCH]
        queries = model.query_tower(data.query_inputs(chunk, model.query_tower.input_keys))
        for start in range(0, len(chunk), batch_size):
            end = min(start + batch_size, len(chunk))
            yield tower_start + start, tower_start + end, queries[start:end]


def _ranks_by_user(model, data, rows, candidates, grouped) -> np.ndarray:
    """`example_ranks` for a query tower that reads only the user: each user's query scores the
    catalogue once for all their examples (the native grouped kernel), not once per example."""
    users = data.user[rows]
    order = np.argsort(users, kind="stable")
    distinct, counts = np.unique(users[order], return_counts=True)
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    queries = tf.concat([model.query_tower({"user": distinct[i:i + TOWER_BATCH]})
                         for i in range(0, len(distinct), TOWER_BATCH)], axis=0)
    group = np.repeat(np.arange(len(distinct)), counts)
    movies = data.movie[rows][order]
    positive = tf.concat([_positive(queries, candidates, group[i:i + TOWER_BATCH], movies[i:i + TOWER_BATCH])
                          for i in range(0, len(order), TOWER_BATCH)], axis=0)
    ranks = np.empty(len(rows), np.int32)
    ranks[order] = grouped(queries, candidates, starts, positive).numpy()
    return ranks


@tf.function(reduce_retracing=True)
def _positive(queries, candidates, group, movies):
    # The same float computation as `_ranks`'s positive score.
    return tf.reduce_sum(tf.gather(queries, group) * tf.gather(candidates, movies), axis=1)


def validation_sample(data, users: int) -> np.ndarray:
    """Validation rows of a fixed, seeded sample of `users` validation users (all rows when fewer).

    The sample depends only on the data (seed 0), so every model and seed is
    evaluated on the same users during training.
    """
    candidates = np.unique(data.user[data.validation])
    if users >= len(candidates):
        return data.validation
    chosen = np.random.default_rng(0).choice(candidates, size=users, replace=False)
    return data.validation[np.isin(data.user[data.validation], chosen)]


def top_lists(model, data, rows: np.ndarray, popularity: ItemPopularity, batch_size: int = EVAL_BATCH,
              exclude_seen: bool = False) -> TopLists:
    """Each validation user's top-K list, summarised for the popularity trade-off (`metrics.TopLists`).

    A user's list comes from one query: the one of their latest validation
    rating in `rows` (for a query tower that reads only the user, the user's
    query), as recommendations use the user's latest context.

    Args:
      model: A `RetrievalModel`.
      data: The `EncodedDataset`.
      rows: Validation rows (their users get lists).
      popularity: The catalogue's `ItemPopularity`.
      batch_size: Users per score matmul.
      exclude_seen: Leave each user's training movies out of their list.
    """
    users = data.user[rows]
    order = np.lexsort((rows, data.timestamp[rows], users))  # by user, then time, then row
    last = np.r_[users[order][1:] != users[order][:-1], True]
    query_rows, list_users = rows[order][last], users[order][last]
    candidates = model.candidate_embeddings()
    k = min(max(TRADE_OFF_KS), data.num_movies)
    seen = seen_movies(data) if exclude_seen else None
    top = np.empty((len(query_rows), k), np.int64)
    for start, end, queries in _query_blocks(model, data, query_rows, batch_size):
        excluded = None if seen is None else _excluded_mask(list_users[start:end], None, seen,
                                                            data.num_movies)
        top[start:end] = _top_items(queries, candidates, k, excluded).numpy()
    ks = [min(cut, k) for cut in TRADE_OFF_KS]
    return TopLists(
        list_users, np.stack([popularity.percentile[top[:, :cut]].mean(axis=1) for cut in ks], axis=1),
        np.stack([np.bincount(top[:, :cut].ravel(), minlength=data.num_movies)
                  for cut in ks]).astype(np.int32))


@tf.function(reduce_retracing=True)
def _top_items(queries, candidates, k, excluded=None):
    scores = tf.matmul(queries, candidates, transpose_b=True)
    if excluded is not None:
        scores = tf.where(excluded, tf.constant(-np.inf, scores.dtype), scores)
    return tf.math.top_k(scores, k=k, sorted=True).indices


@dataclasses.dataclass(frozen=True)
class Scores:
    """One evaluation's raw results, from which every metric is computed (saved as `ranks.npz`).

    Attributes:
      ranks: [n] rank of each evaluated example's true item (0 best).
      lists: The evaluated users' top-K lists, summarised.
    """

    ranks: np.ndarray
    lists: TopLists

    def arrays(self) -> dict:
        return {"ranks": self.ranks, **self.lists.arrays()}


def top_k_accuracy(ranks: np.ndarray, ks) -> dict[str, float]:
    """{"top_K": share of examples with rank < K} for each K."""
    return compute([m for m in retrieval_metrics(ks) if m.family == "top"], ranks, ranks)


def evaluate(model, data, rows: np.ndarray, ks, exclude_seen: bool = False,
             popularity: ItemPopularity | None = None) -> tuple[dict[str, float], Scores]:
    """Every registered retrieval metric (`metrics.retrieval_metrics`) and the scores they came from.

    Args:
      popularity: The catalogue's `ItemPopularity` (computed when not given).
    """
    popularity = popularity or ItemPopularity.of(data)
    ranks = example_ranks(model, data, rows, exclude_seen=exclude_seen)
    lists = top_lists(model, data, rows, popularity, exclude_seen=exclude_seen)
    metrics = compute(retrieval_metrics(ks), ranks, data.user[rows], popularity.tail[data.movie[rows]], lists)
    return metrics, Scores(ranks, lists)
