"""The native kernels' build, once per machine (every CI run is on a fresh one): each kernel file compiled
as its own translation unit, as before, against `kernels.cc`, the one unit the build now compiles.

    .venv/bin/python bench/native_build.py [--repeats 30]

builds both variants with `recsys_ablate.native.OPTIONS` and TensorFlow's flags into a temporary folder,
one after the other (the seconds are wall time of the compiler alone), then, in a fresh process per
variant and round (a process can load only one library registering the same ops; the variants take
turns, three rounds, as the machine's speed drifts), times the three ops on MovieLens-1M-sized inputs
(median milliseconds of `--repeats` calls: the loss on a 4,096 x 4,096 batch, the ranks and the top-100 of
2,048 queries over 3,883 movies, 64 dimensions) and checks that both libraries give identical outputs.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import tensorflow as tf

from recsys_ablate import native

TIMING = r"""
import hashlib, json, sys, time
import numpy as np
import tensorflow as tf
library = tf.load_op_library(sys.argv[1])
repeats = int(sys.argv[2])
rng = np.random.default_rng(0)
batch = tf.constant(rng.normal(size=(4096, 64)).astype(np.float32))
weights = tf.ones([4096])
log_counts = tf.constant(rng.normal(size=4096).astype(np.float32))
queries = tf.constant(rng.normal(size=(2048, 64)).astype(np.float32))
movies = tf.constant(rng.normal(size=(3883, 64)).astype(np.float32))
positive = tf.reduce_sum(queries * movies[:2048], axis=1)
starts = tf.range(2049, dtype=tf.int64)
calls = {
    "in_batch_softmax": lambda: library.in_batch_softmax(batch, batch, weights, log_counts),
    "count_higher_scores": lambda: library.count_higher_scores_grouped(queries, movies, starts, positive),
    "top_scores": lambda: library.top_scores(queries, movies, 100),
}
result = {}
for name, call in calls.items():
    outputs = call()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        call()
        times.append(time.perf_counter() - start)
    outputs = outputs if isinstance(outputs, (list, tuple)) else [outputs]
    result[name] = {"ms": sorted(times)[len(times) // 2] * 1000,
                    "outputs": [hashlib.sha256(np.asarray(o).tobytes()).hexdigest() for o in outputs]}
print(json.dumps(result))
"""


def build(sources: list[str], library: str, folder: str) -> float:
    """Compiles each source to an object file, then links them: the seconds of the compiler alone."""
    start = time.perf_counter()
    objects = []
    for source in sources:
        target = os.path.join(folder, os.path.basename(source) + ".o")
        command = ["g++", "-c", *native.OPTIONS, source, "-o", target, *tf.sysconfig.get_compile_flags()]
        subprocess.run(command, check=True)
        objects.append(target)
    subprocess.run(["g++", "-shared", *objects, "-o", library, *tf.sysconfig.get_link_flags()], check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    variants = {"each file its own unit": native.SOURCES, "one unit (kernels.cc)": [native.UNIT]}
    with tempfile.TemporaryDirectory() as folder:
        libraries = {name: os.path.join(folder, f"kernels{index}.so") for index, name in enumerate(variants)}
        seconds = {name: build(sources, libraries[name], folder) for name, sources in variants.items()}
        rows = []
        for _ in range(3):
            for name, library in libraries.items():
                command = [sys.executable, "-c", TIMING, library, str(args.repeats)]
                timing = subprocess.run(command, check=True, capture_output=True, text=True).stdout
                rows.append((name, json.loads(timing.strip().splitlines()[-1])))
    ops = list(rows[0][1])
    same = all(timing[op]["outputs"] == rows[0][1][op]["outputs"] for _, timing in rows for op in ops)
    print(f"{'variant':<24} {'build s':>8} " + " ".join(f"{op + ' ms':>22}" for op in ops))
    for name, timing in rows:
        print(f"{name:<24} {seconds[name]:8.1f} " + " ".join(f"{timing[op]['ms']:22.2f}" for op in ops))
    print(f"identical outputs: {same}")


if __name__ == "__main__":
    main()
