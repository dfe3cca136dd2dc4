"""Adaptive seeds (`--seeds auto`): the rounds' alpha, their error rates on simulations, and a real run in
which a decided comparison stops getting seeds while an undecided one goes on."""

from __future__ import annotations

import dataclasses
import glob
import json
import math
import os

import numpy as np
import pytest
import scipy.stats

from recsys_ablate.cli import main
from recsys_ablate.evaluation.calibration import NullModel, calibrate, calibrate_sequential
from recsys_ablate.evaluation.sequential import looks, spent

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FIXTURE = os.path.join(ROOT, "tests", "fixtures", "verdict_null_model.json")


def test_the_rounds_spend_alpha_as_the_spending_functions_say():
    rounds = looks(2, 5, 0.05, "obrien_fleming")
    assert [look.seeds for look in rounds] == [2, 3, 4, 5] and [look.round for look in rounds] == [1, 2, 3, 4]
    assert sum(look.alpha for look in rounds) == pytest.approx(0.05)
    # O'Brien-Fleming by hand: 2 - 2 Phi(1.95996 / sqrt(t)) at t = 2/5 and 3/5.
    first = 2 - 2 * scipy.stats.norm.cdf(scipy.stats.norm.ppf(0.975) / math.sqrt(0.4))
    assert rounds[0].alpha == pytest.approx(first) and rounds[0].alpha == pytest.approx(0.00194, abs=1e-5)
    assert rounds[1].alpha == pytest.approx(spent("obrien_fleming", 0.6, 0.05) - first)
    assert [look.alpha for look in rounds] == sorted(look.alpha for look in rounds)  # little early
    pocock = looks(2, 5, 0.05, "pocock")
    assert pocock[0].alpha == pytest.approx(0.05 * math.log(1 + (math.e - 1) * 0.4))
    assert pocock[0].alpha > 0.5 * 0.05 and sum(look.alpha for look in pocock) == pytest.approx(0.05)
    assert looks(3, 3, 0.05, "pocock") == [dataclasses.replace(looks(3, 3, 0.05, "pocock")[0], alpha=0.05)]


def _model(users=1000) -> NullModel:
    with open(FIXTURE) as f:
        model = NullModel.from_dict(json.load(f)["model"])
    return dataclasses.replace(model, offsets=model.offsets[:users], counts=model.counts[:users])


@pytest.mark.slow
@pytest.mark.parametrize("spending", ["obrien_fleming", "pocock"])
def test_adaptive_seeds_keep_the_error_rate_and_coverage_under_the_stopping_rule(spending):
    """Three placebo arms against one baseline (the real run's fitted noise): looking after every round and
    stopping the decided comparisons claims an effect in at most alpha of the ablations, and the intervals
    of the round each comparison stopped at hold the truth at least 95% of the time."""
    replicates = 500
    tolerance = 2 * np.sqrt(0.05 * 0.95 / replicates)
    null = calibrate_sequential(_model(), looks(2, 5, 0.05, spending), replicates, comparisons=3, seed=71)
    assert null["false_claim"] <= 0.05 + tolerance
    assert null["coverage"] >= 0.95 - tolerance / 3  # 3 intervals per ablation
    # Looking at every round without spending alpha (each round at 0.05) is what the rule prevents.
    naive = calibrate_sequential(_model(), [dataclasses.replace(look, alpha=0.05)
                                            for look in looks(2, 5, 0.05, spending)],
                                 replicates, comparisons=3, seed=71)
    assert naive["false_claim"] > null["false_claim"]


@pytest.mark.slow
def test_adaptive_seeds_train_fewer_models_where_the_answer_comes_early():
    """A large effect is decided before the maximum, and with a margin a zero effect is found equivalent
    before it: fewer models than a fixed --seeds 5, with the errors still bounded."""
    model = _model()
    rounds = looks(2, 5, 0.05, "obrien_fleming")
    large = calibrate_sequential(model, rounds, 300, shift=model.shift_for(0.06), seed=72)
    assert large["first_decided"] >= 0.95 and large["models"] < 0.85 * large["fixed_models"]
    fixed = calibrate(model, 5, 300, shift=model.shift_for(0.06), seed=73)
    assert fixed["rejection"] >= 0.95  # the fixed design decides it too, with every seed
    zero = calibrate_sequential(model, rounds, 300, margin=0.06, seed=74)
    assert zero["first_decided"] >= 0.8 and zero["models"] < 0.85 * zero["fixed_models"]
    assert zero["false_claim"] <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 300)


@pytest.mark.parametrize("flags, message", [
    (["--seeds", "auto", "--min_seeds", "4", "--max_seeds", "3"],
     "--min_seeds 4 is above --max_seeds 3: lower --min_seeds or raise --max_seeds"),
    (["--seeds", "auto", "--max_seeds", "1"], "max_seeds 1: expected 2 or more"),
    (["--seeds", "auto", "--min_seeds", "1"], "min_seeds 1: expected 2 or more"),
    (["--seeds", "auto", "--margin", "0"], "margin 0: expected a positive number"),
    (["--seeds", "often"], "seeds often: expected a number of seeds (1 or more) or auto"),
    (["--seeds", "auto", "--ranking"], "--seeds auto with --ranking"),
    (["--seeds", "auto", "--design", "factorial", "--factors", "movie_genres", "movie_length"],
     "--seeds auto with --design"),
])
def test_bad_adaptive_settings_are_one_line_errors_before_training(flags, message, tmp_path, capsys):
    assert main(["--dataset", "demo", "--datasets_dir", str(tmp_path / "d"), "--saved_models_dir",
                 str(tmp_path / "s"), "--reports_dir", str(tmp_path / "r")] + flags) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err
    assert not os.path.exists(tmp_path / "s")  # nothing trained


@pytest.mark.slow
def test_a_decided_comparison_stops_getting_seeds_and_a_rerun_resumes_from_the_saved_rounds(tmp_path, capsys,
                                                                                          recipes):
    """The recipes example: planted `region` is decided early; `tags` (no signal) is not, and goes on
    to the maximum with the baseline. Re-running trains nothing (the rounds replay from the saved models),
    and `report` gives the same verdicts."""
    files, datasets = recipes
    argv = ["--config", os.path.join(ROOT, "experiments", "recipes.toml"), "--workers", "2",
            "--additional_feature_sets", "None", "--additional_feature_sets", "tags",
            "--additional_feature_sets", "region", "--seeds", "auto", "--max_seeds", "4",
            "--spending", "pocock",
            "--interactions", files["interactions"], "--items", files["items"], "--users", files["users"],
            "--datasets_dir", datasets, "--saved_models_dir", str(tmp_path / "s"),
            "--reports_dir", str(tmp_path / "r")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "round 1 of 3: every arm to 2 seeds" in out
    (path,) = glob.glob(str(tmp_path / "r" / "*.json"))
    summary = json.load(open(path))
    seeds = {s["label"]: len(s["models"]) for s in summary["feature_sets"]}
    stops = {stop["comparison"]: stop for stop in summary["adaptive_seeds"]["stops"]}
    assert stops["region"]["decided"] and stops["region"]["verdict"] == "better"
    assert stops["region"]["round"] < 3 and seeds["region"] == stops["region"]["seeds"] < 4
    assert seeds["baseline (ids only)"] == max(seeds.values())
    if not stops["tags"]["decided"]:
        assert seeds["tags"] == 4 and stops["tags"]["why"] == "reached the maximum (4 seeds) undecided"
    # Every saved model is one the rounds asked for.
    assert len(glob.glob(str(tmp_path / "s" / "*" / "history.json"))) == sum(seeds.values())
    verdict = next(c for c in summary["comparisons"]
                   if c["verdict_metric"] and c["feature_set"] == "region")
    rounds = summary["adaptive_seeds"]["rounds"]
    assert verdict["confidence"] == pytest.approx(1 - rounds[stops["region"]["round"] - 1]["alpha"])
    assert "group-sequential" in verdict["family"]
    page = open(path[:-len(".json")] + ".html").read()
    assert "repeated intervals (each at its round" in page and "<h2>Adaptive seeds</h2>" in page
    assert "Adaptive seeds: 3 rounds of 2..4 seeds" in out and "decided at round" in out
    # An arm that finishes round 1 while another still trains cannot be decided at round 1 even alone in its
    # family (one degree of freedom): its next seed starts before the round ends.
    assert "round 2: 2 models queued early" in out

    assert main(argv) == 0
    again = capsys.readouterr().out
    assert f"{sum(seeds.values())} models: 0 trained, {sum(seeds.values())} reloaded." in again
    assert json.load(open(path))["adaptive_seeds"]["stops"] == summary["adaptive_seeds"]["stops"]
    assert main(["report"] + argv) == 0
    assert json.load(open(path))["adaptive_seeds"]["stops"] == summary["adaptive_seeds"]["stops"]
    if not stops["tags"]["decided"]:  # a larger maximum: the saved rounds are not finished under it
        longer = [("5" if arg == "4" and argv[i - 1] == "--max_seeds" else arg) for i, arg in enumerate(argv)]
        assert main(["report"] + longer) == 2
        assert "this --seeds auto ablation is not finished: round" in capsys.readouterr().err


@pytest.mark.slow
def test_rounds_one_after_another_and_through_the_shared_queue_agree(tmp_path, capsys, demo_datasets):
    """--workers 1 runs the rounds one after another; --workers 2 (like Ray) shares one queue. On the
    same saved models the second reloads everything and replays the same rounds."""
    argv = ["--dataset", "demo", "--max_ratings", "6000", "--batch_size", "512", "--layer_sizes", "16",
            "--embedding_size", "8", "--num_epochs", "6", "--eval_every", "3",
            "--additional_feature_sets", "None", "--additional_feature_sets", "movie_genres",
            "--seeds", "auto", "--max_seeds", "3", "--datasets_dir", demo_datasets,
            "--saved_models_dir", str(tmp_path / "s"), "--reports_dir", str(tmp_path / "r")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "round 1 of 2: 2 of 2 arms to 2 seeds" in out
    (path,) = glob.glob(str(tmp_path / "r" / "*.json"))
    first = json.load(open(path))
    (stop,) = first["adaptive_seeds"]["stops"]
    seeds = [len(s["models"]) for s in first["feature_sets"]]
    assert seeds == [stop["seeds"]] * 2 and stop["why"] in ("decided at round 1 of 2 (2 seeds)",
                                                            "decided at round 2 of 2 (3 seeds)",
                                                            "reached the maximum (3 seeds) undecided")
    assert main(argv + ["--workers", "2"]) == 0
    assert f"{sum(seeds)} models: 0 trained, {sum(seeds)} reloaded." in capsys.readouterr().out
    assert json.load(open(path))["adaptive_seeds"] == first["adaptive_seeds"]
