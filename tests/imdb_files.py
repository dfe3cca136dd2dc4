"""Writes tiny IMDb non-commercial dataset files (every file the importer reads)."""

from __future__ import annotations

import csv
import gzip
import os
import re

HEADERS = {
    "title.basics": "tconst titleType primaryTitle originalTitle isAdult startYear endYear runtimeMinutes "
                    "genres",
    "title.akas": "titleId ordering title region language types attributes isOriginalTitle",
    "title.crew": "tconst directors writers",
    "title.episode": "tconst parentTconst seasonNumber episodeNumber",
    "title.principals": "tconst ordering nconst category job characters",
    "title.ratings": "tconst averageRating numVotes",
    "name.basics": "nconst primaryName birthYear deathYear primaryProfession knownForTitles",
}


def write_imdb_files(folder, titles, akas=()) -> str:
    """Writes IMDb-format `*.tsv.gz` files.

    Args:
      folder: Output folder.
      titles: (tconst, titleType, primaryTitle, originalTitle, startYear,
        runtimeMinutes or None) tuples.
      akas: (titleId, title) tuples.

    Returns:
      The folder.
    """
    os.makedirs(folder, exist_ok=True)
    rows = {name: [] for name in HEADERS}
    for tconst, kind, primary, original, year, runtime in titles:
        rows["title.basics"].append([tconst, kind, primary, original, "0", str(year) if year else r"\N",
                                     r"\N", str(runtime) if runtime is not None else r"\N", "Drama"])
        rows["title.crew"].append([tconst, "nm0000001", r"\N"])
        rows["title.ratings"].append([tconst, "7.0", "100"])
        rows["title.principals"].append([tconst, "1", "nm0000001", "director", r"\N", r"\N"])
        if kind == "tvEpisode":
            rows["title.episode"].append([tconst, "tt9999999", "1", "1"])
    for i, (title_id, title) in enumerate(akas, start=1):
        rows["title.akas"].append([title_id, str(i), title, "FR", r"\N", r"\N", r"\N", "0"])
    rows["name.basics"].append(["nm0000001", "Some Director", "1950", r"\N", "director", r"\N"])
    for name, header in HEADERS.items():
        with gzip.open(os.path.join(folder, f"{name}.tsv.gz"), "wt", encoding="utf-8") as f:
            f.write("\t".join(header.split()) + "\n")
            f.writelines("\t".join(row) + "\n" for row in rows[name])
    return str(folder)


_ARTICLE = re.compile(r"^(?P<body>.*), (?P<article>The|A|An|La|Le|Les|L'|Il|Das|Der|Die|El)$")


def _imdb_form(title: str) -> str:
    match = _ARTICLE.match(title.strip())
    if not match:
        return title.strip()
    sep = "" if match.group("article").endswith("'") else " "
    return f"{match.group('article')}{sep}{match.group('body')}"


def write_imdb_catalogue(folder, runtimes_csv) -> dict:
    """IMDb-format files for every movie of a `movie_id,title,runtime_min` CSV.

    Each movie appears in IMDb's form ("Matrix, The (1999)" -> "The Matrix",
    startYear 1999; a parenthesised alternative becomes the original title),
    next to two distractors: the same title three years earlier (a movie with
    another runtime) and a TV episode with the same title and year.

    Returns:
      {movie_id: (MovieLens title, runtime or None, right tconst, wrong-year tconst)}.
    """
    titles, expected = [], {}
    with open(runtimes_csv, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            movie_id, title = row["movie_id"], row["title"]
            match = re.match(r"^(.*?)\s*\((\d{4})\)\s*$", title)
            body, year = match.group(1), int(match.group(2))
            parts = re.findall(r"\(([^()]*)\)", body)
            main = _imdb_form(re.sub(r"\s*\([^()]*\)", "", body))
            original = _imdb_form(parts[0]) if parts else main
            runtime = int(float(row["runtime_min"])) if row["runtime_min"].strip() else None
            n = int(movie_id)
            right, wrong, episode = f"tt{n:07d}", f"tt1{n:07d}", f"tt2{n:07d}"
            titles.append((right, "movie", main, original, year, runtime))
            titles.append((wrong, "movie", main, original, year - 3, (runtime or 100) + 17))
            titles.append((episode, "tvEpisode", main, original, year, 22))
            expected[movie_id] = (title, runtime, right, wrong)
    write_imdb_files(folder, titles)
    return expected
