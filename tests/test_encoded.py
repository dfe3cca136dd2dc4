import os

import numpy as np
import pytest

from recsys_ablate.data import encoded
from recsys_ablate.data.sources import source_for
from recsys_ablate.data.encoded import load_dataset
from recsys_ablate.settings import DataConfig
from recsys_ablate.errors import UserInputError

QUIET = dict(log=lambda *_: None)


def spec_for(folder, tmp_path, **kw):
    return DataConfig(data_dir=folder, datasets_dir=str(tmp_path / "datasets"), **kw)


def test_encoding_maps_ids_to_rows_of_the_tables(ml1m_dir, tmp_path):
    data = load_dataset(spec_for(ml1m_dir, tmp_path), **QUIET)
    assert list(data.user_ids) == ["1", "2", "3", "9"]
    assert list(data.movie_ids) == ["1", "2", "10", "7", "3"]  # catalogue order
    assert data.movie_titles[data.movie[2]] == "Matrix, The (1999)"  # user 1's third rating
    assert data.user_ids[data.user[4]] == "2"
    assert len(data.train) + len(data.validation) == 12
    assert len(np.intersect1d(data.train, data.validation)) == 0


def test_same_seed_same_split_other_seed_other_split(demo_data, tmp_path):
    spec, data = demo_data
    again = encoded.encode(source_for(spec).read(spec), spec, "x")
    np.testing.assert_array_equal(again.train, data.train)
    other = encoded.split_indices(data.timestamp, data.user, DataConfig(split_seed=7))
    assert not np.array_equal(other[0], data.train)
    assert abs(len(data.train) / len(data.user) - 0.8) < 1e-4


def test_time_split_trains_on_the_past(demo_data):
    _, data = demo_data
    train, validation, test = encoded.split_indices(data.timestamp, data.user, DataConfig(split="time"))
    assert len(test) == 0
    assert data.timestamp[train].max() <= data.timestamp[validation].min()


def test_second_load_comes_from_cache_and_source_change_rebuilds(ml1m_dir, tmp_path, monkeypatch):
    spec = spec_for(ml1m_dir, tmp_path)
    first = load_dataset(spec, **QUIET)
    path = encoded.cache_path(encoded.resolve(spec), encoded.fingerprint(encoded.resolve(spec)))
    assert os.path.isfile(path)

    def must_not_read(self, spec):
        raise AssertionError("source read although the cache is current")

    monkeypatch.setattr(type(source_for(encoded.resolve(spec))), "read", must_not_read)
    cached = load_dataset(spec, **QUIET)
    np.testing.assert_array_equal(cached.train, first.train)
    assert cached.movie_titles[0] == "Toy Story (1995)"
    monkeypatch.undo()

    with open(os.path.join(ml1m_dir, "ratings.dat"), "a", encoding="iso-8859-1") as f:
        f.write("9::3::4::978300999\n")
    rebuilt = load_dataset(spec, **QUIET)
    assert len(rebuilt.user) == 13


def test_unreadable_cache_is_rebuilt(ml1m_dir, tmp_path):
    spec = spec_for(ml1m_dir, tmp_path)
    load_dataset(spec, **QUIET)
    path = encoded.cache_path(encoded.resolve(spec), encoded.fingerprint(encoded.resolve(spec)))
    with open(path, "wb") as f:
        f.write(b"garbage")
    lines = []
    data = load_dataset(spec, log=lines.append)
    assert len(data.user) == 12 and any("unreadable" in line for line in lines)


def test_max_ratings_is_a_seeded_subset(ml1m_dir, tmp_path):
    data = load_dataset(spec_for(ml1m_dir, tmp_path, max_ratings=6), **QUIET)
    assert len(data.user) == 6


@pytest.mark.parametrize("kw, message", [
    (dict(dataset="nope"), "--dataset nope: unknown; expected one of csv, demo, grouplens, movielens/100k, "
                           "movielens/1m"),
    (dict(dataset="csv"), "--dataset csv needs --interactions"),
    (dict(dataset="grouplens"), "needs --data_dir"),
    (dict(dataset="demo", split="future"), "split future: unknown; expected one of random, time"),
])
def test_bad_settings_are_named(kw, message, tmp_path):
    with pytest.raises(UserInputError, match=message):
        load_dataset(DataConfig(datasets_dir=str(tmp_path), **kw), **QUIET)


def test_a_new_source_is_one_registered_class(tmp_path):
    """Adding a data source is one class: the registry makes it a --dataset value end to end."""
    import dataclasses as dc

    from recsys_ablate.data import sources
    from recsys_ablate.data.schema import MOVIELENS_GENRES, RawDataset, genres_multi_hot

    @sources.register
    class TwoUsers(sources.DataSource):
        names = ("two-users",)

        def identity(self, spec):
            return "two-users v1"

        def read(self, spec):
            n = 6
            ratings = {"user_id": np.array(["a", "a", "a", "b", "b", "b"], object),
                       "movie_id": np.array(["m1", "m2", "m3", "m1", "m2", "m3"], object),
                       "movie_title": np.array(["M1", "M2", "M3"] * 2, object),
                       "timestamp": np.arange(n, dtype=np.int64), "user_rating": np.ones(n, np.float32),
                       "user_age": np.full(n, -1.0, np.float32), "user_gender": np.full(n, -1, np.int8),
                       "user_occupation": np.full(n, "", object),
                       "movie_genres": genres_multi_hot([[]] * n, MOVIELENS_GENRES)}
            movies = {"movie_id": np.array(["m1", "m2", "m3"], object),
                      "movie_title": np.array(["M1", "M2", "M3"], object),
                      "movie_genres": genres_multi_hot([[]] * 3, MOVIELENS_GENRES)}
            return RawDataset("two users", ratings, movies, MOVIELENS_GENRES)

    try:
        spec = dc.replace(DataConfig(dataset="two-users"), datasets_dir=str(tmp_path))
        data = load_dataset(spec, **QUIET)
        assert encoded.label(spec) == "two-users" and data.num_users == 2
        assert list(data.movie_titles) == ["M1", "M2", "M3"]
    finally:
        del sources.SOURCES["two-users"]
