"""The model store: one folder per trained model, with integrity checks, locks and atomic writes.

A model folder holds `config.json` (the configuration and its identity),
`history.json`, TensorFlow checkpoints, `ranks.npz` and `manifest.json`,
the sha256 of every file a reload needs. `ModelFolder` decides whether a
folder can be trusted, locks it while it is trained and turns TensorFlow's
write errors into OSError; `RetrainMarker` makes an interrupted `--retrain`
resumable. Nothing here trains or evaluates.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import glob
import hashlib
import json
import math
import os
import shutil
import time

import tensorflow as tf

from recsys_ablate.data.encoded import label as data_label
from recsys_ablate.features import feature_set_label
from recsys_ablate.files import deferred_interrupts, write_json_atomic
from recsys_ablate.settings import RunConfig
from recsys_ablate.training.history import History


# Longest folder name written, in bytes: filesystems refuse names over 255 bytes, and the lock file adds
# ".lock" beside the folder. A longer readable part (a long file or feature name) is cut, the hash kept.
MAX_NAME_BYTES = 200


def folder_name(run: RunConfig) -> str:
    """Readable, unambiguous folder name: the data's name and settings in words, then the identity's hash."""
    features = feature_set_label(run.features, for_paths=True)
    layers = "-".join(map(str, run.model.layer_sizes)) or "none"
    prefix = "" if run.task == "retrieval" else f"{run.task}_"
    words = (f"{prefix}{data_label(run.data)}_{run.data.split}_e{run.train.num_epochs}"
             f"_emb{run.model.embedding_size}"
             f"_l{layers}_b{run.train.batch_size}_lr{run.train.learning_rate:g}"
             f"_s{run.train.seed}_{features}{run.objective.folder_suffix()}")
    words = "".join(c if c.isprintable() and c not in "/\\" else "_" for c in words)
    suffix = f"_{run.identity()[:8]}"
    return words.encode()[:MAX_NAME_BYTES - len(suffix)].decode(errors="ignore") + suffix


def _saved_folder(root: str, run: RunConfig) -> str | None:
    """The folder already holding `run` under another name (the data's folder renamed, a name cut by an
    earlier version), found by its identity: the hash that ends every name, then config.json."""
    identity = run.identity()
    for path in glob.glob(os.path.join(glob.escape(root), f"*_{identity[:8]}")):
        try:
            with open(os.path.join(path, "config.json")) as f:
                if json.load(f).get("identity") == identity:
                    return path
        except (OSError, ValueError, AttributeError):
            continue
    return None


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
        self.path = os.path.join(root, folder_name(run))
        if not os.path.isdir(self.path):
            self.path = _saved_folder(root, run) or self.path
        self.run = run

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def checkpoint_prefix(self, epoch: int) -> str:
        return _checkpoint_prefix(self.path, epoch)

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
            if history.test_metrics is not None:
                files.append("test.npz")
        return files

    def write_manifest(self, history: History) -> None:
        write_json_atomic(self.file("manifest.json"), {
            "epoch": history.last_epoch,
            "files": {name: _sha256(self.file(name)) for name in self._manifest_files(history)}})

    def _saved_config(self) -> tuple[dict, str | None]:
        """(config.json's content, None), or ({}, what is wrong with it)."""
        try:
            with open(self.file("config.json")) as f:
                saved = json.load(f)
        except FileNotFoundError:
            return {}, "config.json is missing"
        except (OSError, ValueError) as err:
            return {}, f"config.json does not read as JSON ({type(err).__name__})"
        if not isinstance(saved, dict) or not isinstance(saved.get("identity"), str):
            return {}, "config.json does not hold an identity"
        return saved, None

    def retrain_token(self) -> str | None:
        """The `--retrain` invocation that (re)started this folder, if any (see `RetrainMarker`)."""
        return self._saved_config()[0].get("retrain_token")

    def saved_history(self, log=None, retrain_token: str | None = None) -> History | None:
        """The saved history if the folder holds this exact configuration, intact.

        A folder that exists but whose files do not read as what they should
        (a crash mid-write, a disk error, a hand edit) is damaged: warned about
        and trained again, never a traceback.

        Args:
          log: Where to warn about a damaged folder (None: stay silent).
          retrain_token: With `--retrain`, the invocation's token: a folder
            not (re)started by that invocation counts as not saved.
        """
        if not os.path.isdir(self.path):
            return None
        saved, problem = self._saved_config()
        if problem is None and saved["identity"] != self.run.identity():
            problem = "config.json holds another configuration"
        if problem is None and retrain_token is not None and saved.get("retrain_token") != retrain_token:
            return None
        if problem is None:
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
            if not (isinstance(manifest, dict) and type(manifest.get("epoch")) is int
                    and isinstance(manifest.get("files"), dict)
                    and all(isinstance(v, str) for v in manifest["files"].values())):
                return None, "manifest.json is not a manifest (epoch and files)"
            history = History.load(self.file("history.json"))
        except OSError as err:
            name = os.path.basename(err.filename or "manifest.json")
            return None, f"{name} cannot be read ({err.strerror})"
        except ValueError as err:
            return None, str(err)
        files = dict(manifest["files"])
        if history.last_epoch != manifest["epoch"]:
            if history.last_epoch < manifest["epoch"]:
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
        a failed write leaves that folder behind and raises an OpError. Ctrl-C
        and SIGTERM wait for the write to end (`files.deferred_interrupts`).
        """
        try:
            with deferred_interrupts():
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


def _checkpoint_prefix(folder: str, epoch: int) -> str:
    return os.path.join(folder, "checkpoints", f"ckpt-{epoch}")


def tower_parameters(folder: str, history: History) -> int | None:
    """A saved model's trainable size: the values of its towers' variables in its last checkpoint (read from
    the checkpoint's index, nothing built; None when the checkpoint is gone)."""
    try:
        variables = tf.train.list_variables(_checkpoint_prefix(folder, history.last_epoch))
    except (tf.errors.NotFoundError, ValueError):
        return None
    towers = ("model/query_tower/", "model/candidate_tower/")
    return sum(math.prod(shape) for name, shape in variables if name.startswith(towers))
