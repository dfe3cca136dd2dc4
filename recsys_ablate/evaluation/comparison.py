"""Feature-set summaries over seeds and their verdicts against the baseline.

Reads only saved histories and per-example ranks (`ranks.npz`), so the
statistics can be recomputed, or extended, without retraining. Memory grows
with seeds x users x metrics of one comparison at a time, never with
examples x resamples.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np

from recsys_ablate.settings import ObjectiveConfig, cell_labeller
from recsys_ablate.evaluation.metrics import (ItemPopularity, TopLists, ValidationUsers, compute,
                                             evaluated_metrics, mean_interval, metric, per_user,
                                             retrieval_metrics)
from recsys_ablate.evaluation.verdicts import COVERS_BOTH, COVERS_REFERENCE, compare, decide


@dataclasses.dataclass
class FeatureSetSummary:
    """One feature set's models (one per seed) in one grid cell, summarised.

    Attributes:
      label: Readable name of the feature set (and of the cell, when the grid varies).
      models: Its `TrainedModel`s, one per seed.
      final: metric -> (mean over seeds, half-width of the 95% Student-t
        interval over seeds) of the kept weights.
      curve: [(epoch, {metric: (mean, half-width)})] over the evaluations.
      comparisons: metric -> `verdicts.Comparison` against the baseline of
        its cell (empty for the baseline itself or without one).
      baseline: The label of that baseline.
    """

    label: str
    models: list
    final: dict
    curve: list
    comparisons: dict = dataclasses.field(default_factory=dict)
    baseline: str | None = None

    @property
    def features(self) -> tuple[str, ...]:
        return self.models[0].run.features


@dataclasses.dataclass
class AblationStatistics:
    """Every feature set's summary and the verdicts' settings.

    Attributes:
      summaries: `FeatureSetSummary`s in ablation order.
      metric: The verdicts' metric name.
      alpha: Family-wise level.
      power: Power of the stated detectable differences.
      ks: The evaluated K values.
      metrics: The evaluated metrics (`metrics.evaluated_metrics`).
      part: The held-out part final numbers and verdicts come from: "test", or "validation" where the
        split has no test part (then it also chose the epoch under early stopping).
    """

    summaries: list
    metric: str
    alpha: float
    power: float
    ks: tuple[int, ...]
    metrics: list = dataclasses.field(default_factory=list)
    part: str = "validation"
    data_summary: dict = dataclasses.field(default_factory=dict)
    reference: object = None
    references: list = dataclasses.field(default_factory=list)

    def verdict(self, summary: FeatureSetSummary):
        """The summary's `Comparison` on the verdicts' metric, or None."""
        return summary.comparisons.get(self.metric)

    def family(self) -> str:
        """The family the p-values are adjusted over, in words."""
        compared = [s for s in self.summaries if self.verdict(s) and self.verdict(s).p_value is not None]
        features = "each feature set against the id-only baseline" + (
            " of its grid cell" if any(" | " in s.label for s in self.summaries) else "")
        if self.reference is not None:
            features = f"each feature set against the reference model {self.reference.name}"
        kinds = {False} if self.reference is not None else {
            s.models[0].run.features == self.by_label[s.baseline].features for s in compared}
        what = " and ".join(words for same_features, words in (
            (False, features),
            (True, "each objective against TFRS's defaults with the same features and architecture"))
            if same_features in kinds) or features
        return (f"{len(compared)} comparison{'s' * (len(compared) != 1)}: {what} on "
                f"{metric(self.metric, self.ks).label} (Holm, per metric)")

    @property
    def by_label(self) -> dict:
        return {s.label: s for s in self.summaries}


def _curve(models, names) -> list:
    by_epoch: dict[int, list[dict]] = {}
    for trained in models:
        for evaluation in trained.history.evaluations:
            by_epoch.setdefault(evaluation["epoch"], []).append(evaluation)
    return [(epoch, {m: mean_interval([e[m] for e in evals if m in e]) for m in names
                     if any(m in e for e in evals)})
            for epoch, evals in sorted(by_epoch.items())]


def load_ranks(trained) -> tuple[np.ndarray, np.ndarray]:
    """(validation rows, per-example rank of the true item) from a model's saved `ranks.npz`."""
    rows, ranks, _ = load_scores(trained)
    return rows, ranks


def load_scores(trained) -> tuple[np.ndarray, np.ndarray, TopLists | None]:
    """(held-out rows, per-example ranks, the users' `TopLists` or None) of what a model is judged on: its
    `test.npz` where the split has a test part, else its validation `ranks.npz`."""
    name = "test.npz" if trained.history.test_metrics is not None else "ranks.npz"
    with np.load(os.path.join(trained.folder, name)) as f:
        return f["rows"], f["ranks"], TopLists.from_arrays(f)


def summarise(trained_models, data, ks, alpha: float = 0.05, verdict_metric: str | None = None,
              power: float = 0.8, reference=None) -> AblationStatistics:
    """Groups models by feature set and cell (in order) and judges each against its baseline.

    Args:
      trained_models: `TrainedModel`s of the ablation.
      data: The encoded dataset (for the user of each validation example).
      ks: The evaluated K values.
      alpha: Family-wise level of the verdicts; intervals are 1 - alpha.
      verdict_metric: The verdicts' metric (default top-K at the largest K).
      power: Power of the stated detectable differences.
      reference: A fitted reference model (`training.references.FittedReference`) every feature set is
        compared with instead of its id-only baseline (`--compare_to`), or None.

    Returns:
      The `AblationStatistics`.
    """
    groups: dict[tuple, list] = {}
    for trained in trained_models:
        groups.setdefault((trained.run.features,) + _cell(trained.run), []).append(trained)
    label_cell = cell_labeller([key[1:] for key in groups])
    metrics = evaluated_metrics(trained_models[0].run.train) if trained_models else retrieval_metrics(ks)
    names = [m.name for m in metrics]
    summaries = []
    for (_, *cell), models in groups.items():
        models = sorted(models, key=lambda m: m.run.train.seed)
        finals = [m.history.judged_metrics for m in models]
        final = {n: mean_interval([f[n] for f in finals]) for n in names if all(n in f for f in finals)}
        label = " | ".join([models[0].label] + label_cell(tuple(cell)))
        summaries.append(FeatureSetSummary(label, models, final, _curve(models, names)))
    families: dict[str, list] = {m.name: [] for m in metrics}
    users = [None, None]  # [rows, ValidationUsers] of the last comparison: one split, computed once
    for summary in summaries:
        baseline = _baseline(summary, summaries) if reference is None else reference
        if baseline is None:
            continue
        if reference is None:
            base_by_seed = {m.run.train.seed: m for m in baseline.models}
            pairs = [(m, base_by_seed[m.run.train.seed]) for m in summary.models
                     if m.run.train.seed in base_by_seed]
        else:  # a reference has no seeds: each seed of the arm is paired with its one fit
            pairs = [(m, reference) for m in summary.models]
        if not pairs:
            continue
        differences = _differences(pairs, metrics, data, users)
        if differences is None:
            continue  # scored on other validation rows (not one split): nothing to pair
        summary.baseline = baseline.label
        seeds = [arm.run.train.seed for arm, _ in pairs]
        for m in metrics:
            if m.name in differences:
                comparison = compare(m.name, *differences[m.name], seeds, alpha, power, per_user=m.per_user)
                if reference is not None and comparison.covers == COVERS_BOTH:
                    comparison = dataclasses.replace(comparison, covers=COVERS_REFERENCE)
                families[m.name].append((summary, comparison))
    for m in metrics:
        decided = decide([c for _, c in families[m.name]], alpha, m.higher_is_better)
        for (summary, _), comparison in zip(families[m.name], decided):
            summary.comparisons[m.name] = comparison
    part = "test" if any(m.history.test_metrics is not None for m in trained_models) else "validation"
    return AblationStatistics(summaries, verdict_metric or f"top_{max(ks)}", alpha, power, tuple(ks), metrics,
                              part, reference=reference)


def _differences(pairs, metrics, data, users) -> dict | None:
    """metric -> ([S, n users] arm - baseline per-user sums, [n users] weights), or None if rows differ.

    Coverage is not a per-user sum: its entry is ([S, 1] per-seed differences,
    [1]), so its comparison covers training seeds only (`verdicts.compare`).
    A metric a model did not keep (saved before it existed) is left out.
    Each model's scores are read once. `users` holds [rows, ValidationUsers]
    from the comparison before, reused when these models were scored on the
    same validation rows.
    """
    rows = None
    differences, weights = {m.name: [] for m in metrics}, {}
    for arm, base in pairs:
        sums = []
        for trained in (arm, base):
            model_rows, ranks, lists = load_scores(trained)
            if rows is None:
                rows = model_rows
                if users[0] is None or not np.array_equal(rows, users[0]):
                    tail = ItemPopularity.of(data).tail[data.movie[rows]]
                    users[:] = [rows, ValidationUsers.of(data.user[rows], tail)]
            elif not np.array_equal(model_rows, rows):
                return None
            per_model = {m.name: per_user(m, ranks, users[1], lists) for m in metrics}
            for m in metrics:
                if not m.per_user and lists is not None:
                    value = compute([m], ranks, data.user[rows], lists=lists)[m.name]
                    per_model[m.name] = np.array([value]), np.ones(1)
            sums.append(per_model)
        for m in metrics:
            if sums[0][m.name] is None or sums[1][m.name] is None:
                differences.pop(m.name, None)
            elif m.name in differences:
                differences[m.name].append(sums[0][m.name][0] - sums[1][m.name][0])
                weights[m.name] = sums[0][m.name][1]
    return {name: (np.stack(rows_by_seed), weights[name]) for name, rows_by_seed in differences.items()}


def _cell(run) -> tuple:
    """A model's grid cell: (model, training settings but the seed, objective)."""
    return run.model, dataclasses.replace(run.train, seed=0), run.objective


def _baseline(summary, summaries):
    """What a summary is compared with, seed by seed (None: nothing).

    A cell whose objective is not TFRS's defaults is compared with the same
    features and architecture under the defaults, when the grid has them
    (what the objective does); otherwise a feature set is compared with the
    id-only model of its cell (what the features do).
    """
    run = summary.models[0].run

    def find(features, cell):
        return next((b for b in summaries if b.features == features and _cell(b.models[0].run) == cell
                     and b is not summary), None)

    versus_default = None if run.objective.is_default else find(run.features, _cell(run)[:2] + (
        ObjectiveConfig(),))
    return versus_default or (find((), _cell(run)) if run.features else None)
