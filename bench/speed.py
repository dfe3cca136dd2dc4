"""Side-by-side speed benchmark: the harness against a tutorial-style TFRS reference.

Runs the same model (id-only towers, Dense 64-32, embedding 32, batch 2048,
Adagrad 0.1, same seed, same split) both ways, each in its own process so
peak memory is its own, and prints seconds per training epoch (median), seconds
per full validation evaluation, peak resident memory, the ratios, the
validation metrics of both, and the projected time of the deep-dive protocol
(6 feature sets x 300 epochs, evaluation every 5) on full ML-1M.

    .venv/bin/python bench/speed.py [--data_dir ../shared/datasets/ml-1m-users1-2999] [--epochs 3]
"""

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
FULL_ML1M_RATINGS = 1_000_209
KS = (1, 5, 10, 50, 100)


def run_harness(data, args):
    import tensorflow as tf

    from recsys_ablate import evaluation
    from recsys_ablate.features import FeatureContext
    from recsys_ablate.model import build_model
    from recsys_ablate.movie_length import MovieLengthLookup
    from recsys_ablate.trainer import EpochTrainer

    context = FeatureContext(data, 32, lambda: MovieLengthLookup([]).lengths(data.movie_ids, data.movie_titles))
    model = build_model((), context, (64, 32), args.seed)
    model.compile(optimizer=tf.keras.optimizers.Adagrad(0.1))
    train_epoch = EpochTrainer(model, data, args.batch_size, args.seed)
    epochs = []
    for epoch in range(1, args.epochs + 1):
        start = time.perf_counter()
        train_epoch(epoch)
        epochs.append(time.perf_counter() - start)
    evals = []
    for _ in range(args.evals):
        start = time.perf_counter()
        metrics, _ = evaluation.evaluate(model, data, data.validation, KS)
        evals.append(time.perf_counter() - start)
    return epochs, evals, metrics


def run_reference(data, args):
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
    from recsys_ablate.data.encoded import DataSpec, load_dataset

    data = load_dataset(DataSpec(data_dir=args.data_dir, datasets_dir=args.datasets_dir), log=lambda *_: None)
    epochs, evals, metrics = (run_harness if args.impl == "harness" else run_reference)(data, args)
    print(json.dumps({"epochs": epochs, "evals": evals, "metrics": metrics,
                      "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "ratings": len(data.user), "validation": len(data.validation)}))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--data_dir", default=os.path.join(ROOT, "..", "shared", "datasets", "ml-1m-users1-2999"))
    p.add_argument("--datasets_dir", default=os.path.join(ROOT, "datasets"))
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--evals", type=int, default=2)
    p.add_argument("--batch_size", type=int, default=2048)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--impl", choices=("harness", "reference"))
    args = p.parse_args()
    if args.impl:
        return child(args)

    results = {}
    for impl in ("harness", "reference"):
        out = subprocess.run([sys.executable, __file__, "--impl", impl] + sys.argv[1:],
                             capture_output=True, text=True, check=True)
        results[impl] = json.loads(out.stdout.strip().splitlines()[-1])
    rows = {}
    for impl, r in results.items():
        # The first epoch includes tracing; the median of the rest is the steady state.
        rows[impl] = (statistics.median(r["epochs"][1:]), statistics.median(r["evals"]), r["peak_mib"])
        print(f"{impl:>9}: epoch {rows[impl][0]:.2f}s (median of {len(r['epochs']) - 1}, first "
              f"{r['epochs'][0]:.2f}s), evaluation {rows[impl][1]:.2f}s, peak RSS {rows[impl][2]:.0f} MiB, "
              f"validation " + " ".join(f"{k}={v:.4f}" for k, v in r["metrics"].items()))
    h, ref = rows["harness"], rows["reference"]
    print(f"   ratios: epoch {ref[0] / h[0]:.2f}x faster, evaluation {ref[1] / h[1]:.1f}x faster, "
          f"memory {h[2] / ref[2]:.2f}x")
    scale = FULL_ML1M_RATINGS / results["harness"]["ratings"]
    for impl, (epoch, evaluation, _) in rows.items():
        hours = 6 * (300 * epoch + 60 * evaluation) * scale / 3600
        print(f"projected deep-dive protocol on full ML-1M ({impl}): {hours:.1f} h "
              f"(6 x (300 epochs x {epoch * scale:.1f}s + 60 evaluations x {evaluation * scale:.1f}s))")


if __name__ == "__main__":
    main()
