"""MLflow tracking: the ablation as a parent run, each model as a nested run, each verdict on the parent.

What is logged comes from what the ablation saved (each model's folder:
`config.json`, `history.json`; the summary JSON and the HTML report), after
training, from the driver: the same code path for models trained here, in
`--workers` processes, on Ray, or listed by `report`, and no worker needs a
route to the tracking server. A model's run is found again by its identity
tag, so a model reloaded rather than trained is not logged twice and a
re-run ablation adds one parent run that lists (artifact `model_runs.json`)
the runs it reused. Only complete models are logged, so an interrupted and
resumed model has one run. A tracking server that does not answer costs one
warning line, never a saved model: `report --mlflow URI` logs what is
missing later.
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


def track_ablation(tracking, result, log=print) -> str | None:
    """Logs the ablation's models (those not logged before) and a parent run with its verdicts.

    Args:
      tracking: The `TrackingConfig` (`mlflow` None: nothing is logged).
      result: The `AblationResult` (models, references, summary JSON, report).
      log: Where lines go.

    Returns:
      The parent run's id, or None when nothing was logged (no URI, or the store did not answer: one
      warning line).
    """
    if tracking.mlflow is None:
        return None
    for name, value in _HTTP_SETTINGS.items():
        os.environ.setdefault(name, value)
    try:
        return _log(tracking, result, log)
    except Exception as error:  # noqa: BLE001 - any failure of the store must leave the saved models alone
        reason = str(error).splitlines()[0][:200] if str(error) else type(error).__name__
        log(f"warning: MLflow at {tracking.mlflow} was not written ({type(error).__name__}: {reason}); the "
            f"models are saved: `python -m recsys_ablate report` with the same flags logs what is missing")
        return None


class _Store:
    """One MLflow experiment, written through `MlflowClient` (runs, batches of metrics, params and tags)."""

    def __init__(self, tracking):
        # Imported here, not at the top: an optional extra whose import takes seconds (6 s measured with
        # `time python -c "import mlflow"` on the 2-core machine), which no command without --mlflow pays.
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

    def existing(self, identity: str) -> str | None:
        """The id of the run logged for the model of this identity, or None."""
        found = self.client.search_runs([self.experiment_id], max_results=1,
                                        filter_string=f"tags.`{IDENTITY_TAG}` = '{identity}'")
        return found[0].info.run_id if found else None

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


def _log(tracking, result, log) -> str:
    store = _Store(tracking)
    plan = result.plan
    with open(result.summary_json) as f:
        summary = json.load(f)
    parent = store.run(plan.stem, {ABLATION_TAG: plan.stem})
    model_runs, logged = {}, 0
    for model in [*result.trained, *result.rankers]:
        run_id, new = _model_run(store, parent, model)
        model_runs[os.path.basename(model.folder)] = run_id
        logged += new
    for reference in result.references:
        run_id, new = _reference_run(store, parent, reference)
        model_runs[os.path.basename(reference.folder)] = run_id
        logged += new
    metrics, tags = [], {"verdict_metric": summary["verdict_metric"],
                         "final_numbers_from": summary["final_numbers_and_verdicts_from"],
                         "models": str(len(model_runs))}
    for comparison in summary["comparisons"]:
        name = key(f"{comparison['feature_set']}/{comparison['metric']}")
        metrics += [store.metric(f"{name}/{field}", comparison[field], 0)
                    for field in ("difference", "low", "high", "p_adjusted") if comparison[field] is not None]
        tags[f"verdict/{name}"] = comparison["verdict"]
    with tempfile.TemporaryDirectory() as folder:
        listing = os.path.join(folder, "model_runs.json")
        with open(listing, "w") as f:
            json.dump(model_runs, f, indent=1)
        params = flatten({"alpha": summary["alpha"], "settings": summary["settings"]})
        store.log(parent, metrics, params, tags, [listing, result.summary_json, result.report])
    store.finish(parent)
    log(f"MLflow: {tracking.mlflow}, experiment {tracking.mlflow_experiment!r}: ablation run {parent}, "
        f"{logged} model runs logged, {len(model_runs) - logged} already there")
    return parent


def _model_run(store: _Store, parent: str, model) -> tuple[str, bool]:
    """(run id, whether it was logged now) of a two-tower or ranking model."""
    identity = model.run.identity()
    existing = store.existing(identity)
    if existing is not None:
        return existing, False
    history = model.history
    run_id = store.run(os.path.basename(model.folder), {
        IDENTITY_TAG: identity, "mlflow.parentRunId": parent, "data_fingerprint": model.run.content.data,
        "feature_set": feature_set_label(model.run.features, for_paths=True), "task": model.run.task,
        "seed": str(model.run.train.seed), "folder": os.path.basename(model.folder)})
    settings = model.run.to_dict()
    settings.pop("content")
    metrics = [store.metric("loss", e["loss"], e["epoch"]) for e in history.epochs]
    metrics += [store.metric(f"validation/{name}", value, e["epoch"]) for e in history.evaluations
                for name, value in e.items() if name != "epoch" and _is_number(value)]
    metrics += _final(store, history.judged_metrics, history.last_epoch)
    store.log(run_id, metrics, flatten(settings), artifacts=[os.path.join(model.folder, "history.json")])
    store.finish(run_id)
    return run_id, True


def _reference_run(store: _Store, parent: str, reference) -> tuple[str, bool]:
    """(run id, whether it was logged now) of a fitted reference model."""
    with open(os.path.join(reference.folder, "config.json")) as f:
        identity = json.load(f)["identity"]
    existing = store.existing(identity)
    if existing is not None:
        return existing, False
    run_id = store.run(os.path.basename(reference.folder), {
        IDENTITY_TAG: identity, "mlflow.parentRunId": parent, "feature_set": f"reference_{reference.name}",
        "task": "reference", "folder": os.path.basename(reference.folder)})
    metrics = _final(store, reference.history.judged_metrics, 0)
    metrics.append(store.metric("fit_seconds", reference.fit_seconds, 0))
    store.log(run_id, metrics, flatten({"reference": reference.name, "chosen": reference.chosen}),
              artifacts=[os.path.join(reference.folder, "history.json")])
    store.finish(run_id)
    return run_id, True


def _final(store: _Store, values: dict, step: int) -> list:
    """The judged metrics (test where the split has one) as final/NAME metrics."""
    return [store.metric(f"final/{name}", value, step) for name, value in values.items()
            if name != "epoch" and _is_number(value)]


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
