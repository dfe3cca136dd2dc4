"""Native kernels: built from source on first use, cached, optional.

`in_batch_softmax.cc` is the fused in-batch softmax of the retrieval loss
(see that file for why it is hand-written). It is compiled against the
installed TensorFlow with the machine's C++ compiler the first time a model
trains, into `~/.cache/recsys-ablate/` (or `$XDG_CACHE_HOME`), keyed by the
source, TensorFlow version, compiler and CPU, so it is built once per machine
(~20 s) and never loaded on a CPU it was not built for. Without a compiler,
or if the build fails, or when a GPU is visible (a CPU kernel there
would copy tensors to the host every step), training falls back to the same loss composed from
TensorFlow ops (slower, same values), after one warning line.
`RECSYS_ABLATE_NATIVE=0` forces that fallback.
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

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "in_batch_softmax.cc")
SWITCH = "RECSYS_ABLATE_NATIVE"


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
    # -mtune=generic: tuning for this machine's CPU (znver3) made the kernel
    # ~25% slower here, measured.
    command = [compiler, "-shared", "-fPIC", "-O3", "-march=native", "-mtune=generic", "-w", SOURCE, "-o", temporary,
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


@functools.cache
def in_batch_softmax_op():
    """The fused `InBatchSoftmax` op, or None when disabled or not buildable here.

    Returns:
      A function (queries, candidates, query_weights, candidate_log_counts)
      -> (loss, query_gradient, candidate_gradient), or None.
    """
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
        with open(SOURCE, "rb") as f:
            key = hashlib.sha256(b"\0".join([f.read(), tf.__version__.encode(), version.encode(),
                                              _cpu().encode(), platform.machine().encode()]))
        library = os.path.join(folder, f"in_batch_softmax-{key.hexdigest()[:16]}.so")
        os.makedirs(folder, exist_ok=True)
        with open(library + ".lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one build when workers start together
            if not os.path.isfile(library):
                print(f"building the fused softmax kernel into {folder} (once per machine, ~20 s)",
                      file=sys.stderr)
                _build(compiler, library)
        return tf.load_op_library(library).in_batch_softmax
    except (OSError, RuntimeError, subprocess.SubprocessError, tf.errors.OpError) as err:
        _warn(f"building it into {folder} failed: {str(err).splitlines()[0] if str(err) else type(err).__name__}")
        return None


def _warn(reason: str) -> None:
    print(f"warning: fused softmax kernel unavailable ({reason}); training uses the TensorFlow-op loss, "
          f"same values, ~1.3x slower steps; set {SWITCH}=0 to silence this", file=sys.stderr)
