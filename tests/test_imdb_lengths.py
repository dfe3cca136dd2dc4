import sqlite3

import pytest

from recsys_ablate.data import imdb_lengths
from recsys_ablate.errors import UserInputError
from recsys_ablate.data.imdb_lengths import (DatabaseSearches, ImdbMovieLengthSource, import_imdb_files,
                                        parse_movielens_title)
from recsys_ablate.data.movie_length import CsvMovieLengthSource, MovieLengthLookup
from tests.imdb_files import write_imdb_files

TITLES = [
    ("tt0133093", "movie", "The Matrix", "The Matrix", 1999, 136),
    ("tt0133094", "movie", "The Matrix", "The Matrix", 1970, 90),  # same title, other year
    ("tt0112682", "movie", "The City of Lost Children", "La cité des enfants perdus", 1995, 112),
    ("tt0114369", "movie", "Se7en", "Se7en", 1995, 127),
    ("tt5555555", "tvEpisode", "Toy Story", "Toy Story", 1995, 22),  # an episode, not the movie
    ("tt0114709", "movie", "Toy Story", "Toy Story", 1995, 81),
    ("tt0000009", "movie", "No Runtime", "No Runtime", 1990, None),
    ("tt0000010", "movie", "Off By One", "Off By One", 1997, 99),
    ("tt0000011", "movie", "Any Year", "Any Year", 1980, 77),
    ("tt0000100", "movie", "Le Cercle rouge", "Le Cercle rouge", 1970, 140),
    ("tt0000200", "tvSeries", "Only A Series", "Only A Series", 1990, 30),
]
MOVIELENS = {
    "1": "Matrix, The (1999)",
    "2": "City of Lost Children, The (Cité des enfants perdus, La) (1995)",
    "3": "Seven (Se7en) (1995)",
    "4": "Toy Story (1995)",
    "5": "No Runtime (1990)",
    "6": "Off By One (1998)",
    "7": "Any Year (1995)",
    "8": "Red Circle, The (1970)",
    "9": "Only A Series (1990)",
    "10": "Unknown Film (1993)",
}


@pytest.fixture(scope="module")
def database(tmp_path_factory):
    folder = write_imdb_files(tmp_path_factory.mktemp("imdb_tsv"), TITLES,
                              akas=[("tt0000100", "The Red Circle")])
    path = str(tmp_path_factory.mktemp("db") / "imdb.sqlite")
    counts = import_imdb_files(folder, path)
    assert counts["title.basics.tsv.gz"] == len(TITLES)
    return path


def test_movielens_titles_become_imdb_form():
    assert parse_movielens_title("Matrix, The (1999)") == (["The Matrix"], 1999)
    assert parse_movielens_title("City of Lost Children, The (Cité des enfants perdus, La) (1995)") == (
        ["The City of Lost Children", "La Cité des enfants perdus"], 1995)
    assert parse_movielens_title("Seven (Se7en) (1995)") == (["Seven", "Se7en"], 1995)
    assert parse_movielens_title("Appartement, L' (1996)") == (["L'Appartement"], 1996)
    assert parse_movielens_title("Shanghai Triad (a.k.a. Yao a yao) (1995)") == (
        ["Shanghai Triad", "Yao a yao"], 1995)
    assert parse_movielens_title("Untitled") == (["Untitled"], None)


def test_lookups_through_cinemagoer_record_the_rule(database, tmp_path):
    source = ImdbMovieLengthSource(database, cache_dir=str(tmp_path / "cache"))
    got = dict(zip(MOVIELENS, source.lookup(list(MOVIELENS), list(MOVIELENS.values()))))
    assert got["1"] == (136.0, "exact year")  # not the 1970 distractor
    assert got["2"] == (112.0, "exact year")  # via the article-moved English title
    assert got["3"] == (127.0, "exact year")  # via the parenthesised alternative "Se7en"
    assert got["4"] == (81.0, "exact year")  # the movie, not the TV episode
    assert got["5"] == (None, "exact year, no runtime")
    assert got["6"] == (99.0, "year +-1")
    assert got["7"] == (77.0, "title only")
    assert got["8"] == (140.0, "exact year")  # through IMDb's AKA table
    assert got["9"] == (None, "no match")  # a series is not a movie
    assert got["10"] == (None, "no match")


def test_second_run_asks_the_database_nothing(database, tmp_path):
    cache = str(tmp_path / "cache")
    ids, titles = list(MOVIELENS), list(MOVIELENS.values())
    first = ImdbMovieLengthSource(database, cache_dir=cache).lookup(ids, titles)
    before = DatabaseSearches.count
    imdb_lengths._cinemagoer.cache_clear()
    second = ImdbMovieLengthSource(database, cache_dir=cache).lookup(ids, titles)
    assert second == first
    assert DatabaseSearches.count == before


def test_never_crashes_without_a_usable_database(tmp_path):
    ids, titles = list(MOVIELENS), list(MOVIELENS.values())
    missing = ImdbMovieLengthSource(str(tmp_path / "none.sqlite"), cache_dir=str(tmp_path / "c1"))
    assert set(missing.lookup(ids, titles)) == {(None, "no database")}
    incomplete = tmp_path / "incomplete.sqlite"
    sqlite3.connect(incomplete).execute("CREATE TABLE other (x)").connection.commit()
    results = ImdbMovieLengthSource(str(incomplete), cache_dir=str(tmp_path / "c2")).lookup(ids, titles)
    assert {r for _, r in results} == {
        "not a Cinemagoer database (no title_basics table; make it with import-imdb)"}
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not sqlite" * 100)
    results = ImdbMovieLengthSource(str(garbage), cache_dir=str(tmp_path / "c3")).lookup(ids, titles)
    assert all(minutes is None and rule == "not a Cinemagoer database (file is not a database)"
               for minutes, rule in results)


def test_lookup_defaults_and_counts_every_source(database, tmp_path):
    csv = tmp_path / "lengths.csv"
    csv.write_text("movie_id,runtime_min\n9,31\n10,\n")
    lookup = MovieLengthLookup([ImdbMovieLengthSource(database, str(tmp_path / "cache")),
                                CsvMovieLengthSource(str(csv))], default_minutes=95)
    lengths = lookup.lengths(list(MOVIELENS), list(MOVIELENS.values()))
    assert lengths.minutes[8] == 31 and lengths.known[8]  # CSV fills what IMDb lacks
    assert lengths.minutes[4] == 95 and not lengths.known[4]
    assert lengths.coverage == {"imdb: exact year": 5, "imdb: year +-1": 1, "imdb: title only": 1,
                                "csv: movie_id": 1, "default (csv: not in file)": 1,
                                "default (csv: blank or invalid)": 1}
    summary = lengths.summary()
    assert "5 imdb: exact year" in summary and "warning: 2 of 10 movies have no known length" in summary
    assert summary.count("\n") == 1  # one summary warning, not one line per movie


def test_import_without_title_basics_is_named(tmp_path):
    with pytest.raises(UserInputError, match="no title.basics.tsv.gz; download IMDb's"):
        import_imdb_files(str(tmp_path), str(tmp_path / "x.sqlite"))
