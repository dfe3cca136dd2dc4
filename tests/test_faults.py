"""The README's fault table, made to happen for real: full and read-only filesystems, signals, bad files."""

import contextlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from recsys_ablate.cli import main
from recsys_ablate.training.history import History
from tests.conftest import write_ml1m

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--dataset", "demo", "--max_ratings", "6000", "--batch_size", "512", "--layer_sizes", "16",
         "--embedding_size", "8"]


def _cli(*args):
    return [sys.executable, "-m", "recsys_ablate", *args]


def _outputs(tmp_path, saved=None, reports=None, datasets=None):
    return ["--datasets_dir", datasets or str(tmp_path / "d"),
            "--saved_models_dir", str(saved or tmp_path / "s"),
            "--reports_dir", str(reports or tmp_path / "r")]


@contextlib.contextmanager
def _tmpfs(path, size):
    """A real, small filesystem (tmpfs) at `path`; skips the test where mounting is not allowed, except in CI
    (`CI=true`), where a fault test that cannot make its fault happen fails instead of passing untested."""
    os.makedirs(path, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                             capture_output=True, text=True)
    if mounted.returncode != 0:
        reason = f"cannot mount a tmpfs here (needs root or CAP_SYS_ADMIN): {mounted.stderr.strip()}"
        if os.environ.get("CI") == "true":
            pytest.fail(reason + "; CI must run the full-disk and read-only tests")
        pytest.skip(reason)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def _read_only(path):
    subprocess.run(["mount", "-o", "remount,ro", str(path)], check=True)


def _leftovers(folder):
    """Temporary files, TensorFlow's temporary checkpoints and lock files under `folder`."""
    found = []
    for root, dirs, names in os.walk(folder):
        for name in dirs + names:
            if ".tmp" in name or "_temp" in name or name.endswith(".lock") or name.startswith(".write-check"):
                found.append(os.path.join(root, name))
    return found


def _one_line_error(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


@pytest.mark.slow
def test_disk_full_while_tensorflow_writes_a_checkpoint(tmp_path):
    """A 100 KB filesystem: config.json fits, the first checkpoint does not."""
    with _tmpfs(tmp_path / "small", "100k") as small:
        run = subprocess.run(_cli(*SMALL, "--num_epochs", "2", *_outputs(tmp_path, saved=small / "s")),
                             capture_output=True, text=True, cwd=ROOT)
        assert run.returncode == 2, run.stderr
        line = _one_line_error(run.stderr)
        assert line.startswith("error: could not write ") and "No space left on device" in line
        assert not _leftovers(small)


def test_read_only_saved_models_reload_and_read_only_reports_fail_before_training(tmp_path, capsys,
                                                                                   demo_datasets):
    with _tmpfs(tmp_path / "ro", "20m") as folder:
        argv = SMALL + ["--num_epochs", "2", *_outputs(tmp_path, saved=folder / "s", datasets=demo_datasets)]
        assert main(argv) == 0
        _read_only(folder)
        capsys.readouterr()
        assert main(argv) == 0  # reloading takes no lock and writes nothing there
        assert "reloaded from" in capsys.readouterr().out
        assert main(argv + ["--additional_feature_sets", "timestamp"]) == 2  # a new model cannot be saved
        out, err = capsys.readouterr()
        assert "--saved_models_dir" in _one_line_error(err) and "epoch 1/2" not in out
    with _tmpfs(tmp_path / "ro_reports", "1m") as reports:
        _read_only(reports)
        assert main(SMALL + ["--num_epochs", "2", *_outputs(tmp_path, reports=reports / "r")]) == 2
        out, err = capsys.readouterr()
        assert "--reports_dir" in _one_line_error(err) and "Read-only file system" in err
        assert "epoch" not in out  # found before loading data or training


def _workers(pid):
    """The worker processes of main process `pid`: forked by its fork server (a child with the same
    command line), so grandchildren."""
    import psutil

    return [p for p in psutil.Process(pid).children(recursive=True)
            if "forkserver" in " ".join(p.cmdline()) and p.ppid() != pid]


@pytest.mark.slow
def test_ctrl_c_while_the_workers_start_is_one_message_without_a_traceback(tmp_path, demo_datasets):
    """Ctrl-C reaches the whole process group (a terminal's foreground job): the main process answers it;
    workers still importing TensorFlow are stopped quietly."""
    victim = subprocess.Popen(
        _cli("--dataset", "demo", "--num_epochs", "60", "--workers", "2", "--additional_feature_sets",
             "timestamp", *_outputs(tmp_path, datasets=demo_datasets)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, start_new_session=True)
    deadline = time.time() + 240
    while time.time() < deadline and not _workers(victim.pid):
        time.sleep(0.02)
    time.sleep(0.5)  # the workers are starting: importing TensorFlow, reading the data
    os.killpg(victim.pid, signal.SIGINT)
    _, err = victim.communicate(timeout=120)
    assert victim.returncode == 130, err
    assert err.strip().splitlines() == [
        "interrupted: re-run the same command to resume: finished models are reloaded, the one in training "
        "resumes from its last checkpoint"], err
    assert not list((tmp_path / "s").glob("*.lock"))


@pytest.mark.slow
def test_sigterm_with_workers_stops_every_process_and_leaves_no_lock(tmp_path, demo_datasets):
    import psutil

    main_process = subprocess.Popen(
        _cli("--dataset", "demo", "--num_epochs", "60", "--workers", "2", "--additional_feature_sets",
             "timestamp", *_outputs(tmp_path, datasets=demo_datasets)),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    saved = tmp_path / "s"
    deadline = time.time() + 240
    while time.time() < deadline and len(list(saved.glob("*/manifest.json"))) < 2:
        time.sleep(0.1)
    workers = _workers(main_process.pid)
    assert len(workers) == 2 and list(saved.glob("*.lock"))
    main_process.terminate()  # SIGTERM, as kill, timeout and docker stop send
    _, err = main_process.communicate(timeout=60)
    assert main_process.returncode == 143
    assert err.strip().splitlines()[-1].startswith("terminated: re-run the same command to resume")
    gone, alive = psutil.wait_procs(workers, timeout=30)
    assert not alive
    assert not list(saved.glob("*.lock"))


@pytest.mark.slow
def test_sigkill_of_the_main_process_ends_its_workers(tmp_path, demo_datasets):
    import psutil

    main_process = subprocess.Popen(
        _cli("--dataset", "demo", "--num_epochs", "60", "--workers", "2", "--additional_feature_sets",
             "timestamp", *_outputs(tmp_path, datasets=demo_datasets)),
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    deadline = time.time() + 240
    while time.time() < deadline and len(list((tmp_path / "s").glob("*/manifest.json"))) < 2:
        time.sleep(0.1)
    workers = _workers(main_process.pid)
    assert len(workers) == 2
    main_process.kill()
    main_process.wait()
    # At once (an epoch here is about 0.2 s), not after training their models to the end (60 epochs: the
    # fork server, their parent, outlived the main process, and so did they), and unwound: no lock left.
    gone, alive = psutil.wait_procs(workers, timeout=10)
    assert not alive
    assert not list((tmp_path / "s").glob("*.lock"))
    complete = [path for path in (tmp_path / "s").glob("*/history.json") if json.load(open(path))["complete"]]
    assert not complete


@pytest.mark.slow
def test_ctrl_c_is_exit_130_and_the_rerun_resumes(tmp_path, capsys, demo_datasets):
    args = [*SMALL, "--num_epochs", "30", "--eval_every", "2", *_outputs(tmp_path, datasets=demo_datasets)]
    # faulthandler: a crash instead of exit 130 (seen once under load: SIGSEGV, stderr empty) shows where.
    command = [sys.executable, "-X", "faulthandler", "-m", "recsys_ablate", *args]
    victim = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 240
    manifest = None
    while time.time() < deadline:
        manifests = list((tmp_path / "s").glob("*/manifest.json"))
        if manifests and json.load(open(manifests[0]))["epoch"] >= 4:
            manifest = manifests[0]
            break
        time.sleep(0.05)
    signalled_at = json.load(open(manifest))["epoch"] if manifest else None
    victim.send_signal(2)  # SIGINT, what Ctrl-C sends
    out, err = victim.communicate(timeout=120)
    assert victim.returncode == 130, (signalled_at, out[-1500:], err[-1500:])
    assert err.strip().splitlines()[-1] == ("interrupted: re-run the same command to resume: finished models "
                                            "are reloaded, the one in training resumes from its last "
                                            "checkpoint")
    saved_epoch = json.load(open(manifest))["epoch"]
    assert not _leftovers(tmp_path / "s")
    assert main(args) == 0  # the re-run here (a process of its own only where a signal needs one)
    again = capsys.readouterr().out
    assert f"after epoch {saved_epoch}" in again and "epoch 1/30" not in again


def test_half_downloaded_imdb_file_is_one_line_and_leaves_nothing(tmp_path, capsys):
    from tests.imdb_files import write_imdb_files

    rows = [(f"tt{i:07d}", "movie", f"Film {i}", f"Film {i}", 1990, 80 + i % 50) for i in range(3000)]
    folder = write_imdb_files(tmp_path / "tsv", rows)
    basics = os.path.join(folder, "title.basics.tsv.gz")
    whole = open(basics, "rb").read()
    with open(basics, "wb") as f:
        f.write(whole[:len(whole) // 2])  # a real truncated gzip, as an interrupted download leaves it
    database = tmp_path / "cache" / "imdb.sqlite"
    assert main(["import-imdb", folder, "--database", str(database)]) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert "title.basics.tsv.gz: truncated or not an IMDb dataset file (EOFError)" in line
    assert os.listdir(tmp_path / "cache") == []


@pytest.mark.slow
def test_garbage_imdb_database_gives_one_summary_line(tmp_path):
    garbage = tmp_path / "imdb.sqlite"
    garbage.write_bytes(b"not a database at all" * 500)
    folder = write_ml1m(tmp_path / "ml-1m")
    run = subprocess.run(_cli("--data_dir", folder, "--num_epochs", "1", "--batch_size", "4",
                              "--layer_sizes", "8", "--embedding_size", "4", "--no_baseline",
                              "--additional_feature_sets", "movie_length", "--ks", "1", "2",
                              "--imdb_database", str(garbage), *_outputs(tmp_path)),
                         capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr
    output = (run.stdout + run.stderr).splitlines()
    # No line per movie or per lookup: the run's own lines and the one summary (the cost table, a blank
    # line, its title, header, rule and one row, left out of the count).
    cost = output.index(next(line for line in output if line.startswith("Cost beside effect")))
    assert len(output[:cost - 1] + output[cost + 4:]) < 20, output
    lines = [line for line in output if "Cinemagoer" in line or "sqlite" in line.lower()]
    assert lines == ["movie lengths for 5 movies: 5 default (imdb: not a Cinemagoer database "
                     "(file is not a database))"], lines
    assert "CRITICAL" not in run.stderr and "Traceback" not in run.stderr


def test_empty_validation_split_is_an_error_naming_the_numbers(tmp_path, capsys):
    for argv, message in [
        (["--dataset", "demo", "--max_ratings", "1", "--split", "time"],
         "the time split of 1 ratings (train fraction 0.8) leaves 1 for training, 0 for validation; "
         "validation needs at least 1: use more ratings (raise --max_ratings) or other shares"),
    ]:
        assert main(argv + _outputs(tmp_path)) == 2
        assert message in _one_line_error(capsys.readouterr().err)
    one_row = tmp_path / "one.csv"
    one_row.write_text("user_id,item_id\n1,2\n")
    assert main(["--dataset", "csv", "--interactions", str(one_row)] + _outputs(tmp_path)) == 2
    assert "leaves 1 for training, 0 for validation" in _one_line_error(capsys.readouterr().err)
    assert not _leftovers(tmp_path)


def test_offline_download_fails_in_one_try_and_leaves_nothing_half_written(tmp_path, capsys, monkeypatch):
    # Every request goes to a closed port on this machine: no traffic leaves it.
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(name, "http://127.0.0.1:9")
    leftover = tmp_path / "d" / "downloads" / "movielens" / "ml-100k.zip.tmp.0123abcd"  # a killed run's
    leftover.mkdir(parents=True)
    start = time.perf_counter()
    assert main(["--dataset", "movielens/100k", "--dry_run"] + _outputs(tmp_path)) == 2
    assert time.perf_counter() - start < 30
    line = _one_line_error(capsys.readouterr().err)
    assert "put the original ml-100k.zip into" in line
    assert "or pass --data_dir with the extracted folder" in line
    assert not leftover.exists() and not _leftovers(tmp_path / "d") and not [
        p for p in (tmp_path / "d").rglob("*") if "incomplete" in p.name]


@pytest.mark.slow
def test_a_dead_worker_is_noticed_while_another_keeps_logging():
    from recsys_ablate.errors import UserInputError
    from recsys_ablate.training.workers import run_in_workers

    start = time.perf_counter()
    with pytest.raises(UserInputError, match="a worker process died"):
        run_in_workers(_chatty_or_dead, [("chatty",), ("dead",)], 2, lambda line: None)
    assert time.perf_counter() - start < 20  # not after the chatty job's 60 seconds


def _chatty_or_dead(kind):
    import signal

    from recsys_ablate.training.workers import worker_log

    if kind == "dead":
        time.sleep(1)
        os.kill(os.getpid(), signal.SIGKILL)
    for _ in range(1200):
        worker_log("still training")
        time.sleep(0.05)


@pytest.mark.parametrize("content, message", [
    ("user_id,item_id,timestamp\n1,2,nan\n2,3,5\n", "column 'timestamp' line 2 is 'nan'; expected seconds "
                                                    "since 1970"),
    ("user_id,item_id,timestamp\n1,2,1e30\n2,3,5\n", "column 'timestamp' line 2 is '1e30'; expected "
                                                     "seconds since 1970"),
    ("user_id,item_id,rating\n1,2,4\n2,3,inf\n", "column 'rating' line 3 is 'inf'; expected a number"),
    ("user_id,item_id\n1,2\n2,3,7\n", "line 3 has 3 fields but the header names 2"),
])
def test_bad_csv_values_name_file_line_and_column(tmp_path, capsys, content, message):
    path = tmp_path / "i.csv"
    path.write_text(content)
    assert main(["--dataset", "csv", "--interactions", str(path)] + _outputs(tmp_path)) == 2
    line = _one_line_error(capsys.readouterr().err)
    assert str(path) in line and message in line


def test_duplicate_item_and_ranking_without_ratings(tmp_path, capsys):
    interactions = tmp_path / "i.csv"
    interactions.write_text("user_id,item_id\n" + "".join(f"{u},{i}\n" for u in range(5) for i in range(3)))
    items = tmp_path / "items.csv"
    items.write_text("item_id,title\n0,A\n1,B\n2,C\n1,B again\n")
    assert main(["--dataset", "csv", "--interactions", str(interactions), "--items", str(items)]
                + _outputs(tmp_path)) == 2
    assert "line 5 repeats item '1' of line 3" in _one_line_error(capsys.readouterr().err)
    assert main(["--dataset", "csv", "--interactions", str(interactions), "--ks", "1",
                "--ranking"] + _outputs(tmp_path)) == 2
    assert "--ranking predicts ratings, but i has 0 rated training" in _one_line_error(
        capsys.readouterr().err)
    assert not (tmp_path / "s").exists()


def test_user_only_in_validation_gets_a_warning(tmp_path, capsys):
    ratings = [(u, m, "3", str(978300760 + k)) for k, (u, m) in enumerate(
        [("1", "1"), ("1", "2"), ("2", "1"), ("2", "10"), ("3", "2"), ("3", "7"), ("1", "7"), ("2", "2"),
         ("1", "10"), ("9", "10")])]
    folder = write_ml1m(tmp_path / "ml-1m", ratings=ratings)
    # Time split: user 9's only rating is the latest, so it is in validation only.
    assert main(["--data_dir", folder, "--split", "time", "--num_epochs", "1", "--batch_size", "4",
                 "--ks", "1", "--layer_sizes", "8", "--embedding_size", "4",
                 "--generate_recommendations_for_user", "9"]
                + _outputs(tmp_path)) == 0
    assert ("warning: user 9 has no ratings in the training split, so every model recommends to them from "
            "the shared out-of-vocabulary user embedding") in capsys.readouterr().out


_KILL_AFTER_HISTORY = """
import os, signal, sys
import recsys_ablate
from recsys_ablate.training import history
real_save = history.History.save
def save(self, path):
    real_save(self, path)
    if self.last_epoch == 4:  # history written, manifest not yet: the narrowest crash window
        os.kill(os.getpid(), signal.SIGKILL)
history.History.save = save
from recsys_ablate.cli import main
sys.exit(main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_kill_between_history_and_manifest_resumes_from_the_last_manifest(tmp_path, capsys, demo_datasets):
    args = [*SMALL, "--num_epochs", "6", "--eval_every", "2"]
    # Only the killed run is a process of its own; the others run here (a TensorFlow import less each).
    assert main([*args, *_outputs(tmp_path / "clean", datasets=demo_datasets)]) == 0
    killed = subprocess.run([sys.executable, "-c", _KILL_AFTER_HISTORY, *args,
                             *_outputs(tmp_path / "killed", datasets=demo_datasets)],
                            capture_output=True, text=True, cwd=ROOT)
    assert killed.returncode == -9
    capsys.readouterr()
    assert main([*args, *_outputs(tmp_path / "killed", datasets=demo_datasets)]) == 0
    again = capsys.readouterr().out
    assert "after epoch 2" in again and "corrupted" not in again, again

    def evaluations(folder):
        (path,) = folder.glob("s/*/history.json")
        return [{k: v for k, v in e.items() if k != "seconds"} for e in json.load(open(path))["evaluations"]]

    assert evaluations(tmp_path / "killed") == evaluations(tmp_path / "clean")


def test_ctrl_c_between_a_first_history_and_its_manifest_waits_for_the_manifest(tmp_path, capsys,
                                                                                  monkeypatch, demo_datasets):
    """A real SIGINT the moment the history of a model's first evaluation is written: the manifest is still
    written before the command stops (exit 130), so the re-run resumes after that evaluation instead of
    warning of a corrupted folder and training from epoch 1."""
    real_save = History.save

    def save_then_interrupt(self, path):
        real_save(self, path)
        if self.last_epoch == 1:
            os.kill(os.getpid(), signal.SIGINT)

    args = [*SMALL, "--num_epochs", "2", "--eval_every", "1", *_outputs(tmp_path, datasets=demo_datasets)]
    monkeypatch.setattr(History, "save", save_then_interrupt)
    assert main(args) == 130
    (manifest,) = (tmp_path / "s").glob("*/manifest.json")
    assert json.load(open(manifest))["epoch"] == 1
    monkeypatch.setattr(History, "save", real_save)
    capsys.readouterr()
    assert main(args) == 0
    again = capsys.readouterr().out
    assert f"resuming {manifest.parent} after epoch 1" in again and "corrupted" not in again, again


_EXPORT_SMALL = ["--dataset", "demo", "--max_ratings", "5000", "--num_epochs", "1", "--layer_sizes", "8",
                 "--embedding_size", "8"]


@pytest.mark.slow
def test_export_to_a_read_only_folder_fails_before_training(tmp_path):
    small = [*_EXPORT_SMALL, *_outputs(tmp_path)]
    with _tmpfs(tmp_path / "ro", "1m") as target:
        _read_only(target)
        run = subprocess.run(_cli("export", str(target / "exports"), *small), capture_output=True, text=True,
                             cwd=ROOT)
        assert run.returncode == 2 and "export FOLDER" in _one_line_error(run.stderr)
        assert "Read-only file system" in run.stderr and "epoch" not in run.stdout  # before any training


@pytest.mark.slow
def test_ctrl_c_during_export_leaves_no_half_written_index(tmp_path):
    """Needs no mount: it runs wherever the other tests do."""
    small = [*_EXPORT_SMALL, *_outputs(tmp_path)]
    victim = subprocess.Popen(_cli("export", str(tmp_path / "exports"), *small), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, cwd=ROOT)
    deadline = time.time() + 240
    exports = tmp_path / "exports"
    while time.time() < deadline and not (exports.is_dir() and any(exports.rglob("*"))):
        time.sleep(0.01)  # until the first SavedModel is being written
    victim.send_signal(2)
    _, err = victim.communicate(timeout=120)
    assert victim.returncode == 130, err
    assert err.strip().splitlines()[-1].startswith("interrupted: re-run the same command to export again")
    assert "Traceback" not in err
    assert not [p for p in exports.rglob("*") if ".tmp" in p.name]  # no half-written SavedModel left


def test_ctrl_c_during_a_write_is_delivered_after_it():
    import signal

    from recsys_ablate.files import deferred_interrupts

    steps = []
    with pytest.raises(KeyboardInterrupt):
        with deferred_interrupts():
            os.kill(os.getpid(), signal.SIGINT)  # a real signal, in the middle of the block
            time.sleep(0.05)
            steps.append("write finished")
    assert steps == ["write finished"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


@pytest.mark.slow
def test_ctrl_c_in_the_second_round_of_adaptive_seeds_resumes_in_that_round(tmp_path, capsys, demo_datasets):
    """--seeds auto, a real SIGINT once a second-round model is training: exit 130, and the re-run reloads
    the first round, resumes the interrupted model and finishes the rounds."""
    args = [*SMALL, "--additional_feature_sets", "None", "--additional_feature_sets", "movie_genres",
            "--seeds", "auto", "--max_seeds", "3", "--num_epochs", "40", "--eval_every", "2",
            "--workers", "2", *_outputs(tmp_path, datasets=demo_datasets)]
    victim = subprocess.Popen(_cli(*args), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                              cwd=ROOT)
    deadline = time.time() + 300
    while time.time() < deadline:
        manifests = sorted((tmp_path / "s").glob("*/manifest.json"), key=os.path.getmtime)
        if len(manifests) >= 5 and json.load(open(manifests[-1]))["epoch"] >= 2:
            break
        time.sleep(0.05)
    victim.send_signal(signal.SIGINT)
    out, err = victim.communicate(timeout=120)
    assert victim.returncode == 130, (out[-1500:], err[-1500:])
    assert "round 2 of 2" in out and not _leftovers(tmp_path / "s")
    histories = {path.parent: json.load(open(path)) for path in (tmp_path / "s").glob("*/history.json")}
    finished = sum(history["complete"] for history in histories.values())
    assert finished >= 4  # the first round (2 arms x 2 seeds) and whatever of the second had finished
    halfway = [folder for folder, history in histories.items()
               if not history["complete"] and history["evaluations"]]
    capsys.readouterr()
    assert main(args) == 0  # the re-run here (a process of its own only where a signal needs one)
    again = capsys.readouterr().out
    # A model the signal caught mid-training resumes from its checkpoint (under load the second round's
    # models may both have finished before the signal landed: then everything reloads).
    for folder in halfway:
        assert f"resuming {folder}" in again
    summary = json.load(open(next((tmp_path / "r").glob("*.json"))))
    (stop,) = summary["adaptive_seeds"]["stops"]
    assert stop["seeds"] in (2, 3) and len(list((tmp_path / "s").glob("*/history.json"))) == 6
    reloaded = int(again.split(" reloaded.")[0].rsplit(" ", 1)[-1])
    assert reloaded >= finished
