"""Small inline-SVG trend charts over the reports, for the reports index (offline: no script, no CDN).

One chart per headline series (max PSI, drifted features, prediction PSI, realized AUC, rows), oldest
report on the left. A report without a value for a series leaves a gap in that series' line.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass

WIDTH, HEIGHT, PAD = 260, 70, 6


@dataclass(frozen=True)
class Series:
    key: str
    title: str
    fmt: str


SERIES = (
    Series("max_psi", "max PSI", ".3f"),
    Series("n_drifted", "drifted features", "d"),
    Series("prediction_psi", "prediction PSI", ".3f"),
    Series("realized_auc", "realized AUC", ".3f"),
    Series("n", "rows", "d"),
)


def series_values(summaries: list[dict], key: str) -> list[float | None]:
    """The series `key` over `summaries`, oldest first; None where a report has no finite value."""
    out: list[float | None] = []
    for s in sorted(summaries, key=lambda s: (s.get("ts", 0), s.get("id", ""))):
        h = s.get("headline", {})
        v = len(h.get("drifted_features") or []) if key == "n_drifted" else h.get(key)
        out.append(float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None)
    return out


def points(values: list[float | None], width: int = WIDTH, height: int = HEIGHT) -> list[list[tuple[float, float]]]:
    """SVG coordinates of the values: one list per unbroken run (higher values are higher up)."""
    known = [v for v in values if v is not None]
    if not known:
        return []
    lo, hi = min(known), max(known)
    span = hi - lo or 1.0
    step = (width - 2 * PAD) / max(len(values) - 1, 1)
    runs: list[list[tuple[float, float]]] = [[]]
    for i, v in enumerate(values):
        if v is None:
            if runs[-1]:
                runs.append([])
            continue
        y = height - PAD - (v - lo) / span * (height - 2 * PAD) if hi > lo else height / 2
        runs[-1].append((round(PAD + i * step, 1), round(y, 1)))
    return [r for r in runs if r]


def chart(values: list[float | None], series: Series) -> str:
    """One titled SVG chart with the newest value and the range written beside it."""
    known = [v for v in values if v is not None]
    title = html.escape(series.title)
    if not known:
        return f'<figure class="trend"><figcaption>{title}: no data</figcaption></figure>'
    fmt = (lambda v: format(int(round(v)), "d")) if series.fmt == "d" else (lambda v: format(v, series.fmt))
    lines = []
    for run in points(values):
        if len(run) == 1:
            x, y = run[0]
            lines.append(f'<circle cx="{x}" cy="{y}" r="2.5" fill="#1565c0"/>')
        else:
            pts = " ".join(f"{x},{y}" for x, y in run)
            lines.append(f'<polyline points="{pts}" fill="none" stroke="#1565c0" stroke-width="1.5"/>')
    last = next(v for v in reversed(values) if v is not None)
    caption = f"{title}: <b>{fmt(last)}</b> <small>(min {fmt(min(known))}, max {fmt(max(known))}, {len(known)} reports)</small>"
    return (
        f'<figure class="trend" data-series="{series.key}"><figcaption>{caption}</figcaption>'
        f'<svg width="{WIDTH}" height="{HEIGHT}" viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{title} trend">'
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="#fafafa" stroke="#ddd"/>{"".join(lines)}</svg></figure>'
    )


def render_trends(summaries: list[dict]) -> str:
    """The row of trend charts for the index; empty when there are fewer than two reports."""
    if len(summaries) < 2:
        return ""
    charts = "".join(chart(series_values(summaries, s.key), s) for s in SERIES)
    return f'<section class="trends">{charts}</section>'
