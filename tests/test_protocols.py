"""Protocols (filters, three-way and per-user splits, masking, per-user metrics) and reference models."""

import glob
import json
import os
from types import SimpleNamespace

import numpy as np
import pytest

from recsys_ablate.cli import main
from recsys_ablate.data.encoded import kept_by_filters, load_dataset, part_sizes, split_indices
from recsys_ablate.evaluation import catalogue
from recsys_ablate.evaluation.metrics import Metric, compute
from recsys_ablate.models.reference import Ease, Ials, Popularity
from recsys_ablate.settings import DataConfig, TrainConfig, build
from tests.helpers import small_model


def _brute_force_k_core(users, items, k):
    """One rating at a time: drop any rating whose user or item has fewer than k left, until none does."""
    kept = set(range(len(users)))
    changed = True
    while changed:
        changed = False
        user_counts = {u: sum(1 for i in kept if users[i] == u) for u in set(users)}
        item_counts = {m: sum(1 for i in kept if items[i] == m) for m in set(items)}
        for i in sorted(kept):
            if user_counts[users[i]] < k or item_counts[items[i]] < k:
                kept.discard(i)
                changed = True
                break
    return sorted(kept)


@pytest.mark.parametrize("seed", range(6))
def test_the_iterative_k_core_equals_a_brute_force_loop(seed):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, 25, 160)
    items = rng.integers(0, 18, 160)
    pairs = sorted(set(zip(users.tolist(), items.tolist())))
    users, items = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
    spec = DataConfig(k_core=4)
    kept = kept_by_filters(users, items, np.full(len(users), 4.0), spec)
    assert kept.tolist() == _brute_force_k_core(users.tolist(), items.tolist(), 4)


def test_one_pass_is_not_enough_and_the_filter_keeps_going():
    # User 0 (one rating) goes; then item 0 has one rating left, so user 1's goes; then user 1 has one
    # left: three rounds to the 2-core of users 2, 3 and items 1, 2.
    users = np.array([0, 1, 1, 2, 2, 3, 3])
    items = np.array([0, 0, 1, 1, 2, 1, 2])
    kept = kept_by_filters(users, items, np.ones(7), DataConfig(k_core=2))
    assert kept.tolist() == _brute_force_k_core(users.tolist(), items.tolist(), 2) == [3, 4, 5, 6]
    one_pass = [i for i in range(7) if np.sum(users == users[i]) >= 2 and np.sum(items == items[i]) >= 2]
    assert one_pass == [1, 2, 3, 4, 5, 6]  # what a single pass would have kept
    assert kept_by_filters(users, items, np.array([1, 4, 4, 3, 5, 2, 3.0]), DataConfig(min_rating=3)
                           ).tolist() == [1, 2, 3, 4, 6]


def _recbole_split_ids(tot, ratios):
    """RecBole's Dataset._calcu_split_ids, copied (recbole/data/dataset/dataset.py)."""
    cnt = [int(ratios[i] * tot) for i in range(len(ratios))]
    cnt[0] = tot - sum(cnt[1:])
    for i in range(1, len(ratios)):
        if cnt[0] <= 1:
            break
        if 0 < ratios[-i] * tot < 1:
            cnt[-i] += 1
            cnt[0] -= 1
    return cnt


def test_per_user_parts_are_recboles_and_never_leave_a_user_without_training():
    totals = np.arange(1, 80)
    counts = part_sizes(totals, (0.8, 0.1, 0.1))
    assert counts.tolist() == [_recbole_split_ids(int(t), [0.8, 0.1, 0.1]) for t in totals]
    assert (counts[:, 0] >= 1).all()
    assert all(counts[t - 1, 1] == int(0.1 * t) == counts[t - 1, 2] for t in range(10, 80))


def test_user_splits_cut_each_users_ratings_and_time_puts_the_latest_last():
    rng = np.random.default_rng(0)
    users = np.repeat(np.arange(30), rng.integers(1, 25, 30))
    timestamp = rng.permutation(len(users)).astype(np.int64)
    train, validation, test = split_indices(timestamp, users, DataConfig(split="user_time",
                                                                         split_fractions=(0.8, 0.1, 0.1)))
    assert sorted(np.concatenate([train, validation, test]).tolist()) == list(range(len(users)))
    for user in range(30):
        parts = [rows[users[rows] == user] for rows in (train, validation, test)]
        assert [len(p) for p in parts] == _recbole_split_ids(int(np.sum(users == user)), [0.8, 0.1, 0.1])
        if len(parts[2]):
            assert timestamp[parts[2]].min() > timestamp[np.concatenate(parts[:2])].max()
    train, validation, test = split_indices(timestamp, users, DataConfig(split="user_time", leave_out=1))
    for user in range(30):
        rows = np.flatnonzero(users == user)
        latest = rows[np.argsort(timestamp[rows])]
        expected_test = latest[-1:] if len(rows) >= 2 else []
        expected_validation = latest[-2:-1] if len(rows) >= 3 else []
        assert test[users[test] == user].tolist() == list(expected_test)
        assert validation[users[validation] == user].tolist() == list(expected_validation)
    spec = DataConfig(split="user_random", split_fractions=(0.8, 0.1, 0.1))
    random, again = split_indices(timestamp, users, spec), split_indices(timestamp, users, spec)
    assert all(np.array_equal(a, b) for a, b in zip(random, again))  # seeded


def test_masking_leaves_earlier_parts_out_of_each_users_ranking(tmp_path):
    data = load_dataset(DataConfig(dataset="demo", datasets_dir=str(tmp_path), split="user_random",
                                   split_fractions=(0.8, 0.1, 0.1), max_ratings=6000), log=lambda *_: None)
    model = small_model(data, ("timestamp",))
    train = TrainConfig(exclude_seen=True, queries="per_user")
    for part, masked in (("validation", ("train",)), ("test", ("train", "validation"))):
        examples = catalogue.EvaluationSet.of(data, part, train)
        ranks = catalogue.example_ranks(model, data, examples)
        queries = model.query_tower(data.query_inputs(examples.query_rows)).numpy()
        scores = queries @ model.candidate_embeddings().numpy().T
        for i, row in enumerate(examples.rows[:200]):
            user = data.user[row]
            hidden = {int(data.movie[r]) for p in masked for r in getattr(data, p) if data.user[r] == user}
            hidden.discard(int(data.movie[row]))
            mine = scores[i, data.movie[row]]
            shown = np.array([m not in hidden for m in range(data.num_movies)])
            # An untrained tower maps some movies to the same vector (dead ReLUs): exact ties, and float32
            # sums in another order, may fall either side of the true movie's score (the true movie's own
            # matmul score too, as in TFRS's FactorizedTopK, which also compares it with a separate sum).
            surely_higher = np.sum(shown & (scores[i] > mine + 1e-5))
            maybe_higher = np.sum(shown & (scores[i] >= mine - 1e-5))
            assert surely_higher <= ranks[i] <= maybe_higher, (part, row)
        # The query of every example of a user is their last training rating's.
        last = catalogue.last_training_rows(data)
        assert np.array_equal(examples.query_rows, last[data.user[examples.rows]])


def test_the_five_per_user_metrics_by_hand():
    # User 0: held-out ranks 0 and 12; user 1: rank 3; user 2: ranks 15 and 40.
    ranks = np.array([0, 12, 3, 15, 40])
    users = np.array([0, 0, 1, 2, 2])
    values = compute([Metric(f, 10) for f in ("recall", "ndcg", "hit", "mrr", "precision")], ranks, users)
    assert values["recall_10"] == pytest.approx((1 / 2 + 1 + 0) / 3)
    assert values["ndcg_10"] == pytest.approx((1.0 / (1 + 1 / np.log2(3)) + (1 / np.log2(5)) / 1.0 + 0) / 3)
    assert values["hit_10"] == pytest.approx(2 / 3)
    assert values["mrr_10"] == pytest.approx((1 / 1 + 1 / 4 + 0) / 3)
    assert values["precision_10"] == pytest.approx((1 / 10 + 1 / 10 + 0) / 3)


def _tiny(users, items, num_users, num_items):
    users, items = np.asarray(users), np.asarray(items)
    return SimpleNamespace(user=users, movie=items, train=np.arange(len(users)), num_users=num_users,
                           num_movies=num_items)


def test_ease_is_its_closed_form_and_popularity_counts():
    data = _tiny([0, 0, 1, 1, 1, 2, 3, 3], [0, 1, 1, 2, 3, 0, 2, 3], 4, 4)
    x = np.zeros((4, 4))
    x[data.user, data.movie] = 1
    l2 = 2.0
    p = np.linalg.inv(x.T @ x + l2 * np.eye(4))
    b = np.eye(4) - p / np.diag(p)[None, :]
    ease = Ease(l2=l2).fit(data)
    np.testing.assert_allclose(ease.candidate_embeddings().numpy().T, b, atol=1e-6)
    scores = ease.query_tower({"user": np.arange(4)}).numpy() @ ease.candidate_embeddings().numpy().T
    np.testing.assert_allclose(scores, x @ b, atol=1e-5)
    assert np.allclose(np.diag(b), 0)
    popularity = Popularity().fit(data)
    assert popularity.candidate_embeddings().numpy().ravel().tolist() == [2, 2, 2, 2]


def test_ials_recovers_a_planted_low_rank_structure():
    try:
        import implicit  # noqa: F401
    except ImportError:
        assert os.environ.get("CI") != "true", 'CI installs implicit (.ci/run: pip install -e ".[ials]")'
        pytest.skip('implicit is not installed (pip install -e ".[ials]")')
    rng = np.random.default_rng(1)
    users, items = [], []
    for user in range(200):
        group = user % 2  # two tastes: items 0-49 or items 50-99
        chosen = rng.choice(50, 12, replace=False) + 50 * group
        users += [user] * 12
        items += chosen.tolist()
    model = Ials(factors=8, regularization=0.1, alpha=10.0).fit(_tiny(users, items, 200, 100))
    scores = model.query_tower({"user": np.arange(200)}).numpy() @ model.candidate_embeddings().numpy().T
    top = np.argsort(-scores, axis=1)[:, :20]
    own = np.mean([(top[u] // 50 == u % 2).mean() for u in range(200)])
    assert own > 0.95, own


def test_the_tfrs_protocol_is_the_defaults():
    assert build({"experiment": {"protocol": "tfrs"}}).retrieval_runs(_content()) == build({}).retrieval_runs(
        _content())


def _content():
    from recsys_ablate.settings import TrainingContent

    return TrainingContent("f")


@pytest.mark.parametrize("argv, message", [
    (["--split_fractions", "0.8", "0.1", "0.2"], "split_fractions 0.8 0.1 0.2: the shares add up to 1.1"),
    (["--split_fractions", "1", "0"], "training and validation each need a share above 0"),
    (["--protocol", "kaggle"], "argument --protocol: invalid choice: 'kaggle'"),
    (["--reference_models", "knn"],
     "reference model 'knn': unknown; expected some of popularity, ease, ials"),
    (["--compare_to", "ease"], "compare_to ease: name a model of --reference_models (none given)"),
    (["--leave_out", "1"], "leave_out 1: a leave-N-out split is --split user_time"),
    (["--k_core", "1000"], "the filters leave no rating of"),
])
def test_bad_protocol_settings_are_one_line_before_training(tmp_path, capsys, demo_datasets, argv, message):
    assert main(["--dataset", "demo", "--dry_run", "--datasets_dir", demo_datasets, "--saved_models_dir",
                 str(tmp_path / "s"), "--reports_dir", str(tmp_path / "r"), *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err, err


def test_a_recbole_run_is_judged_on_test_beside_its_references(tmp_path, capsys, demo_datasets):
    argv = ["--dataset", "demo", "--protocol", "recbole", "--max_ratings", "20000", "--num_epochs", "2",
            "--eval_every", "1", "--seeds", "2", "--batch_size", "512", "--layer_sizes", "16",
            "--embedding_size", "8", "--reference_models", "popularity", "ease", "--compare_to", "ease",
            "--datasets_dir", demo_datasets, "--saved_models_dir", str(tmp_path / "s"),
            "--reports_dir", str(tmp_path / "r")]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "Final test metrics (mean over seeds)" in out and "reference: ease" in out
    assert "Against reference: ease on NDCG@10 (test)" in out
    (path,) = glob.glob(str(tmp_path / "r" / "*.json"))
    summary = json.load(open(path))
    assert summary["final_numbers_and_verdicts_from"] == "test" and summary["verdict_metric"] == "ndcg_10"
    assert summary["data"]["test"] > 0 and summary["data"]["interactions"] <= 20000
    assert {r["name"] for r in summary["reference_models"]} == {"popularity", "ease"}
    ease = next(r for r in summary["reference_models"] if r["name"] == "ease")
    assert len(ease["tried_on_validation"]) == 7 and "hit_10" in ease["final"] and "mrr_10" in ease["final"]
    comparisons = [c for c in summary["comparisons"] if c["verdict_metric"]]
    assert {c["baseline"] for c in comparisons} == {"reference: ease"} and len(comparisons) == 1
    assert "reference model is deterministic" in comparisons[0]["covers"]
    for model in summary["feature_sets"][0]["models"]:
        history = json.load(open(tmp_path / "s" / model["folder"] / "history.json"))
        assert model["final"] == history["test_metrics"] and history["test_metrics"]["test_users"] > 0
        assert os.path.isfile(tmp_path / "s" / model["folder"] / "test.npz")
    page = open(path[:-len(".json")] + ".html").read()
    assert "Final test numbers" in page and "ease (reference)" in page
    # Every block says which part it is on: the verdicts and the trade-off on test, the curves validation.
    assert "Difference to the baseline in NDCG@10 on test" in page and "lists (test)" in page
    assert "seeds and test users" in page and "Validation top-10 accuracy by epoch" in page
    assert "this validation set" not in page and "seeds and validation users" not in page
    # The report command rebuilds it, the references reloaded, not fitted again.
    assert main(["report", *argv]) == 0
    assert "[reference: ease] reloaded from" in capsys.readouterr().out


def test_a_tfrs_run_trains_the_models_it_trained_before_this_work(tmp_path, demo_datasets):
    # The fixture: histories.json of the same command run by the code before protocols existed (c8411f6).
    before = json.load(open(os.path.join(os.path.dirname(__file__), "fixtures", "histories_c8411f6.json")))
    argv = before["command"].split()[3:] + ["--protocol", "tfrs", "--datasets_dir", demo_datasets,
                                            "--saved_models_dir", str(tmp_path / "s"),
                                            "--reports_dir", str(tmp_path / "r")]
    assert main(argv) == 0
    assert sorted(os.listdir(tmp_path / "s")) == sorted(before["models"])  # names carry the identities
    (summary,) = glob.glob(str(tmp_path / "r" / "*.json"))
    summary = json.load(open(summary))
    assert summary["final_numbers_and_verdicts_from"] == summary["curves_and_choices_from"] == "validation"
    for folder, expected in before["models"].items():
        history = json.load(open(tmp_path / "s" / folder / "history.json"))
        assert "test_metrics" not in history
        assert [e["loss"] for e in history["epochs"]] == pytest.approx(expected["loss"], rel=1e-4)
        for now, then in zip(history["evaluations"], expected["evaluations"], strict=True):
            assert now.keys() - {"seconds"} == then.keys()
            for name, value in then.items():  # another CPU may round a near-tie the other way: 3 of 800
                tolerance = 0.004 if name.startswith("top") else 0.02
                assert now[name] == pytest.approx(value, rel=0.01, abs=tolerance), name


def test_a_reference_chosen_at_the_edge_of_its_grid_says_so():
    from recsys_ablate.training.references import FittedReference

    def chosen(name, settings):
        return FittedReference(name, "", None, settings, [], 0.0, False).grid_edges

    assert chosen("ease", {"l2": 30000.0}) == ["l2 30000"] and chosen("ease", {"l2": 50.0}) == ["l2 50"]
    assert chosen("ease", {"l2": 500.0}) == []
    # One factor count only: not an edge; the regularisation at its smallest is.
    assert chosen("ials", {"factors": 64, "regularization": 0.01, "alpha": 1.0}) == ["regularization 0.01"]
    assert chosen("popularity", {}) == []
