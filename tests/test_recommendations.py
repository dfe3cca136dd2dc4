import json

import numpy as np
import pytest

from recsys_ablate.settings import RunConfig, ModelConfig, TrainConfig, LengthConfig
from recsys_ablate.data.encoded import load_dataset
from recsys_ablate.settings import DataConfig
from recsys_ablate.errors import UserInputError
from recsys_ablate.outputs.recommendations import dump_recommendations, top_movies
from recsys_ablate.training.trainer import TrainedModel
from recsys_ablate.training.history import History
from tests.helpers import small_model


def _data(ml1m_dir, tmp_path):
    return load_dataset(DataConfig(data_dir=ml1m_dir, datasets_dir=str(tmp_path / "d")), log=lambda *_: None)


def _model_preferring(data, user_id, movie_id):
    """An id-only, no-dense model whose best movie for `user_id` is known: `movie_id`."""
    model = small_model(data, (), layer_sizes=(), embedding_size=4)
    user_layer = model.query_tower.feature_layers[0]
    movie_layer = model.candidate_tower.feature_layers[0]
    user_vec = user_layer.inner.embeddings.numpy()[user_layer.table.numpy()[data.user_row(user_id)]]
    weights = np.zeros_like(movie_layer.inner.embeddings.numpy())
    weights[:] = -user_vec  # every movie scores below zero ...
    movie_row = int(np.flatnonzero(data.movie_ids == movie_id)[0])
    weights[movie_layer.table.numpy()[movie_row]] = 10 * user_vec  # ... but this one
    movie_layer.inner.embeddings.assign(weights)
    return model


def test_top_movie_is_mapped_to_its_own_title(ml1m_dir, tmp_path):
    data = _data(ml1m_dir, tmp_path)
    # Movie id "10" sits at catalogue row 2: an index/id mix-up would name another title.
    model = _model_preferring(data, "2", "10")
    top = top_movies(model, data, data.user_row("2"), k=3)
    assert top[0]["movie_id"] == "10" and top[0]["title"] == "Matrix, The (1999)"
    assert top[0]["score"] > top[1]["score"]
    assert top[0]["already_rated"] is True


def test_dump_writes_json_and_csv_with_rated_movies(ml1m_dir, tmp_path):
    data = _data(ml1m_dir, tmp_path)
    run = RunConfig(DataConfig(), (), ModelConfig(), TrainConfig(), LengthConfig())
    trained = TrainedModel(run, _model_preferring(data, "3", "7"), History(), "folder", False)
    json_path, csv_path = dump_recommendations([trained], data, "3", str(tmp_path / "r"), "stem",
                                               log=lambda *_: None)
    dump = json.load(open(json_path))
    assert dump["models"][0]["top"][0]["title"] == "Seven (Se7en) (1995)"
    rated = {r["title"]: r["rating"] for r in dump["rated"]}
    # users 3's ratings from the generated ratings.dat: movie i gets 1 + (3 + i) % 5.
    assert rated == {"Toy Story (1995)": 4.0, "City of Lost Children, The (Cité des enfants perdus, La) "
                                              "(1995)": 5.0,
                     "Matrix, The (1999)": 1.0, "Seven (Se7en) (1995)": 2.0}
    lines = open(csv_path, encoding="utf-8").read().splitlines()
    assert lines[0] == "feature_set,rank,movie_id,title,score,already_rated"
    assert lines[1].startswith("baseline (ids only),1,7,Seven (Se7en) (1995),")


def test_unknown_user_and_user_without_ratings(ml1m_dir, tmp_path):
    data = _data(ml1m_dir, tmp_path)
    model = small_model(data)
    with pytest.raises(UserInputError, match=r"user id '42' is not in the dataset; valid ids are 1..9 \(4 "
                                             r"users\)"):
        data.user_row("42")
    with pytest.raises(UserInputError, match="user 9 has no ratings"):
        top_movies(model, data, data.user_row("9"))
