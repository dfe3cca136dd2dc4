"""The Ray backend's cost and throughput against the local backends, on this machine.

Part 1, per-model overhead: the same small models (demo data, 6,000 ratings, 1 epoch: almost no
training) trained with `--workers 2` and with `--backend ray` (a local Ray started by the command);
the difference in wall time over the number of models is what a Ray task costs beyond a worker
process, with Ray's start-up reported apart.

Part 2, throughput: a real ablation (ML-1M users 1-2999 from ../shared/datasets, 3 feature sets x 2
seeds, `--epochs` each with one evaluation at the end, layers 64 32) trained by one process
(`--workers 1`, two TensorFlow threads), by `--workers 2`, and on a simulated 3-node Ray cluster
(`ray.cluster_utils.Cluster`: a head without CPUs and two one-CPU worker nodes, all on this machine)
through `--ray_address`.

    .venv/bin/python bench/ray_backend.py [--epochs 3] [--skip_overhead]
"""

import argparse
import os
import re
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.abspath(os.path.dirname(__file__)))
TINY = ["--dataset", "demo", "--max_ratings", "6000", "--num_epochs", "1", "--batch_size", "512",
        "--layer_sizes", "16", "--embedding_size", "8", "--seeds", "4",
        "--additional_feature_sets", "timestamp", "--additional_feature_sets", "movie_genres"]
ABLATION = ["--data_dir", os.path.join(ROOT, "..", "shared", "datasets", "ml-1m-users1-2999"),
            "--layer_sizes", "64", "32", "--seeds", "2",
            "--additional_feature_sets", "timestamp", "--additional_feature_sets", "movie_genres"]


def timed(args, folder) -> tuple[float, str]:
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "recsys_ablate", *args, "--datasets_dir", "datasets",
                             "--saved_models_dir", os.path.join(folder, "s"),
                             "--reports_dir", os.path.join(folder, "r")],
                            capture_output=True, text=True, cwd=ROOT)
    if result.returncode:
        raise SystemExit(result.stderr[-3000:])
    return time.perf_counter() - start, result.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--epochs", type=int, default=3, help="epochs per model in part 2")
    parser.add_argument("--skip_overhead", action="store_true", help="part 2 only")
    args = parser.parse_args()
    if not args.skip_overhead:
        overhead()
    throughput(ABLATION + ["--num_epochs", str(args.epochs), "--eval_every", str(args.epochs)], args.epochs)


def overhead() -> None:
    models = 12
    with tempfile.TemporaryDirectory() as tmp:
        timed(TINY + ["--dry_run"], os.path.join(tmp, "warm"))  # the data encoded once, outside the timing
        local, _ = timed(TINY + ["--workers", "2"], os.path.join(tmp, "local"))
        start = time.perf_counter()
        import ray

        ray.init(address="local", include_dashboard=False, log_to_driver=False)
        ray_start = time.perf_counter() - start
        ray.shutdown()
        on_ray, out = timed(TINY + ["--backend", "ray"], os.path.join(tmp, "ray"))
        assert f"training {models} models as Ray tasks" in out, out
    print(f"part 1: {models} one-epoch models: --workers 2 {local:.1f} s, --backend ray {on_ray:.1f} s "
          f"(Ray start-up alone {ray_start:.1f} s); per model beyond a worker process: "
          f"{(on_ray - local - ray_start) / models:.2f} s")


def throughput(ablation, epochs) -> None:
    from ray.cluster_utils import Cluster

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, extra in (("one process (--workers 1, 2 threads)", ["--workers", "1"]),
                             ("--workers 2 (1 thread each)", ["--workers", "2"])):
            rows.append((label, timed(ablation + extra, os.path.join(tmp, label[:6]))[0]))
        cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0})
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        try:
            seconds, out = timed(ablation + ["--backend", "ray", "--ray_address", cluster.address],
                                 os.path.join(tmp, "cluster"))
            assert re.search(r"on 3 nodes \(2 CPUs\)", out), out
            rows.append(("simulated 3-node Ray cluster (head + 2 one-CPU nodes)", seconds))
        finally:
            cluster.shutdown()
    print(f"\npart 2: 6 models x {epochs} epochs, ML-1M users 1-2999\n")
    print("| backend | wall time | models per minute |\n|---|---|---|")
    for label, seconds in rows:
        print(f"| {label} | {seconds:.1f} s | {6 * 60 / seconds:.1f} |")


if __name__ == "__main__":
    main()
