"""Interactive plotly HTML report comparing an ablation's feature sets.

One self-contained page (plotly.js embedded, opens offline): a forest plot of
each feature set's (or objective's) difference to its baseline with its
interval and verdict; the popularity trade-off (accuracy against the
popularity of the top-K lists, and each comparison on accuracy, tail
accuracy, coverage and popularity); validation top-K per evaluation for every
feature set (mean over seeds with a 95% seed band; hover shows every K;
early-stopping's kept epoch starred); a table of final metrics with the
verdict columns; the run's settings and links to the recommendation dumps.
"""

from __future__ import annotations

import html
import os
import urllib.parse

import numpy as np

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from recsys_ablate.evaluation.metrics import MEANINGS
from recsys_ablate.evaluation.verdicts import (BETTER, EQUIVALENT, EXPLORATORY, HIGHER, LOWER, NEGATIVE,
                                               NO_EVIDENCE, NO_VERDICT, POSITIVE, UNDECIDED, WORSE)
from recsys_ablate.files import write_text_atomic
from recsys_ablate.outputs import verdict_text


_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22")


_VERDICT_COLORS = {BETTER: "#2ca02c", WORSE: "#d62728", HIGHER: "#1f77b4", LOWER: "#ff7f0e",
                   EQUIVALENT: "#17becf", UNDECIDED: "#bcbd22", NO_EVIDENCE: "#7f7f7f", NO_VERDICT: "#bbbbbb",
                   POSITIVE: "#2ca02c", NEGATIVE: "#d62728", EXPLORATORY: "#9e9e9e"}


def _forest_figure(statistics) -> go.Figure | None:
    """Each feature set's difference to its baseline on the verdicts' metric, with its interval."""
    compared = [(s, statistics.verdict(s)) for s in statistics.summaries if statistics.verdict(s)]
    if not compared:
        return None
    name = verdict_text.metric_label(statistics)
    figure = go.Figure()
    for verdict, color in _VERDICT_COLORS.items():
        rows = [(s, c) for s, c in compared if c.verdict == verdict]
        if not rows:
            continue
        figure.add_trace(go.Scatter(
            x=[c.difference for _, c in rows], y=[s.label for s, _ in rows], mode="markers", name=verdict,
            marker={"color": color, "size": 11,
                    "symbol": "circle-open" if verdict == NO_VERDICT else "circle"},
            error_x={"type": "data", "symmetric": False, "array": [c.high - c.difference for _, c in rows],
                     "arrayminus": [c.difference - c.low for _, c in rows], "color": color, "thickness": 2},
            customdata=[[c.low, c.high, *verdict_text.p_cells(c), len(c.seeds),
                         f"{c.detectable:.4f}" if c.detectable is not None else "n/a (one seed)", c.covers]
                        for _, c in rows],
            hovertemplate=("<b>%{y}</b><br>difference %{x:+.4f}<br>interval [%{customdata[0]:+.4f}, "
                           "%{customdata[1]:+.4f}]<br>p %{customdata[2]}, Holm p %{customdata[3]}<br>"
                           "seeds %{customdata[4]}, detectable about %{customdata[5]}<br>"
                           "covers %{customdata[6]}<extra>" + verdict + "</extra>")))
    figure.add_vline(x=0, line={"color": "black", "width": 1})
    if statistics.margin is not None:  # the equivalence margin: "equivalent" needs the interval inside
        for edge in (-statistics.margin, statistics.margin):
            figure.add_vline(x=edge, line={"color": _VERDICT_COLORS[EQUIVALENT], "width": 1, "dash": "dot"})
    figure.update_layout(
        title=f"Difference to the baseline in {name} on {statistics.part}, "
              + ("repeated intervals (each at its round's level: Adaptive seeds)" if statistics.sequential
                 else f"{1 - statistics.alpha:.0%} intervals"),
        xaxis_title=f"{name} difference (each row minus its baseline)", template="plotly_white",
        yaxis={"autorange": "reversed", "automargin": True}, height=230 + 45 * len(compared),
        showlegend=True, legend={"title": {"text": "verdict"}, "orientation": "h", "x": 1, "xanchor": "right",
                                 "y": 1.02, "yanchor": "bottom"})
    return figure


def relative_paths(text: str) -> str:
    """Absolute paths in `text` written relative to the working folder (the report travels; a reader's
    folders are not the writer's)."""
    return " ".join(os.path.relpath(word) if os.path.isabs(word) and os.path.exists(word) else word
                    for word in text.split(" "))


def _rgba(color: str, alpha: float) -> str:
    return f"rgba({int(color[1:3], 16)},{int(color[3:5], 16)},{int(color[5:7], 16)},{alpha})"


def _curve_figure(summaries, ks, references=()) -> go.Figure:
    top = f"top_{max(ks)}"
    figure = go.Figure()
    for i, summary in enumerate(summaries):
        color = _COLORS[i % len(_COLORS)]
        epochs = [epoch for epoch, _ in summary.curve]
        means = [metrics[top][0] for _, metrics in summary.curve]
        halves = [metrics[top][1] for _, metrics in summary.curve]
        seeds = len(summary.models)
        if seeds > 1:
            # The 95% band: upper edge, then lower edge filled up to it.
            figure.add_trace(go.Scatter(x=epochs, y=[m + h for m, h in zip(means, halves)], mode="lines",
                                        line={"width": 0}, showlegend=False, hoverinfo="skip",
                                        legendgroup=summary.label))
            figure.add_trace(go.Scatter(x=epochs, y=[m - h for m, h in zip(means, halves)], mode="lines",
                                        line={"width": 0}, fill="tonexty", fillcolor=_rgba(color, 0.18),
                                        showlegend=False, hoverinfo="skip", legendgroup=summary.label))
        name = summary.label + (f" (mean of {seeds} seeds, 95% band)" if seeds > 1 else "")
        figure.add_trace(go.Scatter(
            x=epochs, y=means, mode="lines+markers", name=name, line={"color": color},
            legendgroup=summary.label,
            customdata=[[metrics[f"top_{k}"][0] for k in ks] + [metrics[top][1]]
                        for _, metrics in summary.curve],
            hovertemplate=(f"<b>{html.escape(summary.label)}</b><br>epoch %{{x}}<br>"
                           + "<br>".join(f"top-{k}: %{{customdata[{j}]:.4f}}" for j, k in enumerate(ks))
                           + (f"<br>95% half-width: %{{customdata[{len(ks)}]:.4f}}" if seeds > 1 else "")
                           + "<extra></extra>")))
        best = [(m.history.best_epoch, m.history.final_metrics[top]) for m in summary.models
                if m.history.best_epoch is not None]
        if best:
            figure.add_trace(go.Scatter(
                x=[e for e, _ in best], y=[v for _, v in best], mode="markers", name=f"{summary.label}: "
                                                                                     "kept epoch",
                marker={"symbol": "star", "size": 14, "color": color, "line": {"color": "black", "width": 1}},
                legendgroup=summary.label,
                hovertemplate="best epoch %{x} (weights "
                              "kept)<br>" + f"top-{max(ks)}" + ": %{y:.4f}<extra></extra>"))
        stops = [(m.history.last_epoch, m.history.evaluations[-1][top], m.history.stop_reason)
                 for m in summary.models if m.history.stopped_early and m.history.evaluations]
        if stops:  # where early stopping ended each seed's run, and why
            figure.add_trace(go.Scatter(
                x=[e for e, _, _ in stops], y=[v for _, v, _ in stops], mode="markers",
                name=f"{summary.label}: stopped", legendgroup=summary.label,
                customdata=[[reason or "early stopping"] for *_, reason in stops],
                marker={"symbol": "x", "size": 10, "color": color},
                hovertemplate="stopped after epoch %{x}: %{customdata[0]}<extra></extra>"))
    for reference in references:
        value = reference.history.final_metrics.get(top)
        if value is not None:  # its chosen setting's validation value: no epochs, a level to reach
            figure.add_hline(y=value, line={"dash": "dash", "color": "#555", "width": 1},
                             annotation_text=f"{reference.name} (reference)", annotation_position="top left")
    figure.update_layout(
        title=f"Validation top-{max(ks)} accuracy by epoch", xaxis_title="epoch",
        yaxis_title=f"top-{max(ks)} accuracy", hovermode="closest", template="plotly_white",
        legend={"orientation": "h", "y": -0.2})
    return figure


def _trade_off_figure(statistics) -> go.Figure | None:
    """Accuracy against the popularity of what is recommended: one point per feature set and cell
    (mean over seeds, 95% seed intervals as error bars)."""
    accuracy, tail, coverage, popularity = verdict_text.trade_off_metrics(statistics)
    points = [s for s in statistics.summaries if accuracy.name in s.final and popularity.name in s.final]
    if not points:
        return None
    figure = go.Figure()
    for i, summary in enumerate(points):
        (x, dx), (y, dy) = summary.final[popularity.name], summary.final[accuracy.name]
        extra = [summary.final.get(m.name, (float("nan"), 0))[0] for m in (tail, coverage)]
        figure.add_trace(go.Scatter(
            x=[x], y=[y], mode="markers", name=summary.label,
            # Past ten points the colours repeat, with another symbol.
            marker={"color": _COLORS[i % len(_COLORS)], "size": 12,
                    "symbol": ("circle", "square", "diamond", "cross")[i // len(_COLORS) % 4]},
            error_x={"type": "data", "array": [dx], "visible": bool(dx)},
            error_y={"type": "data", "array": [dy], "visible": bool(dy)},
            customdata=[extra],
            hovertemplate=(f"<b>{html.escape(summary.label)}</b><br>{popularity.label} %{{x:.1f}}<br>"
                           f"{accuracy.label} %{{y:.4f}}<br>{tail.label} %{{customdata[0]:.4f}}<br>"
                           f"{coverage.label} %{{customdata[1]:.4f}}<extra></extra>")))
    figure.update_layout(
        title=f"Accuracy against popularity of the top-{popularity.k} lists ({statistics.part})",
        xaxis_title=f"{popularity.label}: mean popularity percentile of the lists (50 = uniform pick)",
        yaxis_title=accuracy.label, template="plotly_white",
        # The plot keeps ~420 px whatever the number of points: the legend (one line each) goes below.
        height=480 + 22 * len(points), margin={"b": 80 + 22 * len(points)},
        legend={"orientation": "v", "yanchor": "top", "y": -0.22, "x": 0})
    return figure


def _cost_figure(statistics) -> go.Figure | None:
    """Each feature set's difference to its baseline (with its interval) against what it costs: training
    seconds per epoch and parameters."""
    points = [(s, statistics.verdict(s)) for s in statistics.summaries
              if statistics.verdict(s) is not None and s.cost.get("train_seconds_per_epoch") is not None]
    if not points:
        return None
    figure = make_subplots(rows=1, cols=2, shared_yaxes=True, horizontal_spacing=0.06,
                           subplot_titles=("training seconds per epoch", "parameters"))
    for i, (summary, c) in enumerate(points):
        color = _COLORS[i % len(_COLORS)]
        for column, key in ((1, "train_seconds_per_epoch"), (2, "parameters")):
            if summary.cost.get(key) is None:
                continue
            figure.add_trace(go.Scatter(
                x=[summary.cost[key]], y=[c.difference], mode="markers", name=summary.label,
                legendgroup=summary.label, showlegend=column == 1,
                # Past ten points the colours repeat, with another symbol (as on the trade-off plot).
                marker={"color": color, "size": 11,
                        "symbol": ("circle", "square", "diamond", "cross")[i // len(_COLORS) % 4]},
                error_y={"type": "data", "symmetric": False, "array": [c.high - c.difference],
                         "arrayminus": [c.difference - c.low]},
                hovertemplate=(f"<b>{html.escape(summary.label)}</b><br>%{{x:,.2f}}<br>difference "
                               f"%{{y:+.4f}} [{c.low:+.4f}, {c.high:+.4f}]<br>{c.verdict}<extra></extra>")),
                row=1, col=column)
    figure.add_hline(y=0, line={"color": "black", "width": 1})
    name = verdict_text.metric_label(statistics)
    figure.update_layout(title=f"Cost beside effect: {name} difference to the baseline ({statistics.part}, "
                               f"{1 - statistics.alpha:.0%} intervals) against what each feature set costs",
                         yaxis_title=f"{name} difference", template="plotly_white",
                         height=480 + 26 * len(points), margin={"b": 100 + 26 * len(points)},
                         legend={"orientation": "v", "yanchor": "top", "y": -0.22, "x": 0})
    return figure


def _cost_table(statistics) -> str:
    """Each feature set's costs (mean over its seeds)."""
    rows = [[s.label, *verdict_text.cost_cells(s.cost)] for s in statistics.summaries if s.cost]
    head = ["feature set", "training s/epoch", "epochs trained", "parameters", "s per evaluation",
            "ms per query (BruteForce, top 10)"]
    return _html_table(head, rows) if rows else ""


def _trade_off_table(statistics) -> str:
    """Each comparison on accuracy, tail accuracy, coverage and popularity: difference [CI] and verdict."""
    rows = verdict_text.trade_off_rows(statistics)
    if not rows:
        return ""
    metrics = verdict_text.trade_off_metrics(statistics)
    head = "".join(f"<th>{html.escape(m.label)}</th>" for m in metrics)
    body = "".join(
        f"<tr><td>{html.escape(s.label)}</td><td>{html.escape(s.baseline or '')}</td>" + "".join(
            "<td></td>" if c is None else
            f'<td>{html.escape(verdict_text.difference_cell(c))} <b style="color:'
            f'{_VERDICT_COLORS.get(c.verdict, "#222")}">{html.escape(verdict_text.verdict_cell(c))}</b></td>'
            for c in comparisons) + "</tr>" for s, comparisons in rows)
    judged = verdict_text.metric_label(statistics)
    meanings = "".join(f"<li><b>{html.escape(m.label)}</b>: {html.escape(MEANINGS[m.family])}</li>"
                       for m in metrics)
    return (f"<table><thead><tr><th>compared</th><th>against</th>{head}</tr></thead><tbody>{body}</tbody>"
            f"</table><ul>{meanings}</ul><p>Coverage's interval covers training seeds only (it is one number "
            f"per model, not a per-user sum); the others cover seeds and {statistics.part} users. "
            + ("Every column is exploratory here: the design's effects are the claims. " if statistics.effects
               else f"Only {html.escape(judged)} has verdict words (Holm across its family); the other "
               "columns are exploratory: estimates with unadjusted intervals, not claims (README: How "
               "verdicts are made).") + "</p>")


def _cell(value: tuple[float, float] | None) -> str:
    if value is None:
        return ""
    mean, half = value
    return f"{mean:.4f} ± {half:.4f}" if half else f"{mean:.4f}"


def _html_table(head: list[str], rows: list[list[str]], verdict_column: int | None = None) -> str:
    cells = "".join("<tr>" + "".join(
        f'<td style="color:{_VERDICT_COLORS.get(c.rstrip("*").split(",")[0], "#222")};font-weight:bold">'
        f"{html.escape(c)}</td>" if i == verdict_column else f"<td>{html.escape(c)}</td>"
        for i, c in enumerate(row)) + "</tr>" for row in rows)
    return ("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
            + f"</tr></thead><tbody>{cells}</tbody></table>")


def _verdicts_table(statistics) -> str:
    """What a reader needs first: per arm its verdict metric, the difference, the tests and the verdict."""
    judged = next(m for m in statistics.metrics if m.name == statistics.metric)
    confidence = "repeated" if statistics.sequential else f"{1 - statistics.alpha:.0%}"
    margin = statistics.margin is not None
    head = (["feature set", "seeds", "epochs", f"{judged.label} (± 95% over seeds)",
             f"Δ vs baseline [{confidence} CI]", "p", "Holm p"] + ["TOST p"] * margin
            + ["verdict", "detectable difference", "train s/epoch"])
    rows = []
    for summary in statistics.summaries:
        histories = [m.history for m in summary.models]
        versus = statistics.verdict(summary)
        seconds = [e["seconds"] for h in histories for e in h.epochs]
        epochs = sorted({h.best_epoch or h.last_epoch for h in histories})
        detectable = ""
        if versus is not None and versus.detectable is not None:
            detectable = ", ".join(f"{d:.4f} ({s} seeds)" for s, d in versus.detectable_with.items())
        tests = ([verdict_text.difference_cell(versus), *verdict_text.p_cells(versus)]
                 + [verdict_text.equivalence_cell(versus)] * margin
                 + [verdict_text.verdict_cell(versus), detectable]) if versus else [""] * (5 + margin)
        rows.append([summary.label, str(len(summary.models)), ", ".join(map(str, epochs)),
                     _cell(summary.final.get(judged.name))] + tests
                    + [f"{np.mean(seconds):.2f}" if seconds else ""])
    for reference in statistics.references:
        value = reference.history.judged_metrics.get(judged.name)
        rows.append([reference.label, "-", "-", "" if value is None else f"{value:.4f}"]
                    + [""] * (6 + margin))
    return _html_table(head, rows, head.index("verdict"))


def _rounds_table(statistics) -> str:
    """--seeds auto: where each comparison stopped, and why."""
    if not statistics.sequential:
        return ""
    return (f"<h2>Adaptive seeds</h2><p>{html.escape(verdict_text.rounds_sentence(statistics))}. Each "
            "comparison's verdict and interval are those of the round it stopped at (the interval at 1 - "
            "that round's alpha).</p>"
            + _html_table(verdict_text.ROUND_HEAD, [[label] + cells
                                                    for label, cells in verdict_text.round_rows(statistics)]))


def _metrics_table(statistics) -> str:
    """Every metric of every arm (mean ± 95% over seeds), and the saved models, behind a disclosure."""
    metrics = statistics.metrics
    head = ["feature set"] + [m.label for m in metrics]
    rows = [[s.label] + [_cell(s.final.get(m.name)) for m in metrics] for s in statistics.summaries]
    for reference in statistics.references:
        judged = reference.history.judged_metrics
        rows.append([reference.label] + [f"{judged[m.name]:.4f}" if m.name in judged else ""
                                         for m in metrics])
    folders = "".join(f"<li>{html.escape(s.label)}: "
                      + ", ".join(html.escape(os.path.basename(m.folder)) for m in s.models) + "</li>"
                      for s in statistics.summaries)
    folders += "".join(f"<li>{html.escape(r.label)}: {html.escape(os.path.basename(r.folder))}</li>"
                       for r in statistics.references)
    return (f"<details><summary>Every metric of every arm ({len(metrics)} metrics)</summary>"
            f"{_html_table(head, rows)}</details>"
            f"<details><summary>Saved models (folders under the saved-models directory)</summary>"
            f"<ul>{folders}</ul></details>")


def _design_section(statistics, include_plotlyjs: bool) -> str:
    """The design's main effects and interactions: a plot with their intervals, and a table."""
    if not statistics.effects:
        return ""
    figure = go.Figure()
    for kind in ("main effect", "interaction"):
        effects = [e for e in statistics.effects if e.kind == kind]
        figure.add_trace(go.Scatter(
            x=[e.comparison.difference for e in effects], y=[e.name for e in effects], mode="markers",
            name=kind + "s",
            marker={"size": 11, "symbol": "circle" if kind == "main effect" else "diamond",
                    "color": [_VERDICT_COLORS.get(e.comparison.verdict, "#222") for e in effects]},
            error_x={"type": "data", "symmetric": False,
                     "array": [e.comparison.high - e.comparison.difference for e in effects],
                     "arrayminus": [e.comparison.difference - e.comparison.low for e in effects]},
            customdata=[[e.comparison.verdict, *verdict_text.p_cells(e.comparison)] for e in effects],
            hovertemplate="<b>%{y}</b><br>%{x:+.4f}<br>%{customdata[0]}, p %{customdata[1]}, Holm p "
                          "%{customdata[2]}<extra></extra>"))
    figure.add_vline(x=0, line={"color": "black", "width": 1})
    name = verdict_text.metric_label(statistics)
    figure.update_layout(title=f"Main effects and two-way interactions on {name} ({statistics.part}), "
                               f"{1 - statistics.alpha:.0%} intervals", xaxis_title=f"effect on {name}",
                         template="plotly_white", height=230 + 40 * len(statistics.effects),
                         yaxis={"autorange": "reversed", "automargin": True})
    rows = [[e.name, e.kind, str(len(e.comparison.seeds)), verdict_text.difference_cell(e.comparison),
             *verdict_text.p_cells(e.comparison), verdict_text.verdict_cell(e.comparison)]
            for e in statistics.effects]
    head = ["effect", "kind", "seeds", f"estimate [{1 - statistics.alpha:.0%} CI]", "p", "Holm p", "verdict"]
    return (f"<h2>Design: {html.escape(statistics.design_words())}</h2>"
            + figure.to_html(full_html=False, include_plotlyjs=include_plotlyjs, div_id="effects")
            + _html_table(head, rows, head.index("verdict"))
            + f"<p>{html.escape(verdict_text.EFFECTS_NOTE)} Family: {html.escape(statistics.family())}.</p>")


def _controls_table(statistics) -> str:
    """Each feature against its shuffled control, and the features whose gain does not exceed it."""
    rows = [[s.label, label, verdict_text.difference_cell(c), *verdict_text.p_cells(c),
             verdict_text.verdict_cell(c)] for s, label, c in verdict_text.control_rows(statistics)]
    if not rows:
        return ""
    head = ["feature", "its control", f"Δ {verdict_text.metric_label(statistics)} "
            f"[{1 - statistics.alpha:.0%} CI]", "p", "Holm p", "verdict"]
    notes = "".join(f'<p style="color:{_VERDICT_COLORS[WORSE]}">{html.escape(n)}</p>'
                    for n in verdict_text.control_notes(statistics))
    return ("<h2>Information or presence: each feature against its shuffled control</h2>"
            "<p>The control has the feature's tower shape, parameters and value distribution, with its "
            "values permuted across items, users or ratings. These comparisons are in the verdicts' "
            "family.</p>"
            + _html_table(head, rows, head.index("verdict")) + notes)


def _heterogeneity_table(statistics) -> str:
    """The verdict metric's difference within thirds of users and items, per comparison."""
    rows = [[s.label, kind, label, verdict_text.difference_cell(c), *verdict_text.p_cells(c),
             verdict_text.verdict_cell(c)] for s in statistics.summaries for kind, label, c in s.slices]
    if not rows:
        return ""
    head = ["compared", "slice by", "slice", f"Δ {verdict_text.metric_label(statistics)} "
            f"[{1 - statistics.alpha:.0%} CI]", "p", "Holm p", "verdict"]
    family = next(c.family for s in statistics.summaries for *_, c in s.slices)
    return ("<h2>Who gains: users by activity, items by popularity</h2>"
            f"<p>Each comparison on {html.escape(verdict_text.metric_label(statistics))} ({statistics.part}) "
            "within thirds of the users (by their training ratings) and of the held-out items (by their "
            f"training ratings). Family: {html.escape(family)}.</p>"
            f"<details{' open' * (len(rows) <= 24)}><summary>{len(rows)} slices</summary>"
            + _html_table(head, rows, head.index("verdict"))
            + "</details>")


def _ranking_table(rows) -> str:
    if not rows:
        return ""
    head = ["feature set", "seeds", "epochs", "validation RMSE"]
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return ("<h2>Ranking stage (rating prediction, MLP 256-64-1, MSE)</h2><table><thead><tr>"
            + "".join(f"<th>{h}</th>" for h in head) + f"</tr></thead><tbody>{cells}</tbody></table>")


def write_report(path: str, statistics, settings: dict, links: dict, ranking_rows=()) -> str:
    """Writes the HTML report.

    Args:
      path: Output file.
      statistics: The `comparison.AblationStatistics` (summaries in ablation order, verdicts).
      settings: Name -> value lines shown under "Settings".
      links: Link text -> file path (relative to the report's folder).
      ranking_rows: Ranking-stage rows (feature set, seeds, epochs, RMSE).

    Returns:
      `path`.
    """
    forest = _forest_figure(statistics)
    forest_html = ("" if forest is None else
                   "<h2>Verdicts</h2>"
                   + forest.to_html(full_html=False, include_plotlyjs=True, div_id="forest")
                   + "".join(f"<p>{html.escape(n)}</p>" for n in verdict_text.notes(statistics)))
    trade_off = _trade_off_figure(statistics)
    # plotly.js goes into the page once, with the first figure.
    trade_off_html = ("<h2>Trade-off: accuracy, tail accuracy, coverage, popularity</h2>"
                      + ("" if trade_off is None else trade_off.to_html(
                          full_html=False, include_plotlyjs=forest is None, div_id="trade_off"))
                      + _trade_off_table(statistics))
    cost = _cost_figure(statistics)
    cost_html = ("<h2>Cost beside effect</h2>" + ("" if cost is None else cost.to_html(
        full_html=False, include_plotlyjs=False, div_id="cost")) + _cost_table(statistics)
        + "<p>Milliseconds per query: one query at a time through a BruteForce index over the whole "
          "catalogue in a traced function, timed when training ended (n/a: saved before it was timed).</p>")
    figure = _curve_figure(statistics.summaries, statistics.ks, statistics.references)
    plot = figure.to_html(full_html=False, include_plotlyjs=forest is None and trade_off is None,
                          div_id="curves", default_height="520px")
    setting_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(relative_paths(str(v)))}</td></tr>"
                           for k, v in settings.items())
    link_items = "".join(
        f'<li><a href="{html.escape(urllib.parse.quote(target))}">{html.escape(text)}</a></li>'
        for text, target in links.items())
    page = f"""<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>recsys-ablate report</title>
<style>
body {{ font-family: sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; font-size: 14px; }}
td {{ white-space: nowrap; }}
td:first-child, td:last-child {{ white-space: normal; overflow-wrap: anywhere; min-width: 12em; }}
thead th {{ background: #f0f0f0; }}
</style></head><body>
<h1>Feature ablation: {html.escape(relative_paths(str(settings.get("dataset", ""))))}</h1>
{forest_html}
{_design_section(statistics, include_plotlyjs=forest is None)}
<h2>Final {statistics.part} numbers</h2>
{"".join(f"<p>{html.escape(n)}</p>" for n in verdict_text.part_notes(statistics))}
<p>Means over seeds; ± is the 95% Student-t interval over seeds (training noise on this {statistics.part}
set). The difference to the baseline, its interval, p-values and verdict are described under
Verdicts; the detectable difference is the smallest true difference found with
{statistics.power:.0%} power at alpha {statistics.alpha:g} with this many seeds, and projected to more.</p>
{_verdicts_table(statistics)}
{_rounds_table(statistics)}
{_metrics_table(statistics)}
{_controls_table(statistics)}
{_heterogeneity_table(statistics)}
{trade_off_html}
{cost_html}
<h2>Validation curves</h2>
{plot}
{"".join(f"<p>{html.escape(n)}</p>" for n in verdict_text.sample_notes(statistics))}
{_ranking_table(ranking_rows)}
<h2>Recommendation dumps</h2>
<ul>{link_items or "<li>none (use --generate_recommendations_for_user ID)</li>"}</ul>
<h2>Settings</h2>
<table>{setting_rows}</table>
</body></html>
"""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    write_text_atomic(path, page)
    return path
