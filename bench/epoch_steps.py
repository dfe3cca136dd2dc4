"""Seconds per training epoch of one model, one TensorFlow thread, at several data sizes and batch sizes.

Measures the training loop itself (`trainer.EpochTrainer`: the epoch's steps), not evaluation or process
start: each case builds the baseline model of a command line (ids only, towers 64-32, embedding 32) in a
fresh process and trains `--epochs` epochs; the figure is the median of the epochs after the first (which
includes tracing), and the first epoch is printed beside it. Also prints the first epochs' losses, which
two checkouts must agree on exactly.

  python bench/epoch_steps.py [--epochs 6] [--code ROOT] [--shared ../shared/datasets]

`--code` runs another checkout's code (its folder first on PYTHONPATH), to measure before and after.
The recipes case generates the recipes example (`generate recipes`) into a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_CHILD = """
import json, statistics, sys, time
import recsys_ablate  # noqa: F401 (legacy Keras before TensorFlow)
import tensorflow as tf
from recsys_ablate.ablation import plan_ablation
from recsys_ablate.cli import experiment_from_args, parse_args
from recsys_ablate.training.trainer import EpochTrainer, _compiled

tf.config.threading.set_intra_op_parallelism_threads(1)
tf.config.threading.set_inter_op_parallelism_threads(1)
argv, epochs = json.loads(sys.argv[1]), int(sys.argv[2])
plan = plan_ablation(experiment_from_args(parse_args(argv)), log=lambda *_: None)
run = plan.runs[0]
model, _ = _compiled(run, plan.context(run))
train = EpochTrainer(model, plan.data, run.train.batch_size, run.train.seed)
seconds, losses = [], []
for epoch in range(1, epochs + 1):
    start = time.perf_counter()
    losses.append(train(epoch))
    seconds.append(time.perf_counter() - start)
print(json.dumps({"rows": len(plan.data.train), "first": seconds[0],
                  "median": statistics.median(seconds[1:]), "losses": losses[:3]}))
"""


def _cases(folder: str, shared: str) -> list[tuple[str, list[str]]]:
    outputs = ["--datasets_dir", os.path.join(folder, "d"), "--saved_models_dir", os.path.join(folder, "s"),
               "--reports_dir", os.path.join(folder, "r")]
    recipes = os.path.join(folder, "recipes")
    cases = [(f"demo, batch {b}", ["--dataset", "demo", "--batch_size", str(b), *outputs])
             for b in (256, 512, 2048)]
    cases.append(("recipes, batch 256", [
        "--config", os.path.join(ROOT, "experiments", "recipes.toml"), "--seeds", "1",
        "--interactions", os.path.join(recipes, "interactions.csv"),
        "--items", os.path.join(recipes, "recipes.csv"), "--users", os.path.join(recipes, "users.csv"),
        *outputs]))
    ml1m = os.path.join(shared, "ml-1m-users1-2999")
    if os.path.isdir(ml1m):
        cases.append(("ML-1M users 1-2999, batch 2048", ["--data_dir", ml1m, *outputs]))
    return cases


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--code", default=ROOT, help="checkout whose code runs (default: this one)")
    parser.add_argument("--shared", default=os.path.join(ROOT, "..", "shared", "datasets"))
    args = parser.parse_args()
    env = dict(os.environ, PYTHONPATH=args.code)
    with tempfile.TemporaryDirectory() as folder:
        subprocess.run([sys.executable, "-m", "recsys_ablate", "generate", "recipes",
                        os.path.join(folder, "recipes")], cwd=args.code, env=env, check=True,
                       capture_output=True)
        for name, argv in _cases(folder, args.shared):
            out = subprocess.run([sys.executable, "-c", _CHILD, json.dumps(argv), str(args.epochs)],
                                 cwd=args.code, env=env, check=True, capture_output=True, text=True)
            result = json.loads(out.stdout.strip().splitlines()[-1])
            print(f"{name} ({result['rows']:,} training rows): {result['median']:.3f} s per epoch "
                  f"(first {result['first']:.2f} s); losses {result['losses']}")


if __name__ == "__main__":
    main()
