"""Benchmark: movie lengths for all ML-1M movies through Cinemagoer, cold and warm cache.

Builds IMDb-format files for the 3,883 ML-1M movies from
../shared/datasets/movie_runtimes_ml1m.csv (plus a wrong-year movie and a TV
episode with the same title for each), imports them with Cinemagoer's own
importer, then looks every movie up twice through `ImdbMovieLengthSource`:
once on an empty cachier cache, once on the warm cache.

    .venv/bin/python bench/movie_lengths.py
"""

import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import recsys_ablate  # noqa: E402,F401
from recsys_ablate.data import imdb_lengths  # noqa: E402
from recsys_ablate.data.imdb_lengths import DatabaseSearches, ImdbMovieLengthSource, import_imdb_files  # noqa: E402
from tests.imdb_files import write_imdb_catalogue  # noqa: E402

CSV = os.path.join(os.path.dirname(__file__), "..", "..", "shared", "datasets", "movie_runtimes_ml1m.csv")


def main():
    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        expected = write_imdb_catalogue(os.path.join(tmp, "tsv"), CSV)
        database = os.path.join(tmp, "imdb.sqlite")
        import_imdb_files(os.path.join(tmp, "tsv"), database)
        print(f"built and imported {3 * len(expected):,} IMDb titles in {time.perf_counter() - start:.1f}s")
        ids = list(expected)
        titles = [expected[i][0] for i in ids]
        results = {}
        for run in ("cold", "warm"):
            imdb_lengths._cinemagoer.cache_clear()
            searches = DatabaseSearches.count
            start = time.perf_counter()
            results[run] = ImdbMovieLengthSource(database, os.path.join(tmp, "cache")).lookup(ids, titles)
            seconds = time.perf_counter() - start
            print(f"{run} cache: {len(ids):,} movies in {seconds:.2f}s, "
                  f"{DatabaseSearches.count - searches:,} uncached lookups")
        with_runtime = [i for i in ids if expected[i][1] is not None]
        right = sum(results["cold"][ids.index(i)][0] == expected[i][1] for i in with_runtime)
        print(f"right runtime for {right:,} of {len(with_runtime):,} movies with one "
              f"({right / len(with_runtime):.2%})")


if __name__ == "__main__":
    main()
