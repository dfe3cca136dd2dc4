"""Verdicts: intervals that count seeds and users, Holm, verdict words, calibration on simulated runs."""

import json
import os
import tracemalloc

import numpy as np
import pytest
import scipy.stats

from recsys_ablate.training.history import History
from recsys_ablate.evaluation.calibration import NullModel, calibrate, fit_null_model
from recsys_ablate.evaluation.verdicts import (BETTER, COVERS_BOTH, COVERS_NOTHING, COVERS_USERS, NO_EVIDENCE,
                                               NO_VERDICT, WORSE, compare, decide, holm)

FIXTURE = os.path.join(os.path.dirname(__file__), "fixtures", "verdict_null_model.json")


def _table(per_seed_means, num_users=500, spread=0.3, seed=0):
    """[S, users] per-user differences (one example per user) whose seed means are `per_seed_means`."""
    rng = np.random.default_rng(seed)
    rows = []
    for mean in per_seed_means:
        noise = rng.normal(0, spread, num_users)
        rows.append(noise - noise.mean() + mean)
    return np.array(rows), np.ones(num_users)


def test_the_issues_case_is_no_evidence_and_as_wide_as_the_seeds_spread():
    # Measured per-seed top-100 differences of timestamp + title text + genres against the baseline.
    per_seed = [0.0069, 0.0293, 0.0139]
    differences, weights = _table(per_seed)
    result = decide([compare("top_100", differences, weights, [42, 43, 44])], alpha=0.05)[0]
    half = scipy.stats.t.ppf(0.975, 2) * np.std(per_seed, ddof=1) / np.sqrt(3)  # paired t over seeds
    assert result.difference == pytest.approx(np.mean(per_seed))
    assert result.low <= np.mean(per_seed) - half + 1e-12 and result.high >= np.mean(per_seed) + half - 1e-12
    assert result.low < -0.011 and result.high > 0.044  # about [-0.012, +0.045]
    assert result.verdict == NO_EVIDENCE and result.p_value > 0.05 and result.covers == COVERS_BOTH
    assert result.per_seed == pytest.approx(per_seed)
    # With 3 seeds only a difference of several times the mean is reliably found; more seeds help.
    assert result.detectable > 0.03
    projected = result.detectable_with
    assert projected[3] == result.detectable > projected[5] > projected[10]


def test_users_count_when_seeds_agree():
    # Every seed gives the same difference: training noise is nil, the validation sample is all there is.
    rng = np.random.default_rng(1)
    users = rng.normal(0.02, 0.5, 400)
    differences = np.stack([users + rng.normal(0, 0.01, 400) for _ in range(3)])
    differences -= differences.mean(axis=1, keepdims=True) - differences.mean()
    weights = np.ones(400)
    result = compare("recall_10", differences, weights, [1, 2, 3])
    # The users-only standard error, by resampling users (what a validation-sample bootstrap measures).
    boot = [differences[:, idx].mean() for idx in rng.integers(0, 400, (4000, 400))]
    assert result.std_error == pytest.approx(np.std(boot), rel=0.1)
    assert result.high - result.low > 2 * 1.9 * np.std(boot)


def test_one_seed_gives_no_verdict_and_a_validation_only_interval():
    rng = np.random.default_rng(2)
    counts = rng.integers(1, 30, 300).astype(float)
    hits_arm, hits_base = rng.binomial(counts.astype(int), 0.3), rng.binomial(counts.astype(int), 0.2)
    result = decide([compare("top_100", (hits_arm - hits_base)[None], counts, [42])], alpha=0.05)[0]
    assert result.verdict == NO_VERDICT and result.p_value is None and result.p_adjusted is None
    assert result.covers == COVERS_USERS and result.detectable is None
    # The ratio estimator's between-user (cluster) standard error, by hand.
    d = (hits_arm - hits_base).sum() / counts.sum()
    residual = hits_arm - hits_base - d * counts
    se = np.sqrt(300 / 299 * np.sum(residual**2)) / counts.sum()
    assert result.difference == pytest.approx(d)
    assert (result.high - result.low) / 2 == pytest.approx(1.959964 * se, rel=1e-5)


def test_holm_by_hand():
    # sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max.
    assert holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert holm([0.8, 0.3]) == pytest.approx([0.8, 0.6])
    assert holm([0.9, 0.8]) == pytest.approx([1.0, 1.0])  # capped at 1


def test_decide_adjusts_across_the_family_and_names_the_direction():
    up, _ = _table([0.020, 0.021, 0.022], spread=0.01)
    down, _ = _table([-0.020, -0.021, -0.022], spread=0.01)
    null, weights = _table([0.01, -0.012, 0.003])
    single, _ = _table([0.05])
    family = [compare(name, table, weights, range(len(table)))
              for name, table in (("a", up), ("b", down), ("c", null), ("d", single))]
    decided = decide(family, alpha=0.05)
    assert [c.verdict for c in decided] == [BETTER, WORSE, NO_EVIDENCE, NO_VERDICT]
    raw = [c.p_value for c in family[:3]]
    assert [c.p_adjusted for c in decided[:3]] == pytest.approx(holm(raw))  # one-seed arm not in the family
    assert decided[0].p_adjusted > decided[0].p_value
    lower = decide(family, alpha=0.05, higher_is_better=False)  # e.g. an error metric
    assert [c.verdict for c in lower[:2]] == [WORSE, BETTER]


def test_memory_stays_bounded_at_movielens_25m_users():
    # 162,541 users x 5 seeds: the old bootstrap drew 2,000 x users int64 indices (2.6 GB).
    rng = np.random.default_rng(3)
    counts = rng.integers(1, 300, 162_541).astype(np.float64)
    differences = rng.normal(0, 1, (5, 162_541)) * np.sqrt(counts)
    tracemalloc.start()
    result = compare("top_100", differences, counts, range(5))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 60 * 2**20, peak  # a few copies of the seeds x users table
    assert result.low < result.difference < result.high


def _fixture_model() -> NullModel:
    with open(FIXTURE) as f:
        return NullModel.from_dict(json.load(f)["model"])


def test_the_fit_recovers_a_known_model():
    rng = np.random.default_rng(4)
    truth = NullModel(1.2, example=0.5, arm_example=0.06, seed=0.0, noise=0.29,
                      offsets=tuple(rng.normal(0, np.sqrt(0.15), 3000)),
                      counts=tuple(rng.integers(5, 80, 3000)))
    hits, inverse, _ = truth.simulate_hits(rng, 5)
    fitted = fit_null_model(hits[0], hits[1], inverse)
    assert fitted.arm_example == pytest.approx(0.06, abs=0.01)
    assert fitted.noise == pytest.approx(0.29, abs=0.02)
    assert fitted.example == pytest.approx(0.5, abs=0.04)
    assert np.var(fitted.offsets) == pytest.approx(0.15, abs=0.03)
    assert fitted.seed < 0.005
    assert fitted.true_difference(0.0) == 0.0 and fitted.true_difference(0.1) > 0


@pytest.mark.slow
def test_calibration_on_simulations_fitted_to_a_real_run():
    # The fixture is bench/verdict_calibration.py's fit to a real ML-1M run (3 seeds per arm); see its
    # "source". Without an effect: at most 6% rejections, intervals hold zero 93-97% of the time.
    model = _fixture_model()
    null = calibrate(model, num_seeds=3, replicates=2000, alpha=0.05, seed=11)
    assert null["true_difference"] == 0.0
    assert null["rejection"] <= 0.06
    assert 0.93 <= null["coverage"] <= 0.97
    # With an effect planted at twice the real run's size, the intervals still hold it.
    shift = model.shift_for(0.03)
    planted = calibrate(model, num_seeds=3, replicates=1000, alpha=0.05, shift=shift, seed=12)
    assert planted["true_difference"] == pytest.approx(0.03)
    assert planted["coverage"] >= 0.93
    assert planted["rejection"] > null["rejection"]  # and the test has power against it


@pytest.mark.slow
def test_a_placebo_feature_gets_no_evidence_end_to_end(tmp_path, capsys):
    # Real models on the demo data: the id-only baseline, the placebo (one vector for every user)
    # and all features (a long name, for the console's width), 3 seeds each.
    from recsys_ablate.cli import main

    everything = ["movie_genres", "movie_title_text", "timestamp", "user_age", "user_gender",
                  "user_occupation"]
    argv = ["--dataset", "demo", "--num_epochs", "20", "--eval_every", "5", "--seeds", "3", "--workers", "2",
            "--additional_feature_sets", "user_placebo", "--additional_feature_sets", *everything,
            "--datasets_dir", str(tmp_path / "d"), "--saved_models_dir", str(tmp_path / "s"),
            "--reports_dir", str(tmp_path / "r")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    summary = out[out.index("Final validation metrics"):out.index("9 models: 9 trained")].splitlines()
    assert max(len(line) for line in summary) <= 100, max(summary, key=len)  # tables and notes
    placebo_rows = [line for line in summary if line.startswith("user_placebo  ")]
    # metrics, verdict, then the trade-off (no evidence of any difference either)
    assert len(placebo_rows) == 3 and placebo_rows[1].endswith("no evidence")
    assert placebo_rows[2].count("n.e.") == 4
    assert "Holm-adjusted p < 0.05 across 2 comparisons" in out
    assert "user_placebo: no evidence; with 3 seeds a difference below about" in out

    (numbers,) = (tmp_path / "r").glob("*.json")
    document = json.loads(numbers.read_text())
    placebo = next(c for c in document["comparisons"]
                   if c["feature_set"] == "user_placebo" and c["metric"] == "top_100")
    assert placebo["verdict"] == NO_EVIDENCE and placebo["verdict_metric"]
    assert placebo["low"] < placebo["difference"] < placebo["high"] and placebo["low"] < 0 < placebo["high"]
    assert placebo["p_adjusted"] >= placebo["p_value"] > 0.05 and placebo["seeds"] == [42, 43, 44]
    assert placebo["covers"] == COVERS_BOTH and "paired by seed" in placebo["method"]
    # Per feature set and seed, the final metrics as the models' histories hold them.
    by_label = {f["label"]: f for f in document["feature_sets"]}
    for label in ("baseline (ids only)", "user_placebo"):
        models = by_label[label]["models"]
        assert [m["seed"] for m in models] == [42, 43, 44]
        for m in models:
            history = History.load(str(tmp_path / "s" / m["folder"] / "history.json"))
            assert m["final"] == history.final_metrics
    pairs = zip(by_label["user_placebo"]["models"], by_label["baseline (ids only)"]["models"])
    per_seed = [p["final"]["top_100"] - b["final"]["top_100"] for p, b in pairs]
    assert placebo["per_seed"] == pytest.approx(per_seed)
    page = numbers.with_suffix(".html").read_text()
    assert 'id="forest"' in page and "Difference to the baseline in top-100" in page

    # One seed per arm (the same saved models, seed 42 only): no verdict, and the report says why.
    assert argv[6:8] == ["--seeds", "3"]
    assert main(["report", *argv[:6], "--seeds", "1", *argv[8:]]) == 0
    out = capsys.readouterr().out
    assert "no verdict*" in out and "training noise is unmeasured" in out and "--seeds 3 or more" in out
    one_seed = max((tmp_path / "r").glob("*.json"), key=os.path.getmtime)
    comparisons = json.loads(one_seed.read_text())["comparisons"]
    assert {c["verdict"] for c in comparisons} == {NO_VERDICT}
    # One seed: intervals over validation users only; coverage (not a per-user sum) has none.
    assert all(c["p_value"] is None and c["covers"] == (COVERS_NOTHING if c["metric"].startswith("coverage")
                                                        else COVERS_USERS) for c in comparisons)


@pytest.mark.parametrize("flags, message", [
    (["--alpha", "0.7"], "alpha 0.7: expected a level between 0 and 0.5, e.g. 0.05"),
    (["--alpha", "nan"], "alpha nan: expected a level between 0 and 0.5"),
    (["--verdict_metric", "top_7"], "verdict metric 'top_7': expected one of top_1, top_5, top_10"),
])
def test_bad_verdict_settings_are_one_line_errors(flags, message, tmp_path, capsys):
    from recsys_ablate.cli import main

    assert main(["--dataset", "demo", *flags, "--saved_models_dir", str(tmp_path / "s")]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and not (tmp_path / "s").exists()


def test_verdict_settings_come_from_toml_and_flags(tmp_path):
    from recsys_ablate.cli import experiment_from_args, parse_args

    toml = tmp_path / "e.toml"
    toml.write_text('[compare]\nalpha = 0.01\nmetric = "recall_10"\n')
    config = experiment_from_args(parse_args(["--config", str(toml)]))
    assert (config.compare.alpha, config.compare.metric_name(config.train.ks)) == (0.01, "recall_10")
    config = experiment_from_args(parse_args(["--config", str(toml), "--alpha", "0.1"]))
    assert config.compare.alpha == 0.1
    assert experiment_from_args(parse_args([])).compare.metric_name((10, 50)) == "top_50"


def test_a_metric_that_is_not_a_per_user_sum_gets_the_seeds_t_interval():
    """Coverage: one difference per seed, a t-interval over them (S - 1 df), said to cover seeds only."""
    import scipy.stats

    from recsys_ablate.evaluation.verdicts import COVERS_NOTHING, COVERS_SEEDS, HIGHER, LOWER

    per_seed = np.array([0.031, 0.025, 0.040])
    c = compare("coverage_100", per_seed[:, None], np.ones(1), (1, 2, 3), per_user=False)
    half = scipy.stats.t.ppf(0.975, 2) * per_seed.std(ddof=1) / np.sqrt(3)
    assert c.difference == pytest.approx(per_seed.mean()) and c.df == 2
    assert (c.low, c.high) == pytest.approx((per_seed.mean() - half, per_seed.mean() + half))
    assert c.p_value == pytest.approx(2 * scipy.stats.t.sf(per_seed.mean() / (half / scipy.stats.t.ppf(
        0.975, 2)), 2))
    assert c.covers == COVERS_SEEDS and decide([c], 0.05)[0].verdict == "better"
    one = compare("coverage_100", per_seed[:1, None], np.ones(1), (1,), per_user=False)
    assert one.covers == COVERS_NOTHING and one.p_value is None and one.verdict == "no verdict"
    # A metric without a better direction (popularity) gets "higher" / "lower".
    assert decide([c], 0.05, higher_is_better=None)[0].verdict == HIGHER
    down = compare("popularity_100", -per_seed[:, None], np.ones(1), (1, 2, 3), per_user=False)
    assert decide([down], 0.05, higher_is_better=None)[0].verdict == LOWER
