"""The ablation's outputs: console summary, HTML report, recommendation dumps.

Everything here reads an `AblationPlan` and the trained (or saved) models'
histories and ranks; nothing trains. `write_outputs` is the one entry point,
used after training and by the `report` command (from saved models alone).
"""

from __future__ import annotations

import dataclasses
import os

from recsys_ablate.evaluation.comparison import summarise
from recsys_ablate.evaluation.metrics import RMSE, mean_interval, retrieval_metrics
from recsys_ablate.outputs.recommendations import dump_recommendations
from recsys_ablate.outputs.reports import write_report


@dataclasses.dataclass
class AblationResult:
    """What an ablation produced.

    Attributes:
      trained: `TrainedModel`s in feature-set order.
      report: Path of the HTML report.
      recommendations: Paths of the recommendation dumps (JSON, CSV).
      rankers: Ranking-stage `TrainedModel`s (when enabled).
      plan: The `AblationPlan` (data, runs; `plan.with_weights` loads a model's weights).
    """

    trained: list
    report: str
    recommendations: tuple[str, ...]
    rankers: list = dataclasses.field(default_factory=list)
    plan: object = None


def write_outputs(plan, trained: list, rankers: list, log=print, dumps: bool = True) -> AblationResult:
    """Prints the summary table, writes the dumps (if asked and possible) and the HTML report.

    Args:
      plan: The ablation's `AblationPlan`.
      trained: Retrieval `TrainedModel`s (weights needed only for the dumps).
      rankers: Ranking `TrainedModel`s.
      log: Where console lines go.
      dumps: Write the recommendation dumps of `config.recommend_user`.

    Returns:
      The `AblationResult`.
    """
    config, data = plan.config, plan.data
    summaries = summarise(trained, data, config.train.ks)
    _print_summary(summaries, config.train.ks, log)
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
    report = write_report(os.path.join(config.reports_dir, f"{plan.stem}.html"), summaries, settings, links,
                          config.train.ks, ranking_rows=_ranking_rows(rankers, log))
    return AblationResult(trained, report, tuple(recommendation_files), rankers, plan)


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


def _settings(config, data, movie_lengths) -> dict:
    settings = {
        "dataset": data.source,
        "ratings": f"{len(data.user):,} ({len(data.train):,} train / {len(data.validation):,} validation)",
        "split": (f"{config.data.split}: " + ("seeded random shuffle (timestamp features can see the future)"
                                              if config.data.split == "random" else
                                              "global time cut, trained on earlier ratings")
                  + f", train fraction {config.data.train_fraction}, split seed {config.data.split_seed}"),
        "max_ratings": config.data.max_ratings or "all",
        "embedding size": (", ".join(str(e) for e in config.grid.embedding_sizes)
                           or config.model.embedding_size),
        "layer sizes": " | ".join(" ".join(map(str, sizes)) or "none (embeddings only)"
                                  for sizes in (config.grid.layer_sizes or (config.model.layer_sizes,))),
        "epochs": config.train.num_epochs,
        "evaluate every": f"{config.train.eval_every} epochs",
        "batch size": config.train.batch_size,
        "optimizer": "Adagrad, learning rate " + (", ".join(map(str, config.grid.learning_rates))
                                                   or str(config.train.learning_rate)),
        "seeds": (f"{config.train.seed}" if config.train.seeds == 1 else
                  f"{config.train.seeds} per feature set "
                  f"({config.train.seed}..{config.train.seed + config.train.seeds - 1}); "
                  "intervals are 95% Student-t over seeds"),
        "evaluation": ("each user's training movies excluded from the ranking" if config.train.exclude_seen
                       else "full catalogue, training movies included (as in the TFRS tutorials)"),
        "early stopping": (f"on {config.train.early_stopping}, patience {config.train.patience} evaluations, "
                           "best weights kept" if config.train.early_stopping else "off"),
        "comparison": "paired bootstrap over users (2,000 resamples) of per-example "
                      f"top-{max(config.train.ks)} "
                      "hits against the baseline, seeds averaged per example",
        "loss": "TFRS Retrieval's in-batch softmax (computed over each batch's distinct users and movies)",
        "metric": (f"top-K categorical accuracy over all {data.num_movies:,} movies "
                   "(FactorizedTopK semantics)"),
    }
    if movie_lengths is not None:
        settings["movie lengths"] = movie_lengths().summary()
    return settings


def _print_summary(summaries, ks, log) -> None:
    # The console shows every top-K and the per-user metrics at 10 (the report has them all).
    shown = [m for m in retrieval_metrics(ks) if m.family == "top" or m.k == 10]
    widths = [max(8, len(m.label)) for m in shown]
    width = max(len(s.label) for s in summaries)
    labels = "  ".join(f"{m.label:>{w}}" for m, w in zip(shown, widths))
    header = (f"{'feature set':<{width}}  seeds  {labels}"
              + f"  vs baseline top-{max(ks)} [95% CI] p   source")
    log("\n" + header)
    log("-" * len(header))
    for s in summaries:
        cells = "  ".join(f"{s.final[m.name][0]:{w}.4f}" if m.name in s.final else f"{'n/a':>{w}}"
                          for m, w in zip(shown, widths))
        versus = s.versus_baseline
        compared = (f"  {versus['difference']:+.4f} [{versus['low']:+.4f}, {versus['high']:+.4f}] "
                    f"p={versus['p_value']:.3f}" if versus else "  " + " " * 8)
        source = sorted({"reloaded" if m.reloaded else "trained" for m in s.models})
        log(f"{s.label:<{width}}  {len(s.models):>5}  {cells}{compared}  {'/'.join(source)}")
