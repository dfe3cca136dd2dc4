"""Fits the reference models (`models/reference.py`) on the ablation's split, chooses each one's settings
on validation and evaluates the choice once on the test part, like the two-tower models' kept epoch.

A reference is fitted once per split and reused: its folder in the saved-models folder is named by an
identity covering the data's fingerprint, the model and its grid and the evaluation's settings, and holds
`config.json`, `history.json` (every setting tried with its validation metric, the choice, fit seconds,
the chosen one's validation and test metrics) and the chosen one's `ranks.npz` / `test.npz`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time

from recsys_ablate.errors import UserInputError
from recsys_ablate.evaluation import catalogue
from recsys_ablate.evaluation.metrics import ItemPopularity, evaluated_metrics, metric
from recsys_ablate.files import save_npz_atomic, write_json_atomic
from recsys_ablate.models.reference import REFERENCES
from recsys_ablate.training.history import History

# Read for the identity: evaluation settings that change what a reference's saved numbers are.
_EVALUATION_SETTINGS = ("ks", "exclude_seen", "queries", "user_metrics")


def check_reference_names(names) -> None:
    """Raises UserInputError for a name no reference model is registered under."""
    unknown = [name for name in names if name not in REFERENCES]
    if unknown:
        raise UserInputError(f"reference model {unknown[0]!r}: unknown; expected some of "
                             f"{', '.join(REFERENCES)}")


@dataclasses.dataclass
class FittedReference:
    """A reference model's saved result, shaped like a `TrainedModel` where the comparisons read one.

    Attributes:
      name: The reference's name ("ease").
      folder: Its saved folder (ranks.npz, test.npz).
      history: Its `History`: one evaluation (the chosen setting's validation metrics), `test_metrics`.
      chosen: The chosen settings.
      tried: [{settings, selection metric value}] of every setting tried.
      fit_seconds: Seconds to fit the chosen setting.
      reloaded: Whether it was read from its folder rather than fitted now.
    """

    name: str
    folder: str
    history: History
    chosen: dict
    tried: list
    fit_seconds: float
    reloaded: bool

    @property
    def label(self) -> str:
        return f"reference: {self.name}"

    @property
    def grid_edges(self) -> list[str]:
        """The chosen settings that are the smallest or largest value tried ("l2 30000"): a value beyond
        the grid might do better."""
        edges = []
        for key, value in self.chosen.items():
            tried = sorted({settings[key] for settings in REFERENCES[self.name].grid})
            if len(tried) > 1 and value in (tried[0], tried[-1]):
                edges.append(f"{key} {value:g}")
        return edges


def _identity(name: str, data, train) -> str:
    settings = {"reference": name, "grid": list(REFERENCES[name].grid), "data": data.fingerprint,
                **{key: getattr(train, key) for key in _EVALUATION_SETTINGS}}
    return hashlib.sha256(json.dumps(settings, sort_keys=True, default=list).encode()).hexdigest()


def fit_references(names, data, train, selection: str, root: str, data_name: str,
                   log=print) -> list[FittedReference]:
    """Each named reference fitted (or reloaded) and chosen on validation by `selection` (a metric name).

    Args:
      names: Reference model names.
      data: The `EncodedDataset` (its test part, when it has one, is evaluated once per reference).
      train: The ablation's `TrainConfig` (the evaluation's ks, masking, queries, metrics).
      selection: The metric choosing each reference's settings on validation.
      root: The saved-models folder.
      data_name: The data's readable name (its folders' names start with it).
      log: Where lines go.
    """
    metrics = evaluated_metrics(train)
    # The same held-out sets and item popularity for every setting of every reference: made once.
    validation = catalogue.EvaluationSet.of(data, "validation", train)
    popularity = ItemPopularity.of(data)
    sign = 1.0 if metric(selection, train.ks).higher_is_better else -1.0
    fitted = []
    for name in names:
        identity = _identity(name, data, train)
        folder = os.path.join(root, f"reference_{name}_{data_name}_{identity[:8]}")
        saved = _saved(folder, identity, name)
        if saved is not None:
            log(f"[reference: {name}] reloaded from {folder}")
            fitted.append(dataclasses.replace(saved, reloaded=True))
            continue
        tried, best = [], None
        for settings in REFERENCES[name].grid:
            start = time.perf_counter()
            model = REFERENCES[name](**settings).fit(data)
            seconds = time.perf_counter() - start
            values, scores = catalogue.evaluate(model, data, validation, metrics, popularity)
            tried.append({"settings": settings, selection: values[selection], "fit_seconds": seconds})
            log(f"[reference: {name}] {settings or 'no settings'}: validation {selection} "
                f"{values[selection]:.4f} (fitted in {seconds:.1f} s)")
            if best is None or sign * values[selection] > sign * best[1][selection]:
                best = (model, values, scores, settings, seconds)
        model, values, scores, settings, seconds = best
        history = History(epochs=[], evaluations=[{"epoch": 0, **values}], complete=True)
        os.makedirs(folder, exist_ok=True)
        save_npz_atomic(os.path.join(folder, "ranks.npz"), rows=data.validation, **scores.arrays())
        if len(data.test):
            test = catalogue.EvaluationSet.of(data, "test", train)
            test_values, test_scores = catalogue.evaluate(model, data, test, metrics, popularity)
            history.test_metrics = {"epoch": 0, **test_values}
            save_npz_atomic(os.path.join(folder, "test.npz"), rows=data.test, **test_scores.arrays())
        result = FittedReference(name, folder, history, settings, tried, seconds, reloaded=False)
        write_json_atomic(os.path.join(folder, "history.json"), dataclasses.asdict(history) | {
            "chosen": settings, "tried": tried, "fit_seconds": seconds})
        write_json_atomic(os.path.join(folder, "config.json"), {"identity": identity, "reference": name})
        log(f"[reference: {name}] chose {settings or 'its one setting'} on validation {selection}")
        fitted.append(result)
    return fitted


def _saved(folder: str, identity: str, name: str) -> FittedReference | None:
    try:
        with open(os.path.join(folder, "config.json")) as f:
            if json.load(f).get("identity") != identity:
                return None
        with open(os.path.join(folder, "history.json")) as f:
            values = json.load(f)
        extra = {key: values.pop(key) for key in ("chosen", "tried", "fit_seconds")}
        history = History(**values)
        needed = ["ranks.npz"] + (["test.npz"] if history.test_metrics is not None else [])
        if not all(os.path.isfile(os.path.join(folder, file)) for file in needed):
            return None
        return FittedReference(name, folder, history, extra["chosen"], extra["tried"], extra["fit_seconds"],
                               reloaded=True)
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None  # absent or damaged: fitted again (it takes seconds)
