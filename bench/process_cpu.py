"""Wall and CPU seconds of a command and of every process under it, for the benchmark scripts.

`--workers` forks its workers from a server process that outlives the command by a moment; orphaned,
it would be reaped by PID 1 and its CPU (and its workers') counted nowhere. This process makes itself their
subreaper (Linux `PR_SET_CHILD_SUBREAPER`), so it reaps them and `RUSAGE_CHILDREN` counts them.
"""

from __future__ import annotations

import ctypes
import os
import resource
import subprocess
import time

_PR_SET_CHILD_SUBREAPER = 36


def run_counting_descendants(command: list[str], **popen) -> tuple[float, float, subprocess.CompletedProcess]:
    """Runs `command` (`subprocess.run` keywords in `popen`, check=True); returns (wall seconds, CPU
    seconds, user and system, of it and every process it started, the run)."""
    ctypes.CDLL(None).prctl(_PR_SET_CHILD_SUBREAPER, 1)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(command, check=True, **popen)
    wall = time.perf_counter() - start
    while True:  # the descendants orphaned on the way, reparented to this process
        try:
            os.waitpid(-1, 0)
        except ChildProcessError:
            break
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime), done
