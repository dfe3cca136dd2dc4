"""A local `--backend ray` run on a machine that is busy with other work: wall time, the Ray workers' CPU,
and how many worker processes Ray started that imported TensorFlow.

The run is the adaptive-seeds Ray test's (demo data, 6,000 ratings, 4 epochs, genres and timestamp,
`--seeds auto --max_seeds 3`: 9 models), started beside `--busy` Python loops that each spin for
`--busy_seconds`. Every process under the command (the driver, the Ray it starts, Ray's workers) is
sampled from `/proc` every 0.3 s. `--ray_niceness 15` runs it with Ray's default worker priority instead
of the harness's (`ray_backend.LOCAL_RAY_SYSTEM_CONFIG`), for the before and after.

    .venv/bin/python bench/ray_busy.py [--busy 2] [--busy_seconds 100] [--ray_niceness 15]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TICKS = os.sysconf("SC_CLK_TCK")
# A worker process that used more CPU than this imported TensorFlow (4.0-4.5 CPU-s here); idle workers and
# the folder store's actor stay near 1.
IMPORTED_TENSORFLOW_CPU_S = 3.0

_CHILD = """
import json, sys
import recsys_ablate.training.ray_backend as ray_backend
from recsys_ablate.cli import main
niceness = int(sys.argv[2])
if niceness >= 0:
    ray_backend.LOCAL_RAY_SYSTEM_CONFIG = {"worker_niceness": niceness}
raise SystemExit(main(json.loads(sys.argv[1])))
"""


def _processes() -> dict[tuple[int, str], tuple[int, float, str]]:
    """(pid, start time) -> (parent pid, CPU seconds, command line) of every process now."""
    out = {}
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            stat = open(f"/proc/{name}/stat").read()
            command = open(f"/proc/{name}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2:].split()
        out[int(name), fields[19]] = (int(fields[1]), (int(fields[11]) + int(fields[12])) / TICKS, command)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--busy", type=int, default=2, help="busy loops beside the run")
    parser.add_argument("--busy_seconds", type=float, default=100.0)
    parser.add_argument("--ray_niceness", type=int, default=-1,
                        help="Ray's worker niceness for this run (default: the harness's setting)")
    args = parser.parse_args()
    folder = tempfile.mkdtemp(prefix="ray-busy-")
    argv = ["--dataset", "demo", "--max_ratings", "6000", "--num_epochs", "4", "--eval_every", "2",
            "--batch_size", "512", "--layer_sizes", "16", "--embedding_size", "8",
            "--additional_feature_sets", "movie_genres", "--additional_feature_sets", "timestamp",
            "--seeds", "auto", "--max_seeds", "3", "--backend", "ray",
            "--datasets_dir", os.path.join(folder, "d"), "--saved_models_dir", os.path.join(folder, "s"),
            "--reports_dir", os.path.join(folder, "r")]
    spin = "import sys, time\nend = time.time() + float(sys.argv[1])\nwhile time.time() < end: pass"
    loops = [subprocess.Popen([sys.executable, "-c", spin, str(args.busy_seconds)]) for _ in range(args.busy)]
    start = time.perf_counter()
    run = subprocess.Popen([sys.executable, "-c", _CHILD, json.dumps(argv), str(args.ray_niceness)], cwd=ROOT,
                           stdout=subprocess.DEVNULL)
    seen: dict[tuple[int, str], tuple[int, float, str]] = {}
    under = {run.pid}
    while run.poll() is None:
        for key, (parent, cpu, command) in _processes().items():
            if key[0] in under or parent in under:
                under.add(key[0])
                seen[key] = (parent, cpu, command or seen.get(key, (0, 0, ""))[2])
        time.sleep(0.3)
    wall = time.perf_counter() - start
    for loop in loops:
        loop.kill()
    assert run.returncode == 0, f"the run failed (exit {run.returncode})"
    workers = [cpu for _, cpu, command in seen.values()  # Ray's agents are titled ray:: too
               if command.startswith("ray::") and "Agent" not in command]
    driver = sum(cpu for (pid, _), (_, cpu, _) in seen.items() if pid == run.pid)
    niceness = "Ray's default (15)" if args.ray_niceness == 15 else (
        f"{args.ray_niceness}" if args.ray_niceness >= 0 else "the harness's setting")
    print(f"worker niceness {niceness}, {args.busy} busy loops of {args.busy_seconds:g} s: "
          f"wall {wall:.1f} s; "
          f"Ray workers {sum(workers):.1f} CPU-s in {len(workers)} processes, "
          f"{sum(cpu > IMPORTED_TENSORFLOW_CPU_S for cpu in workers)} of them imported TensorFlow; "
          f"driver {driver:.1f} CPU-s")


if __name__ == "__main__":
    main()
