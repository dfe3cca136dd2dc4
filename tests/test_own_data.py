"""Your own data: real exports read as they come, feature columns declared in TOML, bad files at scale."""

import glob
import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from recsys_ablate.cli import main
from recsys_ablate.ablation import check_experiment
from recsys_ablate.settings import build, load_toml
from recsys_ablate.data.csv_source import read_csv
from recsys_ablate.settings import CsvColumns
from recsys_ablate.data.encoded import load_dataset
from recsys_ablate.settings import DataConfig
from recsys_ablate.data.generate import write_recipes
from recsys_ablate.errors import UserInputError
from recsys_ablate.features import FEATURES, FeatureContext

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LONG = "x" * 300_000  # over Python csv's default 128 KiB field limit


def _export(tmp_path):
    """A recipe-site export as real ones come: BOM, unnamed index, ISO dates, multi-line and long fields."""
    interactions = tmp_path / "interactions.csv"
    interactions.write_bytes(
        "\ufeff,user_id,recipe_id,rating,dateLastModified,device,review\n"
        '0,u1,r1,5," 2019-03-01T10:00:00.5+02:00 ",phone,"great\nreally"\n'
        f"1,u2,r2,4,2019-03-01 10:00:00,web,{LONG}\n"
        "2,u1,r2,3,1551434400,web,ok\n"
        "3,u3,r1,4,2019-03-02,,fine\n"
        "4,u3,r3,2,2019-03-02T23:59:59Z,tablet,\"multi\nline\nreview\"\n".encode("utf-8"))
    recipes = tmp_path / "recipes.csv"
    recipes.write_text("recipe_id,recipe_name,ingredients,minutes,description\n"
                       "r1,Pancakes,egg^flour^milk,20,fluffy breakfast pancakes\n"
                       "r2,Soup,water^salt,,hot soup\n"
                       "r3,Salad,lettuce^salt,5,\"green\nsalad\"\n", encoding="utf-8")
    users = tmp_path / "users.csv"
    users.write_text("user_id,household\nu1,2\nu2,4\nu3,1\nu4,3\n", encoding="utf-8")
    return str(interactions), str(recipes), str(users)


FEATURE_TABLES = {
    "ingredients": {"file": "items", "column": "ingredients", "kind": "multi_valued", "separator": "^"},
    "minutes": {"file": "items", "column": "minutes", "kind": "numeric", "buckets": 2, "default": 30},
    "description": {"file": "items", "column": "description", "kind": "text", "default": ""},
    "household": {"file": "users", "column": "household", "kind": "numeric"},
    "device": {"file": "interactions", "column": "device", "kind": "categorical", "default": "unknown"},
}


def _sections(tmp_path, **features):
    interactions, recipes, users = _export(tmp_path)
    return {"data": {"dataset": "csv", "interactions": interactions, "items": recipes, "users": users,
                     "datasets_dir": str(tmp_path / "d")},
            "csv_columns": {"item": "recipe_id", "timestamp": "dateLastModified",
                            "item_title": "recipe_name"},
            "features": features or FEATURE_TABLES}


def test_a_real_export_is_read_as_it_is(tmp_path):
    config = build(_sections(tmp_path))
    data = load_dataset(config.data, log=lambda *_: None)
    assert list(data.user_ids[data.user]) == ["u1", "u2", "u1", "u3", "u3"]
    assert list(data.movie_titles[data.movie]) == ["Pancakes", "Soup", "Soup", "Pancakes", "Salad"]
    # ISO-8601 with a zone and fractional seconds, without a zone (UTC), seconds, a date, "Z".
    assert list(data.timestamp) == [1551427200, 1551434400, 1551434400, 1551484800, 1551571199]
    assert list(data.user_ids) == ["u1", "u2", "u3", "u4"]  # the users file's user without ratings too
    ingredients = {data.movie_ids[i]: {c for c in data.columns["ingredients"][i] if c} for i in range(3)}
    assert len(ingredients["r2"] & ingredients["r3"]) == 1  # salt, shared
    assert list(data.columns["minutes"]) == [20.0, 30.0, 5.0]  # the empty cell took the default
    assert list(data.columns["household"]) == [2.0, 4.0, 1.0, 3.0]
    device = data.columns["device"]
    assert device[1] == device[2] and len(set(device)) == 4  # web twice; phone, tablet, unknown


def test_declared_features_are_registered_like_built_in_ones(tmp_path):
    config = check_experiment(build({**_sections(tmp_path), "experiment": {
        "feature_sets": [[name] for name in FEATURE_TABLES] + [list(FEATURE_TABLES)]}}))
    data = load_dataset(config.data, log=lambda *_: None)
    from recsys_ablate.models.retrieval import build_model

    for name in FEATURE_TABLES:
        cls = FEATURES[name]
        assert cls.name == name and cls.tower == ("candidate" if name in ("ingredients", "minutes",
                                                                            "description") else "query")
        layer = cls(FeatureContext(data, 8, None)).layer()
        key = cls.inputs[0]
        out = layer({key: data.columns[name][:3]} if key == name else {key: np.arange(3, dtype=np.int32)})
        assert out.shape[0] == 3 and np.isfinite(out.numpy()).all()
    model = build_model(tuple(FEATURE_TABLES), FeatureContext(data, 8, None), (8,), 1)
    assert model.query_tower.input_keys == ("device", "user")
    assert model.candidate_tower.input_keys == ("movie",)  # one run per distinct item of a batch
    runs = {run.features: run for run in config.retrieval_runs()}
    from recsys_ablate.settings import TrainingContent

    base = [r for f, r in runs.items() if not f][0]
    minutes = {**FEATURE_TABLES["minutes"], "buckets": 3}
    changed = build({**_sections(tmp_path, **{**FEATURE_TABLES, "minutes": minutes}),
                            "experiment": {"feature_sets": [["minutes"], ["device"]]}})
    content = TrainingContent("same-data")
    identity = {r.features: r.identity() for r in
                [dataclasses_replace(r, content) for r in config.retrieval_runs()]}
    other = {r.features: r.identity()
             for r in [dataclasses_replace(r, content) for r in changed.retrieval_runs()]}
    assert other[()] == identity[()] and other[("device",)] == identity[("device",)]
    assert other[("minutes",)] != identity[("minutes",)]  # a changed declaration retrains only its models
    assert base.features == ()


def dataclasses_replace(run, content):
    import dataclasses

    return dataclasses.replace(run, content=content)


@pytest.mark.parametrize("features, message", [
    ({"household": {"file": "users", "column": "household", "kind": "numeric"}}, None),
    ({"minutes": {"file": "items", "column": "minutes", "kind": "numeric"}},
     r"--items \S+recipes.csv line 3: empty value in column 'minutes' \(feature minutes\); fill it or "
     "declare a default"),
    ({"rating2": {"file": "interactions", "column": "review", "kind": "numeric", "default": 0}},
     r"--interactions \S+interactions.csv line 2: column 'review' \(feature rating2\) is 'great\\nreally'; "
     "expected a finite number"),
    ({"timestamp": {"file": "items", "column": "minutes", "kind": "numeric"}},
     r"\[features.timestamp\]: the name must be a new identifier of ASCII letters, digits and _ \(a letter "
     r"first\), not a built-in feature"),
    ({"tags": {"file": "items", "column": "nope", "kind": "categorical"}},
     r"--items \S+: no column 'nope' \(columns found: recipe_id, recipe_name, ingredients, minutes, "
     "description\\)"),
    ({"tags": {"file": "items", "column": "ingredients", "kind": "multi_valued"}},
     r"\[features.tags\]: a multi_valued column needs its separator"),
    ({"tags": {"file": "items", "column": "ingredients", "kind": "list"}},
     r"\[features.tags\] kind = 'list': expected one of categorical, multi_valued, text, numeric"),
])
def test_declared_column_errors_name_file_line_and_column(tmp_path, features, message):
    if message is None:
        build(_sections(tmp_path, **features))
        return
    with pytest.raises(UserInputError, match=message):
        config = build(_sections(tmp_path, **features))
        load_dataset(config.data, log=lambda *_: None)


def _own_toml(tmp_path, extra: str = "") -> str:
    """An experiment TOML over the export: its columns named, ingredients and device declared."""
    interactions, recipes, users = _export(tmp_path)
    toml = tmp_path / "own.toml"
    toml.write_text(f"""
[data]
dataset = "csv"
interactions = "{interactions}"
items = "{recipes}"
users = "{users}"
[csv_columns]
item = "recipe_id"
timestamp = "dateLastModified"
item_title = "recipe_name"
[features.ingredients]
file = "items"
column = "ingredients"
kind = "multi_valued"
separator = "^"
[features.device]
file = "interactions"
column = "device"
kind = "categorical"
default = "unknown"
{extra}""")
    return str(toml)


def test_a_run_with_declared_features_from_a_toml_file(tmp_path, capsys):
    toml = _own_toml(tmp_path, "[train]\nnum_epochs = 2\neval_every = 1\nbatch_size = 4\nks = [1, 2]\n")
    args = ["--config", str(toml), "--additional_feature_sets", "ingredients", "device",
            "--datasets_dir", str(tmp_path / "d"), "--saved_models_dir", str(tmp_path / "s"),
            "--reports_dir", str(tmp_path / "r")]
    assert main(args) == 0
    summary = json.load(open(glob.glob(str(tmp_path / "r" / "*.json"))[0]))
    assert [s["features"] for s in summary["feature_sets"]] == [[], ["device", "ingredients"]]
    assert all(len(s["models"]) == 1 for s in summary["feature_sets"])
    assert main(args) == 0
    assert "2 reloaded" in capsys.readouterr().out


def test_generated_recipes_are_deterministic(tmp_path):
    # The same seed writes the same bytes (at a tenth of the size: the next test checks the full size).
    first, second = [write_recipes(str(tmp_path / name), users=600, recipes=600) for name in ("a", "b")]
    for role in first:
        assert _sha(first[role]) == _sha(second[role])
    config = build({**load_toml(os.path.join(ROOT, "experiments", "recipes.toml")),
                    "data": {"dataset": "csv", **first, "datasets_dir": str(tmp_path / "d")}})
    data = load_dataset(config.data, log=lambda *_: None)
    assert data.num_users == 600 and data.num_movies == 600 and len(data.user) == 3600


@pytest.mark.slow
def test_the_recipes_example_has_its_documented_size(recipes):
    files, datasets = recipes
    config = build({**load_toml(os.path.join(ROOT, "experiments", "recipes.toml")),
                    "data": {"dataset": "csv", **files, "datasets_dir": datasets}})
    data = load_dataset(config.data, log=lambda *_: None)
    assert data.num_users == 6000 and data.num_movies == 6000 and len(data.user) == 36_000


def _sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def _big_ratings(path, rows, bad_row=None):
    rng = np.random.default_rng(0)
    table = pa.table({"user_id": rng.integers(1, 5000, rows), "item_id": np.arange(rows) % 20_000,
                      "timestamp": np.arange(rows, dtype=np.int64) + 10**9})
    pa_csv.write_csv(table, str(path))
    if bad_row is not None:  # an unquoted comma in one line near the end
        with open(path, "r+b") as f:
            lines = f.read().split(b"\n")
            lines[bad_row] = lines[bad_row] + b",1"
            f.seek(0)
            f.write(b"\n".join(lines))
    return str(path)


@pytest.mark.slow
def test_one_malformed_line_in_a_big_file_is_named_before_training(tmp_path, capsys):
    path = _big_ratings(tmp_path / "big.csv", 2_000_000, bad_row=1_999_990)
    start = time.perf_counter()
    assert main(["--dataset", "csv", "--interactions", path, "--datasets_dir", str(tmp_path / "d"),
                 "--saved_models_dir", str(tmp_path / "s"), "--reports_dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "Traceback" not in err
    assert f"{path}: line 1999991 has 4 fields but the header names 3" in err
    assert time.perf_counter() - start < 60
    assert not os.path.exists(tmp_path / "s")  # stopped before training: no model folder
    assert not glob.glob(str(tmp_path / "d" / "encoded" / "*"))


@pytest.mark.slow
def test_interrupted_encoding_leaves_no_half_written_cache(tmp_path):
    path = _big_ratings(tmp_path / "big.csv", 4_000_000)
    datasets = tmp_path / "d"
    args = ["--dataset", "csv", "--interactions", path, "--datasets_dir", str(datasets),
            "--saved_models_dir", str(tmp_path / "s"), "--reports_dir", str(tmp_path / "r"),
            "--num_epochs", "1", "--dry_run"]
    process = subprocess.Popen([sys.executable, "-m", "recsys_ablate", *args], cwd=ROOT,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    line = process.stdout.readline()
    assert line.startswith("encoding big"), line
    time.sleep(0.5)  # inside the reading and encoding
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130, err
    assert not glob.glob(str(datasets / "encoded" / "*")), "a cache (or its temporary file) was left"
    assert main(args) == 0  # the re-run here (a process of its own only where a signal needs one)
    cached = glob.glob(str(datasets / "encoded" / "*.npz"))
    assert len(cached) == 1
    data = load_dataset(DataConfig(dataset="csv", interactions=path, datasets_dir=str(datasets),
                                 csv_columns=CsvColumns()), log=lambda *_: None)
    assert len(data.user) == 4_000_000


def test_null_like_words_are_values_not_missing(tmp_path):
    path = tmp_path / "i.csv"
    path.write_text("user_id,item_id\nNA,null\nnan,NULL\n", encoding="utf-8")
    raw = read_csv(str(path))
    assert sorted(raw.ratings["user_id"].values) == ["NA", "nan"]


@pytest.mark.slow
def test_recipes_example_finds_the_planted_features_and_no_others(tmp_path, recipes, recipes_models):
    """experiments/recipes.toml end to end (5 seeds): the verdicts' statistics on a known truth."""
    files, datasets = recipes
    reports = tmp_path / "r"
    assert main(["--config", os.path.join(ROOT, "experiments", "recipes.toml"), "--workers", "2",
                 "--interactions", files["interactions"], "--items", files["items"],
                 "--users", files["users"], "--datasets_dir", datasets,
                 "--saved_models_dir", recipes_models, "--reports_dir", str(reports)]) == 0
    summary = json.load(open(glob.glob(str(reports / "*.json"))[0]))
    verdicts = {c["feature_set"]: c["verdict"] for c in summary["comparisons"] if c["verdict_metric"]}
    assert summary["verdict_metric"] == "top_100" and len(verdicts) == 7
    assert verdicts["ingredients"] == "better" and verdicts["region"] == "better"
    for name in ("minutes", "tags", "calories", "household", "device"):
        assert verdicts[name] in ("no evidence", "worse"), verdicts  # never "better"


@pytest.mark.parametrize("early_stopping", [False, True])
def test_eval_users_samples_during_training_and_the_final_numbers_use_everyone(
        tmp_path, capsys, early_stopping, demo_datasets):
    args = ["--dataset", "demo", "--num_epochs", "4", "--eval_every", "1", "--eval_users", "100",
            "--datasets_dir", demo_datasets, "--saved_models_dir", str(tmp_path / "s"),
            "--reports_dir", str(tmp_path / "r")] + (["--early_stopping", "top_100", "--patience", "1"]
                                                       if early_stopping else [])
    assert main(args) == 0
    folder = glob.glob(str(tmp_path / "s" / "*"))[0]
    history = json.load(open(os.path.join(folder, "history.json")))
    ranks = np.load(os.path.join(folder, "ranks.npz"))
    data = load_dataset(DataConfig(dataset="demo", datasets_dir=demo_datasets), log=lambda *_: None)
    everyone = len(np.unique(data.user[data.validation]))
    kept = history["best_epoch"] or history["evaluations"][-1]["epoch"]
    for evaluation in history["evaluations"]:
        assert evaluation["validation_users"] == (everyone if evaluation["epoch"] == kept else 100)
    assert np.array_equal(ranks["rows"], data.validation)
    from recsys_ablate.evaluation.metrics import retrieval_metrics, compute

    final = compute(retrieval_metrics((100,)), ranks["ranks"], data.user[data.validation])
    kept_metrics = next(e for e in history["evaluations"] if e["epoch"] == kept)
    assert final["top_100"] == pytest.approx(kept_metrics["top_100"], abs=1e-9)
    assert f"fixed sample of 100 of the {everyone:,} validation users" in capsys.readouterr().out


def test_export_of_a_model_with_an_interaction_feature_is_refused_before_training(tmp_path, capsys):
    toml = _own_toml(tmp_path)
    assert main(["export", str(tmp_path / "out"), "--config", str(toml),
                 "--additional_feature_sets", "device", "--datasets_dir", str(tmp_path / "d"),
                 "--saved_models_dir", str(tmp_path / "s"),
                 "--reports_dir", str(tmp_path / "r")]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: export: device read a column of each interaction, but the exported query model "
                   "takes only user_id and timestamp; export feature sets without them")
    assert not os.path.exists(tmp_path / "s")


FEATURE_KEYS = {
    "file": st.sampled_from(["items", "users", "interactions", "movies", ""]),
    "column": st.sampled_from(["c", "user_id", "item_id", "nope", ""]),
    "kind": st.sampled_from(["categorical", "multi_valued", "text", "numeric", "list"]),
    "separator": st.sampled_from(["|", "^", ",", "", None]),
    "zscore": st.booleans(), "buckets": st.integers(-1, 5), "log": st.booleans(),
    "default": st.one_of(st.none(), st.sampled_from(["0", "x", ""]), st.floats(allow_nan=True)),
    "max_tokens": st.integers(-1, 50), "junk": st.integers(),
}
FEATURE_TABLE = st.fixed_dictionaries({}, optional=FEATURE_KEYS)
CELL = st.sampled_from(["1", "2.5", "", "nan", "-3", "x", "a|b", "a^b^b", " ", "1e30", "NA"])


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.dictionaries(st.sampled_from(["f1", "f2", "timestamp", "None", "9x"]), FEATURE_TABLE, max_size=2),
       st.lists(st.tuples(CELL, CELL), min_size=2, max_size=6))
def test_fuzzed_declared_features_build_or_fail_with_one_user_error(tmp_path_factory, tables, cells):
    """Any declaration over any cells: the towers build and run, or a UserInputError (never a traceback)."""
    from recsys_ablate.models.retrieval import build_model

    folder = tmp_path_factory.mktemp("declared")
    rows = "".join(f"u{i % 3},i{i},{interaction}\n" for i, (interaction, _) in enumerate(cells))
    (folder / "i.csv").write_text("user_id,item_id,c\n" + rows)
    (folder / "items.csv").write_text("item_id,c\n" + "".join(f"i{i},{item}\n" for i, (_, item) in
                                                              enumerate(cells)))
    (folder / "users.csv").write_text("user_id,c\nu0,1\nu1,x\nu2,\n")
    sections = {"data": {"dataset": "csv", "interactions": str(folder / "i.csv"),
                         "items": str(folder / "items.csv"), "users": str(folder / "users.csv"),
                         "datasets_dir": str(folder / "d")},
                "features": tables, "experiment": {"feature_sets": [[name] for name in tables]}}
    try:
        config = build(sections)
        data = load_dataset(config.data, log=lambda *_: None)
    except UserInputError as err:
        assert "\n" not in str(err)
        event("refused")
        return
    event("built")
    features = tuple(f.name for f in config.data.features)
    model = build_model(features, FeatureContext(data, 4, None), (4,), 1)
    rows = np.arange(len(data.user))
    queries = model.query_tower(data.query_inputs(rows))
    candidates = model.candidate_embeddings()
    assert np.isfinite(queries.numpy()).all() and np.isfinite(candidates.numpy()).all()


def test_eval_users_with_early_stopping_evaluates_everyone_once_when_the_kept_epoch_is_the_last(
        tmp_path, monkeypatch, demo_datasets):
    """The last epoch's evaluation already used every validation user; it is not repeated."""
    from recsys_ablate.evaluation import catalogue

    calls = []
    evaluate = catalogue.evaluate

    def counted(model, data, examples, *args, **kwargs):
        calls.append(len(examples.rows))
        return evaluate(model, data, examples, *args, **kwargs)

    monkeypatch.setattr(catalogue, "evaluate", counted)
    assert main(["--dataset", "demo", "--num_epochs", "1", "--eval_every", "1", "--eval_users", "100",
                 "--early_stopping", "top_100", "--datasets_dir", demo_datasets,
                 "--saved_models_dir", str(tmp_path / "s"), "--reports_dir", str(tmp_path / "r")]) == 0
    data = load_dataset(DataConfig(dataset="demo", datasets_dir=demo_datasets), log=lambda *_: None)
    assert calls == [len(data.validation)]
