"""Fixtures of the monitoring tests: the contract, a synthetic reference, settings in tmp (helpers: tests.support.monitoring)."""

from __future__ import annotations

import time

import pytest

from tests.support.monitoring import score


@pytest.fixture(autouse=True)
def _fresh_window_cache():
    """Each test starts with an empty window-summary cache (it is per process)."""
    from churnops.monitoring.window import clear_cache

    clear_cache()
    yield
    clear_cache()


@pytest.fixture(scope="session")
def contract():
    from churnops.contract import load_contract

    return load_contract("bank_churners")


@pytest.fixture(scope="session")
def reference_frame(contract):
    """Clean synthetic training reference with churn + prediction (like reference_sample.csv)."""
    from churnops.cleaning import clean_frame
    from churnops.synthetic import generate_customers

    ref = clean_frame(generate_customers(5000, seed=101), contract)
    ref["prediction"] = score(ref)
    return ref


@pytest.fixture(scope="session")
def reference(reference_frame, contract):
    from churnops.monitoring.drift import Reference

    return Reference.from_frame(reference_frame, contract, run_id="ref-run")


@pytest.fixture
def settings_factory(tmp_path):
    """Settings with the reports and state folders in tmp_path."""
    from churnops.settings import Settings

    def make(**kw):
        base = dict(
            state_dir=tmp_path / "state",
            reports_dir=tmp_path / "reports",
            report_min_rows=200,
            report_max_rows=2000,
            _env_file=None,
        )
        return Settings(**(base | kw))

    return make


@pytest.fixture
def now():
    return time.time()
