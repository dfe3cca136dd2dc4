"""Trains, or reloads from `saved_models/`, one retrieval model per feature set.

A model folder holds `config.json` (the full configuration), `history.json`,
a TensorFlow checkpoint (weights and optimizer state, written at every
evaluation), `ranks.npz` (the final per-example validation ranks and the
users' top-K lists summarised: `catalogue.Scores`) and `tensorboard/` logs.
A folder whose history is complete is reloaded unless `--retrain`; an
incomplete one (an interrupted run) is resumed from its last checkpoint.
Epoch `e` is shuffled with seed (seed, e), so a resumed run sees the same
batches as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np
import tensorflow as tf

from recsys_ablate.evaluation import catalogue
from recsys_ablate.evaluation.metrics import RMSE, evaluated_metrics
from recsys_ablate.features import FeatureContext, feature_set_label
from recsys_ablate.models import ranking
from recsys_ablate.models.retrieval import build_model
from recsys_ablate.settings import RunConfig
from recsys_ablate.training.callbacks import EpochState, Progress, callbacks_for
from recsys_ablate.training.history import History
from recsys_ablate.training.model_store import ModelFolder


@dataclasses.dataclass
class TrainedModel:
    """A trained (or reloaded) model with its history.

    Attributes:
      run: Its configuration.
      model: The `RetrievalModel` or `RankingModel`; None where only the
        history was needed (trained in a worker, listed for a report):
        `AblationPlan.with_weights` loads it.
      history: Its `History`.
      folder: Where it is saved.
      reloaded: True when it was loaded rather than trained in this process.
    """

    run: RunConfig
    model: object
    history: History
    folder: str
    reloaded: bool

    @property
    def label(self) -> str:
        name = feature_set_label(self.run.features)
        return name if self.run.task == "retrieval" else f"{name}, {self.run.task}"


def _optimizer(run: RunConfig):
    return tf.keras.optimizers.Adagrad(learning_rate=run.train.learning_rate)


# Steps per call of the training function: a Python call per step cost half of a small model's epoch
# (BENCHMARKS.md, "The epoch's steps in the graph"); a call per 64 steps keeps that away and still lets
# Ctrl-C (which Python sees between calls) stop a large model's epoch within seconds.
STEPS_PER_CALL = 64


def _epoch_chunks(arrays: dict, rows: int, seed: int, epoch: int):
    """The epoch's shuffled rows, `rows` at a time; the order depends only on (seed, epoch).

    Plain numpy rather than tf.data: the arrays are already encoded
    integers in memory, and tf.data's per-example slicing and the stall when
    an autotuned iterator is deleted at the end of an epoch cost more than
    the epoch's work on the 2-core machine (BENCHMARKS.md, session 2).
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(arrays["user"]))
    shuffled = {k: v[order] for k, v in arrays.items()}
    for start in range(0, len(order), rows):
        yield {k: v[start:start + rows] for k, v in shuffled.items()}


def train_or_reload(run: RunConfig, data, context: FeatureContext, root: str, retrain_token: str | None,
                    progress: Progress, log=print) -> TrainedModel:
    """Returns the trained model for `run`, training only what is missing.

    A complete, intact saved model is reloaded without taking the folder's
    lock (so models in a read-only folder reload); training takes the lock.

    Args:
      run: The configuration of this model, with its training content.
      data: The `EncodedDataset` (must match `run.content`).
      context: Feature fitting context.
      root: The `saved_models/` folder.
      retrain_token: None to reuse saved models; with `--retrain`, the
        invocation's token: models this invocation (re)started are resumed
        or reloaded, every other saved model is trained again.
      progress: Console progress for the ablation.
      log: Where other lines go.

    Returns:
      The `TrainedModel`.
    """
    folder = ModelFolder(root, run)
    label = feature_set_label(run.features) + (
        "" if run.task == "retrieval" else f", {run.task}") + (
        "" if run.objective.is_default else f", {run.objective.describe()}")
    task = TASKS[run.task]
    model, checkpoint = _compiled(run, context)
    history = folder.saved_history(None, retrain_token)
    if history is not None and history.complete:
        return _reload(folder, checkpoint, history, model, label, log)
    with folder.lock(log, label):
        history = folder.saved_history(log, retrain_token)  # another process may have finished it
        if history is not None and history.complete:
            return _reload(folder, checkpoint, history, model, label, log)
        manager = tf.train.CheckpointManager(checkpoint, folder.file("checkpoints"), max_to_keep=2)
        if history is not None and history.evaluations:
            checkpoint.restore(folder.checkpoint_prefix(history.last_epoch)).expect_partial()
            log(f"[{label}] resuming {folder.path} after epoch {history.last_epoch}")
        else:
            folder.reset(retrain_token)
            history = History()
        _train(run, task, data, model, history, folder, manager, progress, label)
        return TrainedModel(run, model, history, folder.path, reloaded=False)


def _compiled(run: RunConfig, context: FeatureContext):
    """(the run's compiled model, a checkpoint of its weights and optimizer state)."""
    model = TASKS[run.task].build(run, context)
    model.compile(optimizer=_optimizer(run))
    # The optimizer's slots made now, beside the weights (built with the model): a tf.function whose first
    # call creates variables traces itself twice, and the train step's second trace was a third of a small
    # model's time (BENCHMARKS.md, "Many small models"). Same values, so the same histories.
    model.optimizer.build(model.trainable_variables)
    return model, tf.train.Checkpoint(model=model, optimizer=model.optimizer)


def load_saved_model(run: RunConfig, context: FeatureContext, root: str, history: History):
    """The model of a complete saved run, its weights restored (for dumps and export)."""
    model, checkpoint = _compiled(run, context)
    checkpoint.restore(ModelFolder(root, run).checkpoint_prefix(history.last_epoch)).expect_partial()
    return model


def _reload(folder, checkpoint, history, model, label, log) -> TrainedModel:
    checkpoint.restore(folder.checkpoint_prefix(history.last_epoch)).expect_partial()
    log(f"[{label}] reloaded from {folder.path} (trained {history.last_epoch} epochs)")
    return TrainedModel(folder.run, model, history, folder.path, reloaded=True)


class EpochTrainer:
    """Trains a compiled model one epoch at a time.

    Args:
      model: A compiled `RetrievalModel` or `RankingModel`.
      data: The `EncodedDataset`.
      batch_size: Examples per step.
      seed: Shuffling seed; epoch `e` uses (seed, e).
      rows: Rating rows to train on (default: the training split).
      with_rating: Also feed the "rating" column (the ranking task's label).
    """

    def __init__(self, model, data, batch_size: int, seed: int, rows=None, with_rating: bool = False):
        rows = data.train if rows is None else rows
        self.arrays = {**data.query_inputs(rows, model.query_tower.input_keys + ("user", "timestamp")),
                       "movie": data.movie[rows]}
        if with_rating:
            self.arrays["rating"] = data.rating[rows]
        # Traced once, for any number of rows (the last batch of an epoch is shorter): tracing took about
        # half of a small model's time (BENCHMARKS.md).
        signature = {key: tf.TensorSpec((None, *values.shape[1:]), tf.as_dtype(values.dtype))
                     for key, values in self.arrays.items()}
        self.model = model
        # Without AutoGraph (the loop is a plain `tf.while_loop`; no tensor decides Python control flow in
        # the step): AutoGraph converted the step's and every layer's code once per process, in each fresh
        # process's first epoch (measured: BENCHMARKS.md, session 17); the same graph ops, the same losses.
        self.train_steps = tf.function(self._steps, input_signature=[signature], autograph=False)
        self.batch_size = batch_size
        self.seed = seed

    def _steps(self, rows: dict) -> tf.Tensor:
        """Trains on `rows`, batch after batch in the graph (the same steps as one call per batch);
        returns each step's loss."""
        steps = (tf.shape(rows["user"])[0] + self.batch_size - 1) // self.batch_size

        def step_once(step, losses):
            batch = {key: values[step * self.batch_size:(step + 1) * self.batch_size]
                     for key, values in rows.items()}
            return step + 1, losses.write(step, self.model.train_step(batch)["loss"])

        _, losses = tf.while_loop(lambda step, _: step < steps, step_once,
                                  (tf.constant(0), tf.TensorArray(tf.float32, size=steps)))
        return losses.stack()

    def __call__(self, epoch: int) -> float:
        """Trains epoch `epoch`; returns its mean per-step loss."""
        losses = [self.train_steps(rows) for rows in
                  _epoch_chunks(self.arrays, self.batch_size * STEPS_PER_CALL, self.seed, epoch)]
        # One host sync per epoch, not per step.
        return float(tf.reduce_mean(tf.concat(losses, 0)))


class RetrievalTraining:
    """Training a retrieval model: the training split, validation top-K with per-example ranks."""

    with_rating = False
    ranks = True  # its final evaluation's per-example ranks are saved (`ranks.npz`)

    def build(self, run: RunConfig, context: FeatureContext):
        return build_model(run.features, context, run.model.layer_sizes, run.train.seed, run.objective)

    def rows(self, data) -> np.ndarray:
        return data.train

    def evaluate(self, run: RunConfig, model, data, final: bool,
                 part: str = "validation") -> tuple[dict, catalogue.Scores | None]:
        """Metrics of a held-out part and the scores they came from (saved for the statistics).

        Args:
          final: Evaluate every user; otherwise `eval_users` of them when set.
          part: "validation" (curves, early stopping: what chooses) or "test" (what is judged).
        """
        examples = catalogue.EvaluationSet.of(data, part, run.train)
        if not final and run.train.eval_users is not None:
            examples = catalogue.validation_sample(data, examples, run.train.eval_users)
        metrics, scores = catalogue.evaluate(model, data, examples, evaluated_metrics(run.train))
        users = int(len(np.unique(data.user[examples.rows])))
        return {**metrics, f"{'validation' if part == 'validation' else 'test'}_users": users}, scores


class RankingTraining:
    """Training a rating model: the rated training rows, validation RMSE (no ranks)."""

    with_rating = True
    ranks = False

    def build(self, run: RunConfig, context: FeatureContext):
        return ranking.build_ranking_model(run.features, context, run.model.layer_sizes, run.train.seed)

    def rows(self, data) -> np.ndarray:
        return ranking.rated_rows(data, data.train)

    def evaluate(self, run: RunConfig, model, data, final: bool,
                 part: str = "validation") -> tuple[dict, catalogue.Scores | None]:
        return {RMSE.name: ranking.validation_rmse(model, data, part)}, None


# What the one training loop needs to know per `RunConfig.task`.
TASKS = {"retrieval": RetrievalTraining(), "ranking": RankingTraining()}


def _train(run, task, data, model, history, folder, manager, progress, label) -> None:
    """The one training loop, for every task: train an epoch, record it, then let each callback
    (`callbacks.callbacks_for`: evaluation schedule, early stopping, final ranks, checkpoint, TensorBoard,
    progress) do its part."""
    train_epoch = EpochTrainer(model, data, run.train.batch_size, run.train.seed, task.rows(data),
                               with_rating=task.with_rating)
    callbacks = callbacks_for(run, task, model, data, history, folder, manager, progress, label)
    for epoch in range(history.last_epoch + 1, run.train.num_epochs + 1):
        start = time.perf_counter()
        state = EpochState(epoch, train_epoch(epoch), 0.0)
        state.seconds = time.perf_counter() - start
        history.epochs.append({"epoch": epoch, "loss": state.loss, "seconds": state.seconds})
        for callback in callbacks:
            callback.on_epoch_end(state)
        if state.complete:
            break
    for callback in callbacks:
        callback.on_train_end()
