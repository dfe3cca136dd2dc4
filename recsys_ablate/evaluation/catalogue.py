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
from recsys_ablate.native import count_higher_scores_grouped_op, count_higher_scores_op, top_scores_op

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


def seen_movies(data, parts=("train",)) -> tuple[np.ndarray, np.ndarray]:
    """Each user's movies in the named parts of the split as CSR (indptr over user rows, movie rows)."""
    rows = np.concatenate([getattr(data, part) for part in parts])
    users = data.user[rows]
    order = np.argsort(users, kind="stable")
    indptr = np.concatenate([[0], np.cumsum(np.bincount(users, minlength=data.num_users))])
    return indptr, data.movie[rows][order]


@dataclasses.dataclass(frozen=True)
class EvaluationSet:
    """The held-out ratings one evaluation ranks, and how (the protocol's queries and masking).

    Attributes:
      rows: [n] rating rows whose movies are the true ones (validation or test).
      query_rows: [n] the rating rows whose query inputs rank each: the row itself (one query per rating,
        with its own context) or the user's last training rating (one query per user).
      excluded: Each user's movies left out of the ranking, as CSR (`seen_movies`), or None. A row's own
        movie is never left out.
    """

    rows: np.ndarray
    query_rows: np.ndarray
    excluded: tuple | None = None

    @classmethod
    def of(cls, data, part: str, train) -> "EvaluationSet":
        """The evaluation set of `data`'s part ("validation" or "test") under `train`'s `queries` and
        `exclude_seen` (the user's items of earlier parts masked: training items for validation, training
        and validation items for test)."""
        rows = getattr(data, part)
        query_rows = rows
        if train.queries == "per_user":
            last = last_training_rows(data)[data.user[rows]]
            query_rows = np.where(last >= 0, last, rows)  # a user without training ratings: their own row
        excluded = None
        if train.exclude_seen:
            excluded = seen_movies(data, ("train",) if part == "validation" else ("train", "validation"))
        return cls(rows, query_rows, excluded)

    def sample(self, keep: np.ndarray) -> "EvaluationSet":
        """The set restricted to `keep` (a boolean mask over its rows)."""
        return dataclasses.replace(self, rows=self.rows[keep], query_rows=self.query_rows[keep])


def last_training_rows(data) -> np.ndarray:
    """[users] each user's latest training rating row (ties: the later row), -1 for a user without one."""
    rows = data.train[np.lexsort((data.train, data.timestamp[data.train], data.user[data.train]))]
    users = data.user[rows]
    latest = np.r_[users[1:] != users[:-1], True]  # each user's last row in (user, time, row) order
    last = np.full(data.num_users, -1, np.int64)
    last[users[latest]] = rows[latest]
    return last


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


def example_ranks(model, data, examples: EvaluationSet, batch_size: int = EVAL_BATCH) -> np.ndarray:
    """Rank of the true movie for each held-out rating (0 is best).

    Args:
      model: A `RetrievalModel` (or anything with a query tower and candidate embeddings).
      data: The `EncodedDataset`.
      examples: The held-out ratings, their queries and what is masked (`EvaluationSet`).
      batch_size: Queries per matmul.

    Returns:
      [n] int32: how many catalogue movies score strictly higher.
    """
    rows, seen = examples.rows, examples.excluded
    candidates = model.candidate_embeddings()
    grouped = count_higher_scores_grouped_op()
    if grouped is not None and seen is None and tuple(model.query_tower.input_keys) == ("user",):
        return _ranks_by_user(model, data, rows, candidates, grouped)
    count_higher_scores = count_higher_scores_op()
    out = np.empty(len(rows), np.int32)
    for start, end, queries in _query_blocks(model, data, examples.query_rows, batch_size):
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


def validation_sample(data, examples: EvaluationSet, users: int) -> EvaluationSet:
    """The validation examples of a fixed, seeded sample of `users` validation users (all when fewer).

    The sample depends only on the data (seed 0), so every model and seed is
    evaluated on the same users during training.
    """
    candidates = np.unique(data.user[data.validation])
    if users >= len(candidates):
        return examples
    chosen = np.random.default_rng(0).choice(candidates, size=users, replace=False)
    return examples.sample(np.isin(data.user[examples.rows], chosen))


def top_lists(model, data, examples: EvaluationSet, popularity: ItemPopularity,
              batch_size: int = EVAL_BATCH) -> TopLists:
    """Each held-out user's top-K list, summarised for the popularity trade-off (`metrics.TopLists`).

    A user's list comes from one query: the one of their latest held-out
    rating (its query row: its own context, or the user's one query), as
    recommendations use the user's latest context; the examples' masked
    movies are left out of it.

    Args:
      model: A `RetrievalModel`.
      data: The `EncodedDataset`.
      examples: The held-out ratings (their users get lists).
      popularity: The catalogue's `ItemPopularity`.
      batch_size: Users per score matmul.
    """
    rows = examples.rows
    users = data.user[rows]
    order = np.lexsort((rows, data.timestamp[rows], users))  # by user, then time, then row
    last = np.r_[users[order][1:] != users[order][:-1], True]
    query_rows, list_users = examples.query_rows[order][last], users[order][last]
    candidates = model.candidate_embeddings()
    k = min(max(TRADE_OFF_KS), data.num_movies)
    seen = examples.excluded
    top = np.empty((len(query_rows), k), np.int64)
    top_scores = top_scores_op()
    for start, end, queries in _query_blocks(model, data, query_rows, batch_size):
        excluded = None if seen is None else _excluded_mask(list_users[start:end], None, seen,
                                                            data.num_movies)
        top[start:end] = _top_items(queries, candidates, k, excluded, top_scores).numpy()
    ks = [min(cut, k) for cut in TRADE_OFF_KS]
    return TopLists(
        list_users, np.stack([popularity.percentile[top[:, :cut]].mean(axis=1) for cut in ks], axis=1),
        np.stack([np.bincount(top[:, :cut].ravel(), minlength=data.num_movies)
                  for cut in ks]).astype(np.int32))


@tf.function(reduce_retracing=True)
def _top_items(queries, candidates, k, excluded=None, top_scores=None):
    if top_scores is not None and excluded is None:
        return top_scores(queries, candidates, k)  # native kernel, same order
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


def evaluate(model, data, examples: EvaluationSet, metrics, popularity: ItemPopularity | None = None
             ) -> tuple[dict[str, float], Scores]:
    """The `metrics` (`metrics.retrieval_metrics`) of the held-out `examples`, and the scores they came from.

    Args:
      popularity: The catalogue's `ItemPopularity` (computed when not given).
    """
    popularity = popularity or ItemPopularity.of(data)
    rows = examples.rows
    ranks = example_ranks(model, data, examples)
    lists = top_lists(model, data, examples, popularity)
    values = compute(metrics, ranks, data.user[rows], popularity.tail[data.movie[rows]], lists)
    return values, Scores(ranks, lists)
