"""Native kernels: built from source on first use, cached, optional.

`in_batch_softmax.cc` is the fused in-batch softmax of the retrieval loss,
`count_higher_scores.cc` the rank count of evaluation, `top_scores.cc` the
top-K lists of evaluation (each file says why it is hand-written). They are
compiled against the installed TensorFlow with the machine's C++ compiler
the first time they are needed, into `~/.cache/recsys-ablate/` (or
`$XDG_CACHE_HOME`), keyed by the sources,
TensorFlow version, compiler and CPU: built once per machine (~30 s), never
loaded on a CPU they were not built for. Without a compiler, if the build
fails, or when a GPU is visible (a CPU kernel would copy tensors to the host
every step), training and evaluation use the same computations composed from
TensorFlow ops (slower, same values up to float rounding), after one warning
line. `RECSYS_ABLATE_NATIVE=0` forces that.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import platform
import shutil
import subprocess
import sys

_HERE = os.path.dirname(os.path.abspath(__file__))
SOURCES = [os.path.join(_HERE, name) for name in ("in_batch_softmax.cc", "count_higher_scores.cc",
                                                  "top_scores.cc")]
UNIT = os.path.join(_HERE, "kernels.cc")  # what the compiler is given: it includes the SOURCES
HEADERS = [os.path.join(_HERE, "kernel_types.h")]  # included by the sources: part of the build's key
SWITCH = "RECSYS_ABLATE_NATIVE"
# The compiler's options (bench/native_build.py compiles with them too). -mtune=generic: tuning for this
# machine's CPU (znver3) made the kernel ~25% slower here, measured.
OPTIONS = ["-fPIC", "-O3", "-march=native", "-mtune=generic", "-w"]


def _cache_dir() -> str:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "recsys-ablate")


def _cpu() -> str:
    # -march=native code can crash on another CPU model (a shared home folder).
    try:
        with open("/proc/cpuinfo") as f:
            return "".join(sorted({line for line in f if line.startswith(("model name", "flags"))}))
    except OSError:
        return platform.processor()


def _build(compiler: str, library: str) -> None:
    import tensorflow as tf

    temporary = f"{library}.{os.getpid()}.tmp"
    command = [compiler, "-shared", *OPTIONS, UNIT, "-o", temporary,
               *tf.sysconfig.get_compile_flags(), *tf.sysconfig.get_link_flags()]
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=600)
        if result.returncode:
            raise RuntimeError(result.stderr.strip().splitlines()[-1] if result.stderr.strip() else
                               f"{compiler} exited with {result.returncode}")
        os.replace(temporary, library)
    finally:
        if os.path.exists(temporary):
            os.remove(temporary)


def in_batch_softmax_op():
    """The fused `InBatchSoftmax` op, or None when disabled or not buildable here.

    Returns:
      A function (queries, candidates, query_weights, candidate_log_counts)
      -> (loss, query_gradient, candidate_gradient), or None.
    """
    library = _library()
    return None if library is None else library.in_batch_softmax


def count_higher_scores_op():
    """Per-example rank counting: the `CountHigherScoresGrouped` op with one example per query.

    Returns:
      A function (queries, candidates, positive_scores) -> [queries] int32
      count of candidates scoring strictly higher, or None when disabled or
      not buildable here.
    """
    grouped = count_higher_scores_grouped_op()
    return None if grouped is None else _one_example_per_query(grouped)


# One function per op, not one per call: `catalogue._ranks` (a tf.function) takes it as an argument, and a
# new function object each evaluation traced `_ranks` again each evaluation (TensorFlow's retracing warning
# after five, in every run that masks seen items or reads more than the user).
@functools.cache
def _one_example_per_query(grouped):
    import tensorflow as tf

    def count_higher_scores(queries, candidates, positive_scores):
        starts = tf.range(tf.shape(queries, out_type=tf.int64)[0] + 1, dtype=tf.int64)
        return grouped(queries, candidates, starts, positive_scores)

    return count_higher_scores


def count_higher_scores_grouped_op():
    """The `CountHigherScoresGrouped` op, or None when disabled or not buildable here.

    Returns:
      A function (queries [u, d], candidates, starts [u + 1], positive_scores
      [n]) -> [n] int32 rank of each example, its query's examples being
      positions starts[q] .. starts[q + 1] - 1; or None.
    """
    library = _library()
    return None if library is None else library.count_higher_scores_grouped


def top_scores_op():
    """The `TopScores` op, or None when disabled or not buildable here.

    Returns:
      A function (queries [u, d], candidates [m, d], k) -> [u, k] int32 indices of each query's k
      highest-scoring candidates, best first, a tie to the lower index (`tf.math.top_k`'s order); or None.
    """
    library = _library()
    return None if library is None else library.top_scores


@functools.cache
def _library():
    if os.environ.get(SWITCH, "1") == "0":
        return None
    import tensorflow as tf

    if tf.config.list_logical_devices("GPU"):
        return None  # a CPU kernel would pull GPU tensors back to the host every step

    compiler = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if compiler is None:
        _warn("no C++ compiler (g++) found")
        return None
    folder = _cache_dir()
    try:
        version = subprocess.run([compiler, "--version"], capture_output=True, text=True, timeout=60).stdout
        parts = [tf.__version__.encode(), version.encode(), _cpu().encode(), platform.machine().encode()]
        for source in [UNIT, *SOURCES, *HEADERS]:
            with open(source, "rb") as f:
                parts.append(f.read())
        key = hashlib.sha256(b"\0".join(parts)).hexdigest()[:16]
        library = os.path.join(folder, f"kernels-{key}.so")
        os.makedirs(folder, exist_ok=True)
        with open(library + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build when workers start together
            if not os.path.isfile(library):
                print(f"building the native kernels into {folder} (once per machine, ~30 s)",
                      file=sys.stderr)
                _build(compiler, library)
        return tf.load_op_library(library)
    except (OSError, RuntimeError, subprocess.SubprocessError, tf.errors.OpError) as err:
        _warn(
            f"building them into {folder} failed: "
            f"{str(err).splitlines()[0] if str(err) else type(err).__name__}")
        return None


def _warn(reason: str) -> None:
    print(f"warning: native kernels unavailable ({reason}); training and evaluation use TensorFlow ops, "
          f"same values, slower; set {SWITCH}=0 to silence this", file=sys.stderr)
