"""The embedded default dataset: synthetic MovieLens-1M-format files.

Generated deterministically (no download, nothing committed) into
`datasets/demo/ml-1m-demo/` in the exact GroupLens ml-1m layout, so it is read
by the same code as real data. Users' tastes depend on genre (partly through
age, gender and occupation), release era and movie length, and titles carry
genre words, so models with those features have something real to find that
the id-only model has to learn from scarce ratings.
"""

from __future__ import annotations

import os

import numpy as np

from recsys_ablate.data import grouplens
from recsys_ablate.data.sources import DataSource, register

# Bump when the generator changes, so stale folders are regenerated.
DEMO_VERSION = "1"
DEMO_NAME = "ml-1m-demo"

_GENRES = ("Action", "Adventure", "Animation", "Children's", "Comedy", "Crime",
           "Documentary", "Drama", "Fantasy", "Film-Noir", "Horror", "Musical",
           "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western")
_GENRE_WORDS = {
    "Action": ("Strike", "Fury", "Bullet"), "Adventure": ("Quest", "Island", "Treasure"),
    "Animation": ("Toon", "Pixel", "Doodle"), "Children's": ("Puppy", "Kid", "Playground"),
    "Comedy": ("Crazy", "Laugh", "Goofy"), "Crime": ("Heist", "Mob", "Alibi"),
    "Documentary": ("Truth", "Inside", "Record"), "Drama": ("Tears", "Family", "River"),
    "Fantasy": ("Dragon", "Wizard", "Kingdom"), "Film-Noir": ("Shadow", "Smoke", "Dame"),
    "Horror": ("Blood", "Scream", "Grave"), "Musical": ("Song", "Dance", "Melody"),
    "Mystery": ("Secret", "Clue", "Riddle"), "Romance": ("Love", "Heart", "Kiss"),
    "Sci-Fi": ("Space", "Robot", "Galaxy"), "Thriller": ("Edge", "Trap", "Panic"),
    "War": ("Battle", "Soldier", "Front"), "Western": ("Outlaw", "Saddle", "Canyon"),
}
_AGES = (1, 18, 25, 35, 45, 50, 56)
_NUM_MOVIES, _NUM_USERS = 600, 1200
_SEED = 20240601


def demo_folder(datasets_dir: str) -> str:
    return os.path.join(datasets_dir, "demo", DEMO_NAME)


def ensure_demo_dataset(datasets_dir: str) -> str:
    """Writes the demo files unless an up-to-date copy exists.

    Args:
      datasets_dir: The project's run-time `datasets/` folder.

    Returns:
      The folder holding movies.dat, users.dat, ratings.dat and
      movie_runtimes.csv.
    """
    folder = demo_folder(datasets_dir)
    stamp = os.path.join(folder, "VERSION")
    if os.path.isfile(stamp) and open(stamp).read().strip() == DEMO_VERSION:
        return folder
    tmp = folder + f".tmp{os.getpid()}"
    os.makedirs(tmp, exist_ok=True)
    _write_files(tmp)
    with open(os.path.join(tmp, "VERSION"), "w") as f:
        f.write(DEMO_VERSION + "\n")
    import shutil

    if os.path.isdir(folder):
        shutil.rmtree(folder, ignore_errors=True)
    try:
        os.replace(tmp, folder)
    except OSError:
        # Another process wrote the same deterministic files first.
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


def _write_files(folder: str) -> None:
    rng = np.random.default_rng(_SEED)
    g = len(_GENRES)

    # Movies: 1-3 genres each, a year, a runtime that leans on genre.
    movie_genres = np.zeros((_NUM_MOVIES, g))
    for m in range(_NUM_MOVIES):
        movie_genres[m, rng.choice(g, size=rng.integers(1, 4), replace=False)] = 1
    years = np.clip(np.round(2000 - rng.gamma(2.0, 9.0, _NUM_MOVIES)), 1930, 2000).astype(int)
    genre_minutes = rng.normal(0, 12, g)
    runtimes = np.clip(np.round(105 + movie_genres @ genre_minutes / movie_genres.sum(1)
                                + rng.normal(0, 18, _NUM_MOVIES)), 70, 200).astype(int)
    popularity = rng.normal(0, 0.5, _NUM_MOVIES)
    titles = []
    for m in range(_NUM_MOVIES):
        words = [rng.choice(_GENRE_WORDS[_GENRES[i]]) for i in np.flatnonzero(movie_genres[m])]
        titles.append(f"{' '.join(words[:2])} {m + 1} ({years[m]})")

    # Users: demographics, and tastes tied partly to them.
    gender = rng.choice(["M", "F"], _NUM_USERS)
    age = rng.choice(_AGES, _NUM_USERS, p=[.05, .2, .3, .2, .1, .08, .07])
    occupation = rng.integers(0, 21, _NUM_USERS)
    occupation_taste = rng.normal(0, 1.0, (21, g))
    age_taste = rng.normal(0, 0.8, (len(_AGES), g))
    gender_taste = rng.normal(0, 0.8, (2, g))
    taste = (occupation_taste[occupation] + age_taste[np.searchsorted(_AGES, age)]
             + gender_taste[(gender == "M").astype(int)] + rng.normal(0, 0.7, (_NUM_USERS, g)))
    preferred_year = np.clip(1995 - (age - 18) * 0.8 + rng.normal(0, 8, _NUM_USERS), 1935, 2000)
    length_taste = rng.normal(0, 0.6, _NUM_USERS)

    genre_share = movie_genres / movie_genres.sum(1, keepdims=True)
    affinity = (taste @ genre_share.T
                - 0.5 * ((years[None, :] - preferred_year[:, None]) / 12.0) ** 2
                + length_taste[:, None] * (runtimes[None, :] - 105) / 20.0
                + popularity[None, :])

    lines = []
    start = 956_703_932  # 2000-04-25, where ML-1M's ratings begin
    for u in range(_NUM_USERS):
        count = int(rng.integers(25, 90))
        # Gumbel top-k: a sample without replacement, proportional to exp(affinity).
        keys = affinity[u] + rng.gumbel(size=_NUM_MOVIES)
        chosen = np.argsort(-keys)[:count]
        centred = affinity[u, chosen] - affinity[u].mean()
        stars = np.clip(np.round(3.2 + 0.6 * centred + rng.normal(0, 0.7, count)), 1, 5).astype(int)
        first = start + int(rng.integers(0, 3 * 365 * 86400))
        times = np.sort(first + rng.integers(0, 90 * 86400, count))
        lines.extend(f"{u + 1}::{m + 1}::{s}::{t}" for m, s, t in zip(chosen, stars, times))

    with open(os.path.join(folder, "movies.dat"), "w", encoding="iso-8859-1", newline="\n") as f:
        for m in range(_NUM_MOVIES):
            genres = "|".join(_GENRES[i] for i in np.flatnonzero(movie_genres[m]))
            f.write(f"{m + 1}::{titles[m]}::{genres}\n")
    with open(os.path.join(folder, "users.dat"), "w", encoding="iso-8859-1", newline="\n") as f:
        for u in range(_NUM_USERS):
            f.write(f"{u + 1}::{gender[u]}::{age[u]}::{occupation[u]}::{10000 + u:05d}\n")
    with open(os.path.join(folder, "ratings.dat"), "w", encoding="iso-8859-1", newline="\n") as f:
        f.write("\n".join(lines) + "\n")
    with open(os.path.join(folder, "movie_runtimes.csv"), "w", encoding="utf-8") as f:
        f.write("movie_id,title,runtime_min,source\n")
        for m in range(_NUM_MOVIES):
            f.write(f'{m + 1},"{titles[m]}",{runtimes[m]},demo generator\n')


@register
class DemoSource(DataSource):
    """`--dataset demo`: the embedded synthetic dataset, generated into `datasets/demo/` on first use."""

    names = ("demo",)

    def files(self, spec) -> dict[str, str]:
        return grouplens.layout_files(ensure_demo_dataset(spec.datasets_dir))

    def movie_lengths_csv(self, spec) -> str | None:
        return os.path.join(demo_folder(spec.datasets_dir), "movie_runtimes.csv")

    def read(self, spec):
        raw = grouplens.read_grouplens(ensure_demo_dataset(spec.datasets_dir))
        raw.source = "embedded demo dataset (synthetic, GroupLens ml-1m format)"
        return raw
