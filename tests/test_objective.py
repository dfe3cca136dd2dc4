"""The objective's options from the command line and TOML: trained, named, identified, reloaded."""

import glob
import json
import os

import pytest

from recsys_ablate.cli import main
from recsys_ablate.settings import ModelConfig, ObjectiveConfig, TrainConfig, TrainingContent, build


def _args(tmp_path, datasets, *extra):
    return ["--dataset", "demo", "--max_ratings", "4000", "--num_epochs", "2", "--eval_every", "1",
            "--layer_sizes", "8", "--embedding_size", "8", "--batch_size", "256",
            "--datasets_dir", datasets, "--saved_models_dir", str(tmp_path / "s"),
            "--reports_dir", str(tmp_path / "r"), *extra]


def test_objective_options_train_and_reload_under_their_own_identity(tmp_path, capsys, demo_datasets):
    options = ["--temperature", "0.2", "--logq_correction", "--remove_accidental_hits",
               "--uniform_negatives", "32"]
    assert main(_args(tmp_path, demo_datasets)) == 0
    assert main(_args(tmp_path, demo_datasets, *options)) == 0
    folders = sorted(os.path.basename(p) for p in glob.glob(str(tmp_path / "s" / "*")))
    assert len(folders) == 2 and any("_t0.2_logq_noacc_u32_" in f for f in folders)
    folder = next(f for f in folders if "_logq" in f)
    config = json.load(open(tmp_path / "s" / folder / "config.json"))["config"]
    assert config["objective"] == {"temperature": 0.2, "logq_correction": True,
                                   "remove_accidental_hits": True, "uniform_negatives": 32}
    history = json.load(open(tmp_path / "s" / folder / "history.json"))
    assert history["complete"] and all(e["loss"] > 0 for e in history["epochs"])
    summary = json.load(open(max(glob.glob(str(tmp_path / "r" / "*.json")), key=os.path.getmtime)))
    assert "temperature 0.2, logQ correction, accidental hits removed, 32 uniform negatives" in (
        summary["settings"]["loss"])
    capsys.readouterr()
    assert main(_args(tmp_path, demo_datasets, *options)) == 0
    assert "1 models: 0 trained, 1 reloaded." in capsys.readouterr().out


def test_the_default_objective_leaves_identities_as_they_were():
    """Spelled out or left out, TFRS's defaults are one identity (models saved before stay valid:
    test_identity.py's fixture from older code reloads); any other value is another model."""
    config = build({"data": {"dataset": "demo"}})
    run = config.retrieval_runs(TrainingContent("f"))[0]
    assert run.objective == ObjectiveConfig()
    changed = build({"data": {"dataset": "demo"}, "objective": {"temperature": 0.5}})
    assert changed.retrieval_runs(TrainingContent("f"))[0].identity() != run.identity()
    toml_too = build({"data": {"dataset": "demo"}, "objective": {"temperature": 1.0}})
    assert toml_too.retrieval_runs(TrainingContent("f"))[0].identity() == run.identity()


def test_objective_lists_are_a_grid_from_toml_and_flags(tmp_path):
    """Every combination, in the fields' order, from TOML lists or repeated flag values alike."""
    from recsys_ablate.cli import experiment_from_args, parse_args

    toml = tmp_path / "o.toml"
    toml.write_text('[data]\ndataset = "demo"\n[objective]\nuniform_negatives = [0, 64]\n'
                    'temperature = [1.0, 0.2]\n')
    from_toml = experiment_from_args(parse_args(["--config", str(toml)]))
    assert [(o.temperature, o.uniform_negatives) for o in from_toml.objectives] == [
        (1.0, 0), (1.0, 64), (0.2, 0), (0.2, 64)]  # temperature nests outside
    from_flags = experiment_from_args(parse_args(["--dataset", "demo", "--temperature", "1", "0.2",
                                              "--uniform_negatives", "0", "64"]))
    assert from_flags.objectives == from_toml.objectives
    assert len(from_flags.retrieval_runs(TrainingContent("f"))) == 4 and len(from_flags.cells()) == 4
    both = experiment_from_args(parse_args(["--dataset", "demo", "--logq_correction", "off", "on",
                                        "--remove_accidental_hits"]))
    assert [(o.logq_correction, o.remove_accidental_hits) for o in both.objectives] == [(False, True),
                                                                                       (True, True)]


def test_bad_objective_values_are_one_line_errors(tmp_path, capsys):
    toml = tmp_path / "o.toml"
    for argv, message in (
            (["--logq_correction", "maybe"], "error: --logq_correction maybe: expected on or off"),
            (["--temperature", "1", "-0.5"], "error: temperature -0.5: expected a positive number"),
            (["--config", str(toml)], "error: temperature = []: give one value or a list of values")):
        toml.write_text('[data]\ndataset = "demo"\n[objective]\ntemperature = []\n')
        assert main(["--dataset", "demo", "--dry_run", "--datasets_dir", str(tmp_path / "d"), *argv]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(message) and "\n" not in err, err


@pytest.mark.slow
def test_each_objective_is_compared_with_the_defaults_of_its_features(tmp_path, capsys, demo_datasets):
    """Two feature sets x two temperatures, 2 seeds: the features are judged against ids alone under
    TFRS's defaults, each other temperature against the defaults with the same features; labels say
    what varies; a second run reloads every cell."""
    argv = _args(tmp_path, demo_datasets, "--seeds", "2", "--additional_feature_sets", "movie_genres",
                 "--temperature", "1", "0.5")
    assert main(argv) == 0
    summary = json.load(open(max(glob.glob(str(tmp_path / "r" / "*.json")), key=os.path.getmtime)))
    labels = [f["label"] for f in summary["feature_sets"]]
    assert labels == ["baseline (ids only) | TFRS defaults", "baseline (ids only) | temperature 0.5",
                      "movie_genres | TFRS defaults", "movie_genres | temperature 0.5"]
    pairs = {(c["feature_set"], c["baseline"]) for c in summary["comparisons"]}
    assert pairs == {("baseline (ids only) | temperature 0.5", "baseline (ids only) | TFRS defaults"),
                     ("movie_genres | TFRS defaults", "baseline (ids only) | TFRS defaults"),
                     ("movie_genres | temperature 0.5", "movie_genres | TFRS defaults")}
    assert "each feature set against the id-only baseline of its grid cell and each objective against " \
           "TFRS's defaults with the same features and architecture" in summary["family"]
    assert {f["cell"]["objective"]["temperature"] for f in summary["feature_sets"]} == {1.0, 0.5}
    # Every metric, the trade-off ones included, is compared for each pair.
    assert {c["metric"] for c in summary["comparisons"]} >= {"top_100", "tail_100", "coverage_100",
                                                            "popularity_100"}
    out = capsys.readouterr().out
    assert "Trade-off against the baseline" in out
    assert main(argv) == 0
    assert "8 models: 0 trained, 8 reloaded." in capsys.readouterr().out


def test_without_the_default_objective_in_the_grid_features_are_judged_within_each_objective():
    from types import SimpleNamespace

    from recsys_ablate.evaluation.comparison import _baseline

    def summary(features, temperature):
        run = SimpleNamespace(features=features, objective=ObjectiveConfig(temperature=temperature),
                              model=ModelConfig(layer_sizes=(8,), embedding_size=8), train=TrainConfig())
        return SimpleNamespace(features=features, models=[SimpleNamespace(run=run)])

    cells = [summary(f, t) for f in ((), ("movie_genres",)) for t in (0.5, 0.2)]
    assert [_baseline(s, cells) for s in cells] == [None, None, cells[0], cells[1]]


def test_objective_labels_name_what_varies_and_is_off_the_defaults():
    varying = ["temperature", "logq_correction", "remove_accidental_hits", "uniform_negatives"]
    assert ObjectiveConfig().label(varying) == "TFRS defaults"
    assert ObjectiveConfig(0.2, True, True, 64).label(varying) == (
        "temperature 0.2, logQ, no accidental hits, 64 uniform negatives")
    assert ObjectiveConfig(logq_correction=True, uniform_negatives=64).label(["logq_correction"]) == "logQ"
    # Every cell sets 64 uniform negatives; only logQ varies: the cell without it says so.
    assert ObjectiveConfig(uniform_negatives=64).label(["logq_correction"]) == "no logQ"


def test_early_stopping_takes_trade_off_metrics_with_a_direction_only():
    import pytest

    from recsys_ablate.errors import UserInputError

    from recsys_ablate.ablation import check_experiment

    accepted = check_experiment(build({"data": {"dataset": "demo"}, "train": {"early_stopping": "tail_100"}}))
    assert accepted.train.early_stopping == "tail_100" and accepted.data.dataset == "demo"
    with pytest.raises(UserInputError, match="early stopping metric 'popularity_100': expected one of "):
        check_experiment(build({"data": {"dataset": "demo"}, "train": {"early_stopping": "popularity_100"}}))
