"""Factorial designs over features: the runs, the effects' contrasts, their verdicts, a planted redundancy."""

import glob
import json
import os

import numpy as np
import pytest

from recsys_ablate.cli import experiment_from_args, main, parse_args
from recsys_ablate.ablation import check_experiment, run_ablation
from recsys_ablate.evaluation.calibration import NullModel, design_claim_rate
from recsys_ablate.evaluation.design import contrasts, effects
from recsys_ablate.evaluation.verdicts import NEGATIVE, decide, worded
from recsys_ablate.settings import DesignConfig, build, load_toml

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_a_full_factorial_has_every_combination_baseline_first():
    design = DesignConfig("factorial", ("timestamp", "movie_genres", "user_age"))
    runs = design.feature_sets()
    assert len(runs) == 8 and len(set(runs)) == 8 and runs[0] == ()
    assert runs[-1] == tuple(sorted(design.factors))  # each run written as a feature set is: sorted
    assert design.resolution is None
    config = check_experiment(experiment_from_args(parse_args(
        ["--design", "factorial", "--factors", "timestamp", "movie_genres", "user_age"])))
    assert config.feature_sets == runs


@pytest.mark.parametrize("k", [5, 6])
def test_from_five_factors_a_half_fraction_keeps_two_way_interactions_estimable(k):
    factors = tuple(f"f{i}" for i in range(k))
    design = DesignConfig("factorial", factors)
    runs = design.feature_sets()
    assert len(runs) == 2 ** (k - 1) and runs[0] == () and design.resolution == k
    # Every main-effect and two-way contrast is orthogonal to every other one: none is aliased with another
    # (resolution k >= 5: a two-way interaction is aliased only with a (k-2)-way one).
    vectors = np.stack(list(contrasts(factors, runs).values()))
    gram = vectors @ vectors.T
    np.testing.assert_allclose(gram, np.diag(np.diag(gram)), atol=1e-12)


@pytest.mark.parametrize("argv, message", [
    (["--factors", "timestamp"], "factors timestamp: give --design factorial too"),
    (["--design", "factorial", "--factors", "timestamp"], "expected 2 to 8 --factors, got 1"),
    (["--design", "factorial", "--factors", "timestamp", "timestamp"], "factors: each one once"),
    (["--design", "factorial", "--factors", "timestamp", "user_age", "--additional_feature_sets", "user_age"],
     "--design: the feature sets follow from --factors; drop --additional_feature_sets"),
    (["--design", "factorial", "--factors", "timestamp", "nope"], "unknown feature 'nope'"),
    (["--design", "factorial", "--factors", "timestamp", "logq_correction"],
     "factor logq_correction: give it the two values to compare, low first, e.g. [objective] "
     "logq_correction = [false, true] (or --logq_correction off on)"),
    (["--design", "factorial", "--factors", "timestamp", "user_age", "user_gender", "movie_genres",
      "logq_correction", "--logq_correction", "off", "on"],
     "--design with 5 factors is a half fraction of the features' combinations; its factors must be "
     "features (grid settings: logq_correction)"),
])
def test_bad_designs_are_one_line_errors_before_training(argv, message, tmp_path, capsys):
    assert main(["--dataset", "demo", *argv, "--saved_models_dir", str(tmp_path / "s"),
                 "--datasets_dir", str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


def test_effects_are_the_design_contrasts_seed_by_seed():
    """Two columns carrying the same information: each adds d alone, together still d. Two main effects of
    d/2 and an interaction of -d/2, from the per-user sums exactly."""
    rng = np.random.default_rng(0)
    runs = ((), ("a",), ("b",), ("a", "b"))
    users, d = 400, 0.06
    base = {seed: rng.binomial(10, 0.3, users).astype(float) for seed in (1, 2, 3)}
    gain = {seed: rng.binomial(10, d + 0.01 * (seed - 2), users).astype(float) for seed in (1, 2, 3)}
    weights = np.full(users, 10.0)

    def sums_of(i, seed):
        return base[seed] + (gain[seed] if runs[i] else 0.0), weights

    found = {e.name: e for e in effects(runs, ("a", "b"), sums_of, (1, 2, 3), "top_100", 0.05, 0.8)}
    per_seed = [gain[s].sum() / weights.sum() for s in (1, 2, 3)]
    assert found["a"].comparison.per_seed == pytest.approx([p / 2 for p in per_seed])
    assert found["b"].comparison.per_seed == pytest.approx([p / 2 for p in per_seed])
    assert found["a x b"].comparison.per_seed == pytest.approx([-p / 2 for p in per_seed])
    decided = decide([e.comparison for e in found.values()], 0.05, None)
    words = [worded(c, True, len(e.factors) > 1).verdict for e, c in zip(found.values(), decided)]
    assert words == ["better", "better", NEGATIVE]


@pytest.mark.slow
def test_a_placebo_design_claims_an_effect_at_most_alpha():
    """A 2^2 design of four arms with no true effect (the real run's fitted model, 1,000 users, 3 seeds):
    the chance that any of its three effects is claimed."""
    with open(os.path.join(ROOT, "tests", "fixtures", "verdict_null_model.json")) as f:
        model = NullModel.from_dict(json.load(f)["model"])
    model = NullModel(**{**model.to_dict(), "offsets": model.offsets[:1000], "counts": model.counts[:1000]})
    assert design_claim_rate(model, replicates=500) <= 0.05 + 2 * np.sqrt(0.05 * 0.95 / 500)


@pytest.mark.slow
def test_the_same_column_declared_twice_shows_two_main_effects_and_a_negative_interaction(
        tmp_path, recipes, recipes_models):
    """The recipes example's planted `ingredients`, declared again as `ingredients_again`: a 2^2 design. Its
    baseline and `ingredients` runs are the example's own models (its settings, seeds 42-44), shared with
    the end-to-end test of the example."""
    files, datasets = recipes
    sections = load_toml(os.path.join(ROOT, "experiments", "recipes.toml"))
    features = sections["features"]
    sections.update(
        data={**sections["data"], **files, "datasets_dir": datasets},
        features={"ingredients": features["ingredients"], "ingredients_again": features["ingredients"]},
        experiment={"saved_models_dir": recipes_models, "reports_dir": str(tmp_path / "r"), "workers": 2},
        design={"kind": "factorial", "factors": ["ingredients", "ingredients_again"]},
        train={**sections["train"], "seeds": 3})
    run_ablation(build(sections), log=lambda *_: None)
    (path,) = glob.glob(str(tmp_path / "r" / "*.json"))
    summary = json.load(open(path))
    design = summary["design"]
    assert design["runs"] == [[], ["ingredients"], ["ingredients_again"],
                              ["ingredients", "ingredients_again"]]
    found = {e["effect"]: e for e in design["effects"]}
    main_a, main_b = found["ingredients"], found["ingredients_again"]
    both = found["ingredients x ingredients_again"]
    assert main_a["verdict"] == main_b["verdict"] == "better" and both["verdict"] == NEGATIVE
    # The interaction is about the main effects' size with the opposite sign (its interval holds minus each
    # main effect). Two tables of the same column add some capacity: measured -0.063 against +0.088 with
    # the example's epochs chosen on validation (-0.042 against +0.046 at a fixed 15 epochs, session 21).
    for effect in (main_a, main_b):
        assert both["low"] <= -effect["difference"] <= both["high"]
        assert 0.6 < -both["difference"] / effect["difference"] < 1.2
    assert all(c["verdict"] == "exploratory" for c in summary["comparisons"])
    assert summary["family"].startswith("3 claims: the 2 main effects and 1 two-way interaction of a "
                                        "2^2 full factorial over ingredients, ingredients_again on top-100")
    page = open(path[:-len(".json")] + ".html").read()
    assert 'id="effects"' in page and "Design: a 2^2 full factorial" in page


@pytest.mark.slow
def test_a_grid_setting_is_a_factor_beside_features(tmp_path, demo_datasets):
    """genres x logQ correction: the grid's two cells are the factor's levels; each effect is the design's
    contrast of the four runs' per-seed numbers."""
    argv = ["--dataset", "demo", "--max_ratings", "8000", "--design", "factorial", "--factors",
            "movie_genres", "objective.logq_correction", "--logq_correction", "off", "on", "--seeds", "2",
            "--num_epochs", "2", "--eval_every", "2", "--batch_size", "512", "--embedding_size", "8",
            "--layer_sizes", "16",
            "--datasets_dir", demo_datasets, "--saved_models_dir", str(tmp_path / "s"),
            "--reports_dir", str(tmp_path / "r")]
    assert main(argv) == 0
    (path,) = glob.glob(str(tmp_path / "r" / "*.json"))
    summary = json.load(open(path))
    design = summary["design"]
    assert design["grid_factors"] == {"objective.logq_correction": {
        "setting": "objective.logq_correction", "low": False, "high": True}}
    logq = "objective.logq_correction"
    expected = [(), ("movie_genres",), (logq,), ("movie_genres", logq)]
    assert sorted(map(tuple, design["runs"])) == sorted(expected)
    final = {}  # (genres on, logQ on, seed) -> top-100 of that model
    for entry in summary["feature_sets"]:
        for model in entry["models"]:
            key = ("movie_genres" in entry["features"], entry["cell"]["objective"]["logq_correction"])
            final[key + (model["seed"],)] = model["final"]["top_100"]
    effects = {e["effect"]: e for e in design["effects"]}
    for seed, index in ((42, 0), (43, 1)):
        y = {(g, q): final[g, q, seed] for g in (False, True) for q in (False, True)}
        genres = (y[True, False] + y[True, True] - y[False, False] - y[False, True]) / 2
        logq = (y[False, True] + y[True, True] - y[False, False] - y[True, False]) / 2
        both = (y[True, True] - y[False, True] - y[True, False] + y[False, False]) / 2
        assert effects["movie_genres"]["per_seed"][index] == pytest.approx(genres, abs=1e-9)
        assert effects["objective.logq_correction"]["per_seed"][index] == pytest.approx(logq, abs=1e-9)
        assert effects["movie_genres x objective.logq_correction"]["per_seed"][index] == pytest.approx(
            both, abs=1e-9)
