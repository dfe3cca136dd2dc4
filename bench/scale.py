"""Scale: reading + encoding, one training epoch, one full evaluation and the verdict statistics on
generated ratings of MovieLens-25M's shape, each stage in its own process (its own peak memory).

    .venv/bin/python bench/scale.py --ratings 1000000 5000000 25000000
    .venv/bin/python bench/scale.py --ratings 1000000 5000000 25000000 \
        --stages evaluate_timestamp evaluate_sample

Writes `datasets/scale/ml-shape-N/ratings.csv` (+ movies.csv) on first use
(`python -m recsys_ablate generate movielens-shape`), then prints one line per
stage and size: seconds and peak resident memory (ru_maxrss of that process).
The model is the run "with title text and genres" of the issue: layers 64 32,
embedding 32, batch 4096.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

FEATURES = ("movie_genres", "movie_title_text")


def _spec(folder: str):
    from recsys_ablate.settings import CsvColumns
    from recsys_ablate.settings import DataConfig

    return DataConfig(dataset="csv", interactions=os.path.join(folder, "ratings.csv"),
                    items=os.path.join(folder, "movies.csv"), datasets_dir=os.path.join(folder, "cache"),
                    csv_columns=CsvColumns(user="userId", item="movieId", timestamp="timestamp",
                                           rating="rating", item_title="title", item_genres="genres"))


def _peak_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def stage(name: str, folder: str) -> dict:
    """Runs one stage in this process; returns its measurements."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    from recsys_ablate.data.encoded import load_dataset

    if name == "encode":
        import shutil

        shutil.rmtree(os.path.join(folder, "cache"), ignore_errors=True)
        start = time.perf_counter()
        data = load_dataset(_spec(folder), log=lambda *_: None)
        return {"seconds": time.perf_counter() - start, "ratings": len(data.user), "users": data.num_users,
                "items": data.num_movies, "validation": len(data.validation)}
    data = load_dataset(_spec(folder), log=lambda *_: None)
    import numpy as np
    import tensorflow as tf

    from recsys_ablate.evaluation import catalogue
    from recsys_ablate.features import FeatureContext
    from recsys_ablate.models.retrieval import build_model
    from recsys_ablate.training.trainer import EpochTrainer

    # evaluate_timestamp: a query tower that reads the timestamp, so every example is its own query.
    features = FEATURES + (("timestamp",) if name in ("evaluate_timestamp", "evaluate_sample") else ())
    model = build_model(features, FeatureContext(data, 32, None), (64, 32), 42)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    if name == "epoch":
        train = EpochTrainer(model, data, 4096, 42)
        start = time.perf_counter()
        train(1)
        return {"seconds": time.perf_counter() - start, "steps": -(-len(data.train) // 4096)}
    if name in ("evaluate", "evaluate_timestamp"):
        validation = catalogue.EvaluationSet(data.validation, data.validation)
        start = time.perf_counter()
        ranks = catalogue.example_ranks(model, data, validation)
        seconds = time.perf_counter() - start
        if name == "evaluate":
            np.save(os.path.join(folder, "ranks.npy"), ranks)
        return {"seconds": seconds, "examples": len(ranks)}
    if name == "evaluate_sample":  # --eval_users 10000, with the timestamp
        sample = catalogue.validation_sample(data, catalogue.EvaluationSet(data.validation, data.validation),
                                             10_000)
        start = time.perf_counter()
        ranks = catalogue.example_ranks(model, data, sample)
        return {"seconds": time.perf_counter() - start, "examples": len(ranks)}
    if name == "verdicts":  # 3 seeds x 2 arms of ranks: the evaluated ones, perturbed per run
        from recsys_ablate.evaluation import metrics, verdicts

        ranks = np.load(os.path.join(folder, "ranks.npy"))
        users = metrics.ValidationUsers.of(data.user[data.validation])
        rng = np.random.default_rng(0)
        start = time.perf_counter()
        sums = [[metrics.per_user(metrics.metric("top_100", (100,)),
                                  np.maximum(ranks + rng.integers(-20, 20, len(ranks)), 0), users)
                 for _ in range(3)] for _ in range(2)]
        per_user = time.perf_counter() - start
        weights = sums[0][0][1]
        differences = np.stack([sums[1][s][0] - sums[0][s][0] for s in range(3)])
        comparison = verdicts.compare("top_100", differences, weights, seeds=[0, 1, 2], alpha=0.05, power=0.8)
        return {"seconds": time.perf_counter() - start, "per_user_seconds": per_user,
                "p": round(comparison.p_value, 4)}
    raise ValueError(name)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ratings", type=int, nargs="+", default=[1_000_000, 5_000_000, 25_000_000])
    parser.add_argument("--stages", nargs="+", default=["encode", "epoch", "evaluate", "verdicts"])
    parser.add_argument("--stage", help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage:
        result = stage(args.stage, args.folder)
        print(json.dumps({**result, "peak_mib": _peak_mib()}))
        return
    for ratings in args.ratings:
        folder = os.path.join(ROOT, "datasets", "scale", f"ml-shape-{ratings}")
        if not os.path.isfile(os.path.join(folder, "ratings.csv")):
            start = time.perf_counter()
            subprocess.run([sys.executable, "-m", "recsys_ablate", "generate", "movielens-shape",
                            os.path.join(folder, "ratings.csv"), "--ratings", str(ratings)], check=True,
                           cwd=ROOT, stdout=subprocess.DEVNULL)
            print(f"{ratings:>11,} generated in {time.perf_counter() - start:.0f} s", flush=True)
        for name in args.stages:
            out = subprocess.run([sys.executable, __file__, "--stage", name, "--folder", folder],
                                 capture_output=True, text=True, cwd=ROOT)
            if out.returncode:
                print(f"{ratings:>11,} {name}: failed\n{out.stderr[-2000:]}", flush=True)
                break
            result = json.loads(out.stdout.strip().splitlines()[-1])
            extra = ", ".join(f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in result.items()
                              if k not in ("seconds", "peak_mib"))
            peak = result["peak_mib"] / 1024
            print(f"{ratings:>11,} {name:<9} {result['seconds']:8.1f} s  peak {peak:5.2f} GiB"
                  f"  ({extra})", flush=True)


if __name__ == "__main__":
    main()
