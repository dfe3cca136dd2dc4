"""Features declared in TOML (`[features.NAME]`), registered like the built-in ones.

`register_declared` makes one `Feature` class per declaration, named after
it, and registers it in `FEATURES`; from there on the name works in
`feature_sets` and `--additional_feature_sets`, towers and reports exactly
as `movie_genres` does. Item and user columns are tables gathered by the
row the tower already gets (so a tower of such features runs once per
distinct item or user of a batch); an interaction column is its own tower
input, fed per example next to the timestamp.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from recsys_ablate.features.base import FEATURES, Feature, register
from recsys_ablate.features.layers import GatherThen, MaskedMeanEmbedding
from recsys_ablate.errors import UserInputError
from recsys_ablate.settings import RESERVED, ColumnFeature

# The tower input holding the row a table column is gathered by.
_ROW_KEY = {"items": "movie", "users": "user"}


class TakeThen(tf.keras.layers.Layer):
    """Applies a layer to one tower input as given (an interaction's own value).

    Args:
      key: The tower input.
      inner: Layer applied to it.
    """

    def __init__(self, key: str, inner: tf.keras.layers.Layer, **kwargs):
        super().__init__(**kwargs)
        self.key, self.inner = key, inner

    def call(self, inputs):
        return self.inner(inputs[self.key])


class CodeEmbedding(tf.keras.layers.Layer):
    """Embedding of codes through a constant code -> row table (row 0: out of vocabulary)."""

    def __init__(self, rows: np.ndarray, embedding_size: int, **kwargs):
        super().__init__(**kwargs)
        self.rows = tf.constant(rows.astype(np.int32))
        self.embedding = tf.keras.layers.Embedding(int(rows.max(initial=0)) + 1, embedding_size)

    def call(self, codes):
        return self.embedding(tf.gather(self.rows, tf.cast(codes, tf.int32)))


class NumericLayer(tf.keras.layers.Layer):
    """A number's z-score and/or an embedding of its quantile bucket (TFRS's timestamp treatment).

    Values are shifted by `origin` (or log1p'd) in float64 before the cast to
    float32, which would otherwise round 1e9-second timestamps to ~64 s.

    Args:
      origin: Subtracted first (the training minimum); unused with `log`.
      log: Apply log1p instead.
      mean, std: Of the shifted training values; None for no z-score.
      boundaries: Bucket boundaries of the shifted values; None for no buckets.
      embedding_size: Width of the bucket embedding.
    """

    def __init__(self, origin: float, log: bool, mean, std, boundaries, embedding_size: int, **kwargs):
        super().__init__(**kwargs)
        self.origin, self.log, self.mean, self.std = origin, log, mean, std
        self.discretization = self.embedding = None
        if boundaries is not None:
            self.discretization = tf.keras.layers.Discretization(bin_boundaries=list(boundaries))
            self.embedding = tf.keras.layers.Embedding(len(boundaries) + 1, embedding_size)

    def call(self, values):
        values = tf.reshape(tf.cast(values, tf.float64), (-1,))
        values = tf.cast(tf.math.log1p(values) if self.log else values - self.origin, tf.float32)
        parts = []
        if self.embedding is not None:
            parts.append(self.embedding(self.discretization(values)))
        if self.mean is not None:
            parts.append(tf.reshape((values - self.mean) / self.std, (-1, 1)))
        return parts[0] if len(parts) == 1 else tf.concat(parts, axis=1)


class DeclaredFeature(Feature):
    """A feature over one declared column; subclasses are made by `register_declared`.

    Vocabularies, z-score statistics and bucket boundaries are fitted on the
    rows training sees: training interactions, or the items / users that have
    training interactions.
    """

    declaration: ColumnFeature

    @classmethod
    def width(cls, embedding_size: int) -> int:
        feature = cls.declaration
        if feature.kind != "numeric":
            return embedding_size
        return (embedding_size if feature.buckets else 0) + (1 if feature.zscore else 0)

    def layer(self):
        feature = self.declaration
        values = self.context.data.columns[feature.name]
        table, inner = getattr(self, f"_{feature.kind}")(values, self._training_rows())
        if feature.file == "interactions":
            return TakeThen(feature.name, inner, name=feature.name)
        return GatherThen(_ROW_KEY[feature.file], table, inner, name=feature.name)

    def _training_rows(self) -> np.ndarray:
        data = self.context.data
        if self.declaration.file == "interactions":
            return data.train
        return np.unique((data.movie if self.declaration.file == "items" else data.user)[data.train])

    @staticmethod
    def _vocabulary(codes, rows) -> tuple[np.ndarray, int]:
        """(code -> embedding row table, rows): codes seen in training rows get 1..k, the rest 0."""
        seen = np.unique(codes[rows])
        seen = seen[seen > 0]
        table = np.zeros(int(codes.max(initial=0)) + 1, np.int32)
        table[seen] = np.arange(1, len(seen) + 1)
        return table, len(seen) + 1

    def _categorical(self, codes, rows):
        table, _ = self._vocabulary(codes, rows)
        return codes, CodeEmbedding(table, self.context.embedding_size)

    def _multi_valued(self, codes, rows):
        # Values never seen in training rows become padding (left out of the mean), not one shared row.
        table, size = self._vocabulary(codes, rows)
        return table[codes], MaskedMeanEmbedding(size, self.context.embedding_size)

    def _text(self, text, rows):
        vectorizer = tf.keras.layers.TextVectorization(max_tokens=self.declaration.max_tokens)
        vectorizer.adapt(tf.constant(text[rows]))
        tokens = vectorizer(tf.constant(text)).numpy().astype(np.int32)
        return tokens, MaskedMeanEmbedding(self.declaration.max_tokens, self.context.embedding_size)

    def _numeric(self, values, rows):
        feature = self.declaration
        origin = 0.0 if feature.log else float(values[rows].min())
        train = np.log1p(values[rows]) if feature.log else values[rows] - origin
        mean = std = boundaries = None
        if feature.zscore:
            mean, std = float(train.mean()), float(max(train.std(), 1e-6))
        if feature.buckets:
            boundaries = np.unique(np.quantile(train, np.linspace(0, 1, feature.buckets + 1)[1:-1]))
            if not len(boundaries):  # every training value equal: one boundary, two buckets
                boundaries = train[:1]
        return values, NumericLayer(origin, feature.log, mean, std, boundaries, self.context.embedding_size)


def register_declared(declarations) -> None:
    """Registers one feature per declaration (again: a no-op; a changed declaration replaces its class).
    Features declared by another experiment earlier in this process are dropped: the registry holds the
    built-in features and this experiment's. (Each declaration checked itself when it was read.)

    Raises:
      UserInputError: a declaration named like a built-in feature.
    """
    builtin = {name for name, cls in FEATURES.items() if getattr(cls, "declaration", None) is None}
    clash = next((feature.name for feature in declarations if feature.name in builtin), None)
    if clash is not None:
        raise UserInputError(f"[features.{clash}]: the name must be a new identifier, not a built-in feature "
                             f"or one of {', '.join(RESERVED)}")
    names = {feature.name for feature in declarations}
    for name in set(FEATURES) - builtin - names:
        del FEATURES[name]
    for feature in declarations:
        current = FEATURES.get(feature.name)
        if current is not None and getattr(current, "declaration", None) == feature:
            continue
        cls = type(f"Declared_{feature.name}", (DeclaredFeature,), {
            "name": feature.name, "tower": feature.tower, "declaration": feature,
            "inputs": (feature.name,) if feature.file == "interactions" else (_ROW_KEY[feature.file],),
            "context_inputs": (feature.name,) if feature.file == "interactions" else (),
            "__doc__": f"{feature.kind} column {feature.column!r} of the {feature.file} file (declared)."})
        register(cls)


def context_keys(features) -> tuple[str, ...]:
    """Tower inputs of the named features that are interaction columns (fed per example)."""
    return tuple(sorted(name for name in features
                        if getattr(FEATURES.get(name), "declaration", None) is not None
                        and FEATURES[name].declaration.file == "interactions"))
