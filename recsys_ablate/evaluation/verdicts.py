"""Verdicts: does a feature set beat its baseline, counting training noise and the validation sample.

A comparison reads, for each seed the two arms share, each validation user's
metric sums under both models (`metrics.per_user`). Its difference has two
sources of uncertainty: training (another seed gives another model) and the
validation sample (other users would give another number). Both are
estimated from the same seeds x users table of differences:

- training: the spread of the per-seed differences, paired by seed;
- validation sample: the spread between users of their seed-averaged
  differences, minus what training noise alone puts there (the within-user
  spread across seeds), as in a two-way random-effects analysis.

The interval is the wider of two Student-t intervals: (a) over the per-seed
differences alone (S - 1 degrees of freedom), (b) over both variance
components (Satterthwaite degrees of freedom). (b) alone can come out a
little narrower than (a) when training noise dominates, since its degrees of
freedom credit the user component; the wider of the two never claims more
than either analysis supports. The p-value is the larger of the two, so the
interval excludes zero exactly when p < alpha. With one seed per arm there is
no verdict: training noise is unmeasured, and the interval shown covers the
validation sample only.

A metric that is not a per-user sum (coverage: one number from all the
users' lists together) has only the per-seed differences: its interval is
their Student-t interval and covers training seeds only (`COVERS_SEEDS`).

Only the verdict metric gets verdict words (`judge`). Its p-values are
adjusted across the family (every feature set and grid cell against its
baseline) with Holm's step-down method; a verdict is "better" or "worse"
when the adjusted p is below alpha. Every other metric is exploratory: its
difference, interval and unadjusted p are shown, never a word, so the
chance that anything a run says claims an effect that is not there stays
at alpha however many metrics it evaluates.

With a margin M (`--margin`), each comparison also tests equivalence: two
one-sided tests (TOST) of "the difference is at least +M" and "at most -M"
with the same seeds + users uncertainty; its p is the larger of the two.
Both hypotheses of every comparison enter one Holm family; since at most one
of a comparison's two null hypotheses ("no difference", "|difference| >= M")
can be true, the step-down multiplier is capped at the number of comparisons
(Shaffer's refinement of Holm). Verdicts: better / worse (difference test),
equivalent (the 1 - 2 alpha interval within +-M: safe to drop or
interchangeable) or undecided (neither). The README ("How verdicts are
made") has the reasoning; `calibration` checks the rates on simulated runs
fitted to a real one.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from recsys_ablate.evaluation.distributions import chi2_ppf, norm_cdf, norm_ppf, t_cdf, t_ppf, t_sf

BETTER, WORSE, NO_EVIDENCE, NO_VERDICT = "better", "worse", "no evidence", "no verdict"
# With a margin (--margin): the whole 1 - 2 alpha interval within +-margin, or neither that nor a difference.
EQUIVALENT, UNDECIDED = "equivalent", "undecided"
# A metric other than the verdict metric: an estimate and its interval, never a claim.
EXPLORATORY = "exploratory"
# A design's interaction, when decided: the factors add more together than apart, or less (they overlap).
POSITIVE, NEGATIVE = "positive", "negative"
# Words that claim something about the arms (what the family-wise error rate bounds).
CLAIMS = ("better", "worse", "higher", "lower", EQUIVALENT, POSITIVE, NEGATIVE)
# Most seeds the seeds an equivalence verdict would need are searched up to.
MAX_PROJECTED_SEEDS = 100
# Verdicts of a metric with no better direction (popularity of the recommendations).
HIGHER, LOWER = "higher", "lower"
# Seed counts the "smallest detectable difference" is also projected to.
PROJECTED_SEEDS = (5, 10)
COVERS_BOTH = "training seeds and validation users"
COVERS_REFERENCE = ("the arm's training seeds and the users (the reference model is deterministic: it has no "
                    "seed variance of its own)")
COVERS_USERS = "validation users only (one seed per arm: training noise unmeasured)"
METHOD_SEEDS = ("paired by seed: wider of a t-interval over per-seed differences (S-1 df) and a "
                "seeds + users variance-components interval (Satterthwaite df); Holm across the family")
METHOD_USERS = "one seed: normal interval from the between-user variance (ratio estimator)"
# Coverage is a property of every user's list together, not a per-user sum.
COVERS_SEEDS = ("training seeds only (coverage is not a per-user sum: the validation sample's part is not "
                "estimated)")
COVERS_NOTHING = "nothing (one seed per arm, and coverage's interval comes from seeds alone)"
METHOD_SEEDS_ONLY = "paired by seed: t-interval over per-seed differences (S-1 df); Holm across the family"


@dataclasses.dataclass(frozen=True)
class Comparison:
    """One arm against its baseline on one metric.

    Attributes:
      metric: Metric name ("top_100", ...).
      difference: Mean over shared seeds of (arm - baseline).
      low, high: The `confidence` interval of the difference.
      confidence: 1 - alpha.
      seeds: The seeds both arms share (the pairs).
      per_seed: The difference at each of those seeds.
      std_error: Standard error of `difference` (of the wider analysis).
      df: Its degrees of freedom (None: normal, one seed).
      p_value: Two-sided p of "no difference" (None with one seed).
      p_adjusted: Holm-adjusted p across the family (None with one seed).
      verdict: BETTER, WORSE, NO_EVIDENCE, or NO_VERDICT (fewer than 2 seeds).
      detectable: Smallest difference detected with probability `power` at
        alpha with these seeds (None with one seed).
      detectable_with: Seeds -> the same, projected to more seeds.
      covers: Which uncertainty the interval covers.
      method: How it was computed.
      margin: The equivalence margin (None: no equivalence test).
      equivalence_low, equivalence_high: The 1 - 2 alpha interval TOST reads (None without a margin).
      p_equivalence: TOST p (the larger one-sided p of "difference >= +margin" and "<= -margin").
      p_equivalence_adjusted: It, adjusted in the same Holm family as `p_adjusted`.
      seeds_for_equivalence: Seeds at which a true difference of 0 would be found equivalent with
        probability `power` (None: more seeds alone cannot, the users' part is wider than the margin).
      family: What `p_adjusted` was adjusted over, in words ("" before `judge`).
    """

    metric: str
    difference: float
    low: float
    high: float
    confidence: float
    seeds: tuple[int, ...]
    per_seed: tuple[float, ...]
    std_error: float
    df: float | None
    p_value: float | None
    covers: str
    method: str
    p_adjusted: float | None = None
    verdict: str = NO_VERDICT
    detectable: float | None = None
    detectable_with: dict = dataclasses.field(default_factory=dict)
    margin: float | None = None
    equivalence_low: float | None = None
    equivalence_high: float | None = None
    p_equivalence: float | None = None
    p_equivalence_adjusted: float | None = None
    seeds_for_equivalence: int | None = None
    family: str = ""

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _Variances:
    """Estimated variance of the mean difference, by source."""

    seeds: float  # training noise: var(per-seed differences) / S
    users: float  # validation sample: between-user variance net of training noise
    num_seeds: int
    num_users: int

    def analyses(self, num_seeds: int | None = None) -> list[tuple[float, float]]:
        """(standard error, df) of (a) seeds only and (b) seeds + users, at `num_seeds` seeds."""
        s = num_seeds or self.num_seeds
        seeds = self.seeds * self.num_seeds / s
        total = seeds + self.users
        denominator = seeds**2 / (s - 1) + self.users**2 / max(self.num_users - 1, 1)
        satterthwaite = total**2 / denominator if denominator > 0 else float(s - 1)
        return [(np.sqrt(seeds), float(s - 1)), (np.sqrt(total), float(satterthwaite))]


def _variances(differences: np.ndarray, weights: np.ndarray) -> tuple[np.ndarray, float, "_Variances"]:
    """Per-seed differences and the variance components of their mean.

    Args:
      differences: [S, n users] per-user metric sums, arm minus baseline.
      weights: [n users] per-user weights (examples for top-K, 1 for per-user metrics).

    Returns:
      ([S] per-seed differences, users-only variance with S seeds pooled, `_Variances`).
    """
    num_seeds, num_users = differences.shape
    total = weights.sum()
    per_seed = differences.sum(axis=1) / total
    # Each user's deviation from the seed's ratio estimate: what resampling users varies.
    residual = differences - per_seed[:, None] * weights
    user_mean = residual.mean(axis=0)
    scale = num_users / max(num_users - 1, 1) / total**2
    pooled_users = float(scale * np.sum(user_mean**2))
    if num_seeds < 2:
        return per_seed, pooled_users, _Variances(0.0, pooled_users, 1, num_users)
    within = residual.var(axis=0, ddof=1)
    users = max(0.0, float(scale * np.sum(user_mean**2 - within / num_seeds)))
    return per_seed, pooled_users, _Variances(float(per_seed.var(ddof=1) / num_seeds), users, num_seeds,
                                              num_users)


def _t_test(difference: float, std_error: float, df: float, alpha: float) -> tuple[float, float]:
    """(half width of the 1 - alpha interval, two-sided p)."""
    half = float(t_ppf(1 - alpha / 2, df) * std_error)
    if std_error == 0:
        return half, 1.0 if difference == 0 else 0.0
    return half, float(2 * t_sf(abs(difference) / std_error, df))


@functools.lru_cache(maxsize=4096)
def _noncentrality(df: float, alpha: float, power: float) -> float:
    """How many true standard errors a difference must be for a two-sided t-test at alpha with `df` degrees
    of freedom to find it with probability `power` (the estimated standard error varies as a chi-square
    with `df`; averaged over 2,000 of its quantiles)."""
    if df > 1000:
        return float(norm_ppf(1 - alpha / 2) + norm_ppf(power))
    critical = t_ppf(1 - alpha / 2, df) * np.sqrt(
        chi2_ppf((np.arange(2000) + 0.5) / 2000, df) / df)

    def gap(shift):
        rejected = norm_cdf(shift - critical) + norm_cdf(-shift - critical)
        return np.mean(rejected) - power

    # Bisection where scipy.optimize.brentq found the same root (within 1e-13, relative): importing
    # scipy.optimize for it cost every process that loads the verdicts (each command, each worker, each Ray
    # trial) its time (BENCHMARKS.md, "The suite in session 25"). `gap` rises with the shift (for c >= 0 the
    # rejection's derivative is phi(shift - c) - phi(shift + c) >= 0); 60 halvings of [0, 1e4] end within
    # 1e-14 of the root.
    low, high = 0.0, 1e4
    for _ in range(60):
        middle = (low + high) / 2
        low, high = (middle, high) if gap(middle) < 0 else (low, middle)
    return (low + high) / 2


def _median_unbiased(df: float) -> float:
    """Factor making an estimated standard error with `df` degrees of freedom median-unbiased: a chi-square's
    median is below its mean, so half the runs would otherwise state a detectable difference below the true
    one (with 3 seeds the factor is 1.20)."""
    return float(np.sqrt(df / chi2_ppf(0.5, df))) if df < 1e6 else 1.0


def _detectable(variances: _Variances, alpha: float, power: float, num_seeds: int) -> float:
    """Smallest true difference found with probability `power` by a two-sided test at alpha at `num_seeds`
    seeds: per analysis, the noncentrality that gives that power times its standard error made
    median-unbiased (at the seeds the variances were estimated with); the larger of the two analyses."""
    return max(_noncentrality(float(f"{df:.2g}"), alpha, power) * se * _median_unbiased(df_now)
               for (se, df), (_, df_now) in zip(variances.analyses(num_seeds), variances.analyses()))


def _equivalence(difference: float, variances: _Variances, alpha: float, margin: float) -> dict:
    """TOST against +-margin under the wider of the two analyses: its p and 1 - 2 alpha interval."""
    p_values, halves = [], []
    for se, df in variances.analyses():
        if se == 0:
            p_values.append(0.0 if abs(difference) < margin else 1.0)
            halves.append(0.0)
            continue
        p_values.append(float(max(t_sf((difference + margin) / se, df),
                                  t_cdf((difference - margin) / se, df))))
        halves.append(float(t_ppf(1 - alpha, df) * se))
    return dict(margin=margin, p_equivalence=max(p_values), equivalence_low=difference - max(halves),
                equivalence_high=difference + max(halves))


def _seeds_for_equivalence(variances: _Variances, alpha: float, power: float, margin: float) -> int | None:
    """Fewest seeds at which a true difference of 0 is found equivalent with probability about `power`.

    TOST at 0 succeeds when |estimate| <= margin - t(1 - alpha) se, which has probability about `power`
    when margin = (t(1 - alpha) + t((1 + power) / 2)) se, under both analyses (se made median-unbiased as
    in `_detectable`).
    """
    def enough(num_seeds):
        return all((t_ppf(1 - alpha, df) + t_ppf((1 + power) / 2, df)) * se
                   * _median_unbiased(df_now) <= margin
                   for (se, df), (_, df_now) in zip(variances.analyses(num_seeds), variances.analyses()))
    return next((s for s in range(2, MAX_PROJECTED_SEEDS + 1) if enough(s)), None)


def compare(metric: str, differences: np.ndarray, weights: np.ndarray, seeds, alpha: float = 0.05,
            power: float = 0.8, per_user: bool = True, margin: float | None = None,
            projections: bool = True) -> Comparison:
    """Compares an arm with its baseline on one metric (no multiple-comparison adjustment yet).

    Args:
      metric: Metric name.
      differences: [S, n users] per-user metric sums, arm minus baseline,
        one row per seed both arms were trained with (paired by seed); [S, 1]
        per-seed differences for a metric that is not a per-user sum.
      weights: [n users] per-user weights; metric = sums.sum() / weights.sum().
      seeds: The S seeds.
      alpha: 1 - the interval's coverage; the test's level.
      power: Power at which `detectable` is stated.
      per_user: False for a metric that is not a per-user sum (coverage):
        the interval is the per-seed differences' t-interval.
      margin: Equivalence margin in the metric's units (None: no equivalence test).
      projections: False: `detectable_with` holds only the seeds at hand and `seeds_for_equivalence` is
        None. The calibration simulations, which judge thousands of simulated comparisons and read their
        verdicts, intervals and `detectable`, spent most of their time projecting to other seed counts.

    Returns:
      A `Comparison` (verdict NO_VERDICT until `decide`).
    """
    if not per_user:
        per_seed = np.asarray(differences, np.float64).reshape(len(seeds), -1).sum(axis=1)
        if len(per_seed) < 2:
            d = float(per_seed.mean())
            return Comparison(metric, d, d, d, 1 - alpha, tuple(seeds), (d,), 0.0, None, None,
                              covers=COVERS_NOTHING, method=METHOD_SEEDS_ONLY)
        # One "user" carrying each seed's difference: only the seeds' analysis remains.
        return dataclasses.replace(compare(metric, per_seed[:, None], np.ones(1), seeds, alpha, power,
                                           margin=margin, projections=projections),
                                   covers=COVERS_SEEDS, method=METHOD_SEEDS_ONLY)
    differences = np.asarray(differences, np.float64)
    per_seed, pooled_users, variances = _variances(differences, np.asarray(weights, np.float64))
    difference = float(per_seed.mean())
    common = dict(metric=metric, difference=difference, confidence=1 - alpha, seeds=tuple(seeds),
                  per_seed=tuple(float(d) for d in per_seed))
    if len(per_seed) < 2:
        std_error = float(np.sqrt(pooled_users))
        half = float(norm_ppf(1 - alpha / 2) * std_error)
        return Comparison(low=difference - half, high=difference + half, std_error=std_error, df=None,
                          p_value=None, covers=COVERS_USERS, method=METHOD_USERS, margin=margin, **common)
    tests = [(_t_test(difference, se, df, alpha), se, df) for se, df in variances.analyses()]
    (half, _), std_error, df = max(tests, key=lambda test: test[0][0])
    projected = sorted({len(per_seed), *PROJECTED_SEEDS}) if projections else [len(per_seed)]
    detectable_with = {s: _detectable(variances, alpha, power, s) for s in projected}
    equivalence = {} if margin is None else dict(
        _equivalence(difference, variances, alpha, margin), seeds_for_equivalence=(
            _seeds_for_equivalence(variances, alpha, power, margin) if projections else None))
    return Comparison(
        low=difference - half, high=difference + half, std_error=float(std_error), df=float(df),
        p_value=max(p for (_, p), _, _ in tests), covers=COVERS_BOTH, method=METHOD_SEEDS,
        detectable=detectable_with[len(per_seed)], detectable_with=detectable_with, **equivalence, **common)


def holm(p_values, max_true: int | None = None) -> list[float]:
    """Holm's step-down adjusted p-values (same order as given).

    Args:
      p_values: The family's p-values.
      max_true: At most this many of the null hypotheses can be true together (None: all of them); the
        step-down multiplier never exceeds it (Shaffer 1986). A comparison's "no difference" and
        "|difference| >= margin" cannot both be true, so a family of n comparisons with equivalence
        tests has 2n hypotheses but at most n true ones.
    """
    p_values = np.asarray(p_values, np.float64)
    order = np.argsort(p_values)
    m = len(p_values)
    multipliers = np.minimum(m - np.arange(m), m if max_true is None else max_true)
    stepped = np.maximum.accumulate(np.minimum(1.0, multipliers * p_values[order]))
    adjusted = np.empty(m)
    adjusted[order] = stepped
    return adjusted.tolist()


def decide(comparisons: list[Comparison], alpha: float,
           higher_is_better: bool | None = True, family: str = "") -> list[Comparison]:
    """Holm-adjusts a family's p-values and gives each comparison with 2+ seeds its verdict.

    Comparisons with a margin add their equivalence p-values to the family (`holm`'s `max_true` is then
    the number of comparisons). A comparison whose difference and equivalence tests both reject (a real
    difference smaller than the margin) keeps "better" / "worse"; its `p_equivalence_adjusted` says the
    rest.

    Args:
      comparisons: One family: every arm against its baseline on one metric.
      alpha: Family-wise level.
      higher_is_better: The metric's direction (None: none; verdicts HIGHER or LOWER).
      family: What the family is, in words (kept on each comparison).

    Returns:
      The comparisons, in order, with `p_adjusted`, `p_equivalence_adjusted`, `verdict` and `family` set.
    """
    tested = [i for i, c in enumerate(comparisons) if c.p_value is not None]
    hypotheses = [(i, "difference", comparisons[i].p_value) for i in tested] + [
        (i, "equivalence", comparisons[i].p_equivalence) for i in tested
        if comparisons[i].p_equivalence is not None]
    adjusted = dict(zip([(i, kind) for i, kind, _ in hypotheses],
                        holm([p for _, _, p in hypotheses], max_true=len(tested))))
    decided = []
    for i, c in enumerate(comparisons):
        if i not in tested:
            decided.append(dataclasses.replace(c, family=family))
            continue
        p, p_equivalent = adjusted[i, "difference"], adjusted.get((i, "equivalence"))
        verdict = NO_EVIDENCE if c.margin is None else UNDECIDED
        if p < alpha and higher_is_better is None:
            verdict = HIGHER if c.difference > 0 else LOWER
        elif p < alpha:
            verdict = BETTER if (c.difference > 0) == higher_is_better else WORSE
        elif p_equivalent is not None and p_equivalent < alpha:
            verdict = EQUIVALENT
        decided.append(dataclasses.replace(c, p_adjusted=p, p_equivalence_adjusted=p_equivalent,
                                           verdict=verdict, family=family))
    return decided


def exploratory(comparison: Comparison) -> Comparison:
    """A comparison on a metric that is not the verdict metric: its estimate, interval and unadjusted p,
    no verdict word (nothing it says is counted as a claim)."""
    return dataclasses.replace(comparison, verdict=EXPLORATORY if comparison.p_value is not None
                               else comparison.verdict,
                               family="none: exploratory (unadjusted p, no verdict)")


def judge(families: dict, verdict_metric: str, alpha: float, directions: dict, family: str = "") -> dict:
    """Verdict words for the verdict metric's family, exploratory estimates for every other metric.

    Args:
      families: metric name -> [Comparison] (every comparison of the run on that metric, same order).
      verdict_metric: The one metric whose family gets verdicts (`--verdict_metric`).
      alpha: Family-wise level.
      directions: metric name -> higher_is_better (True, False or None).
      family: The verdict family in words.

    Returns:
      metric name -> [Comparison], decided or exploratory.
    """
    return {name: decide(comparisons, alpha, directions[name], family) if name == verdict_metric
            else [exploratory(c) for c in comparisons] for name, comparisons in families.items()}


def worded(comparison: Comparison, higher_is_better: bool | None, interaction: bool = False) -> Comparison:
    """A comparison decided without a direction (HIGHER / LOWER) given the words of what it measures: better
    or worse on a metric with a direction, positive or negative for an interaction."""
    if comparison.verdict not in (HIGHER, LOWER):
        return comparison
    up = comparison.verdict == HIGHER
    if interaction:
        verdict = POSITIVE if up else NEGATIVE
    elif higher_is_better is None:
        return comparison
    else:
        verdict = BETTER if up == higher_is_better else WORSE
    return dataclasses.replace(comparison, verdict=verdict)
