import pytest
"""A saved model is reloaded only for the same content, whatever path the content is read from."""

import json
import os
import shutil
import signal
import subprocess
import sys

from recsys_ablate.cli import main
from tests.conftest import _ml1m_ratings, write_ml1m
from tests.helpers import wait_for

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The fixtures' catalogues have 3-5 items: top-K below that (a K at or above it is refused).
TINY = ["--num_epochs", "1", "--batch_size", "4", "--layer_sizes", "8", "--embedding_size", "4",
        "--ks", "1", "2"]


def _outputs(tmp_path):
    return ["--datasets_dir", str(tmp_path / "d"), "--saved_models_dir", str(tmp_path / "s"),
            "--reports_dir", str(tmp_path / "r")]


def _sources(out: str) -> list[str]:
    """'trained'/'reloaded' per summary row."""
    return [line.split()[-1] for line in out.splitlines() if line.split() and line.split()[-1] in
            ("trained", "reloaded", "reloaded/trained", "trained/reloaded")]


def _run(capsys, argv) -> str:
    capsys.readouterr()
    assert main(argv) == 0, capsys.readouterr().err
    return capsys.readouterr().out


def test_changed_csv_content_under_the_same_path_retrains(tmp_path, capsys):
    csv = tmp_path / "dense.csv"
    csv.write_text("user_id,item_id,rating\n" + "".join(f"{u},{i},{1 + (u + i) % 5}\n"
                                                          for u in range(20) for i in range(10)
                                                          if (u + i) % 3))
    argv = ["--dataset", "csv", "--interactions", str(csv), *TINY, *_outputs(tmp_path)]
    assert _sources(_run(capsys, argv)) == ["trained"]
    assert _sources(_run(capsys, argv)) == ["reloaded"]
    # Same ids, other ratings: the old model must not be "reloaded".
    csv.write_text("user_id,item_id,rating\n" + "".join(f"{u},{i},{1 + (u * i) % 5}\n"
                                                          for u in range(20) for i in range(10)
                                                          if (u * i) % 3))
    assert _sources(_run(capsys, argv)) == ["trained"]
    folders = sorted(p.name for p in (tmp_path / "s").iterdir() if p.is_dir())
    assert len(folders) == 2 and all(name.startswith("dense_random_") for name in folders)


def test_same_grouplens_content_under_other_paths_reloads(tmp_path, capsys, monkeypatch):
    folder = write_ml1m(tmp_path / "ml-1m-mine")
    out = _run(capsys, ["--data_dir", folder, *TINY, *_outputs(tmp_path)])
    assert _sources(out) == ["trained"]
    saved = [p.name for p in (tmp_path / "s").iterdir() if p.is_dir()]
    assert len(saved) == 1 and saved[0].startswith("ml-1m-mine_random_e1_")  # named after the data
    monkeypatch.chdir(tmp_path)
    for data_args in (["--data_dir", folder + "/"], ["--dataset", "grouplens", "--data_dir", folder],
                      ["--data_dir", "ml-1m-mine"],
                      ["--dataset", "movielens/1m", "--data_dir", "./ml-1m-mine"]):
        assert _sources(_run(capsys, [*data_args, *TINY, *_outputs(tmp_path)])) == ["reloaded"], data_args
    # Moved elsewhere, same bytes: reloaded.
    moved = shutil.move(folder, tmp_path / "elsewhere" / "ml-1m-mine")
    assert _sources(_run(capsys, ["--data_dir", str(moved), *TINY, *_outputs(tmp_path)])) == ["reloaded"]
    # One rating changed: trained again, never a shape-mismatch traceback.
    write_ml1m(moved, ratings=_ml1m_ratings()[:-1] + [("3", "3", "4", "978301000")])
    assert _sources(_run(capsys, ["--data_dir", str(moved), *TINY, *_outputs(tmp_path)])) == ["trained"]


def test_changed_movie_lengths_csv_retrains_only_movie_length_models(tmp_path, capsys):
    folder = write_ml1m(tmp_path / "ml-1m")
    lengths = tmp_path / "lengths.csv"
    lengths.write_text("movie_id,runtime_min\n1,81\n2,112\n10,136\n")
    argv = ["--data_dir", folder, "--additional_feature_sets", "movie_length", "--movie_lengths_csv",
            str(lengths), "--imdb_database", str(tmp_path / "none.sqlite"), *TINY, *_outputs(tmp_path)]
    assert _sources(_run(capsys, argv)) == ["trained", "trained"]
    lengths.write_text("movie_id,runtime_min\n1,81\n2,112\n10,99\n")
    assert _sources(_run(capsys, argv)) == ["reloaded", "trained"]  # the baseline does not read lengths


def _complete(saved_models) -> list[str]:
    out = []
    for path in saved_models.glob("*/history.json"):
        try:
            if json.load(open(path))["complete"]:
                out.append(path.parent.name)
        except (ValueError, OSError):
            pass
    return out


@pytest.mark.slow
def test_interrupted_retrain_resumes_instead_of_starting_over(tmp_path, capsys):
    """A real Ctrl-C (SIGINT) during --retrain; re-running keeps what it already retrained."""
    # Only the interrupted run is a process of its own; the others run here (a TensorFlow import less each).
    args = ["--dataset", "demo", "--max_ratings", "6000", "--batch_size", "512", "--layer_sizes", "16",
            "--embedding_size", "8", "--num_epochs", "40", "--eval_every", "2",
            "--additional_feature_sets", "movie_genres", *_outputs(tmp_path)]
    assert main(args) == 0  # both models trained once
    first_train = {p.parent.name: p.stat().st_mtime_ns for p in (tmp_path / "s").glob("*/history.json")}

    # faulthandler: a crash instead of exit 130 (seen once in CI: SIGSEGV) shows where it happened.
    command = [sys.executable, "-X", "faulthandler", "-m", "recsys_ablate", *args, "--retrain"]
    victim = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    saved = tmp_path / "s"

    def one_retrained_one_started():
        try:
            retrained = [name for name in _complete(saved)
                         if (saved / name / "history.json").stat().st_mtime_ns != first_train[name]]
            started = [p for p in saved.glob("*/manifest.json")
                       if p.parent.name not in retrained and json.load(open(p))["epoch"] >= 2
                       and (p.parent / "history.json").stat().st_mtime_ns != first_train[p.parent.name]]
        except (FileNotFoundError, json.JSONDecodeError):  # the run is resetting that folder right now
            return False
        return len(retrained) == 1 and started

    assert wait_for(one_retrained_one_started)
    victim.send_signal(signal.SIGINT)
    _, err = victim.communicate(timeout=120)
    # A crash's faulthandler report: the threads' stacks first (the list of extension modules after them
    # filled the 4,000 characters shown when it happened again in session 19).
    crash = err.find("Fatal Python error")
    assert victim.returncode == 130, err[crash:crash + 6000] if crash >= 0 else err[-4000:]
    assert err.strip().splitlines()[-1] == (
        "interrupted: re-run the same command to resume this --retrain run: the models it already retrained "
        "are kept, the one in training resumes from its last checkpoint, the rest are retrained")
    assert list(saved.glob(".retrain-*.json"))  # the unfinished invocation is remembered

    capsys.readouterr()
    assert main(args + ["--retrain"]) == 0
    again = capsys.readouterr().out
    assert "reloaded from" in again and "resuming" in again, again
    assert "epoch 1/40" not in again
    assert not list(saved.glob(".retrain-*.json")) and not list(saved.glob("*.lock"))
    # Finished: the next --retrain starts over (planned in full: every epoch of both models; the plan is
    # what training follows, so a dry run shows it without training 80 epochs again).
    assert main(args + ["--retrain", "--dry_run"]) == 0
    third = capsys.readouterr().out
    assert third.count(": 40 epochs") == 2 and "80 epochs to train (0 already trained)" in third


FIXTURE = os.path.join(ROOT, "tests", "fixtures", "saved_models_b2b1d6e")


def test_models_saved_by_earlier_code_still_reload(tmp_path, capsys):
    """A model folder written by the code at commit b2b1d6e (start of the restructuring) is reloaded."""
    saved = tmp_path / "s"
    shutil.copytree(FIXTURE, saved)
    (name,) = os.listdir(saved)
    before = json.load(open(saved / name / "history.json"))
    argv = ["--dataset", "demo", "--max_ratings", "3000", "--num_epochs", "2", "--eval_every", "1",
            "--layer_sizes", "4", "--embedding_size", "4", "--batch_size", "512",
            "--datasets_dir", str(tmp_path / "d"), "--saved_models_dir", str(saved),
            "--reports_dir", str(tmp_path / "r")]
    out = _run(capsys, argv)
    assert f"reloaded from {saved / name}" in out and "epoch 1/2" not in out
    assert json.load(open(saved / name / "history.json")) == before
    # Compared with a new model: the old one kept no top-K lists, so coverage and popularity are left
    # out of the comparison (not guessed); tail accuracy comes from its ranks and is compared.
    _run(capsys, argv + ["--additional_feature_sets", "movie_genres"])
    document = json.load(open(max((tmp_path / "r").glob("*.json"), key=os.path.getmtime)))
    assert {c["metric"] for c in document["comparisons"]} >= {"top_100", "tail_100"}
    assert not {c["metric"] for c in document["comparisons"]} & {"coverage_100", "popularity_100"}
    old, new = (f["final_mean_over_seeds"] for f in document["feature_sets"])
    assert "coverage_100" not in old and "coverage_100" in new


def test_data_encoded_from_other_paths_is_described_by_the_current_ones(tmp_path):
    """The encoded-data cache is keyed by content; the report names the files of this run."""
    from recsys_ablate.data.encoded import load_dataset
    from recsys_ablate.settings import DataConfig

    first, second = tmp_path / "a", tmp_path / "b"
    for folder in (first, second):
        folder.mkdir()
        (folder / "i.csv").write_text("user_id,item_id\n1,2\n2,3\n1,3\n")
    cache = str(tmp_path / "d")
    one = load_dataset(DataConfig(dataset="csv", interactions=str(first / "i.csv"), datasets_dir=cache),
                       log=lambda *_: None)
    two = load_dataset(DataConfig(dataset="csv", interactions=str(second / "i.csv"), datasets_dir=cache),
                       log=lambda line: pytest.fail(f"encoded again: {line}"))
    assert one.fingerprint == two.fingerprint
    assert one.source == f"CSV {first / 'i.csv'}" and two.source == f"CSV {second / 'i.csv'}"
