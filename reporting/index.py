"""`index.html` of the reports directory: every report newest first with its headline numbers.

Rebuilt from the `report-*.json` summaries in the folder (the folder is the source of truth),
so a deleted or pruned report disappears from the index at the next run. Reports of several
data sets (model lines) share the folder: `index.html` lists them all with their model and links
`index-<model>.html`, the same index filtered to one model (its own trends).
"""

from __future__ import annotations

import html
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path

from reporting.trends import render_trends


def _fmt(v, spec=".3f"):
    return "–" if v is None else format(v, spec)


def _realized(h: dict) -> str:
    """A report's realized metric: RMSE for a regression's window, else AUC."""
    if h.get("realized_rmse") is not None:
        return f"RMSE {_fmt(h['realized_rmse'])}"
    return _fmt(h.get("realized_auc"))


def load_summaries(folder: Path) -> list[dict]:
    out = []
    for p in Path(folder).glob("report-*.json"):
        try:
            out.append(json.loads(p.read_text()))
        except (OSError, ValueError):
            continue
    out.sort(key=lambda s: (s.get("ts", 0), s.get("id", "")), reverse=True)
    return out


STATUS_COLOR = {"ok": "#2e7d32", "drift_warn": "#ef6c00", "drift_critical": "#c62828", "insufficient_data": "#757575"}


def model_of(summary: dict) -> str:
    """The registered model a report is about (reports from before the field: the churn model)."""
    return str(summary.get("model") or summary.get("headline", {}).get("model") or "churn-xgboost")


def index_name(model: str) -> str:
    """The file of one model's index (`index-<model>.html`, characters outside [A-Za-z0-9._-] as `_`)."""
    return "index-" + re.sub(r"[^A-Za-z0-9._-]", "_", model) + ".html"


def render_index(summaries: list[dict], model: str | None = None, models: list[str] | None = None) -> str:
    """The index of `summaries` (those of `model` when given), with links to each model's own index."""
    if model is not None:
        summaries = [s for s in summaries if model_of(s) == model]
    models = models if models is not None else sorted({model_of(s) for s in summaries})
    nav = " · ".join(f'<a href="{html.escape(index_name(m))}">{html.escape(m)}</a>' for m in models)
    nav = f'<p class="models">by model: <a href="index.html">all</a> · {nav}</p>' if models else ""
    rows = []
    for s in summaries:
        h = s.get("headline", {})
        f = s.get("files", {})
        when = datetime.fromtimestamp(s.get("ts", 0), timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
        links = []
        if f.get("html"):
            links.append(f'<a href="{html.escape(f["html"])}">drift &amp; summary</a>')
        if f.get("quality_html"):
            links.append(f'<a href="{html.escape(f["quality_html"])}">quality</a>')
        if f.get("json"):
            links.append(f'<a href="{html.escape(f["json"])}">json</a>')
        status = s.get("status", "?")
        msg = h.get("message") or ""
        drifted = ", ".join(h.get("drifted_features") or []) or "–"
        rows.append(
            f'<tr class="report" id="{html.escape(s.get("id", ""))}"><td>{when}</td>'
            f"<td>{html.escape(model_of(s))}</td>"
            f'<td style="color:{STATUS_COLOR.get(status, "#000")}"><b>{html.escape(status)}</b><br><small>{html.escape(msg)}</small></td>'
            f"<td>{h.get('n', 0)} / {h.get('n_window', 0)}</td><td>{_fmt(s.get('window', {}).get('hours'), 'g')} h</td>"
            f"<td>{_fmt(h.get('max_psi'))}</td><td>{html.escape(drifted)}</td><td>{_fmt(h.get('prediction_psi'))}</td>"
            f"<td>{_realized(h)} <small>(n={h.get('n_labelled', 0)})</small></td>"
            f"<td>{html.escape(', '.join(h.get('model_versions') or []) or '–')}</td><td>{' · '.join(links)}</td></tr>"
        )
    body = "\n".join(rows) or '<tr><td colspan="11">no reports yet</td></tr>'
    # trends of one model only: lines of several data sets are not comparable
    trends = render_trends(summaries) if len({model_of(s) for s in summaries}) <= 1 else ""
    title = f"{model}: prediction reports" if model else "Prediction reports"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;vertical-align:top;font-size:14px}}th{{background:#f4f4f4}}
.trends{{display:flex;flex-wrap:wrap;gap:12px;margin:1em 0}}.trend{{margin:0}}figcaption{{font-size:13px}}</style>
</head><body><h1>{html.escape(title)}</h1>
{nav}
<p>Newest first. Drift: PSI against the training reference of the served model (warn/critical when PSI
and the KS / chi-squared test agree). Realized AUC on predictions that received an outcome.</p>
{trends}
<table><thead><tr><th>created</th><th>model</th><th>status</th><th>rows (report / window)</th><th>window</th><th>max PSI</th>
<th>drifted features</th><th>prediction PSI</th><th>realized AUC / RMSE</th><th>model version</th><th>files</th></tr></thead>
<tbody>
{body}
</tbody></table></body></html>
"""


def write_index(folder: Path) -> Path:
    """Atomically (re)write `index.html` in `folder` and one `index-<model>.html` per model."""
    folder = Path(folder)
    summaries = load_summaries(folder)
    models = sorted({model_of(s) for s in summaries})
    pages = {"index.html": render_index(summaries, models=models)}
    pages |= {index_name(m): render_index(summaries, m, models) for m in models}
    for name, text in pages.items():
        tmp = folder / f".{name}.{os.getpid()}.tmp"
        tmp.write_text(text)
        os.replace(tmp, folder / name)
    return folder / "index.html"
