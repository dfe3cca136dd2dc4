"""Faults: kills, corruption, concurrent processes, full disks, fuzzed input."""

import contextlib
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import psutil
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_ablate.cli import main
from tests.helpers import wait_for
from recsys_ablate.ablation import check_experiment
from recsys_ablate.settings import build, canonical
from recsys_ablate.errors import UserInputError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMALL = ["--dataset", "demo", "--max_ratings", "6000", "--batch_size", "512", "--layer_sizes", "16",
         "--embedding_size", "8"]


def _args(tmp_path, out, *extra):
    return [*SMALL, "--datasets_dir", str(tmp_path / "datasets"),
            "--saved_models_dir", str(tmp_path / out / "saved_models"),
            "--reports_dir", str(tmp_path / out / "reports"), *extra]


def _cli(tmp_path, out, *extra):
    return [sys.executable, "-m", "recsys_ablate", *_args(tmp_path, out, *extra)]


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


@pytest.mark.slow
def test_sigkill_mid_training_then_rerun_resumes_to_the_uninterrupted_result(tmp_path, capsys):
    args = ["--no_baseline", "--additional_feature_sets", "movie_genres", "--num_epochs", "30",
            "--eval_every", "2"]
    # Only the killed run is a process of its own; the others run here (a TensorFlow import less each).
    assert main(_args(tmp_path, "clean", *args)) == 0

    victim = subprocess.Popen(_cli(tmp_path, "killed", *args), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT,
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

    capsys.readouterr()
    assert main(_args(tmp_path, "killed", *args)) == 0
    resumed = capsys.readouterr().out
    assert f"after epoch {killed_at}" in resumed
    assert "epoch 1/30" not in resumed
    _assert_same_evaluations(_histories(tmp_path / "clean" / "saved_models"), _histories(saved))


def test_corrupted_saved_model_is_detected_and_retrained(tmp_path, capsys, demo_datasets):
    argv = SMALL[:] + ["--num_epochs", "2", "--datasets_dir", demo_datasets,
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
    assert ("is incomplete or corrupted (checkpoints/ckpt-2.data-00000-of-00001 does not match its "
            "checksum)") in out
    assert "epoch 1/2" in out  # trained again, not loaded


@pytest.mark.slow
def test_two_processes_share_models_without_training_twice(tmp_path):
    """The second process starts while the first trains both models (--workers 2): it waits on each folder's
    lock, then reloads what the first trained, and says so (in its table and its count)."""
    args = ["--additional_feature_sets", "movie_genres", "--max_ratings", "60000", "--num_epochs", "20",
            "--eval_every", "10", "--workers", "2"]
    saved = tmp_path / "shared" / "saved_models"
    first = subprocess.Popen(_cli(tmp_path, "shared", *args), stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True, cwd=ROOT)
    assert wait_for(lambda: len(list(saved.glob("*.lock"))) == 2), "the first process never trained"
    # The first process's workers, holding both models' locks, are paused (SIGSTOP) until the second
    # process waits on both: however fast the models train, the second finds them in training.
    paused = psutil.Process(first.pid).children(recursive=True)
    for process in paused:
        process.suspend()
    lines = []
    try:
        assert len(list(saved.glob("*.lock"))) == 2, "a model was trained before its worker was paused"
        second = subprocess.Popen(_cli(tmp_path, "shared", *args), stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                                  env=dict(os.environ, PYTHONUNBUFFERED="1"))
        reader = threading.Thread(target=lambda: [lines.append(line) for line in second.stdout], daemon=True)
        reader.start()
        assert wait_for(lambda: sum("waiting: another process is training" in line for line in lines) == 2)
    finally:
        for process in paused:
            process.resume()
    outputs = [first.communicate(timeout=300)[0]]
    second.wait(timeout=300)
    reader.join(timeout=60)
    outputs.append("".join(lines))
    assert all(p.returncode == 0 for p in (first, second)), outputs
    assert "2 models: 2 trained, 0 reloaded." in outputs[0], outputs[0]
    assert "2 models: 0 trained, 2 reloaded." in outputs[1], outputs[1]
    for label in ("baseline (ids only)", "movie_genres"):
        sources = [line.split()[-1] for out in outputs for line in out.splitlines()
                   if line.startswith(label) and line.split()[-1] in ("trained", "reloaded")]
        assert sorted(sources) == ["reloaded", "trained"], (label, outputs)
    assert len(_histories(saved)) == 2 and not list(saved.glob("*.lock"))


_LOOKUP = """
import sys, json
sys.path.insert(0, {root!r})
import recsys_ablate
from recsys_ablate.data.imdb_lengths import ImdbMovieLengthSource, DatabaseSearches
titles = [f"Film {{i}} (1990)" for i in range(120)] + ["The Matrix (1999)"]
got = ImdbMovieLengthSource({db!r}, {cache!r}).lookup([str(i) for i in range(len(titles))], titles)
print(json.dumps({{"got": got, "searches": DatabaseSearches.count}}))
"""


@pytest.mark.slow
def test_imdb_cache_stays_consistent_under_two_processes(tmp_path):
    from recsys_ablate.data.imdb_lengths import import_imdb_files
    from tests.imdb_files import write_imdb_files

    rows = [(f"tt{i:07d}", "movie", f"Film {i}", f"Film {i}", 1990, 80 + i % 50) for i in range(120)]
    rows.append(("tt0133093", "movie", "The Matrix", "The Matrix", 1999, 136))
    db = str(tmp_path / "imdb.sqlite")
    import_imdb_files(write_imdb_files(tmp_path / "tsv", rows), db)
    code = _LOOKUP.format(root=ROOT, db=db, cache=str(tmp_path / "cache"))
    procs = [subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [json.loads(p.communicate(timeout=300)[0].strip().splitlines()[-1]) for p in procs]
    assert results[0]["got"] == results[1]["got"]
    assert results[0]["got"][-1] == [136.0, "exact year"] and results[0]["got"][7] == [87.0, "exact year"]
    third = json.loads(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                      check=True).stdout.strip().splitlines()[-1])
    assert third["got"] == results[0]["got"] and third["searches"] == 0


def test_full_disk_is_one_line_and_keeps_earlier_models(tmp_path, capsys, demo_datasets):
    """A real filesystem filled up (tmpfs plus a filler file), not a mocked write."""
    from tests.test_faults import _leftovers, _tmpfs

    with _tmpfs(tmp_path / "disk", "8m") as disk:
        base = SMALL[:] + ["--num_epochs", "2", "--datasets_dir", demo_datasets,
                           "--saved_models_dir", str(disk / "s"), "--reports_dir", str(tmp_path / "r")]
        assert main(base) == 0
        before = _histories(disk / "s")
        filler = os.open(disk / "filler", os.O_WRONLY | os.O_CREAT)  # fill the disk, then give back ~40 KB
        with contextlib.suppress(OSError):
            while True:
                os.write(filler, b"\0" * 4096)
        os.close(filler)
        os.truncate(disk / "filler", os.path.getsize(disk / "filler") - 40 * 1024)
        capsys.readouterr()
        assert main(base + ["--additional_feature_sets", "movie_genres"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(
            "error: could not write ") and "No space left on device" in err and "\n" not in err
        assert not _leftovers(disk / "s")  # no temporary files, TF temp checkpoints or locks
        os.remove(disk / "filler")
        assert main(base) == 0  # the earlier model still reloads
        assert "reloaded" in capsys.readouterr().out and _histories(disk / "s") == before


def test_a_full_disk_under_the_report_names_the_report(tmp_path, capsys, demo_datasets):
    """The models are saved elsewhere and kept; the report (a few MB) does not fit: its name is said."""
    from tests.test_faults import _leftovers, _tmpfs

    with _tmpfs(tmp_path / "reports", "1m") as reports:
        argv = SMALL[:] + ["--num_epochs", "1", "--datasets_dir", demo_datasets, "--saved_models_dir",
                           str(tmp_path / "s"), "--reports_dir", str(reports)]
        assert main(argv) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: could not write {reports}/ablation_demo_") and ".html: No space" in err
        assert "\n" not in err and not _leftovers(reports)
    assert _histories(tmp_path / "s")  # the trained model is kept


OFFLINE = {name: "http://127.0.0.1:9" for name in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy")}


def _dry_run(argv, folder, datasets=None) -> tuple[int, str]:
    """The whole command up to where training would start (`--dry_run`), offline; (exit code, stderr).

    `datasets`: a datasets folder to read and write encoded caches in (default: a new one in `folder`). The
    demo fuzzing shares the session's: caches are keyed by content, and with a fresh folder each example
    generated and encoded the demo again (a dry run took 0.37 s instead of 0.07 s)."""
    out = ["--dry_run", "--datasets_dir", datasets or str(folder / "d"), "--saved_models_dir",
           str(folder / "s"), "--reports_dir", str(folder / "r")]
    err = io.StringIO()
    saved_env = {k: os.environ.get(k) for k in OFFLINE}
    os.environ.update(OFFLINE)  # a tfds download attempt goes to a closed local port, never out
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(list(argv) + out)
    finally:
        for k, v in saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return code, err.getvalue()


def _assert_clean_outcome(code, err, folder):
    assert code in (0, 2), (code, err)
    if code == 2:
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: ") and len(lines[0]) > len("error: "), err
    assert "Traceback" not in err
    saved = folder / "s"
    assert not saved.exists() or not [p for p in saved.iterdir() if p.is_dir() or p.suffix == ".lock"]


# Each flag with values that are mostly valid, so most fuzzed commands get
# past the parser into data loading and planning, plus edge and garbage ones.
FLAG_VALUES = {
    "--num_epochs": ["1", "2", "0", "-1"], "--eval_every": ["1", "5", "0"], "--batch_size": ["64", "0", "1"],
    "--embedding_size": ["8", "4 8", "8 8", "0", "2000000000"],
    "--layer_sizes": ["16", "none", "8 4", "0", "x"],
    "--learning_rate": ["0.1", "0.05 0.1", "0.1 0.1", "-1", "nan"],
    "--ks": ["5 50", "10 10 100", "0", "700"], "--temperature": ["0.1", "1 1", "0", "-1", "nan"],
    "--data_dir": ["/no/such"], "--timestamp_column": ["t"],
    "--seed": ["0", "7", "-1", "99999999999999999999"],
    "--seeds": ["1", "2", "0"], "--split": ["random", "time", "x"], "--split_seed": ["1", "-1"],
    "--max_ratings": ["1", "50", "2000", "0"], "--default_movie_length": ["90", "0", "nan"],
    "--additional_feature_sets": ["timestamp", "movie_genres", "movie_length", "None", "genre",
                                  "None timestamp", "user_age user_gender"],
    "--generate_recommendations_for_user": ["1", "0", "100000", "x" * 30],
    "--early_stopping": ["top_100", "recall_10", "auc"], "--patience": ["1", "0"],
    "--workers": ["1", "2", "0"], "--backend": ["local", "ray", "x"],
    "--ray_address": ["127.0.0.1:1", "auto", "x"], "--cpus_per_trial": ["1", "0"],
    "--alpha": ["0.05", "0.7", "nan"], "--verdict_metric": ["top_100", "recall_10", "top_7"],
    "--config": ["x.toml"], "--user_column": ["u"], "--dataset": ["demo", "csv", "grouplens", "nope"],
    "--retrain": [], "--no_baseline": [], "--ranking": [], "--exclude_seen": [],
    "--uniform_negatives": ["8", "-1", "99999999"],
    "--logq_correction": [], "--remove_accidental_hits": [], "--eval_users": ["10", "0"],
    "--users": ["u.csv"],
}
FLAG_WITH_VALUE = st.sampled_from(sorted(FLAG_VALUES)).flatmap(
    lambda flag: st.sampled_from(FLAG_VALUES[flag] or [""]).map(
        lambda value: [flag] + (value.split() if value else [])))
ARGV = st.lists(st.one_of(*[FLAG_WITH_VALUE] * 8, st.text(max_size=8).map(lambda text: [text])),
                max_size=6).map(lambda parts: [token for part in parts for token in part])


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(ARGV)
def test_fuzzed_command_lines_stop_before_training_with_one_line(tmp_path_factory, demo_datasets, argv):
    folder = tmp_path_factory.mktemp("cli")
    code, err = _dry_run(["--dataset", "demo", "--max_ratings", "3000"] + argv, folder, demo_datasets)
    _assert_clean_outcome(code, err, folder)


TOML_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-5, 5000),
              st.floats(allow_nan=True), st.text(max_size=6)),
    lambda inner: st.lists(inner, max_size=3), max_leaves=6)
SECTIONS = st.dictionaries(
    st.sampled_from(["data", "model", "train", "lengths", "experiment", "csv_columns", "grid", "ranking",
                     "compare", "run", "objective", "features"]),
    st.dictionaries(st.sampled_from(["num_epochs", "layer_sizes", "feature_sets", "dataset", "learning_rate",
                                     "split", "csv", "retrain", "user", "recommend_user", "embedding_size",
                                     "ks",
                                     "seed", "split_seed", "max_ratings", "workers", "x", "alpha", "metric",
                                     "backend", "cpus_per_trial", "storage", "temperature",
                                     "logq_correction", "uniform_negatives", "eval_users", "users"]),
                    st.one_of(TOML_VALUES, st.none()), max_size=4), max_size=4)


@settings(max_examples=150, deadline=None)
@given(SECTIONS)
def test_fuzzed_config_sections_only_ever_raise_user_errors(sections):
    """Refused with a UserInputError, or accepted with every value given where it was given (one value, or
    a grid dimension of several) and the registries' checks passed or refused in one line too."""
    try:
        config = build(sections)
    except UserInputError:
        return
    for section, values in canonical(sections).items():
        for key, value in values.items():
            if section in ("features", "experiment") and key in ("feature_sets", "baseline") or \
                    section == "features":
                continue
            holder = config if section == "experiment" else (
                config.data.csv_columns if section == "csv_columns" else getattr(config, section))
            grid = dict(config.grid).get((section, key))
            values_given = tuple(_as_tuples(v) for v in value) if isinstance(value, list) else ()
            assert (getattr(holder, key) == _as_tuples(value) or grid == values_given
                    or values_given == (getattr(holder, key),)), (section, key, value)
    try:
        check_experiment(config)
    except UserInputError:
        pass


def _as_tuples(value):
    return tuple(_as_tuples(v) for v in value) if isinstance(value, list) else value


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return {"nan": "nan", "inf": "inf", "-inf": "-inf"}.get(str(value), repr(value))
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_toml_value(v) for v in value if v is not None) + "]"
    return json.dumps(value)


def _toml_text(sections) -> str:
    return "\n".join(f"[{name}]\n" + "".join(f"{key} = {_toml_value(v)}\n" for key, v in values.items()
                                             if v is not None)
                     for name, values in sections.items())


@pytest.mark.slow
@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.one_of(st.text(max_size=200), SECTIONS.map(_toml_text)), st.binary(max_size=4))
def test_fuzzed_toml_files_stop_before_training_with_one_line(tmp_path_factory, demo_datasets, text, tail):
    folder = tmp_path_factory.mktemp("toml")
    path = folder / "x.toml"
    path.write_bytes(b"[data]\ndataset = \"demo\"\nmax_ratings = 3000\n" + text.encode() + tail)
    _assert_clean_outcome(*_dry_run(["--config", str(path)], folder, demo_datasets), folder)


CELLS = st.sampled_from(["1", "2", "3", "42", "", "nan", "inf", "1e30", "-1", "x", "4.5", "a,b", '"q"', " ",
                         "978300760", "99999999999999999999999"])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(CELLS, min_size=1, max_size=5), min_size=1, max_size=12),
       st.sampled_from(["user_id,item_id", "user_id,item_id,rating", "user_id,item_id,timestamp,rating",
                        "item_id,user_id", "user,item"]), st.booleans())
@pytest.mark.slow
def test_fuzzed_csv_files_stop_before_training_with_one_line(tmp_path_factory, rows, header, ranking):
    folder = tmp_path_factory.mktemp("csv")
    path = folder / "i.csv"
    path.write_text(header + "\n" + "".join(",".join(row) + "\n" for row in rows))
    argv = ["--dataset", "csv", "--interactions", str(path)] + (["--ranking"] if ranking else [])
    _assert_clean_outcome(*_dry_run(argv, folder), folder)


FIELDS = st.sampled_from(["1", "2", "3", "10", "7", "9", "999", "five", "", "nan", "inf", "978300760", "-4",
                          "123456789012345678901234567890", "M", "F", "x|y"])


@settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.lists(FIELDS, min_size=1, max_size=5), max_size=12),
       st.lists(st.lists(FIELDS, min_size=1, max_size=5), max_size=3),
       st.lists(st.lists(FIELDS, min_size=1, max_size=4), max_size=3))
@pytest.mark.slow
def test_fuzzed_grouplens_files_stop_before_training_with_one_line(tmp_path_factory, ratings, users, movies):
    from tests.conftest import ML1M_MOVIES, ML1M_USERS, write_ml1m

    folder = tmp_path_factory.mktemp("gl")
    data_dir = write_ml1m(folder / "ml-1m", movies=ML1M_MOVIES + [tuple(m) for m in movies],
                          users=ML1M_USERS + [tuple(u) for u in users], ratings=[tuple(r) for r in ratings])
    _assert_clean_outcome(*_dry_run(["--data_dir", data_dir, "--batch_size", "4"], folder), folder)


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
            "--embedding_size", "4", "--ks", "1", "2"]
    empty_csv = tmp_path / "empty.csv"
    empty_csv.write_text("user_id,item_id\n1,\n")
    duplicate_csv = tmp_path / "dup.csv"
    duplicate_csv.write_text("user_id,item_id\n1,2\n1,2\n")
    top_level = tmp_path / "top.toml"
    top_level.write_text("epochs = 3\n[train]\nnum_epochs = 1\n")
    latin1 = tmp_path / "latin1.toml"
    latin1.write_bytes(b"[data]\ndataset = \"d\xe9mo\"\n")
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
        (good + ["--seed", "-1"], "seed -1: expected a seed between 0 and 2147483647"),
        (good + ["--seed", "99999999999999999999"], "expected a seed between 0 and 2147483647"),
        (good + ["--split_seed", "-1"], "split_seed -1: expected a seed between 0 and 2147483647"),
        (good + ["--embedding_size", "2000000000"], "embedding_size 2000000000: expected at most 65,536"),
        (good + ["--generate_recommendations_for_user", "1" * 30],
         "is not in the dataset; valid ids are 1..9"),
        (good + ["--config", str(top_level)], "'epochs' stands outside any section"),
        (good + ["--config", str(latin1)], "not UTF-8 text (byte 19)"),
        (good + ["--dataset", "movielens/100k"], "holds ml-1m files but --dataset is movielens/100k"),
    ]
    for argv, message in bad:
        capsys.readouterr()
        assert main(argv + out) == 2, argv
        err = capsys.readouterr().err.strip()
        assert message in err and "\n" not in err and "Traceback" not in err, (argv, err)
    assert _tree_digest(tmp_path) == before
