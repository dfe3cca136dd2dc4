"""Error rates, coverage and power of every claim the verdicts make, on simulated runs.

Uses the latent model fitted to a real ML-1M run (`tests/fixtures/verdict_null_model.json`, see
`bench/verdict_calibration.py`) on its first 1,000 users, and a regime where users dominate (200 users, no
seed variance, a large per-arm taste), and prints:

- per regime and seed count: how often "no difference" is rejected without an effect, how often the 95%
  interval holds the truth, the median stated detectable difference and the power at it;
- equivalence (`--margin`): how often "equivalent" is said at a true difference of exactly +-M and at 0;
- the chance that a placebo run claims anything: only the verdict metric with words (today) against Holm
  within each metric's family (before), two placebo arms on five correlated metrics;
- the chance that a placebo 2^2 design claims any effect.

    .venv/bin/python bench/claims_calibration.py [--replicates 600]
"""

import argparse
import dataclasses
import json
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.abspath(os.path.dirname(__file__)))
sys.path.insert(0, ROOT)

from recsys_ablate.evaluation.calibration import (NullModel, calibrate, claim_rates,  # noqa: E402
                                                  design_claim_rate)

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "verdict_null_model.json")


def regimes() -> dict:
    with open(FIXTURE) as f:
        fitted = NullModel.from_dict(json.load(f)["model"])
    rng = np.random.default_rng(0)
    return {
        "seeds dominate (real run's fit, 1,000 users)": dataclasses.replace(
            fitted, offsets=fitted.offsets[:1000], counts=fitted.counts[:1000]),
        "users dominate (200 users, no seed variance)": NullModel(
            1.0, example=0.3, arm_example=0.5, seed=0.0, noise=0.1, offsets=tuple(rng.normal(0, 0.4, 200)),
            counts=tuple(rng.integers(3, 40, 200))),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=600)
    n = parser.parse_args().replicates
    start = time.perf_counter()
    models = regimes()
    print("| regime | seeds | rejects at 0.05 (no effect) | interval holds the truth | median detectable "
          "| power at it |")
    print("|---|---|---|---|---|---|")
    for name, model in models.items():
        for seeds in (2, 3, 5):
            null = calibrate(model, seeds, n, seed=20 + seeds)
            planted = calibrate(model, seeds, n, seed=30 + seeds, shift=model.shift_for(null["detectable"]))
            print(f"| {name} | {seeds} | {null['rejection']:.3f} | {null['coverage']:.3f} | "
                  f"{null['detectable']:.4f} | {planted['rejection']:.3f} |")
    model, margin = next(iter(models.values())), 0.03
    print(f"\nEquivalence at margin {margin} ({n} runs each, 5 seeds):")
    for truth in (margin, -margin, 0.0):
        shift = model.shift_for(truth) if truth else 0.0
        result = calibrate(model, 5, n, seed=50, margin=margin, shift=shift)
        print(f"  true difference {truth:+.3f}: equivalent {result['equivalent']:.3f}, "
              f"better/worse {result['rejection']:.3f}")
    rates = claim_rates(model, n, arms=3)
    print(f"\nPlacebo run, 2 placebo arms x 5 correlated metrics ({n} runs): any claim "
          f"{rates['verdict_metric_only']:.3f} (verdict metric only), {rates['holm_per_metric']:.3f} (Holm "
          "per metric, the rule before)")
    print(f"Placebo 2^2 design ({n} runs): any effect claimed {design_claim_rate(model, n):.3f}")
    print(f"\n{time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
