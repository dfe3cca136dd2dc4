"""Experiment configuration as data: dataclasses, filled from TOML and flags.

Precedence: dataclass defaults < `--config FILE` (TOML) < command-line flags.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import tomllib
import types
import typing

from recsys_ablate.data.columns import declarations
from recsys_ablate.data.csv_source import CsvColumns
from recsys_ablate.data.encoded import DataSpec
from recsys_ablate.errors import UserInputError
from recsys_ablate.data.movie_length import DEFAULT_MINUTES


# Widest embedding or dense layer accepted (a typo such as 2000000000 would
# otherwise fail deep inside TensorFlow after the data is loaded).
MAX_WIDTH = 65536
# Seeds feed numpy and TensorFlow generators; this range is valid for both.
MAX_SEED = 2**31 - 1


_LAYER_SIZES_MESSAGE = ("layer_sizes: every size must be 1 or more (use none, or [] in TOML, for no dense "
                        "layer)")


def _width_check(widths: list[int]) -> tuple[bool, str]:
    return (all(w <= MAX_WIDTH for w in widths),
            f"embedding and layer sizes {max(widths, default=0):,}: expected at most {MAX_WIDTH:,} (a wider "
            "tower does not fit in memory for any realistic catalogue)")


def _first_failure(checks: list[tuple[bool, str]]) -> None:
    """Raises the message of the first failed (ok, message) check as a UserInputError."""
    for ok, message in checks:
        if not ok:
            raise UserInputError(message)


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

    def validate(self) -> None:
        _first_failure([
            (all(s >= 1 for s in self.layer_sizes), _LAYER_SIZES_MESSAGE),
            (self.embedding_size >= 1, f"embedding_size {self.embedding_size}: expected 1 or more"),
            _width_check([self.embedding_size, *self.layer_sizes]),
        ])


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
      seeds: Models per feature set, with seeds seed, seed + 1, ... (the
        split keeps its own `split_seed`).
      exclude_seen: Leave each user's training movies out of the ranking
        when evaluating.
      early_stopping: Validation metric to stop on ("top_100", "recall_10",
        ...), or None to train every epoch; the best evaluation's weights
        are restored.
      patience: Evaluations without improvement before stopping.
      eval_users: Evaluate during training on a fixed, seeded sample of this
        many validation users (the same users for every model); the final
        evaluation, the saved ranks and every comparison use all of them.
        None: every evaluation uses all validation users.
    """

    num_epochs: int = 300
    eval_every: int = 5
    batch_size: int = 2048
    learning_rate: float = 0.1
    seed: int = 42
    ks: tuple[int, ...] = (1, 5, 10, 50, 100)
    seeds: int = 1
    exclude_seen: bool = False
    early_stopping: str | None = None
    patience: int = 3
    eval_users: int | None = None

    def validate(self) -> None:
        from recsys_ablate.evaluation.metrics import retrieval_metrics

        names = [m.name for m in retrieval_metrics(self.ks) if m.higher_is_better is not None]
        last_seed = self.seed + self.seeds - 1
        _first_failure([
            (0 <= self.seed and last_seed <= MAX_SEED,
             f"seed {self.seed}" + (f" with {self.seeds} seeds" if self.seeds > 1 else "")
             + f": seeds must lie between 0 and {MAX_SEED}"),
            (self.num_epochs >= 1, f"num_epochs {self.num_epochs}: expected 1 or more"),
            (self.eval_every >= 1, f"eval_every {self.eval_every}: expected 1 or more"),
            (self.batch_size >= 1, f"batch_size {self.batch_size}: expected 1 or more"),
            (math.isfinite(self.learning_rate) and self.learning_rate > 0,
             f"learning_rate {self.learning_rate}: expected a positive number"),
            (all(k >= 1 for k in self.ks), f"ks {self.ks}: every K must be 1 or more"),
            (len(self.ks) >= 1, "ks: give at least one K"),
            (self.seeds >= 1, f"seeds {self.seeds}: expected 1 or more"),
            (self.patience >= 1, f"patience {self.patience}: expected 1 or more"),
            (self.eval_users is None or self.eval_users >= 1,
             f"eval_users {self.eval_users}: expected 1 or more (or leave it out for all users)"),
            (self.early_stopping is None or self.early_stopping in names,
             f"early stopping metric {self.early_stopping!r}: expected one of {', '.join(names)}"),
        ])


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig:
    """The retrieval loss: TFRS `tasks.Retrieval`'s options (`models/retrieval_loss.py`).

    Attributes:
      temperature: Scores are divided by it before the softmax.
      logq_correction: Subtract each candidate's log sampling probability from
        its logits (Yi et al., RecSys 2019). The probability of an in-batch
        candidate is its share of the training interactions (the unigram
        frequency batches are drawn with), clipped to [1e-6, 1] as TFRS does;
        that of a uniform negative `uniform_negatives / (batch x catalogue)`
        (both: expected occurrences among a batch's candidates, per example).
      remove_accidental_hits: Another example's candidate equal to an
        example's own (or a sampled negative equal to it) is not its negative.
      uniform_negatives: Items drawn uniformly from the catalogue per batch
        (seeded by the run's seed and the step, so a resumed run draws the
        same), added as negatives for every example (Yang et al., WWW 2020).
    """

    temperature: float = 1.0
    logq_correction: bool = False
    remove_accidental_hits: bool = False
    uniform_negatives: int = 0

    def validate(self) -> None:
        _first_failure([
            (math.isfinite(self.temperature) and self.temperature > 0,
             f"temperature {self.temperature}: expected a positive number, e.g. 0.1 or 1"),
            (0 <= self.uniform_negatives <= MAX_WIDTH,
             f"uniform_negatives {self.uniform_negatives}: expected 0 to {MAX_WIDTH:,} items per batch"),
        ])

    @property
    def is_default(self) -> bool:
        return self == ObjectiveConfig()

    def label(self, varying) -> str:
        """What sets this objective apart in a grid where the options named in `varying` vary.

        The varying options it sets off TFRS's defaults ("temperature 0.2,
        logQ"); "TFRS defaults" for the defaults; the varying options' values
        when they are all at their defaults but another option is not.
        """
        words = {"temperature": f"temperature {self.temperature:g}", "logq_correction": "logQ",
                 "remove_accidental_hits": "no accidental hits",
                 "uniform_negatives": f"{self.uniform_negatives} uniform negatives"}
        off_default = [name for name in varying if getattr(self, name) != getattr(ObjectiveConfig(), name)]
        if off_default or self.is_default:
            return ", ".join(words[name] for name in off_default) or "TFRS defaults"
        at_default = {"temperature": "temperature 1", "logq_correction": "no logQ",
                      "remove_accidental_hits": "accidental hits kept",
                      "uniform_negatives": "0 uniform negatives"}
        return ", ".join(at_default[name] for name in varying)

    def describe(self) -> str:
        """"in-batch softmax" plus what differs from TFRS's defaults."""
        parts = [f"temperature {self.temperature:g}"] if self.temperature != 1.0 else []
        parts += ["logQ correction"] if self.logq_correction else []
        parts += ["accidental hits removed"] if self.remove_accidental_hits else []
        parts += [f"{self.uniform_negatives} uniform negatives"] if self.uniform_negatives else []
        return ", ".join(parts) or "TFRS defaults"


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

    def validate(self) -> None:
        _first_failure([(math.isfinite(self.default_minutes) and self.default_minutes > 0,
                         f"default movie length {self.default_minutes}: expected a positive number of "
                         "minutes")])


@dataclasses.dataclass(frozen=True)
class RankingConfig:
    """The ranking stage (TFRS ranking tutorial), trained per feature set when enabled.

    Attributes:
      enabled: Train a rating-prediction model per feature set and seed.
      num_epochs: Its epochs (validation RMSE after each).
      batch_size: Its batch size.
      learning_rate: Its Adagrad learning rate.
      candidates: Two-stage recommendations re-rank this many retrieved movies.
      exclude_rated: Leave the user's rated movies out of recommendations.
    """

    enabled: bool = False
    num_epochs: int = 3
    batch_size: int = 8192
    learning_rate: float = 0.1
    candidates: int = 100
    exclude_rated: bool = False

    def validate(self) -> None:
        _first_failure([
            (self.num_epochs >= 1, f"ranking num_epochs {self.num_epochs}: expected 1 or more"),
            (self.batch_size >= 1, f"ranking batch_size {self.batch_size}: expected 1 or more"),
            (math.isfinite(self.learning_rate) and self.learning_rate > 0,
             f"ranking learning_rate {self.learning_rate}: expected a positive number"),
            (self.candidates >= 10, f"candidates {self.candidates}: expected 10 or more"),
        ])


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """How each feature set is judged against its baseline (changes no model, only the outputs).

    Attributes:
      alpha: Family-wise level of the verdicts (Holm-adjusted p below it)
        and 1 - the intervals' coverage.
      metric: The verdicts' metric ("top_100", "recall_10", ...); None is
        top-K at the largest K.
      power: Power at which the smallest detectable difference is stated.
    """

    alpha: float = 0.05
    metric: str | None = None
    power: float = 0.8

    def validate(self, ks) -> None:
        from recsys_ablate.evaluation.metrics import retrieval_metrics

        names = [m.name for m in retrieval_metrics(ks)]
        _first_failure([
            (math.isfinite(self.alpha) and 0 < self.alpha < 0.5,
             f"alpha {self.alpha}: expected a level between 0 and 0.5, e.g. 0.05"),
            (self.metric is None or self.metric in names,
             f"verdict metric {self.metric!r}: expected one of {', '.join(names)}"),
            (math.isfinite(self.power) and 0.5 <= self.power < 1,
             f"power {self.power}: expected at least 0.5 and below 1, e.g. 0.8"),
        ])

    def metric_name(self, ks) -> str:
        return self.metric or f"top_{max(ks)}"


@dataclasses.dataclass(frozen=True)
class RunnerConfig:
    """Where the ablation's models train (changes no model: the same seed and threads give the same one).

    Attributes:
      backend: "local" (this machine; `[experiment] workers` processes) or
        "ray" (one Ray task per model, on a local Ray or a cluster).
      ray_address: None starts a local Ray; "auto" or "HOST:PORT" joins a
        running cluster (`ray start --head`).
      cpus_per_trial: CPUs each model's task declares (and its TensorFlow threads).
      gpus_per_trial: GPUs each model's task declares.
      storage: A folder every node mounts at this path: trials write their
        model folders there directly (it becomes the saved-models folder).
        None: each trial sends its folder back to the driver, which writes
        it into the saved-models folder.
    """

    backend: str = "local"
    ray_address: str | None = None
    cpus_per_trial: int = 1
    gpus_per_trial: float = 0.0
    storage: str | None = None

    def validate(self) -> None:
        _first_failure([
            (self.backend in ("local", "ray"), f"backend {self.backend!r}: expected local or ray"),
            (self.cpus_per_trial >= 1, f"cpus_per_trial {self.cpus_per_trial}: expected 1 or more"),
            (math.isfinite(self.gpus_per_trial) and self.gpus_per_trial >= 0,
             f"gpus_per_trial {self.gpus_per_trial}: expected 0 or more"),
            (self.backend == "ray" or (self.ray_address is None and self.storage is None),
             "--ray_address and --storage need --backend ray"),
        ])


@dataclasses.dataclass(frozen=True)
class TrainingContent:
    """What a model is trained on, by content rather than by path.

    Attributes:
      data: `EncodedDataset.fingerprint`: a hash of the source files' bytes
        (or the tfds dataset and version) and of the split settings.
      movie_lengths: Hash of the catalogue's movie lengths as the
        `movie_length` feature sees them (IMDb database, CSV and default
        combined); "" when no run uses that feature.
    """

    data: str
    movie_lengths: str = ""


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Everything that determines one trained model.

    Two runs with equal `identity()` produce the same model, so a saved one
    is reloaded instead of retrained. The identity covers the content the
    model is trained on (`content`), never the paths it was read from: the
    same files moved elsewhere reload, changed files retrain.
    """

    data: DataSpec
    features: tuple[str, ...]
    model: ModelConfig
    train: TrainConfig
    lengths: LengthConfig
    task: str = "retrieval"
    content: TrainingContent | None = None
    objective: ObjectiveConfig = ObjectiveConfig()

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def identity(self) -> str:
        """Hash of every setting and every piece of content that changes the trained model."""
        if self.content is None:
            raise ValueError(
                "RunConfig.identity() needs the training content (ExperimentConfig.runs(content))")
        settings = self.to_dict()
        settings.pop("content")
        # The data's fingerprint covers the source's bytes and the split
        # settings; paths and run-time folders do not change the model.
        settings["data"] = {"fingerprint": self.content.data}
        settings["lengths"] = {"movie_lengths": self.content.movie_lengths}
        if self.task == "retrieval":
            settings.pop("task")
        # Settings added later leave the identities of models trained without them unchanged.
        if settings["train"]["eval_users"] is None:
            settings["train"].pop("eval_users")
        if self.objective.is_default:
            settings.pop("objective")
        if "movie_length" not in self.features:
            settings.pop("lengths")
        # A declared feature's model depends on its declaration; other models do not.
        declared = {f.name: f.digest() for f in self.data.features if f.name in self.features}
        if declared:
            settings["declared"] = declared
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()

    def folder_name(self) -> str:
        """Readable, unambiguous folder name: the data's name and settings in words, then a hash."""
        from recsys_ablate.features import feature_set_label

        features = feature_set_label(self.features, for_paths=True)
        layers = "-".join(map(str, self.model.layer_sizes)) or "none"
        prefix = "" if self.task == "retrieval" else f"{self.task}_"
        return (f"{prefix}{self.data.label}_{self.data.split}_e{self.train.num_epochs}"
                f"_emb{self.model.embedding_size}"
                f"_l{layers}_b{self.train.batch_size}_lr{self.train.learning_rate:g}"
                f"_s{self.train.seed}_{features}{self._objective_suffix()}_{self.identity()[:8]}")

    def _objective_suffix(self) -> str:
        objective = self.objective
        return "".join(part for part, used in (
            (f"_t{objective.temperature:g}", objective.temperature != 1.0),
            ("_logq", objective.logq_correction), ("_noacc", objective.remove_accidental_hits),
            (f"_u{objective.uniform_negatives}", objective.uniform_negatives > 0)) if used)


@dataclasses.dataclass(frozen=True)
class GridConfig:
    """Architecture ablation: every combination is one more cell per feature set.

    An empty tuple means "the single value of [model]/[train]".

    Attributes:
      layer_sizes: Tower shapes to try, e.g. ((32,), (64, 32), (128, 64, 32));
        () inside means no dense layer.
      embedding_sizes: Embedding widths to try.
      learning_rates: Learning rates to try.
    """

    layer_sizes: tuple[tuple[int, ...], ...] = ()
    embedding_sizes: tuple[int, ...] = ()
    learning_rates: tuple[float, ...] = ()

    def validate(self) -> None:
        _first_failure([
            (all(all(s >= 1 for s in sizes) for sizes in self.layer_sizes), _LAYER_SIZES_MESSAGE),
            (all(e >= 1 for e in self.embedding_sizes), "embedding_sizes: every size must be 1 or more"),
            _width_check([s for sizes in self.layer_sizes for s in sizes] + list(self.embedding_sizes)),
            (all(math.isfinite(r) and r > 0 for r in self.learning_rates),
             "learning_rates: every rate must be a positive number"),
        ])


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """An ablation: several feature sets trained with shared settings.

    Attributes:
      feature_sets: One tuple of feature names per model; () is the baseline.
      data, model, train, lengths: Shared settings (see their classes).
      compare: How feature sets are judged against the baseline.
      runner: Where the models train (`[run]`: local processes or Ray).
      objectives: The losses to train with (`[objective]`; a list of values
        for an option makes a grid dimension, every combination one more
        cell per feature set).
      retrain: Train even when a saved model matches.
      recommend_user: Dump recommendations for this source user id.
      saved_models_dir, reports_dir: Output folders.
      workers: Models trained at once, each in its own process with
        cores / workers TensorFlow threads (the gain on 2 cores is in
        BENCHMARKS.md). Does not change the models beyond float rounding.
    """

    feature_sets: tuple[tuple[str, ...], ...] = ((),)
    data: DataSpec = DataSpec()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    lengths: LengthConfig = LengthConfig()
    grid: GridConfig = GridConfig()
    ranking: RankingConfig = RankingConfig()
    compare: CompareConfig = CompareConfig()
    runner: RunnerConfig = RunnerConfig()
    objectives: tuple[ObjectiveConfig, ...] = (ObjectiveConfig(),)
    retrain: bool = False
    recommend_user: str | None = None
    saved_models_dir: str = "saved_models"
    reports_dir: str = "reports"
    workers: int = 1

    def cells(self) -> list[tuple[tuple[int, ...], int, float, ObjectiveConfig]]:
        """(layer sizes, embedding size, learning rate, objective) of every grid cell."""
        return list(itertools.product(self.grid.layer_sizes or (self.model.layer_sizes,),
                                      self.grid.embedding_sizes or (self.model.embedding_size,),
                                      self.grid.learning_rates or (self.train.learning_rate,),
                                      self.objectives))

    def runs(self, content: TrainingContent | None = None) -> list[RunConfig]:
        """One run per feature set, grid cell and seed, in that order of nesting.

        Args:
          content: What the runs train on (needed for their identities).
        """
        return [RunConfig(self.data, features, ModelConfig(embedding, layers),
                          dataclasses.replace(self.train, learning_rate=rate,
                                              seed=self.train.seed + i, seeds=1),
                          self.lengths, content=_content_for(features, content), objective=objective)
                for features in self.feature_sets for layers, embedding, rate, objective in self.cells()
                for i in range(self.train.seeds)]

    def ranking_runs(self, content: TrainingContent | None = None) -> list[RunConfig]:
        """One ranking run per feature set and seed (towers as in [model]), if enabled."""
        if not self.ranking.enabled:
            return []
        return [RunConfig(self.data, features, self.model,
                          TrainConfig(num_epochs=self.ranking.num_epochs, eval_every=1,
                                      batch_size=self.ranking.batch_size,
                                      learning_rate=self.ranking.learning_rate, seed=self.train.seed + i),
                          self.lengths, task="ranking", content=_content_for(features, content))
                for features in self.feature_sets for i in range(self.train.seeds)]

    def validate(self) -> "ExperimentConfig":
        """Rejects impossible settings with a message naming the fix (each section checks itself)."""
        from recsys_ablate.features import FEATURES

        for section in (self.model, self.grid, self.train, self.lengths, self.ranking, self.runner,
                        *self.objectives):
            section.validate()
        self.compare.validate(self.train.ks)
        declared = {f.name for f in self.data.features}
        stale = next((name for names in self.feature_sets for name in names
                      if getattr(FEATURES.get(name), "declaration", None) and name not in declared), None)
        _first_failure([
            (stale is None, f"feature {stale!r} is not declared in this experiment's [features] tables"),
            (len(self.feature_sets) >= 1, "no feature sets: give --additional_feature_sets"),
            (self.workers >= 1, f"workers {self.workers}: expected 1 or more"),
        ])
        # Resolved once here, so `--data_dir X` and `--dataset grouplens
        # --data_dir X/` name the same data (and the same model folders).
        # With shared storage the trials' folder is the saved-models folder.
        return dataclasses.replace(self, data=self.data.resolved(),
                                   saved_models_dir=self.runner.storage or self.saved_models_dir)


def _content_for(features: tuple[str, ...], content: TrainingContent | None) -> TrainingContent | None:
    """The content a run with `features` depends on (movie lengths only with `movie_length`)."""
    if content is None or "movie_length" in features:
        return content
    return dataclasses.replace(content, movie_lengths="")


# TOML keys accepted in each section, so a typo is named instead of ignored.
_SECTIONS = {
    "data": {f.name for f in dataclasses.fields(DataSpec)} - {"csv_columns", "features"},
    "features": None,  # [features.NAME] tables: data/columns.py checks them
    "csv_columns": {f.name for f in dataclasses.fields(CsvColumns)},
    "model": {f.name for f in dataclasses.fields(ModelConfig)},
    "train": {f.name for f in dataclasses.fields(TrainConfig)},
    "lengths": {f.name for f in dataclasses.fields(LengthConfig)},
    "grid": {f.name for f in dataclasses.fields(GridConfig)},
    "ranking": {f.name for f in dataclasses.fields(RankingConfig)},
    "compare": {f.name for f in dataclasses.fields(CompareConfig)},
    "run": {f.name for f in dataclasses.fields(RunnerConfig)},
    "objective": {f.name for f in dataclasses.fields(ObjectiveConfig)},
    "experiment": {"feature_sets", "baseline", "retrain", "recommend_user", "saved_models_dir", "reports_dir",
                   "workers"},
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
    except IsADirectoryError:
        raise UserInputError(f"--config {path}: a folder, not a TOML file") from None
    except tomllib.TOMLDecodeError as err:
        raise UserInputError(f"--config {path}: not valid TOML ({err})") from None
    except UnicodeDecodeError as err:
        raise UserInputError(
            f"--config {path}: not UTF-8 text (byte {err.start}); TOML files are UTF-8") from None
    loose = next((key for key, value in raw.items() if not isinstance(value, dict)), None)
    if loose is not None:
        raise UserInputError(f"--config {path}: {loose!r} stands outside any section; put it under one of "
                             f"{', '.join('[' + s + ']' for s in _SECTIONS)}")
    check_sections(raw)
    return raw


def check_sections(sections: dict) -> None:
    """Rejects unknown sections and keys, naming them and the valid ones."""
    for section, values in sections.items():
        if section not in _SECTIONS or not isinstance(values, dict):
            raise UserInputError(
                f"unknown section [{section}]; expected {', '.join('[' + s + ']' for s in _SECTIONS)}")
        unknown = set(values) - (_SECTIONS[section] if _SECTIONS[section] is not None else set(values))
        if unknown:
            raise UserInputError(
                f"unknown key {sorted(unknown)[0]!r} in [{section}]; "
                f"expected one of {', '.join(sorted(_SECTIONS[section]))}")


def _matches(value, hint) -> bool:
    """Whether a TOML/flag value fits a dataclass field's type hint."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, a) for a in args)
    if hint is type(None):
        return value is None
    if origin is tuple:
        return isinstance(value, (list, tuple)) and all(_matches(v, args[0]) for v in value)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def typed(cls, values: dict):
    """Builds a dataclass from TOML values, checking types, lists become tuples."""
    hints = typing.get_type_hints(cls)
    for name, value in values.items():
        if name in hints and not _matches(value, hints[name]):
            raise UserInputError(f"{name} = {value!r}: expected {_describe(hints[name])}")
    converted = {k: _tuples(v) for k, v in values.items()}
    try:
        return cls(**converted)
    except TypeError as err:
        raise UserInputError(f"bad settings for {cls.__name__}: {err}") from None


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def _describe(hint) -> str:
    return str(hint).replace("typing.", "").replace("NoneType", "None")


def build_config(sections: dict) -> ExperimentConfig:
    """Builds an ExperimentConfig from sections ({"data": {...}, ...}).

    `experiment.feature_sets` is a list of lists of names, "None" for the
    baseline; names are validated against the feature registry.
    """
    from recsys_ablate.features import parse_feature_set
    from recsys_ablate.features.declared import register_declared

    check_sections(sections)
    data_values = dict(sections.get("data", {}))
    data_values["csv_columns"] = typed(CsvColumns, sections.get("csv_columns", {}))
    declared = declarations(sections.get("features", {}))
    register_declared(declared)  # checked; their names are valid in feature_sets from here on
    data_values["features"] = declared
    experiment = dict(sections.get("experiment", {}))
    feature_sets = experiment.pop("feature_sets", [["None"]])
    baseline = experiment.pop("baseline", True)
    if not isinstance(baseline, bool):
        raise UserInputError(f"baseline = {baseline!r}: expected true or false")
    if baseline and isinstance(feature_sets, list) and ["None"] not in feature_sets:
        feature_sets = [["None"]] + feature_sets
    if not isinstance(feature_sets, list) or not all(
            isinstance(s, list) and s and all(isinstance(n, str) for n in s) for s in feature_sets):
        raise UserInputError(
            "feature_sets: expected a list of lists of feature names, e.g. [[\"None\"], [\"timestamp\"]]")
    parsed = []
    for names in feature_sets:
        features = parse_feature_set(names)
        if features not in parsed:
            parsed.append(features)
    if isinstance(experiment.get("recommend_user"), int) and not isinstance(
        experiment["recommend_user"], bool):
        experiment["recommend_user"] = str(experiment["recommend_user"])
    for key, kind in (("retrain", bool), ("recommend_user", str), ("saved_models_dir", str),
                      ("reports_dir", str), ("workers", int)):
        value = experiment.get(key)
        if key in experiment and (not isinstance(value, kind) or (kind is int and isinstance(value, bool))):
            raise UserInputError(f"{key} = {value!r}: expected {kind.__name__}")
    config = ExperimentConfig(
        feature_sets=tuple(parsed),
        data=typed(DataSpec, data_values),
        model=typed(ModelConfig, sections.get("model", {})),
        train=typed(TrainConfig, sections.get("train", {})),
        lengths=typed(LengthConfig, sections.get("lengths", {})),
        grid=typed(GridConfig, sections.get("grid", {})),
        ranking=typed(RankingConfig, sections.get("ranking", {})),
        compare=typed(CompareConfig, sections.get("compare", {})),
        runner=typed(RunnerConfig, sections.get("run", {})),
        objectives=objective_grid(sections.get("objective", {})),
        **experiment)
    return config.validate()


def objective_grid(values: dict) -> tuple[ObjectiveConfig, ...]:
    """Every combination of the `[objective]` options; a list of values is a grid dimension.

    `temperature = [1.0, 0.2]` with `logq_correction = [false, true]` is four
    objectives, in that order of nesting (the fields' order); repeated values count once.
    """
    options = [(f.name, values[f.name] if isinstance(values[f.name], list) else [values[f.name]])
               for f in dataclasses.fields(ObjectiveConfig) if f.name in values]
    empty = next((name for name, choices in options if not choices), None)
    if empty is not None:
        raise UserInputError(f"{empty} = []: give one value or a list of values to try")
    combinations = []
    for chosen in itertools.product(*(choices for _, choices in options)):
        objective = typed(ObjectiveConfig, dict(zip((name for name, _ in options), chosen)))
        if objective not in combinations:
            combinations.append(objective)
    return tuple(combinations) or (ObjectiveConfig(),)
