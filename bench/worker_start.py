"""What `--workers` costs to start: wall seconds and CPU seconds of every process involved.

Two cases, each in a fresh Python process (`--repeat` times):

- "empty jobs": `run_in_workers` with two workers and an empty job each, called twice in one process
  (as a notebook, a test process or adaptive seeds' rounds do); the wall seconds of each call.
- "demo ablation": `python -m recsys_ablate --dataset demo --num_epochs 2 --workers 2
  --additional_feature_sets timestamp` into fresh folders: the whole command's wall seconds.

CPU seconds are user + system of the command and every process under it, the fork server and the workers
it forks included (`process_cpu.py`).

  python bench/worker_start.py [--repeat 3] [--code ROOT]

`--code` runs another checkout's code (its folder first on PYTHONPATH), to measure before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile

from process_cpu import run_counting_descendants

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_EMPTY_JOBS = """
import json, os, time
from recsys_ablate.training.workers import run_in_workers
seconds = []
for _ in range(2):
    start = time.perf_counter()
    pids = run_in_workers(os.getpid, [(), ()], 2, log=print)
    seconds.append(time.perf_counter() - start)
print(json.dumps(seconds))
"""


def _cpu_seconds_of(command: list[str], env: dict, code: str) -> tuple[float, float, str]:
    """Runs `command`; returns (wall seconds, CPU seconds of it and all its descendants, its stdout)."""
    # In the checkout's folder: `-c` and `-m` put the working directory first on sys.path.
    wall, cpu, done = run_counting_descendants(command, env=env, cwd=code, capture_output=True, text=True)
    return wall, cpu, done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--code", default=ROOT, help="the checkout whose code runs")
    args = parser.parse_args()
    args.code = os.path.abspath(args.code)
    env = dict(os.environ, PYTHONPATH=args.code, TF_CPP_MIN_LOG_LEVEL="3")
    empty, demo = [], []
    for _ in range(args.repeat):
        wall, cpu, out = _cpu_seconds_of([sys.executable, "-c", _EMPTY_JOBS], env, args.code)
        first, second = json.loads(out.strip().splitlines()[-1])
        empty.append((first, second, wall, cpu))
        with tempfile.TemporaryDirectory() as folder:
            wall, cpu, _ = _cpu_seconds_of([
                sys.executable, "-m", "recsys_ablate", "--dataset", "demo", "--num_epochs", "2", "--workers",
                "2", "--additional_feature_sets", "timestamp", "--datasets_dir", f"{folder}/d",
                "--saved_models_dir", f"{folder}/s", "--reports_dir", f"{folder}/r"], env, args.code)
            demo.append((wall, cpu))
    print(f"code: {args.code}")
    print("empty jobs, two workers: first call {:.2f} s, second call {:.2f} s; whole process {:.1f} s wall, "
          "{:.1f} CPU-s (medians of {})".format(*(statistics.median(c) for c in zip(*empty)), args.repeat))
    print("demo ablation, --workers 2, 2 epochs: {:.1f} s wall, {:.1f} CPU-s (medians of {})".format(
        *(statistics.median(c) for c in zip(*demo)), args.repeat))
    for row in empty:
        print("  empty jobs:", " ".join(f"{v:.2f}" for v in row))
    for row in demo:
        print("  demo:", " ".join(f"{v:.2f}" for v in row))


if __name__ == "__main__":
    main()
