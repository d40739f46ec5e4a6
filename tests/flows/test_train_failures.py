"""The training flow's failure paths and guarantees: fail fast, report, never half-register."""

from __future__ import annotations

import pandas as pd
import pytest


def _aliases(s):
    from churnops.registry import alias_version

    return {a: getattr(alias_version(s.model_name, a, s), "version", None) for a in ("champion", "challenger")}


def test_contract_violation_stops_flow_with_full_report(trained, stack_env, real_data_path, tmp_path):
    from churnops.contract import ContractViolation
    from flows.train_flow import train_flow

    bad = pd.read_csv(real_data_path).head(400)
    bad.loc[0, "Customer_Age"] = 999
    bad.loc[1, "Gender"] = "X"
    path = tmp_path / "bad.csv"
    bad.to_csv(path, index=False)
    before = _aliases(stack_env)
    with pytest.raises(ContractViolation) as err:
        train_flow(n_trials=2, data=str(path), data_profile=False)
    text = str(err.value)
    assert "customer_age" in text and "999" in text and "gender" in text and "'x'" in text
    assert _aliases(stack_env) == before


@pytest.mark.parametrize(
    ("variable", "message"),
    [
        ("MLFLOW_TRACKING_URI", r"MLflow server http://127.0.0.1:9 unreachable"),
        ("AWS_ENDPOINT_URL", r"S3 endpoint http://127.0.0.1:9 unreachable"),
    ],
)
def test_unreachable_dependency_fails_fast_naming_it(trained, stack_env, monkeypatch, variable, message):
    from flows.train_flow import PreflightError, train_flow

    monkeypatch.setenv(variable, "http://127.0.0.1:9")
    with pytest.raises(PreflightError, match=message):
        train_flow(n_trials=2, data_profile=False)


def test_failed_parity_registers_nothing(trained, stack_env, monkeypatch):
    from churnops.pipeline import ParityError
    from flows.train_flow import train_flow

    before = _aliases(stack_env)
    from churnops.registry import client

    n_versions = len(client(stack_env).search_model_versions(f"name='{stack_env.model_name}'"))
    monkeypatch.setenv("ONNX_TOLERANCE", "-1")  # impossible: every export fails the gate
    with pytest.raises(ParityError, match="not registered"):
        train_flow(n_trials=2, data_profile=False)
    monkeypatch.undo()
    assert _aliases(stack_env) == before
    assert len(client(stack_env).search_model_versions(f"name='{stack_env.model_name}'")) == n_versions
    failed = client(stack_env).search_runs(
        [client(stack_env).get_experiment_by_name(stack_env.experiment_name).experiment_id],
        filter_string="attributes.status = 'FAILED'",
    )
    assert failed, "the aborted sweep's parent run is marked FAILED"


def test_reproducible_and_alias_movement(own_model):
    """Same data + config + seed -> same best params and metrics; a new best moves only challenger
    (on this test's own model: a copy of the session's trained version as champion)."""
    from churnops.registry import client
    from flows.train_flow import train_flow

    a = train_flow(n_trials=4, data_profile=False)
    b = train_flow(n_trials=4, data_profile=False)
    assert a["model_name"] == b["model_name"] == own_model.model_name
    assert a["best_params"] == b["best_params"]
    assert a["test_metrics"] == b["test_metrics"] and a["threshold"] == b["threshold"]
    assert a["dataset_sha256"] == b["dataset_sha256"]
    ca = client(own_model).get_run(a["run_id"]).data.tags["config_hash"]
    cb = client(own_model).get_run(b["run_id"]).data.tags["config_hash"]
    assert ca == cb
    aliases = _aliases(own_model)
    assert aliases["champion"] == "1"  # the copied champion stays champion
    assert (a["version"], b["version"]) == ("2", "3")
    # b passed every rule (awaiting approval): the rules, not the registration, gave it `challenger`
    assert b["outcome"] == "awaiting approval"
    assert aliases["challenger"] == b["version"]
    assert b["aliases"] == ["candidate", "challenger"]


def test_promote_then_rollback_restores_champion_with_audit(trained, own_model):
    """Promotion keeps the old champion as alias `previous`; rollback returns to it; intent + audit records."""
    import mlflow

    from churnops.governance import promote, rollback
    from churnops.registry import alias_version, client
    from churnops.store.factory import open_store

    stack_env = own_model  # this test's own registered model: the session's champion never moves
    name = stack_env.model_name
    c = client(stack_env)
    first = alias_version(name, "champion", stack_env).version
    mlflow.set_registry_uri(stack_env.mlflow_tracking_uri)
    newest = str(mlflow.register_model(f"runs:/{trained['run_id']}/model", name).version)  # a version of its own
    assert newest != first
    assert promote(newest, "better on fresh labels", stack_env) == first
    assert alias_version(name, "champion", stack_env).version == newest
    assert alias_version(name, "previous", stack_env).version == first
    assert c.get_model_version(name, newest).tags["previous_champion"] == first
    assert rollback("complaints from sales", None, stack_env) == (newest, first)
    assert alias_version(name, "champion", stack_env).version == first
    assert alias_version(name, "previous", stack_env).version == newest
    store = open_store(stack_env)
    try:
        audit = store.find_audit(limit=3, model=name)
    finally:
        store.close()
    assert [a["action"] for a in audit] == ["rollback", "rollback-intent", "promote"]
    assert [(a["from_version"], a["to_version"]) for a in audit] == [(newest, first), (newest, first), (first, newest)]
    assert audit[0]["reason"] == "complaints from sales" and audit[2]["reason"] == "better on fresh labels"
    assert audit[0]["actor"]
    assert any(k.startswith("audit.") for k in c.get_model_version(name, newest).tags)
