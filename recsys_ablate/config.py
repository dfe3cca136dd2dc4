"""Experiment configuration as data: dataclasses, filled from TOML and flags.

Precedence: dataclass defaults < `--config FILE` (TOML) < command-line flags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import tomllib

from recsys_ablate.data.csv_source import CsvColumns
from recsys_ablate.data.encoded import DataSpec
from recsys_ablate.errors import UserInputError
from recsys_ablate.movie_length import DEFAULT_MINUTES


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Tower shape.

    Attributes:
      embedding_size: Width of every feature embedding.
      layer_sizes: Dense layers after the concatenation (ReLU on all but the
        last); the last size is the width of the query/candidate embeddings.
    """

    embedding_size: int = 32
    layer_sizes: tuple[int, ...] = (64, 32)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Optimisation and evaluation schedule.

    Attributes:
      num_epochs: Training epochs.
      eval_every: Evaluate validation top-K every this many epochs (and at
        the end).
      batch_size: Examples per step (in-batch softmax negatives).
      learning_rate: Adagrad learning rate.
      seed: Seed of initialisation and of the per-epoch shuffling.
      ks: The K of the top-K accuracies.
    """

    num_epochs: int = 300
    eval_every: int = 5
    batch_size: int = 2048
    learning_rate: float = 0.1
    seed: int = 42
    ks: tuple[int, ...] = (1, 5, 10, 50, 100)


@dataclasses.dataclass(frozen=True)
class LengthConfig:
    """Where `movie_length` gets runtimes.

    Sources are tried in order: the IMDb database (Cinemagoer), then the CSV;
    movies neither knows get `default_minutes`.

    Attributes:
      imdb_database: Cinemagoer SQLite database made by `import-imdb`; used
        when the file exists.
      csv: A `movie_id,runtime_min` CSV, or None.
      default_minutes: Runtime of movies no source knows.
      cache_dir: cachier's folder for IMDb lookups.
    """

    imdb_database: str = "cache/imdb.sqlite"
    csv: str | None = None
    default_minutes: float = DEFAULT_MINUTES
    cache_dir: str = "cache"


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that determines one trained model.

    Two runs with equal `identity()` produce the same model, so a saved one
    is reloaded instead of retrained.
    """

    data: DataSpec
    features: tuple[str, ...]
    model: ModelConfig
    train: TrainConfig
    lengths: LengthConfig

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self) -> str:
        """Hash of every setting that changes the trained model."""
        settings = self.to_dict()
        # Where the run-time folders live does not change the model.
        settings["data"].pop("datasets_dir")
        settings["data"].pop("manual_dir")
        settings["lengths"].pop("cache_dir")
        if "movie_length" not in self.features:
            settings.pop("lengths")
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    def folder_name(self, data_label: str) -> str:
        """Readable, unambiguous folder name: settings in words, then a hash."""
        features = "+".join(self.features) if self.features else "baseline"
        layers = "-".join(map(str, self.model.layer_sizes)) or "none"
        return (f"{data_label}_{self.data.split}_e{self.train.num_epochs}_emb{self.model.embedding_size}"
                f"_l{layers}_b{self.train.batch_size}_lr{self.train.learning_rate:g}"
                f"_s{self.train.seed}_{features}_{self.identity()[:8]}")


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """An ablation: several feature sets trained with shared settings.

    Attributes:
      feature_sets: One tuple of feature names per model; () is the baseline.
      data, model, train, lengths: Shared settings (see their classes).
      retrain: Train even when a saved model matches.
      recommend_user: Dump recommendations for this source user id.
      saved_models_dir, reports_dir: Output folders.
    """

    feature_sets: tuple[tuple[str, ...], ...] = ((),)
    data: DataSpec = DataSpec()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    lengths: LengthConfig = LengthConfig()
    retrain: bool = False
    recommend_user: str | None = None
    saved_models_dir: str = "saved_models"
    reports_dir: str = "reports"

    def runs(self) -> list[RunConfig]:
        return [RunConfig(self.data, features, self.model, self.train, self.lengths)
                for features in self.feature_sets]

    def validate(self) -> "ExperimentConfig":
        """Rejects impossible settings with a message naming the fix."""
        checks = [
            (self.train.num_epochs >= 1, f"num_epochs {self.train.num_epochs}: expected 1 or more"),
            (self.train.eval_every >= 1, f"eval_every {self.train.eval_every}: expected 1 or more"),
            (self.train.batch_size >= 1, f"batch_size {self.train.batch_size}: expected 1 or more"),
            (self.train.learning_rate > 0, f"learning_rate {self.train.learning_rate}: expected a positive number"),
            (self.model.embedding_size >= 1, f"embedding_size {self.model.embedding_size}: expected 1 or more"),
            (all(s >= 1 for s in self.model.layer_sizes),
             f"layer_sizes {' '.join(map(str, self.model.layer_sizes))}: every size must be 1 or more"),
            (len(self.feature_sets) >= 1, "no feature sets: give --additional_feature_sets"),
        ]
        for ok, message in checks:
            if not ok:
                raise UserInputError(message)
        return self


# TOML keys accepted in each section, so a typo is named instead of ignored.
_SECTIONS = {
    "data": {f.name for f in dataclasses.fields(DataSpec)} - {"csv_columns"},
    "csv_columns": {f.name for f in dataclasses.fields(CsvColumns)},
    "model": {f.name for f in dataclasses.fields(ModelConfig)},
    "train": {f.name for f in dataclasses.fields(TrainConfig)},
    "lengths": {f.name for f in dataclasses.fields(LengthConfig)},
    "experiment": {"feature_sets", "retrain", "recommend_user", "saved_models_dir", "reports_dir"},
}


def load_toml(path: str) -> dict:
    """Reads an experiment TOML file into a dict of sections.

    Raises:
      UserInputError: missing file, TOML syntax error, unknown section or key.
    """
    try:
        with open(path, "rb") as f:
            raw = tomllib.load(f)
    except FileNotFoundError:
        raise UserInputError(f"--config {path}: no such file; see experiments/ for examples") from None
    except tomllib.TOMLDecodeError as err:
        raise UserInputError(f"--config {path}: not valid TOML ({err})") from None
    for section, values in raw.items():
        if section not in _SECTIONS or not isinstance(values, dict):
            raise UserInputError(
                f"--config {path}: unknown section [{section}]; expected {', '.join('[' + s + ']' for s in _SECTIONS)}")
        unknown = set(values) - _SECTIONS[section]
        if unknown:
            raise UserInputError(
                f"--config {path}: unknown key {sorted(unknown)[0]!r} in [{section}]; "
                f"expected one of {', '.join(sorted(_SECTIONS[section]))}")
    return raw


def _typed(cls, values: dict):
    """Builds a dataclass from TOML values, turning lists into tuples."""
    converted = {k: tuple(v) if isinstance(v, list) else v for k, v in values.items()}
    try:
        return cls(**converted)
    except TypeError as err:
        raise UserInputError(f"bad settings for {cls.__name__}: {err}") from None


def build_config(sections: dict) -> ExperimentConfig:
    """Builds an ExperimentConfig from sections ({"data": {...}, ...}).

    `experiment.feature_sets` is a list of lists of names, "None" for the
    baseline; names are validated against the feature registry.
    """
    from recsys_ablate.features import parse_feature_set

    data_values = dict(sections.get("data", {}))
    data_values["csv_columns"] = _typed(CsvColumns, sections.get("csv_columns", {}))
    experiment = dict(sections.get("experiment", {}))
    feature_sets = experiment.pop("feature_sets", [["None"]])
    if not isinstance(feature_sets, list) or not all(isinstance(s, list) for s in feature_sets):
        raise UserInputError("feature_sets: expected a list of lists of feature names, e.g. [[\"None\"], [\"timestamp\"]]")
    parsed = []
    for names in feature_sets:
        features = parse_feature_set(names)
        if features not in parsed:
            parsed.append(features)
    config = ExperimentConfig(
        feature_sets=tuple(parsed),
        data=_typed(DataSpec, data_values),
        model=_typed(ModelConfig, sections.get("model", {})),
        train=_typed(TrainConfig, sections.get("train", {})),
        lengths=_typed(LengthConfig, sections.get("lengths", {})),
        **experiment)
    return config.validate()
