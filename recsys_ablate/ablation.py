"""Runs an ablation: data -> one model per feature set -> summary, dumps, report."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os

from recsys_ablate.config import ExperimentConfig
from recsys_ablate.data import demo
from recsys_ablate.data.encoded import load_dataset
from recsys_ablate.features import FeatureContext
from recsys_ablate.imdb_lengths import ImdbMovieLengthSource
from recsys_ablate.movie_length import CsvMovieLengthSource, MovieLengthLookup
from recsys_ablate.recommendations import dump_recommendations, user_query
from recsys_ablate.reports import write_report
from recsys_ablate.trainer import ModelFolder, Progress, train_or_reload


@dataclasses.dataclass
class AblationResult:
    """What an ablation produced.

    Attributes:
      trained: `TrainedModel`s in feature-set order.
      report: Path of the HTML report.
      recommendations: Paths of the recommendation dumps (JSON, CSV).
    """

    trained: list
    report: str
    recommendations: tuple[str, ...]


def _length_lookup(config: ExperimentConfig, data) -> MovieLengthLookup:
    csv_path = config.lengths.csv
    if csv_path is None and config.data.dataset == "demo":
        csv_path = os.path.join(demo.demo_folder(config.data.datasets_dir), "movie_runtimes.csv")
    sources = [ImdbMovieLengthSource(config.lengths.imdb_database, config.lengths.cache_dir)]
    if csv_path:
        sources.append(CsvMovieLengthSource(csv_path))
    return MovieLengthLookup(sources, config.lengths.default_minutes)


def run_ablation(config: ExperimentConfig, log=print) -> AblationResult:
    """Trains or reloads every model of `config` and writes its outputs.

    Args:
      config: The validated experiment configuration.
      log: Where console lines go.

    Returns:
      The `AblationResult`.
    """
    data = load_dataset(config.data, log=log)
    log(f"data: {data.source}: {len(data.user):,} ratings ({len(data.train):,} train, "
        f"{len(data.validation):,} validation), {data.num_users:,} users, {data.num_movies:,} movies")
    if config.recommend_user is not None:
        # Checked before hours of training, not after.
        user_query(data, data.user_row(config.recommend_user))
    lookup = _length_lookup(config, data)

    @functools.cache
    def movie_lengths():
        lengths = lookup.lengths(data.movie_ids, data.movie_titles)
        log(lengths.summary())
        return lengths

    context = FeatureContext(data, config.model.embedding_size, movie_lengths)
    runs = config.runs()
    to_train = []
    for run in runs:
        history = ModelFolder(config.saved_models_dir, run, run.data.label).matching_history()
        done = 0 if config.retrain or history is None else history.last_epoch
        to_train.append(run.train.num_epochs - done)
    progress = Progress(sum(to_train), log=log)
    log(f"{len(runs)} feature sets; {sum(to_train):,} epochs to train "
        f"({len(runs) - sum(1 for n in to_train if n)} already trained)")
    trained = [train_or_reload(run, data, context, config.saved_models_dir, config.retrain, progress, log)
               for run in runs]
    _print_summary(trained, config.train.ks, log)

    stem = _stem(config)
    recommendation_files = ()
    if config.recommend_user is not None:
        recommendation_files = dump_recommendations(trained, data, config.recommend_user,
                                                    config.reports_dir, stem, log)
    settings = _settings(config, data, movie_lengths if any(
        "movie_length" in run.features for run in runs) else None)
    links = {os.path.basename(p): os.path.basename(p) for p in recommendation_files}
    report = write_report(os.path.join(config.reports_dir, f"{stem}.html"), trained, settings, links,
                          config.train.ks)
    return AblationResult(trained, report, tuple(recommendation_files))


def _stem(config: ExperimentConfig) -> str:
    digest = hashlib.sha256(json.dumps(
        [r.identity() for r in config.runs()]).encode()).hexdigest()[:8]
    return f"ablation_{config.data.resolved().label}_{digest}"


def _settings(config: ExperimentConfig, data, movie_lengths) -> dict:
    settings = {
        "dataset": data.source,
        "ratings": f"{len(data.user):,} ({len(data.train):,} train / {len(data.validation):,} validation)",
        "split": f"{config.data.split}, train fraction {config.data.train_fraction}, "
                 f"split seed {config.data.split_seed}",
        "max_ratings": config.data.max_ratings or "all",
        "embedding size": config.model.embedding_size,
        "layer sizes": " ".join(map(str, config.model.layer_sizes)) or "none (embeddings only)",
        "epochs": config.train.num_epochs,
        "evaluate every": f"{config.train.eval_every} epochs",
        "batch size": config.train.batch_size,
        "optimizer": f"Adagrad, learning rate {config.train.learning_rate}",
        "seed": config.train.seed,
        "loss": "TFRS Retrieval (in-batch softmax)",
        "metric": f"top-K categorical accuracy over all {data.num_movies:,} movies (FactorizedTopK semantics)",
    }
    if movie_lengths is not None:
        settings["movie lengths"] = movie_lengths().summary()
    return settings


def _print_summary(trained, ks, log) -> None:
    width = max(len(t.label) for t in trained)
    header = f"{'feature set':<{width}}  " + "  ".join(f"{'top-' + str(k):>8}" for k in ks) + "  source"
    log("\n" + header)
    log("-" * len(header))
    for t in trained:
        final = t.history.final_metrics
        log(f"{t.label:<{width}}  " + "  ".join(f"{final[f'top_{k}']:8.4f}" for k in ks)
            + ("  reloaded" if t.reloaded else "  trained"))
