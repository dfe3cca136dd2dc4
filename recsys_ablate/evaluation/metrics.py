"""Metrics and statistics computed from saved per-example ranks.

Everything here reads `ranks.npz` (the rank of the true movie for each
validation rating, 0 best), so a new metric or test needs no retraining.
`Metric` and `retrieval_metrics` are the one registry of metric names, labels,
directions and computations that evaluation, early stopping, comparisons,
the report and the console all read.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# Cut-offs of the per-user Recall and NDCG.
RECALL_NDCG_KS = (10, 100)
_LABELS = {"top": "top-{k}", "recall": "Recall@{k}", "ndcg": "NDCG@{k}", "rmse": "RMSE"}


@dataclasses.dataclass(frozen=True)
class Metric:
    """One validation metric.

    Attributes:
      family: "top" (top-K accuracy over examples), "recall" / "ndcg"
        (per-user Recall@K / NDCG@K) or "rmse" (rating error, ranking stage).
      k: The cut-off (None for rmse).
      higher_is_better: Direction, for early stopping and comparisons.
    """

    family: str
    k: int | None = None
    higher_is_better: bool = True

    @property
    def name(self) -> str:
        """Key in histories and summaries: "top_100", "recall_10", "rmse"."""
        return self.family if self.k is None else f"{self.family}_{self.k}"

    @property
    def label(self) -> str:
        """Name in tables: "top-100", "Recall@10", "RMSE"."""
        return _LABELS[self.family].format(k=self.k)


RMSE = Metric("rmse", None, higher_is_better=False)


def retrieval_metrics(ks) -> list[Metric]:
    """Every retrieval evaluation's metrics: top-K for each K, then Recall and NDCG at 10 and 100."""
    return ([Metric("top", k) for k in ks]
            + [Metric(family, k) for family in ("recall", "ndcg") for k in RECALL_NDCG_KS])


def metric(name: str, ks=()) -> Metric:
    """The registered metric called `name` (retrieval metrics for `ks`, or rmse)."""
    return next(m for m in retrieval_metrics(ks) + [RMSE] if m.name == name)


def compute(metrics: list[Metric], ranks: np.ndarray, users: np.ndarray) -> dict[str, float]:
    """Values of retrieval `metrics` from per-example ranks (per-user ones need at least one example)."""
    out, per_user = {}, {}
    for m in metrics:
        if m.family == "top":
            out[m.name] = float(np.mean(ranks < m.k)) if len(ranks) else 0.0
        elif len(ranks):
            if m.k not in per_user:  # Recall and NDCG at one K share one pass
                per_user[m.k] = per_user_recall_ndcg(ranks, users, m.k)
            out[m.name] = per_user[m.k][0 if m.family == "recall" else 1]
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
    # Imported here: the settings' checks import this module, and scipy.stats
    # adds about 0.3 s to every command's start (-X importtime), errors included.
    import scipy.stats

    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float(values.mean()), 0.0
    t = scipy.stats.t.ppf(0.5 + confidence / 2, len(values) - 1)
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
    """

    inverse: np.ndarray
    counts: np.ndarray

    @classmethod
    def of(cls, users: np.ndarray) -> "ValidationUsers":
        _, inverse, counts = np.unique(users, return_inverse=True, return_counts=True)
        return cls(inverse, counts)


def per_user(m: Metric, ranks: np.ndarray, users: ValidationUsers) -> tuple[np.ndarray, np.ndarray]:
    """A metric as a ratio of per-user sums: value = sums.sum() / weights.sum().

    This is what the verdicts resample and pair: top-K is each user's hit
    count over their example count (examples weigh equally), Recall and NDCG
    are each user's value with weight 1 (users weigh equally).

    Args:
      m: A retrieval metric.
      ranks: [n] rank of each validation example's true item.
      users: The examples' users.

    Returns:
      ([n users] sums, [n users] weights), float64.
    """
    if m.family == "top":
        return (np.bincount(users.inverse, weights=ranks < m.k, minlength=len(users.counts)),
                users.counts.astype(np.float64))
    recall, ndcg = _recall_ndcg_by_user(ranks, users.inverse, users.counts, m.k)
    return (recall if m.family == "recall" else ndcg), np.ones(len(users.counts))
