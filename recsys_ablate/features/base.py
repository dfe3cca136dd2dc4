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
from recsys_ablate.settings import BASELINE, SHUFFLED

FEATURES: dict[str, type["Feature"]] = {}
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

    @classmethod
    def width(cls, embedding_size: int) -> int:
        """The width of its layer's output (an embedding by default), known without building it."""
        return embedding_size


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
    """The names a feature set may use, but the shuffled controls (`NAME~shuffled` of each)."""
    return sorted(name for name, cls in FEATURES.items() if not cls.always and not name.endswith(SHUFFLED))


def check_feature_sets(feature_sets) -> None:
    """Every name of every feature set is a registered optional feature (built-in or declared).

    Raises:
      UserInputError: an unknown name, listing the valid ones.
    """
    valid = optional_feature_names()
    unknown = next((name for names in feature_sets for name in names if name not in FEATURES
                    or FEATURES[name].always), None)
    if unknown is not None:
        raise UserInputError(f"unknown feature {unknown!r}; valid names are {BASELINE}, {', '.join(valid)} "
                             f"(and NAME{SHUFFLED}: a feature's shuffled control)")


def tower_widths(features, embedding_size: int) -> dict[str, int]:
    """{"query": width, "candidate": width} of the concatenated feature outputs of a feature set's towers
    (the id features included), from the features' declared widths."""
    widths = {tower: 0 for tower in TOWER_INPUTS}
    for name in [n for n, cls in FEATURES.items() if cls.always] + list(features):
        widths[FEATURES[name].tower] += FEATURES[name].width(embedding_size)
    return widths


def check_tower_widths(feature_sets, models) -> None:
    """Towers without dense layers output their concatenated features, so both must end equally wide.

    Args:
      feature_sets: The feature sets (registered names).
      models: The `ModelConfig`s they are built with.

    Raises:
      UserInputError: naming the features, both widths and the fix.
    """
    for model in models:
        if model.layer_sizes:
            continue
        for features in feature_sets:
            widths = tower_widths(features, model.embedding_size)
            if widths["query"] != widths["candidate"]:
                names = ", ".join(("user_id", "movie_title") + tuple(sorted(features)))
                raise UserInputError(
                    f"towers without dense layers must end equally wide, but features {names} give a query "
                    f"of width {widths['query']} and a candidate of width {widths['candidate']}; add "
                    "--layer_sizes, or choose features whose widths match")


def feature_set_label(features: tuple[str, ...], for_paths: bool = False) -> str:
    """The one name of a feature set: "baseline (ids only)" / "timestamp + movie_genres" in tables and
    progress lines, "baseline" / "timestamp+movie_genres" in folder and file names (`for_paths`)."""
    if not features:
        return "baseline" if for_paths else "baseline (ids only)"
    return ("+" if for_paths else " + ").join(features)
