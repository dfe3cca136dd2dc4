"""Bring-your-own interactions from CSV files, read column by column with pyarrow.

`--dataset csv --interactions FILE [--items FILE] [--users FILE]`: one row
per interaction (user, item, optional timestamp and rating), ids as text; an
optional items file adds titles, `|`-separated genres and declared item
columns; an optional users file declared user columns. Column names are
configurable (`CsvColumns`); other columns are declared as features in TOML
(`data/columns.py`).

Files are read as real exports come: UTF-8 with or without a BOM, an unnamed
index column, quoted fields spanning lines, very long fields in columns the
run does not use, timestamps as seconds or ISO-8601 text. pyarrow's
multi-threaded reader parses only the columns the run uses into arrays; no
Python object per row is made (25M rows: BENCHMARKS.md). Errors name file,
line and column; finding the line is done only when there is an error (a
second, Python, pass over the file up to that row).
"""

from __future__ import annotations

import csv
import dataclasses
import gzip
import os
import sys

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from recsys_ablate.data.columns import dictionary_codes, encode_column, parse_numbers, split_values
from recsys_ablate.data.schema import Coded, RawDataset
from recsys_ablate.data.sources import DataSource, register
from recsys_ablate.errors import UserInputError
from recsys_ablate.settings import ColumnFeature, CsvColumns


DEFAULT_COLUMNS = CsvColumns()
# Bytes pyarrow parses per block (one thread each). A row must fit in one
# block, so a file with longer rows (serialized reviews) is read again with
# blocks of its own size.
BLOCK_BYTES = 16 << 20
# Python's csv module (used only to find an error's line) refuses fields over 128 KiB by default.
csv.field_size_limit(sys.maxsize)


class CsvFile:
    """One CSV file, plain or gzip-compressed (as exports often come): its header, and its columns read as
    text on demand.

    Args:
      path: The file.
      flag: The flag that named it, for messages ("--interactions").
    """

    def __init__(self, path: str, flag: str):
        self.path, self.flag = path, flag
        if not os.path.isfile(path):
            raise UserInputError(f"{flag} {path}: no such file; expected a CSV file with a header row")
        with open(path, "rb") as f:
            self.compression = "gzip" if f.read(2) == b"\x1f\x8b" else None
        try:
            with self._open() as f:
                self.header = next(csv.reader(f), [])
        except UnicodeDecodeError:
            raise UserInputError(f"{flag} {path}: not UTF-8 text; expected a UTF-8 CSV file") from None
        except (OSError, EOFError) as err:  # a damaged or truncated .gz
            raise UserInputError(f"{flag} {path}: cannot be decompressed ({err}); download or compress it "
                                 "again") from None
        except csv.Error as err:
            raise UserInputError(f"{flag} {path} line 1: not a valid CSV header ({err})") from None

    def _open(self, errors: str = "strict"):
        """The file as text, decompressed."""
        if self.compression == "gzip":
            return gzip.open(self.path, "rt", newline="", encoding="utf-8-sig", errors=errors)
        return open(self.path, newline="", encoding="utf-8-sig", errors=errors)

    def require(self, columns: list[str], hint: str) -> None:
        missing = [c for c in columns if c not in self.header]
        if missing:
            raise UserInputError(
                f"{self.flag} {self.path}: no column {', '.join(repr(c) for c in missing)} (columns found: "
                f"{', '.join(repr(c) if not c else c for c in self.header) or 'none'}); {hint}")

    def read(self, columns: list[str]) -> pa.Table:
        """The named columns as text (empty cells null), every row."""
        block, size = BLOCK_BYTES, os.path.getsize(self.path) * (1 if self.compression is None else 50)
        while True:
            try:
                return pa_csv.read_csv(
                    pa.input_stream(self.path, compression=self.compression),
                    read_options=pa_csv.ReadOptions(block_size=block),
                    parse_options=pa_csv.ParseOptions(newlines_in_values=True),
                    convert_options=pa_csv.ConvertOptions(
                        include_columns=columns, column_types={c: pa.string() for c in columns},
                        # Only an empty cell is missing: "NA" or "null" may be a real value (a user name).
                        strings_can_be_null=True, null_values=[""]))
            except (pa.ArrowInvalid, OSError, EOFError) as err:
                if "straddling" in str(err) and block < size:
                    block = min(block * 8, size + 1)
                    continue
                self._raise(err)

    def _raise(self, err: Exception):
        message = str(err)
        if "Expected" in message and "columns, got" in message:
            line, fields = self._first_malformed_line()
            raise UserInputError(
                f"{self.flag} {self.path}: line {line} has {fields} fields but the header names "
                f"{len(self.header)}; quote values that contain commas, or remove the line") from None
        if "UTF8" in message or "UTF-8" in message:
            raise UserInputError(
                f"{self.flag} {self.path}: not UTF-8 text; expected a UTF-8 CSV file") from None
        if isinstance(err, (OSError, EOFError)):
            raise UserInputError(f"{self.flag} {self.path}: cannot be decompressed "
                                 f"({message.splitlines()[0]}); download or compress it again") from None
        raise UserInputError(f"{self.flag} {self.path}: not valid CSV ({message.splitlines()[0]})") from None

    def _rows(self):
        """(line number, fields) of each row after the header, as Python's csv module sees them."""
        with self._open(errors="replace") as f:
            reader = csv.reader(f)
            next(reader, None)
            line = reader.line_num + 1
            for fields in reader:
                if fields:  # blank lines are skipped, as pyarrow does
                    yield line, fields
                line = reader.line_num + 1

    def _first_malformed_line(self) -> tuple[int, int]:
        width = len(self.header)
        return next(((line, len(fields)) for line, fields in self._rows() if len(fields) != width), (0, 0))

    def line_of(self, row: int) -> int:
        """The line on which data row `row` (0-based) starts."""
        for index, (line, _) in enumerate(self._rows()):
            if index == row:
                return line
        return row + 2

    def where(self, row: int) -> str:
        return f"{self.flag} {self.path} line {self.line_of(row)}"


def required_text(table: pa.Table, column: str, file: CsvFile) -> pa.ChunkedArray:
    """A column whose every cell must be filled, whitespace trimmed."""
    values = pc.utf8_trim_whitespace(table[column])
    empty = pc.or_kleene(pc.is_null(values), pc.equal(values, ""))
    if pc.any(empty).as_py():
        row = int(np.flatnonzero(empty.to_numpy(zero_copy_only=False))[0])
        raise UserInputError(f"{file.flag} {file.path}: empty value in column {column!r} on line "
                             f"{file.line_of(row)}")
    return values


def _float_column(table, column: str, file: CsvFile, what: str) -> np.ndarray:
    values = required_text(table, column, file)
    numbers, bad = parse_numbers(values)
    if bad is not None:
        raise UserInputError(f"{file.flag} {file.path}: column {column!r} line {file.line_of(bad)} is "
                             f"{values[bad].as_py()!r}; expected {what}")
    return numbers


def timestamps(table, column: str, file: CsvFile) -> np.ndarray:
    """Seconds since 1970 (int64) from numbers or ISO-8601 text, mixed freely.

    ISO-8601: a date, or a date and time with "T" or a space, optional
    fractional seconds and an optional zone ("Z", "+02:00"); a time without
    a zone is taken as UTC. Fractions of a second are dropped.
    """
    values = required_text(table, column, file)
    seconds = np.zeros(len(values), np.int64)
    try:
        numeric = pc.cast(values, pa.float64())
        numbers = numeric.to_numpy(zero_copy_only=False)
        if np.isfinite(numbers).all() and (np.abs(numbers) < 2**40).all():
            return np.floor(numbers).astype(np.int64)
    except pa.ArrowInvalid:
        pass
    is_number = pc.match_substring_regex(values, r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
    # A zone follows a time of day ("-02" after a date is the day).
    has_zone = pc.match_substring_regex(values, r"\d\d:\d\d(:\d\d(\.\d*)?)?(Z|[+-]\d\d(:?\d\d)?)$")
    has_zone = pc.and_(has_zone, pc.invert(is_number))
    masks = {"number": is_number, "zoned": has_zone,
             "local": pc.invert(pc.or_(is_number, has_zone))}
    types = {"number": pa.float64(), "zoned": pa.timestamp("us", tz="UTC"), "local": pa.timestamp("us")}
    for kind, mask in masks.items():
        rows = np.flatnonzero(mask.to_numpy(zero_copy_only=False))
        if not len(rows):
            continue
        part = values.take(pa.array(rows))
        try:
            parsed = pc.cast(part, types[kind])
        except pa.ArrowInvalid:
            text = part.to_numpy(zero_copy_only=False)
            bad = next(i for i, v in enumerate(text) if not _parses(v, types[kind]))
            raise UserInputError(
                f"{file.flag} {file.path}: column {column!r} line {file.line_of(int(rows[bad]))} is "
                f"{text[bad]!r}; expected seconds since 1970 or an ISO-8601 date/time such as "
                "2019-03-01T10:00:00Z") from None
        if kind == "number":
            numbers = parsed.to_numpy(zero_copy_only=False)
            bad = np.flatnonzero(~(np.abs(numbers) < 2**40))  # NaN, inf and absurd values alike
            if len(bad):
                raise UserInputError(
                    f"{file.flag} {file.path}: column {column!r} line {file.line_of(int(rows[bad[0]]))} is "
                    f"{part[int(bad[0])].as_py()!r}; expected seconds since 1970 or an ISO-8601 date/time")
            seconds[rows] = np.floor(numbers).astype(np.int64)
        else:
            micros = pc.cast(parsed, pa.int64()).to_numpy(zero_copy_only=False)
            seconds[rows] = np.floor_divide(micros, 1_000_000)
    return seconds


def _parses(text: str, kind) -> bool:
    try:
        pc.cast(pa.array([text]), kind)
        return True
    except pa.ArrowInvalid:
        return False


def _reject_duplicates(user: np.ndarray, item: np.ndarray, timestamp: np.ndarray | None, names: list[str],
                       file: CsvFile) -> None:
    """Duplicate interactions (same user, item and timestamp) are an error.

    They usually come from a file concatenated twice and would silently
    weight those interactions double in training and evaluation.
    """
    pair = user.astype(np.int64) * (int(item.max(initial=0)) + 1) + item
    keys = (pair,) if timestamp is None else (pair, timestamp)
    # Sorted by key, equal keys in file order: a repeat is a row whose key equals the one before it.
    order = np.lexsort((np.arange(len(pair)),) + keys[::-1])
    same = pair[order][1:] == pair[order][:-1]
    if timestamp is not None:
        same &= timestamp[order][1:] == timestamp[order][:-1]
    if same.any():
        repeats = np.flatnonzero(same) + 1
        earliest = repeats[np.argmin(order[repeats])]  # the first repeated line in the file
        group_start = np.flatnonzero(~np.concatenate([[False], same])[:earliest + 1])[-1]
        first, repeat = order[group_start], order[earliest]
        raise UserInputError(
            f"{file.flag} {file.path}: line {file.line_of(int(repeat))} repeats line "
            f"{file.line_of(int(first))} (same {', '.join(names)}); remove duplicate rows")


def _declared_columns(table: pa.Table, features, file: CsvFile) -> dict[str, np.ndarray]:
    return {f.name: encode_column(table[f.column], f, file.where) for f in features}


def named(columns: CsvColumns, *keys: str) -> list[str]:
    """The optional columns among `keys` whose name the user gave (not the default): they must exist, while
    a column left at its default name may be absent (a misspelled --timestamp_column is not ignored)."""
    return [getattr(columns, key) for key in keys
            if getattr(columns, key) is not None and getattr(columns, key) != getattr(DEFAULT_COLUMNS, key)]


def read_csv(interactions: str, items: str | None = None, columns: CsvColumns = DEFAULT_COLUMNS,
             users: str | None = None, features: tuple[ColumnFeature, ...] = ()) -> RawDataset:
    """Reads interaction (and item and user) CSV files into the common schema.

    Args:
      interactions: Path of the interactions CSV.
      items: Optional path of an items CSV (item id, title, genres, declared columns).
      columns: Column names.
      users: Optional path of a users CSV (user id, declared columns).
      features: Declared feature columns (`data/columns.py`).

    Returns:
      The dataset. Users have no demographics (age -1, gender -1,
      occupation ""), and without a timestamp column every timestamp is 0.

    Raises:
      UserInputError: missing file or column, malformed line, empty or
        non-numeric value, or an interaction naming an item (or user) its
        file lacks; each names the file, line and column.
    """
    hint = ("name the right ones with --user_column/--item_column/--timestamp_column/--rating_column/"
            "--title_column, or in [csv_columns]")
    by_file = {name: [f for f in features if f.file == name] for name in ("items", "users", "interactions")}
    for name, path in (("items", items), ("users", users)):
        if by_file[name] and path is None:
            raise UserInputError(f"feature {by_file[name][0].name} reads the {name} file: give --{name} FILE "
                                 f"(or {name} = \"...\" in [data])")
    file = CsvFile(interactions, "--interactions")
    optional = [c for c in (columns.timestamp, columns.rating) if c is not None and c in file.header]
    declared = [f.column for f in by_file["interactions"]]
    file.require([columns.user, columns.item] + declared + named(columns, "timestamp", "rating"), hint)
    table = file.read(list(dict.fromkeys([columns.user, columns.item] + optional + declared)))
    if table.num_rows == 0:
        raise UserInputError(f"--interactions {interactions}: no rows below the header")
    n = table.num_rows
    user_codes, user_values = dictionary_codes(required_text(table, columns.user, file))
    item_codes, item_values = dictionary_codes(required_text(table, columns.item, file))
    timestamp = (timestamps(table, columns.timestamp, file) if columns.timestamp in optional else None)
    _reject_duplicates(user_codes, item_codes, timestamp,
                       [columns.user, columns.item] + ([columns.timestamp] if timestamp is not None else []),
                       file)
    ratings = {
        "user_id": Coded(user_codes - 1, user_values),
        "movie_id": Coded(item_codes - 1, item_values),
        "timestamp": timestamp if timestamp is not None else np.zeros(n, np.int64),
        "user_rating": (_float_column(table, columns.rating, file, "a number").astype(np.float32)
                        if columns.rating in optional else np.full(n, np.nan, np.float32)),
    }
    declared_values = {"interactions": _declared_columns(table, by_file["interactions"], file)}
    del table
    movies, genre_names, declared_values["items"] = _items(items, columns, by_file["items"], item_values,
                                                           interactions)
    user_table = None
    if users is not None:
        user_table, declared_values["users"] = _users(users, columns, by_file["users"], user_values,
                                                      interactions)
    return RawDataset(source=describe(interactions, items, users), ratings=ratings, movies=movies,
                      genre_names=genre_names, users=user_table, declared=declared_values)


def describe(interactions: str, items: str | None, users: str | None) -> str:
    return f"CSV {os.path.abspath(interactions)}" + "".join(
        f" + {os.path.abspath(p)}" for p in (items, users) if p)


def _unique_ids(ids: pa.ChunkedArray, file: CsvFile, what: str) -> np.ndarray:
    values = ids.to_numpy(zero_copy_only=False).astype(str)
    unique, first, counts = np.unique(values, return_index=True, return_counts=True)
    if (counts > 1).any():
        value = unique[np.flatnonzero(counts > 1)[0]]
        rows = np.flatnonzero(values == value)
        raise UserInputError(
            f"{file.flag} {file.path}: line {file.line_of(int(rows[1]))} repeats {what} {str(value)!r} "
            f"of line {file.line_of(int(rows[0]))}; each {what} needs exactly one row")
    return values


def _not_in(needed: np.ndarray, known: np.ndarray, what: str, flag: str, path: str, interactions: str):
    missing = np.setdiff1d(needed, known)
    if len(missing):
        raise UserInputError(
            f"--interactions {interactions}: {what} {str(missing[0])!r} is not in {flag} {path}; "
            "add it there or remove its interactions")


def _items(path, columns: CsvColumns, features, item_values: np.ndarray, interactions: str):
    """(movies table, genre names, declared item columns) from the items file, or from the ids alone."""
    if path is None:
        ids = item_values
        return {"movie_id": ids, "movie_title": ids.copy(),
                "movie_genres": np.zeros((len(ids), 0), np.uint8)}, (), {}
    file = CsvFile(path, "--items")
    file.require([columns.item] + [f.column for f in features] + named(columns, "item_title", "item_genres"),
                 "name them in [csv_columns] or [features]")
    title = columns.item_title if columns.item_title in file.header else None
    genres = columns.item_genres if columns.item_genres in file.header else None
    wanted = [columns.item] + [c for c in (title, genres) if c] + [f.column for f in features]
    table = file.read(list(dict.fromkeys(wanted)))
    ids = _unique_ids(required_text(table, columns.item, file), file, "item")
    _not_in(item_values, ids, "item", "--items", path, interactions)
    titles = required_text(table, title, file).to_numpy(zero_copy_only=False).astype(str) if title else ids
    genre_matrix, genre_names = np.zeros((len(ids), 0), np.uint8), ()
    if genres:
        rows, _, codes, names, _ = split_values(pc.fill_null(table[genres], ""), "|")
        genre_names = tuple(str(n) for n in names)
        genre_matrix = np.zeros((len(ids), len(genre_names)), np.uint8)
        genre_matrix[rows, codes - 1] = 1
    movies = {"movie_id": ids, "movie_title": titles, "movie_genres": genre_matrix}
    return movies, genre_names, _declared_columns(table, features, file)


def _users(path, columns: CsvColumns, features, user_values: np.ndarray, interactions: str):
    """(users table, declared user columns) from the users file."""
    file = CsvFile(path, "--users")
    file.require([columns.user] + [f.column for f in features], "name them in [csv_columns] or [features]")
    table = file.read(list(dict.fromkeys([columns.user] + [f.column for f in features])))
    ids = _unique_ids(required_text(table, columns.user, file), file, "user")
    _not_in(user_values, ids, "user", "--users", path, interactions)
    n = len(ids)
    users = {"user_id": ids, "user_age": np.full(n, -1.0, np.float32), "user_gender": np.full(n, -1, np.int8),
             "user_occupation": np.full(n, "", object)}
    return users, _declared_columns(table, features, file)


@register
class CsvSource(DataSource):
    """`--dataset csv --interactions FILE [--items FILE] [--users FILE]`: your own interactions."""

    names = ("csv",)

    def check(self, spec) -> None:
        if spec.interactions is None:
            raise UserInputError("--dataset csv needs --interactions FILE (a CSV with user and item columns)")

    def label(self, spec) -> str:
        return os.path.splitext(os.path.basename(spec.interactions))[0]

    def files(self, spec) -> dict[str, str]:
        files = {role: path for role, path in (("interactions", spec.interactions), ("items", spec.items),
                                               ("users", spec.users)) if path is not None}
        for role, path in files.items():
            if not os.path.isfile(path):
                raise UserInputError(f"--{role} {path}: no such file; expected a CSV file with a header row")
        return files

    def fingerprint_settings(self, spec) -> dict:
        return {"columns": dataclasses.asdict(spec.csv_columns)}

    def describe(self, spec) -> str:
        return describe(spec.interactions, spec.items, spec.users)

    def read(self, spec) -> RawDataset:
        return read_csv(spec.interactions, spec.items, spec.csv_columns, spec.users, spec.features)
