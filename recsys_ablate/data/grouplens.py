"""Reads GroupLens MovieLens folders (ml-1m, ml-100k) exactly as extracted.

The line parsing is tensorflow-datasets' own (`movielens_parsing`), the code
tfds runs when it prepares `movielens/1m-*` and `movielens/100k-*`. Reusing it
makes a dataset read from a local folder identical, title for title and label
for label, to one read through tfds, so models trained from either source are
interchangeable.
"""

from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from recsys_ablate.data.schema import MOVIELENS_GENRES, RawDataset, genres_multi_hot
from recsys_ablate.data.sources import DataSource, register
from recsys_ablate.errors import UserInputError

LAYOUTS = {
    "ml-1m": ("ratings.dat", "movies.dat", "users.dat"),
    "ml-100k": ("u.data", "u.item", "u.user"),
}
_LINE_FORMAT = {
    "ml-1m": "'::'-separated lines (ratings.dat: UserID::MovieID::Rating::Timestamp), ISO-8859-1",
    "ml-100k": "tab-separated u.data and pipe-separated u.item/u.user, ISO-8859-1",
}


def describe(data_dir: str, layout: str) -> str:
    return f"GroupLens {layout} folder {os.path.abspath(data_dir)}"


def detect_layout(data_dir: str) -> str:
    """Returns "ml-1m" or "ml-100k" for a GroupLens folder.

    Raises:
      UserInputError: the folder is missing or holds neither layout.
    """
    if not os.path.isdir(data_dir):
        raise UserInputError(
            f"--data_dir {data_dir}: no such folder; expected a GroupLens folder as extracted "
            "from ml-1m.zip or ml-100k.zip")
    for layout, files in LAYOUTS.items():
        if all(os.path.isfile(os.path.join(data_dir, f)) for f in files):
            return layout
    raise UserInputError(
        f"--data_dir {data_dir}: not a GroupLens folder; expected ratings.dat, movies.dat and "
        "users.dat (ml-1m) or u.data, u.item and u.user (ml-100k)")


# tfds's mappings (movielens_parsing keeps them inside its ratings parsers,
# which only see users who rated). Users without ratings are part of the
# dataset too, so the users file is read here with the same mappings; a test
# checks them against tfds's parser for every user who rated.
_1M_OCCUPATIONS = (
    "other/not specified", "academic/educator", "artist", "clerical/admin",
    "college/grad student", "customer service", "doctor/health care",
    "executive/managerial", "farmer", "homemaker", "K-12 student", "lawyer",
    "programmer", "retired", "sales/marketing", "scientist", "self-employed",
    "technician/engineer", "tradesman/craftsman", "unemployed", "writer")
_100K_OCCUPATIONS = {
    "administrator": "clerical/admin", "artist": "artist", "doctor": "doctor/health care",
    "educator": "academic/educator", "engineer": "technician/engineer",
    "entertainment": "entertainment", "executive": "executive/managerial",
    "healthcare": "doctor/health care", "homemaker": "homemaker", "lawyer": "lawyer",
    "librarian": "librarian", "marketing": "sales/marketing", "none": "other/not specified",
    "other": "other/not specified", "programmer": "programmer", "retired": "retired",
    "salesman": "sales/marketing", "scientist": "scientist", "student": "student",
    "technician": "technician/engineer", "writer": "writer"}
_100K_AGE_THRESHOLDS = (18, 25, 35, 45, 50, 56)


def read_users(data_dir: str, layout: str) -> dict[str, np.ndarray]:
    """Reads users.dat (ml-1m) or u.user (ml-100k) into user columns."""
    path = os.path.join(data_dir, LAYOUTS[layout][2])
    ids, ages, genders, occupations = [], [], [], []
    with open(path, encoding="iso-8859-1") as f:
        for line_number, line in enumerate(f, start=1):
            line = line.strip()
            if not line:
                continue
            try:
                if layout == "ml-1m":
                    user_id, gender, age, occupation, _ = line.split("::")
                    occupation = _1M_OCCUPATIONS[int(occupation)]
                    if occupation in ("K-12 student", "college/grad student"):
                        occupation = "student"
                    age = float(age)
                else:
                    user_id, raw_age, gender, occupation, _ = line.split("|")
                    occupation = _100K_OCCUPATIONS[occupation]
                    age = float(max([1] + [t for t in _100K_AGE_THRESHOLDS if int(raw_age) >= t]))
            except (ValueError, IndexError, KeyError):
                raise UserInputError(
                    f"{path} line {line_number}: not in GroupLens {layout} users format "
                    f"({_USER_FORMAT[layout]})") from None
            ids.append(user_id)
            ages.append(age)
            genders.append(1 if gender == "M" else 0)
            occupations.append(occupation)
    return {"user_id": np.array(ids, object), "user_age": np.array(ages, np.float32),
            "user_gender": np.array(genders, np.int8), "user_occupation": np.array(occupations, object)}


_USER_FORMAT = {"ml-1m": "UserID::Gender::Age::Occupation::Zip-code",
                "ml-100k": "user id|age|gender|occupation|zip code"}


def read_grouplens(data_dir: str) -> RawDataset:
    """Reads an ml-1m or ml-100k folder into the common schema.

    Args:
      data_dir: Folder holding the GroupLens files, unchanged.

    Returns:
      The dataset; every rating in the files is kept.

    Raises:
      UserInputError: missing folder or a file not in the expected format.
    """
    from tensorflow_datasets.structured import movielens_parsing as parsing

    layout = detect_layout(data_dir)
    parse_movies = parsing.parse_1m_movies_data if layout == "ml-1m" else parsing.parse_100k_movies_data
    try:
        movie_rows = [row for _, row in parse_movies(data_dir)]
        rating_columns = _read_ratings(os.path.join(data_dir, LAYOUTS[layout][0]), layout)
        if not len(rating_columns["user_id"]):
            raise UserInputError(f"--data_dir {data_dir}: the ratings file has no ratings")
        return _to_raw(data_dir, layout, movie_rows, rating_columns)
    except (ValueError, KeyError, IndexError, UnicodeError, OverflowError) as err:
        # tfds's parsers name neither file nor line: find them (error path only).
        raise UserInputError(_first_bad_line(data_dir, layout) or (
            f"--data_dir {data_dir}: files are not in GroupLens {layout} format "
            f"(expected {_LINE_FORMAT[layout]}): {type(err).__name__}: {err}")) from None


_RATING_FIELDS = ("user_id", "movie_id", "user_rating", "timestamp")


def _read_ratings(path: str, layout: str) -> dict[str, np.ndarray]:
    """The ratings file's four columns as text, blank lines skipped.

    Read column-wise by pyarrow (the same fields tfds's line parser splits,
    about 20 times faster: ML-1M's first encoding took 15 s); a file pyarrow
    refuses is read line by line, so that a bad line is named
    (`_first_bad_line`).
    """
    with open(path, "rb") as f:
        raw = f.read()
    try:
        table = pa_csv.read_csv(
            pa.py_buffer(raw.replace(b"::", b"\t") if layout == "ml-1m" else raw),
            read_options=pa_csv.ReadOptions(column_names=_RATING_FIELDS, encoding="latin1"),
            parse_options=pa_csv.ParseOptions(delimiter="\t", quote_char=False),
            convert_options=pa_csv.ConvertOptions(column_types={c: pa.string() for c in _RATING_FIELDS}))
        return {c: pc.utf8_trim_whitespace(table[c]).to_numpy(zero_copy_only=False) for c in _RATING_FIELDS}
    except pa.ArrowInvalid:
        fields = [line.split("::" if layout == "ml-1m" else "\t") for _, line in _lines(path) if line]
        if any(len(f) != 4 for f in fields):
            raise ValueError("field count") from None
        return {c: np.array([f[i] for f in fields], object) for i, c in enumerate(_RATING_FIELDS)}


def _to_raw(data_dir: str, layout: str, movie_rows: list, rating_columns: dict) -> RawDataset:
    movies = {
        "movie_id": np.array([m["movie_id"] for m in movie_rows], object),
        "movie_title": np.array([m["movie_title"] for m in movie_rows], object),
        "movie_genres": genres_multi_hot([m["movie_genres"] for m in movie_rows], MOVIELENS_GENRES),
    }
    if len(set(movies["movie_id"])) != len(movies["movie_id"]):
        raise ValueError("duplicate movie id")
    users = read_users(data_dir, layout)
    # Each rating's movie and user by row: a dict lookup per distinct id, not per rating.
    movie_ids, movie_codes = np.unique(rating_columns["movie_id"].astype(str), return_inverse=True)
    position = {m: i for i, m in enumerate(movies["movie_id"])}
    movie_row = np.array([position[m] for m in movie_ids], np.int64)[movie_codes]
    user_ids, user_codes = np.unique(rating_columns["user_id"].astype(str), return_inverse=True)
    user_position = {u: i for i, u in enumerate(users["user_id"])}
    user_row = np.array([user_position[u] for u in user_ids], np.int64)[user_codes]
    ratings = {
        "user_id": users["user_id"][user_row],
        "movie_id": movies["movie_id"][movie_row],
        "movie_title": movies["movie_title"][movie_row],
        "timestamp": rating_columns["timestamp"].astype(np.int64),
        "user_rating": rating_columns["user_rating"].astype(np.float64).astype(np.float32),
        "user_age": users["user_age"][user_row],
        "user_gender": users["user_gender"][user_row],
        "user_occupation": users["user_occupation"][user_row],
        "movie_genres": movies["movie_genres"][movie_row],
    }
    if not np.isfinite(ratings["user_rating"]).all():
        raise ValueError("rating not finite")
    return RawDataset(source=describe(data_dir, layout),
                      ratings=ratings, movies=movies, genre_names=MOVIELENS_GENRES, users=users)


def _lines(path: str):
    """(line number, stripped text) of a GroupLens file, as tfds's parsers read it."""
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            yield number, line.decode("iso-8859-1").strip()


def _first_bad_line(data_dir: str, layout: str) -> str | None:
    """The first line of a GroupLens folder that tfds's parsers cannot read, described, or None.

    Checks what the parsers and the conversion after them assume: field
    counts, unique movie ids, numeric and finite ratings and timestamps,
    ratings naming known movies and users.
    """
    ratings_file, movies_file, users_file = (os.path.join(data_dir, f) for f in LAYOUTS[layout])
    separator = "::" if layout == "ml-1m" else "|"
    movie_fields = 3 if layout == "ml-1m" else 24
    movie_line = {}
    for number, line in _lines(movies_file):
        fields = line.split(separator)
        if len(fields) != movie_fields:
            return (f"{movies_file} line {number}: {len(fields)} fields, expected {movie_fields} "
                    f"({_LINE_FORMAT[layout]})")
        if fields[0] in movie_line:
            return f"{movies_file} line {number}: movie id {fields[0]!r} repeats line {movie_line[fields[0]]}"
        movie_line[fields[0]] = number
    try:
        users = set(read_users(data_dir, layout)["user_id"])
    except UserInputError as err:
        return str(err)
    for number, line in _lines(ratings_file):
        if not line:
            continue  # a blank line (often the last) is no rating
        fields = line.split("::" if layout == "ml-1m" else "\t")
        where = f"{ratings_file} line {number}"
        if len(fields) != 4:
            return f"{where}: {len(fields)} fields, expected 4 ({_LINE_FORMAT[layout]})"
        user, movie, rating, timestamp = fields
        if movie not in movie_line:
            return f"{where}: movie {movie!r} is not in {movies_file}"
        if user not in users:
            return f"{where}: user {user!r} is not in {users_file}"
        try:
            if not np.isfinite(float(rating)):
                raise ValueError
        except ValueError:
            return f"{where}: rating {rating!r} is not a number"
        try:
            np.int64(int(timestamp))
        except (ValueError, OverflowError):
            return f"{where}: timestamp {timestamp!r} is not a whole number of seconds"
    return None


def layout_files(folder: str) -> dict[str, str]:
    """The GroupLens files of a folder by role ("ml-1m/ratings.dat", ...)."""
    layout = detect_layout(folder)
    return {f"{layout}/{name}": os.path.join(folder, name) for name in LAYOUTS[layout]}


@register
class GroupLensSource(DataSource):
    """`--dataset grouplens --data_dir FOLDER`: an extracted ml-1m or ml-100k folder."""

    names = ("grouplens",)
    reads_data_dir = True

    def check(self, spec) -> None:
        if spec.data_dir is None:
            raise UserInputError(
                "--dataset grouplens needs --data_dir PATH (an extracted ml-1m or ml-100k folder)")

    def label(self, spec) -> str:
        return os.path.basename(os.path.abspath(spec.data_dir))

    def files(self, spec) -> dict[str, str]:
        return layout_files(spec.data_dir)

    def describe(self, spec) -> str:
        return describe(spec.data_dir, detect_layout(spec.data_dir))

    def read(self, spec) -> RawDataset:
        return read_grouplens(spec.data_dir)
