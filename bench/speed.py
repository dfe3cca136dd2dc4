"""Speed benchmark: the harness against a tutorial-style TFRS reference, and the deep-dive protocol.

Part 1, side by side: the same model (id-only towers, Dense 64-32, embedding
32, batch 2048, Adagrad 0.1, same seeds, same split) trained through the
harness and through `bench/reference_tfrs.py`, each seed in its own process
so peak memory is its own. Prints seconds per training epoch (median of the
epochs after the first, which includes tracing), seconds per full validation
evaluation (median), peak resident memory, the ratios, and each side's
validation metrics per seed, so the two can be compared against seed noise.

Part 2, the deep-dive protocol (`experiments/deep_dive.toml`: 6 feature sets
x 300 epochs, evaluation every 5) projected for full ML-1M from measured
times: every feature set is trained through the harness on a dataset of full
ML-1M's size, made by giving users 3001-5999 (in users.dat, without ratings
in the subset) copies of the ratings of users 1-2999, so batches hold as many
distinct users as full ML-1M's do. Times are scaled by 1,000,209 / its
ratings. With `--workers 2` (two models at once, one TensorFlow thread each)
the feature sets run in pairs, each training at least `--min_seconds_per_job`
so that all its timed epochs share the machine with the other; the total is
the six jobs' projected durations scheduled on two workers in the order the
harness starts them (longest first, `ablation.training_order`).

    .venv/bin/python bench/speed.py [--data_dir ../shared/datasets/ml-1m-users1-2999]
        [--epochs 4] [--seeds 42 43] [--skip_reference] [--skip_protocol] [--protocol_workers 1 2]
"""

import argparse
import concurrent.futures
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
import tomllib

ROOT = os.path.dirname(os.path.abspath(os.path.dirname(__file__)))
sys.path.insert(0, ROOT)
SHARED = os.path.join(ROOT, "..", "shared", "datasets")
FULL_ML1M_RATINGS = 1_000_209
KS = (1, 5, 10, 50, 100)


def _context(data):
    from recsys_ablate.features import FeatureContext
    from recsys_ablate.data.movie_length import CsvMovieLengthSource, MovieLengthLookup

    csv = os.path.join(SHARED, "movie_runtimes_ml1m.csv")
    lookup = MovieLengthLookup([CsvMovieLengthSource(csv)] if os.path.isfile(csv) else [])
    return FeatureContext(data, 32, lambda: lookup.lengths(data.movie_ids, data.movie_titles))


def run_harness(data, args, features=()):
    import tensorflow as tf

    if args.threads:  # what `--workers N` gives each worker process
        tf.config.threading.set_intra_op_parallelism_threads(args.threads)
        tf.config.threading.set_inter_op_parallelism_threads(args.threads)

    from recsys_ablate.evaluation import catalogue
    from recsys_ablate.evaluation.metrics import retrieval_metrics
    from recsys_ablate.models.retrieval import build_model
    from recsys_ablate.training.trainer import EpochTrainer

    model = build_model(tuple(features), _context(data), (64, 32), args.seed)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    train_epoch = EpochTrainer(model, data, args.batch_size, args.seed)

    validation = catalogue.EvaluationSet(data.validation, data.validation)

    def evaluate():
        start = time.perf_counter()
        metrics, _ = catalogue.evaluate(model, data, validation, retrieval_metrics(KS))
        return time.perf_counter() - start, metrics

    # With --train_at_least (concurrent protocol jobs) evaluations come first
    # and training goes on that long, so every timed epoch overlaps the other job.
    evals = [evaluate()[0] for _ in range(args.evals)] if args.train_at_least else []
    epochs, begin = [], time.perf_counter()
    while len(epochs) < args.epochs or time.perf_counter() - begin < args.train_at_least:
        start = time.perf_counter()
        train_epoch(len(epochs) + 1)
        epochs.append(time.perf_counter() - start)
    if not args.train_at_least:
        evals = [evaluate()[0] for _ in range(args.evals)]
    return epochs, evals, evaluate()[1]


def run_reference(data, args, features=()):
    sys.path.insert(0, os.path.join(ROOT, "bench"))
    import reference_tfrs

    model, train, validation = reference_tfrs.build(data, 32, (64, 32), args.batch_size, 0.1, args.seed)
    epochs = []
    for _ in range(args.epochs):
        start = time.perf_counter()
        model.fit(train, epochs=1, verbose=0)
        epochs.append(time.perf_counter() - start)
    evals = []
    for _ in range(args.evals):
        start = time.perf_counter()
        result = model.evaluate(validation, return_dict=True, verbose=0)
        evals.append(time.perf_counter() - start)
    metrics = {f"top_{k}": float(result[f"factorized_top_k/top_{k}_categorical_accuracy"]) for k in KS}
    return epochs, evals, metrics


def child(args):
    import recsys_ablate  # noqa: F401
    from recsys_ablate.data.encoded import load_dataset
    from recsys_ablate.settings import DataConfig

    data = load_dataset(DataConfig(data_dir=args.data_dir, datasets_dir=args.datasets_dir),
                        log=lambda *_: None)
    run = run_harness if args.impl == "harness" else run_reference
    epochs, evals, metrics = run(data, args, json.loads(args.features))
    print(json.dumps({"epochs": epochs, "evals": evals, "metrics": metrics,
                      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "train": len(data.train), "ratings": len(data.user)}))


def _run_child(impl, data_dir, seed, args, features=(), epochs=None, evals=None, threads=0, min_seconds=0):
    command = [sys.executable, os.path.abspath(__file__), "--impl", impl, "--data_dir", data_dir,
               "--datasets_dir", args.datasets_dir, "--seed", str(seed), "--batch_size", str(args.batch_size),
               "--epochs", str(epochs or args.epochs), "--evals", str(evals or args.evals),
               "--features", json.dumps(list(features)), "--threads", str(threads),
               "--train_at_least", str(min_seconds)]
    out = subprocess.run(command, capture_output=True, text=True)
    if out.returncode:
        sys.exit(f"{impl} run failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _steady(result):
    """(median epoch seconds after the first, median evaluation seconds)."""
    return statistics.median(result["epochs"][1:]), statistics.median(result["evals"])


def side_by_side(args):
    print(f"== side by side on {os.path.normpath(args.data_dir)}: id-only towers, batch {args.batch_size}, "
          f"seeds {args.seeds}")
    rows = {}
    for impl in ("harness", "reference"):
        results = [_run_child(impl, args.data_dir, seed, args) for seed in args.seeds]
        epoch = statistics.median(_steady(r)[0] for r in results)
        evaluation = statistics.median(_steady(r)[1] for r in results)
        peak = max(r["peak_mib"] for r in results)
        rows[impl] = (epoch, evaluation, peak)
        print(f"{impl:>9}: epoch {epoch:.2f}s, evaluation {evaluation:.2f}s, peak RSS {peak:.0f} MiB "
              f"(training ratings {results[0]['train']:,})")
        for seed, r in zip(args.seeds, results):
            print(f"           seed {seed}: epochs " + " ".join(f"{s:.2f}" for s in r["epochs"])
                  + f"s; validation after {args.epochs} epochs "
                  + " ".join(f"{k}={v:.4f}" for k, v in r["metrics"].items()))
    h, ref = rows["harness"], rows["reference"]
    print(f"   ratios: epoch {ref[0] / h[0]:.2f}x faster, evaluation {ref[1] / h[1]:.1f}x faster, "
          f"memory {h[2] / ref[2]:.2f}x")


def full_size_copy(subset_dir: str, target_dir: str) -> str:
    """A GroupLens ML-1M folder of full ML-1M's size, built from the users 1-2999 subset.

    Users 1-2999's ratings are kept and copied to users 3001-5999 (same
    movies, ratings and times), who exist in users.dat but have no ratings in
    the subset: ~975k ratings over ~6,000 users, like full ML-1M (1,000,209
    over 6,040). Written once; reused while the subset is unchanged.
    """
    marker = os.path.join(target_dir, "built-from")
    source = os.path.abspath(os.path.join(subset_dir, "ratings.dat"))
    stamp = f"{source} {os.path.getsize(source)} {os.path.getmtime(source)}"
    if os.path.isfile(marker) and open(marker).read() == stamp:
        return target_dir
    shutil.rmtree(target_dir, ignore_errors=True)
    os.makedirs(target_dir)
    for name in ("movies.dat", "users.dat"):
        shutil.copy(os.path.join(subset_dir, name), target_dir)
    with open(source, encoding="latin-1") as f:
        lines = f.read().splitlines()
    copies = []
    for line in lines:
        user, rest = line.split("::", 1)
        if int(user) + 3000 <= 6040:
            copies.append(f"{int(user) + 3000}::{rest}")
    with open(os.path.join(target_dir, "ratings.dat"), "w", encoding="latin-1") as f:
        f.write("\n".join(lines + copies) + "\n")
    with open(marker, "w") as f:
        f.write(stamp)
    return target_dir


def _schedule_hours(durations, feature_sets, epochs, workers):
    """Hours to run jobs of these durations as `--workers` does: in the harness's
    training order (`ablation.training_order`), each on the first free worker."""
    from recsys_ablate.ablation import training_order

    free = [0.0] * workers
    for i in training_order(feature_sets, [epochs] * len(feature_sets)):
        free[free.index(min(free))] += durations[i]
    return max(free) / 3600


def protocol(args):
    from recsys_ablate.training.workers import threads_per_worker

    with open(os.path.join(ROOT, "experiments", "deep_dive.toml"), "rb") as f:
        config = tomllib.load(f)
    feature_sets = [[] if s == ["None"] else s for s in config["experiment"]["feature_sets"]]
    epochs_total, every = config["train"]["num_epochs"], config["train"]["eval_every"]
    data_dir = full_size_copy(args.data_dir, os.path.join(args.datasets_dir, "bench-ml1m-full-size"))
    for workers in args.protocol_workers:
        threads = threads_per_worker(workers)
        print(f"\n== deep-dive protocol ({len(feature_sets)} feature sets x {epochs_total} epochs, "
              f"evaluation every {every}) projected for full ML-1M, --workers {workers} "
              f"({threads} TensorFlow thread{'s' if threads > 1 else ''} each), "
              f"measured on {os.path.normpath(data_dir)}")
        results = []
        for start in range(0, len(feature_sets), workers):
            group = feature_sets[start:start + workers]
            with concurrent.futures.ThreadPoolExecutor(len(group)) as pool:  # each job is its own process
                results += pool.map(lambda features, threads=threads, workers=workers: _run_child(
                    "harness", data_dir, args.seeds[0], args, features, epochs=3, evals=2, threads=threads,
                    min_seconds=args.min_seconds_per_job if workers > 1 else 0), group)
        durations = []
        for features, r in zip(feature_sets, results):
            epoch, evaluation = _steady(r)
            scale = FULL_ML1M_RATINGS / r["ratings"]
            durations.append((epochs_total * epoch + epochs_total // every * evaluation) * scale)
            print(f"  {' + '.join(features) or 'baseline (ids only)':<58} epoch {epoch:.2f}s  evaluation "
                  f"{evaluation:.2f}s  peak RSS {r['peak_mib']:.0f} MiB  -> {durations[-1] / 3600:.2f} h")
        print(f"  (training ratings {results[0]['train']:,} of {results[0]['ratings']:,}; times scaled by "
              f"{FULL_ML1M_RATINGS / results[0]['ratings']:.3f} to full ML-1M's 1,000,209)")
        print(f"projected deep-dive protocol on full ML-1M, --workers {workers}: "
              f"{_schedule_hours(durations, feature_sets, epochs_total, workers):.2f} h")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data_dir", default=os.path.join(SHARED, "ml-1m-users1-2999"))
    p.add_argument("--datasets_dir", default=os.path.join(ROOT, "datasets"))
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--evals", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=2048)
    p.add_argument("--seeds", type=int, nargs="+", default=[42, 43])
    p.add_argument("--skip_reference", action="store_true", help="only part 2")
    p.add_argument("--skip_protocol", action="store_true", help="only part 1")
    p.add_argument("--impl", choices=("harness", "reference"), help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=42, help=argparse.SUPPRESS)
    p.add_argument("--features", default="[]", help=argparse.SUPPRESS)
    p.add_argument("--threads", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--train_at_least", type=float, default=0, help=argparse.SUPPRESS)
    p.add_argument("--protocol_workers", type=int, nargs="+", default=[1, 2],
                   help="project the protocol for these --workers values")
    p.add_argument("--min_seconds_per_job", type=float, default=40,
                   help="with several workers, each job trains at least this long so its epochs overlap")
    args = p.parse_args()
    if args.impl:
        return child(args)
    if not args.skip_reference:
        side_by_side(args)
    if not args.skip_protocol:
        protocol(args)


if __name__ == "__main__":
    main()
