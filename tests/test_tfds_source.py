import numpy as np
import pytest
import tensorflow as tf
import tensorflow_datasets as tfds

from recsys_ablate.data import tfds_source
from recsys_ablate.data.grouplens import read_grouplens
from recsys_ablate.data.schema import MOVIELENS_GENRES
from recsys_ablate.errors import UserInputError

OCCUPATIONS = ["academic/educator", "artist", "clerical/admin", "customer service", "doctor/health care",
               "entertainment", "executive/managerial", "farmer", "homemaker", "lawyer", "librarian",
               "other/not specified", "programmer", "retired", "sales/marketing", "scientist",
               "self-employed", "student", "technician/engineer", "tradesman/craftsman", "unemployed",
               "writer"]


def _as_tfds_records(folder):
    """The records tfds would store for this folder, encoded as tfds encodes them."""
    from tensorflow_datasets.structured import movielens_parsing as parsing

    ratings = [ex for _, ex in parsing.parse_1m_ratings_data(folder)]
    movies = [ex for _, ex in parsing.parse_1m_movies_data(folder)]

    def genres(rows):
        return tf.ragged.constant([[MOVIELENS_GENRES.index(g) for g in r["movie_genres"]] for r in rows],
                                  dtype=tf.int64)

    ratings_ds = tf.data.Dataset.from_tensor_slices({
        "user_id": [r["user_id"] for r in ratings], "movie_id": [r["movie_id"] for r in ratings],
        "movie_title": [r["movie_title"] for r in ratings], "movie_genres": genres(ratings),
        "timestamp": np.array([int(r["timestamp"]) for r in ratings], np.int64),
        "user_rating": np.array([float(r["user_rating"]) for r in ratings], np.float32),
        "bucketized_user_age": np.array([float(r["bucketized_user_age"]) for r in ratings], np.float32),
        "user_gender": [r["user_gender"] for r in ratings],
        "user_occupation_label": [OCCUPATIONS.index(r["user_occupation_label"]) for r in ratings],
    })
    movies_ds = tf.data.Dataset.from_tensor_slices({
        "movie_id": [m["movie_id"] for m in movies], "movie_title": [m["movie_title"] for m in movies],
        "movie_genres": genres(movies)})
    return ratings_ds, movies_ds


def test_tfds_records_and_grouplens_folder_give_the_same_schema(ml1m_dir):
    from_folder = read_grouplens(ml1m_dir)
    ratings_ds, movies_ds = _as_tfds_records(ml1m_dir)
    from_tfds = tfds_source.records_to_raw(ratings_ds, movies_ds, OCCUPATIONS, "tfds test")
    for column, values in from_folder.ratings.items():
        np.testing.assert_array_equal(from_tfds.ratings[column], values, err_msg=column)
    for column, values in from_folder.movies.items():
        np.testing.assert_array_equal(from_tfds.movies[column], values, err_msg=column)


def test_read_tfds_through_tfds_load_with_mocked_data(tmp_path):
    with tfds.testing.mock_data(num_examples=40):
        data = tfds_source.read_tfds("movielens/100k", str(tmp_path))
    data.validate()
    assert data.num_ratings == 40 and data.num_movies == 40
    assert set(data.ratings["user_occupation"]) <= set(OCCUPATIONS)
    assert data.ratings["movie_genres"].shape == (40, len(MOVIELENS_GENRES))


def test_unknown_tfds_name_lists_the_valid_ones(tmp_path):
    with pytest.raises(UserInputError, match="movielens/1m, movielens/100k"):
        tfds_source.read_tfds("movielens/25m", str(tmp_path))


def test_offline_without_archive_names_the_manual_folder(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise ConnectionError("no network")

    monkeypatch.setattr(tfds_source, "_load", no_network)
    with pytest.raises(UserInputError, match=r"put the original ml-1m.zip into .*downloads/manual"):
        tfds_source.read_tfds("movielens/1m", str(tmp_path))


def test_corrupted_archive_in_manual_folder_is_named(tmp_path):
    manual = tmp_path / "downloads" / "manual"
    manual.mkdir(parents=True)
    (manual / "ml-1m.zip").write_bytes(b"PK\x03\x04 not the real archive" * 50)
    with pytest.raises(UserInputError, match=r"ml-1m.zip is not the original archive "
                                             r"\(NonMatchingChecksumError\)"):
        tfds_source.read_tfds("movielens/1m", str(tmp_path))
