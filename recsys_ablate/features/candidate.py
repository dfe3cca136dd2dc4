"""Candidate-tower features: movie id, title text, genres, length."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from recsys_ablate.features.base import Feature, register
from recsys_ablate.features.layers import GatherThen, MaskedMeanEmbedding, MultiHotMean
from recsys_ablate.features.query import id_embedding

TITLE_TOKENS = 10_000


@register
class MovieIdFeature(Feature):
    """Embedding of the movie (named `movie_title` after the tutorials' title id).

    Movies are identified by their row in the catalogue, not by title: two
    ML-100k movie ids share a title, and merging them would be wrong.
    """

    name, tower, always, inputs = "movie_title", "candidate", True, ("movie",)

    def layer(self):
        data = self.context.data
        return id_embedding("movie", data.movie[data.train], data.num_movies, self.context.embedding_size,
                            "movie_title")


@register
class MovieTitleTextFeature(Feature):
    """Title words: TextVectorization (10,000 tokens), masked mean of embeddings.

    Titles are tokenised once per catalogue movie here, never per step. The
    vocabulary is fitted on the catalogue titles (as in the TFRS tutorials):
    titles are item metadata available at serving time, not ratings.
    """

    name, tower, inputs = "movie_title_text", "candidate", ("movie",)

    def layer(self):
        vectorizer = tf.keras.layers.TextVectorization(max_tokens=TITLE_TOKENS)
        titles = tf.constant(self.context.data.movie_titles)
        vectorizer.adapt(titles)
        tokens = vectorizer(titles).numpy().astype(np.int32)
        inner = MaskedMeanEmbedding(TITLE_TOKENS, self.context.embedding_size)
        return GatherThen("movie", tokens, inner, name="movie_title_text")


@register
class MovieGenresFeature(Feature):
    """Mean of the movie's genre embeddings."""

    name, tower, inputs = "movie_genres", "candidate", ("movie",)

    def layer(self):
        genres = self.context.data.movie_genres
        return GatherThen("movie", genres, MultiHotMean(genres.shape[1], self.context.embedding_size),
                          name="movie_genres")


@register
class MovieLengthFeature(Feature):
    """Runtime in minutes, z-scored over training movies, plus a "known" flag."""

    name, tower, inputs = "movie_length", "candidate", ("movie",)

    @classmethod
    def width(cls, embedding_size: int) -> int:
        return 2  # the z-scored minutes and the "known" flag

    def layer(self):
        lengths = self.context.movie_lengths()
        train_movies = np.unique(self.context.data.movie[self.context.data.train])
        known = train_movies[lengths.known[train_movies]]
        reference = lengths.minutes[known] if len(known) else lengths.minutes
        mean, std = float(reference.mean()), float(max(reference.std(), 1e-6))
        table = np.stack([(lengths.minutes - mean) / std, lengths.known.astype(np.float32)],
                         axis=1).astype(np.float32)
        return GatherThen("movie", table, tf.keras.layers.Identity(), name="movie_length")
