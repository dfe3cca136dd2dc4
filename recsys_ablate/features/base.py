"""The feature interface and registry.

A feature is fitted on the training split (vocabularies, buckets, means) when
it is constructed, and `layer()` returns a Keras layer that maps the tower's
integer inputs to a [batch, width] tensor. Tower inputs are tiny: the query
tower gets {"user": row, "timestamp": seconds} (plus one number per declared
interaction column, `features/declared.py`), the candidate tower
{"movie": row}. Per-user and per-movie attributes are precomputed tables
gathered by row inside the layer, so the input pipeline carries three numbers
per example and no strings.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar


from recsys_ablate.data.encoded import EncodedDataset
from recsys_ablate.errors import UserInputError

FEATURES: dict[str, type["Feature"]] = {}
BASELINE = "None"
# What each tower is given per example. A feature declares which of these it
# reads (`Feature.inputs`); a tower whose features all read one key is run
# once per distinct value of that key in a batch (see `model.RetrievalModel`).
TOWER_INPUTS = {"query": ("user", "timestamp"), "candidate": ("movie",)}


@dataclasses.dataclass
class FeatureContext:
    """What a feature may fit on.

    Attributes:
      data: The encoded dataset; fit only on rows `data.train`.
      embedding_size: Width of embeddings.
      movie_lengths: Callable returning `MovieLengths` for the catalogue
        (looked up lazily, only when a feature needs it).
    """

    data: EncodedDataset
    embedding_size: int
    movie_lengths: Callable


class Feature:
    """Base class. Subclasses set `name`, `tower` and `inputs`, and implement `layer`.

    `inputs` must name every tower input the layer reads, and nothing else:
    the model relies on it to compute a tower once per distinct input value.

    Args:
      context: Data and settings to fit on.
    """

    name: ClassVar[str]
    tower: ClassVar[str]  # "query" or "candidate"
    inputs: ClassVar[tuple[str, ...]]  # the keys of TOWER_INPUTS[tower] the layer reads
    always: ClassVar[bool] = False  # part of every model (the id features)

    def __init__(self, context: FeatureContext):
        self.context = context

    def layer(self):
        """Returns a Keras layer: tower inputs dict -> [batch, width] float32."""
        raise NotImplementedError


def register(cls: type[Feature]) -> type[Feature]:
    """Class decorator adding a feature to `FEATURES`."""
    if cls.tower not in TOWER_INPUTS:
        raise ValueError(f"{cls.__name__}.tower must be 'query' or 'candidate'")
    inputs = getattr(cls, "inputs", ())
    # A declared interaction column is a tower input of its own (features/declared.py).
    allowed = set(TOWER_INPUTS[cls.tower]) | set(getattr(cls, "context_inputs", ()))
    if not inputs or not set(inputs) <= allowed:
        raise ValueError(f"{cls.__name__}.inputs must name the {cls.tower} tower inputs it reads, "
                         f"among {TOWER_INPUTS[cls.tower]}")
    FEATURES[cls.name] = cls
    return cls


def optional_feature_names() -> list[str]:
    return sorted(name for name, cls in FEATURES.items() if not cls.always)


def parse_feature_set(names) -> tuple[str, ...]:
    """Validates one `--additional_feature_sets` occurrence.

    Args:
      names: Feature names, or ["None"] for the id-only baseline.

    Returns:
      The sorted, de-duplicated feature names (empty for the baseline).

    Raises:
      UserInputError: an unknown name (the valid ones are listed), or
        "None" mixed with features.
    """
    names = list(names)
    if BASELINE in names:
        if len(names) > 1:
            raise UserInputError(
                f"feature set {' '.join(names)}: 'None' is the id-only baseline and cannot be "
                "combined with features; give it as its own --additional_feature_sets None")
        return ()
    valid = optional_feature_names()
    for name in names:
        if name not in valid:
            raise UserInputError(
                f"unknown feature {name!r}; valid names are None, {', '.join(valid)}")
    return tuple(sorted(set(names)))


def feature_set_label(features: tuple[str, ...], for_paths: bool = False) -> str:
    """The one name of a feature set: "baseline (ids only)" / "timestamp + movie_genres" in tables and
    progress lines, "baseline" / "timestamp+movie_genres" in folder and file names (`for_paths`)."""
    if not features:
        return "baseline" if for_paths else "baseline (ids only)"
    return ("+" if for_paths else " + ").join(features)
