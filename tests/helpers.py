"""Helpers for building small models in tests, and for waiting on another process."""

import time

from recsys_ablate.features import FeatureContext
from recsys_ablate.models.retrieval import build_model
from recsys_ablate.data.movie_length import MovieLengthLookup


def context_for(data, embedding_size=16, lookup=None):
    lookup = lookup or MovieLengthLookup([])
    return FeatureContext(data, embedding_size, lambda: lookup.lengths(data.movie_ids, data.movie_titles))


def small_model(data, features=(), layer_sizes=(32, 16), seed=1, embedding_size=16):
    return build_model(features, context_for(data, embedding_size), layer_sizes, seed)


def wait_for(predicate, seconds=240) -> bool:
    """Polls `predicate` every 50 ms until it holds (True) or `seconds` pass (False)."""
    deadline = time.time() + seconds
    while time.time() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False
