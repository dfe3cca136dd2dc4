"""Movie lengths (runtime in minutes) for the `movie_length` feature.

`MovieLengthLookup` answers, for every catalogue movie, its runtime and
whether it is known; movies without a known runtime get a configurable
default (90 minutes) and `known=False`. Lookups never raise for missing data:
the deep-dive script crashed on movies without IMDb technical data.
"""

from __future__ import annotations

import collections
import csv
import dataclasses
import os

import numpy as np

from recsys_ablate.errors import UserInputError
from recsys_ablate.settings import DEFAULT_MINUTES


@dataclasses.dataclass
class MovieLengths:
    """Runtimes for a catalogue, aligned with its movie rows.

    Attributes:
      minutes: [M] float32 runtime, the default where unknown.
      known: [M] bool, whether the runtime came from a source.
      coverage: Count of movies per "source/rule" ("csv", "default", ...).
    """

    minutes: np.ndarray
    known: np.ndarray
    coverage: dict[str, int]

    def digest(self) -> str:
        """Hash of the lengths as the feature sees them (part of a model's identity)."""
        import hashlib

        digest = hashlib.sha256(np.ascontiguousarray(self.minutes, np.float32).tobytes())
        digest.update(np.ascontiguousarray(self.known, bool).tobytes())
        return digest.hexdigest()

    def summary(self) -> str:
        """One line: how many movies got a length from which source and rule."""
        parts = ", ".join(f"{n} {how}" for how, n in sorted(self.coverage.items()))
        line = f"movie lengths for {len(self.minutes)} movies: {parts}"
        unknown = int((~self.known).sum())
        if unknown:
            line += (f"\nwarning: {unknown} of {len(self.minutes)} movies have no known length and get the "
                     "default")
        return line


class MovieLengthSource:
    """One place runtimes come from. Subclasses implement `lookup`."""

    name = "source"

    def lookup(self, movie_ids, titles) -> list[tuple[float | None, str]]:
        """Returns (minutes or None, rule that matched) per movie."""
        raise NotImplementedError


class CsvMovieLengthSource(MovieLengthSource):
    """Runtimes from a CSV with `movie_id` and `runtime_min` columns.

    Args:
      path: The CSV file, e.g. `../shared/datasets/movie_runtimes_ml1m.csv`.
    """

    name = "csv"

    def __init__(self, path: str):
        if not os.path.isfile(path):
            raise UserInputError(f"--movie_lengths_csv {path}: no such file; expected a CSV "
                                 "with movie_id and runtime_min columns")
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            if not {"movie_id", "runtime_min"} <= set(reader.fieldnames or []):
                raise UserInputError(f"--movie_lengths_csv {path}: expected columns movie_id and "
                                     f"runtime_min, found {', '.join(reader.fieldnames or [])}")
            self._minutes = {row["movie_id"].strip(): _minutes(row["runtime_min"]) for row in reader}

    def lookup(self, movie_ids, titles):
        return [(self._minutes.get(str(m)), "movie_id") if self._minutes.get(str(m)) is not None
                else (None, "not in file" if str(m) not in self._minutes else "blank or invalid")
                for m in movie_ids]


def _minutes(value) -> float | None:
    """A runtime as a positive number of minutes, or None for blank/garbage."""
    try:
        minutes = float(str(value).strip())
    except ValueError:
        return None
    return minutes if np.isfinite(minutes) and minutes > 0 else None


class MovieLengthLookup:
    """Looks up runtimes from sources in order, defaulting where none knows.

    Args:
      sources: Tried in order; the first known runtime wins.
      default_minutes: Runtime given to movies no source knows.
    """

    def __init__(self, sources: list[MovieLengthSource] = (), default_minutes: float = DEFAULT_MINUTES):
        self.sources = list(sources)
        self.default_minutes = float(default_minutes)

    def lengths(self, movie_ids, titles) -> MovieLengths:
        """Runtimes for a catalogue, with coverage counts per source and rule.

        Movies no source knows are counted as "default (<source>: <why>)",
        e.g. "default (imdb: no match)".
        """
        n = len(movie_ids)
        minutes = np.full(n, self.default_minutes, np.float32)
        known = np.zeros(n, bool)
        how = np.full(n, "default", object)
        for source in self.sources:
            missing = np.flatnonzero(~known)
            if len(missing) == 0:
                break
            found = source.lookup([movie_ids[i] for i in missing], [titles[i] for i in missing])
            for i, (value, rule) in zip(missing, found):
                if value is not None:
                    minutes[i], known[i], how[i] = value, True, f"{source.name}: {rule}"
                else:
                    how[i] = f"default ({source.name}: {rule})"
        return MovieLengths(minutes, known, dict(collections.Counter(how)))
