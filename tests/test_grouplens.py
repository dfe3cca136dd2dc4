import numpy as np
import pytest

from recsys_ablate.data.grouplens import read_grouplens
from recsys_ablate.errors import UserInputError


def test_ml1m_folder_reads_every_rating_with_tfds_labels(ml1m_dir):
    data = read_grouplens(ml1m_dir)
    data.validate()
    assert data.num_ratings == 12 and data.num_movies == 5
    r = data.ratings
    assert r["user_id"][0] == "1" and r["movie_id"][0] == "1"
    assert r["movie_title"][0] == "Toy Story (1995)"
    genres = [data.genre_names[i] for i in np.flatnonzero(r["movie_genres"][0])]
    assert genres == ["Animation", "Children", "Comedy"]  # "Children's" -> tfds "Children"
    # User 1 is F, age bucket 1, occupation 10 ("K-12 student" -> tfds label "student").
    assert r["user_gender"][0] == 0 and r["user_age"][0] == 1.0 and r["user_occupation"][0] == "student"
    assert r["timestamp"][0] == 978300760 and r["user_rating"][0] == 2.0
    assert "Cité des enfants perdus" in data.movies["movie_title"][1]  # ISO-8859-1 decoded
    # users.dat is read whole: user 9 has no ratings but is a user.
    assert list(data.users["user_id"]) == ["1", "2", "3", "9"]


def test_users_file_matches_tfds_parser_for_every_rating(ml1m_dir, ml100k_dir):
    from tensorflow_datasets.structured import movielens_parsing as parsing

    for folder, parse in ((ml1m_dir, parsing.parse_1m_ratings_data),
                          (ml100k_dir, parsing.parse_100k_ratings_data)):
        users = read_grouplens(folder).users
        row = {u: i for i, u in enumerate(users["user_id"])}
        for _, ex in parse(folder):
            i = row[ex["user_id"]]
            assert users["user_age"][i] == float(ex["bucketized_user_age"])
            assert users["user_gender"][i] == int(ex["user_gender"])
            assert users["user_occupation"][i] == ex["user_occupation_label"]


def test_ml100k_folder_keeps_movies_that_share_a_title(ml100k_dir):
    data = read_grouplens(ml100k_dir)
    data.validate()
    assert data.num_ratings == 8 and data.num_movies == 11
    titles = dict(zip(data.movies["movie_id"], data.movies["movie_title"]))
    assert titles["246"] == titles["268"] == "Chasing Amy (1997)"
    assert titles["1671"] == "Á köldum klaka (Cold Fever) (1994)"
    r = data.ratings
    assert list(r["movie_id"][1:3]) == ["246", "268"]  # two ids, not merged by title
    # u.user "1|24|M|technician": age 24 -> bucket 18; label technician/engineer.
    assert r["user_age"][0] == 18.0 and r["user_gender"][0] == 1
    assert r["user_occupation"][0] == "technician/engineer"
    unknown = list(data.movies["movie_id"]).index("267")
    assert [data.genre_names[i] for i in np.flatnonzero(data.movies["movie_genres"][unknown])] == ["Unknown"]


def test_missing_folder_is_named(tmp_path):
    with pytest.raises(UserInputError, match="no such folder"):
        read_grouplens(str(tmp_path / "nope"))


def test_folder_without_grouplens_files_is_named(tmp_path):
    (tmp_path / "ratings.csv").write_text("a,b\n")
    with pytest.raises(UserInputError, match="not a GroupLens folder; expected ratings.dat"):
        read_grouplens(str(tmp_path))


def test_wrong_separator_is_a_format_error(tmp_path):
    from tests.conftest import write_ml1m

    folder = write_ml1m(tmp_path / "bad", ratings=[("1,1,5,978300760",)])
    with pytest.raises(UserInputError, match=r"bad/ratings.dat line 1: 1 fields, expected 4 "
                                             r"\('::'-separated"):
        read_grouplens(folder)


@pytest.mark.parametrize("bad_line, message", [
    (("1", "1", "five", "978300760"), "ratings.dat line 13: rating 'five' is not a number"),
    (("1", "1", "inf", "978300760"), "ratings.dat line 13: rating 'inf' is not a number"),
    (("1", "999999", "3", "978300760"), "ratings.dat line 13: movie '999999' is not in .*movies.dat"),
    (("77", "1", "3", "978300760"), "ratings.dat line 13: user '77' is not in .*users.dat"),
    (("1", "1", "3", "soon"), "ratings.dat line 13: timestamp 'soon' is not a whole number"),
])
def test_bad_rating_lines_name_file_and_line(tmp_path, bad_line, message):
    from tests.conftest import _ml1m_ratings, write_ml1m

    folder = write_ml1m(tmp_path / "bad", ratings=_ml1m_ratings() + [bad_line])
    with pytest.raises(UserInputError, match=message):
        read_grouplens(folder)


def test_duplicate_movie_id_names_both_lines(tmp_path):
    from tests.conftest import ML1M_MOVIES, write_ml1m

    folder = write_ml1m(tmp_path / "bad", movies=ML1M_MOVIES + [("10", "Matrix Again (2000)", "Action")])
    with pytest.raises(UserInputError, match="movies.dat line 6: movie id '10' repeats line 3"):
        read_grouplens(folder)
