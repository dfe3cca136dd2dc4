import numpy as np
import pytest
import tensorflow as tf

from recsys_ablate.features import FEATURES, check_feature_sets
from recsys_ablate.settings import parse_feature_set
from recsys_ablate.errors import UserInputError
from recsys_ablate.features.query import TIMESTAMP_BUCKETS
from recsys_ablate.data.movie_length import CsvMovieLengthSource, MovieLengthLookup
from tests.helpers import context_for


def test_registry_has_the_documented_features():
    # (Each optional feature also has its shuffled control, NAME~shuffled: tests/test_controls.py.)
    features = {n: c for n, c in FEATURES.items() if not n.endswith("~shuffled")}
    assert {n for n, c in features.items() if c.tower == "query"} == {
        "user_id", "timestamp", "user_age", "user_gender", "user_occupation", "user_placebo"}
    assert {n for n, c in features.items() if c.tower == "candidate"} == {
        "movie_title", "movie_title_text", "movie_genres", "movie_length"}


def test_feature_set_parsing():
    assert parse_feature_set(["None"]) == ()
    assert parse_feature_set(["timestamp", "movie_genres", "timestamp"]) == ("movie_genres", "timestamp")
    with pytest.raises(UserInputError, match="unknown feature 'genres'; valid names are None, movie_genres"):
        check_feature_sets([parse_feature_set(["genres"])])
    with pytest.raises(UserInputError, match="'None' is the id-only baseline and cannot be combined"):
        parse_feature_set(["None", "timestamp"])


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_every_feature_layer_gives_one_row_per_example(name, demo_data):
    _, data = demo_data
    layer = FEATURES[name](context_for(data, embedding_size=8)).layer()
    rows = data.train[:5]
    inputs = {"user": data.user[rows], "timestamp": data.timestamp[rows], "movie": data.movie[rows]}
    out = layer(inputs)
    assert out.shape[0] == 5 and out.dtype == tf.float32
    assert out.shape[1] == FEATURES[name].width(8)  # what the planning's width check reads, unbuilt
    assert np.isfinite(out.numpy()).all()


def test_user_id_vocabulary_comes_from_training_users(demo_data):
    _, data = demo_data
    layer = FEATURES["user_id"](context_for(data)).layer()
    train_users = np.unique(data.user[data.train])
    assert layer.inner.input_dim == len(train_users) + 1
    table = layer.table.numpy()
    assert (table[train_users] > 0).all()
    assert (np.delete(table, train_users) == 0).all()  # other users share the OOV row


def test_timestamp_buckets_span_training_times_only(demo_data):
    _, data = demo_data
    layer = FEATURES["timestamp"](context_for(data)).layer()
    train = data.timestamp[data.train]
    assert layer.origin == train.min()
    boundaries = layer.discretization.bin_boundaries
    assert len(boundaries) == TIMESTAMP_BUCKETS
    assert boundaries[-1] == pytest.approx(train.max() - train.min())


def test_title_text_tokenises_each_catalogue_title_once(demo_data):
    _, data = demo_data
    layer = FEATURES["movie_title_text"](context_for(data)).layer()
    tokens = layer.table.numpy()
    assert tokens.shape[0] == data.num_movies + 1  # plus the unknown-movie row
    assert (tokens[:-1, 0] > 0).all()  # every demo title has a first word
    assert (tokens[-1] == 0).all()


def test_title_text_is_the_mean_of_its_token_embeddings(demo_data):
    _, data = demo_data
    layer = FEATURES["movie_title_text"](context_for(data, embedding_size=8)).layer()
    out = layer({"movie": np.array([0, data.num_movies], np.int32)}).numpy()
    tokens = layer.table.numpy()[0]
    table = layer.inner.embedding.embeddings.numpy()
    np.testing.assert_allclose(out[0], table[tokens[tokens > 0]].mean(axis=0), rtol=1e-6)
    np.testing.assert_array_equal(out[1], np.zeros(8))  # unknown movie: no tokens, zeros (not NaN)


@pytest.mark.parametrize("name", sorted(FEATURES))
def test_every_feature_reads_only_its_declared_inputs(name, demo_data, tmp_path):
    # The model computes a tower once per distinct value of its only input key;
    # a feature reading an undeclared input would silently get wrong values.
    _, data = demo_data
    csv = tmp_path / "lengths.csv"
    csv.write_text("movie_id,runtime_min\n"
                   + "".join(f"{m},{80 + i % 60}\n" for i, m in enumerate(data.movie_ids)))
    cls = FEATURES[name]
    layer = cls(context_for(data, 8, MovieLengthLookup([CsvMovieLengthSource(str(csv))]))).layer()
    rows = np.random.default_rng(2).choice(data.train, 50, replace=False)
    inputs = {"user": data.user[rows], "timestamp": data.timestamp[rows], "movie": data.movie[rows]}
    shuffled = {k: (v if k in cls.inputs else np.random.default_rng(0).permutation(v))
                for k, v in inputs.items()}
    assert any((shuffled[k] != inputs[k]).any() for k in inputs if k not in cls.inputs)
    np.testing.assert_array_equal(layer(inputs).numpy(), layer(shuffled).numpy())
    if name == "user_placebo":  # reads the user and, by design, carries nothing: one vector for all
        out = layer(inputs).numpy()
        np.testing.assert_array_equal(out, np.broadcast_to(out[0], out.shape))
        return
    for key in cls.inputs:  # and every declared input matters
        changed = dict(inputs, **{key: np.random.default_rng(1).permutation(inputs[key])})
        assert not np.array_equal(layer(inputs).numpy(), layer(changed).numpy())


def test_movie_length_uses_lookup_with_known_flag(demo_data, tmp_path):
    _, data = demo_data
    csv = tmp_path / "lengths.csv"
    csv.write_text("movie_id,runtime_min\n1,120\n2,\n3,abc\n")
    lookup = MovieLengthLookup([CsvMovieLengthSource(str(csv))], default_minutes=90)
    lengths = lookup.lengths(data.movie_ids, data.movie_titles)
    assert lengths.minutes[0] == 120 and lengths.known[0]
    assert lengths.minutes[1] == 90 and not lengths.known[1]  # blank -> default
    assert lengths.minutes[2] == 90 and not lengths.known[2]  # garbage -> default
    assert lengths.coverage == {"csv: movie_id": 1, "default (csv: blank or invalid)": 2,
                                "default (csv: not in file)": data.num_movies - 3}
    layer = FEATURES["movie_length"](context_for(data, lookup=lookup)).layer()
    out = layer({"movie": np.array([0, 1], np.int32)}).numpy()
    assert out[0, 1] == 1.0 and out[1, 1] == 0.0
    assert out[0, 0] > out[1, 0]  # 120 minutes normalises above 90
