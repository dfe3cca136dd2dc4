"""Adaptive seeds (`--seeds auto`) on simulated ablations: error rates, coverage, power and models trained.

Each simulated ablation is three feature sets against one shared id-only baseline, with the noise of the
latent model fitted to a real ML-1M run (`tests/fixtures/verdict_null_model.json`, first 1,000 users);
the first feature set has a planted effect (none, the deep dive's published +0.015 top-100, a large
+0.06), the other two none. Rounds of 2..5 seeds (`--min_seeds 2 --max_seeds 5`), against the fixed
`--seeds 5` design on the same simulated data (one round at alpha):

    .venv/bin/python bench/adaptive_seeds_calibration.py [--replicates 400]
"""

import argparse
import dataclasses
import json
import os
import sys
import time

ROOT = os.path.dirname(os.path.abspath(os.path.dirname(__file__)))
sys.path.insert(0, ROOT)

from recsys_ablate.evaluation.calibration import NullModel, calibrate_sequential  # noqa: E402
from recsys_ablate.evaluation.sequential import Look, looks  # noqa: E402

FIXTURE = os.path.join(ROOT, "tests", "fixtures", "verdict_null_model.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=400)
    n = parser.parse_args().replicates
    start = time.perf_counter()
    with open(FIXTURE) as f:
        model = NullModel.from_dict(json.load(f)["model"])
    model = dataclasses.replace(model, offsets=model.offsets[:1000], counts=model.counts[:1000])
    designs = {"fixed 5 seeds": [Look(1, 5, 0.05)],
               "auto, O'Brien-Fleming": looks(2, 5, 0.05, "obrien_fleming"),
               "auto, Pocock": looks(2, 5, 0.05, "pocock"),
               # What the stopping rule prevents: looking at every round without spending alpha.
               "every round at 0.05": [dataclasses.replace(look, alpha=0.05)
                                       for look in looks(2, 5, 0.05, "obrien_fleming")]}
    print("| first arm's true effect | margin | design | any false claim | first arm decided | intervals "
          "holding the truth | models (mean) |")
    print("|---|---|---|---|---|---|---|")
    for effect, margin in ((0.0, None), (0.015, None), (0.06, None), (0.0, 0.03), (0.015, 0.03)):
        shift = model.shift_for(effect) if effect else 0.0
        for name, rounds in designs.items():
            result = calibrate_sequential(model, rounds, n, comparisons=3, shift=shift, margin=margin,
                                          seed=90 + int(effect * 1000) + (margin is not None))
            print(f"| {effect:+.3f} | {margin or 'none'} | {name} | {result['false_claim']:.3f} | "
                  f"{result['first_decided']:.3f} | {result['coverage']:.3f} | {result['models']:.1f} of "
                  f"{result['fixed_models']} |", flush=True)
    print(f"\n{n} simulated ablations per row; {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()
