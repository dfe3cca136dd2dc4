"""Movie lengths from IMDb's non-commercial dataset files through Cinemagoer.

Cinemagoer reads IMDb's `*.tsv.gz` files once imported into SQLite by its
own importer (`imdb.parser.s3.importer`, the code behind `s32cinemagoer.py`);
`import_imdb_files` runs it. `ImdbMovieLengthSource` then matches MovieLens
titles ("Matrix, The (1999)") to IMDb titles ("The Matrix", 1999) and reads
`runtimeMinutes`. Rules, tried in order, each recorded with the result:
"exact year", "year +-1", "title only". Only movies count (not series or
episodes). Every lookup is cached with cachier under `cache/`, keyed by the
database's content hash (not its path), the title and the year, so a second
run asks the database nothing and a replaced database is asked again. Nothing
here raises for missing data: no database, one that is not a Cinemagoer
database, an incomplete one, no match or a missing runtime all give "no
length" and a reason, counted in the run's one summary line.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import re
import unicodedata

from recsys_ablate.errors import UserInputError
from recsys_ablate.files import atomic_path
from recsys_ablate.data.movie_length import MovieLengthSource, _minutes

# IMDb kinds (as Cinemagoer names them) that are movies.
MOVIE_KINDS = frozenset({"movie", "tv movie", "video movie"})
# Trailing articles as MovieLens writes them: "Matrix, The", "Haine, La".
_ARTICLES = ("The", "A", "An", "La", "Le", "Les", "L'", "Il", "Lo", "I", "Gli", "El", "Los", "Las",
             "Das", "Der", "Die", "Den", "Det", "De", "Het", "Un", "Une", "Une", "O", "Os", "As")
_YEAR = re.compile(r"^(?P<title>.*?)\s*\((?P<year>\d{4})\)\s*$")
_ARTICLE = re.compile(r"^(?P<body>.*), (?P<article>" + "|".join(re.escape(a) for a in _ARTICLES) + r")$")
_PARENTHESES = re.compile(r"\s*\(([^()]*)\)")


def _move_article(title: str) -> str:
    match = _ARTICLE.match(title.strip())
    if not match:
        return title.strip()
    article = match.group("article")
    return f"{article}{match.group('body')}" if article.endswith("'") else f"{article} {match.group('body')}"


def parse_movielens_title(title: str) -> tuple[list[str], int | None]:
    """Splits a MovieLens title into IMDb-form title variants and the year.

    "City of Lost Children, The (Cité des enfants perdus, La) (1995)" gives
    (["The City of Lost Children", "La Cité des enfants perdus"], 1995);
    "Seven (Se7en) (1995)" gives (["Seven", "Se7en"], 1995).

    Returns:
      (title variants, main one first; year or None).
    """
    match = _YEAR.match(title)
    body, year = (match.group("title"), int(match.group("year"))) if match else (title, None)
    alternates = [a.strip() for a in _PARENTHESES.findall(body)]
    main = _PARENTHESES.sub("", body).strip()
    variants = [_move_article(main)]
    for alternate in alternates:
        alternate = re.sub(r"^(a\.k\.a\.|aka)\s+", "", alternate, flags=re.IGNORECASE)
        if alternate:
            variants.append(_move_article(alternate))
    return list(dict.fromkeys(v for v in variants if v)), year


def comparable(title: str) -> str:
    """Case, accent and punctuation-insensitive form of a title."""
    text = unicodedata.normalize("NFKD", title)
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold().replace("&", "and")
    return " ".join(re.sub(r"[^\w]+", " ", text).split())


def import_imdb_files(tsv_dir: str, database: str) -> dict[str, int]:
    """Imports IMDb `*.tsv.gz` files into a Cinemagoer SQLite database.

    Args:
      tsv_dir: Folder with IMDb's dataset files (title.basics.tsv.gz, ...).
      database: SQLite file to create or replace.

    Returns:
      Rows imported per file.

    Raises:
      UserInputError: the folder has no `*.tsv.gz` files or lacks title.basics,
        or a file is truncated or not gzip (nothing is left behind then).
    """
    import glob
    import gzip
    import sqlite3
    import zlib

    from imdb.parser.s3.importer import SQLiteImporter

    files = sorted(glob.glob(os.path.join(tsv_dir, "*.tsv.gz")))
    if not any(os.path.basename(f) == "title.basics.tsv.gz" for f in files):
        raise UserInputError(
            f"{tsv_dir}: no title.basics.tsv.gz; download IMDb's non-commercial dataset files "
            "(title.basics.tsv.gz, title.akas.tsv.gz, ...) from https://datasets.imdbws.com/ into it")
    os.makedirs(os.path.dirname(os.path.abspath(database)), exist_ok=True)
    counts = {}
    # A half-imported database is never left under the real name, nor as a
    # temporary file (atomic_path removes it on any failure).
    with atomic_path(database) as tmp:
        importer = SQLiteImporter(tmp)
        try:
            for path in files:
                try:
                    counts[os.path.basename(path)] = importer.import_file(path)
                except (EOFError, gzip.BadGzipFile, zlib.error, UnicodeDecodeError, sqlite3.Error) as err:
                    raise UserInputError(
                        f"{path}: truncated or not an IMDb dataset file ({type(err).__name__}); "
                        "download it again from https://datasets.imdbws.com/") from None
        finally:
            importer.close()
            with contextlib.suppress(OSError):
                os.remove(tmp + "-journal")
    return counts


def database_identity(database: str) -> str:
    """Identifies a database by its content (sha256), for the cache key."""
    from recsys_ablate.data.encoded import hash_file

    return hash_file(database)


def database_problem(database: str) -> str | None:
    """Why `database` cannot be read as a Cinemagoer database, or None if it can."""
    import sqlite3

    try:
        with contextlib.closing(sqlite3.connect(f"file:{os.path.abspath(database)}?mode=ro", uri=True)) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    except sqlite3.Error as err:
        return f"not a Cinemagoer database ({err})"
    if "title_basics" not in tables:
        return "not a Cinemagoer database (no title_basics table; make it with import-imdb)"
    return None


@functools.lru_cache(maxsize=4)
def _cinemagoer(database: str):
    from imdb import Cinemagoer

    return Cinemagoer("s3", f"sqlite:///{os.path.abspath(database)}")


class DatabaseSearches:
    """Counts uncached lookups, each of which searches the database.

    Tests and the benchmark read it to prove that a warm cache asks nothing.
    """

    count = 0


def _cache_key(args, kwds) -> str:
    """cachier's key of a lookup: the database's content hash, title and year, never its path."""
    import hashlib
    import json

    values = dict(zip(("database", "identity", "title", "year"), args), **kwds)
    values.pop("database")
    return hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()


def lookup_runtime(database: str, identity: str, title: str, year: int | None) -> dict:
    """Finds a movie's runtime in the Cinemagoer database (uncached).

    Args:
      database: SQLite file (not part of the cache key).
      identity: `database_identity(database)`: the cache key's database part.
      title: MovieLens title without the year.
      year: Release year or None.

    Returns:
      {"minutes": float or None, "rule": matched rule or why nothing matched,
       "imdb_id": str or None}.
    """
    from imdb import IMDbError

    DatabaseSearches.count += 1
    variants, _ = parse_movielens_title(title)
    wanted = {comparable(v) for v in variants}
    try:
        access = _cinemagoer(database)
        candidates = []
        for variant in variants:
            for query in ([f"{variant} ({year})"] if year else []) + [variant]:
                candidates.extend(access.search_movie(query, results=50))
        matches, seen = [], set()
        for movie in candidates:
            names = {comparable(movie.get("title", "")), comparable(movie.get("original title") or "")}
            if not names & wanted or movie.movieID in seen:
                continue
            seen.add(movie.movieID)
            if "kind" not in movie.keys():
                # An alternative-title (AKA) hit carries only the title: fetch
                # the title's own row for its kind, year and runtime.
                movie = access.get_movie(movie.movieID)
            if movie.get("kind") in MOVIE_KINDS:
                matches.append(movie)
    except (IMDbError, OSError) as err:
        return {"minutes": None, "rule": f"database error: {type(err).__name__}", "imdb_id": None}
    for rule, accept in (("exact year", lambda y: year is not None and y == year),
                         ("year +-1", lambda y: year is not None and y is not None and abs(y - year) == 1),
                         ("title only", lambda y: True)):
        for movie in matches:
            if accept(_year(movie.get("year"))):
                runtimes = movie.get("runtimes") or []
                minutes = _minutes(runtimes[0]) if runtimes else None
                if minutes is None:
                    return {"minutes": None, "rule": f"{rule}, no runtime", "imdb_id": str(movie.movieID)}
                return {"minutes": minutes, "rule": rule, "imdb_id": str(movie.movieID)}
    return {"minutes": None, "rule": "no match", "imdb_id": None}


def _year(value) -> int | None:
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


class ImdbMovieLengthSource(MovieLengthSource):
    """Runtimes from a Cinemagoer SQLite database, cached with cachier.

    Args:
      database: The SQLite file made by `import_imdb_files`.
      cache_dir: cachier's folder (the project's `cache/`).
    """

    name = "imdb"

    def __init__(self, database: str, cache_dir: str = "cache"):
        self.database = database
        self.cache_dir = cache_dir

    def lookup(self, movie_ids, titles):
        if not os.path.isfile(self.database):
            return [(None, "no database") for _ in titles]
        problem = database_problem(self.database)
        if problem is not None:
            return [(None, problem) for _ in titles]
        from cachier import cachier

        # Cinemagoer logs every failed query at CRITICAL; the failures are
        # already counted per reason in the run's summary line.
        logging.getLogger("imdbpy").setLevel(logging.CRITICAL + 1)
        # wait_for_calc_timeout: when two processes look up the same movie,
        # cachier makes one wait for the other's result by watching the cache
        # file; if the result lands before the watch starts, the wait never
        # ends (seen here with two real processes). After this many seconds
        # the waiter looks the movie up itself.
        cached = cachier(cache_dir=os.path.join(self.cache_dir, "imdb_lengths"), separate_files=True,
                         pickle_reload=False, wait_for_calc_timeout=5, hash_func=_cache_key)(lookup_runtime)
        identity = database_identity(self.database)
        out = []
        for title in titles:
            match = _YEAR.match(title)
            body, year = (match.group("title"), int(match.group("year"))) if match else (title, None)
            result = cached(self.database, identity, body, year)
            out.append((result["minutes"], result["rule"]))
        return out
