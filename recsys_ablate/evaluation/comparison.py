"""Feature-set summaries over seeds and paired comparisons with the baseline.

Reads only saved histories and per-example ranks (`ranks.npz`), so the
statistics can be recomputed, or extended, without retraining.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from recsys_ablate.evaluation.metrics import mean_interval, paired_bootstrap, retrieval_metrics


@dataclasses.dataclass
class FeatureSetSummary:
    """One feature set's models (one per seed) summarised.

    Attributes:
      label: Readable name of the feature set.
      models: Its `TrainedModel`s, one per seed.
      final: metric -> (mean over seeds, 95% half-width) of the kept weights.
      curve: [(epoch, {metric: (mean, half-width)})] over the evaluations.
      versus_baseline: Paired bootstrap of the top-max(K) hit rate against
        the baseline (None for the baseline itself or without one).
    """

    label: str
    models: list
    final: dict
    curve: list
    versus_baseline: dict | None = None

    @property
    def features(self) -> tuple[str, ...]:
        return self.models[0].run.features


def _curve(models, names) -> list:
    by_epoch: dict[int, list[dict]] = {}
    for trained in models:
        for evaluation in trained.history.evaluations:
            by_epoch.setdefault(evaluation["epoch"], []).append(evaluation)
    return [(epoch, {m: mean_interval([e[m] for e in evals if m in e]) for m in names
                     if any(m in e for e in evals)})
            for epoch, evals in sorted(by_epoch.items())]


def load_hits(trained, k: int) -> tuple[np.ndarray, np.ndarray]:
    """(validation rows, per-example hit at K) from a model's saved ranks."""
    with np.load(os.path.join(trained.folder, "ranks.npz")) as f:
        return f["rows"], (f["ranks"] < k).astype(np.float64)


def summarise(trained_models, data, ks, bootstrap_samples: int = 2000) -> list[FeatureSetSummary]:
    """Groups models by feature set (in order) and compares each with the baseline.

    Args:
      trained_models: `TrainedModel`s of the ablation.
      data: The encoded dataset (for the user of each validation example).
      ks: The evaluated K values.
      bootstrap_samples: Resamples of the paired bootstrap.

    Returns:
      One `FeatureSetSummary` per feature set.
    """
    groups: dict[tuple, list] = {}
    for trained in trained_models:
        groups.setdefault((trained.run.features,) + _cell(trained.run), []).append(trained)
    cells = {key[1:] for key in groups}
    varying = [i for i in range(3) if len({cell[i] for cell in cells}) > 1]
    names = [m.name for m in retrieval_metrics(ks)]
    summaries = []
    for (_, *cell), models in groups.items():
        finals = [m.history.final_metrics for m in models]
        final = {n: mean_interval([f[n] for f in finals]) for n in names if all(n in f for f in finals)}
        label = " | ".join([models[0].label] + [_CELL_LABELS[i](cell[i]) for i in varying])
        summaries.append(FeatureSetSummary(label, models, final, _curve(models, names)))
    k = max(ks)
    for summary in summaries:
        # Each cell is compared with the id-only model of the same architecture.
        baseline = next((b for b in summaries if not b.features and _cell(b.models[0].run) ==
                         _cell(summary.models[0].run)), None)
        if baseline is None or baseline is summary:
            continue
        rows, base_hits = _mean_hits(baseline.models, k)
        other_rows, hits = _mean_hits(summary.models, k)
        if np.array_equal(rows, other_rows):
            summary.versus_baseline = paired_bootstrap(hits, base_hits, data.user[rows],
                                                       samples=bootstrap_samples)
    return summaries


def _cell(run) -> tuple:
    return (run.model.layer_sizes, run.model.embedding_size, run.train.learning_rate)


_CELL_LABELS = (
    lambda sizes: "layers " + ("-".join(map(str, sizes)) or "none"),
    lambda size: f"embedding {size}",
    lambda rate: f"lr {rate:g}",
)


def _mean_hits(models, k):
    loaded = [load_hits(m, k) for m in models]
    return loaded[0][0], np.mean([hits for _, hits in loaded], axis=0)
