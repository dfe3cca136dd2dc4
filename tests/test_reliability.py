"""Faults: kills, corruption, concurrent processes, full disks, fuzzed input."""

import errno
import json
import os
import signal
import subprocess
import sys
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_ablate import files
from recsys_ablate.cli import build_parser, config_from_args, format_error, main
from recsys_ablate.config import build_config, load_toml
from recsys_ablate.errors import UserInputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--dataset", "demo", "--max_ratings", "6000", "--batch_size", "512", "--layer_sizes", "16",
         "--embedding_size", "8"]


def _cli(tmp_path, out, *extra):
    return [sys.executable, "-m", "recsys_ablate", *SMALL, "--datasets_dir", str(tmp_path / "datasets"),
            "--saved_models_dir", str(tmp_path / out / "saved_models"),
            "--reports_dir", str(tmp_path / out / "reports"), *extra]


def _histories(saved_models):
    out = {}
    for name in sorted(os.listdir(saved_models)):
        path = os.path.join(saved_models, name, "history.json")
        if os.path.isfile(path):
            out[name] = json.load(open(path))
    return out


def _assert_same_evaluations(a, b):
    assert a.keys() == b.keys()
    for name in a:
        ea, eb = a[name]["evaluations"], b[name]["evaluations"]
        assert [e["epoch"] for e in ea] == [e["epoch"] for e in eb]
        for x, y in zip(ea, eb):
            for k in ("top_1", "top_5", "top_10", "top_50", "top_100"):
                assert y[k] == pytest.approx(x[k], abs=1e-6), (name, x["epoch"], k)


def test_sigkill_mid_training_then_rerun_resumes_to_the_uninterrupted_result(tmp_path):
    args = ["--no_baseline", "--additional_feature_sets", "movie_genres", "--num_epochs", "30", "--eval_every", "2"]
    subprocess.run(_cli(tmp_path, "clean", *args), check=True, capture_output=True, cwd=ROOT)

    victim = subprocess.Popen(_cli(tmp_path, "killed", *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              cwd=ROOT)
    saved = tmp_path / "killed" / "saved_models"
    deadline = time.time() + 120
    while time.time() < deadline:
        manifests = list(saved.glob("*/manifest.json")) if saved.exists() else []
        if manifests and json.load(open(manifests[0]))["epoch"] >= 4:
            break
        time.sleep(0.05)
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    killed_at = json.load(open(manifests[0]))["epoch"]
    assert 4 <= killed_at < 30, killed_at

    resumed = subprocess.run(_cli(tmp_path, "killed", *args), check=True, capture_output=True, text=True, cwd=ROOT)
    assert f"after epoch {killed_at}" in resumed.stdout
    assert "epoch 1/30" not in resumed.stdout
    _assert_same_evaluations(_histories(tmp_path / "clean" / "saved_models"), _histories(saved))


def test_corrupted_saved_model_is_detected_and_retrained(tmp_path, capsys):
    argv = SMALL[:] + ["--num_epochs", "2", "--datasets_dir", str(tmp_path / "d"),
                       "--saved_models_dir", str(tmp_path / "s"), "--reports_dir", str(tmp_path / "r")]
    assert main(argv) == 0
    folder = next(p for p in (tmp_path / "s").iterdir() if p.is_dir())
    data_file = next((folder / "checkpoints").glob("ckpt-2.data-*"))
    raw = bytearray(data_file.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    data_file.write_bytes(bytes(raw))
    capsys.readouterr()
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "is incomplete or corrupted (checkpoints/ckpt-2.data-00000-of-00001 does not match its checksum)" in out
    assert "epoch 1/2" in out  # trained again, not loaded


def test_two_processes_share_models_without_training_twice(tmp_path):
    args = ["--additional_feature_sets", "movie_genres", "--num_epochs", "3"]
    procs = [subprocess.Popen(_cli(tmp_path, "shared", *args), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, cwd=ROOT) for _ in range(2)]
    outputs = [p.communicate(timeout=300)[0] for p in procs]
    assert all(p.returncode == 0 for p in procs), outputs
    for label in ("baseline (ids only)", "movie_genres"):
        sources = [line.split()[-1] for out in outputs for line in out.splitlines()
                   if line.startswith(label) and line.split()[-1] in ("trained", "reloaded")]
        assert sorted(sources) == ["reloaded", "trained"], (label, outputs)
    assert len(_histories(tmp_path / "shared" / "saved_models")) == 2


_LOOKUP = """
import sys, json
sys.path.insert(0, {root!r})
import recsys_ablate
from recsys_ablate.imdb_lengths import ImdbMovieLengthSource, DatabaseSearches
titles = [f"Film {{i}} (1990)" for i in range(120)] + ["The Matrix (1999)"]
got = ImdbMovieLengthSource({db!r}, {cache!r}).lookup([str(i) for i in range(len(titles))], titles)
print(json.dumps({{"got": got, "searches": DatabaseSearches.count}}))
"""


def test_imdb_cache_stays_consistent_under_two_processes(tmp_path):
    from recsys_ablate.imdb_lengths import import_imdb_files
    from tests.imdb_files import write_imdb_files

    rows = [(f"tt{i:07d}", "movie", f"Film {i}", f"Film {i}", 1990, 80 + i % 50) for i in range(120)]
    rows.append(("tt0133093", "movie", "The Matrix", "The Matrix", 1999, 136))
    db = str(tmp_path / "imdb.sqlite")
    import_imdb_files(write_imdb_files(tmp_path / "tsv", rows), db)
    code = _LOOKUP.format(root=ROOT, db=db, cache=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True) for _ in range(2)]
    results = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert results[0]["got"] == results[1]["got"]
    assert results[0]["got"][-1] == [136.0, "exact year"] and results[0]["got"][7] == [87.0, "exact year"]
    third = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1])
    assert third["got"] == results[0]["got"] and third["searches"] == 0


def test_full_disk_is_one_line_and_keeps_earlier_models(tmp_path, capsys, monkeypatch):
    base = SMALL[:] + ["--num_epochs", "2", "--datasets_dir", str(tmp_path / "d"),
                       "--saved_models_dir", str(tmp_path / "s"), "--reports_dir", str(tmp_path / "r")]
    assert main(base) == 0
    before = _histories(tmp_path / "s")
    capsys.readouterr()

    real_replace = os.replace

    def full_disk(src, dst):
        if "movie_genres" in str(dst):
            raise OSError(errno.ENOSPC, "No space left on device", str(dst))
        return real_replace(src, dst)

    monkeypatch.setattr(files.os, "replace", full_disk)
    assert main(base + ["--additional_feature_sets", "movie_genres"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: could not write ") and "No space left on device" in err and "\n" not in err
    monkeypatch.undo()
    assert not list((tmp_path / "s").glob("*/*.tmp*"))  # no half-written files left behind
    capsys.readouterr()
    assert main(base) == 0  # the earlier model still reloads
    assert "reloaded" in capsys.readouterr().out and _histories(tmp_path / "s") == before


FLAGS = ["--dataset", "--data_dir", "--num_epochs", "--eval_every", "--embedding_size", "--layer_sizes",
         "--batch_size", "--learning_rate", "--seed", "--split", "--max_ratings", "--additional_feature_sets",
         "--retrain", "--no_baseline", "--generate_recommendations_for_user", "--config", "--split_seed",
         "--default_movie_length", "--user_column", "--bogus"]
VALUES = st.one_of(st.sampled_from(["None", "timestamp", "movie_genres", "0", "-3", "2048", "1e9", "nan",
                                    "random", "time", "demo", "movielens/1m", "", "x.toml"]),
                   st.text(max_size=8))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(st.sampled_from(FLAGS), VALUES), max_size=10))
def test_fuzzed_command_lines_only_ever_raise_user_errors(argv):
    try:
        config_from_args(build_parser().parse_args(argv))
    except UserInputError as err:
        line = format_error(err)
        assert len(line) > len("error: ") and "\n" not in line


TOML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5000), st.floats(allow_nan=True), st.text(max_size=6)),
    lambda inner: st.lists(inner, max_size=3), max_leaves=6)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["data", "model", "train", "lengths", "experiment", "csv_columns"]),
                       st.dictionaries(st.sampled_from(["num_epochs", "layer_sizes", "feature_sets", "dataset",
                                                        "learning_rate", "split", "csv", "retrain", "user",
                                                        "recommend_user", "embedding_size", "ks", "x"]),
                                       st.one_of(TOML_VALUES, st.none()), max_size=4), max_size=4))
def test_fuzzed_config_sections_only_ever_raise_user_errors(sections):
    try:
        build_config(sections)
    except UserInputError:
        pass


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(max_size=200))
def test_fuzzed_toml_text_only_ever_raises_user_errors(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("toml") / "x.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_toml(str(path))
    except UserInputError:
        pass


def _tree_digest(folder):
    import hashlib

    digest = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            digest[os.path.relpath(path, folder)] = hashlib.sha256(open(path, "rb").read()).hexdigest()
    return digest


def test_bad_inputs_exit_2_and_leave_saved_artifacts_untouched(ml1m_dir, tmp_path, capsys):
    out = ["--datasets_dir", str(tmp_path / "d"), "--saved_models_dir", str(tmp_path / "s"),
           "--reports_dir", str(tmp_path / "r")]
    good = ["--data_dir", ml1m_dir, "--num_epochs", "1", "--batch_size", "4", "--layer_sizes", "8",
            "--embedding_size", "4"]
    empty_csv = tmp_path / "empty.csv"
    empty_csv.write_text("user_id,item_id\n1,\n")
    duplicate_csv = tmp_path / "dup.csv"
    duplicate_csv.write_text("user_id,item_id\n1,2\n1,2\n")
    assert main(good + out) == 0
    before = _tree_digest(tmp_path)
    bad = [
        (good + ["--additional_feature_sets", "genre"], "unknown feature 'genre'"),
        (good + ["--additional_feature_sets", "None", "timestamp"], "'None' is the id-only baseline"),
        (good + ["--num_epochs", "-1"], "num_epochs -1"),
        (good + ["--generate_recommendations_for_user", "77"], "valid ids are 1..9"),
        (good + ["--generate_recommendations_for_user", "9"], "user 9 has no ratings"),
        (["--data_dir", str(tmp_path / "missing")], "no such folder"),
        (["--dataset", "csv", "--interactions", str(empty_csv)], "empty value in column 'item_id' on line 2"),
        (["--dataset", "csv", "--interactions", str(duplicate_csv)], "line 3 repeats line 2"),
    ]
    for argv, message in bad:
        capsys.readouterr()
        assert main(argv + out) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err, (argv, err)
    assert _tree_digest(tmp_path) == before
