"""Adaptive seeds (`--seeds auto`): rounds of seeds, each comparison stopped once its verdict is decided.

Every arm starts with `min_seeds`; after each round the comparisons still
undecided get one more seed for both their arms, up to `max_seeds`. Looking
at the verdicts after every round and stopping when one is decided would
claim too often if each look were tested at alpha, so alpha is spent over
the rounds (a group-sequential design): round r tests at

    alpha_r = A(t_r) - A(t_{r-1}),   t_r = seeds at round r / max_seeds,

where A is a Lan-DeMets spending function (A(1) = alpha):

- O'Brien-Fleming shaped: A(t) = 2 - 2 Phi(z_{1 - alpha/2} / sqrt(t)), which
  spends almost nothing early (a round stops early only on a large effect)
  and keeps most of alpha for the last round;
- Pocock shaped: A(t) = alpha ln(1 + (e - 1) t), which spends evenly.

Within a round the verdicts are the usual ones (`verdicts.decide`: Holm
across the whole family, both hypotheses of each comparison with a margin)
at level alpha_r, every comparison in the family with the seeds it has (a
comparison decided earlier keeps its earlier data and verdict). A false
claim at round r needs some true null hypothesis's p-value, computed from a
fixed number of seeds, below alpha_r / (its Holm step), so the chance of any
false claim over all rounds is at most the sum of the alpha_r = alpha (a
union bound: conservative, where the exact group-sequential boundaries use
the correlation between rounds; with 2-5 seeds and t-statistics of 1-4
degrees of freedom that correlation is itself uncertain, and the bound holds
whatever it is). For the same reason each comparison's interval is the
1 - alpha_r interval of the round it stopped at (a repeated confidence
interval): over all rounds together they cover the true difference with
probability at least 1 - alpha. `calibration.calibrate_sequential` checks
both on simulated runs.

Nothing here trains: `replay` reads saved ranks through `comparison.summarise`
(the rounds can be replayed, and a run resumed, from the saved models alone);
`ablation.train_in_rounds` trains what it says is missing.
"""

from __future__ import annotations

import dataclasses
import math

from recsys_ablate.evaluation.comparison import group_key, summarise
from recsys_ablate.evaluation.distributions import norm_cdf, norm_ppf
from recsys_ablate.evaluation.verdicts import CLAIMS


@dataclasses.dataclass(frozen=True)
class Look:
    """One round: every open comparison has `seeds` seeds; its verdicts are tested at `alpha`."""

    round: int
    seeds: int
    alpha: float


def spent(spending: str, t: float, alpha: float) -> float:
    """Alpha spent by the share `t` of the maximum seeds (Lan-DeMets spending functions; module docstring)."""
    if spending == "pocock":
        return alpha * math.log(1 + (math.e - 1) * t)
    return float(2 - 2 * norm_cdf(norm_ppf(1 - alpha / 2) / math.sqrt(t)))


def looks(min_seeds: int, max_seeds: int, alpha: float, spending: str) -> list[Look]:
    """The rounds: one per seed count from `min_seeds` to `max_seeds`, each with the alpha it spends."""
    out, before = [], 0.0
    for r, seeds in enumerate(range(min_seeds, max_seeds + 1), 1):
        now = alpha if seeds == max_seeds else spent(spending, seeds / max_seeds, alpha)
        out.append(Look(r, seeds, now - before))
        before = now
    return out


@dataclasses.dataclass(frozen=True)
class Stop:
    """Where one comparison stopped.

    Attributes:
      look: The round it stopped at.
      comparison: Its `verdicts.Comparison` at that round (interval at 1 - look.alpha, Holm at look.alpha).
      decided: Its verdict was decided (else it reached the maximum seeds undecided).
      last: The number of rounds.
    """

    look: Look
    comparison: object
    decided: bool
    last: int

    def words(self) -> str:
        """"decided at round 2 of 4 (3 seeds)" / "reached the maximum, 5 seeds, undecided"."""
        if self.decided:
            return f"decided at round {self.look.round} of {self.last} ({self.look.seeds} seeds)"
        return f"reached the maximum ({self.look.seeds} seeds) undecided"


@dataclasses.dataclass
class Replay:
    """The rounds replayed from saved models.

    Attributes:
      stops: (arm, "baseline" or "control") -> `Stop` of each comparison that stopped (arms are
        `comparison.group_key`s).
      pending: The round the open comparisons wait for (their seeds are not all trained), or None when every
        comparison has stopped.
      needed: The arms (`comparison.group_key`) of the open comparisons: each needs `pending.seeds` seeds.
      open: Each open comparison's key -> its arms.
    """

    stops: dict
    pending: Look | None
    needed: set
    open: dict = dataclasses.field(default_factory=dict)


def schedule(compare) -> list[Look]:
    """The rounds of a `settings.CompareConfig`."""
    return looks(compare.min_seeds, compare.max_seeds, compare.alpha, compare.spending)


def seed_index(trained, first_seed: int) -> int:
    return trained.run.train.seed - first_seed


def replay(trained_models, data, schedule: list[Look], first_seed: int, arms=None,
           **summarise_options) -> Replay:
    """Replays the rounds on the saved models: which comparisons stopped where, and what is still needed.

    Args:
      trained_models: Every saved model of the ablation (any number of seeds each).
      data: The encoded dataset.
      schedule: The rounds (`looks`).
      first_seed: `--seed` (seed index 0).
      arms: Every arm of the ablation (`comparison.group_key`s): each needs the first round's seeds before
        any comparison is judged (which comparisons make the family is known only then). None: the arms of
        `trained_models`.
      summarise_options: `comparison.summarise`'s other arguments but alpha (ks, verdict_metric, power,
        reference, margin).

    Returns:
      The `Replay`.
    """
    stops: dict = {}
    first = [m for m in trained_models if seed_index(m, first_seed) < schedule[0].seeds]
    every_arm = set(arms) if arms is not None else {group_key(m.run) for m in trained_models}
    counts = {arm: sum(group_key(m.run) == arm for m in first) for arm in every_arm}
    for look in schedule:
        statistics = summarise([m for m in trained_models if seed_index(m, first_seed) < look.seeds], data,
                               alpha=look.alpha, verdicts_only=True, **summarise_options)
        claims = _claims(statistics)
        open_now = {key: (pair, c) for key, (pair, c) in claims.items() if key not in stops}
        starting = look is schedule[0] and min(counts.values(), default=look.seeds) < look.seeds
        if starting or any(len(c.seeds) < look.seeds for _, c in open_now.values()):
            needed = every_arm if starting else {arm for pair, _ in open_now.values() for arm in pair}
            return Replay(stops, look, needed, {key: pair for key, (pair, _) in open_now.items()})
        for key, (_, comparison) in open_now.items():
            decided = comparison.verdict in CLAIMS
            if decided or look is schedule[-1]:
                stops[key] = Stop(look, comparison, decided, schedule[-1].round)
        if all(key in stops for key in claims):
            break
    return Replay(stops, None, set())


def cannot_stop(models, data, look: Look, schedule: list[Look], key, **summarise_options) -> bool:
    """Whether one open comparison (`key`), its arms' `models` of round `look` all trained, is certain to
    stay undecided at that round whatever the others show: undecided even alone in its family (Holm can
    only raise a p-value), and not the last round. Its next seeds can then start before the round ends."""
    if look is schedule[-1]:
        return False
    claims = _claims(summarise(models, data, alpha=look.alpha, verdicts_only=True, **summarise_options))
    return key in claims and claims[key][1].verdict not in CLAIMS


def _claims(statistics) -> dict:
    """(arm, "baseline" | "control") -> (its arms, verdict-metric `Comparison`) of every comparison in the
    verdicts' family that has a p-value; arms are `comparison.group_key`s (labels depend on what else is
    summarised)."""
    out = {}
    by_label = statistics.by_label
    for summary in statistics.summaries:
        arm = group_key(summary.models[0].run)
        comparison = statistics.verdict(summary)
        if comparison is not None and comparison.p_value is not None:
            base = by_label.get(summary.baseline)
            out[arm, "baseline"] = ({arm} | ({group_key(base.models[0].run)} if base else set()), comparison)
        if summary.control is not None and summary.control[1].p_value is not None:
            out[arm, "control"] = ({arm, group_key(by_label[summary.control[0]].models[0].run)},
                                   summary.control[1])
    return out


def apply(statistics, stops: dict, schedule: list[Look], spending: str) -> None:
    """Puts each comparison's verdict at the round it stopped into `statistics` (the nominal-alpha summary
    of every model), in place, and records the rounds (`statistics.sequential`)."""
    labelled = {}
    for summary in statistics.summaries:
        arm = group_key(summary.models[0].run)
        stop = stops.get((arm, "baseline"))
        if stop is not None:
            summary.comparisons[statistics.metric] = dataclasses.replace(
                stop.comparison, family=_family_words(stop, spending, statistics.alpha))
            labelled[summary.label] = stop
        control = stops.get((arm, "control"))
        if control is not None and summary.control is not None:
            summary.control = (summary.control[0], control.comparison)
            labelled[f"{summary.label} against {summary.control[0]}"] = control
    statistics.sequential = {"spending": spending, "looks": schedule, "stops": labelled}


def _family_words(stop: Stop, spending: str, alpha: float) -> str:
    shape = "O'Brien-Fleming" if spending == "obrien_fleming" else "Pocock"
    return (f"{stop.comparison.family}; round {stop.look.round} of {stop.last} of a group-sequential design "
            f"({shape}-shaped spending of alpha {alpha:g}: this round tested at {stop.look.alpha:.4f}, its "
            f"interval at {1 - stop.look.alpha:.2%})")
