"""What a careless user or a hand edit does, made to happen for real: one line and exit 2 before training
where it can be checked up front, one warning where the run can go on, a damaged folder trained again, and
nothing saved changed."""

import gzip
import json
import os
import shutil
import urllib.parse

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from recsys_ablate.cli import main
from tests.conftest import write_ml1m, write_ml100k
from tests.test_reliability import _tree_digest

# One test process (xdist) runs this module, so its module fixture trains once, not once per process.
pytestmark = pytest.mark.xdist_group("careless_input")

TINY = ["--num_epochs", "1", "--batch_size", "4", "--layer_sizes", "8", "--embedding_size", "4",
        "--ks", "1", "2"]


def _outputs(tmp_path, datasets=None):
    return ["--datasets_dir", datasets or str(tmp_path / "d"), "--saved_models_dir", str(tmp_path / "s"),
            "--reports_dir", str(tmp_path / "r")]


def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "Traceback" not in err, err
    return err


def _csv(path, header, rows) -> str:
    path.write_text(header + "\n" + "".join(",".join(map(str, row)) + "\n" for row in rows))
    return str(path)


def _interactions(tmp_path, name="i.csv"):
    return _csv(tmp_path / name, "user_id,item_id,timestamp,rating",
                [(f"u{u}", f"m{i}", 1000 + 7 * u + i, 1 + (u + i) % 5) for u in range(12) for i in range(8)
                 if (u + i) % 3])


@pytest.mark.parametrize("argv, toml, message", [
    (["--embedding_size", "16", "16", "16"], None, "embedding_size: 16 is given twice"),
    (["--layer_sizes", "32", "--layer_sizes", "32"], None, "layer_sizes: 32 is given twice"),
    ([], "[grid]\nlearning_rates = [0.1, 0.1]\n", "learning_rate: 0.1 is given twice"),
    ([], "[objective]\ntemperature = [1.0, 0.5, 1.0]\n", "temperature: 1 is given twice"),
    (["--ks", "10", "10", "100"], None, "ks 10 10 100: each K once"),
    (["--additional_feature_sets", "movie_genres", "--additional_feature_sets", "movie_genres"], None,
     "feature set movie_genres is given twice"),
])
def test_a_repeated_value_is_refused_instead_of_counting_one_model_twice(tmp_path, capsys, demo_datasets,
                                                                        argv, toml, message):
    """`--embedding_size 16 16 16` once reloaded one model three times and called it three seeds."""
    if toml:
        (tmp_path / "x.toml").write_text(toml)
        argv = argv + ["--config", str(tmp_path / "x.toml")]
    assert main(["--dataset", "demo", "--dry_run", *argv, *_outputs(tmp_path, demo_datasets)]) == 2
    assert message in _one_line(capsys)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("flag, value, column", [
    ("--timestamp_column", "timestmap", "timestmap"),
    ("--rating_column", "ratng", "ratng"),
])
def test_a_misspelled_column_is_named_with_the_header(tmp_path, capsys, flag, value, column):
    """A column the user named must exist: a misspelled timestamp column once made every timestamp 0."""
    path = _interactions(tmp_path)
    assert main(["--dataset", "csv", "--interactions", path, flag, value, "--split", "time",
                 "--additional_feature_sets", "timestamp", *TINY, *_outputs(tmp_path)]) == 2
    err = _one_line(capsys)
    assert f"no column '{column}' (columns found: user_id, item_id, timestamp, rating)" in err
    assert not (tmp_path / "s").exists()
    # Columns left at their default names may be absent.
    bare = _csv(tmp_path / "bare.csv", "user_id,item_id",
                [(f"u{u}", f"m{i}") for u in range(6) for i in range(5)])
    assert main(["--dataset", "csv", "--interactions", bare, "--dry_run", *TINY, *_outputs(tmp_path)]) == 0


DAMAGED = ["--dataset", "demo", "--max_ratings", "3000", "--num_epochs", "2", "--batch_size", "512",
           "--layer_sizes", "8", "--embedding_size", "4"]


@pytest.fixture(scope="module")
def trained_once(tmp_path_factory, demo_datasets):
    """One small model trained once for the damaged-folder cases (each damages a copy of it)."""
    root = tmp_path_factory.mktemp("trained_once")
    assert main([*DAMAGED, *_outputs(root, demo_datasets)]) == 0
    return root / "s"


def _trained_folder(tmp_path, trained_once, demo_datasets):
    """A copy of `trained_once`'s saved models under tmp_path (models are found by content, not path)."""
    shutil.copytree(trained_once, tmp_path / "s")
    argv = [*DAMAGED, *_outputs(tmp_path, demo_datasets)]
    (folder,) = [p for p in (tmp_path / "s").iterdir() if p.is_dir()]
    return argv, folder


@pytest.mark.parametrize("name, content, problem", [
    ("manifest.json", "null", "manifest.json is not a manifest"),
    ("manifest.json", '{"epoch": 2, "files": ["history.json"]}', "manifest.json is not a manifest"),
    ("manifest.json", '{"epoch": "2", "files": {}}', "manifest.json is not a manifest"),
    ("history.json", '{"epochs": 5}', "history.json: expected the keys"),
    ("history.json", "null", "history.json: not a JSON object"),
    ("history.json", '{"epochs": [{"epoch": "3", "loss": 1.0}], "evaluations": []}',
     "history.json: epochs is not a list of entries with a whole-number epoch"),
    ("history.json", "{not json", "history.json does not read as JSON"),
    ("config.json", "[]", "config.json does not hold an identity"),
    ("config.json", None, "config.json is missing"),
])
def test_a_damaged_model_folder_is_named_and_trained_again(tmp_path, capsys, trained_once, demo_datasets,
                                                          name, content, problem):
    """Valid JSON of the wrong shape, or a deleted config.json: a warning naming it, trained again; the
    report command says the model is not trained (one line) instead of a traceback."""
    argv, folder = _trained_folder(tmp_path, trained_once, demo_datasets)
    if content is None:
        os.remove(folder / name)
    else:
        (folder / name).write_text(content)
    assert main(["report", *argv]) == 2
    assert "1 of 1 models of this ablation are not trained" in _one_line(capsys)
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert f"warning: saved model {folder} is incomplete or corrupted ({problem}" in out, out
    assert "epoch 1/2" in out and "1 trained, 0 reloaded" in out
    assert main(argv) == 0 and "0 trained, 1 reloaded" in capsys.readouterr().out


def test_names_are_checked_before_training_and_long_ones_fit_the_filesystem(tmp_path, capsys):
    long_name = "a" * 200
    interactions = _interactions(tmp_path, f"{long_name}.csv")
    items = _csv(tmp_path / "items.csv", "item_id,cuisine",
                 [(f"m{i}", "x" if i % 2 else "y") for i in range(8)])
    declare = tmp_path / "features.toml"
    feature = "f" * 230
    declare.write_text(f'[features.{feature}]\nfile = "items"\ncolumn = "cuisine"\nkind = "categorical"\n'
                       '[features."größe"]\nfile = "items"\ncolumn = "cuisine"\nkind = "categorical"\n')
    base = ["--dataset", "csv", "--interactions", interactions, "--items", items, "--config", str(declare),
            *TINY, *_outputs(tmp_path)]
    assert main(base + ["--additional_feature_sets", "größe", "--dry_run"]) == 2
    assert "[features.größe]: the name must be a new identifier of ASCII letters" in _one_line(capsys)
    declare.write_text(f'[features.{feature}]\nfile = "items"\ncolumn = "cuisine"\nkind = "categorical"\n')
    assert main(base + ["--additional_feature_sets", feature]) == 0
    folders = [p.name for p in (tmp_path / "s").iterdir() if p.is_dir()]
    assert len(folders) == 2 and all(len(name.encode()) <= 200 for name in folders)
    assert main(base + ["--additional_feature_sets", feature]) == 0
    assert "0 trained, 2 reloaded" in capsys.readouterr().out


def test_a_user_id_with_a_slash_gets_its_dump_and_a_working_link(tmp_path, capsys):
    path = _csv(tmp_path / "i.csv", "user_id,item_id", [(u, f"m{i}") for u in ("team/alice", "bob#1", "c%3")
                                                         for i in range(6)])
    assert main(["--dataset", "csv", "--interactions", path, "--generate_recommendations_for_user",
                 "team/alice", *TINY, *_outputs(tmp_path)]) == 0
    dumps = sorted(p.name for p in (tmp_path / "r").glob("*recommendations*"))
    assert [name.split("_recommendations_")[1] for name in dumps] == ["userteam_2falice.csv",
                                                                       "userteam_2falice.json"]
    (report,) = (tmp_path / "r").glob("*.html")
    page = report.read_text()
    assert f'href="{urllib.parse.quote(dumps[1])}"' in page
    assert json.load(open(tmp_path / "r" / dumps[1]))["user_id"] == "team/alice"


def test_a_renamed_data_folder_reloads_its_models(tmp_path, capsys):
    folder = write_ml1m(tmp_path / "first-name")
    assert main(["--data_dir", folder, *TINY, *_outputs(tmp_path)]) == 0
    before = _tree_digest(tmp_path / "s")
    os.rename(folder, tmp_path / "second-name")
    capsys.readouterr()
    assert main(["--data_dir", str(tmp_path / "second-name"), *TINY, *_outputs(tmp_path)]) == 0
    assert "0 trained, 1 reloaded" in capsys.readouterr().out
    assert _tree_digest(tmp_path / "s") == before  # found by identity; its readable name kept


@pytest.mark.parametrize("argv, message", [
    (["--dataset", "demo", "--data_dir", "X"], "--data_dir X: --dataset demo reads no folder"),
    (["--dataset", "csv", "--interactions", "I", "--data_dir", "X"],
     "--data_dir X: --dataset csv reads no folder"),
])
def test_a_flag_the_dataset_would_ignore_is_refused(tmp_path, capsys, argv, message):
    assert main(argv + ["--dry_run", *_outputs(tmp_path)]) == 2
    assert message in _one_line(capsys)


def test_a_grouplens_folder_is_read_by_its_layout_unless_another_dataset_is_named(tmp_path, capsys):
    folder = write_ml100k(tmp_path / "ml-100k")
    assert main(["--data_dir", folder, "--dry_run", *TINY, *_outputs(tmp_path)]) == 0
    assert "GroupLens ml-100k folder" in capsys.readouterr().out
    assert main(["--dataset", "movielens/1m", "--data_dir", folder, "--dry_run", *_outputs(tmp_path)]) == 2
    assert "holds ml-100k files but --dataset is movielens/1m" in _one_line(capsys)


def test_a_blank_last_line_and_a_gzipped_csv_are_read(tmp_path, capsys):
    folder = write_ml1m(tmp_path / "ml-1m")
    with open(os.path.join(folder, "ratings.dat"), "a") as f:
        f.write("\n\n")
    assert main(["--data_dir", folder, "--dry_run", *TINY, *_outputs(tmp_path)]) == 0
    assert "12 ratings" in capsys.readouterr().out
    plain = _interactions(tmp_path)
    packed = tmp_path / "i.csv.gz"
    packed.write_bytes(gzip.compress(open(plain, "rb").read()))
    assert main(["--dataset", "csv", "--interactions", str(packed), "--dry_run", *TINY,
                 *_outputs(tmp_path)]) == 0
    assert "64 ratings" in capsys.readouterr().out
    packed.write_bytes(gzip.compress(open(plain, "rb").read())[:60])  # cut short, as a broken download is
    assert main(["--dataset", "csv", "--interactions", str(packed), "--dry_run", *_outputs(tmp_path)]) == 2
    assert "cannot be decompressed" in _one_line(capsys)


def test_k_at_the_catalogue_size_is_refused_and_odd_ratings_are_said(tmp_path, capsys):
    folder = write_ml1m(tmp_path / "ml-1m")  # 5 movies
    assert main(["--data_dir", folder, "--dry_run", *_outputs(tmp_path)]) == 2
    assert ("K 5: the catalogue has 5 items, so every item ranks in the top 5 and every model scores 1.0"
            in _one_line(capsys))
    path = _csv(tmp_path / "odd.csv", "user_id,item_id,rating",
                [(u, i, -3 if u == 1 else 1000) for u in range(6) for i in range(5)])
    assert main(["--dataset", "csv", "--interactions", path, "--dry_run", *TINY, *_outputs(tmp_path)]) == 0
    assert "warning: ratings range from -3 to 1000" in capsys.readouterr().out


def test_export_refuses_a_folder_holding_files_it_did_not_write(tmp_path, capsys):
    mine = tmp_path / "exports" / "baseline" / "scann"
    mine.mkdir(parents=True)
    (mine / "notes.txt").write_text("my notes")
    assert main(["export", str(tmp_path / "exports"), "--dataset", "demo", *_outputs(tmp_path)]) == 2
    assert (f"export FOLDER: {mine} exists and holds what export did not write (notes.txt)"
            in _one_line(capsys))
    assert (mine / "notes.txt").read_text() == "my notes" and not (tmp_path / "s").exists()


@pytest.fixture(scope="module")
def saved_folder(tmp_path_factory, demo_datasets):
    """One trained model folder, copied by each example of the fuzz test below."""
    tmp = tmp_path_factory.mktemp("saved")
    argv = ["--dataset", "demo", "--max_ratings", "3000", "--num_epochs", "2", "--batch_size", "512",
            "--layer_sizes", "8", "--embedding_size", "4", "--datasets_dir", demo_datasets,
            "--saved_models_dir", str(tmp / "s"), "--reports_dir", str(tmp / "r")]
    assert main(argv) == 0
    from recsys_ablate.cli import experiment_from_args, parse_args
    from recsys_ablate.ablation import plan_ablation

    plan = plan_ablation(experiment_from_args(parse_args(argv)), log=lambda *_: None)
    return plan.runs[0], tmp / "s"


JSON_VALUES = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(-3, 5), st.floats(allow_nan=False),
                                     st.text(max_size=4)),
                           lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                   st.dictionaries(st.sampled_from(
                                                       ["epoch", "files", "epochs", "evaluations", "loss",
                                                        "identity", "complete", "best_epoch"]), inner,
                                                       max_size=4)), max_leaves=8)


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.sampled_from(["manifest.json", "history.json", "config.json"]), JSON_VALUES)
def test_fuzzed_model_folder_files_are_damage_never_a_traceback(saved_folder, tmp_path_factory, name, value):
    from recsys_ablate.training.model_store import ModelFolder

    run, source = saved_folder
    root = tmp_path_factory.mktemp("copy")
    shutil.copytree(source, root / "s")
    folder = ModelFolder(str(root / "s"), run)
    with open(os.path.join(folder.path, name), "w") as f:
        json.dump(value, f)
    lines = []
    history = folder.saved_history(lines.append)
    assert history is None or history.complete  # never an exception
    assert (history is None) == bool(lines) and all("is incomplete or corrupted" in line for line in lines)
