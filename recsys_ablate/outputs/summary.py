"""The ablation's outputs: console summary, HTML report, recommendation dumps.

Everything here reads an `AblationPlan` and the trained (or saved) models'
histories and ranks; nothing trains. `write_outputs` is the one entry point,
used after training and by the `report` command (from saved models alone).
"""

from __future__ import annotations

import dataclasses
import json
import os
import textwrap

import numpy as np

from recsys_ablate.evaluation import sequential
from recsys_ablate.evaluation.comparison import group_key, summarise, summarise_options
from recsys_ablate.evaluation.metrics import RMSE, mean_interval
from recsys_ablate.evaluation import verdicts
from recsys_ablate.files import write_text_atomic
from recsys_ablate.outputs import verdict_text
from recsys_ablate.outputs.recommendations import dump_recommendations
from recsys_ablate.outputs.reports import write_report
from recsys_ablate.protocols import PROTOCOLS
from recsys_ablate.training.model_store import tower_parameters


@dataclasses.dataclass
class AblationResult:
    """What an ablation produced.

    Attributes:
      trained: `TrainedModel`s in feature-set order.
      report: Path of the HTML report.
      recommendations: Paths of the recommendation dumps (JSON, CSV).
      rankers: Ranking-stage `TrainedModel`s (when enabled).
      plan: The `AblationPlan` (data, runs; `plan.with_weights` loads a model's weights).
      summary_json: Path of the machine-readable summary beside the report.
      references: The fitted reference models (`training.references.FittedReference`).
    """

    trained: list
    report: str
    recommendations: tuple[str, ...]
    rankers: list = dataclasses.field(default_factory=list)
    plan: object = None
    summary_json: str | None = None
    references: list = dataclasses.field(default_factory=list)


def write_outputs(plan, trained: list, rankers: list, log=print, dumps: bool = True,
                  references=()) -> AblationResult:
    """Prints the summary table, writes the dumps (if asked and possible) and the HTML report.

    Args:
      plan: The ablation's `AblationPlan`.
      trained: Retrieval `TrainedModel`s (weights needed only for the dumps).
      rankers: Ranking `TrainedModel`s.
      log: Where console lines go.
      dumps: Write the recommendation dumps of `config.recommend_user`.
      references: Fitted reference models (`training.references.FittedReference`), judged on the same
        users: rows of their own in the tables, and the verdicts' baseline with `--compare_to`.

    Returns:
      The `AblationResult`.
    """
    config, data = plan.config, plan.data
    options = summarise_options(config, references)
    statistics = summarise(trained, data, alpha=config.compare.alpha, design=config.design,
                           levels=config.design_levels(), **options)
    if config.adaptive:  # each verdict as the round it stopped at decided it
        rounds = sequential.schedule(config.compare)
        replayed = sequential.replay(trained, data, rounds, config.train.seed,
                                     {group_key(run) for run in plan.runs}, **options)
        sequential.apply(statistics, replayed.stops, rounds, config.compare.spending)
    statistics.data_summary = data.statistics()
    statistics.references = list(references)
    summaries = statistics.summaries
    for summary in summaries:
        summary.cost = cost(summary.models)
    _print_summary(statistics, log)
    recommendation_files = ()
    if dumps and config.recommend_user is not None:
        # One model per feature set: the first seed's.
        recommendation_files = dump_recommendations(
            [plan.with_weights(s.models[0]) for s in summaries], data, config.recommend_user,
            config.reports_dir, plan.stem, log, ranking_models=[plan.with_weights(r) for r in rankers],
            candidates=config.ranking.candidates, exclude_rated=config.ranking.exclude_rated,
            labels=[s.label for s in summaries])
    settings = _settings(config, data, plan.movie_lengths if plan.uses_lengths() else None)
    links = {os.path.basename(p): os.path.basename(p) for p in recommendation_files}
    ranking_rows = _ranking_rows(rankers, log)
    report = write_report(os.path.join(config.reports_dir, f"{plan.stem}.html"), statistics, settings, links,
                          ranking_rows=ranking_rows)
    numbers = write_summary_json(os.path.join(config.reports_dir, f"{plan.stem}.json"), statistics, settings,
                                 ranking_rows)
    log(f"summary (JSON): {numbers}")
    return AblationResult(trained, report, tuple(recommendation_files), rankers, plan, numbers,
                          list(references))


def cost(models) -> dict:
    """What a feature set's models cost, mean over its seeds: training seconds per epoch, epochs trained,
    parameters (its towers' variables), seconds per evaluation, and milliseconds per query through its
    BruteForce index (None for models saved before it was timed)."""
    histories = [m.history for m in models]

    def mean(values):
        return float(np.mean(values)) if values else None
    # Every seed has the same towers: read checkpoints only until one answers.
    parameters = (tower_parameters(m.folder, m.history) for m in models)
    return {"train_seconds_per_epoch": mean([e["seconds"] for h in histories for e in h.epochs]),
            "epochs_trained": mean([h.last_epoch for h in histories]),
            "parameters": next((p for p in parameters if p is not None), None),
            "evaluation_seconds": mean([e["seconds"] for h in histories for e in h.evaluations
                                        if "seconds" in e]),
            "query_ms": mean([h.query_ms for h in histories if h.query_ms is not None])}


def _design_json(statistics) -> dict:
    design = statistics.design
    return {"kind": design.kind, "factors": list(design.factors), "resolution": design.resolution,
            "described": statistics.design_words(),
            # Each run: the factors at their high level (a feature on, a grid setting at its second value).
            "runs": [[f for f in design.factors if f in run] for run in statistics.design_runs],
            "grid_factors": {name: {"setting": f"{section}.{field}", "low": low, "high": high}
                             for name, (section, field, low, high) in statistics.levels.items()},
            "effects": [{"effect": e.name, "kind": e.kind, "factors": list(e.factors),
                         **e.comparison.to_dict()} for e in statistics.effects]}


def _rounds_json(statistics) -> dict:
    """--seeds auto: the rounds (seeds, alpha each spends) and where each comparison stopped and why."""
    rounds = statistics.sequential
    return {"spending": rounds["spending"],
            "rounds": [{"round": look.round, "seeds": look.seeds, "alpha": look.alpha}
                       for look in rounds["looks"]],
            "stops": [{"comparison": label, "round": stop.look.round, "seeds": len(stop.comparison.seeds),
                       "alpha": stop.look.alpha, "decided": stop.decided, "why": stop.words(),
                       "verdict": stop.comparison.verdict, "difference": stop.comparison.difference,
                       "low": stop.comparison.low, "high": stop.comparison.high}
                      for label, stop in rounds["stops"].items()]}


def write_summary_json(path: str, statistics, settings: dict, ranking_rows=()) -> str:
    """Writes the machine-readable summary beside the report: every model's final metrics, every comparison.

    Args:
      path: Output file (`reports/<name>.json`).
      statistics: The `AblationStatistics`.
      settings: The report's settings lines.
      ranking_rows: Ranking-stage rows (feature set, seeds, epochs, RMSE).

    Returns:
      `path`.
    """
    feature_sets = []
    for s in statistics.summaries:
        run = s.models[0].run
        feature_sets.append({
            "label": s.label, "features": list(s.features),
            "cell": {"layer_sizes": list(run.model.layer_sizes), "embedding_size": run.model.embedding_size,
                     "learning_rate": run.train.learning_rate,
                     "objective": dataclasses.asdict(run.objective)},
            "final_mean_over_seeds": {name: {"mean": mean, "half_width_95_over_seeds": half}
                                      for name, (mean, half) in s.final.items()},
            "cost": s.cost,
            "models": [{"seed": m.run.train.seed, "folder": os.path.basename(m.folder),
                        "epochs_trained": m.history.last_epoch, "kept_epoch": m.history.best_epoch,
                        "stopped_early": m.history.stopped_early, "stop_reason": m.history.stop_reason,
                        "final": m.history.judged_metrics,
                        **({"validation": m.history.final_metrics} if m.history.test_metrics is not None
                           else {})} for m in s.models],
        })
    comparisons = [{"feature_set": s.label, "baseline": s.baseline, **c.to_dict(),
                    "verdict_metric": name == statistics.metric}
                   for s in statistics.summaries for name, c in s.comparisons.items()]
    heterogeneity = [{"feature_set": s.label, "baseline": s.baseline, "slice_kind": kind, "slice": label,
                      **c.to_dict()} for s in statistics.summaries for kind, label, c in s.slices]
    controls = [{"feature_set": s.label, "control": label, **c.to_dict(),
                 "gain_exceeds_control": c.verdict == verdicts.BETTER}
                for s, label, c in verdict_text.control_rows(statistics)]
    document = {
        "verdict_metric": statistics.metric, "alpha": statistics.alpha, "power": statistics.power,
        "margin": statistics.margin,
        # Verdict words only on the verdict metric; every comparison's "family" says what its p_adjusted
        # was adjusted over ("none: exploratory" on every other metric).
        "family": statistics.family(),
        # Every block below is on this part, except the curves (and each model's "validation" block).
        "final_numbers_and_verdicts_from": statistics.part, "curves_and_choices_from": "validation",
        **({"data": statistics.data_summary} if statistics.data_summary else {}),
        "feature_sets": feature_sets, "comparisons": comparisons,
        # Each one-feature set against its shuffled control (in the verdicts' family).
        "controls": controls,
        **({"design": _design_json(statistics)} if statistics.effects else {}),
        # The verdict metric within thirds of users (training ratings) and items (training popularity).
        "heterogeneity": heterogeneity,
        **({"adaptive_seeds": _rounds_json(statistics)} if statistics.sequential else {}),
        "ranking": [dict(zip(("feature_set", "seeds", "epochs", "validation_rmse"), row))
                    for row in ranking_rows],
        "reference_models": [{"name": r.name, "folder": os.path.basename(r.folder), "chosen": r.chosen,
                              "tried_on_validation": r.tried, "chosen_at_grid_edge": r.grid_edges,
                              "fit_seconds": r.fit_seconds,
                              "final": r.history.judged_metrics, "validation": r.history.final_metrics}
                             for r in statistics.references],
        "settings": {k: str(v) for k, v in settings.items()},
    }
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_text_atomic(path, json.dumps(document, indent=1) + "\n")
    return path


def _ranking_rows(rankers, log) -> list[list[str]]:
    """Report and console rows of the ranking stage: validation RMSE per feature set."""
    groups: dict[tuple, list] = {}
    for ranker in rankers:
        groups.setdefault(ranker.run.features, []).append(ranker)
    rows = []
    for models in groups.values():
        mean, half = mean_interval([m.history.final_metrics[RMSE.name] for m in models])
        rows.append([models[0].label.replace(", ranking", ""), str(len(models)),
                     str(models[0].history.last_epoch), f"{mean:.4f} ± "
                                                        f"{half:.4f}" if half else f"{mean:.4f}"])
        log(f"ranking {rows[-1][0]}: validation RMSE {rows[-1][3]} ({rows[-1][1]} seeds)")
    return rows


def _layer_words(sizes) -> str:
    return " ".join(map(str, sizes)) or "none (embeddings only)"


def _grid_values(config, section: str, name: str, words) -> list[str]:
    """The words of a setting's values: each value of its grid dimension, or its one value."""
    values = dict(config.grid).get((section, name), (getattr(getattr(config, section), name),))
    return [words(value) for value in values]


def _settings(config, data, movie_lengths) -> dict:
    settings = {
        "dataset": data.source,
        "ratings": f"{len(data.user):,} ({len(data.train):,} train / {len(data.validation):,} validation"
                   + (f" / {len(data.test):,} test" if len(data.test) else "") + ")",
        "split": (f"{config.data.split}: " + _SPLIT_WORDS[config.data.split] + f", {_shares(config.data)}, "
                  f"split seed {config.data.split_seed}"),
        "max_ratings": config.data.max_ratings or "all",
        "embedding size": ", ".join(_grid_values(config, "model", "embedding_size", str)),
        "layer sizes": " | ".join(_grid_values(config, "model", "layer_sizes", _layer_words)),
        "epochs": config.train.num_epochs,
        "evaluate every": f"{config.train.eval_every} epochs",
        "batch size": config.train.batch_size,
        "optimizer": "Adagrad, learning rate " + ", ".join(
            _grid_values(config, "train", "learning_rate", str)),
        "seeds": (f"adaptive: {config.compare.min_seeds} per arm, then one more per round for the arms of "
                  f"undecided comparisons, up to {config.compare.max_seeds} (from seed {config.train.seed}); "
                  f"alpha spent over the rounds with {verdict_text.SPENDING_WORDS[config.compare.spending]}"
                  if config.adaptive else
                  f"{config.train.seed} (one per feature set: no verdicts)" if config.train.seeds == 1 else
                  f"{config.train.seeds} per feature set "
                  f"({config.train.seed}..{config.train.seed + config.train.seeds - 1}); "
                  "± on a metric is its 95% Student-t interval over seeds (training noise, this "
                  + ("test" if len(data.test) else "validation") + " set)"),
        "evaluation": ("each user's movies of earlier parts (training; for test also validation) excluded "
                       "from the ranking" if config.train.exclude_seen
                       else "full catalogue, training movies included (as in the TFRS tutorials)")
                      + ("; one query per user (their features, their last training rating's context)"
                         if config.train.queries == "per_user" else ""),
        "early stopping": (f"on {config.train.early_stopping}, patience {config.train.patience} evaluations, "
                           "best weights kept" if config.train.early_stopping else "off"),
        "comparison": verdicts.METHOD_SEEDS + f", alpha {config.compare.alpha:g}; verdicts on "
                      f"{config.compare.metric_name(config.train.ks)}",
        "loss": "TFRS Retrieval's in-batch softmax (computed over each batch's distinct users and movies; "
                + " | ".join(o.describe() for o in config.objectives) + ")",
        "metric": (f"top-K categorical accuracy over all {data.num_movies:,} movies "
                   "(FactorizedTopK semantics)"),
    }
    if config.protocol is not None:
        settings["protocol"] = f"{config.protocol}: {PROTOCOLS[config.protocol].source}"
    if config.data.min_rating is not None or config.data.k_core is not None:
        kept = f"ratings of at least {config.data.min_rating}" if config.data.min_rating is not None else \
            "all ratings"
        settings["filters"] = kept + (f", {config.data.k_core}-core of users and items"
                                      if config.data.k_core is not None else "")
    if movie_lengths is not None:
        settings["movie lengths"] = movie_lengths().summary()
    return settings


_SPLIT_WORDS = {"random": "seeded random shuffle (timestamp features can see the future)",
                "time": "global time cut, trained on earlier ratings",
                "user_random": "each user's ratings shuffled and cut per user",
                "user_time": "each user's latest ratings held out"}


def _shares(data) -> str:
    if data.leave_out is not None:
        return f"each user's last {data.leave_out} test, the {data.leave_out} before validation"
    if data.split_fractions is not None:
        return "shares " + " / ".join(f"{f:g}" for f in data.split_fractions)
    return f"train fraction {data.train_fraction}"


# Console lines stay within this width (long feature-set names wrap).
CONSOLE_WIDTH = 100
_LABEL_WIDTH = 27


def _wrapped(label: str) -> list[str]:
    return textwrap.wrap(label, _LABEL_WIDTH, subsequent_indent="  ", break_on_hyphens=False) or [""]


def _table(log, header: list[str], widths: list[int], rows: list[tuple[str, list[str]]]) -> None:
    """Prints rows of (label, cells): label left, wrapped; cells right-aligned."""
    line = f"{header[0]:<{_LABEL_WIDTH}}" + "".join(f"  {h:>{w}}" for h, w in zip(header[1:], widths))
    log(line)
    log("-" * len(line))
    for label, cells in rows:
        lines = _wrapped(label)
        log(f"{lines[0]:<{_LABEL_WIDTH}}" + "".join(f"  {c:>{w}}" for c, w in zip(cells, widths)))
        for more in lines[1:]:
            log(more)


def _print_summary(statistics, log) -> None:
    summaries = statistics.summaries
    # Every top-K and the per-user metrics at 10, fewer top-K if that is too wide (the report has all).
    shown = [m for m in statistics.metrics if m.family == "top" or (m.k == 10 and m.family in ("recall",
                                                                                               "ndcg"))]

    def widths(metrics) -> list[int]:  # seeds, each metric, source
        return [5] + [max(7, len(m.label)) for m in metrics] + [8]

    while (_LABEL_WIDTH + sum(2 + w for w in widths(shown)) > CONSOLE_WIDTH
           and sum(m.family == "top" for m in shown) > 1):
        shown.remove(next(m for m in shown if m.family == "top" and m.name != statistics.metric))
    log(f"\nFinal {statistics.part} metrics (mean over seeds)")
    _table(log, ["feature set", "seeds"] + [m.label for m in shown] + ["source"], widths(shown),
           [(s.label, [str(len(s.models))] + [f"{s.final[m.name][0]:.4f}" if m.name in s.final else "n/a"
                                              for m in shown] + [_source(s.models)]) for s in summaries]
           + [(r.label, ["-"] + [_value(r.history.judged_metrics, m) for m in shown]
               + ["reloaded" if r.reloaded else "fitted"]) for r in statistics.references])
    for r in statistics.references:
        edges = (f" ({', '.join(r.grid_edges)}: the edge of its grid, a value beyond might do better)"
                 if r.grid_edges else "")
        line = (f"{r.label}: {_chosen_words(r.chosen)} chosen on validation{edges}; fitted in "
                f"{r.fit_seconds:.1f} s")
        for part in textwrap.wrap(line, CONSOLE_WIDTH - 2, subsequent_indent="  ", break_on_hyphens=False):
            log("  " + part)
    for note in verdict_text.sample_notes(statistics) + verdict_text.part_notes(statistics):
        for line in textwrap.wrap(note, CONSOLE_WIDTH, subsequent_indent="  ", break_on_hyphens=False):
            log(line)
    compared = [(s, statistics.verdict(s)) for s in summaries if statistics.verdict(s)]
    if compared:
        name = verdict_text.metric_label(statistics)
        against = "the baseline" if statistics.reference is None else statistics.reference.label
        log(f"\nAgainst {against} on {name}" + (" (test)" if statistics.part == "test" else "")
            + (": exploratory, the design's effects below are the claims" if statistics.effects else ""))
        # Adaptive seeds: each interval at the level of the round its comparison stopped at (below).
        confidence = "repeated" if statistics.sequential else f"{1 - statistics.alpha:.0%}"
        margin = statistics.margin is not None
        _table(log, ["feature set", "seeds", f"difference [{confidence} CI]", "p", "Holm p"]
               + ["TOST p"] * margin + ["verdict"], [5, 26, 5, 6] + [6] * margin + [12 - 2 * margin],
               [(s.label, [str(len(c.seeds)), verdict_text.difference_cell(c), *verdict_text.p_cells(c)]
                 + [verdict_text.equivalence_cell(c)] * margin + [verdict_text.verdict_cell(c, False)])
                for s, c in compared])
        for note in verdict_text.notes(statistics):
            for line in textwrap.wrap(note, CONSOLE_WIDTH, subsequent_indent="  ", break_on_hyphens=False):
                log(line)
    _print_rounds(statistics, log)
    _print_design(statistics, log)
    _print_controls(statistics, log)
    _print_trade_off(statistics, log)
    _print_cost(statistics, log)
    models = [m for s in summaries for m in s.models]
    reloaded = sum(m.reloaded for m in models)
    log(f"{len(models)} models: {len(models) - reloaded} trained, {reloaded} reloaded.")


def _print_rounds(statistics, log) -> None:
    """With --seeds auto: the rounds' levels, and where each comparison stopped and why."""
    if not statistics.sequential:
        return
    log("")
    for line in textwrap.wrap(verdict_text.rounds_sentence(statistics), CONSOLE_WIDTH, subsequent_indent="  ",
                              break_on_hyphens=False):
        log(line)
    _table(log, verdict_text.ROUND_HEAD, [5, 5, 6, 8, 40], verdict_text.round_rows(statistics))


def _print_claims(statistics, log, title: str, first: str, rows, notes) -> None:
    """A block of decided comparisons on the verdict metric: a title, (label, Comparison) rows, notes."""
    if not rows:
        return
    part = " (test)" if statistics.part == "test" else ""
    log(f"\n{title} on {verdict_text.metric_label(statistics)}{part}")
    confidence = f"{1 - statistics.alpha:.0%}"
    _table(log, [first, "seeds", f"estimate [{confidence} CI]", "p", "Holm p", "verdict"], [5, 26, 5, 6, 12],
           [(label, [str(len(c.seeds)), verdict_text.difference_cell(c), *verdict_text.p_cells(c),
                     verdict_text.verdict_cell(c, False)]) for label, c in rows])
    for note in notes:
        for line in textwrap.wrap(note, CONSOLE_WIDTH, subsequent_indent="  ", break_on_hyphens=False):
            log(line)


def _print_design(statistics, log) -> None:
    """The design's main effects and two-way interactions on the verdict metric."""
    if statistics.effects:
        _print_claims(statistics, log, f"Design: {statistics.design_words()}; effects", "effect",
                      [(e.name, e.comparison) for e in statistics.effects], [verdict_text.EFFECTS_NOTE])


def _print_controls(statistics, log) -> None:
    """Each feature against its shuffled control (`--shuffled_controls`), on the verdict metric."""
    _print_claims(statistics, log, "Against its shuffled control", "feature",
                  [(s.label, c) for s, _, c in verdict_text.control_rows(statistics)],
                  verdict_text.control_notes(statistics))


def _print_trade_off(statistics, log) -> None:
    """Accuracy against popularity: each comparison's difference and verdict on the trade-off metrics."""
    rows = verdict_text.trade_off_rows(statistics)
    if not rows:
        return
    metrics = verdict_text.trade_off_metrics(statistics)
    log("\nTrade-off against the baseline (difference; the report and JSON have the intervals)")
    _table(log, ["feature set"] + [m.label for m in metrics], [16] * len(metrics),
           [(s.label, [verdict_text.short_cell(c) for c in comparisons]) for s, comparisons in rows])
    claims = ("Every column is exploratory (the design's effects are the claims). " if statistics.effects else
              f"Only {verdict_text.metric_label(statistics)} has verdict words (n.e. = no evidence, n.v. = "
              "no verdict: one seed); the other columns are exploratory estimates, not claims. ")
    legend = (claims + "Popularity@K: "
              "mean popularity percentile of the top-K lists (50 = a uniform pick); higher = more popular "
              "recommendations.")
    for line in textwrap.wrap(legend, CONSOLE_WIDTH, break_on_hyphens=False):
        log(line)


def _print_cost(statistics, log) -> None:
    """Each feature set's cost beside its difference on the verdict metric."""
    if not statistics.summaries or not statistics.summaries[0].cost:
        return
    log(f"\nCost beside effect (mean over seeds; Δ {verdict_text.metric_label(statistics)} against the "
        "baseline)")

    _table(log, ["feature set", "s/epoch", "epochs", "params", "eval s", "ms/query", "Δ"],
           [7, 6, 9, 6, 8, 8],
           [(s.label, verdict_text.cost_cells(s.cost)
             + [f"{statistics.verdict(s).difference:+.4f}" if statistics.verdict(s) else "-"])
            for s in statistics.summaries])


def _value(metrics: dict, m) -> str:
    return f"{metrics[m.name]:.4f}" if m.name in metrics else "n/a"


def _chosen_words(settings: dict) -> str:
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in settings.items()) or \
        "its one setting"


def _source(models) -> str:
    """"trained", "reloaded" or "trained/reloaded": where a feature set's models came from."""
    return "/".join(sorted({"reloaded" if m.reloaded else "trained" for m in models}))
