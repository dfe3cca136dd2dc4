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

# Two-sided 97.5% Student-t quantiles for 1..30 degrees of freedom; beyond,
# the normal quantile. Kept here to avoid a SciPy dependency for one table.
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
         2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
         2.052, 2.048, 2.045, 2.042)


def mean_interval(values) -> tuple[float, float]:
    """Mean and half-width of its 95% Student-t interval (0 for one value).

    Args:
      values: One number per seed.

    Returns:
      (mean, half width).
    """
    values = np.asarray(values, np.float64)
    if len(values) < 2:
        return float(values.mean()), 0.0
    t = _T975[len(values) - 2] if len(values) - 1 <= len(_T975) else 1.96
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
    unique, inverse, counts = np.unique(users, return_inverse=True, return_counts=True)
    hit = ranks < k
    recall = np.bincount(inverse, weights=hit, minlength=len(unique)) / counts
    gains = np.where(hit, 1.0 / np.log2(ranks.astype(np.float64) + 2.0), 0.0)
    dcg = np.bincount(inverse, weights=gains, minlength=len(unique))
    discounts = np.cumsum(1.0 / np.log2(np.arange(k) + 2.0))
    idcg = discounts[np.minimum(counts, k) - 1]
    return float(recall.mean()), float((dcg / idcg).mean())


def paired_bootstrap(hits_a: np.ndarray, hits_b: np.ndarray, users: np.ndarray, samples: int = 2000,
                     seed: int = 0) -> dict:
    """Paired bootstrap over users of the difference in mean per-example hits.

    The same validation examples are scored by both models; users (not
    examples) are resampled, since one user's examples are correlated.

    Args:
      hits_a, hits_b: [n] per-example hit (or mean hit over seeds) of each model.
      users: [n] user row of each example.
      samples: Bootstrap resamples.
      seed: Seed of the resampling.

    Returns:
      {"difference": mean(a) - mean(b), "low", "high": 95% interval,
       "p_value": two-sided bootstrap p-value of "no difference"}.
    """
    unique, inverse = np.unique(users, return_inverse=True)
    diff_sum = np.bincount(inverse, weights=hits_a - hits_b, minlength=len(unique))
    count = np.bincount(inverse, minlength=len(unique)).astype(np.float64)
    rng = np.random.default_rng(seed)
    picks = rng.integers(0, len(unique), size=(samples, len(unique)))
    boot = diff_sum[picks].sum(axis=1) / count[picks].sum(axis=1)
    difference = float(diff_sum.sum() / count.sum())
    low, high = np.percentile(boot, [2.5, 97.5])
    tail = min(np.mean(boot <= 0), np.mean(boot >= 0))
    return {"difference": difference, "low": float(low), "high": float(high),
            "p_value": float(min(1.0, 2 * tail + 1.0 / samples))}
