"""What the Ray backend's store actor costs in its own process: resident memory, CPU, TensorFlow or not.

Ray imports an actor's module in the actor's process. Starts a local Ray (2 CPUs), the store actor
(`FolderStore`, from `training/folder_store.py`, or from `training/ray_backend.py` in code before session
13), waits for it to answer, and reads its process with psutil.

  PYTHONPATH=ROOT python bench/ray_store_actor.py

where ROOT is the checkout whose code runs (this one, or a worktree of an older commit).
"""

from __future__ import annotations

import importlib
import tempfile
import time

import psutil
import ray


def main() -> None:
    try:
        module = importlib.import_module("recsys_ablate.training.folder_store")
    except ImportError:  # before the store had its own module
        module = importlib.import_module("recsys_ablate.training.ray_backend")
    ray.init(address="local", include_dashboard=False, log_to_driver=False, configure_logging=False,
             num_cpus=2)
    try:
        store = ray.remote(module.FolderStore).options(num_cpus=0).remote(tempfile.mkdtemp())
        ray.get(store.drain.remote())
        time.sleep(1)
        for process in psutil.process_iter(["cmdline"]):
            if "FolderStore" in " ".join(process.info["cmdline"] or []):
                times = process.cpu_times()
                tensorflow = any("tensorflow" in m.path for m in process.memory_maps())
                print(f"{module.__name__}.FolderStore: RSS {process.memory_info().rss / 2**20:.0f} MiB, "
                      f"CPU {times.user + times.system:.1f} s, "
                      f"{'TensorFlow loaded' if tensorflow else 'no TensorFlow'}")
    finally:
        ray.shutdown()


if __name__ == "__main__":
    main()
