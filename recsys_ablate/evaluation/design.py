"""Main effects and two-way interactions of a factorial design over features, from saved ranks.

A 2^k design (or its half fraction, `settings.DesignConfig`) trains one
feature set per run of the design. An effect is a contrast of the runs: each
run's verdict metric weighted by the product of its factors' signs (+1 on,
-1 off) over half the number of runs. So a main effect is the mean over the
runs with the factor on minus the mean over the runs with it off, and the
interaction of A and B is half of (A's effect with B on - A's effect with B
off): positive when the two add more together than apart, negative when
they overlap (two columns carrying the same information give two main
effects and a negative interaction of the same size).

The contrast is taken seed by seed and user by user, on the same per-user
sums the comparisons pair (`metrics.per_user`), so each effect gets the same
seeds + users interval (`verdicts.compare`): a run's seeds are paired
across the design's runs, as an arm's are with its baseline.
"""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np

from recsys_ablate.evaluation.verdicts import Comparison, compare


@dataclasses.dataclass(frozen=True)
class Effect:
    """One main effect or two-way interaction.

    Attributes:
      factors: The factor (main effect) or the two factors (interaction).
      comparison: Its estimate, interval and test (`difference` is the effect).
    """

    factors: tuple[str, ...]
    comparison: Comparison

    @property
    def name(self) -> str:
        return " x ".join(self.factors)

    @property
    def kind(self) -> str:
        return "main effect" if len(self.factors) == 1 else "interaction"


def contrasts(factors, runs) -> dict[tuple[str, ...], np.ndarray]:
    """(factor,) and (factor, factor) -> [len(runs)] contrast coefficients of each main effect and two-way
    interaction: the product of the factors' signs in each run, over half the number of runs."""
    signs = {f: np.array([1.0 if f in run else -1.0 for run in runs]) for f in factors}
    effects = [(f,) for f in factors] + list(itertools.combinations(factors, 2))
    return {effect: np.prod([signs[f] for f in effect], axis=0) / (len(runs) / 2) for effect in effects}


def effects(runs, factors, sums_of, seeds, metric: str, alpha: float, power: float) -> list[Effect]:
    """Every main effect and two-way interaction of the design, with seeds + users intervals.

    Args:
      runs: The design's feature sets (each the factors on in it).
      factors: The design's factors.
      sums_of: (run index, seed) -> ([n users] per-user sums of the metric, [n users] weights), the same
        users in every run.
      seeds: The seeds every run was trained with.
      metric: The metric's name.
      alpha: Level of the intervals.
      power: Power of the stated detectable differences.

    Returns:
      The `Effect`s (undecided: `verdicts.decide` gives the words), main effects first.
    """
    coefficients = contrasts(factors, runs)
    tables = {effect: [] for effect in coefficients}
    weights = None
    for seed in seeds:
        # One run's sums at a time: memory stays effects x seeds x users.
        per_seed = {effect: 0.0 for effect in coefficients}
        for i in range(len(runs)):
            sums, weights = sums_of(i, seed)
            for effect, c in coefficients.items():
                per_seed[effect] = per_seed[effect] + c[i] * sums
        for effect in coefficients:
            tables[effect].append(per_seed[effect])
    return [Effect(effect, compare(metric, np.stack(table), weights, list(seeds), alpha, power))
            for effect, table in tables.items()]
