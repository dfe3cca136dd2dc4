"""Seconds per training epoch with each objective option, on ML-1M users 1-2999.

    .venv/bin/python bench/objective_speed.py [--epochs 4]

Id-only towers, Dense 64-32, embedding 32, batch 2048, Adagrad 0.1, seed 42;
the median of the epochs after the first (which includes tracing). Every
variant trains in this one process, one after another.
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")

VARIANTS = {
    "TFRS defaults": {},
    "temperature 0.1": {"temperature": 0.1},
    "logQ correction": {"logq_correction": True},
    "100 uniform negatives": {"uniform_negatives": 100},
    "accidental hits removed": {"remove_accidental_hits": True},
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=os.path.join(ROOT, "..", "shared", "datasets",
                                                           "ml-1m-users1-2999"))
    parser.add_argument("--epochs", type=int, default=4)
    args = parser.parse_args()
    import numpy as np
    import tensorflow as tf

    from recsys_ablate.settings import ObjectiveConfig
    from recsys_ablate.data.encoded import load_dataset
    from recsys_ablate.settings import DataConfig
    from recsys_ablate.features import FeatureContext
    from recsys_ablate.models.retrieval import build_model
    from recsys_ablate.training.trainer import EpochTrainer

    data = load_dataset(DataConfig(dataset="grouplens", data_dir=args.data_dir), log=lambda *_: None)
    for name, options in VARIANTS.items():
        model = build_model((), FeatureContext(data, 32, None), (64, 32), 42, ObjectiveConfig(**options))
        model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
        train = EpochTrainer(model, data, 2048, 42)
        seconds, losses = [], []
        for epoch in range(1, args.epochs + 1):
            start = time.perf_counter()
            losses.append(train(epoch))
            seconds.append(time.perf_counter() - start)
        print(f"{name:<26} {np.median(seconds[1:]):6.2f} s per epoch  (loss after {args.epochs}: "
              f"{losses[-1]:.1f})", flush=True)


if __name__ == "__main__":
    main()
