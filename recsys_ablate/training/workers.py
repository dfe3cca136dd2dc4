"""Trains independent models side by side in worker processes (`--workers N`).

Why processes: on the 2-core development machine one TensorFlow process does
not keep its two threads busy through a step; two models in two threads of
one process gained nothing, while two processes with one thread each train
more per hour (measured in BENCHMARKS.md). Each process trains model after
model, clearing Keras's state in between: a fresh process per model paid
Python's and TensorFlow's start for each one (BENCHMARKS.md). The processes
are forked from a server that imported TensorFlow once (`forkserver`), so a
second set of workers in the same process starts at once.

A worker's log lines go through a queue to the main process's `log`; its
errors come back and are raised there, after the other workers are stopped
(a stopped worker loses at most the epochs since its last checkpoint).
"""

from __future__ import annotations

import ctypes
import multiprocessing
import multiprocessing.forkserver as forkserver
import os
import queue as queue_module
import select
import signal
import threading
import time
import traceback

import tensorflow as tf

from recsys_ablate import heap
from recsys_ablate.errors import UserInputError
from recsys_ablate.files import deferred_interrupts

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


def prepare_training_process(threads: int) -> None:
    """A process about to train models (a worker here, a Ray trial's process): TensorFlow's thread count
    (which it accepts again with the same value, for a process's next job), and the objects its imports
    left frozen out of later garbage collections (`heap.freeze_imports`, once per process; a forked worker
    inherits the server's)."""
    tf.config.threading.set_intra_op_parallelism_threads(threads)
    tf.config.threading.set_inter_op_parallelism_threads(threads)
    heap.freeze_imports()


def worker_observer(run, epoch: int, loss: float, metrics) -> None:
    """In a worker: an epoch of `run` goes to the main process's observer (`run_in_workers`)."""
    _worker_log.put(("observe", run, epoch, loss, metrics))


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
    """Linux: this process gets SIGTERM when its parent, the fork server, dies (killed on its own, say);
    `_end_with` covers the main process."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: Ctrl-C and SIGTERM still stop workers
        pass


def _end_with(pid: int) -> bool:
    """Linux: this process gets SIGTERM as soon as process `pid` (the main one) ends, even by SIGKILL: a
    thread waits on the process's pidfd. False if it has ended already.

    The parent-death signal alone no longer did it: a worker's parent is the fork server, which lives on
    while any of its forks holds the main process's end of its "alive" pipe (each fork inherits it). After
    a SIGKILL of the main process its workers trained their models to the end and took the queued jobs
    (seen: 13 s of training on, each model's lock held meanwhile).
    """
    try:
        handle = os.pidfd_open(pid)
    except ProcessLookupError:
        return False
    except (AttributeError, OSError):  # not Linux 5.3+: Ctrl-C and SIGTERM still stop workers
        return True

    def wait_then_stop():
        select.select([handle], [], [])  # readable once the process has ended
        os.kill(os.getpid(), signal.SIGTERM)

    threading.Thread(target=wait_then_stop, name="ends with the main process", daemon=True).start()
    return True


def _interrupt(signum, frame):
    """A worker told to stop (SIGTERM from the main process, which says what happened): unwind like Ctrl-C,
    with nothing more on stderr. The KeyboardInterrupt can land in Python code that TensorFlow's C++ called
    (an import inside `tf.nest`'s Flatten, seen once in the suite: "SystemError: <built-in function
    __import__> returned a result with an exception set"), where it surfaces as a printed traceback
    beside the main process's one line."""
    quiet = os.open(os.devnull, os.O_WRONLY)
    os.dup2(quiet, 2)  # file descriptor 2: what Python and TensorFlow's C++ both write to
    os.close(quiet)
    raise KeyboardInterrupt


def _worker(function, jobs, threads, messages, counters, trials, parent, environment, stopped):
    """A worker process: takes (index, args) from `jobs` until it gets None, runs `function(*args)` on
    each and sends what happened to the main process.

    One process serves many jobs: starting Python and TensorFlow costs a few
    seconds (BENCHMARKS.md), which an ablation of many small models paid once
    per model. Keras's state is cleared after each job.
    """
    global _worker_log, _counters, _trials
    # Stopped by the main process (or by its death): unwind like Ctrl-C, so
    # the model folder's lock is released and its lock file removed.
    signal.signal(signal.SIGTERM, _interrupt)
    try:  # from here on a SIGTERM ends the process quietly, even one that comes while it starts
        server = os.getppid()  # the fork server
        _die_with_parent()
        if os.getppid() != server or not _end_with(parent):  # the server or the main process died meanwhile
            return
        # The environment the main process has now, as a spawned process would get it (the fork server has
        # the one of its own start; tests and callers may have changed it since).
        os.environ.clear()
        os.environ.update(environment)
        _worker_log, _counters, _trials = messages, counters, trials
        prepare_training_process(threads)
        while not stopped.is_set() and (job := jobs.get()) is not None:
            index, args = job
            messages.put(("start", index, os.getpid()))
            try:
                result = function(*args)
            except KeyboardInterrupt:
                messages.put(("interrupted", index))
                return
            except BaseException as err:  # noqa: BLE001 - every failure goes back to the main process
                try:
                    messages.put(("error", index, err))
                except Exception:  # an exception that does not pickle
                    messages.put(("error", index, RuntimeError(traceback.format_exc(limit=3))))
                return
            messages.put(("done", index, result))
            tf.keras.backend.clear_session()
    except KeyboardInterrupt:  # stopped while starting or between jobs: nothing to report
        return
    finally:
        # No more jobs, for whatever reason: the process now flushes its messages into the pipe and exits.
        # A SIGTERM here (the main process tidying up) would end it in the middle of that, and a process
        # ended while its queue's thread holds the queue's lock leaves the lock taken for good: the other
        # workers' last messages then wait forever, and so did the main process joining them.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def run_in_workers(function, jobs: list[tuple], workers: int, log, observer=None, more=None) -> list:
    """Calls `function(*job)` for every job in `workers` processes, each taking the next job when free.

    Args:
      function: A module-level function (it is pickled by name).
      jobs: Argument tuples, one per call, in the order they are to start.
      workers: Processes; each gets cores / workers TensorFlow threads.
      log: Where the workers' console lines go.
      observer: Called in this process with what a job sent through `worker_observer`, or None.
      more: Called in this process as each job finishes, with (its index, its return value): argument
        tuples of further jobs, queued behind the others (adaptive seeds: the next round's models start
        while this one's are still training). The workers stop once every queued job is done and `more`
        added none. None: the jobs are all known up front.

    Returns:
      Each job's return value (it must pickle), in the order of `jobs` (then of the jobs `more` added).

    Raises:
      The first error a job raised (the others are stopped first);
      UserInputError if a worker died without a word (killed, out of memory).
    """
    jobs = list(jobs)
    # Workers are forked from a server process that imported TensorFlow and this module once, at the first
    # call (`forkserver`, kept for this process's life): a spawned worker imported them itself, some
    # seconds of CPU each (BENCHMARKS.md, "Workers forked from a server"). Forking is safe there: importing
    # TensorFlow starts none of its thread pools (they start at a worker's first op, after the
    # `set_*_parallelism_threads` calls), and each worker is a fresh fork with this process's working
    # directory, `sys.path` and (passed below) environment.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__, function.__module__])
    messages, queue = context.Queue(), context.Queue()
    counters = (context.Value("i", 0), context.Value("d", 0.0))
    trials = context.Array("i", [0, 0, len(jobs)])  # done, running, queued
    stopped = context.Event()  # the main process is done with the workers
    threads = threads_per_worker(workers)
    for job in enumerate(jobs):
        queue.put(job)
    processes = [context.Process(target=_worker, daemon=True, args=(
        function, queue, threads, messages, counters, trials, os.getpid(), dict(os.environ), stopped))
        for _ in range(workers if more is not None else min(workers, len(jobs)))]
    if more is None:
        for _ in processes:
            queue.put(None)  # one stop sign each, after the jobs
    # The fork server starts with Ctrl-C ignored, and so do the workers it forks (they get its signal
    # handlers): Ctrl-C reaches this process, which stops the workers with SIGTERM; a worker still starting
    # up then ends without a traceback.
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        forkserver.ensure_running()
    finally:
        signal.signal(signal.SIGINT, previous)
    running, results, started = set(), {}, []
    try:
        # The first start waits while the server imports TensorFlow. Ctrl-C is held until the worker the
        # server forks is in `started`, so `_end_workers` stops and joins it: one interrupted mid-start was
        # a fork no one here knew of, which read its queues' semaphores after this process had exited and
        # removed them, and printed a traceback (seen once in a clean clone's suite). `stopped` (set below)
        # still tells a worker to end before it takes a job.
        for process in processes:
            with deferred_interrupts():
                process.start()
                started.append(process)
        while len(results) < len(jobs):
            # Checked on every message, not only when the queue is quiet: a
            # busy worker's lines must not hide a dead one. A worker that
            # finished its last job exits 0.
            for process in processes:
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
            elif message[0] == "observe":
                if observer is not None:
                    observer(*message[1:])
            elif message[0] == "start":
                running.add(message[1])
            elif message[0] == "interrupted":
                raise KeyboardInterrupt
            elif message[0] == "error":
                raise message[2]
            else:
                results[message[1]] = message[2]
                running.discard(message[1])
                if more is not None:
                    for args in more(message[1], message[2]) or ():
                        queue.put((len(jobs), args))
                        jobs.append(args)
                    if len(results) == len(jobs):
                        for _ in processes:
                            queue.put(None)  # nothing left and nothing to come: one stop sign each
            trials[:] = [len(results), len(running), len(jobs) - len(results) - len(running)]
        return [results[index] for index in range(len(jobs))]
    finally:
        stopped.set()
        _end_workers(started, messages, log, finished=len(results) == len(jobs))


def _end_workers(processes, messages, log, finished: bool, grace: float = 30.0) -> None:
    """Ends the worker processes, forwarding the lines they log before they go.

    Each worker had its stop sign if `finished`; otherwise the working ones get SIGTERM and unwind (their
    model's lock released; `_worker` ignores it once out of jobs). The messages are read while the
    workers exit: a process exits only once its queue is flushed into the pipe, and joining before reading
    hung with a pipe full of log lines. A worker still there after `grace` seconds gets SIGKILL (nothing
    of a model is lost that its checkpoints keep), with a line saying so.
    """
    if not finished:
        for process in processes:
            process.terminate()
    deadline = time.monotonic() + grace
    while any(process.is_alive() for process in processes) and time.monotonic() < deadline:
        _forward_lines(messages, log, timeout=0.1)
    stuck = [process for process in processes if process.is_alive()]
    for process in stuck:
        log(f"a worker process was still there {grace:.0f} s after it was told to stop; stopped with SIGKILL")
        process.kill()
    for process in processes:
        process.join()
    if not stuck:  # a process killed in the middle of a message leaves a part of it, never the rest
        while _forward_lines(messages, log, timeout=None):
            pass


def _forward_lines(messages, log, timeout: float | None) -> bool:
    """Logs the next message if it is a console line (others are moot once the workers end); waits up to
    `timeout` seconds for it (None: not at all). False once the queue is empty or closed."""
    try:
        message = messages.get(timeout=timeout) if timeout is not None else messages.get_nowait()
    except (queue_module.Empty, OSError, ValueError):
        return False
    if message[0] == "log":
        log(message[1])
    return True
