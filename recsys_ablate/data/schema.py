"""The one in-memory schema every data source produces.

A `RawDataset` holds ratings and a movies table as columns of numpy arrays.

String columns are numpy object arrays (a rating's title refers to the
movies table's string, so a million ratings cost no copies of it).

Ratings (one row per rating, all arrays of equal length):
  user_id          str      the source's user id, as text ("1", "alice"), or
                            `Coded` (codes into the distinct ids: a reader
                            of millions of rows makes no string per row)
  movie_id         str      the source's item id, as text ("1193"), or `Coded`
  timestamp        int64    seconds since the epoch; 0 when the source has none
  user_rating      float32  the rating; NaN when the source has none
  user_age         float32  tfds's `bucketized_user_age` (1, 18, 25, 35, 45,
                            50, 56); -1 when unknown
  user_gender      int8     1 male, 0 female (tfds's `user_gender` is
                            "is male"); -1 when unknown
  user_occupation  str      tfds's `user_occupation_label` name ("student");
                            "" when unknown

The demographic columns are optional (unknown when absent); they are
per-rating for tfds, whose users have no table of their own.

Movies (one row per catalogue item, every item rated or not):
  movie_id         str      as above
  movie_title      str      title exactly as the source spells it
                            ("Toy Story (1995)"); the item id when unknown
  movie_genres     uint8    [M, len(genre_names)] multi-hot over `genre_names`

Users (optional; one row per user, also users without ratings, as in
GroupLens's users file): user_id, user_age, user_gender, user_occupation with
the same meaning as above. Sources without a users table (tfds, CSV) take
each user's demographics from their ratings.

For MovieLens, `genre_names` is tfds's genre `ClassLabel` list, so a dataset
read from GroupLens files and one read through tensorflow-datasets are the
same, value for value.
"""

from __future__ import annotations

import dataclasses

import numpy as np

# tensorflow-datasets `movielens` genre labels, in its ClassLabel order.
MOVIELENS_GENRES: tuple[str, ...] = (
    "Action", "Adventure", "Animation", "Children", "Comedy", "Crime",
    "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "IMAX",
    "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "Unknown", "War",
    "Western", "(no genres listed)",
)

RATING_COLUMNS: tuple[str, ...] = ("user_id", "movie_id", "timestamp", "user_rating")
USER_COLUMNS: tuple[str, ...] = ("user_id", "user_age", "user_gender", "user_occupation")
MOVIE_COLUMNS: tuple[str, ...] = ("movie_id", "movie_title", "movie_genres")


@dataclasses.dataclass(frozen=True)
class Coded:
    """A string column as codes into its distinct values: `values[codes]` is the column.

    Attributes:
      codes: [n] integer index into `values` per row.
      values: [k] the distinct strings.
    """

    codes: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.codes)

    def __getitem__(self, rows) -> "Coded":
        return Coded(self.codes[rows], self.values)


@dataclasses.dataclass
class RawDataset:
    """Ratings and movies of one source, in the schema of this module.

    Attributes:
      source: Human-readable description of where the data came from.
      ratings: Rating columns (see module docstring).
      movies: Movie columns (see module docstring).
      genre_names: Names of the `movie_genres` multi-hot columns.
      users: Optional user columns (see module docstring).
      declared: Declared feature columns by file ("items", "users",
        "interactions"): {feature name: encoded values in the row order of
        the movies table, the users table, the ratings}.
    """

    source: str
    ratings: dict[str, np.ndarray]
    movies: dict[str, np.ndarray]
    genre_names: tuple[str, ...]
    users: dict[str, np.ndarray] | None = None
    declared: dict[str, dict[str, np.ndarray]] = dataclasses.field(default_factory=dict)

    @property
    def num_ratings(self) -> int:
        return len(self.ratings["user_id"])

    @property
    def num_movies(self) -> int:
        return len(self.movies["movie_id"])

    def validate(self) -> None:
        """Raises ValueError if a column is missing or of the wrong length."""
        for names, table, what in ((RATING_COLUMNS, self.ratings, "ratings"),
                                   (MOVIE_COLUMNS, self.movies, "movies")):
            missing = [c for c in names if c not in table]
            if missing:
                raise ValueError(f"{what} table lacks columns {missing}")
            lengths = {c: len(table[c]) for c in names}
            if len(set(lengths.values())) != 1:
                raise ValueError(f"{what} columns differ in length: {lengths}")


def genres_multi_hot(genre_lists, genre_names) -> np.ndarray:
    """Turns lists of genre names into a [n, len(genre_names)] uint8 matrix.

    Args:
      genre_lists: One iterable of genre names per row.
      genre_names: The column order; every name must appear in it.

    Returns:
      The multi-hot matrix.
    """
    column = {name: i for i, name in enumerate(genre_names)}
    out = np.zeros((len(genre_lists), len(genre_names)), np.uint8)
    for row, genres in enumerate(genre_lists):
        for genre in genres:
            out[row, column[genre]] = 1
    return out
