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
    """

    epochs: list = dataclasses.field(default_factory=list)
    evaluations: list = dataclasses.field(default_factory=list)
    complete: bool = False
    best_epoch: int | None = None
    stopped_early: bool = False

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

    def save(self, path: str) -> None:
        write_json_atomic(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: str) -> "History":
        with open(path) as f:
            return cls(**json.load(f))
