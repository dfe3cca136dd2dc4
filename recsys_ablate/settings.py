"""Every setting of an ablation, each declared once: its default, help, flag, TOML key and range check.

This is the ground floor: dataclasses and their checks, nothing that loads
data, builds a model or reads a registry. A field is declared with
`setting(...)`, which keeps beside its default everything the rest of the
program needs to know about it:

  help     the text of its flag (`--help` adds the default)
  flag     its flag's name when it is not the field's name (a reason is
           given in a comment beside it); False: TOML only
  check    its own range check: value -> "expected ..." or None
  grid     several values (a TOML list, several flag values, or a
           repeated flag) make a grid dimension: one more cell each
  words    what a value is called in labels, descriptions and folder names
  later    added after models were saved: left out of a model's identity
           while at its default, so those models keep theirs

The TOML reader (`build`) and the command line (`cli.py`) are generated
from these declarations; a TOML section is named like its class's
`section`, a key like its field. Checks that need the data or a registry
(feature names, metric names) are made by the layer that has them, when an
ablation is planned (`ablation.plan_ablation`).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import re
import tomllib
import types
import typing

from recsys_ablate.errors import UserInputError
from recsys_ablate.protocols import PROTOCOLS

# Widest embedding or dense layer accepted (a typo such as 2000000000 would
# otherwise fail deep inside TensorFlow after the data is loaded).
MAX_WIDTH = 65536
# Seeds feed numpy and TensorFlow generators; this range is valid for both.
MAX_SEED = 2**31 - 1
# Per-user metric families (`TrainConfig.user_metrics`), computed at 10 and 100.
USER_METRICS = ("recall", "ndcg", "hit", "mrr", "precision")
# `--seeds auto`: the seeds follow the verdicts (group-sequential rounds).
AUTO = "auto"
# Alpha-spending functions of the adaptive seeds' rounds (evaluation/sequential.py).
SPENDING = ("obrien_fleming", "pocock")
# The id-only feature set, as written in feature_sets and on the command line.
BASELINE = "None"
# A feature's shuffled control is named after it with this suffix (features/controls.py).
SHUFFLED = "~shuffled"
# Movies no runtime source knows get this many minutes (a typical feature length).
DEFAULT_MINUTES = 90.0


def setting(default, help: str, *, flag: str | bool | None = None, check=None, grid: bool = False,
            words=None, later: bool = False, choices=None, metavar: str | None = None):
    """A settings field: `dataclasses.field` with the declaration the CLI and TOML reader read."""
    return dataclasses.field(default=default, metadata={
        "help": help, "flag": flag, "check": check, "grid": grid, "words": words, "later": later,
        "choices": choices, "metavar": metavar})


def _at_least(low):
    return lambda value: None if value >= low else f"expected {low} or more"


def _positive(value) -> str | None:
    return None if math.isfinite(value) and value > 0 else "expected a positive number"


def _seed(value) -> str | None:
    return None if 0 <= value <= MAX_SEED else f"expected a seed between 0 and {MAX_SEED}"


def _seed_count(value) -> str | None:
    if value == AUTO or (isinstance(value, int) and value >= 1):
        return None
    return "expected a number of seeds (1 or more) or auto"


def _width(value) -> str | None:
    return None if value <= MAX_WIDTH else (
        f"expected at most {MAX_WIDTH:,} (a wider tower does not fit in memory for any realistic catalogue)")


def _layer_sizes(sizes) -> str | None:
    if not all(s >= 1 for s in sizes):
        return "every size must be 1 or more (use none, or [] in TOML, for no dense layer)"
    return _width(max(sizes, default=0))


def _embedding_size(size) -> str | None:
    return _at_least(1)(size) or _width(size)


class Section:
    """A TOML section: each field checks itself when the section is made (so no section exists unchecked),
    then `check` looks at the fields together."""

    section: typing.ClassVar[str]

    def __post_init__(self):
        for field in dataclasses.fields(self):
            check, choices = field.metadata.get("check"), field.metadata.get("choices")
            value = getattr(self, field.name)
            problem = None
            if value is not None and choices is not None and value not in choices:
                problem = f"unknown; expected one of {', '.join(choices)}"
            elif value is not None and check is not None:
                problem = check(value)
            if problem:
                raise UserInputError(f"{field.name} {_show(value)}: {problem}")
        self.check()

    def check(self) -> None:
        """Checks of several fields together (none by default)."""


def _show(value) -> str:
    if isinstance(value, tuple):
        return " ".join(map(str, value)) or "none"
    return f"{value:g}" if isinstance(value, float) else str(value)


@dataclasses.dataclass(frozen=True)
class CsvColumns(Section):
    """Column names in your CSV files (`--dataset csv`); None means "not present"."""

    section = "csv_columns"
    # The flags name each column by its role ("--user_column"): the key alone ("--user") would read as a user.
    user: str = setting("user_id", "name of the user column in the CSV files", flag="user_column")
    item: str = setting("item_id", "name of the item column in the CSV files", flag="item_column")
    timestamp: str | None = setting("timestamp", "name of the timestamp column in the CSV files",
                                    flag="timestamp_column")
    rating: str | None = setting("rating", "name of the rating column in the CSV files", flag="rating_column")
    item_title: str = setting("title", "name of the title column in the items CSV", flag="title_column")
    item_genres: str | None = setting("genres", "name of the |-separated genres column in the items CSV",
                                      flag="genres_column")


FILES = ("items", "users", "interactions")
KINDS = ("categorical", "multi_valued", "text", "numeric")
# Names tower inputs and built-in data already use; a declared feature with
# one of them would shadow them.
RESERVED = ("user", "movie", "timestamp", "rating", BASELINE)


@dataclasses.dataclass(frozen=True)
class ColumnFeature:
    """One declared feature column (a `[features.NAME]` table in TOML; `data/columns.py` encodes it).

    Attributes:
      name: The feature's name in `feature_sets` and `--additional_feature_sets`.
      file: "items", "users" (`--users` file) or "interactions" (context of
        each interaction, in the query tower).
      column: Its column in that file.
      kind: "categorical", "multi_valued", "text" or "numeric".
      separator: Between the values of a multi_valued cell ("|", "^").
      zscore: numeric: feed the z-scored value (mean and spread of training rows).
      buckets: numeric: also embed which of this many equal-count buckets
        (boundaries from training rows) the value falls in; 0 for none.
      log: numeric: transform with log1p first (skewed counts such as calories).
      default: Value of empty cells; None makes an empty cell an error.
      max_tokens: text: vocabulary size of the tokenizer.
    """

    name: str
    file: str
    column: str
    kind: str
    separator: str | None = None
    zscore: bool = True
    buckets: int = 0
    log: bool = False
    default: str | float | None = None
    max_tokens: int = 10_000

    def __post_init__(self):
        where = f"[features.{self.name}]"
        checks = [
            # ASCII and a letter first: the name becomes a TensorFlow scope, which refuses anything else.
            (re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", self.name) is not None and self.name not in RESERVED,
             f"{where}: the name must be a new identifier of ASCII letters, digits and _ (a letter first), "
             f"not a built-in feature or one of {', '.join(RESERVED)}"),
            (self.file in FILES, f"{where} file = {self.file!r}: expected one of {', '.join(FILES)}"),
            (self.kind in KINDS, f"{where} kind = {self.kind!r}: expected one of {', '.join(KINDS)}"),
            (bool(self.column), f"{where}: give the column it reads (column = \"...\")"),
            (self.kind != "multi_valued" or bool(self.separator),
             f"{where}: a multi_valued column needs its separator, e.g. separator = \"|\""),
            (self.kind not in ("multi_valued", "text") or self.file != "interactions",
             f"{where}: {self.kind} features describe items or users; for interactions use categorical "
             "or numeric"),
            (self.kind != "numeric" or self.zscore or self.buckets > 0,
             f"{where}: a numeric feature needs zscore = true or buckets > 0"),
            (self.buckets >= 0 and (self.buckets == 0 or self.buckets >= 2),
             f"{where} buckets = {self.buckets}: expected 0 (none) or 2 or more"),
            (self.max_tokens >= 2, f"{where} max_tokens = {self.max_tokens}: expected 2 or more"),
            (self.kind != "numeric" or self.default is None or isinstance(self.default, (int, float)),
             f"{where} default = {self.default!r}: a numeric feature's default must be a number"),
        ]
        _first_failure(checks)

    @property
    def tower(self) -> str:
        return "candidate" if self.file == "items" else "query"

    def digest(self) -> str:
        """Hash of the declaration: part of the identity of every model that uses it."""
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()


# random: ratings shuffled; time: a global time cut; user_random: each user's ratings shuffled and cut
# per user (RecBole's "RS", grouped by user); user_time: each user's ratings in time order, the last held out.
SPLITS = ("random", "time", "user_random", "user_time")


def _fractions(fractions) -> str | None:
    if len(fractions) not in (2, 3) or not all(math.isfinite(f) and f >= 0 for f in fractions):
        return "expected two or three shares (train, validation[, test]), each 0 or more"
    if abs(sum(fractions) - 1.0) > 1e-6:
        return f"the shares add up to {sum(fractions):g}; they must add up to 1"
    if fractions[0] <= 0 or fractions[1] <= 0:
        return "training and validation each need a share above 0"
    return None


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
    """Where the data comes from and how it is split (part of every run's config)."""

    section = "data"
    # None: the --data_dir folder's layout when one is given, else MovieLens-1M through tfds (a user who
    # names only a folder must not have it checked against a dataset they never chose).
    dataset: str | None = setting(
        None, "movielens/1m (default without --data_dir), movielens/100k (tfds), demo (embedded), grouplens "
              "(the default with --data_dir: an extracted ml-1m or ml-100k folder) or csv (with "
              "--interactions)")
    data_dir: str | None = setting(None, "GroupLens folder as extracted from ml-1m.zip or ml-100k.zip (never "
                                         "downloads)")
    interactions: str | None = setting(None, "CSV of interactions (user, item, optional timestamp, rating)")
    items: str | None = setting(None, "CSV of items (item id, optional title, |-separated genres, declared "
                                      "[features] columns)")
    users: str | None = setting(None, "CSV of users (user id, declared [features] columns)")
    # Read from [features.NAME] tables and the [csv_columns] section, not from keys or flags of their own.
    features: tuple[ColumnFeature, ...] = ()
    csv_columns: CsvColumns = CsvColumns()
    datasets_dir: str = setting("datasets", "run-time data folder (tfds data, the demo, the encoded cache)")
    manual_dir: str | None = setting(None, "tfds manual folder holding ml-1m.zip / ml-100k.zip")
    max_ratings: int | None = setting(None, "use a seeded random subset of N ratings (quick runs)",
                                      check=lambda n: None if n > 0 else "expected a positive number",
                                      metavar="N")
    split: str = setting("random", "random (ratings shuffled), time (a global time cut: earlier ratings "
                                   "train), user_random (each user's ratings shuffled, cut per user) or "
                                   "user_time (each user's latest ratings held out)", choices=SPLITS)
    train_fraction: float = setting(0.8, "share of ratings used for training, the rest validation (two-way "
                                         "splits; --split_fractions sets three parts)",
                                    check=lambda f: None if 0.0 < f < 1.0 else "expected a number between 0 "
                                                                               "and 1")
    # Added with held-out test parts: left out of the data's fingerprint while unset, so models trained on
    # two-way splits keep their identities.
    split_fractions: tuple[float, ...] | None = setting(
        None, "shares of train, validation and test, e.g. 0.8 0.1 0.1 (per user under user_random and "
              "user_time: int(share x n) validation and test ratings each, the rest training)",
        check=_fractions, metavar="SHARE")
    leave_out: int | None = setting(
        None, "user_time: each user's last N ratings are test and the N before validation (1: "
              "leave-one-out); a user keeps at least one training rating", check=_at_least(1), metavar="N")
    min_rating: float | None = setting(None, "keep only ratings of at least this value (e.g. 3), before the "
                                             "split", metavar="RATING")
    k_core: int | None = setting(
        None, "keep only users and items with at least K ratings, repeated until both hold (iterative "
              "k-core), after --min_rating and before the split; the catalogue is the items left",
        check=_at_least(1), metavar="K")
    split_seed: int = setting(42, "seed of the random split and of --max_ratings sampling", check=_seed)

    def check(self) -> None:
        if self.leave_out is not None and (self.split != "user_time" or self.split_fractions is not None):
            raise UserInputError(f"leave_out {self.leave_out}: a leave-N-out split is --split user_time "
                                 "without --split_fractions")

    @property
    def has_test(self) -> bool:
        """Whether the split holds out a test part (judged on) besides validation (chosen on)."""
        return self.leave_out is not None or (self.split_fractions is not None
                                              and len(self.split_fractions) == 3
                                              and self.split_fractions[2] > 0)


@dataclasses.dataclass(frozen=True)
class ModelConfig(Section):
    """Tower shape.

    (layer_sizes is declared first: grid cells vary it first.)
    """

    section = "model"
    layer_sizes: tuple[int, ...] = setting(
        (64, 32), "dense sizes of each tower, ReLU on all but the last ('none' for no dense layer); repeat "
                  "the flag for a grid of tower shapes", check=_layer_sizes, grid=True, metavar="SIZE",
        words=lambda sizes: "layers " + ("-".join(map(str, sizes)) or "none"))
    embedding_size: int = setting(32, "width of every feature embedding; several values make a grid",
                                  check=_embedding_size, grid=True, words=lambda size: f"embedding {size}")


@dataclasses.dataclass(frozen=True)
class TrainConfig(Section):
    """Optimisation and evaluation schedule."""

    section = "train"
    num_epochs: int = setting(300, "training epochs", check=_at_least(1))
    eval_every: int = setting(5, "evaluate every N epochs and at the end", check=_at_least(1), metavar="N")
    batch_size: int = setting(2048, "examples per step (the in-batch softmax's negatives)",
                              check=lambda n: None if n >= 2 else "expected 2 or more (the in-batch "
                              "softmax's negatives are a batch's other examples: one example alone has none)")
    learning_rate: float = setting(0.1, "Adagrad learning rate; several values make a grid", check=_positive,
                                   grid=True, words=lambda rate: f"lr {rate:g}")
    seed: int = setting(42, "seed of initialisation and of the per-epoch shuffling", check=_seed)
    ks: tuple[int, ...] = setting((1, 5, 10, 50, 100), "the K of the top-K accuracies",
                                  check=lambda ks: "every K must be 1 or more" if not ks or min(ks) < 1 else
                                  "each K once" if len(set(ks)) < len(ks) else None)
    # "auto": the seeds follow the verdicts (`[compare] min_seeds`, `max_seeds`; evaluation/sequential.py).
    seeds: int | str = setting(
        1, "train each feature set with N seeds (seed, seed+1, ...); verdicts need 2 or more (3+, 5 "
           "recommended); auto: every arm starts with --min_seeds and only the arms of undecided "
           "comparisons get more, up to --max_seeds (group-sequential; README: Adaptive seeds); the split "
           "stays fixed", check=_seed_count, metavar="N|auto")
    exclude_seen: bool = setting(False, "leave each user's training movies out of the ranking when "
                                        "evaluating")
    early_stopping: str | None = setting(
        None, "stop when this validation metric (top_100, recall_10, ndcg_100, ...) has not improved for "
              "--patience evaluations; the best weights are kept", metavar="METRIC")
    patience: int = setting(3, "evaluations without improvement before early stopping", check=_at_least(1))
    # Validation curves are noisy: a strict "any improvement" rule runs on while a plateau's noise keeps
    # setting new bests by 0.0001 (issue 28).
    min_delta: float = setting(
        0.0, "early stopping's plateau rule: an evaluation improves only if it beats the best so far by more "
             "than this (absolute, in the metric's units): stop once --patience evaluations have passed "
             "without one; the best weights are still kept", later=True, metavar="DELTA",
        check=lambda d: None if math.isfinite(d) and d >= 0 else "expected 0 or a positive number")
    eval_users: int | None = setting(
        None, "evaluate during training on a fixed, seeded sample of N validation users (large data); the "
              "final evaluation, the saved ranks and every comparison use all of them", check=_at_least(1),
        later=True, metavar="N")
    queries: str = setting(
        "per_rating", "per_rating: each held-out rating ranks the catalogue with its own context (its "
                      "timestamp; TFRS's tutorials); per_user: one query per user, from their features and "
                      "their last training rating's context (RecBole, leave-one-out)",
        choices=("per_rating", "per_user"), later=True)
    user_metrics: tuple[str, ...] = setting(
        ("recall", "ndcg"), "per-user metrics at 10 and 100, averaged over users: recall, ndcg, hit, mrr, "
                            "precision", later=True, metavar="NAME",
        check=lambda names: None if names and set(names) <= set(USER_METRICS)
        and len(set(names)) == len(names) else f"expected some of {', '.join(USER_METRICS)}, each once")

    def check(self) -> None:
        if self.seeds != AUTO and self.seed + self.seeds - 1 > MAX_SEED:
            raise UserInputError(f"seed {self.seed} with {self.seeds} seeds: seeds must lie between 0 and "
                                 f"{MAX_SEED}")


@dataclasses.dataclass(frozen=True)
class ObjectiveConfig(Section):
    """The retrieval loss: TFRS `tasks.Retrieval`'s options (`models/retrieval_loss.py`); a list of values
    for an option is a grid dimension.

    `words` of each option: (its label in a grid, at any value; its
    description and folder-name part when off the default).
    """

    section = "objective"
    temperature: float = setting(
        1.0, "divide scores by it before the softmax; several values make a grid", check=_positive, grid=True,
        words=(lambda t: f"temperature {t:g}", lambda t: f"temperature {t:g}", lambda t: f"_t{t:g}"))
    logq_correction: bool = setting(
        False, "subtract each candidate's log sampling probability (its share of the training interactions, "
               "clipped to [1e-6, 1] as TFRS does) from its logits (Yi et al., RecSys 2019); `off on` makes "
               "a grid of both", grid=True,
        words=(lambda on: "logQ" if on else "no logQ", lambda on: "logQ correction", lambda on: "_logq"))
    remove_accidental_hits: bool = setting(
        False, "another example's candidate equal to an example's own is not its negative; `off on` makes "
               "a grid of both", grid=True,
        words=(lambda on: "no accidental hits" if on else "accidental hits kept",
               lambda on: "accidental hits removed", lambda on: "_noacc"))
    uniform_negatives: int = setting(
        0, "add N items drawn uniformly from the catalogue per batch as negatives for every example (seeded "
           "by the run's seed and the step; Yang et al., WWW 2020); several values make a grid",
        check=lambda n: None if 0 <= n <= MAX_WIDTH else f"expected 0 to {MAX_WIDTH:,} items per batch",
        grid=True, metavar="N",
        words=(lambda n: f"{n} uniform negatives", lambda n: f"{n} uniform negatives", lambda n: f"_u{n}"))

    @property
    def is_default(self) -> bool:
        return self == ObjectiveConfig()

    def _off_default(self, names=None) -> list[str]:
        return [f.name for f in dataclasses.fields(self) if (names is None or f.name in names)
                and getattr(self, f.name) != f.default]

    def _words(self, name: str, which: int) -> str:
        return fields_of(ObjectiveConfig)[name].metadata["words"][which](getattr(self, name))

    def label(self, varying) -> str:
        """What sets this objective apart in a grid where the options named in `varying` vary.

        The varying options it sets off TFRS's defaults ("temperature 0.2,
        logQ"); "TFRS defaults" for the defaults; the varying options' values
        when they are all at their defaults but another option is not.
        """
        off_default = self._off_default(varying)
        if off_default or self.is_default:
            return ", ".join(self._words(name, 0) for name in off_default) or "TFRS defaults"
        return ", ".join(self._words(name, 0) for name in varying)

    def describe(self) -> str:
        """What differs from TFRS's defaults ("temperature 0.2, logQ correction"), or "TFRS defaults"."""
        return ", ".join(self._words(name, 1) for name in self._off_default()) or "TFRS defaults"

    def folder_suffix(self) -> str:
        """The folder-name part of the options off the defaults ("_t0.2_logq")."""
        return "".join(self._words(name, 2) for name in self._off_default())


@dataclasses.dataclass(frozen=True)
class LengthConfig(Section):
    """Where `movie_length` gets runtimes: the IMDb database (Cinemagoer), then the CSV; movies neither knows
    get `default_minutes`."""

    section = "lengths"
    imdb_database: str = setting("cache/imdb.sqlite", "Cinemagoer SQLite database of IMDb files for "
                                                      "movie_length (make it with the import-imdb command)")
    # The flag says what the CSV holds; "--csv" alone would read as the dataset.
    csv: str | None = setting(None, "movie_id,runtime_min CSV for the movie_length feature",
                              flag="movie_lengths_csv")
    # The flag names the feature; "--default_minutes" would not say of what.
    default_minutes: float = setting(DEFAULT_MINUTES, "minutes of movies no runtime source knows",
                                     flag="default_movie_length", check=_positive)
    cache_dir: str = setting("cache", "cachier's folder for the IMDb lookups", flag="imdb_cache_dir")


@dataclasses.dataclass(frozen=True)
class RankingConfig(Section):
    """The ranking stage (TFRS ranking tutorial), trained per feature set and seed when enabled.

    Its flags start with "ranking" (the train section has the same keys).
    """

    section = "ranking"
    enabled: bool = setting(False, "also train a rating-prediction model (MLP 256-64-1) per feature set; its "
                                   "validation RMSE goes into the report", flag="ranking")
    num_epochs: int = setting(3, "epochs of the ranking model (validation RMSE after each)",
                              flag="ranking_epochs", check=_at_least(1))
    batch_size: int = setting(8192, "batch size of the ranking model", flag="ranking_batch_size",
                              check=_at_least(2))
    learning_rate: float = setting(0.1, "Adagrad learning rate of the ranking model",
                                   flag="ranking_learning_rate", check=_positive)
    candidates: int = setting(100, "two-stage recommendations re-rank this many retrieved movies",
                              check=_at_least(10))
    exclude_rated: bool = setting(False, "leave the user's rated movies out of recommendations")


@dataclasses.dataclass(frozen=True)
class CompareConfig(Section):
    """How each feature set is judged against its baseline (changes no model, only the outputs)."""

    section = "compare"
    compare_to: str | None = setting(
        None, "the verdicts' baseline: the id-only model of each cell (default), or a reference model of "
              "--reference_models (paired by user; it has no seeds)", metavar="NAME")
    alpha: float = setting(0.05, "family-wise level of the verdicts, Holm-adjusted; intervals are 1 - alpha",
                           check=lambda a: None if math.isfinite(a) and 0 < a < 0.5 else
                           "expected a level between 0 and 0.5, e.g. 0.05")
    verdict_metric: str | None = setting(
        None, "metric the verdicts judge (default: top-K at the largest K; top_10, recall_10, ...)",
        metavar="METRIC")
    margin: float | None = setting(
        None, "equivalence margin in the verdict metric's units (e.g. 0.005): a verdict becomes better, "
              "worse, equivalent (the whole 1 - 2 alpha interval within +-margin: safe to drop) or undecided",
        check=_positive, metavar="M")
    power: float = setting(0.8, "power at which the smallest detectable difference is stated",
                           check=lambda p: None if math.isfinite(p) and 0.5 <= p < 1 else
                           "expected at least 0.5 and below 1, e.g. 0.8")
    min_seeds: int = setting(2, "with --seeds auto: the seeds every arm starts with (the first round)",
                             check=_at_least(2))
    max_seeds: int = setting(5, "with --seeds auto: the most seeds an undecided comparison's arms get",
                             check=_at_least(2))
    # O'Brien-Fleming keeps nearly all of alpha for the last round (early rounds stop only on large
    # effects, the final test is almost the fixed design's); Pocock spends it evenly (more early stops,
    # a stricter last round). Both are Lan-DeMets spending functions of the share of max_seeds trained.
    spending: str = setting("obrien_fleming", "with --seeds auto: how alpha is spent over the rounds "
                                              "(README: Adaptive seeds)", choices=SPENDING)

    def metric_name(self, ks) -> str:
        """The verdicts' metric: `verdict_metric`, or top-K at the largest K."""
        return self.verdict_metric or f"top_{max(ks)}"


def _ray_address(address: str) -> str | None:
    host, _, port = address.rpartition(":")
    if address == "auto" or (host and port.isdigit()):
        return None
    return "expected auto or HOST:PORT (the head's `ray start --head` prints it)"


@dataclasses.dataclass(frozen=True)
class RunnerConfig(Section):
    """Where the ablation's models train (changes no model: the same seed and threads give the same one)."""

    section = "runner"
    backend: str = setting("local", "local (this machine, --workers processes) or ray (one Ray task per "
                                    "model; pip install -e \".[ray]\"; README: Running on a Ray cluster)",
                           choices=("local", "ray"))
    ray_address: str | None = setting(None, "join a running Ray cluster (default: start a local Ray)",
                                      check=_ray_address, metavar="auto|HOST:PORT")
    cpus_per_trial: int = setting(1, "CPUs (and TensorFlow threads) each model's Ray task declares",
                                  check=_at_least(1))
    gpus_per_trial: float = setting(0.0, "GPUs each model's Ray task declares",
                                    check=lambda g: None if math.isfinite(g) and g >= 0 else
                                    "expected 0 or more")
    storage: str | None = setting(None, "with --backend ray: a folder every node mounts at PATH; trials "
                                        "write their models there (it is the saved-models folder). Default: "
                                        "trials send their folders to this machine", metavar="PATH")

    def check(self) -> None:
        if self.backend != "ray" and (self.ray_address is not None or self.storage is not None):
            raise UserInputError("--ray_address and --storage need --backend ray")


# The tracking stores MLflow reads: its server (http, https) and its local file and SQLite stores.
MLFLOW_SCHEMES = ("http", "https", "file", "sqlite")


def _mlflow_uri(uri: str) -> str | None:
    scheme = uri.split(":", 1)[0] if ":" in uri else ""
    if scheme not in MLFLOW_SCHEMES:
        return (f"expected a tracking URI starting with {', '.join(s + ':' for s in MLFLOW_SCHEMES)} (e.g. "
                "http://127.0.0.1:5000 or sqlite:///mlflow.db)")
    return None


@dataclasses.dataclass(frozen=True)
class TrackingConfig(Section):
    """Where every model and verdict is also logged (changes no model)."""

    section = "tracking"
    mlflow: str | None = setting(
        None, "log the ablation (a parent run), each model (a nested run: settings, curves, history.json) "
              "and each verdict to this MLflow tracking URI: http://HOST:PORT, file:PATH or sqlite:///PATH "
              "(pip install -e \".[mlflow]\"; README: Tracking)", check=_mlflow_uri, metavar="URI")
    mlflow_experiment: str = setting("recsys-ablate", "the MLflow experiment the runs go to",
                                     check=lambda name: None if name.strip() else "expected a name",
                                     metavar="NAME")


def _first_failure(checks) -> None:
    for ok, message in checks:
        if not ok:
            raise UserInputError(message)


# Most factors a design takes (a half fraction of 8 is 128 feature sets).
MAX_FACTORS = 8
# From this many factors a design is the half fraction whose defining relation is all the factors (resolution
# = the number of factors, so two-way interactions are aliased only with interactions of three or more).
FRACTION_FROM = 5


@dataclasses.dataclass(frozen=True)
class DesignConfig(Section):
    """A designed experiment over features (`[design]`): the feature sets follow from its factors."""

    section = "design"
    kind: str | None = setting(None, "train every combination of --factors (a 2^k factorial; from 5 factors "
                                     "the half fraction of resolution k) instead of listed feature sets, and "
                                     "judge the factors' main effects and two-way interactions",
                               flag="design", choices=("factorial",))
    factors: tuple[str, ...] = setting(
        (), f"what a --design switches (2 to {MAX_FACTORS}): features, on or off; or grid settings given two "
            "values (logq_correction, objective.temperature, learning_rate, ...), the first the low level",
        metavar="FACTOR")

    def check(self) -> None:
        _first_failure([
            (self.kind is not None or not self.factors,
             f"factors {_show(self.factors)}: give --design factorial too (or drop --factors)"),
            (self.kind is None or 2 <= len(self.factors) <= MAX_FACTORS,
             f"--design {self.kind}: expected 2 to {MAX_FACTORS} --factors, got {len(self.factors)}"),
            (len(set(self.factors)) == len(self.factors), "factors: each one once"),
            (not self.fractional or not self.grid_factors,
             f"--design with {len(self.factors)} factors is a half fraction of the features' combinations; "
             f"its factors must be features (grid settings: {', '.join(self.grid_factors)}): give at most "
             f"{FRACTION_FROM - 1} factors, or features only"),
        ])

    @property
    def grid_factors(self) -> dict[str, tuple[str, str]]:
        """Factor -> (section, field) of the factors that are grid settings (the others are features)."""
        return {name: where for name in self.factors if (where := grid_field(name)) is not None}

    @property
    def feature_factors(self) -> tuple[str, ...]:
        return tuple(name for name in self.factors if name not in self.grid_factors)

    @property
    def fractional(self) -> bool:
        return len(self.factors) >= FRACTION_FROM

    @property
    def resolution(self) -> int | None:
        """The design's resolution (None: the full factorial, every effect estimable)."""
        return len(self.factors) if self.fractional else None

    def feature_sets(self) -> tuple[tuple[str, ...], ...]:
        """Each run of the design as a feature set, the all-off run (the baseline) first, then by the number
        of factors on (in factor order). A half fraction keeps the runs whose product of +-1 signs is (-1)^k,
        so the all-off run is in it."""
        factors = self.feature_factors  # a grid factor's levels are the grid's cells, not feature sets
        runs = [on for on in itertools.product((False, True), repeat=len(factors))
                if not self.fractional or sum(on) % 2 == 0]
        runs.sort(key=lambda on: (sum(on), [not x for x in on]))
        # Each run as a feature set is written (`parse_feature_set`: sorted), so it is the same model as
        # the same features listed by hand.
        return tuple(parse_feature_set(f for f, x in zip(factors, on) if x) for on in runs)


def grid_field(name: str) -> tuple[str, str] | None:
    """(section, field) of the grid setting `name` ("logq_correction" or "objective.logq_correction"), or
    None (a feature's name)."""
    section, _, field = name.rpartition(".")
    return next(((cls.section, field) for cls in (ModelConfig, TrainConfig, ObjectiveConfig)
                 if section in ("", cls.section) and field in fields_of(cls)
                 and fields_of(cls)[field].metadata.get("grid")), None)


@dataclasses.dataclass(frozen=True)
class TrainingContent:
    """What a model is trained on, by content rather than by path.

    Attributes:
      data: The encoded data's fingerprint: a hash of the source files'
        bytes (or the tfds dataset and version) and of the split settings.
      movie_lengths: Hash of the catalogue's movie lengths as the
        `movie_length` feature sees them; "" when no run uses that feature.
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

    data: DataConfig
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
            raise ValueError("RunConfig.identity() needs the training content (ExperimentConfig's "
                             "retrieval_runs(content))")
        settings = self.to_dict()
        settings.pop("content")
        # The data's fingerprint covers the source's bytes and the split
        # settings; paths and run-time folders do not change the model.
        settings["data"] = {"fingerprint": self.content.data}
        settings["lengths"] = {"movie_lengths": self.content.movie_lengths}
        if self.task == "retrieval":
            settings.pop("task")
        # Settings added later leave the identities of models trained without them unchanged.
        for name in ("model", "train", "objective"):
            for field in dataclasses.fields(getattr(self, name)):
                if field.metadata.get("later") and getattr(getattr(self, name), field.name) == field.default:
                    settings[name].pop(field.name)
        if self.objective.is_default:
            settings.pop("objective")
        if "movie_length" not in self.features:
            settings.pop("lengths")
        # A declared feature's model depends on its declaration; other models do not.
        declared = {f.name: f.digest() for f in self.data.features if f.name in self.features}
        if declared:
            settings["declared"] = declared
        return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()


# The sections a grid cell varies, in the order cells nest.
CELL_SECTIONS = ("model", "train", "objective")


@dataclasses.dataclass(frozen=True)
class Cell:
    """One grid cell: the model, training and objective settings with the grid's values in place.

    Attributes:
      model, train, objective: The sections.
      values: ((section, field), value) of every grid dimension, in nesting order.
    """

    model: ModelConfig
    train: TrainConfig
    objective: ObjectiveConfig
    values: tuple = ()


@dataclasses.dataclass(frozen=True)
class ExperimentConfig(Section):
    """An ablation (`[experiment]`): feature sets trained with shared settings, one section each.

    `grid` holds the grid dimensions: ((section, field), values) for each
    field given several values; every combination is one more cell per
    feature set (`cells`).
    """

    section = "experiment"
    feature_sets: tuple[tuple[str, ...], ...] = setting(
        ((),), "features of one model, repeatable (one model per occurrence); None is the id-only baseline, "
               "which is always added unless --no_baseline", flag="additional_feature_sets",
        metavar="FEATURE")
    # The flag turns it off ("--no_baseline"), as the option has always read.
    baseline: bool = setting(True, "do not add the id-only baseline", flag="no_baseline")
    retrain: bool = setting(False, "train even if a model with the same configuration and data is saved (an "
                                   "interrupted --retrain run resumes when re-run)")
    # The original deep-dive script's flag, kept for its users.
    recommend_user: str | None = setting(None, "dump each model's top-10 for this user id",
                                         flag="generate_recommendations_for_user", metavar="USER_ID")
    saved_models_dir: str = setting("saved_models", "where trained models are saved and reloaded from")
    reports_dir: str = setting("reports", "where the HTML report, JSON summary and dumps go")
    workers: int = setting(1, "train this many models at once, each in its own process (2 helps on a 2-core "
                              "machine, see BENCHMARKS.md)", check=_at_least(1))
    protocol: str | None = setting(
        None, "an evaluation protocol's settings, each still overridable: tfrs (the default settings), "
              "recbole (RecBole's ML-1M setting), loo (chronological leave-one-out); README: Protocols",
        choices=tuple(PROTOCOLS))
    shuffled_controls: bool = setting(
        False, "add, for every feature of the feature sets, an arm with that feature's values permuted "
               "across items, users or ratings (NAME~shuffled: its distribution kept, its information "
               "removed); a one-feature set is also judged against its control")
    reference_models: tuple[str, ...] = setting(
        (), "simple models fitted on the same split and judged on the same users: popularity, ease, ials "
            "(their regularisation chosen on validation)", metavar="NAME")
    data: DataConfig = dataclasses.field(default=DataConfig())
    model: ModelConfig = dataclasses.field(default=ModelConfig())
    train: TrainConfig = dataclasses.field(default=TrainConfig())
    objective: ObjectiveConfig = dataclasses.field(default=ObjectiveConfig())
    lengths: LengthConfig = dataclasses.field(default=LengthConfig())
    ranking: RankingConfig = dataclasses.field(default=RankingConfig())
    compare: CompareConfig = dataclasses.field(default=CompareConfig())
    runner: RunnerConfig = dataclasses.field(default=RunnerConfig())
    tracking: TrackingConfig = dataclasses.field(default=TrackingConfig())
    design: DesignConfig = dataclasses.field(default=DesignConfig())
    grid: tuple = dataclasses.field(default=())

    def check(self) -> None:
        _first_failure([
            (len(self.feature_sets) >= 1, "no feature sets: give --additional_feature_sets"),
            (len(set(self.reference_models)) == len(self.reference_models),
             "reference_models: each name once"),
            (self.compare.compare_to is None or self.compare.compare_to in self.reference_models,
             f"compare_to {self.compare.compare_to}: name a model of --reference_models "
             f"({', '.join(self.reference_models) or 'none given'})"),
            # (Once expanded, the feature sets are the design's own, and their shuffled controls.)
            (self.design.kind is None or self.feature_sets == ((),) or self._design_expanded(),
             "--design: the feature sets follow from --factors; drop --additional_feature_sets (and "
             "feature_sets in TOML)"),
            *[(len(dict(self.grid).get(where, ())) == 2,
               f"factor {name}: give it the two values to compare, low first, e.g. [{where[0]}] {where[1]} = "
               f"[false, true] (or --{where[1]} off on)")
              for name, where in self.design.grid_factors.items()],
            *self._adaptive_problems(),
        ])

    @property
    def adaptive(self) -> bool:
        """`--seeds auto`: the seeds follow the verdicts (`evaluation/sequential.py`)."""
        return self.train.seeds == AUTO

    @property
    def seed_count(self) -> int:
        """Seeds per feature set and cell: `--seeds`, or with `--seeds auto` the most an arm can get."""
        return self.compare.max_seeds if self.adaptive else self.train.seeds

    def _adaptive_problems(self) -> list:
        if not self.adaptive:
            return []
        compare = self.compare
        return [
            (compare.min_seeds <= compare.max_seeds,
             f"--min_seeds {compare.min_seeds} is above --max_seeds {compare.max_seeds}: lower --min_seeds "
             "or raise --max_seeds"),
            (self.train.seed + compare.max_seeds - 1 <= MAX_SEED,
             f"seed {self.train.seed} with up to {compare.max_seeds} seeds: seeds must lie between 0 and "
             f"{MAX_SEED}"),
            # A design's effects pool every run; spending alpha per effect over rounds is not built.
            (self.design.kind is None, "--seeds auto with --design: a design's effects need every run at "
                                       "the same seeds; give --seeds N"),
            (not self.ranking.enabled, "--seeds auto with --ranking: the ranking stage has no verdicts to "
                                       "follow; give --seeds N, or drop --ranking"),
        ]

    def _design_expanded(self) -> bool:
        runs = self.design.feature_sets()
        return self.feature_sets[:len(runs)] == runs and all(
            len(f) == 1 and f[0].endswith(SHUFFLED) for f in self.feature_sets[len(runs):])

    def design_levels(self) -> dict[str, tuple[str, str, object, object]]:
        """A design's grid factors: factor -> (section, field, low value, high value), as the grid gives
        them (first value low)."""
        grid = dict(self.grid)
        return {name: (*where, *grid[where]) for name, where in self.design.grid_factors.items()
                if len(grid.get(where, ())) == 2}

    def cells(self) -> list[Cell]:
        """Every grid cell, nesting the dimensions in `CELL_SECTIONS` and field order."""
        cells = []
        for chosen in itertools.product(*(values for _, values in self.grid)):
            changed = {name: {} for name in CELL_SECTIONS}
            for ((section, field), _), value in zip(self.grid, chosen):
                changed[section][field] = value
            sections = {name: dataclasses.replace(getattr(self, name), **changed[name])
                        for name in CELL_SECTIONS}
            cells.append(Cell(**sections, values=tuple(zip((key for key, _ in self.grid), chosen))))
        return cells

    @property
    def objectives(self) -> list[ObjectiveConfig]:
        """The distinct objectives of the grid, in cell order."""
        return list(dict.fromkeys(cell.objective for cell in self.cells()))

    def retrieval_runs(self, content: TrainingContent | None = None) -> list[RunConfig]:
        """One run per feature set, grid cell and seed, in that order of nesting.

        Args:
          content: What the runs train on (needed for their identities).
        """
        return [RunConfig(self.data, features, cell.model,
                          dataclasses.replace(cell.train, seed=cell.train.seed + i, seeds=1), self.lengths,
                          content=content_for(features, content), objective=cell.objective)
                for features in self.feature_sets for cell in self.cells() for i in range(self.seed_count)]

    def ranking_runs(self, content: TrainingContent | None = None) -> list[RunConfig]:
        """One ranking run per feature set and seed (towers as in [model]), if enabled."""
        if not self.ranking.enabled:
            return []
        return [RunConfig(self.data, features, self.model,
                          TrainConfig(num_epochs=self.ranking.num_epochs, eval_every=1,
                                      batch_size=self.ranking.batch_size,
                                      learning_rate=self.ranking.learning_rate, seed=self.train.seed + i),
                          self.lengths, task="ranking", content=content_for(features, content))
                for features in self.feature_sets for i in range(self.seed_count)]


def cell_labeller(cells):
    """A function from a cell, (model, train, objective), to the words of what varies across `cells`: the
    grid's model and training settings ("layers 64-32", "lr 0.1"), then the objective options that vary."""
    def varies(i, name):
        return len({getattr(cell[i], name) for cell in cells}) > 1

    varying = [(i, f) for i, cls in enumerate((ModelConfig, TrainConfig)) for f in dataclasses.fields(cls)
               if f.metadata.get("grid") and varies(i, f.name)]
    options = [f.name for f in dataclasses.fields(ObjectiveConfig) if varies(2, f.name)]
    return lambda cell: ([f.metadata["words"](getattr(cell[i], f.name)) for i, f in varying]
                         + ([cell[2].label(options)] if options else []))


def content_for(features: tuple[str, ...], content: TrainingContent | None) -> TrainingContent | None:
    """The content a run with `features` depends on (movie lengths only with `movie_length`)."""
    if content is None or "movie_length" in features:
        return content
    return dataclasses.replace(content, movie_lengths="")


# Every section, by its TOML name; a section nested in another is read into that one's field.
SECTIONS: dict[str, type] = {cls.section: cls for cls in (
    ExperimentConfig, DataConfig, CsvColumns, ModelConfig, TrainConfig, ObjectiveConfig, LengthConfig,
    RankingConfig, CompareConfig, RunnerConfig, TrackingConfig, DesignConfig)}
# Where each section's values go: (the class holding it, its field there).
_NESTED = {"csv_columns": ("data", "csv_columns")}
# Names older experiment files use, each mapped to today's (section, key) once, here.
_SECTION_ALIASES = {
    # `[run]` held the runner's settings before it was named like its class (RunnerConfig).
    "run": "runner",
}
_KEY_ALIASES = {
    # Before lists were accepted in their own section, grids had a [grid] section of their own.
    ("grid", "layer_sizes"): ("model", "layer_sizes"),
    ("grid", "embedding_sizes"): ("model", "embedding_size"),
    ("grid", "learning_rates"): ("train", "learning_rate"),
    # The verdicts' metric was `metric` before its key was named like its flag.
    ("compare", "metric"): ("compare", "verdict_metric"),
}
# [features.NAME] tables: read by `declarations`.
FEATURES_SECTION = "features"


def fields_of(cls) -> dict[str, dataclasses.Field]:
    return {f.name: f for f in dataclasses.fields(cls)}


@functools.cache
def field_types(cls) -> dict:
    """A settings class's field types, worked out once: `typing.get_type_hints` evaluates every annotation
    of the class on each call, and the command line's parser asks once per flag, which was most of the
    parser's time (BENCHMARKS.md, session 23). The classes do not change while the program runs."""
    return typing.get_type_hints(cls)


def declared_settings():
    """(section name, class, field) of every setting with a flag or TOML key, in section order."""
    for name, cls in SECTIONS.items():
        for field in dataclasses.fields(cls):
            if "help" in field.metadata:
                yield name, cls, field


def section_names() -> list[str]:
    return [*SECTIONS, FEATURES_SECTION, *_SECTION_ALIASES, "grid"]


def load_toml(path: str) -> dict:
    """Reads an experiment TOML file into a dict of sections.

    Raises:
      UserInputError: missing file, TOML syntax error, text outside a section.
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
                             f"{', '.join('[' + s + ']' for s in SECTIONS)}")
    return canonical(raw)


def canonical(sections: dict) -> dict:
    """The sections under today's names (older names mapped), unknown sections and keys rejected."""
    out: dict = {}
    for section, values in sections.items():
        if section not in section_names() or not isinstance(values, dict):
            raise UserInputError(
                f"unknown section [{section}]; expected {', '.join('[' + s + ']' for s in SECTIONS)}, "
                f"[{FEATURES_SECTION}.NAME]")
        if section == FEATURES_SECTION:
            out[section] = dict(values)
            continue
        section = _SECTION_ALIASES.get(section, section)
        for key, value in values.items():
            target, name = _KEY_ALIASES.get((section, key), (section, key))
            cls = SECTIONS.get(target)
            if cls is None or "help" not in getattr(fields_of(cls).get(name), "metadata", {}):
                valid = (sorted(alias for (owner, alias) in _KEY_ALIASES if owner == section)
                         if section == "grid" else
                         sorted(f.name for _, c, f in declared_settings() if c is SECTIONS.get(section)))
                raise UserInputError(f"unknown key {key!r} in [{section}]; expected one of "
                                     f"{', '.join(valid)}")
            out.setdefault(target, {})[name] = value
    return out


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


def _describe(hint) -> str:
    if isinstance(hint, type):
        return hint.__name__
    return str(hint).replace("typing.", "").replace("NoneType", "None")


def _tuples(value):
    return tuple(_tuples(v) for v in value) if isinstance(value, (list, tuple)) else value


def typed(cls, values: dict):
    """Builds a dataclass from TOML or flag values, checking types; lists become tuples."""
    hints = field_types(cls)
    for name, value in values.items():
        if name in hints and not _matches(value, hints[name]):
            raise UserInputError(f"{name} = {value!r}: expected {_describe(hints[name])}")
    try:
        return cls(**{k: _tuples(v) for k, v in values.items()})
    except TypeError as err:
        raise UserInputError(f"bad settings for {cls.__name__}: {err}") from None


def _grid_values(cls, values: dict) -> tuple[dict, list]:
    """(single values, [((section, field), values) of each grid dimension]) of one section's values.

    A grid field given a list of values (a list of lists for a list-valued
    field such as layer_sizes) is a dimension; one value is just the value.
    """
    hints, single, axes = field_types(cls), {}, []
    for name, value in values.items():
        field = fields_of(cls)[name]
        if not field.metadata.get("grid") or _matches(value, hints[name]) or not isinstance(value, list):
            single[name] = value
            continue
        if not value:
            raise UserInputError(f"{name} = []: give one value or a list of values to try")
        for item in value:
            if not _matches(item, hints[name]):
                raise UserInputError(f"{name} = {item!r}: expected {_describe(hints[name])} or a list of "
                                     "them")
        distinct = list(dict.fromkeys(_tuples(v) for v in value))
        if len(distinct) < len(value):
            repeated = next(v for v in distinct if [_tuples(x) for x in value].count(v) > 1)
            raise UserInputError(f"{name}: {_show(repeated)} is given twice; give each grid value once (a "
                                 "repeated value would count one model as several)")
        for item in distinct:  # each value checked as a single one would be
            typed(cls, {name: item})
        single[name] = distinct[0]
        if len(distinct) > 1:
            axes.append(((cls.section, name), tuple(distinct)))
    order = [f.name for f in dataclasses.fields(cls)]
    return single, sorted(axes, key=lambda axis: order.index(axis[0][1]))


def declarations(tables: dict) -> tuple[ColumnFeature, ...]:
    """ColumnFeatures from the `[features]` TOML table ({name: {file, column, kind, ...}})."""
    out = []
    fields = {f.name for f in dataclasses.fields(ColumnFeature)} - {"name"}
    for name, values in tables.items():
        if not isinstance(values, dict):
            raise UserInputError(f"[features] {name} = {values!r}: declare it as a table, [features.{name}], "
                                 "with file, column and kind")
        unknown = sorted(set(values) - fields)
        if unknown:
            raise UserInputError(f"unknown key {unknown[0]!r} in [features.{name}]; expected one of "
                                 f"{', '.join(sorted(fields))}")
        missing = [k for k in ("file", "column", "kind") if k not in values]
        if missing:
            raise UserInputError(f"[features.{name}]: give {', '.join(missing)} (e.g. file = \"items\", "
                                 "column = \"tags\", kind = \"multi_valued\")")
        out.append(typed(ColumnFeature, {"name": name, **values}))
    return tuple(out)


def parse_feature_set(names) -> tuple[str, ...]:
    """One feature set as written: the sorted, distinct names; () for the baseline ("None").

    Raises:
      UserInputError: "None" mixed with features. (Unknown names are found
        where the feature registry is, when the ablation is planned.)
    """
    names = list(names)
    if BASELINE in names:
        if len(names) > 1:
            raise UserInputError(
                f"feature set {' '.join(names)}: 'None' is the id-only baseline and cannot be "
                "combined with features; give it as its own --additional_feature_sets None")
        return ()
    return tuple(sorted(set(names)))


def _feature_sets(value, baseline: bool) -> tuple[tuple[str, ...], ...]:
    if not isinstance(value, list) or not all(
            isinstance(s, list) and s and all(isinstance(n, str) for n in s) for s in value):
        raise UserInputError(
            "feature_sets: expected a list of lists of feature names, e.g. [[\"None\"], [\"timestamp\"]]")
    parsed = [parse_feature_set(names) for names in value]
    repeated = next((names for i, names in enumerate(parsed) if names in parsed[:i]), None)
    if repeated is not None:
        raise UserInputError(f"feature set {' '.join(repeated) or BASELINE} is given twice; give each "
                             "feature set once")
    return ((),) * (baseline and () not in parsed) + tuple(parsed)


def with_protocol(sections: dict) -> dict:
    """The sections with the named protocol's settings filled in where they set nothing."""
    name = sections.get("experiment", {}).get("protocol")
    if name is None:
        return sections
    if name not in PROTOCOLS:
        raise UserInputError(f"protocol {name!r}: unknown; expected one of {', '.join(PROTOCOLS)}")
    out = {section: dict(values) for section, values in sections.items()}
    for section, values in PROTOCOLS[name].settings.items():
        for key, value in values.items():
            out.setdefault(section, {}).setdefault(key, value)
    return out


def build(sections: dict) -> ExperimentConfig:
    """The ExperimentConfig of sections ({"data": {...}, "train": {...}, ...}: a TOML file's, with the flags'
    values over them), every field type- and range-checked.

    `experiment.feature_sets` is a list of lists of names, "None" for the
    baseline (added unless `baseline = false`).
    """
    sections = with_protocol(canonical(sections))
    values = {name: dict(sections.get(name, {})) for name in SECTIONS}
    grid = []
    for name in CELL_SECTIONS:
        values[name], axes = _grid_values(SECTIONS[name], values[name])
        grid += axes
    for name, (owner, field) in _NESTED.items():
        values[owner][field] = typed(SECTIONS[name], values.pop(name))
    values["data"]["features"] = declarations(sections.get(FEATURES_SECTION, {}))
    experiment = values.pop("experiment")
    baseline = experiment.get("baseline", True)
    if not isinstance(baseline, bool):
        raise UserInputError(f"baseline = {baseline!r}: expected true or false")
    experiment["feature_sets"] = _feature_sets(experiment.get("feature_sets", [[BASELINE]]), baseline)
    user = experiment.get("recommend_user")
    if isinstance(user, int) and not isinstance(user, bool):
        experiment["recommend_user"] = str(user)
    sections_built = {name: typed(SECTIONS[name], v) for name, v in values.items()}
    return typed(ExperimentConfig, {**experiment, **sections_built, "grid": tuple(grid)})
