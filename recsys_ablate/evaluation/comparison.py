"""Feature-set summaries over seeds and their verdicts against the baseline.

Reads only saved histories and per-example ranks (`ranks.npz`), so the
statistics can be recomputed, or extended, without retraining. Memory grows
with seeds x users x metrics of one comparison at a time, never with
examples x resamples.
"""

from __future__ import annotations

import dataclasses
import itertools
import os

import numpy as np

from recsys_ablate.settings import SHUFFLED, ObjectiveConfig, cell_labeller
from recsys_ablate.evaluation.metrics import (ItemPopularity, TopLists, ValidationUsers, compute,
                                             evaluated_metrics, mean_interval, metric, per_user,
                                             retrieval_metrics)
from recsys_ablate.evaluation import design as designs
from recsys_ablate.evaluation.verdicts import COVERS_BOTH, COVERS_REFERENCE, compare, decide, judge, worded

# Slices of the heterogeneity table: thirds of the held-out users by their training ratings, and thirds of
# the held-out examples by their item's training ratings (rank-based, so each holds a third).
SLICE_KINDS = ("user activity", "item popularity")
_THIRDS = ("fewest", "middle", "most")


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
      control: (its shuffled control's label, `Comparison` against it on the
        verdict metric) for a one-feature set whose control was trained
        (`--shuffled_controls`), in the verdicts' family; else None.
      cost: What its models cost: training seconds per epoch, epochs, parameters, evaluation seconds,
        milliseconds per query (`outputs.summary.costs`).
      slices: [(kind, label, Comparison)]: the verdict metric's comparison
        within each third of users by activity and of examples by item
        popularity (`SLICE_KINDS`), Holm across every slice of the run.
    """

    label: str
    models: list
    final: dict
    curve: list
    comparisons: dict = dataclasses.field(default_factory=dict)
    baseline: str | None = None
    slices: list = dataclasses.field(default_factory=list)
    control: tuple | None = None
    cost: dict = dataclasses.field(default_factory=dict)  # filled by the outputs (`outputs.summary`)

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
    margin: float | None = None
    design: object = None
    levels: dict = dataclasses.field(default_factory=dict)
    design_runs: list = dataclasses.field(default_factory=list)
    effects: list = dataclasses.field(default_factory=list)
    data_summary: dict = dataclasses.field(default_factory=dict)
    reference: object = None
    references: list = dataclasses.field(default_factory=list)
    # With --seeds auto: {"spending", "looks", "stops": label -> `sequential.Stop`} (`sequential.apply`).
    sequential: dict | None = None

    def verdict(self, summary: FeatureSetSummary):
        """The summary's `Comparison` on the verdicts' metric, or None."""
        return summary.comparisons.get(self.metric)

    def design_words(self) -> str:
        """"a 2^3 full factorial" / "a 2^(5-1) half fraction of resolution 5 (...)"."""
        k = len(self.design.factors)
        if not self.design.fractional:
            return f"a 2^{k} full factorial"
        return (f"a 2^({k}-1) half fraction of resolution {self.design.resolution} (each main effect aliased "
                f"with a {k - 1}-way interaction, each two-way interaction with a {k - 2}-way one)")

    def family(self) -> str:
        """The family the p-values are adjusted over, in words."""
        if self.effects:
            k = len(self.design.factors)
            controls = sum(s.control is not None for s in self.summaries)
            pairs = k * (k - 1) // 2
            return (f"{len(self.effects) + controls} claims: the {k} main effects and {pairs} two-way "
                    f"interaction{'s' * (pairs != 1)} of {self.design_words()} over "
                    f"{', '.join(self.design.factors)}"
                    + (", and each feature against its shuffled control" if controls else "")
                    + f" on {metric(self.metric, self.ks).label} (Holm); each run against the baseline and "
                    "every other metric are exploratory (estimates and unadjusted p, no verdict)")
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
        controls = [s for s in self.summaries if s.control is not None and s.control[1].p_value is not None]
        if controls:
            what += ", and each feature against its shuffled control"
        equivalence = (f", each also tested for equivalence within ±{self.margin:g} (TOST; both "
                       "hypotheses in one Holm family, capped at one true hypothesis per comparison)"
                       if self.margin is not None else "")
        count = len(compared) + len(controls)
        return (f"{count} comparison{'s' * (count != 1)}: {what} on "
                f"{metric(self.metric, self.ks).label}{equivalence} (Holm); every other metric is "
                "exploratory (estimates and unadjusted p, no verdict)")

    def slice_family(self, count: int) -> str:
        """The heterogeneity slices' family (`count` slices), in words."""
        return (f"{count} slices: each comparison on {metric(self.metric, self.ks).label} within thirds of "
                f"users by training ratings and of {self.part} items by training popularity (Holm across "
                "the slices, a family of its own)")

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


def summarise_options(config, references=()) -> dict:
    """`summarise`'s arguments that an `ExperimentConfig` sets, but alpha and the design's; `references`:
    the fitted reference models, one of which may be the verdicts' baseline (`--compare_to`)."""
    reference = next((r for r in references if r.name == config.compare.compare_to), None)
    return dict(ks=config.train.ks, verdict_metric=config.compare.metric_name(config.train.ks),
                power=config.compare.power, reference=reference, margin=config.compare.margin)


def summarise(trained_models, data, ks, alpha: float = 0.05, verdict_metric: str | None = None,
              power: float = 0.8, reference=None, margin: float | None = None,
              design=None, levels=None, verdicts_only: bool = False) -> AblationStatistics:
    """Groups models by feature set and cell (in order) and judges each against its baseline.

    Args:
      trained_models: `TrainedModel`s of the ablation.
      data: The encoded dataset (for the user of each validation example).
      ks: The evaluated K values.
      alpha: Family-wise level of the verdicts; intervals are 1 - alpha.
      verdict_metric: The verdicts' metric (default top-K at the largest K); every other metric is
        exploratory (`verdicts.judge`).
      power: Power of the stated detectable differences.
      reference: A fitted reference model (`training.references.FittedReference`) every feature set is
        compared with instead of its id-only baseline (`--compare_to`), or None.
      margin: Equivalence margin on the verdict metric (None: no equivalence verdicts).
      design: The `settings.DesignConfig` the feature sets came from (None, or kind None: no design): its
        main effects and interactions become the verdicts' family, each run against the baseline
        exploratory.
      levels: The design's grid factors: factor -> (section, field, low, high)
        (`ExperimentConfig.design_levels`).
      verdicts_only: Only the verdict metric's comparisons, no slices (the adaptive seeds' replays, run
        after every model finishes, need nothing else: 15 metrics and the slices cost them most of their
        time).

    Returns:
      The `AblationStatistics`.
    """
    groups: dict[tuple, list] = {}
    for trained in trained_models:
        groups.setdefault(group_key(trained.run), []).append(trained)
    label_cell = cell_labeller([key[1:] for key in groups])
    metrics = evaluated_metrics(trained_models[0].run.train) if trained_models else retrieval_metrics(ks)
    verdict_metric = verdict_metric or f"top_{max(ks)}"
    if verdicts_only:
        metrics = [m for m in metrics if m.name == verdict_metric]
    names = [m.name for m in metrics]
    summaries = []
    for (_, *cell), models in groups.items():
        models = sorted(models, key=lambda m: m.run.train.seed)
        finals = [m.history.judged_metrics for m in models]
        final = {n: mean_interval([f[n] for f in finals]) for n in names if all(n in f for f in finals)}
        label = " | ".join([models[0].label] + label_cell(tuple(cell)))
        summaries.append(FeatureSetSummary(label, models, final, _curve(models, names)))
    families: dict[str, list] = {m.name: [] for m in metrics}
    slices = []  # (summary, kind, label, Comparison)
    users = _Users(data)
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
        differences = _differences(pairs, metrics, data, users, verdict_metric)
        if differences is None:
            continue  # scored on other validation rows (not one split): nothing to pair
        summary.baseline = baseline.label
        seeds = [arm.run.train.seed for arm, _ in pairs]
        for m in metrics:
            if m.name in differences:
                comparison = compare(m.name, *differences[m.name], seeds, alpha, power, per_user=m.per_user,
                                     margin=margin if m.name == verdict_metric else None)
                if reference is not None and comparison.covers == COVERS_BOTH:
                    comparison = dataclasses.replace(comparison, covers=COVERS_REFERENCE)
                families[m.name].append((summary, comparison))
                summary.comparisons[m.name] = comparison
        slices += [(summary, kind, label, compare(verdict_metric, *sliced, seeds, alpha, power))
                   for kind, label, sliced in differences["slices"]
                   if sliced[1].sum() > 0 and not verdicts_only]
    controls = []  # (summary, its control's summary, Comparison): a feature against its shuffled control
    for summary in summaries if reference is None else ():
        control = _control(summary, summaries)
        by_seed = {m.run.train.seed: m for m in control.models} if control is not None else {}
        pairs = [(m, by_seed[m.run.train.seed]) for m in summary.models if m.run.train.seed in by_seed]
        judged = [m for m in metrics if m.name == verdict_metric]
        differences = _differences(pairs, judged, data, users) if pairs and judged else None
        if differences and verdict_metric in differences:
            seeds = [arm.run.train.seed for arm, _ in pairs]
            versus = compare(verdict_metric, *differences[verdict_metric], seeds, alpha, power,
                             per_user=judged[0].per_user, margin=margin)
            controls.append((summary, control, versus))
            summary.control = (control.label, versus)  # counted in the family's words
    part = "test" if any(m.history.test_metrics is not None for m in trained_models) else "validation"
    statistics = AblationStatistics(summaries, verdict_metric, alpha, power, tuple(ks), metrics, part,
                                    margin=margin, reference=reference, design=design)
    direction = {m.name: m.higher_is_better for m in metrics}
    if design is not None and design.kind is not None and reference is None:
        statistics.levels = levels or {}
        statistics.design_runs, statistics.effects = _design_effects(
            summaries, design, statistics.levels, metrics, verdict_metric, data, users, alpha, power)
    if statistics.effects:
        # The design's effects (and the controls) are the claims; each run against the baseline is not.
        judged = judge({name: [c for _, c in family] for name, family in families.items()}, None, alpha,
                       direction)
        primary = decide([e.comparison for e in statistics.effects] + [c for *_, c in controls], alpha, None,
                         statistics.family())
        statistics.effects = [dataclasses.replace(e, comparison=worded(c, direction[verdict_metric],
                                                                       len(e.factors) > 1))
                              for e, c in zip(statistics.effects, primary)]
        decided_controls = [worded(c, direction[verdict_metric]) for c in primary[len(statistics.effects):]]
    else:
        # The controls' comparisons are claims on the verdict metric: in its family, after the baselines'.
        tested = {name: [c for _, c in family] + ([c for *_, c in controls] if name == verdict_metric else [])
                  for name, family in families.items()}
        judged = judge(tested, verdict_metric, alpha, direction, statistics.family())
        decided_controls = judged.get(verdict_metric, [])[len(families.get(verdict_metric, [])):]
    for name, family in families.items():
        for (summary, _), comparison in zip(family, judged[name]):
            summary.comparisons[name] = comparison
    for (summary, control, _), comparison in zip(controls, decided_controls):
        summary.control = (control.label, comparison)
    # The slices: one family of their own across every comparison's thirds.
    slice_family = statistics.slice_family(len(slices))
    decided = decide([c for *_, c in slices], alpha, metric(verdict_metric, ks).higher_is_better,
                     slice_family)
    for (summary, kind, label, _), comparison in zip(slices, decided):
        summary.slices.append((kind, label, comparison))
    return statistics


def _design_effects(summaries, design, levels, metrics, verdict_metric, data, users, alpha,
                    power) -> tuple[list, list]:
    """(the design's runs, each the factors at their high level; its effects on the verdict metric) in the
    first group of cells (the cells that differ only in the design's grid factors) that has every run with
    shared seeds; ([], []) when none has, or the metric is not a per-user sum (coverage)."""
    judged = next((m for m in metrics if m.name == verdict_metric and m.per_user), None)
    if judged is None:
        return [], []
    sections = {"model": 0, "train": 1, "objective": 2}

    def on(summary) -> frozenset:  # the factors at their high level in this run
        cell = _cell(summary.models[0].run)
        return frozenset([f for f in design.feature_factors if f in summary.features]
                         + [f for f, (section, field, _, high) in levels.items()
                            if getattr(cell[sections[section]], field) == high])

    def group(summary) -> tuple:  # its cell with the grid factors at their low level
        cell = list(_cell(summary.models[0].run))
        for section, field, low, _ in levels.values():
            cell[sections[section]] = dataclasses.replace(cell[sections[section]], **{field: low})
        return tuple(cell)
    runs = [frozenset(f for f, x in zip(design.factors, bits) if x)
            for bits in itertools.product((False, True), repeat=len(design.factors))]
    if design.fractional:
        runs = [run for run in runs if len(run) % 2 == 0]
    runs.sort(key=lambda run: (len(run), [f not in run for f in design.factors]))  # as the feature sets are
    groups: dict[tuple, dict] = {}
    for summary in summaries:
        groups.setdefault(group(summary), {})[on(summary)] = summary
    for found in groups.values():
        if not all(run in found for run in runs):
            continue
        seeds = sorted(set.intersection(*({m.run.train.seed for m in found[run].models} for run in runs)))
        models = {(i, m.run.train.seed): m for i, run in enumerate(runs) for m in found[run].models}

        def sums_of(i, seed, models=models):
            rows, ranks, lists = load_scores(models[i, seed])
            return per_user(judged, ranks, users.of(rows), lists)
        return runs, designs.effects(runs, design.factors, sums_of, seeds, verdict_metric, alpha, power)
    return [], []


class _Users:
    """The held-out users of one split, computed once for every comparison scored on its rows: their
    `ValidationUsers`, and the slices of the heterogeneity table."""

    def __init__(self, data):
        self.data, self.rows = data, None

    def of(self, rows: np.ndarray) -> ValidationUsers:
        if self.rows is None or not np.array_equal(rows, self.rows):
            data, popularity = self.data, ItemPopularity.of(self.data)
            self.rows = rows
            self.users = ValidationUsers.of(data.user[rows], popularity.tail[data.movie[rows]])
            activity = np.bincount(data.user[data.train], minlength=data.num_users)[self.users.users]
            self.user_thirds = _thirds(activity, "users", "training ratings")
            self.item_thirds = [(label, mask, ValidationUsers.of(data.user[rows][mask],
                                                                 popularity.tail[data.movie[rows]][mask]))
                                for label, mask in _thirds(popularity.counts[data.movie[rows]],
                                                           "items", "training ratings")]
        return self.users


def _thirds(values: np.ndarray, what: str, unit: str) -> list[tuple[str, np.ndarray]]:
    """(label, mask) of each third of `values` by rank (ties by position): equal shares, named by range."""
    order = np.argsort(values, kind="stable")
    out = []
    for third, part in zip(_THIRDS, np.array_split(order, 3)):
        if len(part):
            mask = np.zeros(len(values), bool)
            mask[part] = True
            low, high = int(values[part].min()), int(values[part].max())
            out.append((f"{what} with the {third} {unit} ({low}-{high})", mask))
    return out


def _differences(pairs, metrics, data, users: _Users, verdict_metric: str | None = None) -> dict | None:
    """metric -> ([S, n users] arm - baseline per-user sums, [n users] weights), or None if rows differ.

    Coverage is not a per-user sum: its entry is ([S, 1] per-seed differences,
    [1]), so its comparison covers training seeds only (`verdicts.compare`).
    A metric a model did not keep (saved before it existed) is left out.
    Each model's scores are read once. "slices" holds [(kind, label,
    (differences, weights))] of the verdict metric within each third of users
    and of items (`SLICE_KINDS`); items only for a metric of examples or
    users' held-out items (not popularity or coverage, which are of lists).
    """
    rows = None
    differences, weights = {m.name: [] for m in metrics}, {}
    judged = next((m for m in metrics if m.name == verdict_metric and m.per_user), None)
    by_slice: dict[tuple, list] = {}
    for arm, base in pairs:
        sums = []
        for trained in (arm, base):
            model_rows, ranks, lists = load_scores(trained)
            if rows is None:
                rows = model_rows
                validation_users = users.of(rows)
            elif not np.array_equal(model_rows, rows):
                return None
            per_model = {m.name: per_user(m, ranks, validation_users, lists) for m in metrics}
            for m in metrics:
                if not m.per_user and lists is not None:
                    value = compute([m], ranks, data.user[rows], lists=lists)[m.name]
                    per_model[m.name] = np.array([value]), np.ones(1)
            if judged is not None and per_model[judged.name] is not None:
                whole, whole_weights = per_model[judged.name]
                per_model["slices"] = [((SLICE_KINDS[0], label), whole[mask], whole_weights[mask])
                                       for label, mask in users.user_thirds]
                if judged.family != "popularity":
                    per_model["slices"] += [((SLICE_KINDS[1], label),
                                             *per_user(judged, ranks[mask], sliced, lists))
                                            for label, mask, sliced in users.item_thirds]
            sums.append(per_model)
        for m in metrics:
            if sums[0][m.name] is None or sums[1][m.name] is None:
                differences.pop(m.name, None)
            elif m.name in differences:
                differences[m.name].append(sums[0][m.name][0] - sums[1][m.name][0])
                weights[m.name] = sums[0][m.name][1]
        for (key, arm_sums, slice_weights), (_, base_sums, _) in zip(sums[0].get("slices", ()),
                                                                     sums[1].get("slices", ())):
            by_slice.setdefault(key, [[], slice_weights])[0].append(arm_sums - base_sums)
    out = {name: (np.stack(rows_by_seed), weights[name]) for name, rows_by_seed in differences.items()}
    out["slices"] = [(kind, label, (np.stack(seeds), slice_weights))
                     for (kind, label), (seeds, slice_weights) in by_slice.items()]
    return out


def _control(summary, summaries):
    """The shuffled control of a one-feature set in the same cell (None: not trained, or not one)."""
    if len(summary.features) != 1 or summary.features[0].endswith(SHUFFLED):
        return None
    features = (summary.features[0] + SHUFFLED,)
    return next((c for c in summaries if c.features == features
                 and _cell(c.models[0].run) == _cell(summary.models[0].run)), None)


def group_key(run) -> tuple:
    """The arm a model is one seed of: (its features, its grid cell)."""
    return (run.features,) + _cell(run)


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
