"""Metrics and statistics computed from saved per-example ranks and top-K lists.

Everything here reads `ranks.npz` (the rank of the true movie for each
validation rating, 0 best, and what each validation user's top-K lists say
about popularity: `TopLists`), so a new statistic needs no retraining.
`Metric` and `retrieval_metrics` are the one registry of metric names, labels,
directions and computations that evaluation, early stopping, comparisons,
the report and the console all read.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from recsys_ablate.data.encoded import train_movie_counts
from recsys_ablate.errors import UserInputError
from recsys_ablate.settings import USER_METRICS, TrainConfig

# Cut-offs of the per-user Recall and NDCG, and of the popularity trade-off
# metrics (tail accuracy, coverage, popularity of the top-K lists).
RECALL_NDCG_KS = (10, 100)
DEFAULT_USER_METRICS = TrainConfig().user_metrics
TRADE_OFF_KS = RECALL_NDCG_KS
_LABELS = {"top": "top-{k}", "recall": "Recall@{k}", "ndcg": "NDCG@{k}", "hit": "Hit@{k}", "mrr": "MRR@{k}",
           "precision": "Precision@{k}", "tail": "tail top-{k}", "coverage": "Coverage@{k}",
           "popularity": "Popularity@{k}", "rmse": "RMSE"}
# What each family measures, in words (report and README); "held-out": the part the numbers are on, which
# the report names (validation, or test where the split has one).
MEANINGS = {
    "top": "share of held-out ratings whose movie ranks in the top K of the whole catalogue",
    "recall": "per user: share of the user's held-out movies in their top K; mean over users",
    "ndcg": "per user: discounted gain of the user's held-out movies in their top K; mean over users",
    "hit": "per user: 1 if any of the user's held-out movies is in their top K; mean over users",
    "mrr": "per user: 1 / the rank of the user's best-ranked held-out movie, 0 beyond K; mean over users",
    "precision": "per user: share of the top K that are the user's held-out movies; mean over users",
    "tail": "top-K accuracy on the held-out ratings of the least-popular half of the catalogue (by "
            "training interactions)",
    "coverage": "share of the catalogue in at least one held-out user's top-K list",
    "popularity": "mean popularity percentile of the movies in each user's top-K list (share of the "
                  "catalogue less often rated in training, ties half; a uniform pick scores 50), mean over "
                  "users",
    "rmse": "rating prediction error (ranking stage)",
}


@dataclasses.dataclass(frozen=True)
class Metric:
    """One validation metric.

    Attributes:
      family: "top" (top-K accuracy over examples), "recall" / "ndcg"
        (per-user Recall@K / NDCG@K), "tail" (top-K accuracy on examples of
        the least-popular half of items), "coverage" (share of the catalogue
        recommended to at least one user), "popularity" (mean popularity
        percentile of the top-K lists) or "rmse" (rating error, ranking stage).
      k: The cut-off (None for rmse).
      higher_is_better: Direction, for early stopping and comparisons; None
        when neither is better (popularity: a verdict says "higher" or "lower").
    """

    family: str
    k: int | None = None
    higher_is_better: bool | None = True

    @property
    def name(self) -> str:
        """Key in histories and summaries: "top_100", "recall_10", "rmse"."""
        return self.family if self.k is None else f"{self.family}_{self.k}"

    @property
    def label(self) -> str:
        """Name in tables: "top-100", "Recall@10", "RMSE"."""
        return _LABELS[self.family].format(k=self.k)

    @property
    def per_user(self) -> bool:
        """Whether it is a ratio of per-user sums (`per_user`); coverage is one of all lists together."""
        return self.family != "coverage"


RMSE = Metric("rmse", None, higher_is_better=False)


def retrieval_metrics(ks, user_metrics=DEFAULT_USER_METRICS) -> list[Metric]:
    """A retrieval evaluation's metrics: top-K for each K, the per-user metrics (`user_metrics`: recall,
    ndcg, hit, mrr, precision) at 10 and 100, then the popularity trade-off at 10 and 100 (tail top-K,
    coverage, popularity percentile)."""
    return ([Metric("top", k) for k in ks]
            + [Metric(family, k) for family in user_metrics for k in RECALL_NDCG_KS]
            + [Metric(family, k, family != "popularity" or None)
               for family in ("tail", "coverage", "popularity") for k in TRADE_OFF_KS])


def evaluated_metrics(train) -> list[Metric]:
    """The metrics a run with these training settings evaluates (`TrainConfig.ks` and `.user_metrics`)."""
    return retrieval_metrics(train.ks, train.user_metrics)


def check_metric_names(train, compare) -> None:
    """The early-stopping and verdict metrics are registered metrics (early stopping: one with a direction).

    Args:
      train: The `TrainConfig` (its ks and early_stopping).
      compare: The `CompareConfig` (its verdict_metric).

    Raises:
      UserInputError: naming the metric and the valid names.
    """
    metrics = evaluated_metrics(train)
    directed = [m.name for m in metrics if m.higher_is_better is not None]
    if train.early_stopping is not None and train.early_stopping not in directed:
        raise UserInputError(f"early stopping metric {train.early_stopping!r}: expected one of "
                             f"{', '.join(directed)}")
    if compare.verdict_metric is not None and compare.verdict_metric not in [m.name for m in metrics]:
        raise UserInputError(f"verdict metric {compare.verdict_metric!r}: expected one of "
                             f"{', '.join(m.name for m in metrics)}")


def metric(name: str, ks=()) -> Metric:
    """The registered metric called `name` (retrieval metrics for `ks`, or rmse)."""
    return next(m for m in retrieval_metrics(ks, USER_METRICS) + [RMSE] if m.name == name)


@dataclasses.dataclass(frozen=True)
class ItemPopularity:
    """How popular each catalogue item is in the training split (what the trade-off metrics measure against).

    Attributes:
      counts: [n items] training interactions of each item.
      percentile: [n items] share of the other items with fewer training
        interactions, ties counted half, in percent (0 least, 100 most popular).
      tail: [n items] True for the least-popular half: the n // 2 items with
        the fewest training interactions (ties at the boundary broken by
        catalogue order).
    """

    counts: np.ndarray
    percentile: np.ndarray
    tail: np.ndarray

    @classmethod
    def of(cls, data) -> "ItemPopularity":
        counts = train_movie_counts(data)
        n = len(counts)
        ordered = np.sort(counts)
        fewer = np.searchsorted(ordered, counts, side="left")
        equal = np.searchsorted(ordered, counts, side="right") - fewer
        percentile = 100.0 * (fewer + 0.5 * (equal - 1)) / max(n - 1, 1)
        tail = np.zeros(n, bool)
        tail[np.lexsort((np.arange(n), counts))[:n // 2]] = True
        return cls(counts, percentile, tail)


@dataclasses.dataclass(frozen=True)
class TopLists:
    """What each validation user's top-K list says about popularity, at each K of `TRADE_OFF_KS`.

    Attributes:
      users: [n users] user rows, ascending (the validation users).
      popularity: [n users, len(TRADE_OFF_KS)] mean popularity percentile
        of each user's top-K list.
      recommended: [len(TRADE_OFF_KS), n items] users each item is in the top K of.
    """

    users: np.ndarray
    popularity: np.ndarray
    recommended: np.ndarray

    def arrays(self) -> dict:
        """For `ranks.npz`."""
        return {"list_users": self.users, "list_popularity": self.popularity,
                "list_recommended": self.recommended, "list_ks": np.asarray(TRADE_OFF_KS)}

    @classmethod
    def from_arrays(cls, arrays) -> "TopLists | None":
        """From `ranks.npz` (None for models saved before the lists were kept, or with other Ks)."""
        if "list_users" not in arrays or tuple(arrays["list_ks"]) != TRADE_OFF_KS:
            return None
        return cls(arrays["list_users"], arrays["list_popularity"], arrays["list_recommended"])


def compute(metrics: list[Metric], ranks: np.ndarray, users: np.ndarray, tail: np.ndarray | None = None,
            lists: TopLists | None = None) -> dict[str, float]:
    """Values of retrieval `metrics` (per-user ones need at least one example).

    Args:
      metrics: Which.
      ranks: [n] rank of each validation example's true item.
      users: [n] user row of each example.
      tail: [n] whether each example's item is in the least-popular half
        (None: no tail metric).
      lists: The users' top-K lists (None: no coverage or popularity).
    """
    out, recall_ndcg = {}, {}
    for m in metrics:
        if m.family == "top":
            out[m.name] = float(np.mean(ranks < m.k)) if len(ranks) else 0.0
        elif m.family == "tail":
            if tail is not None:
                out[m.name] = float(np.mean(ranks[tail] < m.k)) if tail.any() else 0.0
        elif m.family in ("coverage", "popularity"):
            if lists is not None:
                at = TRADE_OFF_KS.index(m.k)
                out[m.name] = float(np.mean(lists.recommended[at] > 0) if m.family == "coverage"
                                    else np.mean(lists.popularity[:, at]))
        elif m.family in ("hit", "mrr", "precision"):
            if len(ranks):
                values, _ = per_user(m, ranks, ValidationUsers.of(users))
                out[m.name] = float(values.mean())
        elif len(ranks):
            if m.k not in recall_ndcg:  # Recall and NDCG at one K share one pass
                recall_ndcg[m.k] = per_user_recall_ndcg(ranks, users, m.k)
            out[m.name] = recall_ndcg[m.k][0 if m.family == "recall" else 1]
    return out


def mean_interval(values, confidence: float = 0.95) -> tuple[float, float]:
    """Mean and half-width of its Student-t interval over seeds (0 for one value).

    The interval covers training noise (seeds) on this validation set.

    Args:
      values: One number per seed.
      confidence: Coverage of the interval.

    Returns:
      (mean, half width).
    """
    # Imported here: the settings' checks import this module, and SciPy would
    # slow every command's start (-X importtime), errors included.
    from recsys_ablate.evaluation.distributions import t_ppf

    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float(values.mean()), 0.0
    t = t_ppf(0.5 + confidence / 2, len(values) - 1)
    return float(values.mean()), float(t * values.std(ddof=1) / np.sqrt(len(values)))


def per_user_recall_ndcg(ranks: np.ndarray, users: np.ndarray, k: int) -> tuple[float, float]:
    """Recall@K and NDCG@K averaged over users.

    Each validation rating of a user is one relevant movie, ranked against the
    whole catalogue with that rating's query. Recall@K is the share of the
    user's relevant movies ranked in the top K; NDCG@K sums 1/log2(rank + 2)
    over those and divides by the ideal (all relevant movies at the top).

    Args:
      ranks: [n] rank of each validation rating's true movie (0 best).
      users: [n] user row of each rating.
      k: Cut-off.

    Returns:
      (mean Recall@K, mean NDCG@K) over users with validation ratings.
    """
    _, inverse, counts = np.unique(users, return_inverse=True, return_counts=True)
    recall, ndcg = _recall_ndcg_by_user(ranks, inverse, counts, k)
    return float(recall.mean()), float(ndcg.mean())


def _recall_ndcg_by_user(ranks, inverse, counts, k) -> tuple[np.ndarray, np.ndarray]:
    hit = ranks < k
    recall = np.bincount(inverse, weights=hit, minlength=len(counts)) / counts
    gains = np.where(hit, 1.0 / np.log2(ranks.astype(np.float64) + 2.0), 0.0)
    dcg = np.bincount(inverse, weights=gains, minlength=len(counts))
    discounts = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))
    return recall, dcg / discounts[np.minimum(counts, k) - 1]


@dataclasses.dataclass(frozen=True)
class ValidationUsers:
    """The users of a validation set's examples, computed once for every model scored on it.

    Attributes:
      inverse: [n examples] index of each example's user among the users.
      counts: [n users] examples per user.
      users: [n users] the user rows, ascending.
      tail: [n examples] whether each example's item is in the least-popular
        half (None when unknown).
    """

    inverse: np.ndarray
    counts: np.ndarray
    users: np.ndarray | None = None
    tail: np.ndarray | None = None

    @classmethod
    def of(cls, users: np.ndarray, tail: np.ndarray | None = None) -> "ValidationUsers":
        distinct, inverse, counts = np.unique(users, return_inverse=True, return_counts=True)
        return cls(inverse, counts, distinct, tail)


def per_user(m: Metric, ranks: np.ndarray, users: ValidationUsers,
             lists: TopLists | None = None) -> tuple[np.ndarray, np.ndarray] | None:
    """A metric as a ratio of per-user sums: value = sums.sum() / weights.sum().

    This is what the verdicts resample and pair: top-K is each user's hit
    count over their example count (examples weigh equally), tail top-K the
    same over the user's examples of tail items, Recall, NDCG and popularity
    are each user's value with weight 1 (users weigh equally).

    Args:
      m: A retrieval metric.
      ranks: [n] rank of each validation example's true item.
      users: The examples' users.
      lists: The users' top-K lists (for popularity).

    Returns:
      ([n users] sums, [n users] weights), float64; None for coverage (not a
      per-user sum) or when what the metric needs was not kept.
    """
    if not m.per_user:
        return None
    if m.family == "top":
        return (np.bincount(users.inverse, weights=ranks < m.k, minlength=len(users.counts)),
                users.counts.astype(np.float64))
    if m.family == "tail":
        if users.tail is None:
            return None
        return (np.bincount(users.inverse, weights=(ranks < m.k) & users.tail, minlength=len(users.counts)),
                np.bincount(users.inverse, weights=users.tail, minlength=len(users.counts)))
    if m.family == "popularity":
        if lists is None or users.users is None or not np.array_equal(lists.users, users.users):
            return None
        return lists.popularity[:, TRADE_OFF_KS.index(m.k)].astype(np.float64), np.ones(len(users.counts))
    if m.family in ("hit", "mrr", "precision"):
        best = np.full(len(users.counts), np.inf)
        np.minimum.at(best, users.inverse, ranks)  # each user's best-ranked held-out item
        values = {"hit": lambda: (best < m.k).astype(np.float64),
                  "mrr": lambda: np.where(best < m.k, 1.0 / (best + 1.0), 0.0),
                  "precision": lambda: np.bincount(users.inverse, weights=ranks < m.k,
                                                   minlength=len(users.counts)) / m.k}[m.family]()
        return values, np.ones(len(users.counts))
    recall, ndcg = _recall_ndcg_by_user(ranks, users.inverse, users.counts, m.k)
    return (recall if m.family == "recall" else ndcg), np.ones(len(users.counts))
