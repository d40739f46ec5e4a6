"""Trend charts of the reports index: values placed where they belong, gaps kept, offline markup."""

from __future__ import annotations

import re

from reporting.index import render_index
from reporting.trends import HEIGHT, PAD, SERIES, chart, points, render_trends, series_values


def _summary(ts: float, **headline) -> dict:
    return {"id": f"r{ts}", "ts": ts, "status": "ok", "headline": headline, "window": {"hours": 3}, "files": {}}


REPORTS = [
    _summary(300, max_psi=0.40, drifted_features=["a", "b", "c"], prediction_psi=0.2, realized_auc=0.81, n=900),
    _summary(100, max_psi=0.05, drifted_features=[], prediction_psi=0.01, realized_auc=0.95, n=1000),
    _summary(200, max_psi=0.12, drifted_features=["a"], prediction_psi=None, realized_auc=None, n=950),
]


def test_series_are_oldest_first_and_count_drifted_features():
    assert series_values(REPORTS, "max_psi") == [0.05, 0.12, 0.40]
    assert series_values(REPORTS, "n_drifted") == [0.0, 1.0, 3.0]
    assert series_values(REPORTS, "realized_auc") == [0.95, None, 0.81]


def test_non_finite_and_non_numeric_values_are_gaps():
    s = [_summary(1, max_psi=float("nan")), _summary(2, max_psi="x"), _summary(3, max_psi=0.3)]
    assert series_values(s, "max_psi") == [None, None, 0.3]


def test_points_put_the_largest_value_on_top_and_the_smallest_at_the_bottom():
    (run,) = points([0.05, 0.12, 0.40])
    ys = [y for _, y in run]
    assert ys[2] == PAD  # max at the top edge
    assert ys[0] == HEIGHT - PAD  # min at the bottom edge
    assert run[0][0] < run[1][0] < run[2][0]


def test_a_missing_value_breaks_the_line():
    runs = points([0.95, None, 0.81, 0.7])
    assert [len(r) for r in runs] == [1, 2]


def test_chart_states_the_newest_value_and_range():
    html_ = chart([0.95, None, 0.81], SERIES[3])
    assert "realized AUC: <b>0.810</b>" in html_
    assert "min 0.810, max 0.950, 2 reports" in html_


def test_index_embeds_five_offline_charts():
    page = render_index(sorted(REPORTS, key=lambda s: -s["ts"]))
    assert page.count("<svg") == len(SERIES) == 5
    assert not re.search(r"<script|https?://", page)
    assert 'data-series="n"' in page and "rows: <b>900</b>" in page


def test_no_charts_for_fewer_than_two_reports():
    assert render_trends(REPORTS[:1]) == ""
    assert "<svg" not in render_index(REPORTS[:1])
