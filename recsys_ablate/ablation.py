"""Runs an ablation: data -> one model per feature set -> summary, dumps, report."""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os

import numpy as np

from recsys_ablate.comparison import summarise
from recsys_ablate.metrics import mean_interval
from recsys_ablate.config import ExperimentConfig, TrainingContent
from recsys_ablate.data import demo
from recsys_ablate.data.encoded import load_dataset
from recsys_ablate.features import FeatureContext
from recsys_ablate.imdb_lengths import ImdbMovieLengthSource
from recsys_ablate.model import build_model
from recsys_ablate.movie_length import CsvMovieLengthSource, MovieLengthLookup
from recsys_ablate.recommendations import dump_recommendations, user_query
from recsys_ablate.reports import write_report
from recsys_ablate.errors import UserInputError
from recsys_ablate.files import check_writable
from recsys_ablate.model_store import ModelFolder, RetrainMarker
from recsys_ablate.trainer import Progress, train_or_reload
from recsys_ablate.workers import run_in_workers, shared_counters, threads_per_worker, worker_log


@dataclasses.dataclass
class AblationResult:
    """What an ablation produced.

    Attributes:
      trained: `TrainedModel`s in feature-set order.
      report: Path of the HTML report.
      recommendations: Paths of the recommendation dumps (JSON, CSV).
      rankers: Ranking-stage `TrainedModel`s (when enabled).
    """

    trained: list
    report: str
    recommendations: tuple[str, ...]
    rankers: list = dataclasses.field(default_factory=list)


def _length_lookup(config: ExperimentConfig, data) -> MovieLengthLookup:
    csv_path = config.lengths.csv
    if csv_path is None and config.data.dataset == "demo":
        csv_path = os.path.join(demo.demo_folder(config.data.datasets_dir), "movie_runtimes.csv")
    sources = [ImdbMovieLengthSource(config.lengths.imdb_database, config.lengths.cache_dir)]
    if csv_path:
        sources.append(CsvMovieLengthSource(csv_path))
    return MovieLengthLookup(sources, config.lengths.default_minutes)


def run_ablation(config: ExperimentConfig, log=print, dry_run: bool = False) -> AblationResult | None:
    """Trains or reloads every model of `config` and writes its outputs.

    Args:
      config: The experiment configuration.
      log: Where console lines go.
      dry_run: Check every input, load the data and plan, then stop before
        training (returns None).

    Returns:
      The `AblationResult` (None with `dry_run`).
    """
    config = config.validate()
    check_writable(config.reports_dir, "--reports_dir")  # before hours of training, not after
    data = load_dataset(config.data, log=log)
    log(f"data: {data.source}: {len(data.user):,} ratings ({len(data.train):,} train, "
        f"{len(data.validation):,} validation), {data.num_users:,} users, {data.num_movies:,} movies")
    if config.recommend_user is not None:
        # Checked before hours of training, not after.
        _check_recommend_user(data, config.recommend_user, log)
    if config.ranking.enabled:
        rated = [int(np.isfinite(data.rating[rows]).sum()) for rows in (data.train, data.validation)]
        if min(rated) == 0:
            raise UserInputError(
                f"--ranking predicts ratings, but {config.data.label} has {rated[0]:,} rated training and "
                f"{rated[1]:,} rated validation interactions; name the rating column (--rating_column) or "
                "drop --ranking")
    lookup = _length_lookup(config, data)

    @functools.cache
    def movie_lengths():
        lengths = lookup.lengths(data.movie_ids, data.movie_titles)
        log(lengths.summary())
        return lengths

    uses_lengths = any("movie_length" in features for features in config.feature_sets)
    content = TrainingContent(data.fingerprint, movie_lengths().digest() if uses_lengths else "")
    runs = config.runs(content)
    ranking_runs = config.ranking_runs(content)
    for run in runs:
        if not run.model.layer_sizes:  # width mismatches fail here, before any training
            build_model(run.features, _context(run, data, movie_lengths), (), run.train.seed)
    stem = _stem(config, runs + ranking_runs)
    marker = RetrainMarker(config.saved_models_dir, stem)
    token = marker.token() if config.retrain else None
    to_train = []
    for run in runs + ranking_runs:
        history = ModelFolder(config.saved_models_dir, run).saved_history(None, token)
        to_train.append(run.train.num_epochs - (0 if history is None else history.last_epoch))
    progress = Progress(sum(to_train), log=log)
    log(f"{len(runs) + len(ranking_runs)} models ({len(config.feature_sets)} feature sets x "
        f"{len(config.cells())} architectures x {config.train.seeds} seeds"
        f"{', plus ranking models' if ranking_runs else ''}); {sum(to_train):,} epochs to train "
        f"({sum(1 for n in to_train if n == 0)} already trained)")
    pending = [(run, epochs) for run, epochs in zip(runs + ranking_runs, to_train) if epochs > 0]
    if dry_run:
        for run, epochs in pending:
            log(f"would train {ModelFolder(config.saved_models_dir, run).path}: {epochs} epochs")
        return None
    if pending:
        check_writable(config.saved_models_dir, "--saved_models_dir")
        if config.retrain:
            marker.start(token)
    order = training_order([run.features for run, _ in pending], [epochs for _, epochs in pending])
    pending = [pending[i][0] for i in order]
    in_workers = set()
    if config.workers > 1 and len(pending) > 1:
        if uses_lengths:
            movie_lengths()  # looked up (and cached) once, before the workers need it
        workers = min(config.workers, len(pending))
        threads = threads_per_worker(workers)
        log(f"training {len(pending)} models in {workers} worker processes, {threads} TensorFlow "
            f"thread{'s' if threads > 1 else ''} each")
        run_in_workers(_train_job, [(config, run, sum(to_train), workers, token)
                       for run in pending], workers, log)
        in_workers = {run.identity() for run in pending}

    def train(run):
        result = train_or_reload(run, data, _context(run, data, movie_lengths), config.saved_models_dir,
                                 token, progress, log)
        # Models the workers just trained are reloaded here, not retrained.
        return dataclasses.replace(result, reloaded=False) if run.identity() in in_workers else result

    trained = [train(run) for run in runs]
    rankers = [train(run) for run in ranking_runs]
    marker.finish()  # every model is trained: a later --retrain starts over
    summaries = summarise(trained, data, config.train.ks)
    _print_summary(summaries, config.train.ks, log)

    recommendation_files = ()
    if config.recommend_user is not None:
        # One model per feature set: the first seed's.
        first_seeds = [s.models[0] for s in summaries]
        recommendation_files = dump_recommendations(
            first_seeds, data, config.recommend_user, config.reports_dir, stem, log, ranking_models=rankers,
            candidates=config.ranking.candidates, exclude_rated=config.ranking.exclude_rated,
            labels=[s.label for s in summaries])
    settings = _settings(config, data, movie_lengths if any(
        "movie_length" in run.features for run in runs) else None)
    links = {os.path.basename(p): os.path.basename(p) for p in recommendation_files}
    report = write_report(os.path.join(config.reports_dir, f"{stem}.html"), summaries, settings, links,
                          config.train.ks, ranking_rows=_ranking_rows(rankers, log))
    return AblationResult(trained, report, tuple(recommendation_files), rankers)


def training_order(feature_sets, epochs_left) -> list[int]:
    """The order in which worker processes take pending models: most work first.

    Each free worker takes the next model, so starting the longest ones first
    keeps the last model from running alone while the other workers idle
    (longest-processing-time-first scheduling; on the deep dive's six models
    with two workers it cut the projected protocol by ~7%, BENCHMARKS.md).
    Work is estimated as epochs left x (1 + optional features): step times
    grow with the features, and only the order matters. Ties keep the
    configured order.

    Args:
      feature_sets: Each pending model's optional features.
      epochs_left: Each pending model's epochs still to train.

    Returns:
      Indices into the arguments, in training order.
    """
    work = [epochs * (1 + len(features)) for features, epochs in zip(feature_sets, epochs_left)]
    return sorted(range(len(work)), key=lambda i: -work[i])


def _train_job(config: ExperimentConfig, run, total_epochs: int,
               workers: int, retrain_token: str | None) -> None:
    """Worker process: trains one model of the ablation (see `workers.run_in_workers`)."""
    data = load_dataset(config.data, log=lambda *_: None)
    if data.fingerprint != run.content.data:
        raise UserInputError(
            f"the data of {config.data.label} changed while the ablation ran; re-run the command")
    lookup = _length_lookup(config, data)
    movie_lengths = functools.cache(lambda: lookup.lengths(data.movie_ids, data.movie_titles))
    progress = Progress(total_epochs, worker_log, shared_counters(), workers)
    train_or_reload(run, data, _context(run, data, movie_lengths), config.saved_models_dir, retrain_token,
                    progress, worker_log)


def _ranking_rows(rankers, log) -> list[list[str]]:
    """Report and console rows of the ranking stage: validation RMSE per feature set."""
    groups: dict[tuple, list] = {}
    for ranker in rankers:
        groups.setdefault(ranker.run.features, []).append(ranker)
    rows = []
    for models in groups.values():
        mean, half = mean_interval([m.history.final_metrics["rmse"] for m in models])
        rows.append([models[0].label.replace(", ranking", ""), str(len(models)),
                     str(models[0].history.last_epoch), f"{mean:.4f} ± "
                                                        f"{half:.4f}" if half else f"{mean:.4f}"])
        log(f"ranking {rows[-1][0]}: validation RMSE {rows[-1][3]} ({rows[-1][1]} seeds)")
    return rows


def _context(run, data, movie_lengths) -> FeatureContext:
    return FeatureContext(data, run.model.embedding_size, movie_lengths)


def _stem(config: ExperimentConfig, runs) -> str:
    """Name of the ablation's outputs: the data's name and a hash of its models' identities."""
    digest = hashlib.sha256(json.dumps([r.identity() for r in runs]).encode()).hexdigest()[:8]
    return f"ablation_{config.data.label}_{digest}"


def _check_recommend_user(data, user_id: str, log) -> None:
    """Rejects an unknown user or one without ratings; warns about one the models never saw."""
    row = data.user_row(user_id)
    user_query(data, row)
    if not np.isin(data.train, np.flatnonzero(data.user == row)).any():
        log(f"warning: user {user_id} has no ratings in the training split, so every model recommends to "
            "them from the shared out-of-vocabulary user embedding (the same list as for any unseen user)")


def _settings(config: ExperimentConfig, data, movie_lengths) -> dict:
    settings = {
        "dataset": data.source,
        "ratings": f"{len(data.user):,} ({len(data.train):,} train / {len(data.validation):,} validation)",
        "split": (f"{config.data.split}: " + ("seeded random shuffle (timestamp features can see the future)"
                                              if config.data.split == "random" else
                                              "global time cut, trained on earlier ratings")
                  + f", train fraction {config.data.train_fraction}, split seed {config.data.split_seed}"),
        "max_ratings": config.data.max_ratings or "all",
        "embedding size": (", ".join(str(e) for e in config.grid.embedding_sizes)
                           or config.model.embedding_size),
        "layer sizes": " | ".join(" ".join(map(str, sizes)) or "none (embeddings only)"
                                  for sizes in (config.grid.layer_sizes or (config.model.layer_sizes,))),
        "epochs": config.train.num_epochs,
        "evaluate every": f"{config.train.eval_every} epochs",
        "batch size": config.train.batch_size,
        "optimizer": "Adagrad, learning rate " + (", ".join(map(str, config.grid.learning_rates))
                                                   or str(config.train.learning_rate)),
        "seeds": (f"{config.train.seed}" if config.train.seeds == 1 else
                  f"{config.train.seeds} per feature set "
                  f"({config.train.seed}..{config.train.seed + config.train.seeds - 1}); "
                  "intervals are 95% Student-t over seeds"),
        "evaluation": ("each user's training movies excluded from the ranking" if config.train.exclude_seen
                       else "full catalogue, training movies included (as in the TFRS tutorials)"),
        "early stopping": (f"on {config.train.early_stopping}, patience {config.train.patience} evaluations, "
                           "best weights kept" if config.train.early_stopping else "off"),
        "comparison": "paired bootstrap over users (2,000 resamples) of per-example "
                      f"top-{max(config.train.ks)} "
                      "hits against the baseline, seeds averaged per example",
        "loss": "TFRS Retrieval's in-batch softmax (computed over each batch's distinct users and movies)",
        "metric": f"top-K categorical accuracy over all {data.num_movies:,} movies (FactorizedTopK "
                  "semantics)",
    }
    if movie_lengths is not None:
        settings["movie lengths"] = movie_lengths().summary()
    return settings


def _print_summary(summaries, ks, log) -> None:
    width = max(len(s.label) for s in summaries)
    k = max(ks)
    header = (f"{'feature set':<{width}}  seeds  " + "  ".join(f"{'top-' + str(k):>8}" for k in ks)
              + f"  {'recall@10':>9}  {'ndcg@10':>8}  vs baseline top-{k} [95% CI] p   source")
    log("\n" + header)
    log("-" * len(header))
    for s in summaries:
        cells = "  ".join(f"{s.final[f'top_{k}'][0]:8.4f}" for k in ks)
        extra = (f"  {s.final.get('recall_10', (float('nan'),))[0]:9.4f}"
                 f"  {s.final.get('ndcg_10', (float('nan'),))[0]:8.4f}")
        versus = s.versus_baseline
        compared = (f"  {versus['difference']:+.4f} [{versus['low']:+.4f}, {versus['high']:+.4f}] "
                    f"p={versus['p_value']:.3f}" if versus else "  " + " " * 8)
        source = sorted({"reloaded" if m.reloaded else "trained" for m in s.models})
        log(f"{s.label:<{width}}  {len(s.models):>5}  {cells}{extra}{compared}  {'/'.join(source)}")
