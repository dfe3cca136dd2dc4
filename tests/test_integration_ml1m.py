"""Integration tests on the real MovieLens-1M subset in ../shared/datasets."""

import json
import os

import numpy as np
import pytest

from recsys_ablate.ablation import run_ablation
from recsys_ablate.settings import ExperimentConfig, ModelConfig, TrainConfig
from recsys_ablate.data.encoded import load_dataset
from recsys_ablate.settings import DataConfig
from tests.conftest import require_shared

pytestmark = [pytest.mark.integration, pytest.mark.slow]


@pytest.fixture(scope="module")
def shared_spec(tmp_path_factory):
    return DataConfig(data_dir=require_shared(), datasets_dir=str(tmp_path_factory.mktemp("datasets")))


def test_real_ml1m_subset_loads_whole_and_right(shared_spec):
    data = load_dataset(shared_spec, log=lambda *_: None)
    assert len(data.user) == 487_650 and data.num_movies == 3_883 and data.num_users == 6_040
    toy = int(np.flatnonzero(data.movie_ids == "1")[0])
    assert data.movie_titles[toy] == "Toy Story (1995)"
    assert list(data.genre_names[data.movie_genres[toy] == 1]) == ["Animation", "Children", "Comedy"]

    folder = shared_spec.data_dir
    with open(os.path.join(folder, "ratings.dat"), encoding="iso-8859-1") as f:
        lines = f.readlines()
    users = {}
    with open(os.path.join(folder, "users.dat"), encoding="iso-8859-1") as f:
        for line in f:
            uid, gender, age, occupation, _ = line.strip().split("::")
            users[uid] = (gender, float(age), int(occupation))
    occupations_1m = {12: "programmer", 4: "student", 10: "student", 7: "executive/managerial"}
    for line_number in (0, 123_456, 487_649):
        uid, mid, rating, timestamp = lines[line_number].strip().split("::")
        row = line_number  # every rating kept, in file order
        assert data.user_ids[data.user[row]] == uid and data.movie_ids[data.movie[row]] == mid
        assert data.timestamp[row] == int(timestamp) and data.rating[row] == float(rating)
        gender, age, occupation = users[uid]
        assert data.user_age[data.user[row]] == age
        assert data.user_gender[data.user[row]] == (gender == "M")
        if occupation in occupations_1m:
            name = data.occupation_names[data.user_occupation[data.user[row]]]
            assert name == occupations_1m[occupation]


def test_harness_on_real_data_beats_chance_by_far(shared_spec, tmp_path):
    config = ExperimentConfig(
        feature_sets=((), ("movie_genres", "timestamp")), data=shared_spec,
        model=ModelConfig(embedding_size=32, layer_sizes=(64, 32)),
        train=TrainConfig(num_epochs=3, eval_every=1, batch_size=2048),
        saved_models_dir=str(tmp_path / "saved_models"), reports_dir=str(tmp_path / "reports"))
    result = run_ablation(config, log=print)
    chance = 100 / 3883
    for trained in result.trained:
        history = json.load(open(os.path.join(trained.folder, "history.json")))
        curve = [e["top_100"] for e in history["evaluations"]]
        assert len(curve) == 3
        assert curve[-1] > 3 * chance, (trained.label, curve)
    assert os.path.getsize(result.report) > 1_000_000


def test_depth_grid_on_real_data_gives_three_labelled_curves(shared_spec, tmp_path):
    import dataclasses
    import re

    from recsys_ablate.settings import build

    config = dataclasses.replace(build({
        "experiment": {"feature_sets": [["timestamp"]], "baseline": False,
                       "saved_models_dir": str(tmp_path / "saved_models"),
                       "reports_dir": str(tmp_path / "reports")},
        "model": {"embedding_size": 32, "layer_sizes": [[32], [64, 32], [128, 64, 32]]},
        "train": {"num_epochs": 2, "eval_every": 1, "batch_size": 2048}}),
        data=dataclasses.replace(shared_spec, max_ratings=120_000))
    result = run_ablation(config, log=print)
    assert [t.run.model.layer_sizes for t in result.trained] == [(32,), (64, 32), (128, 64, 32)]
    page = open(result.report, encoding="utf-8").read()
    for label in ("timestamp | layers 32", "timestamp | layers 64-32", "timestamp | layers 128-64-32"):
        assert f'"name":"{label}"' in page and f"<td>{label}</td>" in page
    curves = page[page.index('id="curves"'):]  # (the trade-off plot above names them too)
    assert len(re.findall(r'"name":"timestamp \| layers [\d-]+"', curves)) == 3
    for trained in result.trained:  # a few epochs on 120k ratings: above chance, not yet far above
        assert trained.history.final_metrics["top_100"] > 100 / 3883
