import os

import numpy as np
import pytest

from recsys_ablate.data import encoded
from recsys_ablate.data.encoded import DataSpec, load_dataset
from recsys_ablate.errors import UserInputError

QUIET = dict(log=lambda *_: None)


def spec_for(folder, tmp_path, **kw):
    return DataSpec(data_dir=folder, datasets_dir=str(tmp_path / "datasets"), **kw)


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
    again = encoded.encode(encoded._read_raw(spec), spec, "x")
    np.testing.assert_array_equal(again.train, data.train)
    other = encoded.split_indices(len(data.user), data.timestamp, DataSpec(split_seed=7))
    assert not np.array_equal(other[0], data.train)
    assert abs(len(data.train) / len(data.user) - 0.8) < 1e-4


def test_time_split_trains_on_the_past(demo_data):
    _, data = demo_data
    train, validation = encoded.split_indices(len(data.user), data.timestamp, DataSpec(split="time"))
    assert data.timestamp[train].max() <= data.timestamp[validation].min()


def test_second_load_comes_from_cache_and_source_change_rebuilds(ml1m_dir, tmp_path, monkeypatch):
    spec = spec_for(ml1m_dir, tmp_path)
    first = load_dataset(spec, **QUIET)
    path = encoded.cache_path(spec.resolved(), encoded.fingerprint(spec.resolved()))
    assert os.path.isfile(path)

    def must_not_read(spec):
        raise AssertionError("source read although the cache is current")

    monkeypatch.setattr(encoded, "_read_raw", must_not_read)
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
    path = encoded.cache_path(spec.resolved(), encoded.fingerprint(spec.resolved()))
    with open(path, "wb") as f:
        f.write(b"garbage")
    lines = []
    data = load_dataset(spec, log=lines.append)
    assert len(data.user) == 12 and any("unreadable" in line for line in lines)


def test_max_ratings_is_a_seeded_subset(ml1m_dir, tmp_path):
    data = load_dataset(spec_for(ml1m_dir, tmp_path, max_ratings=6), **QUIET)
    assert len(data.user) == 6


@pytest.mark.parametrize("kw, message", [
    (dict(dataset="nope"), "--dataset nope: unknown; expected one of demo"),
    (dict(dataset="csv"), "--dataset csv needs --interactions"),
    (dict(dataset="grouplens"), "needs --data_dir"),
    (dict(dataset="demo", split="future"), "--split future: unknown"),
])
def test_bad_settings_are_named(kw, message, tmp_path):
    with pytest.raises(UserInputError, match=message):
        load_dataset(DataSpec(datasets_dir=str(tmp_path), **kw), **QUIET)
