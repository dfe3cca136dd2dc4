"""Shuffled controls: a feature's values permuted, keeping their distribution, losing their information.

`NAME~shuffled` is registered for every optional feature (built-in or
declared) and works in feature sets like the feature itself. Its layer is the
feature's own layer, fed a permuted input:

- item features (reading the movie row) see the values of another item:
  a fixed permutation of the catalogue's rows;
- user features (reading the user row) see another user's: a permutation of
  the users;
- interaction features (the timestamp, declared interaction columns) see
  another rating's value: the tower input `NAME~shuffled`, a permutation of
  the column across every rating (`EncodedDataset.query_inputs`).

So the control has the feature's tower shape, parameter count, initialisation
and value distribution, and none of its information about the item, user or
rating: a gain the feature shares with its control comes from the shape or
the presence of an input (or, for the timestamp under a random split, not
from knowing the future). The permutations are seeded by the feature's name
(`data.encoded.shuffle_order`), so a control is the same model in every
process and its identity (its name in the feature set, the data's content)
says everything it depends on.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from recsys_ablate.data.encoded import shuffle_order
from recsys_ablate.features.base import FEATURES, Feature, register
from recsys_ablate.settings import SHUFFLED

# The per-row tower inputs whose rows a control permutes, and how many rows each has.
_ROWS = {"movie": lambda data: data.num_movies, "user": lambda data: data.num_users}


class PermutedRows(tf.keras.layers.Layer):
    """Applies a feature's layer to its tower inputs with one row input permuted.

    Args:
      key: The row input ("movie" or "user").
      order: [rows] the row whose values each row takes; the unknown row (`rows`, see `GatherThen`) keeps
        its own.
      inner: The feature's layer.
    """

    def __init__(self, key: str, order: np.ndarray, inner: tf.keras.layers.Layer, **kwargs):
        super().__init__(**kwargs)
        self.key, self.inner = key, inner
        self.order = tf.constant(np.append(order, len(order)).astype(np.int32))

    def call(self, inputs):
        return self.inner({**inputs, self.key: tf.gather(self.order, tf.cast(inputs[self.key], tf.int32))})


class RenamedInput(tf.keras.layers.Layer):
    """Applies a feature's layer to another tower input under the name it reads (the shuffled column)."""

    def __init__(self, source: str, target: str, inner: tf.keras.layers.Layer, **kwargs):
        super().__init__(**kwargs)
        self.source, self.target, self.inner = source, target, inner

    def call(self, inputs):
        return self.inner({**inputs, self.target: inputs[self.source]})


class ShuffledControl(Feature):
    """A feature's shuffled control; subclasses are made by `register_controls`."""

    base: type[Feature]

    @classmethod
    def width(cls, embedding_size: int) -> int:
        return cls.base.width(embedding_size)

    def layer(self):
        inner = self.base(self.context).layer()
        (key,) = self.base.inputs
        if key in _ROWS:
            order = shuffle_order(self.base.name, _ROWS[key](self.context.data))
            return PermutedRows(key, order, inner, name=self.name.replace(SHUFFLED, "_shuffled"))
        return RenamedInput(key + SHUFFLED, key, inner, name=self.name.replace(SHUFFLED, "_shuffled"))


def register_controls() -> None:
    """Registers `NAME~shuffled` for every optional feature registered now (call after the declared ones);
    drops controls whose feature is gone."""
    for name in [n for n, cls in FEATURES.items() if issubclass(cls, ShuffledControl)
                 and FEATURES.get(cls.base.name) is not cls.base]:
        del FEATURES[name]
    for base in [cls for cls in FEATURES.values() if not cls.always and not issubclass(cls, ShuffledControl)]:
        name = base.name + SHUFFLED
        if name in FEATURES and FEATURES[name].base is base:
            continue
        if len(base.inputs) != 1:
            raise ValueError(f"{base.__name__} reads {base.inputs}: a shuffled control permutes one input")
        (key,) = base.inputs
        interaction = key not in _ROWS
        register(type(f"Shuffled_{base.name}", (ShuffledControl,), {
            "name": name, "tower": base.tower, "base": base,
            "inputs": (key + SHUFFLED,) if interaction else base.inputs,
            "context_inputs": (key + SHUFFLED,) if interaction else (),
            "__doc__": f"{base.name} with its values permuted across "
                       + ("ratings" if interaction else "items" if key == "movie" else "users")
                       + " (its shuffled control)."}))


def with_controls(feature_sets) -> tuple[tuple[str, ...], ...]:
    """The feature sets and, after them, one `(NAME~shuffled,)` per distinct feature they use (in order of
    first use; a control given already is not added twice)."""
    names = dict.fromkeys(n for features in feature_sets for n in features if not n.endswith(SHUFFLED))
    controls = [(n + SHUFFLED,) for n in names if (n + SHUFFLED,) not in feature_sets]
    return tuple(feature_sets) + tuple(controls)
