"""What the reference models cost: seconds to fit each setting of each one's grid, and to evaluate it.

Loads a GroupLens folder twice, under the `tfrs` protocol (every rated movie
in the catalogue) and under `recbole` (ratings >= 3, 10-core), and fits every
setting of popularity, EASE and iALS on its training part, timing the fit and
one full-catalogue validation evaluation (the harness's own code: the same
`EvaluationSet` and metrics a run uses).

  python bench/references.py --data_dir ../shared/datasets/ml-1m-users1-2999 [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", required=True)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    args = parser.parse_args()
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    sys.path.insert(0, ROOT)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(args.threads)
    from recsys_ablate.data.encoded import load_dataset
    from recsys_ablate.evaluation import catalogue
    from recsys_ablate.evaluation.metrics import evaluated_metrics
    from recsys_ablate.models.reference import REFERENCES
    from recsys_ablate.settings import build

    print(f"{os.cpu_count()} CPUs; {args.threads} threads")
    with tempfile.TemporaryDirectory() as folder:
        for protocol in ("tfrs", "recbole"):
            config = build({"experiment": {"protocol": protocol},
                            "data": {"dataset": "grouplens", "data_dir": args.data_dir,
                                     "datasets_dir": folder}})
            data = load_dataset(config.data, log=lambda *_: None)
            validation = catalogue.EvaluationSet.of(data, "validation", config.train)
            metrics = evaluated_metrics(config.train)
            selection = "ndcg_10"
            print(f"\n{protocol}: {len(data.train):,} training ratings, {data.num_users:,} users, "
                  f"{data.num_movies:,} items")
            for name, cls in REFERENCES.items():
                for settings in cls.grid:
                    start = time.perf_counter()
                    model = cls(**settings).fit(data)
                    fit = time.perf_counter() - start
                    start = time.perf_counter()
                    values, _ = catalogue.evaluate(model, data, validation, metrics)
                    evaluate = time.perf_counter() - start
                    words = ", ".join(f"{k} {v:g}" for k, v in settings.items()) or "-"
                    print(f"  {name:<11} {words:<44} fit {fit:6.2f} s  evaluate {evaluate:5.2f} s  "
                          f"validation {selection} {values[selection]:.4f}", flush=True)


if __name__ == "__main__":
    main()
