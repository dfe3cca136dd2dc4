import json
import os

import numpy as np
import pytest

from recsys_ablate.ablation import run_ablation
from recsys_ablate.cli import main
from recsys_ablate.settings import ExperimentConfig, ModelConfig, RankingConfig, TrainConfig
from recsys_ablate.data.encoded import load_dataset
from recsys_ablate.settings import DataConfig
from recsys_ablate.models.ranking import predict_ratings
from recsys_ablate.outputs.recommendations import two_stage_movies


# Rating models trained for 8 epochs on the whole demo, then the recommend command: the slow lane.
# One test process (xdist) runs this module, so its module fixture trains once, not once per process.
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("ranking")]


@pytest.fixture(scope="module")
def two_stage(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("two_stage")
    config = ExperimentConfig(
        feature_sets=((), ("movie_genres",)),
        data=DataConfig(dataset="demo", datasets_dir=str(tmp / "datasets")),
        model=ModelConfig(embedding_size=16, layer_sizes=(32, 16)),
        train=TrainConfig(num_epochs=2, eval_every=2, batch_size=2048),
        ranking=RankingConfig(enabled=True, num_epochs=8, batch_size=4096, candidates=50, exclude_rated=True),
        recommend_user="7", saved_models_dir=str(tmp / "saved_models"), reports_dir=str(tmp / "reports"))
    return config, run_ablation(config, log=lambda *_: None)


def test_ranking_model_learns_ratings_better_than_the_mean(two_stage):
    config, result = two_stage
    data = load_dataset(config.data, log=lambda *_: None)
    mean_rmse = float(np.sqrt(np.mean((data.rating[data.validation] - data.rating[data.train].mean()) ** 2)))
    assert len(result.rankers) == 2
    for ranker in result.rankers:
        rmse = ranker.history.final_metrics["rmse"]
        assert [e["epoch"] for e in ranker.history.evaluations] == list(range(1, 9))
        assert rmse < mean_rmse, (ranker.label, rmse, mean_rmse)
        assert os.path.basename(ranker.folder).startswith("ranking_demo_random_e8_")
    page = open(result.report, encoding="utf-8").read()
    assert "Ranking stage (rating prediction" in page and "validation RMSE" in page


def test_two_stage_reranks_the_retrieved_candidates_by_predicted_rating(two_stage):
    config, result = two_stage
    data = load_dataset(config.data, log=lambda *_: None)
    retrieval, ranker = result.trained[1], result.rankers[1]
    row = data.user_row("7")
    picked = two_stage_movies(retrieval.model, ranker.model, data, row, candidates=50, exclude_rated=True)
    # Independently: the 50 best unrated movies by retrieval score, then by predicted rating.
    latest = data.timestamp[data.user == row].max()
    query = retrieval.model.query_tower({"user": np.array([row], np.int32),
                                         "timestamp": np.array([latest])}).numpy()[0]
    scores = retrieval.model.candidate_embeddings().numpy() @ query
    rated = np.unique(data.movie[data.user == row])
    scores[rated] = -np.inf
    retrieved = np.argsort(-scores, kind="stable")[:50]
    predicted = predict_ratings(ranker.model, {"user": np.full(50, row, np.int32),
                                               "timestamp": np.full(50, latest, np.int64)},
                                retrieved.astype(np.int32))
    expected = [data.movie_titles[retrieved[i]] for i in np.argsort(-predicted, kind="stable")[:10]]
    assert [p["title"] for p in picked] == expected
    assert not any(p["already_rated"] for p in picked)
    ratings = [p["predicted_rating"] for p in picked]
    assert ratings == sorted(ratings, reverse=True)
    dump = json.load(open(result.recommendations[0]))
    assert dump["exclude_rated"] is True
    assert [p["title"] for p in dump["models"][1]["two_stage"]] == expected


def test_recommend_command_writes_both_scores(two_stage, tmp_path, capsys):
    config, _ = two_stage
    argv = ["recommend", "7", "--dataset", "demo", "--datasets_dir", config.data.datasets_dir,
            "--saved_models_dir", config.saved_models_dir, "--reports_dir", str(tmp_path / "r"),
            "--num_epochs", "2", "--eval_every", "2", "--embedding_size", "16", "--layer_sizes", "32", "16",
            "--additional_feature_sets", "movie_genres", "--ranking_epochs", "8", "--candidates", "50"]
    capsys.readouterr()
    config_batch = ["--batch_size", "2048"]
    assert main(argv + config_batch) == 0
    out = capsys.readouterr().out
    assert "retrieve 50 then re-rank by predicted rating" in out and "reloaded" in out
    csv_path = next(p for p in (tmp_path / "r").iterdir() if p.suffix == ".csv")
    text = csv_path.read_text(encoding="utf-8")
    assert "two_stage_rank,movie_id,title,retrieval_score,predicted_rating,already_rated" in text
