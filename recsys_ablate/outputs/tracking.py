"""MLflow tracking: the ablation as a parent run, each model as a nested run, each verdict on the parent.

The driver logs (`Tracker`): each model's epochs and evaluations as they
come, from this process, from `--workers` processes and from Ray trials as
the events the driver already receives, so no worker needs a route to the
tracking server; at the end, what the model folders hold (settings, final
metrics, `history.json`) and the parent's verdicts, summary and report. A
model's run is found again by its identity tag: a model reloaded rather than
trained is not logged twice, a resumed one continues its run, and a re-run
ablation adds one parent run that lists (artifact `model_runs.json`) the
runs it reused. A tracking server that does not answer costs one warning
line, never a saved model: `report --mlflow URI` logs what is missing later.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import pathlib
import re
import tempfile
import time

from recsys_ablate.errors import UserInputError
from recsys_ablate.features.base import feature_set_label
from recsys_ablate.training.model_store import folder_name

# Tags every model run carries (and is found by).
IDENTITY_TAG = "recsys_ablate.identity"
ABLATION_TAG = "recsys_ablate.ablation"
# MLflow's own limits on one log_batch call.
_BATCH_METRICS, _BATCH_PARAMS, _BATCH_TAGS = 1000, 100, 100
# A server that does not answer is told in seconds, not after MLflow's default retries (minutes of backoff).
_HTTP_SETTINGS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
                  "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1"}


def check_tracking(tracking) -> None:
    """Before training: the mlflow package is there when a tracking URI is given.

    Raises:
      UserInputError: naming the extra to install.
    """
    if tracking.mlflow is not None and importlib.util.find_spec("mlflow") is None:
        raise UserInputError(f"--mlflow {tracking.mlflow} needs the mlflow package: "
                             "pip install -e \".[mlflow]\"")


def key(text: str) -> str:
    """`text` as an MLflow metric, param or tag key (letters, digits, _ - . / and spaces): a feature set's
    " + " becomes "-" (no feature name has one), any other character outside those "_"."""
    return re.sub(r"[^\w.\- /]", "_", text.replace(" + ", "-"))


def flatten(values: dict, prefix: str = "") -> dict[str, str]:
    """{"train.batch_size": "2048", ...}: a nested settings dict as MLflow params."""
    out = {}
    for name, value in values.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{name}."))
        else:
            out[key(prefix + name)] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return out


class Tracker:
    """The ablation's MLflow runs, written as training goes and completed at the end.

    `epoch` is called by the driver after each epoch of each model (in this
    process, or as an event from a worker process or a Ray trial): the
    model's run is found by its identity tag or created, nested under this
    invocation's parent run, and each evaluation logs the losses since the
    last one and the validation metrics, with step = epoch. A model resumed
    after an interruption finds its run again (same run id) and logs only
    the epochs it has not logged. `finish` completes every model's run
    (settings, final metrics, `history.json`; anything not logged live, such
    as a model trained without --mlflow) and the parent (verdicts, summary,
    report). The first failure of the store is one warning line and ends
    tracking for this invocation; training goes on.

    Args:
      tracking: The `TrackingConfig` (`mlflow` None: every call does nothing).
      stem: The ablation's name (the parent run's name).
      log: Where lines go.
    """

    def __init__(self, tracking, stem: str, log=print):
        self.tracking, self.stem, self.log = tracking, stem, log
        self.enabled = tracking.mlflow is not None
        self.store = None
        self.parent = None
        self.runs: dict[str, _ModelRun] = {}  # identity -> its run

    def epoch(self, run, epoch: int, loss: float, metrics: dict | None) -> None:
        """Records one epoch of the model of `run` (its evaluation's metrics, or None)."""
        self._guard(self._epoch, run, epoch, loss, metrics)

    def finish(self, result) -> str | None:
        """Completes every model's run and writes the parent; returns the parent's id (None: not written)."""
        return self._guard(self._finish, result)

    def _guard(self, action, *args):
        if not self.enabled:
            return None
        try:
            return action(*args)
        except Exception as error:  # noqa: BLE001 - a failure of the store must never cost a saved model
            self.enabled = False
            reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
            self.log(f"warning: MLflow at {self.tracking.mlflow} did not answer ({type(error).__name__}: "
                     f"{reason}); training goes on and the models are saved: `python -m recsys_ablate "
                     "report` with the same flags logs what is missing")
            return None

    def _connect(self) -> "_Store":
        if self.store is None:
            for name, value in _HTTP_SETTINGS.items():
                os.environ.setdefault(name, value)
            self.store = _Store(self.tracking)
            self.parent = self.store.run(self.stem, {ABLATION_TAG: self.stem})
        return self.store

    def _model_run(self, identity: str, name: str, tags: dict) -> "_ModelRun":
        """The run of the model of `identity`: this invocation's, an earlier one's, or a new one."""
        if identity not in self.runs:
            store = self._connect()
            found = store.existing(identity)
            if found is not None:
                run_id, status = found
                logged = set() if status == "FINISHED" else store.logged_steps(run_id)
                self.runs[identity] = _ModelRun(run_id, status == "FINISHED", logged, new=False)
            else:
                run_id = store.run(name, {IDENTITY_TAG: identity, "mlflow.parentRunId": self.parent, **tags})
                self.runs[identity] = _ModelRun(run_id, False, set(), new=True)
        return self.runs[identity]

    def _epoch(self, run, epoch: int, loss: float, metrics: dict | None) -> None:
        model_run = self._model_run(run.identity(), folder_name(run), _tags(run))
        if model_run.finished or epoch in model_run.logged:
            return  # a resumed model's epochs that its run already has
        model_run.pending.append(self.store.metric("loss", loss, epoch))
        if metrics is not None:  # one request per evaluation, not per epoch
            model_run.pending += _metrics(self.store, "validation", metrics, epoch)
            self.store.log(model_run.run_id, model_run.pending)
            model_run.pending = []
        model_run.logged.add(epoch)

    def _finish(self, result) -> str:
        store = self._connect()
        with open(result.summary_json) as f:
            summary = json.load(f)
        listing, logged = {}, 0
        for model in [*result.trained, *result.rankers]:
            history, name = model.history, os.path.basename(model.folder)
            model_run = self._model_run(model.run.identity(), name, _tags(model.run))
            metrics = model_run.pending + [store.metric("loss", e["loss"], e["epoch"]) for e in history.epochs
                                           if e["epoch"] not in model_run.logged]
            metrics += [m for e in history.evaluations if e["epoch"] not in model_run.logged
                        for m in _metrics(store, "validation", e, e["epoch"])]
            settings = model.run.to_dict()
            settings.pop("content")
            metrics += _metrics(store, "final", history.judged_metrics, history.last_epoch)
            logged += self._complete(model_run, metrics, settings, model.folder)
            listing[name] = model_run.run_id
        for reference in result.references:
            with open(os.path.join(reference.folder, "config.json")) as f:
                identity = json.load(f)["identity"]
            name = os.path.basename(reference.folder)
            model_run = self._model_run(identity, name, {"feature_set": f"reference_{reference.name}",
                                                         "task": "reference", "folder": name})
            metrics = _metrics(store, "final", reference.history.judged_metrics, 0)
            metrics.append(store.metric("fit_seconds", reference.fit_seconds, 0))
            settings = {"reference": reference.name, "chosen": reference.chosen}
            logged += self._complete(model_run, metrics, settings, reference.folder)
            listing[name] = model_run.run_id
        self._log_parent(summary, listing, result)
        self.log(f"MLflow: {self.tracking.mlflow}, experiment {self.tracking.mlflow_experiment!r}: ablation "
                 f"run {self.parent}, {logged} model runs logged, {len(listing) - logged} already there")
        return self.parent

    def _complete(self, model_run: "_ModelRun", metrics: list, settings: dict, folder: str) -> bool:
        """Logs what a model's run lacks (metrics, its settings as params, history.json) and ends it;
        returns whether this invocation logged the model (False: its run was there)."""
        if model_run.finished:
            return False
        self.store.log(model_run.run_id, metrics, flatten(settings),
                       artifacts=[os.path.join(folder, "history.json")])
        self.store.finish(model_run.run_id)
        model_run.finished = True
        return True

    def _log_parent(self, summary: dict, listing: dict, result) -> None:
        metrics, tags = [], {"verdict_metric": summary["verdict_metric"],
                             "final_numbers_from": summary["final_numbers_and_verdicts_from"],
                             "models": str(len(listing))}
        for comparison in summary["comparisons"]:
            name = key(f"{comparison['feature_set']}/{comparison['metric']}")
            metrics += [self.store.metric(f"{name}/{field}", comparison[field], 0)
                        for field in ("difference", "low", "high", "p_adjusted", "p_equivalence_adjusted")
                        if comparison[field] is not None]
            if comparison["verdict_metric"]:  # every other metric is exploratory: no verdict word
                tags[f"verdict/{name}"] = comparison["verdict"]
        # The other claims of the run: each feature against its shuffled control, a design's effects.
        claims = [(f"control/{c['feature_set']}", c) for c in summary.get("controls", [])] + [
            (f"effect/{e['effect']}", e) for e in summary.get("design", {}).get("effects", [])]
        for name, claim in claims:
            name = key(name)
            metrics += [self.store.metric(f"{name}/{field}", claim[field], 0)
                        for field in ("difference", "low", "high", "p_adjusted") if claim[field] is not None]
            tags[name] = claim["verdict"]
        with tempfile.TemporaryDirectory() as folder:
            path = os.path.join(folder, "model_runs.json")
            with open(path, "w") as f:
                json.dump(listing, f, indent=1)
            params = flatten({"alpha": summary["alpha"], "settings": summary["settings"]})
            self.store.log(self.parent, metrics, params, tags, [path, result.summary_json, result.report])
        self.store.finish(self.parent)


class _ModelRun:
    """A model's MLflow run as this invocation knows it: finished (nothing more to log), the epochs it has,
    losses waiting for the next evaluation, whether this invocation created it."""

    def __init__(self, run_id: str, finished: bool, logged: set, new: bool):
        self.run_id, self.finished, self.logged, self.new = run_id, finished, logged, new
        self.pending: list = []


def _tags(run) -> dict:
    return {"data_fingerprint": run.content.data, "task": run.task, "seed": str(run.train.seed),
            "feature_set": feature_set_label(run.features, for_paths=True), "folder": folder_name(run)}


def _metrics(store: "_Store", prefix: str, values: dict, step: int) -> list:
    """`values`' numbers (not the epoch, not timings) as PREFIX/NAME metrics at `step`."""
    return [store.metric(f"{prefix}/{name}", value, step) for name, value in values.items()
            if name not in ("epoch", "seconds") and _is_number(value)]


class _Store:
    """One MLflow experiment, written through `MlflowClient` (runs, batches of metrics, params and tags)."""

    def __init__(self, tracking):
        # Imported here, not at the top: an optional extra whose import takes seconds (BENCHMARKS.md,
        # "Imports kept out of the way"), which no command without --mlflow pays.
        import mlflow
        from mlflow import entities

        # MLflow's INFO lines (creating database tables, ...) and its HTTP pool's retry warnings are not the
        # ablation's business: a store that does not answer is one warning line (`track_ablation`).
        logging.getLogger("mlflow").setLevel(logging.WARNING)
        logging.getLogger("urllib3.connectionpool").setLevel(logging.ERROR)
        self.entities = entities
        self.client = mlflow.MlflowClient(tracking_uri=tracking.mlflow)
        experiment = self.client.get_experiment_by_name(tracking.mlflow_experiment)
        self.experiment_id = (experiment.experiment_id if experiment is not None else
                              self.client.create_experiment(tracking.mlflow_experiment,
                                                            artifact_location=_artifacts_beside(tracking.mlflow)))
        self.now = int(time.time() * 1000)

    def existing(self, identity: str) -> tuple[str, str] | None:
        """(run id, status: FINISHED, RUNNING, ...) of the run logged for the model of this identity, or
        None."""
        found = self.client.search_runs([self.experiment_id], max_results=1,
                                        filter_string=f"tags.`{IDENTITY_TAG}` = '{identity}'")
        return (found[0].info.run_id, found[0].info.status) if found else None

    def logged_steps(self, run_id: str) -> set[int]:
        """The epochs a run has logged (its loss steps: an evaluation's batch holds the losses before it)."""
        return {m.step for m in self.client.get_metric_history(run_id, "loss")}

    def run(self, name: str, tags: dict) -> str:
        return self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id

    def metric(self, name: str, value, step: int):
        return self.entities.Metric(key(name), float(value), self.now, int(step))

    def log(self, run_id: str, metrics=(), params=None, tags=None, artifacts=()) -> None:
        """Logs in pieces within MLflow's limits per log_batch call, then the artifacts (local files)."""
        params = [self.entities.Param(k, v[:6000]) for k, v in (params or {}).items()]
        tags = [self.entities.RunTag(k, v) for k, v in (tags or {}).items()]
        for start in range(0, max(len(params), len(tags)), _BATCH_PARAMS):
            self.client.log_batch(run_id, params=params[start:start + _BATCH_PARAMS],
                                  tags=tags[start:start + _BATCH_TAGS])
        for start in range(0, len(metrics), _BATCH_METRICS):
            self.client.log_batch(run_id, metrics=list(metrics[start:start + _BATCH_METRICS]))
        for path in artifacts:
            self.client.log_artifact(run_id, path)

    def finish(self, run_id: str) -> None:
        self.client.set_terminated(run_id, "FINISHED")


def _artifacts_beside(uri: str) -> str | None:
    """A SQLite store's artifacts in `mlartifacts/` beside its database file (MLflow's default, `./mlruns`,
    is relative to whatever folder the command ran in); None: the store's own default (a server's
    artifact root, a file store's folder)."""
    if not uri.startswith("sqlite:///"):
        return None
    return (pathlib.Path(uri[len("sqlite:///"):]).resolve().parent / "mlartifacts").as_uri()


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
