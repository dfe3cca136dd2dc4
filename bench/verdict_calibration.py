"""Calibration of the verdicts on simulated ablations fitted to a real one.

Fits `evaluation.calibration.NullModel` to the per-example top-K hits of a
saved two-arm ablation with 2+ seeds (an arm and the baseline; the method is
in that module's docstring), writes the fit to a JSON file (the test
`tests/test_verdicts.py` reads `tests/fixtures/verdict_null_model.json`), and
prints, for 2, 3 and 5 seeds, how often `verdicts.compare` rejects "no
difference" at alpha 0.05 and how often its 95% interval holds the true
difference: without an effect, and with one planted at the size the real run
measured.

    .venv/bin/python bench/verdict_calibration.py [--replicates 2000] [--out FILE] -- \\
        --data_dir ../shared/datasets/ml-1m-users1-2999 --layer_sizes 64 32 --num_epochs 3 --seeds 3 \\
        --additional_feature_sets timestamp movie_title_text movie_genres

Everything after `--` is the ablation's flags (as for the `report` command);
its models must be saved.

    .venv/bin/python bench/verdict_calibration.py --scale

instead times one comparison (every metric, 5 seeds per arm) at
MovieLens-25M's size, 162,541 users and 5,000,000 validation examples
(random ranks), and its peak memory beyond the inputs.
"""

import argparse
import json
import tracemalloc
import os
import sys
import time

import numpy as np

ROOT = os.path.dirname(os.path.abspath(os.path.dirname(__file__)))
sys.path.insert(0, ROOT)

from recsys_ablate.ablation import saved_models  # noqa: E402
from recsys_ablate.cli import experiment_from_args, parse_args  # noqa: E402
from recsys_ablate.data.encoded import label as data_label, resolve  # noqa: E402
from recsys_ablate.evaluation.calibration import NullModel, calibrate, fit_null_model  # noqa: E402
from recsys_ablate.evaluation.comparison import load_ranks  # noqa: E402
from recsys_ablate.evaluation.metrics import ValidationUsers, per_user, retrieval_metrics  # noqa: E402
from recsys_ablate.evaluation.verdicts import compare  # noqa: E402


def scale(num_users: int = 162_541, num_examples: int = 5_000_000, seeds: int = 5) -> None:
    rng = np.random.default_rng(0)
    users = np.sort(rng.integers(0, num_users, num_examples))
    ranks = [rng.integers(0, 62_000, num_examples).astype(np.int32) for _ in range(2 * seeds)]
    # The metrics computed from ranks alone (tail, coverage and popularity need items and lists).
    metrics = [m for m in retrieval_metrics((1, 5, 10, 50, 100)) if m.family in ("top", "recall", "ndcg")]
    tracemalloc.start()
    start = time.perf_counter()
    validation_users = ValidationUsers.of(users)
    # As `comparison.summarise` does: one seed pair's per-user sums at a time, differences kept.
    differences = {m.name: [] for m in metrics}
    for s in range(seeds):
        arm, base = ({m.name: per_user(m, ranks[i], validation_users) for m in metrics}
                     for i in (s, seeds + s))
        for m in metrics:
            differences[m.name].append(arm[m.name][0] - base[m.name][0])
    weights = {m.name: per_user(m, ranks[0], validation_users)[1] for m in metrics}
    scored = time.perf_counter()
    for m in metrics:
        compare(m.name, np.stack(differences[m.name]), weights[m.name], range(seeds))
    done = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1]
    print(f"{len(validation_users.counts):,} users, {num_examples:,} examples, {seeds} seeds x 2 arms, "
          f"{len(metrics)} metrics: per-user sums {scored - start:.1f} s, comparisons {done - scored:.2f} s, "
          f"peak memory beyond the ranks {peak / 2**20:.0f} MiB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--replicates", type=int, default=2000)
    parser.add_argument("--out", default=os.path.join(ROOT, "tests", "fixtures", "verdict_null_model.json"))
    parser.add_argument("--scale", action="store_true", help="time one comparison at MovieLens-25M's size")
    parser.add_argument("ablation", nargs=argparse.REMAINDER)
    args = parser.parse_args()
    if args.scale:
        return scale()
    flags = [f for f in args.ablation if f != "--"]
    config = experiment_from_args(parse_args(["report", *flags]))
    plan, models, _ = saved_models(config, log=lambda *_: None)
    k = max(config.train.ks)
    arm_features = next(f for f in config.feature_sets if f)
    arms = {features: sorted((m for m in models if m.run.features == features),
                             key=lambda m: m.run.train.seed) for features in ((), arm_features)}
    rows = load_ranks(arms[()][0])[0]
    users = ValidationUsers.of(plan.data.user[rows])
    hits = {features: np.stack([load_ranks(m)[1] < k for m in group]) for features, group in arms.items()}
    start = time.perf_counter()
    model = fit_null_model(hits[arm_features], hits[()], users.inverse)
    observed = float(hits[arm_features].mean() - hits[()].mean())
    print(f"fitted in {time.perf_counter() - start:.2f} s to {data_label(resolve(config.data))}, top-{k}, "
          f"{' + '.join(arm_features)} against the baseline, {len(arms[()])} seeds; observed difference "
          f"{observed:+.4f}")
    print({name: round(value, 5) for name, value in model.to_dict().items() if not isinstance(value, tuple)})
    fit = model.to_dict()
    fit["offsets"] = [round(o, 4) for o in fit["offsets"]]
    document = {"source": f"bench/verdict_calibration.py -- {' '.join(flags)}", "metric": f"top_{k}",
                "observed_difference": observed, "model": fit}
    with open(args.out, "w") as f:
        json.dump(document, f)
    print(f"wrote {args.out}")
    model = NullModel.from_dict(document["model"])
    shift = model.shift_for(abs(observed))
    print("\n| seeds | effect | replicates | rejects at 0.05 | 95% interval holds the truth |")
    print("|---|---|---|---|---|")
    for seeds in (2, 3, 5):
        for label, planted in (("none", 0.0), (f"{model.true_difference(shift):+.4f} planted", shift)):
            start = time.perf_counter()
            result = calibrate(model, seeds, args.replicates, shift=planted, seed=seeds)
            print(f"| {seeds} | {label} | {args.replicates} | {result['rejection']:.3f} | "
                  f"{result['coverage']:.3f} |  ({time.perf_counter() - start:.0f} s)")


if __name__ == "__main__":
    main()
