"""Feature columns declared in TOML (`[features.NAME]`): what they read and how they are encoded.

A declaration names a file (items, users or interactions), a column and a
kind; reading turns the column into numbers once (`encode_column`), and
`features/declared.py` registers one feature per declaration that reads
those numbers, like the built-in features read genres or timestamps:

  categorical   one value per row (a cuisine, a device)  -> int32 codes, 1..V
  multi_valued  values joined by `separator` (tags, ingredients) -> [rows, L]
                int32 codes, 0-padded
  text          free text (a description) -> the text, tokenised by the feature
  numeric       a number (minutes, calories) -> float64; z-score and/or
                `buckets` quantile buckets fitted on training rows

Missing values (empty cells) stop the run with the file, line and column,
unless the declaration gives a `default`.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from recsys_ablate.errors import UserInputError
from recsys_ablate.settings import ColumnFeature


def encode_column(values: pa.ChunkedArray, feature: ColumnFeature, locate) -> np.ndarray:
    """Encodes one declared column (string values as read) into numbers.

    Args:
      values: The column, as text (nulls for empty cells).
      feature: Its declaration.
      locate: Function(row index) -> "FILE line N" for error messages.

    Returns:
      See the module docstring, per kind.

    Raises:
      UserInputError: an empty cell without a default, or a value that is
        not a number in a numeric column.
    """
    values = pc.utf8_trim_whitespace(values)
    values = pc.if_else(pc.equal(values, ""), pa.scalar(None, pa.string()), values)
    if values.null_count:
        if feature.default is None:
            row = int(np.flatnonzero(pc.is_null(values).to_numpy(zero_copy_only=False))[0])
            raise UserInputError(
                f"{locate(row)}: empty value in column {feature.column!r} (feature {feature.name}); fill it "
                f"or declare a default in [features.{feature.name}], e.g. default = "
                f"{'0' if feature.kind == 'numeric' else chr(34) + 'unknown' + chr(34)}")
        values = pc.fill_null(values, str(feature.default))
    if feature.kind == "numeric":
        return _numbers(values, feature, locate)
    if feature.kind == "text":
        return values.to_numpy(zero_copy_only=False).astype(str)
    if feature.kind == "categorical":
        return dictionary_codes(values)[0]
    rows, position, codes, _, width = split_values(values, feature.separator)
    padded = np.zeros((len(values), max(width, 1)), np.int32)
    padded[rows, position] = codes
    return padded


def split_values(values, separator: str):
    """Splits multi-valued cells ("a^b^c") into their values; empty ones ("a^^b") are left out.

    Returns:
      (row of each value, its position in the cell, its code 1..V, the V
      sorted distinct values, the most values a cell holds).
    """
    lists = pc.split_pattern(values, separator)
    flat = pc.utf8_trim_whitespace(pc.list_flatten(lists))
    lengths = pc.list_value_length(lists).to_numpy(zero_copy_only=False).astype(np.int64)
    rows = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(len(rows)) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    named = pc.not_equal(flat, "").to_numpy(zero_copy_only=False).astype(bool)
    codes, names = (dictionary_codes(flat.filter(pa.array(named))) if named.any()
                    else (np.zeros(0, np.int32), np.zeros(0, str)))
    return rows[named], position[named], codes, names, int(lengths.max(initial=0))


def dictionary_codes(values) -> tuple[np.ndarray, np.ndarray]:
    """(int32 codes 1..V in sorted-value order, the V sorted values) of a string column."""
    encoded = pc.dictionary_encode(values).combine_chunks() if isinstance(values, pa.ChunkedArray) \
        else pc.dictionary_encode(values)
    dictionary = encoded.dictionary.to_numpy(zero_copy_only=False).astype(str)
    order = np.argsort(dictionary, kind="stable")
    rank = np.empty(len(order), np.int32)
    rank[order] = np.arange(1, len(order) + 1, dtype=np.int32)
    return rank[encoded.indices.to_numpy(zero_copy_only=False)], dictionary[order]


def _numbers(values: pa.ChunkedArray, feature: ColumnFeature, locate) -> np.ndarray:
    numbers, bad = parse_numbers(values, (lambda x: x >= 0) if feature.log else None)
    if bad is not None:
        raise UserInputError(
            f"{locate(bad)}: column {feature.column!r} (feature {feature.name}) is "
            f"{values[bad].as_py()!r}; expected "
            + ("a number of 0 or more (log = true)" if feature.log else "a finite number"))
    return numbers


def parse_numbers(values, valid=None) -> tuple[np.ndarray | None, int | None]:
    """A text column as float64: (numbers, None), or (None, the first row that is not a finite number
    or fails `valid`). pyarrow casts the column; the bad row is searched for only when there is one."""
    try:
        numbers = pc.cast(values, pa.float64()).to_numpy(zero_copy_only=False)
    except pa.ArrowInvalid:
        text = values.to_numpy(zero_copy_only=False)
        return None, next(i for i, v in enumerate(text) if not _finite(v))
    ok = np.isfinite(numbers) & (valid(numbers) if valid is not None else True)
    return (numbers, None) if ok.all() else (None, int(np.flatnonzero(~ok)[0]))


def _finite(text: str) -> bool:
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False
