"""Runs an ablation: plan -> train -> summarise -> write outputs.

`run_ablation` reads as that table of contents. `rebuild_outputs` (the
`report` command) runs only the plan and the outputs, from saved models.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json

import numpy as np

from recsys_ablate.data.encoded import label as data_label
from recsys_ablate.data.encoded import load_dataset, resolve
from recsys_ablate.data.imdb_lengths import ImdbMovieLengthSource
from recsys_ablate.data.movie_length import CsvMovieLengthSource, MovieLengthLookup
from recsys_ablate.data.sources import source_for
from recsys_ablate.errors import UserInputError
from recsys_ablate.evaluation import sequential
from recsys_ablate.evaluation.comparison import group_key, summarise_options
from recsys_ablate.evaluation.metrics import check_metric_names, metric
from recsys_ablate.features import (FeatureContext, check_feature_sets, check_tower_widths, register_features,
                                   with_controls)
from recsys_ablate.models.reference import REFERENCES
from recsys_ablate.files import check_writable
from recsys_ablate.outputs.summary import AblationResult, write_outputs
from recsys_ablate.outputs.tracking import Tracker, check_tracking
from recsys_ablate import ray_cluster
from recsys_ablate.settings import ExperimentConfig, TrainingContent
from recsys_ablate.training import ray_backend
from recsys_ablate.training.callbacks import Progress
from recsys_ablate.training.model_store import ModelFolder, RetrainMarker
from recsys_ablate.training.references import check_reference_names, fit_references
from recsys_ablate.training.trainer import TrainedModel, load_saved_model, train_or_reload
from recsys_ablate.training.workers import (run_in_workers, shared_counters, shared_trials,
                                            threads_per_worker, worker_log, worker_observer)


@dataclasses.dataclass
class AblationPlan:
    """What an ablation will train or reload, decided before any training.

    Attributes:
      config: The validated configuration.
      data: The `EncodedDataset`.
      movie_lengths: Returns the catalogue's `MovieLengths` (looked up once).
      runs: Retrieval runs, then `ranking_runs`, each bound to its content.
      ranking_runs: Ranking-stage runs (when enabled).
      stem: Name of the ablation's outputs (data name and identities' hash).
      epochs_left: Per run (same order as runs + ranking_runs), epochs still to train.
      retrain_token: The `--retrain` invocation's token, or None.
      marker: Remembers an unfinished `--retrain`.
    """

    config: ExperimentConfig
    data: object
    movie_lengths: object
    runs: list
    ranking_runs: list
    stem: str
    epochs_left: list
    retrain_token: str | None
    marker: RetrainMarker

    def context(self, run) -> FeatureContext:
        return FeatureContext(self.data, run.model.embedding_size, self.movie_lengths)

    def uses_lengths(self) -> bool:
        return any("movie_length" in run.features for run in self.runs)

    def with_weights(self, trained: TrainedModel) -> TrainedModel:
        """`trained` with its weights loaded (models trained in workers or listed from disk have none)."""
        if trained.model is not None:
            return trained
        model = load_saved_model(trained.run, self.context(trained.run), self.config.saved_models_dir,
                                 trained.history)
        return dataclasses.replace(trained, model=model)


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
    plan = plan_ablation(config, log)
    if dry_run:
        first_round = config.train.seed + config.compare.min_seeds if config.adaptive else None
        for run, epochs in zip(plan.runs + plan.ranking_runs, plan.epochs_left):
            if epochs > 0 and (first_round is None or run.train.seed < first_round):
                log(f"would train {ModelFolder(config.saved_models_dir, run).path}: {epochs} epochs")
        if config.adaptive:
            log(f"then, round by round, one more seed for the arms of undecided comparisons, up to "
                f"{config.compare.max_seeds} (the rounds depend on the verdicts: not listed)")
        for name in config.reference_models:
            log(f"would fit reference {name} after training ({len(REFERENCES[name].grid)} settings tried on "
                "validation), or reload it if this split's fit is saved")
        return None
    tracker = Tracker(config.tracking, plan.stem, log)
    observer = tracker.epoch if tracker.enabled else None
    if config.adaptive:  # the rounds judge against the references too: fitted first
        references = fit_plan_references(plan, log)
        trained, rankers = train_in_rounds(plan, references, log, observer), []
    else:
        trained, rankers = train_models(plan, log, observer)
        references = fit_plan_references(plan, log)
    result = write_outputs(plan, trained, rankers, log, references=references)
    tracker.finish(result)
    return result


def rebuild_outputs(config: ExperimentConfig, log=print) -> AblationResult:
    """The summary and report of an ablation from its saved models alone: no training, no weights loaded.

    Raises:
      UserInputError: a model of the ablation is not saved (complete).
    """
    plan, retrieval, ranking = saved_models(config, log)
    references = fit_plan_references(plan, log)
    if config.adaptive:
        check_rounds_finished(plan, retrieval, references)
    result = write_outputs(plan, retrieval, ranking, log, dumps=False, references=references)
    Tracker(config.tracking, plan.stem, log).finish(result)
    return result


def fit_plan_references(plan: AblationPlan, log=print) -> list:
    """The ablation's reference models, fitted on its split (or reloaded), chosen on validation by the
    early-stopping metric (else the verdicts' metric)."""
    config = plan.config
    selection = config.train.early_stopping or config.compare.metric_name(config.train.ks)
    return fit_references(config.reference_models, plan.data, config.train, selection,
                          config.saved_models_dir, data_label(config.data), log)


def saved_models(config: ExperimentConfig, log=print) -> tuple[AblationPlan, list, list]:
    """The plan and the saved retrieval and ranking `TrainedModel`s of an ablation (histories, no weights).

    Raises:
      UserInputError: a model of the ablation is not saved (complete).
    """
    plan = plan_ablation(config, log)
    missing = [run for run, epochs in zip(plan.runs + plan.ranking_runs, plan.epochs_left) if epochs > 0]
    if config.adaptive:  # the rounds decide which seeds the ablation has (`check_rounds_finished`)
        saved = [_saved(plan, run) for run, epochs in zip(plan.runs, plan.epochs_left) if epochs == 0]
        return plan, saved, []
    if missing:
        raise UserInputError(
            f"{len(missing)} of {len(plan.runs) + len(plan.ranking_runs)} models of this ablation are not "
            f"trained (first: {ModelFolder(config.saved_models_dir, missing[0]).path}); run it first: the "
            "same command without `report`")
    saved = [_saved(plan, run) for run in plan.runs + plan.ranking_runs]
    return plan, saved[:len(plan.runs)], saved[len(plan.runs):]


def check_rounds_finished(plan: AblationPlan, saved: list, references=()) -> None:
    """--seeds auto: every round the replay of the saved models asks for is trained.

    Raises:
      UserInputError: a round is not (the run was interrupted, or the verdicts' settings changed).
    """
    config = plan.config
    state = sequential.replay(saved, plan.data, sequential.schedule(config.compare), config.train.seed,
                              {group_key(run) for run in plan.runs}, **summarise_options(config, references))
    if state.pending is not None:
        raise UserInputError(
            f"this --seeds auto ablation is not finished: round {state.pending.round} needs "
            f"{state.pending.seeds} seeds of {len(state.needed)} arms; run it first: the same command "
            "without `report`")


def check_experiment(config: ExperimentConfig) -> ExperimentConfig:
    """The checks each section cannot make alone (it checked its own fields when it was read): feature
    names against the registry (declared features registered first), metric names against the metric
    registry, tower widths, the data source's settings. Returns the config with the data settings resolved
    (`--data_dir X` and `--dataset grouplens --data_dir X/` name the same data) and, with shared Ray
    storage, that storage as the saved-models folder.

    Raises:
      UserInputError: naming the problem and its fix.
    """
    register_features(config.data.features)
    if config.design.kind is not None:
        config = dataclasses.replace(config, feature_sets=config.design.feature_sets())
    check_feature_sets(config.feature_sets)
    if config.shuffled_controls:
        config = dataclasses.replace(config, feature_sets=with_controls(config.feature_sets))
    check_reference_names(config.reference_models)
    check_tracking(config.tracking)
    check_metric_names(config.train, config.compare)
    check_tower_widths(config.feature_sets, [cell.model for cell in config.cells()])
    return dataclasses.replace(config, data=resolve(config.data),
                               saved_models_dir=config.runner.storage or config.saved_models_dir)


def plan_ablation(config: ExperimentConfig, log=print) -> AblationPlan:
    """Checks the inputs, loads the data and decides what to train, before any training.

    Raises:
      UserInputError: any bad input, named with its fix.
    """
    config = check_experiment(config)
    ray_cluster.check(config.runner)  # Ray installed, the cluster answers: before the data loads
    check_writable(config.reports_dir, "--reports_dir")  # before hours of training, not after
    data = load_dataset(config.data, log=log)
    log(f"data: {data.source}: {len(data.user):,} ratings ({len(data.train):,} train, "
        f"{len(data.validation):,} validation" + (f", {len(data.test):,} test" if len(data.test) else "")
        + f"), {data.num_users:,} users, {data.num_movies:,} movies"
        + (f" (after min_rating {config.data.min_rating}, k_core {config.data.k_core})"
           if config.data.min_rating is not None or config.data.k_core is not None else ""))
    _check_against_data(config, data, log)
    if config.recommend_user is not None:
        _check_recommend_user(data, config.recommend_user, log)
    if config.ranking.enabled:
        rated = [int(np.isfinite(data.rating[rows]).sum()) for rows in (data.train, data.validation)]
        if min(rated) == 0:
            raise UserInputError(
                f"--ranking predicts ratings, but {data_label(config.data)} has {rated[0]:,} rated training "
                f"and {rated[1]:,} rated validation interactions; name the rating column (--rating_column) "
                "or drop --ranking")
    lookup = _length_lookup(config, data)

    @functools.cache
    def movie_lengths():
        lengths = lookup.lengths(data.movie_ids, data.movie_titles)
        log(lengths.summary())
        return lengths

    uses_lengths = any("movie_length" in features for features in config.feature_sets)
    content = TrainingContent(data.fingerprint, movie_lengths().digest() if uses_lengths else "")
    runs, ranking_runs = config.retrieval_runs(content), config.ranking_runs(content)
    stem = _stem(config, runs + ranking_runs)
    marker = RetrainMarker(config.saved_models_dir, stem)
    token = marker.token() if config.retrain else None
    epochs_left = []
    for run in runs + ranking_runs:
        history = ModelFolder(config.saved_models_dir, run).saved_history(None, token)
        # A complete history is done even short of num_epochs: early stopping ended it.
        epochs_left.append(0 if history is not None and history.complete else
                           run.train.num_epochs - (0 if history is None else history.last_epoch))
    seeds = (f"{config.compare.min_seeds} to {config.compare.max_seeds} seeds, adaptive" if config.adaptive
             else f"{config.train.seeds} seeds")
    log(f"{'up to ' * config.adaptive}{len(runs) + len(ranking_runs)} models ({len(config.feature_sets)} "
        f"feature sets x {len(config.cells())} grid cells x {seeds}"
        f"{', plus ranking models' if ranking_runs else ''}); {sum(epochs_left):,} epochs to train "
        f"({sum(1 for n in epochs_left if n == 0)} already trained)")
    return AblationPlan(config, data, movie_lengths, runs, ranking_runs, stem, epochs_left, token, marker)


def train_models(plan: AblationPlan, log=print, observer=None,
                 finish: bool = True) -> tuple[list[TrainedModel], list[TrainedModel]]:
    """Trains what the plan says is missing (local processes or Ray: `_executor`), reloads the rest.

    `observer` (run, epoch, loss, metrics or None) is called here, in this process, after every epoch
    of every model wherever it trains (tracking), or is None. `finish`: the plan is the whole ablation (a
    round of `train_in_rounds` is not: an interrupted `--retrain` must still resume the earlier rounds).

    Returns:
      (retrieval models, ranking models), in the plan's order.
    """
    config, every = plan.config, plan.runs + plan.ranking_runs
    pending = [i for i, epochs in enumerate(plan.epochs_left) if epochs > 0]
    if pending:
        check_writable(config.saved_models_dir, "--saved_models_dir")
        if config.retrain:
            plan.marker.start(plan.retrain_token)
    done: dict[int, TrainedModel] = {}
    order = [pending[i] for i in training_order([every[i].features for i in pending],
                                                [plan.epochs_left[i] for i in pending])]
    executor = _executor(config, len(pending))
    if executor is not None:
        for i, (history, reloaded) in executor(plan, order, log, observer).items():
            # As the executor's processes trained (or, after waiting on another process, reloaded) them: no
            # weights in this process until asked for.
            folder = ModelFolder(config.saved_models_dir, every[i]).path
            done[i] = TrainedModel(every[i], None, history, folder, reloaded=reloaded)
    here = [i for i in pending if i not in done]  # trained in this process, one by one
    status = [len(pending) - len(here), 0, len(here)]  # models done, running, queued
    progress = Progress(sum(plan.epochs_left), log=log, trials=status, observer=observer)
    for i, run in enumerate(every):
        if i not in done:
            if i in here:
                status[1:] = [1, status[2] - 1]
            done[i] = train_or_reload(run, plan.data, plan.context(run), config.saved_models_dir,
                                      plan.retrain_token, progress, log)
            if i in here:
                status[:2] = [status[0] + 1, 0]
    if finish:
        plan.marker.finish()  # every model is trained: a later --retrain starts over
    models = [done[i] for i in range(len(every))]
    return models[:len(plan.runs)], models[len(plan.runs):]


def train_in_rounds(plan: AblationPlan, references=(), log=print, observer=None) -> list[TrainedModel]:
    """`--seeds auto`: trains every arm's first `min_seeds` seeds, then, round by round, one more seed for
    the arms of the comparisons still undecided (`evaluation.sequential`), until each is decided or has
    `max_seeds`. A re-run replays the rounds from the saved models and trains only what is missing, so an
    interrupted run resumes in the round it stopped in. With worker processes or Ray the rounds share one
    queue (`_Rounds`); in this process alone they run one after another.

    Returns:
      The retrieval models trained or reloaded, in the plan's order (arms stopped early have fewer seeds).
    """
    config = plan.config
    rounds = sequential.schedule(config.compare)
    options = summarise_options(config, references)
    every_arm = {group_key(run) for run in plan.runs}
    if _executor(config, 2) is not None:  # Ray's slots or local worker processes: one shared queue
        return _Rounds(plan, rounds, options, log).train(observer)
    done: dict[int, TrainedModel] = {}
    look, needed = rounds[0], every_arm
    while look is not None:
        chosen = [i for i in _runs_below(plan, needed, look.seeds) if i not in done]
        log(f"round {look.round} of {len(rounds)}: {len(needed)} of {len(every_arm)} arms to {look.seeds} "
            f"seeds (alpha spent this round {look.alpha:.4f}); {len(chosen)} models to train or reload")
        round_plan = dataclasses.replace(plan, runs=[plan.runs[i] for i in chosen], ranking_runs=[],
                                         epochs_left=[plan.epochs_left[i] for i in chosen])
        done.update(zip(chosen, train_models(round_plan, log, observer, finish=False)[0]))
        state = sequential.replay(list(done.values()), plan.data, rounds, config.train.seed, every_arm,
                                  **options)
        look, needed = state.pending, state.needed
    plan.marker.finish()  # every round is trained: a later --retrain starts over
    return [done[i] for i in sorted(done)]


def _runs_below(plan: AblationPlan, arms, seeds: int) -> list[int]:
    """Plan indices of the runs of `arms` (`comparison.group_key`s) whose seed index is below `seeds`."""
    return [i for i, run in enumerate(plan.runs)
            if group_key(run) in arms and run.train.seed - plan.config.train.seed < seeds]


class _Rounds:
    """`--seeds auto` through one queue of `--workers` processes or of Ray's slots (`--backend ray`): every
    worker or slot takes the next model as soon as it is free, across rounds. A round's models start as
    soon as the replay asks for them; and an open comparison whose arms have finished this round's seeds
    but which cannot be decided at this round even alone in its family (`sequential.cannot_stop`) gets its
    next seeds queued at once, while the other comparisons of the round are still training. The rounds'
    verdicts are the same as with a pause between rounds: only when a model starts changes.
    """

    def __init__(self, plan: AblationPlan, rounds, options: dict, log):
        self.plan, self.rounds, self.options, self.log = plan, rounds, options, log
        self.arms = {group_key(run) for run in plan.runs}
        self.done: dict[int, TrainedModel] = {}
        self.started: set[int] = set()
        self.reloaded = 0
        self.order: list[int] = []  # plan index of each queued job

    def _unstarted(self, arms, seeds: int) -> list[int]:
        return [i for i in _runs_below(self.plan, arms, seeds) if i not in self.started]

    def _start(self, arms, seeds: int) -> list[int]:
        """The runs of `arms` below `seeds` not started yet: saved ones reloaded, the others returned."""
        chosen = self._unstarted(arms, seeds)
        self.started.update(chosen)
        for i in chosen:
            if self.plan.epochs_left[i] == 0:
                self.done[i] = _saved(self.plan, self.plan.runs[i])
                self.reloaded += 1
        return [i for i in chosen if self.plan.epochs_left[i] > 0]

    def _next(self) -> list[int]:
        """Runs to queue now (replayed after every finished model)."""
        queued = []
        while True:
            reloaded = self.reloaded
            state = sequential.replay(list(self.done.values()), self.plan.data, self.rounds,
                                      self.plan.config.train.seed, self.arms, **self.options)
            look = state.pending
            if look is None:
                return queued
            now = self._start(state.needed, look.seeds)
            if now:
                self.log(f"round {look.round} of {len(self.rounds)}: {len(state.needed)} arms to "
                         f"{look.seeds} seeds (alpha spent this round {look.alpha:.4f}); {len(now)} "
                         f"model{'s' * (len(now) != 1)} queued")
            for key, arms in state.open.items():
                if not self._unstarted(arms, look.seeds + 1):
                    continue  # its next seeds are queued already (or there are none): nothing to decide
                models = [self.done[i] for i in _runs_below(self.plan, arms, look.seeds) if i in self.done]
                if len(models) == len(arms) * look.seeds and sequential.cannot_stop(
                        models, self.plan.data, look, self.rounds, key, **self.options):
                    early = self._start(arms, look.seeds + 1)
                    if early:
                        self.log(f"round {look.round + 1}: {len(early)} model{'s' * (len(early) != 1)} "
                                 "queued early (a comparison "
                                 f"undecided at round {look.round} whatever the others show)")
                    now += early
            queued += now
            if queued or self.started - set(self.done):
                return queued
            if self.reloaded == reloaded:  # nothing new to replay with: the plan lacks what the round needs
                raise RuntimeError(f"round {look.round} waits for models the plan does not have")

    def _ordered(self, runs: list[int]) -> list[int]:
        """Baselines first (every comparison waits for its baseline: trained first, each comparison can be
        judged as soon as its own arm finishes), then the most work first (`training_order`)."""
        runs = [runs[k] for k in training_order([self.plan.runs[i].features for i in runs],
                                                [self.plan.epochs_left[i] for i in runs])]
        return sorted(runs, key=lambda i: bool(self.plan.runs[i].features))

    def _job(self, i: int) -> tuple:
        """`_train_job`'s arguments for run `i` in a local worker process."""
        config = self.plan.config
        return (config, self.plan.runs[i], sum(self.plan.epochs_left[j] for j in self.started),
                config.workers, self.plan.retrain_token, self.observed)

    def _finished(self, i: int, result) -> list[int]:
        """Run `i` is trained: the runs to queue behind the others now."""
        history, reloaded = result
        self.done[i] = TrainedModel(self.plan.runs[i], None, history,
                                    ModelFolder(self.plan.config.saved_models_dir, self.plan.runs[i]).path,
                                    reloaded=reloaded)
        queued = self._ordered(self._next())
        self.order += queued
        return queued

    def train(self, observer=None) -> list[TrainedModel]:
        """Trains the rounds through Ray's tasks (`--backend ray`) or `--workers` local processes."""
        config = self.plan.config
        self.observed = observer is not None
        if self.plan.uses_lengths():
            self.plan.movie_lengths()  # looked up (and cached) once, before the workers need it
        self.log(f"round 1 of {len(self.rounds)}: every arm to {self.rounds[0].seeds} seeds (alpha spent "
                 f"this round {self.rounds[0].alpha:.4f})")
        self.order = self._ordered(self._start(self.arms, self.rounds[0].seeds) or self._next())
        if self.order:
            check_writable(config.saved_models_dir, "--saved_models_dir")
            if config.retrain:
                self.plan.marker.start(self.plan.retrain_token)
            if config.runner.backend == "ray":
                ray_backend.train_on_ray(self.plan, self.order, self.log, observer, more=self._finished)
            else:  # a local job is known by its place in the queue, a Ray trial by its run
                run_in_workers(_train_job, [self._job(i) for i in self.order], config.workers, self.log,
                               observer, more=lambda job, result: [
                                   self._job(i) for i in self._finished(self.order[job], result)])
        self.plan.marker.finish()  # every round is trained: a later --retrain starts over
        return [self.done[i] for i in sorted(self.done)]


def _executor(config: ExperimentConfig, pending: int):
    """What trains the pending models outside this process, or None to train them here, one by one.

    Both backends serve one interface, (plan, run indices in training order,
    log, observer) -> {index: (History, whether it was reloaded)}, and leave
    the models in the saved-models folder.
    """
    if config.runner.backend == "ray" and pending:
        return ray_backend.train_on_ray
    if config.workers > 1 and pending > 1:
        return _train_in_workers
    return None


def _train_in_workers(plan: AblationPlan, order: list[int], log, observer=None) -> dict:
    """The local backend: `--workers` processes on this machine, each taking the next model when free."""
    config, every = plan.config, plan.runs + plan.ranking_runs
    if plan.uses_lengths():
        plan.movie_lengths()  # looked up (and cached) once, before the workers need it
    workers = min(config.workers, len(order))
    threads = threads_per_worker(workers)
    log(f"training {len(order)} models in {workers} worker processes, {threads} TensorFlow "
        f"thread{'s' if threads > 1 else ''} each")
    results = run_in_workers(_train_job, [(config, every[i], sum(plan.epochs_left), workers,
                                           plan.retrain_token, observer is not None) for i in order],
                             workers, log, observer)
    return dict(zip(order, results))


def _saved(plan: AblationPlan, run) -> TrainedModel:
    folder = ModelFolder(plan.config.saved_models_dir, run)
    return TrainedModel(run, None, folder.saved_history(), folder.path, reloaded=True)


def _length_lookup(config: ExperimentConfig, data) -> MovieLengthLookup:
    csv_path = config.lengths.csv or source_for(config.data).movie_lengths_csv(config.data)
    sources = [ImdbMovieLengthSource(config.lengths.imdb_database, config.lengths.cache_dir)]
    if csv_path:
        sources.append(CsvMovieLengthSource(csv_path))
    return MovieLengthLookup(sources, config.lengths.default_minutes)


def training_order(feature_sets, epochs_left) -> list[int]:
    """The order in which worker processes take pending models: most work first.

    Each free worker takes the next model, so starting the longest ones first
    keeps the last model from running alone while the other workers idle
    (longest-processing-time-first scheduling; its effect on the deep dive
    is measured in BENCHMARKS.md).
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
               workers: int, retrain_token: str | None, observed: bool = False):
    """Worker process: trains one model (see `workers.run_in_workers`); returns (its history, whether it
    was reloaded: another process trained it while this one waited on its lock)."""
    data = load_dataset(config.data, log=lambda *_: None)
    if data.fingerprint != run.content.data:
        raise UserInputError(
            f"the data of {data_label(config.data)} changed while the ablation ran; re-run the command")
    lookup = _length_lookup(config, data)
    movie_lengths = functools.cache(lambda: lookup.lengths(data.movie_ids, data.movie_titles))
    progress = Progress(total_epochs, worker_log, shared_counters(), workers, shared_trials(),
                        worker_observer if observed else None)
    context = FeatureContext(data, run.model.embedding_size, movie_lengths)
    trained = train_or_reload(run, data, context, config.saved_models_dir, retrain_token, progress,
                              worker_log)
    return trained.history, trained.reloaded


def _stem(config: ExperimentConfig, runs) -> str:
    """Name of the ablation's outputs: the data's name and a hash of its models' identities."""
    digest = hashlib.sha256(json.dumps([r.identity() for r in runs]).encode()).hexdigest()[:8]
    return f"ablation_{data_label(config.data)}_{digest}"


def _check_against_data(config: ExperimentConfig, data, log) -> None:
    """What the settings mean for this data: a K that is not below the catalogue's size makes every metric
    at that K 1.0 for every model (an error); ratings outside 0..10 are read as given (a warning).

    Raises:
      UserInputError: a K at or above the number of items.
    """
    judged = metric(config.compare.metric_name(config.train.ks), config.train.ks).k or 0
    too_large = [k for k in dict.fromkeys((*config.train.ks, judged)) if k >= data.num_movies]
    if too_large:
        raise UserInputError(
            f"K {too_large[0]}: the catalogue has {data.num_movies:,} items, so every item ranks in the top "
            f"{too_large[0]} and every model scores 1.0; use --ks (and --verdict_metric) below "
            f"{data.num_movies:,}")
    rated = data.rating[np.isfinite(data.rating)]
    if len(rated) and (rated.min() < 0 or rated.max() > 10):
        log(f"warning: ratings range from {rated.min():g} to {rated.max():g}: retrieval trains on every "
            "interaction as a positive whatever its rating, and --ranking predicts the values as given")


def _check_recommend_user(data, user_id: str, log) -> None:
    """Rejects an unknown user or one without ratings; warns about one the models never saw."""
    row = data.user_row(user_id)
    data.latest_rating(row)  # a user without ratings has nothing to recommend from
    if not np.isin(data.train, np.flatnonzero(data.user == row)).any():
        log(f"warning: user {user_id} has no ratings in the training split, so every model recommends to "
            "them from the shared out-of-vocabulary user embedding (the same list as for any unseen user)")
