"""Shuffled controls: a feature's values permuted across items, users or ratings, judged against it."""

import json

import numpy as np
import pytest

from recsys_ablate.ablation import check_experiment
from recsys_ablate.cli import main
from recsys_ablate.data.encoded import load_dataset
from recsys_ablate.errors import UserInputError
from recsys_ablate.features import FEATURES, FeatureContext, check_feature_sets, with_controls
from recsys_ablate.models.retrieval import build_model
from recsys_ablate.settings import DataConfig, ExperimentConfig, TrainingContent, build

from tests.test_own_data import FEATURE_TABLES, _sections


@pytest.fixture(scope="module")
def demo_encoded(demo_datasets):
    return load_dataset(DataConfig(dataset="demo", datasets_dir=demo_datasets, max_ratings=8000),
                        log=lambda *_: None)


def test_every_feature_has_a_control_and_the_flag_adds_one_arm_per_feature():
    config = check_experiment(ExperimentConfig(
        feature_sets=((), ("movie_genres",), ("timestamp", "movie_genres"), ("user_age",)),
        shuffled_controls=True))
    assert config.feature_sets == ((), ("movie_genres",), ("timestamp", "movie_genres"), ("user_age",),
                                   ("movie_genres~shuffled",), ("timestamp~shuffled",),
                                   ("user_age~shuffled",))
    # A control given by hand is not added twice; the id features have none.
    assert with_controls(((), ("movie_genres~shuffled",), ("movie_genres",))) == (
        (), ("movie_genres~shuffled",), ("movie_genres",))
    check_feature_sets([("movie_length~shuffled",)])
    with pytest.raises(UserInputError, match=r"unknown feature 'user_id~shuffled'.*NAME~shuffled"):
        check_feature_sets([("user_id~shuffled",)])


def test_an_item_control_sees_another_items_values_in_the_same_distribution(demo_encoded):
    context = FeatureContext(demo_encoded, 8, None)
    base = FEATURES["movie_genres"](context)
    control = FEATURES["movie_genres~shuffled"](context)
    assert control.inputs == ("movie",) and control.width(8) == base.width(8)
    layer = control.layer()
    rows = np.arange(demo_encoded.num_movies, dtype=np.int32)
    layer({"movie": rows})
    # Same weights in the feature's own layer: the control's output for movie i is the feature's for the
    # movie whose genres it was given, and every movie's genres are given to exactly one movie.
    inner = layer.inner
    direct = inner({"movie": rows}).numpy()
    permuted = layer({"movie": rows}).numpy()
    order = layer.order.numpy()[:-1]
    assert sorted(order) == list(rows) and (order != rows).mean() > 0.9
    np.testing.assert_allclose(permuted, direct[order])
    # The unknown-movie row stays unknown (the exported model's out-of-vocabulary row).
    assert layer.order.numpy()[-1] == demo_encoded.num_movies


def test_an_interaction_control_reads_the_column_permuted_across_ratings(demo_encoded, demo_datasets):
    inputs = demo_encoded.query_inputs(slice(None), ("user", "timestamp~shuffled"))
    assert set(inputs) == {"user", "timestamp~shuffled"}
    shuffled = inputs["timestamp~shuffled"]
    assert sorted(shuffled) == sorted(demo_encoded.timestamp)
    assert (shuffled != demo_encoded.timestamp).mean() > 0.9
    # Fixed by the feature's name: the same in another process or a reloaded dataset.
    again = load_dataset(DataConfig(dataset="demo", datasets_dir=demo_datasets, max_ratings=8000),
                         log=lambda *_: None)
    np.testing.assert_array_equal(again.query_inputs(slice(None))["timestamp~shuffled"], shuffled)
    model = build_model(("timestamp~shuffled",), FeatureContext(demo_encoded, 8, None), (8,), 1)
    assert model.query_tower.input_keys == ("timestamp~shuffled", "user")  # per example, not per user


def test_declared_features_get_controls_that_build(tmp_path):
    config = check_experiment(build({**_sections(tmp_path), "experiment": {
        "feature_sets": [[name] for name in FEATURE_TABLES], "shuffled_controls": True}}))
    assert [f for f in config.feature_sets if f and f[0].endswith("~shuffled")] == [
        (name + "~shuffled",) for name in FEATURE_TABLES]
    data = load_dataset(config.data, log=lambda *_: None)
    for name in FEATURE_TABLES:
        model = build_model((name + "~shuffled",), FeatureContext(data, 8, None), (8,), 1)
        expected = {"device": ("device~shuffled", "user"), "household": ("user",)}.get(name, ("user",))
        assert model.query_tower.input_keys == expected
    device = data.query_inputs(slice(None))["device~shuffled"]
    assert sorted(device) == sorted(data.columns["device"])
    # A control's identity differs from its feature's; each is fixed by the content.
    runs = {r.features: r for r in config.retrieval_runs(TrainingContent("same-data"))}
    assert runs[("device~shuffled",)].identity() != runs[("device",)].identity()


@pytest.mark.parametrize("flags", [["--shuffled_controls", "--additional_feature_sets", "movie_genres"],
                                   ["--additional_feature_sets", "timestamp~shuffled"]])
def test_export_refuses_controls_before_training(flags, tmp_path, capsys, demo_datasets):
    outputs = ["--saved_models_dir", str(tmp_path / "s"), "--reports_dir", str(tmp_path / "r")]
    assert main(["export", str(tmp_path / "out"), "--dataset", "demo", *flags, "--datasets_dir",
                 demo_datasets, *outputs]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("error: export: shuffled controls (--shuffled_controls, NAME~shuffled) are for judging a "
                   "feature, not for serving; export the feature sets without them")
    assert not (tmp_path / "s").exists()


@pytest.mark.slow
def test_genres_beat_their_shuffled_control_on_the_demo_data(tmp_path, capsys, demo_datasets):
    argv = ["--dataset", "demo", "--additional_feature_sets", "movie_genres", "--shuffled_controls",
            "--seeds", "5", "--num_epochs", "20", "--eval_every", "20", "--workers", "2",
            "--datasets_dir", demo_datasets, "--saved_models_dir", str(tmp_path / "s"),
            "--reports_dir", str(tmp_path / "r")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Against its shuffled control on top-100" in out
    (path,) = (tmp_path / "r").glob("*.json")
    document = json.loads(path.read_text())
    (control,) = document["controls"]
    assert control["feature_set"] == "movie_genres" and control["control"] == "movie_genres~shuffled"
    assert control["verdict"] == "better" and control["gain_exceeds_control"]
    assert control["p_adjusted"] < 0.05 and control["low"] > 0 and control["seeds"] == [42, 43, 44, 45, 46]
    # The control itself is an arm against the baseline, in the same family.
    labels = [c["feature_set"] for c in document["comparisons"] if c["verdict_metric"]]
    assert labels == ["movie_genres", "movie_genres~shuffled"]
    assert control["family"] == document["family"]
    assert document["family"].startswith("3 comparisons: each feature set against the id-only baseline, and "
                                         "each feature against its shuffled control")
    page = path.with_suffix(".html").read_text()
    assert "Information or presence: each feature against its shuffled control" in page
    assert "its gain is not shown to exceed" not in page
