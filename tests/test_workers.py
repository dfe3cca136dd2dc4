import json
import multiprocessing
import os
import signal
import subprocess
import sys
import time

import psutil
import pytest

from recsys_ablate.ablation import run_ablation, training_order
from recsys_ablate.cli import main
from recsys_ablate.settings import ExperimentConfig, TrainConfig
from recsys_ablate.settings import DataConfig
from recsys_ablate.errors import UserInputError
from recsys_ablate.training.workers import run_in_workers, threads_per_worker, worker_log

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _say(text):
    worker_log(f"worker says {text}")


def _die():
    os.kill(os.getpid(), signal.SIGKILL)


@pytest.mark.slow
def test_workers_run_every_job_and_forward_their_lines():
    lines = []
    run_in_workers(_say, [("a",), ("b",), ("c",)], 2, lines.append)
    assert sorted(lines) == ["worker says a", "worker says b", "worker says c"]


def _exit_slowly(text):
    # As a worker flushing its queue at exit: still alive, in Python's shutdown, when the main process has
    # every result.
    import atexit

    atexit.register(time.sleep, 3.0)
    worker_log(f"worker says {text}")


@pytest.mark.slow
def test_workers_that_are_still_exiting_after_the_last_job_end_without_a_traceback():
    # In a fresh Python, whose fork server it starts: the workers' stderr (the server's) is this pipe.
    code = ("from tests.test_workers import _exit_slowly\n"
            "from recsys_ablate.training.workers import run_in_workers\n"
            "lines = []\n"
            "run_in_workers(_exit_slowly, [('a',), ('b',)], 2, lines.append)\n"
            "print(sorted(lines))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip().splitlines()[-1] == "['worker says a', 'worker says b']"
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr, done.stderr


def _mark(folder, name):
    open(os.path.join(folder, name), "w").close()


_CTRL_C_WHILE_THE_SERVER_STARTS = """
import os, sys, time
from tests.test_workers import _mark
from recsys_ablate.training.workers import run_in_workers
folder = sys.argv[1]
try:
    run_in_workers(_mark, [(folder, "a"), (folder, "b")], 2, print)
except KeyboardInterrupt:
    print("interrupted", flush=True)
# This process lives on, as a notebook would, and uses the same server again: it forks the worker asked for
# before the interrupt first, then this one.
run_in_workers(_mark, [(folder, "c")], 1, print)
time.sleep(1.0)  # the earlier fork, had it taken the jobs it was forked for, would have run them by now
print("jobs run:", " ".join(sorted(os.listdir(folder))))
"""


@pytest.mark.slow
def test_ctrl_c_while_the_fork_server_starts_runs_no_job_later(tmp_path):
    """Ctrl-C while the first workers wait for the fork server (it imports TensorFlow): the server still
    makes the fork asked for before it; that worker must end before it takes a job, though the process that
    asked lives on and starts workers again."""
    process = subprocess.Popen([sys.executable, "-c", _CTRL_C_WHILE_THE_SERVER_STARTS, str(tmp_path)],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 120
    while time.time() < deadline and not [
            p for p in psutil.Process(process.pid).children() if "forkserver" in " ".join(p.cmdline())]:
        time.sleep(0.01)
    time.sleep(0.3)  # the server started (with Ctrl-C ignored around its start); it imports for seconds
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=180)
    assert process.returncode == 0, err[-3000:]
    assert out.splitlines()[-2:] == ["interrupted", "jobs run: c"], (out, err)


@pytest.mark.slow
def test_a_failing_job_stops_the_others_and_raises_its_error():
    start = time.perf_counter()
    with pytest.raises(UserInputError, match="bad input in a worker"):
        run_in_workers(_dispatch, [("sleep",), ("fail",)], 2, print)
    assert time.perf_counter() - start < 30  # the 60-second job was stopped, not awaited
    assert not multiprocessing.active_children()


def _dispatch(kind):
    if kind == "sleep":
        time.sleep(60)
    raise UserInputError("bad input in a worker")


def _chatter(kind, folder):
    failing, logged = os.path.join(folder, "failing"), os.path.join(folder, "logged")
    if kind == "chatty":  # far more lines than a pipe holds, as the other job fails, then working on
        while not os.path.exists(failing):
            time.sleep(0.01)
        for _ in range(20_000):
            worker_log("x" * 1000)
        open(logged, "w").close()
        time.sleep(60)
    open(failing, "w").close()
    # The error goes to the main process once every line is queued, with most of them (20 MB) not yet read.
    # (A fixed 0.2 s here was too short on a loaded machine: the chatty worker had queued 2,181 lines.)
    while not os.path.exists(logged):
        time.sleep(0.01)
    raise UserInputError("bad input in a worker")


def _hung(signum, frame):
    raise TimeoutError("run_in_workers still waiting for its workers after 60 s")


@pytest.mark.slow
def test_a_failing_job_stops_a_worker_whose_lines_fill_the_pipe(tmp_path):
    # A worker exits only once its queued lines are in the pipe: the main process must read them while it
    # waits for the workers to end (it joined first and waited forever).
    previous = signal.signal(signal.SIGALRM, _hung)
    signal.alarm(60)
    lines, start = [], time.perf_counter()
    try:
        with pytest.raises(UserInputError, match="bad input in a worker"):
            run_in_workers(_chatter, [("chatty", str(tmp_path)), ("fail", str(tmp_path))], 2, lines.append)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    assert time.perf_counter() - start < 30  # the 60-second job was stopped, not awaited
    assert len(lines) == 20_000  # every line the stopped worker logged reached the console
    assert not multiprocessing.active_children()


def _interrupted(kind):
    if kind == "sleep":
        time.sleep(60)
    raise KeyboardInterrupt  # what Ctrl-C raises in a worker


@pytest.mark.slow
def test_ctrl_c_in_a_worker_stops_every_worker():
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        run_in_workers(_interrupted, [("sleep",), ("now",)], 2, print)
    assert time.perf_counter() - start < 30
    assert not multiprocessing.active_children()


@pytest.mark.slow
def test_a_killed_worker_is_reported_in_one_line():
    with pytest.raises(UserInputError, match="a worker process died .*re-run the same command to resume"):
        run_in_workers(_die, [()], 1, print)


def _config(folder, workers):
    return ExperimentConfig(
        feature_sets=((), ("timestamp",), ("movie_genres",)),
        data=DataConfig(dataset="demo", datasets_dir=str(folder / "d")),
        train=TrainConfig(num_epochs=2, eval_every=1),
        saved_models_dir=str(folder / "s"), reports_dir=str(folder / "r"), workers=workers)


def _histories(folder):
    return {name: json.load(open(os.path.join(folder, name, "history.json")))["evaluations"]
            for name in sorted(os.listdir(folder)) if os.path.isdir(os.path.join(folder, name))}


@pytest.mark.slow
def test_workers_train_the_models_one_process_trains_with_their_thread_count(tmp_path):
    lines = []
    result = run_ablation(_config(tmp_path / "w", workers=2), log=lines.append)
    assert "training 3 models in 2 worker processes" in "\n".join(lines)
    assert all(not t.reloaded for t in result.trained)
    assert sum("epoch 2/2" in line for line in lines) == 3  # worker progress reached the log
    # The same ablation in one process with the workers' TensorFlow thread
    # count gives the same models: workers change scheduling, not results.
    threads = str(threads_per_worker(2))
    env = dict(os.environ, TF_NUM_INTRAOP_THREADS=threads, TF_NUM_INTEROP_THREADS=threads)
    folder = tmp_path / "one"
    subprocess.run([sys.executable, "-m", "recsys_ablate", "--dataset", "demo", "--no_baseline",
                    "--additional_feature_sets", "None", "--additional_feature_sets", "timestamp",
                    "--additional_feature_sets", "movie_genres", "--num_epochs", "2", "--eval_every", "1",
                    "--datasets_dir", str(folder / "d"), "--saved_models_dir", str(folder / "s"),
                    "--reports_dir", str(folder / "r")], cwd=ROOT, env=env, check=True, capture_output=True)
    assert _drop_seconds(_histories(tmp_path / "w" / "s")) == _drop_seconds(_histories(folder / "s"))
    # A second run reloads what the workers trained.
    again = []
    run_ablation(_config(tmp_path / "w", workers=2), log=again.append)
    assert "0 epochs to train (3 already trained)" in "\n".join(again)


def _drop_seconds(histories):
    return {name: [{k: v for k, v in e.items() if k != "seconds"} for e in evaluations]
            for name, evaluations in histories.items()}


def test_workers_flag_is_checked(capsys):
    assert main(["--dataset", "demo", "--workers", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "error: workers 0: expected 1 or more"


def test_workers_start_the_most_work_first_and_keep_ties_in_order():
    feature_sets = [(), ("timestamp",), ("timestamp", "movie_title_text", "movie_genres"), ("movie_genres",),
                    ("timestamp", "movie_title_text")]
    assert training_order(feature_sets, [300] * 5) == [2, 4, 1, 3, 0]
    # A model resumed near its end has little work left and goes last.
    assert training_order(feature_sets, [300, 300, 10, 300, 300]) == [4, 1, 3, 0, 2]
