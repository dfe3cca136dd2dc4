"""Training history: per-epoch loss and time, per-evaluation metrics."""

from __future__ import annotations

import dataclasses
import json

from recsys_ablate.files import write_json_atomic


@dataclasses.dataclass
class History:
    """What a training run produced, as saved in `history.json`.

    Attributes:
      epochs: [{"epoch", "loss", "seconds"}] per trained epoch.
      evaluations: [{"epoch", "top_1", ..., "top_100", "seconds"}].
      complete: True once the last epoch is trained and evaluated (or
        training stopped early).
      best_epoch: With early stopping, the evaluation whose weights were kept.
      stopped_early: Whether early stopping ended the run.
      test_metrics: The kept weights' evaluation on the held-out test part
        (None without one); final tables and verdicts read it.
      stop_reason: Why early stopping ended the run, in words (None: it did not).
      query_ms: Median milliseconds per query of its BruteForce index over the catalogue, timed when
        training ended (`callbacks.QueryLatency`; None for ranking models and models saved before).
    """

    epochs: list = dataclasses.field(default_factory=list)
    evaluations: list = dataclasses.field(default_factory=list)
    complete: bool = False
    best_epoch: int | None = None
    stopped_early: bool = False
    test_metrics: dict | None = None
    stop_reason: str | None = None
    query_ms: float | None = None

    @property
    def last_epoch(self) -> int:
        return self.epochs[-1]["epoch"] if self.epochs else 0

    @property
    def final_metrics(self) -> dict:
        """The evaluation the kept weights belong to (the best one with early stopping)."""
        if self.best_epoch is not None:
            return next(e for e in self.evaluations if e["epoch"] == self.best_epoch)
        return self.evaluations[-1] if self.evaluations else {}

    def truncated(self, epoch: int) -> "History":
        """The history as it was at the end of `epoch` (for resuming)."""
        return History([e for e in self.epochs if e["epoch"] <= epoch],
                       [e for e in self.evaluations if e["epoch"] <= epoch], False)

    @property
    def judged_metrics(self) -> dict:
        """What the kept weights are judged by: the test evaluation where the split has a test part, else
        the validation evaluation that also chose them."""
        return self.test_metrics if self.test_metrics is not None else self.final_metrics

    def save(self, path: str) -> None:
        values = dataclasses.asdict(self)
        for key in ("test_metrics", "stop_reason", "query_ms"):  # histories without them stay as written
            if values[key] is None:
                values.pop(key)
        write_json_atomic(path, values)

    @classmethod
    def load(cls, path: str) -> "History":
        """The history saved at `path`.

        Raises:
          ValueError: the file is not JSON, or not a history (fields of the
            wrong type, evaluations without an epoch, a kept epoch that was
            never evaluated), in words.
        """
        try:
            with open(path) as f:
                values = json.load(f)
        except ValueError:
            raise ValueError("history.json does not read as JSON") from None
        problem = _shape_problem(values)
        if problem:
            raise ValueError(f"history.json: {problem}")
        return cls(**values)


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _shape_problem(values) -> str | None:
    """What makes `values` not a saved History, or None."""
    if not isinstance(values, dict):
        return "not a JSON object"
    fields = {f.name for f in dataclasses.fields(History)}
    if not set(values) <= fields or not {"epochs", "evaluations"} <= set(values):
        return f"expected the keys {', '.join(sorted(fields))}"
    values = {**dataclasses.asdict(History()), **values}
    for key in ("epochs", "evaluations"):
        if not isinstance(values[key], list) or not all(
                isinstance(e, dict) and _is_int(e.get("epoch")) for e in values[key]):
            return f"{key} is not a list of entries with a whole-number epoch"
    if not all(isinstance(e.get("loss"), (int, float)) and not isinstance(e.get("loss"), bool)
               for e in values["epochs"]):
        return "an epoch has no numeric loss"
    if not isinstance(values["complete"], bool) or not isinstance(values["stopped_early"], bool):
        return "complete and stopped_early must be true or false"
    if values["test_metrics"] is not None and not isinstance(values["test_metrics"], dict):
        return "test_metrics is not an object"
    if values["stop_reason"] is not None and not isinstance(values["stop_reason"], str):
        return "stop_reason is not text"
    if values["query_ms"] is not None and (not isinstance(values["query_ms"], (int, float))
                                           or isinstance(values["query_ms"], bool)):
        return "query_ms is not a number"
    best = values["best_epoch"]
    if best is not None and (not _is_int(best) or best not in {e["epoch"] for e in values["evaluations"]}):
        return f"best_epoch {best!r} is not an evaluated epoch"
    return None
