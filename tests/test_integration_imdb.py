"""Realistic Cinemagoer check: every ML-1M movie, with distractors, imported for real."""

import os

import pytest

from recsys_ablate.data.imdb_lengths import ImdbMovieLengthSource, import_imdb_files
from tests.conftest import SHARED
from tests.imdb_files import write_imdb_catalogue

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_cinemagoer_finds_the_right_runtime_for_ml1m_movies(tmp_path):
    csv = os.path.join(SHARED, "movie_runtimes_ml1m.csv")
    assert os.path.isfile(csv), f"integration data missing: {csv}"
    expected = write_imdb_catalogue(tmp_path / "tsv", csv)
    assert len(expected) == 3883
    database = str(tmp_path / "imdb.sqlite")
    import_imdb_files(str(tmp_path / "tsv"), database)
    ids = list(expected)
    results = ImdbMovieLengthSource(database, str(tmp_path / "cache")).lookup(
        ids, [expected[i][0] for i in ids])
    got = dict(zip(ids, results))
    with_runtime = [i for i in ids if expected[i][1] is not None]
    right = [i for i in with_runtime if got[i][0] == expected[i][1]]
    wrong = [(expected[i][0], got[i]) for i in with_runtime if i not in right]
    assert len(right) >= 0.99 * len(with_runtime), wrong[:10]
    # The right year exists for every movie, so no match may come from the
    # wrong-year distractor (runtime + 17) or the TV episode (22 minutes).
    assert all(got[i][1].startswith("exact year") for i in ids), \
        [(expected[i][0], got[i]) for i in ids if not got[i][1].startswith("exact year")][:10]
    blank = [i for i in ids if expected[i][1] is None]
    assert all(got[i] == (None, "exact year, no runtime") for i in blank)
