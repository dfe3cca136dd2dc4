"""What an ablation of many small models pays per model, beyond its epochs: tracing, process starts.

Runs the command line (in a subprocess, as a user would) on the embedded
demo data: N tiny models in one process (`--workers 1`), then the same with
`--workers 2`, each on fresh saved-models folders. Seconds are wall time of
the whole command, so Python's and TensorFlow's start is in every figure;
CPU seconds (user and system, of the command and every process under it:
`process_cpu.py`) are less disturbed by what else the machine runs.

  python bench/small_models.py [--models 8] [--code ROOT]

`--code` runs another checkout's code (its folder goes first on PYTHONPATH,
for the worker processes too), to measure before and after a change.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

from process_cpu import run_counting_descendants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _run(code: str, folder: str, models: int, workers: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the command and its worker processes)."""
    argv = [sys.executable, "-m", "recsys_ablate", "--dataset", "demo", "--max_ratings", "8000",
            "--num_epochs", "2", "--eval_every", "1", "--layer_sizes", "16", "--embedding_size", "8",
            "--batch_size", "512", "--seeds", str(models), "--workers", str(workers),
            "--datasets_dir", os.path.join(folder, "d"), "--saved_models_dir",
            os.path.join(folder, f"s{workers}"), "--reports_dir", os.path.join(folder, "r")]
    env = dict(os.environ, PYTHONPATH=code)
    wall, cpu, _ = run_counting_descendants(argv, cwd=code, env=env, capture_output=True)
    return wall, cpu

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=int, default=8)
    parser.add_argument("--code", default=ROOT, help="checkout whose code runs (default: this one)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as folder:
        _run(args.code, folder, 1, 1)  # the demo generated and encoded, the native kernels built
        for workers in (1, 2):
            seconds, cpu = _run(args.code, folder, args.models, workers)
            print(f"{args.models} models, --workers {workers}: {seconds:.1f} s "
                  f"({seconds / args.models:.2f} s per model, process start included), {cpu:.1f} CPU s")


if __name__ == "__main__":
    main()
