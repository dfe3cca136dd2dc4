"""Bring-your-own interactions from CSV files.

`--dataset csv --interactions FILE [--items FILE]`: one row per interaction
(user, item, optional timestamp and rating), integer or string ids; an
optional items file adds titles and `|`-separated genres. Column names are
configurable (`CsvColumns`).
"""

from __future__ import annotations

import csv
import dataclasses
import os
import sys

import numpy as np

from recsys_ablate.data.schema import RawDataset, genres_multi_hot
from recsys_ablate.data.sources import DataSource, register
from recsys_ablate.errors import UserInputError


@dataclasses.dataclass(frozen=True)
class CsvColumns:
    """Column names in the user's CSV files; None means "not present"."""

    user: str = "user_id"
    item: str = "item_id"
    timestamp: str | None = "timestamp"
    rating: str | None = "rating"
    item_title: str = "title"
    item_genres: str | None = "genres"


# Free-text columns (reviews, descriptions) can exceed csv's 128 KiB default.
csv.field_size_limit(sys.maxsize)


def _read_rows(path: str, required: list[str], flag: str) -> tuple[list[str], list[dict]]:
    if not os.path.isfile(path):
        raise UserInputError(f"{flag} {path}: no such file; expected a CSV file with a header row")
    try:
        with open(path, newline="", encoding="utf-8-sig") as f:
            reader = csv.DictReader(f)
            header = reader.fieldnames or []
            missing = [c for c in required if c not in header]
            if missing:
                raise UserInputError(
                    f"{flag} {path}: no column {', '.join(repr(c) for c in missing)} "
                    f"(columns found: {', '.join(header) or 'none'}); name the right ones with "
                    "--user_column/--item_column/--timestamp_column/--rating_column/--title_column")
            rows = list(reader)
    except UnicodeDecodeError:
        raise UserInputError(f"{flag} {path}: not UTF-8 text; expected a UTF-8 CSV file") from None
    except csv.Error as err:
        raise UserInputError(f"{flag} {path} line {reader.line_num}: not valid CSV ({err})") from None
    for line, row in enumerate(rows, start=2):
        if None in row:  # DictReader's key for fields beyond the header
            raise UserInputError(f"{flag} {path}: line {line} has {len(header) + len(row[None])} fields but "
                                 f"the header names {len(header)}; quote values that contain commas")
    return header, rows


def _column(rows: list[dict], name: str, path: str, dtype, flag: str) -> np.ndarray:
    values = [row[name] for row in rows]
    for line, value in enumerate(values, start=2):
        if value is None or value.strip() == "":
            raise UserInputError(f"{flag} {path}: empty value in column {name!r} on line {line}")
    if dtype is object:
        return np.array([v.strip() for v in values], object)
    try:
        numbers = np.array(values, np.float64)
    except ValueError:
        numbers = None
    low, high = _RANGES.get(dtype, (-np.inf, np.inf))
    ok = None if numbers is None else np.isfinite(numbers) & (numbers >= low) & (numbers <= high)
    if ok is None or not ok.all():
        bad = next(i for i, v in enumerate(values) if not _parses(v, low, high))
        expected = "a number" if dtype is not np.int64 else "a whole number of seconds since 1970"
        raise UserInputError(
            f"{flag} {path}: column {name!r} line {bad + 2} is {values[bad]!r}; expected "
            f"{expected}") from None
    return numbers.astype(dtype)


# Accepted range per column type: timestamps must fit int64 seconds (and be
# plausible), ratings any finite float32.
_RANGES = {np.int64: (-2**40, 2**40), np.float32: (-3.4e38, 3.4e38)}


def _parses(value: str, low: float, high: float) -> bool:
    try:
        number = float(value)
    except ValueError:
        return False
    return bool(np.isfinite(number) and low <= number <= high)


def _reject_duplicates(rows: list[dict], key_columns: list[str], path: str, flag: str) -> None:
    """Duplicate interactions (same user, item and timestamp) are an error.

    They usually come from a file concatenated twice and would silently
    weight those interactions double in training and evaluation.
    """
    first_line = {}
    for line, row in enumerate(rows, start=2):
        key = tuple(row.get(c) for c in key_columns)
        if key in first_line:
            raise UserInputError(
                f"{flag} {path}: line {line} repeats line {first_line[key]} "
                f"(same {', '.join(key_columns)}); remove duplicate rows")
        first_line[key] = line


def read_csv(interactions: str, items: str | None = None,
             columns: CsvColumns = CsvColumns()) -> RawDataset:
    """Reads interaction (and item) CSV files into the common schema.

    Args:
      interactions: Path of the interactions CSV.
      items: Optional path of an items CSV (item id, title, genres).
      columns: Column names.

    Returns:
      The dataset. Users have no demographics (age -1, gender -1,
      occupation ""), and without a timestamp column every timestamp is 0.

    Raises:
      UserInputError: missing file or column, empty or non-numeric value, or
        an interaction naming an item the items file lacks.
    """
    flag = "--interactions"
    header, rows = _read_rows(interactions, [columns.user, columns.item], flag)
    if not rows:
        raise UserInputError(f"{flag} {interactions}: no rows below the header")
    n = len(rows)
    _reject_duplicates(rows, [c for c in (columns.user, columns.item, columns.timestamp) if c in header],
                       interactions, flag)
    ratings = {
        "user_id": _column(rows, columns.user, interactions, object, flag),
        "movie_id": _column(rows, columns.item, interactions, object, flag),
        "timestamp": (_column(rows, columns.timestamp, interactions, np.int64, flag)
                      if columns.timestamp in header else np.zeros(n, np.int64)),
        "user_rating": (_column(rows, columns.rating, interactions, np.float32, flag)
                        if columns.rating in header else np.full(n, np.nan, np.float32)),
        "user_age": np.full(n, -1.0, np.float32),
        "user_gender": np.full(n, -1, np.int8),
        "user_occupation": np.full(n, "", object),
    }
    if items is not None:
        _, item_rows = _read_rows(items, [columns.item, columns.item_title], "--items")
        ids = _column(item_rows, columns.item, items, object, "--items")
        first_line = {}
        for line, item in enumerate(ids, start=2):
            if item in first_line:
                raise UserInputError(f"--items {items}: line {line} repeats item {item!r} of line "
                                     f"{first_line[item]}; each item needs exactly one row")
            first_line[item] = line
        titles = _column(item_rows, columns.item_title, items, object, "--items")
        genre_lists = [
            [g.strip() for g in (row.get(columns.item_genres) or "").split("|") if g.strip()]
            for row in item_rows] if columns.item_genres else [[] for _ in item_rows]
        known = set(ids)
        unknown = next((m for m in ratings["movie_id"] if m not in known), None)
        if unknown is not None:
            raise UserInputError(
                f"--interactions {interactions}: item {unknown!r} is not in --items {items}; "
                "add it there or remove its interactions")
    else:
        ids = np.array(sorted(set(ratings["movie_id"])), object)
        titles, genre_lists = ids.copy(), [[] for _ in ids]
    genre_names = tuple(sorted({g for genres in genre_lists for g in genres}))
    movies = {"movie_id": ids, "movie_title": titles,
              "movie_genres": genres_multi_hot(genre_lists, genre_names)}
    position = {m: i for i, m in enumerate(ids)}
    rows_of = np.fromiter((position[m] for m in ratings["movie_id"]), np.int64, count=n)
    ratings["movie_title"] = titles[rows_of]
    ratings["movie_genres"] = movies["movie_genres"][rows_of]
    source = f"CSV {os.path.abspath(interactions)}" + (f" + {os.path.abspath(items)}" if items else "")
    return RawDataset(source=source, ratings=ratings, movies=movies, genre_names=genre_names)


@register
class CsvSource(DataSource):
    """`--dataset csv --interactions FILE [--items FILE]`: your own interactions."""

    names = ("csv",)

    def check(self, spec) -> None:
        if spec.interactions is None:
            raise UserInputError("--dataset csv needs --interactions FILE (a CSV with user and item columns)")

    def label(self, spec) -> str:
        return os.path.splitext(os.path.basename(spec.interactions))[0]

    def files(self, spec) -> dict[str, str]:
        files = {role: path for role, path in (("interactions", spec.interactions), ("items", spec.items))
                 if path is not None}
        for role, path in files.items():
            if not os.path.isfile(path):
                raise UserInputError(f"--{role} {path}: no such file; expected a CSV file with a header row")
        return files

    def fingerprint_settings(self, spec) -> dict:
        return {"columns": dataclasses.asdict(spec.csv_columns)}

    def read(self, spec) -> RawDataset:
        return read_csv(spec.interactions, spec.items, spec.csv_columns)
