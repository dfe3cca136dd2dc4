"""Interactive plotly HTML report comparing an ablation's curves.

One self-contained page (plotly.js embedded, opens offline): validation
top-100 accuracy per evaluation for every feature set (mean over seeds with a
95% band; hover shows every K; early-stopping's kept epoch starred), a table
of final metrics (mean ± 95% interval) with a paired comparison to the
baseline, the run's settings and links to the recommendation dumps.
"""

from __future__ import annotations

import html
import os

import numpy as np

import plotly.graph_objects as go

from recsys_ablate.files import write_text_atomic
from recsys_ablate.evaluation.metrics import retrieval_metrics


_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
           "#7f7f7f", "#bcbd22")


def _rgba(color: str, alpha: float) -> str:
    return f"rgba({int(color[1:3], 16)},{int(color[3:5], 16)},{int(color[5:7], 16)},{alpha})"


def _curve_figure(summaries, ks) -> go.Figure:
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
    figure.update_layout(
        title=f"Validation top-{max(ks)} accuracy by epoch", xaxis_title="epoch",
        yaxis_title=f"top-{max(ks)} accuracy", hovermode="closest", template="plotly_white",
        legend={"orientation": "h", "y": -0.2})
    return figure


def _cell(value: tuple[float, float] | None) -> str:
    if value is None:
        return ""
    mean, half = value
    return f"{mean:.4f} ± {half:.4f}" if half else f"{mean:.4f}"


def _metrics_table(summaries, ks) -> str:
    metrics = retrieval_metrics(ks)
    head = (["feature set", "seeds", "epochs"] + [m.label for m in metrics]
            + [f"Δ top-{max(ks)} vs baseline [95% CI]", "p-value", "train s/epoch", "saved models"])
    rows = []
    for summary in summaries:
        histories = [m.history for m in summary.models]
        versus = summary.versus_baseline
        seconds = [e["seconds"] for h in histories for e in h.epochs]
        epochs = sorted({h.best_epoch or h.last_epoch for h in histories})
        rows.append([summary.label, str(len(summary.models)), ", ".join(map(str, epochs))]
                    + [_cell(summary.final.get(m.name)) for m in metrics]
                    + ([f"{versus['difference']:+.4f} [{versus['low']:+.4f}, {versus['high']:+.4f}]",
                        f"{versus['p_value']:.3f}"] if versus else ["", ""])
                    + [f"{np.mean(seconds):.2f}" if seconds else "",
                       ", ".join(os.path.basename(m.folder) for m in summary.models)])
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return ("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
            + f"</tr></thead><tbody>{cells}</tbody></table>")


def _ranking_table(rows) -> str:
    if not rows:
        return ""
    head = ["feature set", "seeds", "epochs", "validation RMSE"]
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return ("<h2>Ranking stage (rating prediction, MLP 256-64-1, MSE)</h2><table><thead><tr>"
            + "".join(f"<th>{h}</th>" for h in head) + f"</tr></thead><tbody>{cells}</tbody></table>")


def write_report(path: str, summaries, settings: dict, links: dict, ks, ranking_rows=()) -> str:
    """Writes the HTML report.

    Args:
      path: Output file.
      summaries: `FeatureSetSummary`s in ablation order.
      settings: Name -> value lines shown under "Settings".
      links: Link text -> file path (relative to the report's folder).
      ks: The evaluated K values.
      ranking_rows: Ranking-stage rows (feature set, seeds, epochs, RMSE).

    Returns:
      `path`.
    """
    figure = _curve_figure(summaries, ks)
    plot = figure.to_html(full_html=False, include_plotlyjs=True, div_id="curves",
                          default_height="520px")
    setting_rows = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                           for k, v in settings.items())
    link_items = "".join(f'<li><a href="{html.escape(target)}">{html.escape(text)}</a></li>'
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
<h1>Feature ablation: {html.escape(str(settings.get("dataset", "")))}</h1>
{plot}
<h2>Final validation metrics</h2>
<p>Means over seeds with 95% Student-t intervals (±); the baseline comparison
is a paired bootstrap over users on the same validation examples.</p>
{_metrics_table(summaries, ks)}
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
