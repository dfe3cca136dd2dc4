"""What the popularity trade-off metrics add to an evaluation: the users' top-K lists.

    .venv/bin/python bench/trade_off_cost.py [--scale]

Part 1, ML-1M users 1-2999 (an id-only model and a timestamp + genres model,
untrained, Dense 64-32, embedding 32): seconds of the ranks alone
(`catalogue.example_ranks`, what an evaluation cost before) and of the
users' top-100 lists (`catalogue.top_lists`), medians of 5 after a warm-up.
Part 2 (--scale): the top-100 lists of MovieLens-25M's 162,541 users over
62,423 items with random 32-wide embeddings, once.
"""

import argparse
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")


def _median_seconds(function, repeats: int = 5) -> float:
    import numpy as np

    function()  # tracing
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        seconds.append(time.perf_counter() - start)
    return float(np.median(seconds))


def ml1m(data_dir: str) -> None:
    from recsys_ablate.data.encoded import load_dataset
    from recsys_ablate.settings import DataConfig
    from recsys_ablate.evaluation import catalogue
    from recsys_ablate.evaluation.metrics import ItemPopularity
    from recsys_ablate.features import FeatureContext
    from recsys_ablate.models.retrieval import build_model

    data = load_dataset(DataConfig(dataset="grouplens", data_dir=data_dir), log=lambda *_: None)
    popularity = ItemPopularity.of(data)
    rows = data.validation
    examples = catalogue.EvaluationSet(rows, rows)
    print(f"{len(rows):,} validation ratings of {len(set(data.user[rows])):,} users, "
          f"{data.num_movies:,} movies")
    for features in ((), ("timestamp", "movie_genres")):
        model = build_model(features, FeatureContext(data, 32, None), (64, 32), 42)
        ranks = _median_seconds(lambda model=model: catalogue.example_ranks(model, data, examples))
        lists = _median_seconds(lambda model=model: catalogue.top_lists(model, data, examples, popularity))
        print(f"{' + '.join(features) or 'ids only':<24} ranks {ranks:6.2f} s   top-100 lists "
              f"{lists:6.2f} s  (+{lists / ranks:.0%})", flush=True)


def scale(users: int = 162_541, items: int = 62_423, width: int = 32) -> None:
    import numpy as np
    import tensorflow as tf

    from recsys_ablate.evaluation.catalogue import EVAL_BATCH, _top_items

    rng = np.random.default_rng(0)
    queries = tf.constant(rng.normal(size=(users, width)).astype(np.float32))
    candidates = tf.constant(rng.normal(size=(items, width)).astype(np.float32))
    _top_items(queries[:EVAL_BATCH], candidates, 100)
    start = time.perf_counter()
    for begin in range(0, users, EVAL_BATCH):
        _top_items(queries[begin:begin + EVAL_BATCH], candidates, 100).numpy()
    print(f"top-100 lists of {users:,} users over {items:,} items: {time.perf_counter() - start:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data_dir", default=os.path.join(ROOT, "..", "shared", "datasets",
                                                           "ml-1m-users1-2999"))
    parser.add_argument("--scale", action="store_true")
    args = parser.parse_args()
    ml1m(args.data_dir)
    if args.scale:
        scale()


if __name__ == "__main__":
    main()
