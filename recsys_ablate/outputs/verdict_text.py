"""The words of the verdicts, shared by the console table, the HTML report and the JSON summary."""

from __future__ import annotations

from recsys_ablate.evaluation.metrics import TRADE_OFF_KS, metric
from recsys_ablate.evaluation.verdicts import (BETTER, COVERS_NOTHING, EXPLORATORY, NO_EVIDENCE, NO_VERDICT,
                                               UNDECIDED, WORSE)

EFFECTS_NOTE = ("Main effect: the mean over the runs with the factor on minus the mean with it off. "
                "Interaction A x B: half of (A's effect with B on - A's effect with B off); negative when "
                "the two overlap (carry the same information), positive when they help each other.")
# Past this many open comparisons the notes give one line for all of them.
MAX_SENTENCES = 6
ONE_SEED_NOTE = ("one seed per arm: training noise is unmeasured, so there is no verdict and the interval "
                 "covers the validation sample only; run --seeds 3 or more (5 recommended) for verdicts")


def difference_cell(comparison) -> str:
    """"+0.0152 [-0.0202, +0.0507]" ("+0.0152 (no interval)" where nothing measured one)."""
    if comparison.covers == COVERS_NOTHING:
        return f"{comparison.difference:+.4f} (no interval)"
    return f"{comparison.difference:+.4f} [{comparison.low:+.4f}, {comparison.high:+.4f}]"


def p_cells(comparison) -> tuple[str, str]:
    """(raw p, Holm-adjusted p) as table cells ("-" without a test or adjustment)."""
    if comparison.p_value is None:
        return "-", "-"
    adjusted = "-" if comparison.p_adjusted is None else f"{comparison.p_adjusted:.3f}"
    return f"{comparison.p_value:.3f}", adjusted


def equivalence_cell(comparison) -> str:
    """The Holm-adjusted TOST p ("-" without a margin or a test)."""
    p = comparison.p_equivalence_adjusted
    return "-" if p is None else f"{p:.3f}"


def trade_off_metrics(statistics) -> list:
    """The accuracy the verdicts judge, then tail accuracy, coverage and popularity at the trade-off K
    (the verdict metric's K when it is one of `TRADE_OFF_KS`, else the largest)."""
    judged = metric(statistics.metric, statistics.ks)
    k = judged.k if judged.k in TRADE_OFF_KS else max(TRADE_OFF_KS)
    accuracy = judged if judged.family in ("top", "recall", "ndcg") else metric(f"top_{max(statistics.ks)}",
                                                                                statistics.ks)
    return [accuracy] + [metric(f"{family}_{k}") for family in ("tail", "coverage", "popularity")]


def trade_off_rows(statistics) -> list:
    """(summary, [Comparison or None per `trade_off_metrics`]) of every compared summary."""
    metrics = trade_off_metrics(statistics)
    return [(s, [s.comparisons.get(m.name) for m in metrics]) for s in statistics.summaries if s.comparisons]


_SHORT = {"no evidence": "n.e.", "no verdict": "n.v.", "equivalent": "equiv.", "undecided": "undec.",
          EXPLORATORY: ""}


def short_cell(comparison) -> str:
    """"+0.0123 better": a difference and its verdict in 16 characters (the console's trade-off table); an
    exploratory metric's difference has no word."""
    if comparison is None:
        return "n/a"
    return f"{comparison.difference:+.4f} {_SHORT.get(comparison.verdict, comparison.verdict)}".rstrip()


def verdict_cell(comparison, within_margin: bool = True) -> str:
    """The verdict word ("" for an exploratory metric); with `within_margin`, "better, within ±M" when the
    equivalence test also held (a real difference smaller than the margin)."""
    if comparison.verdict == EXPLORATORY:
        return ""
    adjusted = comparison.p_equivalence_adjusted
    within = (within_margin and comparison.verdict in (BETTER, WORSE) and adjusted is not None
              and adjusted < 1 - comparison.confidence)
    return (comparison.verdict + ("*" if comparison.verdict == NO_VERDICT else "")
            + (f", within ±{comparison.margin:g}" if within else ""))


def detectable_sentence(label: str, comparison, power: float) -> str:
    """What a "no evidence" verdict could have found: the run's smallest detectable difference."""
    seeds = len(comparison.seeds)
    more = ", ".join(f"{s} seeds: ~{d:.4f}" for s, d in comparison.detectable_with.items() if s > seeds)
    return (f"{label}: {comparison.verdict}; with {seeds} seeds a difference below about "
            f"{comparison.detectable:.4f} would likely be missed ({power:.0%} power)"
            + (f" ({more})" if more else ""))


def undecided_sentence(label: str, comparison) -> str:
    """Why a comparison is "undecided", and what would likely decide it."""
    margin, seeds = comparison.margin, comparison.seeds_for_equivalence
    interval = (f"its {1 - 2 * (1 - comparison.confidence):.0%} interval [{comparison.equivalence_low:+.4f}, "
                f"{comparison.equivalence_high:+.4f}]")
    need = (f"about {seeds} seeds would likely show equivalence if there is no difference (before the "
            "family's correction)" if seeds else
            "more seeds alone would not show equivalence (the users' part of the interval is wider than the "
            "margin: more users would)")
    if abs(comparison.difference) >= margin:
        return (f"{label}: undecided at ±{margin:g}: the estimate {comparison.difference:+.4f} is itself "
                "beyond the margin; more seeds are more likely to show a difference than equivalence")
    if -margin < comparison.equivalence_low and comparison.equivalence_high < margin:
        return (f"{label}: undecided at ±{margin:g}: {interval} is within the margin, but its equivalence "
                "test does not survive Holm across the family (adjusted p "
                f"{comparison.p_equivalence_adjusted:.3f}); " + need)
    return f"{label}: undecided at ±{margin:g}: {interval} reaches beyond the margin; {need}"


def method_sentence(statistics) -> str:
    """How the verdicts were reached, for the console footer and the report."""
    confidence = f"{1 - statistics.alpha:.0%}"
    covers = (f"training seeds and {statistics.part} users, paired by seed" if statistics.reference is None
              else f"the arm's training seeds and the {statistics.part} users (the reference has no seeds)")
    equivalence = ("" if statistics.margin is None else
                   f" Equivalent: the {1 - 2 * statistics.alpha:.0%} interval within ±{statistics.margin:g} "
                   "(TOST), safe to drop or interchangeable at that margin; undecided: neither.")
    if statistics.sequential:  # --seeds auto: each round tests at the alpha it spends
        return (f"Verdict: at each round of seeds, Holm-adjusted p < the alpha that round spends (adaptive "
                f"seeds, below; {statistics.alpha:g} in all) across {statistics.family()}.{equivalence} Each "
                f"interval is at 1 - the alpha of the round its comparison stopped at (a repeated confidence "
                f"interval: over every round together at least {confidence}), for its comparison alone, and "
                f"covers {covers} (README: Adaptive seeds).")
    return (f"Verdict: Holm-adjusted p < {statistics.alpha:g} across {statistics.family()}.{equivalence} "
            f"Each interval is {confidence} for its comparison alone (not adjusted) and covers {covers} "
            "(README: How verdicts are made).")


def metric_label(statistics) -> str:
    return metric(statistics.metric, statistics.ks).label


def notes(statistics) -> list[str]:
    """Lines under the verdicts: method and family, what each "no evidence" could miss, one-seed note."""
    compared = [(s, statistics.verdict(s)) for s in statistics.summaries if statistics.verdict(s)]
    lines = []
    if any(c.p_value is not None for _, c in compared):
        lines.append(method_sentence(statistics))
    open_ones = [(s, c) for s, c in compared if c.verdict in (NO_EVIDENCE, UNDECIDED)]
    if len(open_ones) > MAX_SENTENCES:  # past a few arms, one line: the table has each one's numbers
        words = " or ".join(sorted({c.verdict for _, c in open_ones}))
        lines.append(f"{len(open_ones)} comparisons are {words}: the detectable difference of each is in the "
                     "report's table, and with a margin the seeds equivalence would need is in the JSON "
                     "(seeds_for_equivalence).")
    else:
        lines += [detectable_sentence(s.label, c, statistics.power) if c.verdict == NO_EVIDENCE
                  else undecided_sentence(s.label, c) for s, c in open_ones]
    if any(c.verdict == NO_VERDICT for _, c in compared):
        lines.append("* " + ONE_SEED_NOTE + ".")
    return lines


def part_notes(statistics) -> list[str]:
    """Which held-out part the final numbers and verdicts come from, and what chose the kept weights."""
    early = any(m.history.best_epoch is not None for s in statistics.summaries for m in s.models)
    if statistics.part == "test":
        return ["Final numbers and verdicts: the held-out test part, evaluated once with the weights that "
                "validation chose; the curves are validation."]
    if early:
        return ["No test part (see --split_fractions): the final numbers are on the validation data that "
                "also chose the kept epoch (early stopping), so they are optimistic."]
    return []


def sample_notes(statistics) -> list[str]:
    """Which evaluations were on a sample of validation users (`--eval_users`)."""
    sampled = sorted({(e.get("validation_users"), max(m.history.final_metrics.get("validation_users", 0)
                                                       for m in s.models))
                      for s in statistics.summaries for m in s.models for e in m.history.evaluations
                      if e.get("validation_users") is not None
                      and e.get("validation_users") < m.history.final_metrics.get("validation_users", 0)})
    return [f"Curves: evaluations during training used a fixed sample of {part:,} of the {whole:,} "
            "validation users (--eval_users); final numbers, intervals and verdicts use all of them."
            for part, whole in sampled]


def control_rows(statistics) -> list:
    """(summary, its control's label, Comparison against it) of every feature judged against its control."""
    return [(s, *s.control) for s in statistics.summaries if s.control is not None]


def control_notes(statistics) -> list[str]:
    """A line per feature whose gain over the baseline is not shown to exceed its shuffled control's."""
    return [f"{s.label}: its gain is not shown to exceed its shuffled control's ({c.verdict} against "
            f"{label}): what it adds may come from the tower's shape or the presence of an input, not from "
            "the feature's information" for s, label, c in control_rows(statistics)
            if c.verdict not in (BETTER, NO_VERDICT)]


def cost_cells(cost: dict) -> list[str]:
    """A feature set's cost as table cells: training s/epoch, epochs, parameters, s per evaluation, ms per
    query ("n/a" for what was not measured)."""
    forms = (("train_seconds_per_epoch", ".2f"), ("epochs_trained", ".0f"), ("parameters", ","),
             ("evaluation_seconds", ".2f"), ("query_ms", ".2f"))
    return ["n/a" if cost.get(key) is None else format(cost[key], form) for key, form in forms]


SPENDING_WORDS = {"obrien_fleming": "an O'Brien-Fleming-shaped function (little early)",
                  "pocock": "a Pocock-shaped function (evenly)"}
ROUND_HEAD = ["comparison", "seeds", "round", "alpha", "interval", "stopped"]


def rounds_sentence(statistics) -> str:
    """--seeds auto: the rounds and the alpha each spends."""
    rounds = statistics.sequential["looks"]
    return (f"Adaptive seeds: {len(rounds)} rounds of {rounds[0].seeds}..{rounds[-1].seeds} seeds, alpha "
            f"{statistics.alpha:g} spent as " + ", ".join(f"{look.alpha:.4f}" for look in rounds)
            + f" ({SPENDING_WORDS[statistics.sequential['spending']]})")


def round_rows(statistics) -> list[tuple[str, list[str]]]:
    """--seeds auto: (comparison, [seeds, round, its alpha, its interval's level, why it stopped])."""
    return [(label, [str(len(stop.comparison.seeds)), str(stop.look.round), f"{stop.look.alpha:.4f}",
                     f"{1 - stop.look.alpha:.2%}", stop.words()])
            for label, stop in statistics.sequential["stops"].items()]
