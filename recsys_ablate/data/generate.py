"""Generated datasets for the examples and benchmarks (deterministic: same seed, same bytes).

`python -m recsys_ablate generate recipes FOLDER` writes a recipe-site export
(the shape users bring: an unnamed index column, ISO-8601 dates with zones,
`^`-separated ingredients, long serialized review text in a column nothing
reads, quoted fields spanning lines, a BOM) in which some columns carry
planted signal and others none:

  planted  ingredients  (items)  each recipe's cuisine (one of 40) shows in
                                 its ingredients; every user likes one cuisine
           region       (users)  the region of the user's cuisine (italian,
                                 thai, ...: 8 regions of 5 cuisines each)
  none     tags, minutes, calories (items), household (users), device
           (interactions): drawn independently of what a user chooses

Six interactions per user over 6,000 recipes: ids alone see too little to
learn a recipe's or a user's cuisine, so the planted features have room to
help (a feature whose signal the ids already learn from co-occurrence adds
nothing measurable: a first version with a strong time-range preference in
`minutes` over 30 interactions per user showed no gain from `minutes`).

`python -m recsys_ablate generate movielens-shape FILE --ratings N` writes a
ratings CSV of MovieLens-25M's shape (userId,movieId,rating,timestamp;
162,541 users and 62,423 movies at 25M ratings, long-tailed popularity and
activity) and a movies CSV (movieId,title,genres) beside it, for the scale
benchmark (`bench/scale.py`).
"""

from __future__ import annotations

import csv
import os

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from recsys_ablate.files import atomic_path

RECIPES_SEED = 20261124
_CUISINES = tuple(f"{region}{i}" for region in ("italian", "mexican", "indian", "thai", "french", "japanese",
                                                 "greek", "korean") for i in range(5))
_COMMON = tuple(f"staple{i:02d}" for i in range(30))
_TAGS = tuple(f"tag{i:02d}" for i in range(40))
_DEVICES = ("android", "ios", "web", "tablet")
_WORDS = ("easy", "classic", "quick", "grandma's", "spicy", "creamy", "crispy", "simple", "best", "weeknight",
          "sunday", "rustic", "fresh", "golden", "smoky", "zesty")


def write_recipes(folder: str, users: int = 6000, recipes: int = 6000, per_user: int = 6,
                  seed: int = RECIPES_SEED) -> dict[str, str]:
    """Writes interactions.csv, recipes.csv and users.csv of the recipe example.

    Returns:
      {"interactions": path, "items": path, "users": path}.
    """
    rng = np.random.default_rng(seed)
    os.makedirs(folder, exist_ok=True)
    cuisine = rng.integers(len(_CUISINES), size=recipes)
    minutes = np.round(np.exp(rng.normal(3.6, 0.6, size=recipes))).astype(int) + 5
    calories = np.round(rng.lognormal(6.0, 0.4, size=recipes), 1)
    popularity = rng.pareto(1.5, size=recipes) + 1.0
    liked = rng.integers(len(_CUISINES), size=users)
    # Affinity: 4 for the user's cuisine, mild popularity on top. 40 cuisines over 6,000 recipes and six
    # interactions per user: an id sees too few interactions to learn its recipe's cuisine or its user's,
    # the ingredients and the user's region (that of their cuisine) show them.
    score = 4.0 * (cuisine[None, :] == liked[:, None]) + 0.5 * np.log(popularity)[None, :]
    rows = []
    start = np.datetime64("2015-01-01T00:00:00")
    for user in range(users):
        p = np.exp(score[user] - score[user].max())
        chosen = rng.choice(recipes, size=per_user, replace=False, p=p / p.sum())
        for item in chosen:
            when = start + np.timedelta64(int(rng.integers(0, 4 * 365 * 86400)), "s")
            rows.append((user, item, when))
    rng.shuffle(rows)
    paths = {name: os.path.join(folder, f"{name}.csv") for name in ("interactions", "recipes", "users")}
    with _csv_writer(paths["interactions"]) as out:
        out.writerow(["", "user_id", "recipe_id", "rating", "dateLastModified", "device", "review"])
        for index, (user, item, when) in enumerate(rows):
            zone = ("Z", "+02:00", "-05:00", "")[index % 4]
            stamp = np.datetime_as_string(when, unit="s")
            if index % 3 == 0:
                stamp += f".{rng.integers(1000):03d}"
            stamp = f" {stamp}{zone} " if index % 7 == 0 else stamp + zone  # stray whitespace, as exported
            review = _review(rng, index)
            out.writerow([index, f"u{user:05d}", f"r{item:05d}", int(rng.integers(3, 6)), stamp,
                          _DEVICES[rng.integers(len(_DEVICES))], review])
    with _csv_writer(paths["recipes"]) as out:
        out.writerow(["recipe_id", "recipe_name", "ingredients", "tags", "minutes", "calories", "nutrition"])
        for item in range(recipes):
            own = rng.choice(6, size=3, replace=False)
            common = rng.choice(len(_COMMON), size=3, replace=False)
            ingredients = [f"{_CUISINES[cuisine[item]]}_{i}" for i in own] + [_COMMON[i] for i in common]
            tags = rng.choice(len(_TAGS), size=int(rng.integers(1, 5)), replace=False)
            name = f"{' '.join(rng.choice(_WORDS, size=2, replace=False))} dish {item}"
            nutrition = "[" + ", ".join(f"{v:.1f}" for v in rng.random(7) * 100) + "]"
            out.writerow([f"r{item:05d}", name, "^".join(ingredients), "|".join(_TAGS[i] for i in tags),
                          int(minutes[item]), calories[item], nutrition])
    with _csv_writer(paths["users"]) as out:
        out.writerow(["user_id", "region", "household"])
        for user in range(users):
            region = _CUISINES[liked[user]].rstrip("0123456789")
            out.writerow([f"u{user:05d}", region, int(rng.integers(1, 7))])
    return {"interactions": paths["interactions"], "items": paths["recipes"], "users": paths["users"]}


def _review(rng, index: int) -> str:
    """Serialized review text: long for some rows, spanning lines for others (read, never used)."""
    words = " ".join(rng.choice(_WORDS, size=int(rng.integers(3, 12))))
    if index % 5000 == 0:
        return "Loved it! " * 20_000  # 200 kB, over Python csv's default field limit
    return f"{words}\nMade it twice, \"really\" good." if index % 5 == 0 else words


class _csv_writer:
    """A UTF-8-with-BOM CSV writer onto a file that appears whole or not at all."""

    def __init__(self, path: str):
        self.path = path

    def __enter__(self):
        self._atomic = atomic_path(self.path)
        tmp = self._atomic.__enter__()
        self._file = open(tmp, "w", newline="", encoding="utf-8-sig")
        return csv.writer(self._file)

    def __exit__(self, *exc):
        self._file.close()
        return self._atomic.__exit__(*exc)


def write_movielens_shape(path: str, ratings: int = 25_000_000, seed: int = 25) -> dict[str, str]:
    """Writes a ratings CSV of MovieLens-25M's shape, scaled to `ratings`, and movies.csv beside it.

    Users and movies scale with the ratings as in MovieLens (162,541 users and
    62,423 movies at 25M); every user has at least 20 ratings; popularity and
    activity are long-tailed; no (user, movie) pair repeats.

    Returns:
      {"interactions": ratings path, "items": movies path}.
    """
    rng = np.random.default_rng(seed)
    scale = ratings / 25_000_095
    num_users = max(int(162_541 * scale), 50)
    num_movies = max(int(62_423 * scale ** 0.5), 100)
    activity = rng.pareto(1.2, size=num_users) + 1.0
    popularity = (rng.pareto(0.9, size=num_movies) + 1.0)
    cumulative = np.cumsum(popularity / popularity.sum())
    pair = np.zeros(0, np.int64)
    draw = ratings
    while len(pair) < ratings:  # repeats are dropped, so draw until there are enough distinct pairs
        per_user = 1 + np.floor(draw * 1.1 * activity / activity.sum()).astype(np.int64)
        per_user = np.minimum(per_user, num_movies // 2)
        user = np.repeat(np.arange(num_users, dtype=np.int64), per_user)
        # Popularity for 70% of the draws, uniform for the rest: a long tail every movie is part of.
        popular = np.minimum(np.searchsorted(cumulative, rng.random(len(user))), num_movies - 1)
        movie = np.where(rng.random(len(user)) < 0.7, popular, rng.integers(num_movies, size=len(user)))
        pair = np.unique(np.concatenate([pair, user * num_movies + movie]))
        draw = int(draw * 1.5)
    keep = np.sort(rng.choice(len(pair), size=min(ratings, len(pair)), replace=False))
    pair = pair[keep]
    user, movie = pair // num_movies, pair % num_movies
    movie_ids = np.sort(rng.choice(209_171, size=num_movies, replace=False)) + 1
    timestamp = rng.integers(789_652_009, 1_574_327_703, size=len(pair))
    table = pa.table({"userId": user + 1, "movieId": movie_ids[movie],
                      "rating": rng.integers(1, 11, size=len(pair)) / 2.0, "timestamp": timestamp})
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path) as tmp:
        pa_csv.write_csv(table, tmp)
    movies_path = os.path.join(os.path.dirname(os.path.abspath(path)), "movies.csv")
    genres = np.array(("Action", "Adventure", "Animation", "Children", "Comedy", "Crime", "Documentary",
                       "Drama", "Fantasy", "Film-Noir", "Horror", "IMAX", "Musical", "Mystery", "Romance",
                       "Sci-Fi", "Thriller", "War", "Western"))
    picks = rng.random((num_movies, len(genres))) < 0.12
    words = np.array(_WORDS)
    titles = [f"{words[a].capitalize()} {words[b]} {i} ({y})" for i, (a, b, y) in enumerate(
        zip(rng.integers(len(words), size=num_movies), rng.integers(len(words), size=num_movies),
            rng.integers(1920, 2020, size=num_movies)))]
    movies = pa.table({"movieId": movie_ids, "title": titles,
                       "genres": ["|".join(genres[p]) or "(no genres listed)" for p in picks]})
    with atomic_path(movies_path) as tmp:
        pa_csv.write_csv(movies, tmp)
    return {"interactions": path, "items": movies_path}
