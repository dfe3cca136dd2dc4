import os

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_recommenders as tfrs

from recsys_ablate.cli import experiment_from_args, main, parse_args
from recsys_ablate.features import FeatureContext
from recsys_ablate.models.retrieval import build_model
from recsys_ablate.data.movie_length import MovieLengthLookup

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(argv):
    return experiment_from_args(parse_args(argv))


def test_experiment_configs_load_as_the_tutorials_describe():
    basic = _config(["--config", os.path.join(ROOT, "experiments", "basic_retrieval.toml")])
    assert basic.feature_sets == ((),) and basic.model.layer_sizes == () and basic.train.batch_size == 8192
    context = _config(["--config", os.path.join(ROOT, "experiments", "context_features.toml")])
    assert context.feature_sets == (("movie_title_text",), ("movie_title_text", "timestamp"))
    assert context.model.layer_sizes == (32,)
    deep = _config(["--config", os.path.join(ROOT, "experiments", "deep_retrieval.toml")])
    assert [r.model.layer_sizes for r in deep.retrieval_runs()] == [(32,), (64, 32), (128, 64, 32)]
    assert deep.train.num_epochs == 300 and deep.train.eval_every == 5
    assert all(c.data.dataset == "movielens/100k" for c in (basic, context, deep))


def test_grid_flags_make_cells():
    config = _config(["--layer_sizes", "32", "--layer_sizes", "none", "--embedding_size", "16", "32",
                      "--learning_rate", "0.1"])
    assert [(r.model.layer_sizes, r.model.embedding_size) for r in config.retrieval_runs()] == [
        ((32,), 16), ((32,), 32), ((), 16), ((), 32)]


def test_no_dense_towers_are_the_basic_retrieval_model(demo_data):
    _, data = demo_data
    context = FeatureContext(data, 32,
                             lambda: MovieLengthLookup([]).lengths(data.movie_ids, data.movie_titles))
    model = build_model((), context, (), seed=3)
    assert model.query_tower.dense_layers == [] and model.candidate_tower.dense_layers == []
    rows = data.train[:64]
    user_layer, movie_layer = model.query_tower.feature_layers[0], model.candidate_tower.feature_layers[0]
    users = user_layer.inner.embeddings.numpy()[user_layer.table.numpy()[data.user[rows]]]
    movies = movie_layer.inner.embeddings.numpy()[movie_layer.table.numpy()[data.movie[rows]]]
    query = model.query_tower({"user": data.user[rows], "timestamp": data.timestamp[rows]}).numpy()
    candidate = model.candidate_tower({"movie": data.movie[rows]}).numpy()
    np.testing.assert_array_equal(query, users)  # the tower output is the 32-wide user embedding
    np.testing.assert_array_equal(candidate, movies)
    assert query.shape[1] == 32
    batch = {"user": data.user[rows], "movie": data.movie[rows], "timestamp": data.timestamp[rows]}
    expected = tfrs.tasks.Retrieval()(tf.constant(users), tf.constant(movies), compute_metrics=False)
    assert float(model.compute_loss(batch)) == pytest.approx(float(expected), rel=1e-6)


def test_unequal_widths_without_dense_layers_fail_before_training(tmp_path, capsys):
    code = main(["--dataset", "demo", "--layer_sizes", "none", "--additional_feature_sets", "timestamp",
                 "--datasets_dir", str(tmp_path / "d"), "--saved_models_dir", str(tmp_path / "s"),
                 "--reports_dir", str(tmp_path / "r")])
    captured = capsys.readouterr()
    assert code == 2
    assert "query of width 65 and a candidate of width 32; add --layer_sizes" in captured.err
    assert "epoch" not in captured.out


def test_two_stage_config_enables_the_ranking_stage():
    config = _config(["--config", os.path.join(ROOT, "experiments", "two_stage.toml")])
    assert config.ranking.enabled and config.ranking.candidates == 100
    assert [r.task for r in config.ranking_runs()] == ["ranking", "ranking"]
    assert config.ranking_runs()[1].features == ("movie_title_text", "timestamp")
