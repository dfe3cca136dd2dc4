"""Encoded dataset: integer ids, per-user and per-movie tables, a split, a cache.

Every string (user id, movie id, occupation) becomes a contiguous integer
here, once, so nothing downstream touches strings in the training loop or
the input pipeline. The result is cached as one `.npz` under
`datasets/encoded/`, keyed by a fingerprint of the source and the split
settings, so a second run loads in well under a second and a changed source
file is noticed and re-encoded.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import zlib

import numpy as np

from recsys_ablate.data import csv_source, demo, grouplens, tfds_source  # noqa: F401  (register the sources)
from recsys_ablate.data.sources import source_for
from recsys_ablate.data.schema import USER_COLUMNS, Coded, RawDataset
from recsys_ablate.errors import UserInputError
from recsys_ablate.files import save_npz_atomic
from recsys_ablate.settings import SHUFFLED, ColumnFeature, DataConfig
# Fewest ratings a split part may have: metrics and comparisons on none are
# NaN. (Tiny validation sets are allowed; their intervals say how little
# they show.)
MIN_SPLIT_RATINGS = 1
# Bump when the encoding or the cache layout changes.
_CACHE_FORMAT = "4"


# What `--dataset` is when it is not given and no --data_dir is.
DEFAULT_DATASET = "movielens/1m"


def resolve(spec: DataConfig) -> DataConfig:
    """The data settings with what they imply filled in (`--data_dir X` and `--dataset grouplens --data_dir
    X/` name the same data), contradictions rejected by the source they name."""
    if spec.dataset is None:
        named = "grouplens" if spec.data_dir is not None else DEFAULT_DATASET
        spec = dataclasses.replace(spec, dataset=named)
    source = source_for(spec)
    if spec.data_dir is not None and not source.reads_data_dir:
        raise UserInputError(f"--data_dir {spec.data_dir}: --dataset {spec.dataset} reads no folder; leave "
                             "out --data_dir, or use --dataset grouplens for a GroupLens folder")
    spec = source.resolve(spec)
    source_for(spec).check(spec)
    if spec.features and spec.dataset != "csv":
        raise UserInputError(f"[features.{spec.features[0].name}]: declared feature columns are read "
                             "from your CSV files; use them with --dataset csv")
    return spec


def label(spec: DataConfig) -> str:
    """Short readable name of the data, for folder names and reports."""
    return source_for(spec).label(spec)


@dataclasses.dataclass
class EncodedDataset:
    """Integer-encoded ratings with user and movie tables and a split.

    Attributes:
      user: [n] int32 row in the users table of each rating.
      movie: [n] int32 row in the movies table of each rating.
      timestamp: [n] int64 seconds since the epoch.
      rating: [n] float32 (NaN when unknown).
      user_ids: [U] the source's user ids (sorted, numerically when possible).
      user_age: [U] float32 bucketized age, -1 unknown.
      user_gender: [U] int8 1 male, 0 female, -1 unknown.
      user_occupation: [U] int32 row in `occupation_names`.
      occupation_names: Occupation vocabulary ("" is unknown).
      movie_ids, movie_titles: [M] the catalogue, in the source's order.
      movie_genres: [M, G] uint8 multi-hot over `genre_names`.
      genre_names: Names of the genre columns.
      train, validation, test: Row indices of the ratings in each part (test
        empty without a held-out test part).
      source: Description of the source.
      fingerprint: Hash of the source data and split settings.
      declarations: The declared feature columns (`data/columns.py`).
      columns: Their encoded values by feature name: per movie row (items),
        per user row (users) or per rating (interactions).
    """

    user: np.ndarray
    movie: np.ndarray
    timestamp: np.ndarray
    rating: np.ndarray
    user_ids: np.ndarray
    user_age: np.ndarray
    user_gender: np.ndarray
    user_occupation: np.ndarray
    occupation_names: np.ndarray
    movie_ids: np.ndarray
    movie_titles: np.ndarray
    movie_genres: np.ndarray
    genre_names: np.ndarray
    train: np.ndarray
    validation: np.ndarray
    source: str
    fingerprint: str
    declarations: tuple[ColumnFeature, ...] = ()
    columns: dict[str, np.ndarray] = dataclasses.field(default_factory=dict)
    test: np.ndarray = dataclasses.field(default_factory=lambda: np.zeros(0, np.int64))

    @property
    def num_users(self) -> int:
        return len(self.user_ids)

    @property
    def num_movies(self) -> int:
        return len(self.movie_ids)

    @property
    def context_names(self) -> tuple[str, ...]:
        """Declared interaction columns: tower inputs fed per example, like the timestamp."""
        return tuple(f.name for f in self.declarations if f.file == "interactions")

    def query_inputs(self, rows, keys=None) -> dict[str, np.ndarray]:
        """The query tower's inputs of ratings `rows`: user row, timestamp, interaction columns.

        Args:
          rows: Rating rows (an index array or a slice).
          keys: Only these inputs (default: all).
        """
        inputs = {"user": self.user[rows], "timestamp": self.timestamp[rows],
                  **{name: self.columns[name][rows] for name in self.context_names}}
        # The per-example inputs of shuffled controls (features/controls.py): each column permuted across
        # every rating, by a permutation fixed by its name.
        per_rating = ("timestamp",) + self.context_names
        inputs.update({name + SHUFFLED: self.shuffled(name)[rows] for name in per_rating
                       if keys is None or name + SHUFFLED in keys})
        return inputs if keys is None else {k: v for k, v in inputs.items() if k in keys}

    def shuffled(self, name: str) -> np.ndarray:
        """[n] a per-rating column ("timestamp" or a declared interaction column) permuted across ratings
        (`shuffle_order`), computed once per dataset."""
        cache = self.__dict__.setdefault("_shuffled", {})
        if name not in cache:
            column = self.timestamp if name == "timestamp" else self.columns[name]
            cache[name] = column[shuffle_order(name, len(column))]
        return cache[name]

    def statistics(self) -> dict:
        """Users, items, interactions and each part's size, as a paper's data table states them."""
        return {"users": int(len(np.unique(self.user))), "items": int(len(np.unique(self.movie))),
                "catalogue": self.num_movies, "interactions": int(len(self.user)),
                "train": int(len(self.train)), "validation": int(len(self.validation)),
                "test": int(len(self.test))}

    def user_row(self, user_id: str) -> int:
        """Row of a source user id in the users table.

        Raises:
          UserInputError: naming the id and the valid ones.
        """
        rows = np.flatnonzero(self.user_ids == str(user_id))
        if len(rows) == 0:
            raise UserInputError(
                f"user id {user_id!r} is not in the dataset; valid ids are {_describe_ids(self.user_ids)}")
        return int(rows[0])

    def latest_rating(self, user_row: int) -> int:
        """The rating row of a user's latest rating (whose context a recommendation for them uses).

        Raises:
          UserInputError: the user has no ratings.
        """
        rated = np.flatnonzero(self.user == user_row)
        if len(rated) == 0:
            raise UserInputError(
                f"user {self.user_ids[user_row]} has no ratings, so there is nothing to recommend from; "
                "pick a user who rated movies")
        return int(rated[np.argmax(self.timestamp[rated])])


def shuffle_order(name: str, size: int) -> np.ndarray:
    """[size] the permutation a shuffled control of feature `name` applies to its rows or ratings: seeded by
    the name alone, so it is the same in every process and run on the same data."""
    return np.random.default_rng(zlib.crc32(name.encode())).permutation(size)


def train_movie_counts(data) -> np.ndarray:
    """[M] training ratings of each movie: the frequency the logQ correction takes as the sampling
    probability and the popularity the trade-off metrics measure against."""
    return np.bincount(data.movie[data.train], minlength=data.num_movies)


def _describe_ids(ids: np.ndarray) -> str:
    if all(i.isdigit() for i in ids[:1000]) and all(i.isdigit() for i in ids):
        numbers = [int(i) for i in ids]  # Python ints: ids may exceed 64 bits
        return f"{min(numbers)}..{max(numbers)} ({len(ids)} users)"
    return f"{', '.join(ids[:5])}, ... ({len(ids)} users)"


def _sorted_ids(values) -> np.ndarray:
    unique = sorted(set(values))
    if all(v.isdigit() for v in unique):
        unique.sort(key=int)
    return np.array(unique, dtype=str)


def _codes(column) -> tuple[np.ndarray, np.ndarray]:
    """(per-row codes, distinct values) of an id column given as strings or `Coded`."""
    if isinstance(column, Coded):
        return column.codes, np.asarray(column.values, str)
    values, codes = np.unique(np.asarray(column, str), return_inverse=True)
    return codes, values


def _rows_of(values: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """Row in `ids` of each of `values` (distinct values: one dict lookup each, not one per rating); -1 if
    absent."""
    row = {v: i for i, v in enumerate(ids)}
    return np.array([row.get(v, -1) for v in values], np.int64)


def encode(raw: RawDataset, spec: DataConfig, fingerprint: str) -> EncodedDataset:
    """Encodes a raw dataset, filters it and splits it.

    Args:
      raw: The dataset in the common schema.
      spec: Split and filter settings, `max_ratings` and the declared feature columns.
      fingerprint: Recorded in the result.

    Returns:
      The encoded dataset; with `max_ratings`, a seeded subset of the ratings;
      with `min_rating` or `k_core`, only the ratings, users and items left.
    """
    raw.validate()
    ratings = raw.ratings
    keep = np.arange(raw.num_ratings)
    if spec.max_ratings is not None and spec.max_ratings < raw.num_ratings:
        rng = np.random.default_rng(spec.split_seed)
        keep = np.sort(rng.choice(raw.num_ratings, spec.max_ratings, replace=False))

    movie_ids = np.array(raw.movies["movie_id"], dtype=str)
    movie_codes, movie_values = _codes(ratings["movie_id"])
    value_row = _rows_of(movie_values, movie_ids)
    if (value_row < 0).any():
        raise UserInputError(f"{raw.source}: item {movie_values[np.argmin(value_row)]!r} has ratings but is "
                             "not in the items file")
    movie = value_row[movie_codes]
    user_codes, user_values = _codes(ratings["user_id"])
    rating = np.asarray(ratings["user_rating"]).astype(np.float32)
    movies = {"ids": movie_ids, "titles": np.array(raw.movies["movie_title"], dtype=str),
              "genres": raw.movies["movie_genres"].astype(np.uint8), **raw.declared.get("items", {})}
    if spec.min_rating is not None or spec.k_core is not None:
        keep = keep[kept_by_filters(user_codes[keep], movie[keep], rating[keep], spec)]
        # The catalogue is what is left (RecBole remaps ids to the filtered interactions the same way).
        kept_movies = np.unique(movie[keep])
        movies = {name: values[kept_movies] for name, values in movies.items()}
        new_row = np.full(len(movie_ids), -1)
        new_row[kept_movies] = np.arange(len(kept_movies))
        movie = new_row[movie]
    movie = movie[keep].astype(np.int32)

    user_codes = user_codes[keep]
    if raw.users is not None:
        users = raw.users
        if spec.min_rating is not None or spec.k_core is not None:  # the users left
            left = np.isin(np.asarray(users["user_id"], str), user_values[np.unique(user_codes)])
            users = {name: np.asarray(values)[left] for name, values in users.items()}
    else:  # demographics (if any) from each user's first rating
        present, first = np.unique(user_codes, return_index=True)
        rows = keep[first]
        users = {"user_id": user_values[present],
                 **{c: ratings[c][rows] for c in USER_COLUMNS[1:] if c in ratings}}
    table_ids = np.asarray(users["user_id"], str)
    user_ids = _sorted_ids(table_ids)
    by_id = _rows_of(user_ids, table_ids)
    value_row = _rows_of(user_values, user_ids)
    if (value_row[np.unique(user_codes)] < 0).any():
        missing = user_values[np.unique(user_codes)][value_row[np.unique(user_codes)] < 0][0]
        raise UserInputError(f"{raw.source}: user {missing!r} has ratings but is not in the users file")
    user = value_row[user_codes].astype(np.int32)
    num_users = len(user_ids)
    occupations = np.asarray(users.get("user_occupation", np.full(num_users, "", object)), str)[by_id]
    occupation_names = np.array(sorted(set(occupations) | {""}), dtype=str)

    timestamp = np.asarray(ratings["timestamp"])[keep].astype(np.int64)
    train, validation, test = split_indices(timestamp, user, spec)
    _check_parts(spec, len(timestamp), train, validation, test)
    declared = raw.declared
    columns = {**{n: v[keep] for n, v in declared.get("interactions", {}).items()},
               **{n: v[by_id] for n, v in declared.get("users", {}).items()},
               **{n: movies[n] for n in declared.get("items", {})}}
    return EncodedDataset(
        user=user, movie=movie, timestamp=timestamp, rating=rating[keep],
        user_ids=user_ids,
        user_age=np.asarray(users.get("user_age", np.full(num_users, -1.0)))[by_id].astype(np.float32),
        user_gender=np.asarray(users.get("user_gender", np.full(num_users, -1)))[by_id].astype(np.int8),
        user_occupation=np.searchsorted(occupation_names, occupations).astype(np.int32),
        occupation_names=occupation_names,
        movie_ids=movies["ids"], movie_titles=movies["titles"], movie_genres=movies["genres"],
        genre_names=np.array(raw.genre_names, dtype=str),
        train=train, validation=validation, test=test, source=raw.source, fingerprint=fingerprint,
        declarations=spec.features, columns=columns)


def kept_by_filters(users: np.ndarray, items: np.ndarray, ratings: np.ndarray,
                    spec: DataConfig) -> np.ndarray:
    """[n] which ratings `min_rating` and the iterative `k_core` keep.

    The k-core removes, in rounds, every rating of a user or an item with
    fewer than k ratings left, until none has (RecBole's
    `_filter_by_inter_num`: users and items counted in the same round). The
    result is the unique largest set where every user and item has k or more.

    Raises:
      UserInputError: nothing is left, naming the settings.
    """
    kept = np.ones(len(users), bool)
    if spec.min_rating is not None:
        kept &= ratings >= spec.min_rating  # NaN (no rating) is below any threshold
    if spec.k_core is not None:
        while kept.any():
            user_counts = np.bincount(users[kept], minlength=users.max() + 1)
            item_counts = np.bincount(items[kept], minlength=items.max() + 1)
            short = kept & ((user_counts[users] < spec.k_core) | (item_counts[items] < spec.k_core))
            if not short.any():
                break
            kept &= ~short
    if not kept.any():
        raise UserInputError(
            f"the filters leave no rating of {len(users):,} (min_rating {spec.min_rating}, k_core "
            f"{spec.k_core}); lower them")
    return np.flatnonzero(kept)


def _check_parts(spec: DataConfig, n: int, train, validation, test) -> None:
    needed = [("training", train), ("validation", validation)] + ([("test", test)] if spec.has_test else [])
    empty = [name for name, rows in needed if len(rows) < MIN_SPLIT_RATINGS]
    if empty:
        sizes = f"{len(train):,} for training, {len(validation):,} for validation" + (
            f", {len(test):,} for test" if spec.has_test else "")
        raise UserInputError(
            f"{label(spec)}: the {spec.split} split of {n:,} ratings "
            f"({_shares(spec)}) leaves {sizes}; {', '.join(empty)} needs at least {MIN_SPLIT_RATINGS}: use "
            "more ratings" + (" (raise --max_ratings)" if spec.max_ratings is not None else "")
            + " or other shares")


def _shares(spec: DataConfig) -> str:
    if spec.leave_out is not None:
        return f"leave {spec.leave_out} out per user"
    if spec.split_fractions is not None:
        return "shares " + " / ".join(f"{f:g}" for f in spec.split_fractions)
    return f"train fraction {spec.train_fraction}"


def part_sizes(total: np.ndarray, fractions) -> np.ndarray:
    """[users, parts] ratings of each part for users with `total` ratings each: RecBole's
    `Dataset._calcu_split_ids`, per user. Every part but the first is int(share x total) (rounded down); a
    part whose share is under one rating gets one, while the first keeps more than one; the first part
    (training) takes the rest."""
    shares = np.asarray(fractions, np.float64) / np.sum(fractions)
    counts = np.floor(shares[None, :] * total[:, None]).astype(np.int64)
    counts[:, 0] = total - counts[:, 1:].sum(axis=1)
    for part in range(len(shares) - 1, 0, -1):  # from the last part, as RecBole's loop
        exact = shares[part] * total
        grow = (counts[:, 0] > 1) & (exact > 0) & (exact < 1)
        counts[grow, part] += 1
        counts[grow, 0] -= 1
    return counts


def split_indices(timestamp: np.ndarray, user: np.ndarray, spec: DataConfig
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Train, validation and test row indices (test empty without a test part).

    "random" shuffles with `split_seed` (the same seed gives the same split);
    "time" trains on the earliest ratings (ties keep file order), so no
    timestamp feature sees the future. Both cut the whole list: by
    `train_fraction` in two parts, or by `split_fractions`. "user_random" and
    "user_time" cut each user's ratings (shuffled, or in time order, the
    latest held out): by `split_fractions` per user (`part_sizes`), or the
    last `leave_out` ratings test and the `leave_out` before validation; a
    user keeps at least one training rating.
    """
    n = len(timestamp)
    empty = np.zeros(0, np.int64)
    if spec.split in ("time", "user_time"):
        order = np.argsort(timestamp, kind="stable")
    else:
        order = np.random.default_rng(spec.split_seed).permutation(n)
    if spec.split in ("random", "time"):
        if spec.split_fractions is None:
            cut = int(round(n * spec.train_fraction))
            return np.sort(order[:cut]), np.sort(order[cut:]), empty
        cuts = np.cumsum([int(round(n * f)) for f in spec.split_fractions[:-1]])
        parts = np.split(order, cuts) + ([] if len(spec.split_fractions) == 3 else [empty])
        return tuple(np.sort(part) for part in parts)
    grouped = order[np.argsort(user[order], kind="stable")]  # by user, each user's ratings in `order`
    _, starts, totals = np.unique(user[grouped], return_index=True, return_counts=True)
    if spec.leave_out is not None:
        held = np.minimum(spec.leave_out, totals - 1)
        counts = np.stack([totals - held - np.minimum(spec.leave_out, totals - 1 - held),
                           np.minimum(spec.leave_out, totals - 1 - held), held], axis=1)
    else:
        counts = part_sizes(totals, spec.split_fractions or (spec.train_fraction, 1 - spec.train_fraction))
    if counts.shape[1] == 2:
        counts = np.concatenate([counts, np.zeros((len(totals), 1), np.int64)], axis=1)
    position = np.arange(n) - np.repeat(starts, totals)  # place of each rating in its user's list
    bounds = np.cumsum(counts, axis=1)
    part = (np.repeat(bounds[:, 0], totals) <= position).astype(np.int8) + (
        np.repeat(bounds[:, 1], totals) <= position)
    return tuple(np.sort(grouped[part == i]) for i in range(3))


def hash_file(path: str) -> str:
    """sha256 of a file's bytes."""
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def fingerprint(spec: DataConfig) -> str:
    """Hash of the data a run trains on: the source's bytes and the split settings.

    Files are hashed by role (ratings.dat, interactions, ...), not by path,
    so the same files under another path give the same fingerprint, and any
    changed byte a new one. tfds datasets are named with their tfds version
    (tfds checks their archives' checksums itself).
    """
    data_source = source_for(spec)
    source = data_source.identity(spec)
    if source is None:
        # The demo and a GroupLens folder are read the same way, so the same
        # bytes are the same data whichever way they were named.
        source = {role.split("/")[-1]: hash_file(path) for role, path in data_source.files(spec).items()}
    settings = {"source": source, "max_ratings": spec.max_ratings, "split": spec.split,
                "train_fraction": spec.train_fraction, "split_seed": spec.split_seed,
                **data_source.fingerprint_settings(spec)}
    # Settings added with held-out test parts and filters count only when set: two-way splits keep the
    # fingerprints (and model identities) they had.
    settings.update({name: getattr(spec, name) for name in ("split_fractions", "leave_out", "min_rating",
                                                            "k_core") if getattr(spec, name) is not None})
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


def cache_path(spec: DataConfig, key: str) -> str:
    """The cache file of the data `key` names, with the declared feature columns it encodes."""
    if spec.features:  # the same data with other declared columns is another cache, not other models
        key = hashlib.sha256((key + "".join(f.digest() for f in spec.features)).encode()).hexdigest()
    return os.path.join(spec.datasets_dir, "encoded",
                        f"{label(spec)}-{spec.split}-{key[:16]}-v{_CACHE_FORMAT}.npz")


def load_dataset(spec: DataConfig, log=print) -> EncodedDataset:
    """Loads the encoded, split dataset, from the cache when it is current.

    Args:
      spec: The data settings.
      log: Where progress lines go.

    Returns:
      The encoded dataset.

    Raises:
      UserInputError: bad settings, missing or malformed source.
    """
    spec = resolve(spec)
    key = fingerprint(spec)
    path = cache_path(spec, key)
    if os.path.isfile(path):
        try:
            data = _load_cache(path)
            # The cache is keyed by content: the same bytes may have been encoded from another path.
            data.source = source_for(spec).describe(spec) or data.source
            return data
        except Exception as err:  # an unreadable cache is rebuilt, never trusted
            log(f"warning: dataset cache {path} is unreadable ({type(err).__name__}); rebuilding it")
    log(f"encoding {label(spec)} (first use; cached afterwards in {path})")
    data = encode(source_for(spec).read(spec), spec, key)
    _save_cache(data, path)
    return data


def _save_cache(data: EncodedDataset, path: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    arrays = {f.name: getattr(data, f.name) for f in dataclasses.fields(data)
              if f.name not in ("columns", "declarations")}
    arrays["source"] = np.array(data.source)
    arrays["fingerprint"] = np.array(data.fingerprint)
    arrays["declarations"] = np.array(json.dumps([dataclasses.asdict(f) for f in data.declarations]))
    arrays.update({f"column:{name}": values for name, values in data.columns.items()})
    save_npz_atomic(path, **arrays)


def _load_cache(path: str) -> EncodedDataset:
    with np.load(path, allow_pickle=False) as f:
        values = {name: f[name] for name in f.files}
    values["source"] = str(values["source"])
    values["fingerprint"] = str(values["fingerprint"])
    values["declarations"] = tuple(ColumnFeature(**f) for f in json.loads(str(values["declarations"])))
    values["columns"] = {name.split(":", 1)[1]: values.pop(name) for name in list(values)
                         if name.startswith("column:")}
    return EncodedDataset(**values)
