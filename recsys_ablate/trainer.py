"""Trains, or reloads from `saved_models/`, one retrieval model per feature set.

A model folder holds `config.json` (the full configuration), `history.json`,
a TensorFlow checkpoint (weights and optimizer state, written at every
evaluation), `ranks.npz` (the final per-example validation ranks) and
`tensorboard/` logs. A folder whose history is complete is reloaded unless
`--retrain`; an incomplete one (an interrupted run) is resumed from its last
checkpoint. Epoch `e` is shuffled with seed (seed, e), so a resumed run sees
the same batches as an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time

import numpy as np
import tensorflow as tf

from recsys_ablate import evaluation
from recsys_ablate.config import RunConfig
from recsys_ablate.features import FeatureContext
from recsys_ablate.history import History, write_json_atomic
from recsys_ablate.model import build_model


@dataclasses.dataclass
class TrainedModel:
    """A trained (or reloaded) model with its history.

    Attributes:
      run: Its configuration.
      model: The `RetrievalModel`.
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
        return " + ".join(self.run.features) if self.run.features else "baseline (ids only)"


class Progress:
    """Per-epoch console lines with an ETA for the whole ablation.

    Args:
      total_epochs: Epochs to train across every model of the ablation.
      log: Where lines go.
    """

    def __init__(self, total_epochs: int, log=print):
        self.total_epochs = max(total_epochs, 1)
        self.done = 0
        self.seconds = 0.0
        self.log = log

    def epoch(self, label: str, epoch: int, num_epochs: int, loss: float, seconds: float,
              metrics: dict | None) -> None:
        self.done += 1
        self.seconds += seconds
        remaining = (self.total_epochs - self.done) * self.seconds / self.done
        line = (f"[{label}] epoch {epoch}/{num_epochs}  loss {loss:.1f}  {seconds:.1f}s"
                f"  | ablation {self.done}/{self.total_epochs} epochs, ETA {_duration(remaining)}")
        if metrics:
            line += "  | val " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items() if k.startswith("top_"))
        self.log(line)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class ModelFolder:
    """Paths and persistence of one model folder.

    Args:
      root: The `saved_models/` folder.
      run: The run configuration (names the folder).
      data_label: Short name of the dataset.
    """

    def __init__(self, root: str, run: RunConfig, data_label: str):
        self.path = os.path.join(root, run.folder_name(data_label))
        self.run = run

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def matching_history(self) -> History | None:
        """The saved history if the folder holds this exact configuration."""
        try:
            with open(self.file("config.json")) as f:
                saved = json.load(f)
            if saved.get("identity") != self.run.identity():
                return None
            return History.load(self.file("history.json"))
        except (OSError, ValueError, TypeError):
            return None

    def reset(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        os.makedirs(self.path)
        write_json_atomic(self.file("config.json"),
                          {"identity": self.run.identity(), "config": self.run.to_dict()})


def _optimizer(run: RunConfig):
    return tf.keras.optimizers.Adagrad(learning_rate=run.train.learning_rate)


def _epoch_batches(arrays: dict, batch_size: int, seed: int, epoch: int):
    """Shuffled batches of one epoch; the order depends only on (seed, epoch)."""
    order = np.random.default_rng([seed, epoch]).permutation(len(arrays["user"]))
    shuffled = {k: v[order] for k, v in arrays.items()}
    return tf.data.Dataset.from_tensor_slices(shuffled).batch(batch_size).prefetch(2)


def train_or_reload(run: RunConfig, data, context: FeatureContext, root: str, retrain: bool,
                    progress: Progress, log=print) -> TrainedModel:
    """Returns the trained model for `run`, training only what is missing.

    Args:
      run: The configuration of this model.
      data: The `EncodedDataset` (must match `run.data`).
      context: Feature fitting context.
      root: The `saved_models/` folder.
      retrain: Discard any saved model and train from scratch.
      progress: Console progress for the ablation.
      log: Where other lines go.

    Returns:
      The `TrainedModel`.
    """
    folder = ModelFolder(root, run, run.data.label)
    model = build_model(run.features, context, run.model.layer_sizes, run.train.seed)
    model.compile(optimizer=_optimizer(run))
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
    # Two kept: the history is written after its checkpoint, so after a crash
    # between the two the newest checkpoint may be one the history lacks.
    manager = tf.train.CheckpointManager(checkpoint, folder.file("checkpoints"), max_to_keep=2)
    label = " + ".join(run.features) if run.features else "baseline"

    history = None if retrain else folder.matching_history()
    saved = folder.file(os.path.join("checkpoints", f"ckpt-{history.last_epoch}")) if history else None
    if history is not None and history.evaluations and tf.io.gfile.exists(saved + ".index"):
        checkpoint.restore(saved).expect_partial()
        if history.complete:
            log(f"[{label}] reloaded from {folder.path} (trained {history.last_epoch} epochs)")
            return TrainedModel(run, model, history, folder.path, reloaded=True)
        log(f"[{label}] resuming {folder.path} after epoch {history.last_epoch}")
    else:
        folder.reset()
        history = History()
    _train(run, data, model, history, folder, manager, progress, label)
    return TrainedModel(run, model, history, folder.path, reloaded=False)


class EpochTrainer:
    """Trains a compiled model one epoch at a time on the training split.

    Args:
      model: A compiled `RetrievalModel`.
      data: The `EncodedDataset`.
      batch_size: Examples per step.
      seed: Shuffling seed; epoch `e` uses (seed, e).
    """

    def __init__(self, model, data, batch_size: int, seed: int):
        self.train_step = tf.function(model.train_step, reduce_retracing=True)
        self.arrays = {"user": data.user[data.train], "movie": data.movie[data.train],
                       "timestamp": data.timestamp[data.train]}
        self.batch_size = batch_size
        self.seed = seed

    def __call__(self, epoch: int) -> float:
        """Trains epoch `epoch`; returns its mean per-step loss."""
        losses = [self.train_step(batch)["loss"] for batch in
                  _epoch_batches(self.arrays, self.batch_size, self.seed, epoch)]
        # One host sync per epoch, not per step.
        return float(tf.reduce_mean(tf.stack(losses)))


def _train(run, data, model, history, folder, manager, progress, label) -> None:
    train_epoch = EpochTrainer(model, data, run.train.batch_size, run.train.seed)
    writer = tf.summary.create_file_writer(folder.file("tensorboard"))
    epochs = run.train.num_epochs
    for epoch in range(history.last_epoch + 1, epochs + 1):
        start = time.perf_counter()
        loss = train_epoch(epoch)
        seconds = time.perf_counter() - start
        history.epochs.append({"epoch": epoch, "loss": loss, "seconds": seconds})
        metrics = None
        if epoch % run.train.eval_every == 0 or epoch == epochs:
            eval_start = time.perf_counter()
            metrics, ranks = evaluation.evaluate(model, data, data.validation, run.train.ks)
            history.evaluations.append({"epoch": epoch, **metrics,
                                        "seconds": time.perf_counter() - eval_start})
            history.complete = epoch == epochs
            if history.complete:
                np.savez(folder.file("ranks.npz"), rows=data.validation, ranks=ranks)
            # Checkpoint before history: a history never names an epoch whose
            # weights are missing.
            manager.save(checkpoint_number=epoch)
            history.save(folder.file("history.json"))
        with writer.as_default(step=epoch):
            tf.summary.scalar("loss", loss)
            tf.summary.scalar("epoch_seconds", seconds)
            for name, value in (metrics or {}).items():
                tf.summary.scalar(f"validation/{name}", value)
        progress.epoch(label, epoch, epochs, loss, seconds + (history.evaluations[-1]["seconds"] if metrics else 0),
                       metrics)
    writer.flush()
