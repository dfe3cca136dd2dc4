"""Interactive plotly HTML report comparing an ablation's curves.

One self-contained page (plotly.js embedded, opens offline): validation
top-100 accuracy per evaluation for every feature set (hover shows every K),
a table of final metrics with the difference to the baseline, the run's
settings and links to the recommendation dumps.
"""

from __future__ import annotations

import html
import os

import plotly.graph_objects as go


def _curve_figure(trained_models, ks) -> go.Figure:
    figure = go.Figure()
    for trained in trained_models:
        evaluations = trained.history.evaluations
        figure.add_trace(go.Scatter(
            x=[e["epoch"] for e in evaluations], y=[e[f"top_{max(ks)}"] for e in evaluations],
            mode="lines+markers", name=trained.label,
            customdata=[[e[f"top_{k}"] for k in ks] for e in evaluations],
            hovertemplate=(f"<b>{html.escape(trained.label)}</b><br>epoch %{{x}}<br>"
                           + "<br>".join(f"top-{k}: %{{customdata[{i}]:.4f}}" for i, k in enumerate(ks))
                           + "<extra></extra>")))
    figure.update_layout(
        title=f"Validation top-{max(ks)} accuracy by epoch", xaxis_title="epoch",
        yaxis_title=f"top-{max(ks)} accuracy", hovermode="closest", template="plotly_white",
        legend={"orientation": "h", "y": -0.2})
    return figure


def _metrics_table(trained_models, ks) -> str:
    baseline = next((t for t in trained_models if not t.run.features), None)
    head = ["feature set", "epochs"] + [f"top-{k}" for k in ks] + [
        f"Δ top-{max(ks)} vs baseline", "train s/epoch", "eval s", "saved model"]
    rows = []
    for trained in trained_models:
        final = trained.history.final_metrics
        epochs = trained.history.epochs
        delta = ""
        if baseline is not None and trained is not baseline:
            base = baseline.history.final_metrics[f"top_{max(ks)}"]
            diff = final[f"top_{max(ks)}"] - base
            delta = f"{diff:+.4f} ({diff / base:+.1%})" if base else f"{diff:+.4f}"
        seconds = sum(e["seconds"] for e in epochs) / max(len(epochs), 1)
        rows.append([trained.label, str(trained.history.last_epoch)]
                    + [f"{final[f'top_{k}']:.4f}" for k in ks]
                    + [delta, f"{seconds:.2f}", f"{final.get('seconds', 0):.2f}",
                       os.path.basename(trained.folder)])
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
    return ("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head)
            + f"</tr></thead><tbody>{cells}</tbody></table>")


def write_report(path: str, trained_models, settings: dict, links: dict, ks) -> str:
    """Writes the HTML report.

    Args:
      path: Output file.
      trained_models: `TrainedModel`s in ablation order.
      settings: Name -> value lines shown under "Settings".
      links: Link text -> file path (relative to the report's folder).
      ks: The evaluated K values.

    Returns:
      `path`.
    """
    figure = _curve_figure(trained_models, ks)
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
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; font-size: 14px;
          max-width: 30em; overflow-wrap: anywhere; }}
thead th {{ background: #f0f0f0; }}
</style></head><body>
<h1>Feature ablation: {html.escape(str(settings.get("dataset", "")))}</h1>
{plot}
<h2>Final validation metrics</h2>
{_metrics_table(trained_models, ks)}
<h2>Recommendation dumps</h2>
<ul>{link_items or "<li>none (use --generate_recommendations_for_user ID)</li>"}</ul>
<h2>Settings</h2>
<table>{setting_rows}</table>
</body></html>
"""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(page)
    os.replace(tmp, path)
    return path
