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

import contextlib
import dataclasses
import errno
import fcntl
import glob
import hashlib
import json
import os
import shutil
import time

import numpy as np
import tensorflow as tf

from recsys_ablate import evaluation, ranking
from recsys_ablate.config import RunConfig
from recsys_ablate.features import FeatureContext
from recsys_ablate.files import save_npz_atomic, write_json_atomic
from recsys_ablate.history import History
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
        name = " + ".join(self.run.features) if self.run.features else "baseline (ids only)"
        return name if self.run.task == "retrieval" else f"{name}, {self.run.task}"


class Progress:
    """Per-epoch console lines with an ETA for the whole ablation.

    Args:
      total_epochs: Epochs to train across every model of the ablation.
      log: Where lines go.
      counters: (epochs done, seconds) shared by worker processes
        (`workers.shared_counters()`), or None to count in this object.
      workers: Models trained at once; the ETA divides by it.
    """

    def __init__(self, total_epochs: int, log=print, counters=None, workers: int = 1):
        self.total_epochs = max(total_epochs, 1)
        self.done = 0
        self.seconds = 0.0
        self.log = log
        self.counters = counters
        self.workers = workers

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

    def epoch(self, label: str, epoch: int, num_epochs: int, loss: float, seconds: float,
              metrics: dict | None) -> None:
        done, spent = self._count(seconds)
        remaining = (self.total_epochs - done) * spent / done / self.workers
        line = (f"[{label}] epoch {epoch}/{num_epochs}  loss {loss:.1f}  {seconds:.1f}s"
                f"  | ablation {done}/{self.total_epochs} epochs, ETA {_duration(remaining)}")
        if metrics:
            line += "  | val " + " ".join(f"{k}={v:.4f}" for k, v in metrics.items()
                                          if k.startswith("top_") or k == "rmse")
        self.log(line)


def _duration(seconds: float) -> str:
    seconds = int(round(seconds))
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{rest // 60}m{rest % 60:02d}s"


class ModelFolder:
    """Paths, integrity and locking of one model folder.

    After every evaluation the folder gets a `manifest.json` with the sha256
    of each file a reload needs (config, history, the checkpoint, final
    ranks). A folder whose files do not match it (a crash mid-write, a disk
    error, a hand edit) is not trusted: it is retrained, with a warning.

    Args:
      root: The `saved_models/` folder.
      run: The run configuration (names the folder), with its training content.
    """

    def __init__(self, root: str, run: RunConfig):
        self.path = os.path.join(root, run.folder_name())
        self.run = run

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def checkpoint_prefix(self, epoch: int) -> str:
        return self.file(os.path.join("checkpoints", f"ckpt-{epoch}"))

    def best_prefix(self) -> str:
        """Weights of the best evaluation so far (early stopping only)."""
        return self.file(os.path.join("checkpoints", "best"))

    def _manifest_files(self, history: History) -> list[str]:
        files = ["config.json", "history.json"]
        prefix = self.checkpoint_prefix(history.last_epoch)
        files += sorted(os.path.relpath(p, self.path) for p in glob.glob(prefix + ".*"))
        files += sorted(os.path.relpath(p, self.path) for p in glob.glob(self.best_prefix() + ".*"))
        if history.complete and self.run.task == "retrieval":
            files.append("ranks.npz")
        return files

    def write_manifest(self, history: History) -> None:
        write_json_atomic(self.file("manifest.json"), {
            "epoch": history.last_epoch,
            "files": {name: _sha256(self.file(name)) for name in self._manifest_files(history)}})

    def _saved_config(self) -> dict:
        try:
            with open(self.file("config.json")) as f:
                saved = json.load(f)
        except (OSError, ValueError):
            return {}
        return saved if isinstance(saved, dict) else {}

    def retrain_token(self) -> str | None:
        """The `--retrain` invocation that (re)started this folder, if any (see `RetrainMarker`)."""
        return self._saved_config().get("retrain_token")

    def saved_history(self, log=None, retrain_token: str | None = None) -> History | None:
        """The saved history if the folder holds this exact configuration, intact.

        Args:
          log: Where to warn about a corrupted folder (None: stay silent).
          retrain_token: With `--retrain`, the invocation's token: a folder
            not (re)started by that invocation counts as not saved.
        """
        saved = self._saved_config()
        if saved.get("identity") != self.run.identity():
            return None
        if retrain_token is not None and saved.get("retrain_token") != retrain_token:
            return None
        history, problem = self._checked_history()
        if problem is None:
            return history
        if log is not None:
            log(f"warning: saved model {self.path} is incomplete or corrupted ({problem}); training it again")
        return None

    def _checked_history(self) -> tuple[History | None, str | None]:
        """(the history the manifest vouches for, None) or (None, what is wrong)."""
        try:
            with open(self.file("manifest.json")) as f:
                manifest = json.load(f)
            history = History.load(self.file("history.json"))
        except (OSError, ValueError, TypeError) as err:
            return None, f"{type(err).__name__} reading manifest or history"
        files = dict(manifest.get("files", {}))
        if history.last_epoch != manifest.get("epoch"):
            if not isinstance(manifest.get("epoch"), int) or history.last_epoch < manifest["epoch"]:
                return None, "history and manifest disagree"
            # Killed after a later evaluation's history was written but
            # before its manifest: the manifest's evaluation is intact, and
            # the history (append-only) up to it is what was vouched for.
            files.pop("history.json", None)
            history = history.truncated(manifest["epoch"])
        for name, digest in files.items():
            if not os.path.isfile(self.file(name)):
                return None, f"{name} is missing"
            if _sha256(self.file(name)) != digest:
                return None, f"{name} does not match its checksum"
        if not any(name.endswith(".index") for name in files):
            return None, "no checkpoint in the manifest"
        return history, None

    def reset(self, retrain_token: str | None = None) -> None:
        shutil.rmtree(self.path, ignore_errors=True)
        os.makedirs(self.path)
        saved = {"identity": self.run.identity(), "config": self.run.to_dict()}
        if retrain_token is not None:
            saved["retrain_token"] = retrain_token
        write_json_atomic(self.file("config.json"), saved)

    @contextlib.contextmanager
    def lock(self, log, label: str):
        """Holds an exclusive lock on this model folder while it is trained.

        A second process running an overlapping ablation waits here, then
        finds the model complete and reloads it instead of training it again.
        The lock file is removed on release; a waiter that then holds the
        lock of a removed file tries again on the current one.
        """
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        path, announced = self.path + ".lock", False
        while True:
            handle = open(path, "a")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                if not announced:
                    log(f"[{label}] waiting: another process is training {self.path}")
                    announced = True
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                current = os.stat(path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                current = False
            if current:
                break
            handle.close()
        try:
            yield
        finally:
            with contextlib.suppress(OSError):
                os.remove(path)
            handle.close()

    @contextlib.contextmanager
    def writing(self):
        """Turns TensorFlow's write errors (a full disk) into OSError; leaves no temporary checkpoint.

        TensorFlow writes a checkpoint into `ckpt-N_temp/` and renames it;
        a failed write leaves that folder behind and raises an OpError.
        """
        try:
            yield
        except BaseException as err:  # a full disk, or Ctrl-C in the middle of the write
            for leftover in glob.glob(self.file(os.path.join("checkpoints", "*_temp*"))):
                shutil.rmtree(leftover, ignore_errors=True)
            if not isinstance(err, tf.errors.OpError):
                raise
            if isinstance(err, tf.errors.PermissionDeniedError):
                code = errno.EACCES
            elif isinstance(err, tf.errors.ResourceExhaustedError) or "space left" in (err.message or ""):
                code = errno.ENOSPC
            else:
                code = errno.EIO
            raise OSError(code, os.strerror(code), self.path) from None


class RetrainMarker:
    """Remembers an unfinished `--retrain` invocation, so re-running it resumes it.

    `--retrain` trains every model again. If it is interrupted, re-running
    the same command must not throw away the models it already retrained:
    the marker `saved_models/.retrain-<ablation>.json` holds a token that
    every folder the invocation (re)starts records; a re-run with the same
    ablation reuses the token, so those folders reload or resume and only
    the others are retrained. A finished ablation removes the marker.

    Args:
      root: The `saved_models/` folder.
      stem: The ablation's name (a hash of its models' identities).
    """

    def __init__(self, root: str, stem: str):
        self.path = os.path.join(root, f".retrain-{stem}.json")

    def token(self) -> str:
        """The unfinished invocation's token, or a new one."""
        try:
            with open(self.path) as f:
                return str(json.load(f)["token"])
        except (OSError, ValueError, KeyError, TypeError):
            return os.urandom(8).hex()

    def start(self, token: str) -> None:
        write_json_atomic(self.path, {"token": token, "started": time.strftime("%Y-%m-%d %H:%M:%S")})

    def finish(self) -> None:
        if os.path.exists(self.path):  # removing nothing still fails on a read-only filesystem
            with contextlib.suppress(FileNotFoundError):
                os.remove(self.path)


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _optimizer(run: RunConfig):
    return tf.keras.optimizers.Adagrad(learning_rate=run.train.learning_rate)


def _epoch_batches(arrays: dict, batch_size: int, seed: int, epoch: int):
    """Shuffled batches of one epoch; the order depends only on (seed, epoch).

    Plain numpy slices rather than tf.data: the arrays are already encoded
    integers in memory, and on the 2-core machine tf.data cost ~0.5 s an epoch
    slicing 390k single examples, and deleting an autotuned iterator at the
    end of an epoch stalled for up to 4.6 s (an epoch of 5.6 s took 10.25 s).
    """
    order = np.random.default_rng([seed, epoch]).permutation(len(arrays["user"]))
    shuffled = {k: v[order] for k, v in arrays.items()}
    for start in range(0, len(order), batch_size):
        yield {k: v[start:start + batch_size] for k, v in shuffled.items()}


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
    label = (" + ".join(run.features) if run.features else "baseline") + (
        "" if run.task == "retrieval" else f", {run.task}")
    if run.task == "ranking":
        model = ranking.build_ranking_model(run.features, context, run.model.layer_sizes, run.train.seed)
    else:
        model = build_model(run.features, context, run.model.layer_sizes, run.train.seed)
    model.compile(optimizer=_optimizer(run))
    checkpoint = tf.train.Checkpoint(model=model, optimizer=model.optimizer)
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
        if run.task == "ranking":
            rows = ranking.rated_rows(data, data.train)
            epoch_trainer = EpochTrainer(model, data, run.train.batch_size,
                                         run.train.seed, rows, with_rating=True)
            ranking.train_ranking(run, data, model, history, epoch_trainer, folder, manager, progress, label)
        else:
            _train(run, data, model, history, folder, manager, progress, label)
        return TrainedModel(run, model, history, folder.path, reloaded=False)


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
        self.train_step = tf.function(model.train_step, reduce_retracing=True)
        rows = data.train if rows is None else rows
        self.arrays = {"user": data.user[rows], "movie": data.movie[rows], "timestamp": data.timestamp[rows]}
        if with_rating:
            self.arrays["rating"] = data.rating[rows]
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
    epochs, metric = run.train.num_epochs, run.train.early_stopping
    best_weights = tf.train.Checkpoint(model=model)
    for epoch in range(history.last_epoch + 1, epochs + 1):
        start = time.perf_counter()
        loss = train_epoch(epoch)
        seconds = time.perf_counter() - start
        history.epochs.append({"epoch": epoch, "loss": loss, "seconds": seconds})
        metrics = None
        if epoch % run.train.eval_every == 0 or epoch == epochs:
            eval_start = time.perf_counter()
            metrics, ranks = evaluation.evaluate(model, data, data.validation, run.train.ks,
                                                 exclude_seen=run.train.exclude_seen)
            history.evaluations.append({"epoch": epoch, **metrics,
                                        "seconds": time.perf_counter() - eval_start})
            stop = False
            if metric is not None:
                best = max(history.evaluations, key=lambda e: (e[metric], -e["epoch"]))
                if best["epoch"] == epoch:
                    with folder.writing():
                        best_weights.write(folder.best_prefix())
                    save_npz_atomic(folder.file("ranks.npz"), rows=data.validation, ranks=ranks)
                since_best = sum(1 for e in history.evaluations if e["epoch"] > best["epoch"])
                stop = since_best >= run.train.patience
                history.complete = stop or epoch == epochs
                if history.complete:
                    history.best_epoch, history.stopped_early = best["epoch"], stop
                    best_weights.read(folder.best_prefix()).expect_partial()
            else:
                history.complete = epoch == epochs
                if history.complete:
                    save_npz_atomic(folder.file("ranks.npz"), rows=data.validation, ranks=ranks)
            # Checkpoint, then history, then the manifest that vouches for
            # both: a crash anywhere in between leaves a folder that fails
            # its check, never one that reloads wrong weights.
            with folder.writing():
                manager.save(checkpoint_number=epoch)
            history.save(folder.file("history.json"))
            folder.write_manifest(history)
            if stop:
                progress.log(f"[{label}] early stop after epoch {epoch}: {metric} has not improved for "
                             f"{run.train.patience} evaluations; keeping epoch {history.best_epoch}")
        with writer.as_default(step=epoch):
            tf.summary.scalar("loss", loss)
            tf.summary.scalar("epoch_seconds", seconds)
            for name, value in (metrics or {}).items():
                tf.summary.scalar(f"validation/{name}", value)
        progress.epoch(label, epoch, epochs, loss,
                       seconds + (history.evaluations[-1]["seconds"] if metrics else 0),
                       metrics)
        if history.complete:
            break
    writer.flush()
