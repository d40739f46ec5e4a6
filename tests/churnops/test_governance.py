"""Promotion rules, the registered name that follows the data set, and the contract a model carries."""

from __future__ import annotations

import json

import numpy as np
import pytest
import yaml

from churnops.governance import evaluate_rules, failed, load_rules
from churnops.metrics import expected_calibration_error

RULES = {
    "min_test_auc_roc": 0.8,
    "max_calibration_error": 0.1,
    "min_improvement_auc_roc": 0.0,
    "require_onnx_parity": True,
    "require_contract": True,
    "max_latency_ms": 5.0,
}


def good(**over) -> dict:
    ev = {
        "test_auc_roc": 0.95,
        "calibration_error": 0.03,
        "onnx_parity_passed": True,
        "contract_passed": True,
        "latency_ms_p95": 1.2,
        "comparisons": [{"on": "test split", "rows": 100, "challenger_auc_roc": 0.95, "champion_auc_roc": 0.90}],
    }
    return ev | over


def test_shipped_rules_load_and_unknown_names_are_refused(tmp_path):
    rules = load_rules("binary_classification")
    assert rules["min_test_auc_roc"] == 0.8 and rules["require_onnx_parity"] is True
    bad = tmp_path / "r.yaml"
    bad.write_text(yaml.safe_dump({"rules": {"min_auc": 0.9}}))
    with pytest.raises(ValueError, match=r"unknown rule\(s\) \['min_auc'\]"):
        load_rules(path=bad)
    with pytest.raises(FileNotFoundError, match="multiclass.yaml"):
        load_rules("multiclass")


def test_a_passing_challenger_passes_every_rule():
    results = evaluate_rules(RULES, good())
    assert [r.name for r in results] == list(RULES)
    assert failed(results) == []


def test_a_failing_challenger_lists_every_failed_rule():
    ev = good(
        test_auc_roc=0.7,
        calibration_error=0.2,
        onnx_parity_passed=False,
        latency_ms_p95=9.0,
        comparisons=[
            {"on": "test split", "rows": 100, "challenger_auc_roc": 0.90, "champion_auc_roc": 0.91},
            {"on": "fresh slice", "rows": 50, "challenger_auc_roc": 0.88, "champion_auc_roc": 0.80},
        ],
    )
    bad = {r.name: r for r in failed(evaluate_rules(RULES, ev))}
    assert set(bad) == {
        "min_test_auc_roc",
        "max_calibration_error",
        "min_improvement_auc_roc",
        "require_onnx_parity",
        "max_latency_ms",
    }
    gain = bad["min_improvement_auc_roc"]
    assert gain.value == pytest.approx(-0.01) and "fresh slice" in gain.detail and "test split" in gain.detail


def test_improvement_rule_without_champion_or_unscorable_champion():
    assert not failed(evaluate_rules({"min_improvement_auc_roc": 0.01}, good(comparisons=[])))
    r = evaluate_rules({"min_improvement_auc_roc": 0.01}, good(champion_error="KeyError: 'x'"))[0]
    assert not r.passed and "could not be re-scored" in r.detail


def test_null_limits_switch_rules_off_and_unmeasured_values_fail():
    assert evaluate_rules({"min_test_auc_roc": None, "max_latency_ms": None}, good()) == []
    r = evaluate_rules({"max_latency_ms": 5.0}, good(latency_ms_p95=None))[0]
    assert not r.passed and "not measured" in r.detail


def test_expected_calibration_error_on_known_cases():
    y = np.array([0, 0, 1, 1])
    assert expected_calibration_error(y, np.array([0.0, 0.0, 1.0, 1.0])) == pytest.approx(0.0)
    # all predictions 0.75 in one bin, half positive: |0.5 - 0.75| = 0.25
    assert expected_calibration_error(y, np.full(4, 0.75)) == pytest.approx(0.25)


def test_registered_model_name_follows_the_data_set(tmp_path, monkeypatch):
    from churnops.contract import DATASETS_DIR, load_contract
    from churnops.model_line import for_dataset, model_name_for
    from churnops.settings import Settings

    monkeypatch.delenv("MODEL_NAME", raising=False)
    raw = yaml.safe_load((DATASETS_DIR / "bank_churners.yaml").read_text())
    plain = Settings(_env_file=None)
    assert plain.model_name is None  # settings never load the contract
    assert model_name_for(load_contract("bank_churners"), plain) == "churn-xgboost"
    raw["name"] = "telco_churn"
    p = tmp_path / "telco.yaml"
    p.write_text(yaml.safe_dump(raw))
    assert for_dataset(Settings(_env_file=None, dataset=str(p))).model_name == "telco-churn-xgboost"
    raw["model_name"] = "telco-model"
    p.write_text(yaml.safe_dump(raw))
    assert for_dataset(Settings(_env_file=None, dataset=str(p))).model_name == "telco-model"
    monkeypatch.setenv("MODEL_NAME", "mine")
    assert for_dataset(Settings(_env_file=None, dataset=str(p))).model_name == "mine"


def test_server_refuses_a_model_trained_with_another_contract(tmp_path, monkeypatch):
    from churnops.contract import DATASETS_DIR, load_contract
    from churnops.settings import Settings
    from serving.model import ModelLoadError, load_model
    from tests.support.serving import make_bundle

    bundle = make_bundle(tmp_path / "b", seed=3)
    meta = json.loads((bundle / "meta.json").read_text())
    meta["contract_fingerprint"] = load_contract("bank_churners").fingerprint()
    (bundle / "meta.json").write_text(json.dumps(meta))
    s = Settings(_env_file=None, state_dir=tmp_path / "st")
    assert load_model(str(bundle), "champion", s).bundle.meta["contract_fingerprint"] == meta["contract_fingerprint"]
    raw = yaml.safe_load((DATASETS_DIR / "bank_churners.yaml").read_text())
    raw["name"] = "other_churn"
    other = tmp_path / "other.yaml"
    other.write_text(yaml.safe_dump(raw))
    with pytest.raises(ModelLoadError, match=r"trained with data contract 'bank_churners'.*'other_churn'"):
        load_model(str(bundle), "champion", Settings(_env_file=None, state_dir=tmp_path / "st", dataset=str(other)))


@pytest.mark.parametrize(
    "main, env, says",
    [
        ("promote_main", {"REASON": "better"}, "make promote failed: VERSION and REASON are required"),
        ("rollback_main", {"VERSION": "3"}, "make rollback failed: REASON is required"),
    ],
)
def test_promote_and_rollback_commands_name_what_is_missing(main, env, says, monkeypatch, capsys):
    """Refused before any registry call: exit 1 and a line naming the command and the missing value."""
    from ops import registry_commands

    monkeypatch.delenv("REASON", raising=False)
    monkeypatch.delenv("VERSION", raising=False)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(SystemExit) as exit_info:
        getattr(registry_commands, main)()
    assert exit_info.value.code == 1
    assert says in capsys.readouterr().err


def test_approval_run_states_map_to_outcomes():
    """An approval run that ended without a decision: cancel -> rejected, timeout/failure -> expired;
    a run still waiting (or one that decided) is left alone."""
    from datetime import datetime, timedelta, timezone

    from prefect.states import Cancelled, Cancelling, Completed, Crashed, Failed, Paused, Running, Suspended

    from churnops.approvals import verdict

    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert verdict(Cancelled(), now=now) == ("rejected", "approval run cancelled")
    assert verdict(Cancelling(), now=now) == ("rejected", "approval run cancelled")
    failed_run = verdict(Failed(message="The flow was paused and never resumed."), now=now)
    assert failed_run == ("expired", "approval run failed: The flow was paused and never resumed.")
    assert verdict(Crashed(message="worker died"), now=now)[0] == "expired"
    assert verdict(None, found=False, now=now)[0] == "expired"
    late = Suspended(timeout_seconds=60)
    late.state_details.pause_timeout = now - timedelta(seconds=1)
    assert verdict(late, now=now)[0] == "expired"
    waiting = Paused(timeout_seconds=60)
    waiting.state_details.pause_timeout = now + timedelta(seconds=30)
    for open_or_decided in (waiting, Running(), Completed(), None):
        assert verdict(open_or_decided, now=now) is None


def test_awaiting_without_a_run_expires_after_the_timeout():
    """No approval run: expired once APPROVAL_TIMEOUT_S has passed since it began to await (the tag, else
    the version's creation), never with no timeout (APPROVAL_TIMEOUT_S=0: `make promote` decides)."""
    from datetime import datetime, timezone
    from types import SimpleNamespace

    from churnops.approvals import awaiting_since, verdict_without_run

    start = datetime(2026, 1, 1, tzinfo=timezone.utc).timestamp()
    at = lambda seconds: datetime.fromtimestamp(start + seconds, timezone.utc)  # noqa: E731
    assert verdict_without_run(start, 3600, now=at(3599)) is None
    outcome, reason = verdict_without_run(start, 3600, now=at(3601))
    assert outcome == "expired" and "2026-01-01T01:00:00+00:00" in reason
    assert verdict_without_run(start, 0, now=at(10**7)) is None
    old = SimpleNamespace(tags={"outcome": "awaiting approval"}, creation_timestamp=1_700_000_000_123)
    assert awaiting_since(old) == 1_700_000_000.123
    tagged = SimpleNamespace(tags={"awaiting_since": "1800000000.5"}, creation_timestamp=1_700_000_000_000)
    assert awaiting_since(tagged) == 1_800_000_000.5
