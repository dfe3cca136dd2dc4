"""Training history: per-epoch loss and time, per-evaluation metrics."""

from __future__ import annotations

import dataclasses
import json
import os


@dataclasses.dataclass
class History:
    """What a training run produced, as saved in `history.json`.

    Attributes:
      epochs: [{"epoch", "loss", "seconds"}] per trained epoch.
      evaluations: [{"epoch", "top_1", ..., "top_100", "seconds"}].
      complete: True once the last epoch is trained and evaluated.
    """

    epochs: list = dataclasses.field(default_factory=list)
    evaluations: list = dataclasses.field(default_factory=list)
    complete: bool = False

    @property
    def last_epoch(self) -> int:
        return self.epochs[-1]["epoch"] if self.epochs else 0

    @property
    def final_metrics(self) -> dict:
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


def write_json_atomic(path: str, value) -> None:
    """Writes JSON to a temporary file and renames it over `path`.

    A crash mid-write never leaves a half-written file that a later run reads.
    """
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(value, f, indent=1, sort_keys=True)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
