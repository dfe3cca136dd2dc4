"""Serving benchmark: ScaNN against BruteForce on the ML-1M catalogue.

Trains (or reloads) the id + timestamp + genres retrieval model on
../shared/datasets/ml-1m-users1-2999 for a few epochs, exports both indexes,
loads them back as a serving process would, and measures ScaNN's recall@10
against the exact BruteForce top 10 for every user with ratings (query time:
the user's latest rating), and the per-query latency of both for batches of 1
and of 1000.

    .venv/bin/python bench/serving.py [--epochs 3]
"""

import argparse
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import recsys_ablate  # noqa: E402,F401
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from recsys_ablate.ablation import run_ablation  # noqa: E402
from recsys_ablate.settings import ExperimentConfig, TrainConfig  # noqa: E402
from recsys_ablate.data.encoded import load_dataset
from recsys_ablate.settings import DataConfig  # noqa: E402
from recsys_ablate.outputs.serving import build_indexes, export_indexes, load_index  # noqa: E402


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--data_dir", default=os.path.join(ROOT, "..", "shared", "datasets", "ml-1m-users1-2999"))
    args = p.parse_args()
    spec = DataConfig(data_dir=args.data_dir, datasets_dir=os.path.join(ROOT, "datasets"))
    config = ExperimentConfig(feature_sets=(("movie_genres", "timestamp"),), data=spec,
                              train=TrainConfig(num_epochs=args.epochs, eval_every=args.epochs),
                              saved_models_dir=os.path.join(ROOT, "saved_models"),
                              reports_dir=os.path.join(ROOT, "reports"))
    trained = run_ablation(config, log=lambda *_: None).trained[0]
    data = load_dataset(spec, log=lambda *_: None)
    with tempfile.TemporaryDirectory() as folder:
        paths = export_indexes(build_indexes(trained.model, data, k=10), folder)
        indexes = {name: load_index(path) for name, path in paths.items()}
        users = np.unique(data.user)
        latest = np.zeros(data.num_users, np.int64)
        np.maximum.at(latest, data.user, data.timestamp)
        query = {"user_id": tf.constant(data.user_ids[users].astype(str)),
                 "timestamp": tf.constant(latest[users])}
        titles = {name: index(query)[1].numpy() for name, index in indexes.items()}
        recall = np.mean([len(set(a) & set(b)) / 10 for a, b in zip(titles["brute_force"], titles["scann"])])
        print(f"ScaNN recall@10 against BruteForce: {recall:.4f} over {len(users):,} users, "
              f"{data.num_movies:,} movies")
        for name, index in indexes.items():
            for batch in (1, 1000):
                sample = {k: v[:batch] for k, v in query.items()}
                index(sample)
                times = []
                for _ in range(200 if batch == 1 else 20):
                    start = time.perf_counter()
                    index(sample)
                    times.append(time.perf_counter() - start)
                per_query = statistics.median(times) / batch * 1000
                print(f"{name:>11} batch {batch:>4}: {per_query:.3f} ms per query "
                      f"(median call {statistics.median(times) * 1000:.2f} ms)")


if __name__ == "__main__":
    main()
