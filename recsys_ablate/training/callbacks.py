"""The parts of the one training loop, each a small object with one job, as Keras callbacks are.

`trainer._train` trains an epoch, records it in the history, then hands an
`EpochState` to each callback in turn: the evaluation schedule evaluates
when an evaluation is due, early stopping decides and keeps the best
weights, `FinalRanks` writes the kept weights' per-example ranks once the
run is complete, `Checkpoint` saves weights, history and manifest after
every evaluation, `TensorBoard` and `ProgressLine` report. Their order in
`callbacks_for` is the order a crash must be survivable in: ranks and best
weights before the manifest that vouches for them.
"""

from __future__ import annotations

import dataclasses
import os
import time

import numpy as np
import tensorflow as tf
import tensorflow_recommenders as tfrs
from tensorboard.plugins.hparams import api as hp

from recsys_ablate.evaluation.metrics import RMSE
from recsys_ablate.evaluation.metrics import metric as metric_by_name
from recsys_ablate.features.base import feature_set_label
from recsys_ablate.files import save_npz_atomic


@dataclasses.dataclass
class EpochState:
    """One epoch of the loop, as the callbacks fill it in.

    Attributes:
      epoch: The epoch just trained (1-based).
      loss: Its mean per-step loss.
      seconds: Its training time.
      metrics: This epoch's evaluation (None when none was due).
      scores: The scores that evaluation came from (`catalogue.Scores`; None for ranking models).
      complete: Training ends after this epoch (its last, or stopped early).
      kept_scores: Once complete: the full-validation scores of the weights kept (None: not at hand,
        `FinalRanks` evaluates them).
    """

    epoch: int
    loss: float
    seconds: float
    metrics: dict | None = None
    scores: object = None
    complete: bool = False
    kept_scores: object = None


class Callback:
    """Called by the loop after every epoch (`on_epoch_end`) and once at its end (`on_train_end`)."""

    def on_epoch_end(self, state: EpochState) -> None:
        pass

    def on_train_end(self) -> None:
        pass


def covers_all(scores, data) -> bool:
    """Whether `scores` rank every validation example (not `--eval_users`' sample)."""
    return scores is not None and len(scores.ranks) == len(data.validation)


class EvaluationSchedule(Callback):
    """Evaluates every `eval_every` epochs and at the last, on `eval_users`' sample except at the last; the
    evaluation goes into the history. Marks the last epoch complete."""

    def __init__(self, run, task, model, data, history):
        self.run, self.task, self.model, self.data, self.history = run, task, model, data, history

    def on_epoch_end(self, state: EpochState) -> None:
        last = state.epoch == self.run.train.num_epochs
        if state.epoch % self.run.train.eval_every and not last:
            return
        start = time.perf_counter()
        state.metrics, state.scores = self.task.evaluate(self.run, self.model, self.data, final=last)
        self.history.evaluations.append({"epoch": state.epoch, **state.metrics,
                                         "seconds": time.perf_counter() - start})
        state.complete = last
        state.kept_scores = state.scores if last else None


class EarlyStopping(Callback):
    """Stops when `metric` has not improved by more than `min_delta` for `patience` evaluations; the best
    one's weights are kept.

    The metric's direction comes from the registry (`metrics.metric`); ties
    keep the earlier evaluation. An evaluation improves when it beats the
    last improving one by more than `min_delta` (0: any gain), so a plateau
    whose noise sets new bests by tiny amounts still stops. The best weights
    (the best evaluation, whatever `min_delta`) are written beside the
    checkpoints whenever an evaluation is the best so far (so a resumed run
    still has them), and restored into the model when training ends.
    """

    def __init__(self, metric: str, patience: int, ks=(), model=None, folder=None, history=None, data=None,
                 log=print, label: str = "", min_delta: float = 0.0):
        self.metric, self.patience, self.min_delta = metric, patience, min_delta
        self.sign = 1.0 if metric_by_name(metric, ks).higher_is_better else -1.0
        self.model, self.folder, self.history, self.data, self.log, self.label = (
            model, folder, history, data, log, label)
        self.best_scores = None  # the best evaluation's full scores, when this process made them

    def best(self, evaluations: list[dict]) -> dict:
        return max(evaluations, key=lambda e: (self.sign * e[self.metric], -e["epoch"]))

    def update(self, evaluations: list[dict]) -> tuple[bool, bool]:
        """(whether the latest evaluation is the best so far, whether to stop now)."""
        best = self.best(evaluations)
        improved = evaluations[0]
        for evaluation in evaluations[1:]:
            if self.sign * (evaluation[self.metric] - improved[self.metric]) > self.min_delta:
                improved = evaluation
        since_improved = sum(1 for e in evaluations if e["epoch"] > improved["epoch"])
        return best["epoch"] == evaluations[-1]["epoch"], since_improved >= self.patience

    def on_epoch_end(self, state: EpochState) -> None:
        if state.metrics is None:
            return
        is_best, stop = self.update(self.history.evaluations)
        weights = tf.train.Checkpoint(model=self.model)
        if is_best:
            with self.folder.writing():
                weights.write(self.folder.best_prefix())
            self.best_scores = state.scores if covers_all(state.scores, self.data) else None
        if not (stop or state.complete):
            return
        state.complete = True
        self.history.best_epoch = self.best(self.history.evaluations)["epoch"]
        self.history.stopped_early = stop
        weights.read(self.folder.best_prefix()).expect_partial()
        state.kept_scores = self.best_scores
        if stop:
            by = f" by more than {self.min_delta:g}" if self.min_delta else ""
            self.history.stop_reason = f"{self.metric} had not improved{by} for {self.patience} evaluations"
            self.log(f"[{self.label}] early stop after epoch {state.epoch}: {self.history.stop_reason}; "
                     f"keeping epoch {self.history.best_epoch}")


class FinalRanks(Callback):
    """Once the run is complete, writes the kept weights' per-example ranks (`ranks.npz`): the one place
    they are written. Weights judged on `--eval_users`' sample (or whose scores a resumed run no longer
    holds) are evaluated on every validation user first; a sampled evaluation's numbers are replaced by
    those."""

    def __init__(self, run, task, model, data, history, folder):
        self.run, self.task, self.model, self.data = run, task, model, data
        self.history, self.folder = history, folder

    def on_epoch_end(self, state: EpochState) -> None:
        if not state.complete or not self.task.ranks:
            return
        scores = state.kept_scores
        if not covers_all(scores, self.data):
            full, scores = self.task.evaluate(self.run, self.model, self.data, final=True)
            if self.history.final_metrics.get("validation_users") != full["validation_users"]:
                self.history.final_metrics.update(full)
        save_npz_atomic(self.folder.file("ranks.npz"), rows=self.data.validation, **scores.arrays())


class TestEvaluation(Callback):
    """Once the run is complete and the split holds out a test part: the kept weights (chosen on
    validation) evaluated on it, once, into the history's `test_metrics` and `test.npz` (what verdicts and
    final tables judge)."""

    def __init__(self, run, task, model, data, history, folder):
        self.run, self.task, self.model, self.data = run, task, model, data
        self.history, self.folder = history, folder

    def on_epoch_end(self, state: EpochState) -> None:
        if not state.complete or not len(self.data.test):
            return
        metrics, scores = self.task.evaluate(self.run, self.model, self.data, final=True, part="test")
        self.history.test_metrics = {"epoch": self.history.best_epoch or state.epoch, **metrics}
        if scores is not None:
            save_npz_atomic(self.folder.file("test.npz"), rows=self.data.test, **scores.arrays())


# Single queries timed for a model's serving latency (after one warm-up call).
LATENCY_QUERIES = 50


class QueryLatency(Callback):
    """Once a retrieval run is complete: its serving cost, the median milliseconds one query takes through a
    TFRS BruteForce index over the whole catalogue (top 10, or the catalogue if smaller), one query at a
    time as a served request is, in a traced function as an exported index runs (`history.query_ms`)."""

    def __init__(self, task, model, data, history):
        self.task, self.model, self.data, self.history = task, model, data, history

    def on_epoch_end(self, state: EpochState) -> None:
        if not state.complete or not self.task.ranks or self.history.query_ms is not None:
            return
        index = tfrs.layers.factorized_top_k.BruteForce(self.model.query_tower,
                                                        k=min(10, self.data.num_movies))
        index.index(self.model.candidate_embeddings())
        # Traced without AutoGraph, as the epoch's steps are: no tensor decides Python control flow in the
        # towers or the index, and converting them was half of this callback's time (BENCHMARKS.md).
        serve = tf.function(lambda query: index(query), autograph=False)
        rows = self.data.validation[:LATENCY_QUERIES + 1]
        queries = self.data.query_inputs(rows, self.model.query_tower.input_keys)
        times = []
        for i in range(len(rows)):
            one = {key: tf.constant(values[i:i + 1]) for key, values in queries.items()}
            start = time.perf_counter()
            serve(one)[1].numpy()
            times.append(time.perf_counter() - start)
        self.history.query_ms = float(1000 * np.median(times[1:] or times))


class Checkpoint(Callback):
    """After every evaluation: the checkpoint, then the history, then the manifest that vouches for both, so
    a crash anywhere in between leaves a folder that fails its check, never one that reloads wrong weights.
    Ctrl-C and SIGTERM wait until all three are written: one landing after the history of a model's first
    evaluation but before its first manifest left a folder with nothing vouched for, trained again from
    epoch 1 with a "corrupted" warning (seen in a clean clone's suite, adaptive seeds interrupted)."""

    def __init__(self, manager, folder, history):
        self.manager, self.folder, self.history = manager, folder, history

    def on_epoch_end(self, state: EpochState) -> None:
        if state.metrics is None:
            return
        self.history.complete = state.complete
        with self.folder.writing():
            self.manager.save(checkpoint_number=state.epoch)
            self.history.save(self.folder.file("history.json"))
            self.folder.write_manifest(self.history)


class TensorBoard(Callback):
    """Loss, epoch seconds and every validation metric as TensorBoard scalars (`tensorboard/`); the run's
    settings as HParams (`hparams`) and, once complete, the judged metrics of the kept weights as
    `final/NAME` scalars, so `tensorboard --logdir saved_models` lists every model with its settings and
    results in the HParams table."""

    def __init__(self, folder, run, history):
        self.writer = tf.summary.create_file_writer(folder.file("tensorboard"))
        self.history = history
        with self.writer.as_default():
            hp.hparams(hparams(run), trial_id=os.path.basename(folder.path))

    def on_epoch_end(self, state: EpochState) -> None:
        with self.writer.as_default(step=state.epoch):
            tf.summary.scalar("loss", state.loss)
            tf.summary.scalar("epoch_seconds", state.seconds)
            for name, value in (state.metrics or {}).items():
                tf.summary.scalar(f"validation/{name}", value)
            if state.complete:
                for name, value in self.history.judged_metrics.items():
                    if name != "epoch":
                        tf.summary.scalar(f"final/{name}", value)
        if state.metrics is not None or state.complete:
            self.writer.flush()

    def on_train_end(self) -> None:
        self.writer.flush()


def hparams(run) -> dict:
    """A run's settings as TensorBoard HParams values (strings, numbers, booleans)."""
    return {"feature_set": feature_set_label(run.features, for_paths=True), "task": run.task,
            "layer_sizes": " ".join(map(str, run.model.layer_sizes)) or "none",
            "embedding_size": run.model.embedding_size, "learning_rate": run.train.learning_rate,
            "batch_size": run.train.batch_size, "seed": run.train.seed,
            **{f"objective.{name}": value for name, value in dataclasses.asdict(run.objective).items()}}


class ProgressLine(Callback):
    """The epoch's console line (`Progress`); after a checkpoint, tells the progress the folder is whole."""

    def __init__(self, progress, label: str, num_epochs: int, history, folder):
        self.progress, self.label, self.num_epochs, self.history, self.folder = (
            progress, label, num_epochs, history, folder)

    def on_epoch_end(self, state: EpochState) -> None:
        seconds = state.seconds + (self.history.evaluations[-1]["seconds"] if state.metrics else 0)
        self.progress.epoch(self.label, state.epoch, self.num_epochs, state.loss, seconds, state.metrics)
        self.progress.observe(self.folder.run, state.epoch, state.loss, state.metrics)
        if state.metrics is not None:  # a new checkpoint: the folder is whole again
            self.progress.saved(self.folder.path)


class Progress:
    """Per-epoch console lines with an ETA for the whole ablation.

    Args:
      total_epochs: Epochs to train across every model of the ablation.
      log: Where lines go.
      counters: (epochs done, seconds) shared by worker processes
        (`workers.shared_counters()`), or None to count in this object.
      workers: Models trained at once; the ETA divides by it.
      trials: [done, running, queued] models, kept current by whatever runs
        them (a list, or an array shared with worker processes); shown on
        every line.
      observer: Called with (run, epoch, loss, metrics or None) after every
        epoch of every model (the driver's tracking), or None.
    """

    def __init__(self, total_epochs: int, log=print, counters=None, workers: int = 1, trials=None,
                 observer=None):
        self.total_epochs = max(total_epochs, 1)
        self.done = 0
        self.seconds = 0.0
        self.log = log
        self.counters = counters
        self.workers = workers
        self.trials = trials
        self.observer = observer

    def _count(self, seconds: float) -> tuple[int, float]:
        if self.counters is None:
            self.done += 1
            self.seconds += seconds
            return self.done, self.seconds
        done, spent = self.counters
        with done.get_lock():
            done.value += 1
            spent.value += seconds
            return done.value, spent.value

    def observe(self, run, epoch: int, loss: float, metrics: dict | None) -> None:
        """Hands an epoch of `run` to the observer (a hook backends forward to the driver)."""
        if self.observer is not None:
            self.observer(run, epoch, loss, metrics)

    def saved(self, folder: str) -> None:
        """Called after each checkpoint, when `folder` is a whole model folder again (a hook for backends
        that copy it elsewhere; nothing here)."""

    def epoch(self, label: str, epoch: int, num_epochs: int, loss: float, seconds: float,
              metrics: dict | None) -> None:
        done, spent = self._count(seconds)
        remaining = max(self.total_epochs - done, 0) * spent / done / self.workers
        line = (f"[{label}] epoch {epoch}/{num_epochs}  loss {loss:.1f}  {seconds:.1f}s"
                f"  | ablation {done}/{self.total_epochs} epochs, ETA {duration(remaining)}")
        if self.trials is not None:
            finished, running, queued = list(self.trials)
            line += f", models {finished} done / {running} running / {queued} queued"
        if metrics:
            # Progress lines show the top-K accuracies (or RMSE); the report has every metric.
            line += "  | val " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                                          if k == RMSE.name or k.startswith("top_"))
        self.log(line)


def duration(seconds: float) -> str:
    """"1h05m" / "3m07s"."""
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


def callbacks_for(run, task, model, data, history, folder, manager, progress, label: str) -> list[Callback]:
    """The loop's callbacks for one run, in the order they are called."""
    keep = []
    if run.train.early_stopping:
        keep = [EarlyStopping(run.train.early_stopping, run.train.patience, run.train.ks, model, folder,
                              history, data, progress.log, label, run.train.min_delta)]
    return [EvaluationSchedule(run, task, model, data, history), *keep,
            FinalRanks(run, task, model, data, history, folder),
            TestEvaluation(run, task, model, data, history, folder),
            QueryLatency(task, model, data, history),
            Checkpoint(manager, folder, history),
            TensorBoard(folder, run, history),
            ProgressLine(progress, label, run.train.num_epochs, history, folder)]

