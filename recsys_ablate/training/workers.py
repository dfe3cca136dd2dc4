"""Trains independent models side by side in worker processes (`--workers N`).

Why processes: on the 2-core development machine one TensorFlow process does
not keep its two threads busy through a step; two models in two threads of
one process gained nothing, while two processes with one thread each train
more per hour (measured in BENCHMARKS.md). Each job runs in a fresh process,
so TensorFlow's memory goes back to the system after every model.

A worker's log lines go through a queue to the main process's `log`; its
errors come back and are raised there, after the other workers are stopped
(a stopped worker loses at most the epochs since its last checkpoint).
"""

from __future__ import annotations

import multiprocessing
import os
import queue as queue_module
import traceback

from recsys_ablate.errors import UserInputError

_worker_log = None
_counters = None
_trials = None


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def threads_per_worker(workers: int) -> int:
    """TensorFlow threads each of `workers` processes gets: the cores shared out."""
    return max(1, available_cores() // workers)


def worker_log(line: str) -> None:
    """In a worker: sends one console line to the main process."""
    _worker_log.put(("log", line))


def shared_counters():
    """In a worker: (epochs done, seconds spent) shared by all workers, for the ETA."""
    return _counters


def shared_trials():
    """In a worker: [models done, running, queued], kept current by the main process."""
    return _trials


def _die_with_parent() -> None:
    """Linux: this process gets SIGTERM when the main process dies, even by SIGKILL.

    Without it a killed main process leaves its workers training on under
    PID 1, holding model locks.
    """
    import ctypes
    import signal

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: Ctrl-C and SIGTERM still stop workers
        pass


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _entry(function, args, index, threads, messages, counters, trials, parent):
    global _worker_log, _counters, _trials
    import signal

    # Stopped by the main process (or by its death): unwind like Ctrl-C, so
    # the model folder's lock is released and its lock file removed.
    signal.signal(signal.SIGTERM, _interrupt)
    _die_with_parent()
    if os.getppid() != parent:  # the main process died before the line above
        return
    _worker_log, _counters, _trials = messages, counters, trials
    import recsys_ablate  # noqa: F401  (sets TF_USE_LEGACY_KERAS before TensorFlow loads)
    import tensorflow as tf

    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    try:
        result = function(*args)
    except KeyboardInterrupt:
        messages.put(("interrupted", index))
    except BaseException as err:  # noqa: BLE001 - every failure goes back to the main process
        try:
            messages.put(("error", index, err))
        except Exception:  # an exception that does not pickle
            messages.put(("error", index, RuntimeError(traceback.format_exc(limit=3))))
    else:
        messages.put(("done", index, result))


def run_in_workers(function, jobs: list[tuple], workers: int, log) -> list:
    """Calls `function(*job)` for every job, at most `workers` at a time, each in its own process.

    Args:
      function: A module-level function (it is pickled by name).
      jobs: Argument tuples, one per call.
      workers: Processes at a time; each gets cores / workers TensorFlow threads.
      log: Where the workers' console lines go.

    Returns:
      Each job's return value (it must pickle), in the order of `jobs`.

    Raises:
      The first error a job raised (the others are stopped first);
      UserInputError if a worker died without a word (killed, out of memory).
    """
    context = multiprocessing.get_context("spawn")
    messages = context.Queue()
    counters = (context.Value("i", 0), context.Value("d", 0.0))
    trials = context.Array("i", [0, 0, len(jobs)])  # done, running, queued
    threads = threads_per_worker(workers)
    waiting, running, results = list(enumerate(jobs)), {}, {}
    try:
        while waiting or running:
            while waiting and len(running) < workers:
                index, args = waiting.pop(0)
                process = context.Process(target=_entry, daemon=True, args=(
                    function, args, index, threads, messages, counters, trials, os.getpid()))
                process.start()
                running[index] = process
                trials[:] = [len(results), len(running), len(waiting)]
            # Checked on every message, not only when the queue is quiet: a
            # busy worker's lines must not hide a dead one. A worker that
            # finished exits 0 after its last message.
            for process in running.values():
                if process.exitcode not in (None, 0):
                    raise UserInputError(
                        f"a worker process died (exit code {process.exitcode}; killed or out of memory?); "
                        "re-run the same command to resume, with fewer --workers if memory is short")
            try:
                message = messages.get(timeout=0.5)
            except queue_module.Empty:
                continue
            if message[0] == "log":
                log(message[1])
            elif message[0] == "interrupted":
                raise KeyboardInterrupt
            elif message[0] == "error":
                raise message[2]
            else:
                results[message[1]] = message[2]
                running.pop(message[1]).join()
                trials[:] = [len(results), len(running), len(waiting)]
        return [results[index] for index in range(len(jobs))]
    finally:
        for process in running.values():
            if process.is_alive():
                process.terminate()
            process.join()
        while True:  # lines logged just before the end
            try:
                message = messages.get_nowait()
            except (queue_module.Empty, OSError, ValueError):
                break
            if message[0] == "log":
                log(message[1])
