"""One data set, one model line, with the SHIPPED `.env.local` (not `_env_file=None`) on a real stack
(moto, MLflow, the Prefect test harness): the README's multi-data-set commands register each data set
under its own name; a MODEL_NAME of another contract is refused before the sweep and at registration;
`challenger` means "passed the rules"; two tabular lines trained and served side by side never see
each other's versions, references, windows or labels."""

from __future__ import annotations

import time

import pytest
import yaml

from tests.support.env import EnvPatch
from tests.support.paths import ROOT
from tests.support.registry import register_copy, unique_name

SHIPPED_ENV = ROOT / ".env.local"


def test_shipped_env_files_pin_no_model_name(pristine_env):
    """The shipped files leave the name to the contract: DATASET=diabetes is `diabetes-xgboost`."""
    from dotenv import dotenv_values

    from churnops.model_line import for_dataset
    from churnops.settings import Settings

    for name in (".env.local", ".env.cloud"):
        assert not dotenv_values(ROOT / name).get("MODEL_NAME"), name
    for name in ("docker-compose-registry.yml", "docker-compose-serve.yml"):
        env = yaml.safe_load((ROOT / name).read_text())["x-churnops-env"]
        assert env["MODEL_NAME"] == "${MODEL_NAME:-}" and env["DATASET"] == "${DATASET:-bank_churners}", name
    s = Settings(_env_file=SHIPPED_ENV)
    assert not s.model_name  # `MODEL_NAME=` (empty) in the file
    lines = {d: for_dataset(s, d) for d in ("bank_churners", "diabetes", "raw_digits")}
    assert {d: x.model_name for d, x in lines.items()} == {
        "bank_churners": "churn-xgboost",
        "diabetes": "diabetes-xgboost",
        "raw_digits": "raw-digits-cnn",
    }
    assert lines["diabetes"].experiment_name == "diabetes-sweep"
    assert lines["bank_churners"].training_deployment == "train-churn-model/churn-sweep"
    assert lines["diabetes"].training_deployment == "train-churn-model/diabetes"
    assert lines["bank_churners"].prediction_db_path is None  # the churn line keeps the stack's store
    assert lines["diabetes"].prediction_db_path == s.state_dir / "lines" / "diabetes" / "predictions.db"
    assert lines["diabetes"].mongodb_db == "churn_diabetes"


@pytest.fixture(scope="module")
def shipped(stack_env, prefect_harness, tmp_path_factory):
    """The shipped `.env.local` as the env file; the process environment only points at the test
    servers (as an operator's would; a bucket and state folder of this module's own, small synthetic
    data): MODEL_NAME and EXPERIMENT_NAME unset. Yields a function that sets DATASET and returns the settings."""
    from churnops.aws import ensure_bucket, ensure_streams
    from churnops.settings import get_settings

    mp = EnvPatch()  # module-wide: its changes drop the cached settings too
    mp.setenv("ENV_FILE", str(SHIPPED_ENV))
    mp.setenv("BUCKET", "lines-feature-store")
    mp.setenv("STATE_DIR", str(tmp_path_factory.mktemp("lines-state")))
    mp.setenv("SYNTHETIC_ROWS", "1500")  # the churn line: tiny synthetic customers
    for k in ("MODEL_NAME", "EXPERIMENT_NAME", "DATASET", "DATA", "RUN_ID", "MODEL_URI"):
        mp.delenv(k, raising=False)
    ensure_bucket(get_settings())
    ensure_streams(get_settings())

    def use(dataset: str):
        mp.setenv("DATASET", dataset)
        return get_settings()

    yield use
    mp.undo()


@pytest.fixture(scope="module")
def diabetes_line(shipped):
    """`make init_aws train DATASET=diabetes` (2 trials), word for word from the README: (summary, settings)."""
    from flows.train_flow import train_flow
    from ops.provision import init_aws

    s = shipped("diabetes")
    assert s.n_trials == 50 and not s.model_name  # read from the shipped file: MODEL_NAME empty there
    init_aws(s)
    return train_flow(n_trials=2, data_profile=False, dataset="diabetes"), s


@pytest.fixture(scope="module")
def churn_line(shipped):
    """`make init_aws train` of the churn contract (small synthetic data, 2 trials): (summary, settings)."""
    from flows.train_flow import train_flow
    from ops.provision import init_aws

    s = shipped("bank_churners")
    init_aws(s)
    return train_flow(n_trials=2, data_profile=False, dataset="bank_churners"), s


def test_readme_commands_register_each_data_set_under_its_own_name(diabetes_line, shipped, tmp_path):
    from churnops.contract import load_contract
    from churnops.datasets_bundled import diabetes
    from churnops.model_line import fingerprints_of, for_dataset
    from churnops.registry import alias_version, client
    from flows.train_flow import train_flow
    from ops.provision import init_aws

    summary, s = diabetes_line
    assert (summary["model_name"], summary["version"], summary["outcome"]) == ("diabetes-xgboost", "1", "promoted")
    assert set(summary["aliases"]) == {"champion", "candidate"}
    line = for_dataset(s)
    assert fingerprints_of("diabetes-xgboost", line) == {load_contract("diabetes").fingerprint(): ["1"]}
    assert client(line).get_run(summary["run_id"]).info.experiment_id == (
        client(line).get_experiment_by_name("diabetes-sweep").experiment_id
    )
    assert alias_version("diabetes-xgboost", "challenger", line) is None  # nothing passed the rules against a champion
    assert load_contract("diabetes").fingerprint() not in fingerprints_of("churn-xgboost", line)  # not under churn

    # a user's own contract file (DATASET=path/to/mine.yaml DATA=...): the name derives from its `name`
    raw = yaml.safe_load((ROOT / "churnops" / "datasets" / "diabetes.yaml").read_text())
    raw["name"] = "clinic_progress"
    raw.pop("model_name", None)
    contract_file = tmp_path / "clinic.yaml"
    contract_file.write_text(yaml.safe_dump(raw))
    data = tmp_path / "clinic.csv"
    diabetes().to_csv(data, index=False)
    mine = shipped(str(contract_file))
    init_aws(mine, data=str(data))
    out = train_flow(n_trials=2, data_profile=False, dataset=str(contract_file))
    assert (out["model_name"], out["version"], out["outcome"]) == ("clinic-progress-xgboost", "1", "promoted")
    assert fingerprints_of("clinic-progress-xgboost", for_dataset(mine)) == {
        load_contract(str(contract_file)).fingerprint(): ["1"]
    }
    assert set(fingerprints_of("diabetes-xgboost", line)) == {load_contract("diabetes").fingerprint()}


def test_model_name_of_another_contract_is_refused_before_the_sweep(diabetes_line, shipped, monkeypatch):
    from churnops import pipeline
    from churnops.contract import load_contract
    from churnops.model_line import ContractMismatch, fingerprints_of
    from flows.train_flow import train_flow

    summary, s = diabetes_line
    before = fingerprints_of("diabetes-xgboost", s)
    started = []
    monkeypatch.setattr(pipeline, "start_parent_run", lambda *a, **k: started.append(a))
    monkeypatch.setattr(pipeline, "sweep", lambda *a, **k: started.append(a))
    monkeypatch.setenv("MODEL_NAME", "diabetes-xgboost")
    with pytest.raises(ContractMismatch) as err:
        train_flow(n_trials=2, data_profile=False, dataset="bank_churners")
    text = str(err.value)
    assert load_contract("diabetes").fingerprint()[:12] in text and "(v1)" in text
    assert load_contract("bank_churners").fingerprint()[:12] in text
    assert started == []  # no run, no sweep
    assert fingerprints_of("diabetes-xgboost", s) == before  # nothing registered


def test_registration_itself_refuses_another_contract(diabetes_line):
    from churnops.contract import load_contract
    from churnops.model_line import ContractMismatch, fingerprints_of, for_dataset
    from churnops.registry import register

    summary, s = diabetes_line
    line = for_dataset(s)
    before = fingerprints_of("diabetes-xgboost", line)
    uri = f"runs:/{summary['run_id']}/model"
    with pytest.raises(ContractMismatch, match="holds versions of another data contract"):
        register(
            summary["run_id"], uri, line, tags={"contract_fingerprint": load_contract("bank_churners").fingerprint()}
        )
    with pytest.raises(ValueError, match="must name its `contract_fingerprint`"):
        register(summary["run_id"], uri, line, tags={})
    assert fingerprints_of("diabetes-xgboost", line) == before


def test_challenger_is_only_a_version_that_passed_the_rules(diabetes_line, monkeypatch):
    """A twin of the champion passes every rule: `challenger`; rejected: the alias goes, and neither
    the alias nor a reload's challenger_uri sends canary traffic to it. On a model of its own (the
    line's version 1 copied, tags and all, as champion): `diabetes-xgboost` never moves."""
    from churnops import governance as g
    from churnops.model_line import for_dataset
    from churnops.registry import alias_version, client
    from flows.train_flow import train_flow
    from serving.model import build_model_set, challenger_uri

    summary, s = diabetes_line
    name = unique_name("diabetes-xgboost-challenger")
    register_copy(s, "diabetes-xgboost", summary["version"], name)
    monkeypatch.setenv("MODEL_NAME", name)  # what the flow reads
    line = for_dataset(s.model_copy(update={"model_name": name}))
    second = train_flow(n_trials=2, data_profile=False, dataset="diabetes")
    v = second["version"]
    assert (second["model_name"], v) == (name, "2")
    assert second["outcome"] == "awaiting approval", second["rules"]
    assert second["aliases"] == ["candidate", "challenger"]
    assert alias_version(name, "challenger", line).version == v
    canary = line.model_copy(update={"canary_fraction": 0.5, "state_dir": s.state_dir})
    assert challenger_uri(canary, summary["run_id"]) == f"models:/{name}/{v}"

    g.set_outcome(line, v, g.REJECTED, reason="not today")
    assert alias_version(name, "challenger", line) is None
    assert alias_version(name, "candidate", line).version == v  # the neutral alias stays
    client(line).set_registered_model_alias(name, "challenger", v)  # put back by hand
    assert challenger_uri(canary, summary["run_id"]) is None  # its outcome is `rejected`
    ms = build_model_set(canary, f"models:/{name}/1", f"models:/{name}/{v}")
    assert ms.challenger is None and ms.champion.version == "1"


def _serve(line):
    """(test client, state) of an app serving `line`'s champion from the registry, logging to its own store."""
    from serving.app import create_app

    app = create_app(line, start_background=False)
    state = app.extensions["churn"]
    state.models.load_initial()
    state.plog.start()
    return app.test_client(), state


def test_two_tabular_lines_on_one_stack_never_cross(churn_line, diabetes_line, monkeypatch):
    """churn and diabetes, trained on one stack and served side by side: their
    versions, references, prediction windows and labels stay their own."""
    from churnops.contract import load_contract
    from churnops.model_line import fingerprints_of, for_dataset
    from churnops.monitoring.reference import served_run_id
    from churnops.monitoring.window import summarize
    from churnops.store.factory import open_store
    from flows.labels_flow import collect_labels_flow

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    _, s = diabetes_line
    churn = for_dataset(churn_line[1], "bank_churners")
    assert churn.model_name == "churn-xgboost" and churn_line[0]["model_name"] == "churn-xgboost"
    dia = for_dataset(s, "diabetes")
    fp = {d: load_contract(d).fingerprint() for d in ("bank_churners", "diabetes")}
    # versions: each name holds its own contract only
    assert set(fingerprints_of(churn.model_name, churn)) == {fp["bank_churners"]}
    assert set(fingerprints_of(dia.model_name, dia)) == {fp["diabetes"]}
    # references: each line compares with its own champion's run
    assert served_run_id(churn) == churn_line[0]["run_id"]
    assert served_run_id(dia) == diabetes_line[0]["run_id"]

    served = {}
    for name, line, payload in (
        ("churn", churn, load_contract("bank_churners").example),
        ("diabetes", dia, load_contract("diabetes").example),
    ):
        client, state = _serve(line)
        try:
            rid = f"{name}-{time.time_ns()}"
            r = client.post("/predict", json={"request_id": rid, "features": payload})
            assert r.status_code == 200, r.json
            fb = {"request_id": rid, "outcome": 1} if name == "churn" else {"request_id": rid, "value": 120.0}
            assert client.post("/feedback", json=fb).status_code in (200, 201, 202)
            assert state.models.current.champion.run_id == served_run_id(line)
            state.plog.flush()
        finally:
            state.plog.close()
            state.store.close()
        served[name] = rid

    def ids(line, what):
        store = open_store(line)
        try:
            rows = store.find_predictions() if what == "predictions" else store.find_feedback()
        finally:
            store.close()
        return {r["request_id"] for r in rows}

    # windows: each line's prediction log holds its own requests only
    assert ids(dia, "predictions") == {served["diabetes"]}
    assert ids(churn, "predictions") == {served["churn"]}
    # labels: the churn outcome never reaches the diabetes line
    assert ids(dia, "feedback") == {served["diabetes"]}
    assert ids(churn, "feedback") == {served["churn"]}
    store = open_store(dia)
    try:
        w = summarize(store, dia, load_contract("diabetes"), 24.0, fresh=True)
    finally:
        store.close()
    assert w.summary["n"] == 1 and list(w.summary["model_versions"]) == [diabetes_line[0]["version"]]
    out = collect_labels_flow(dataset="diabetes")
    assert out["report"]["labels"] == 1 and out["report"]["joined"] == 1  # its own label, not churn's


def test_deployments_of_a_data_set_default_to_it(shipped):
    """`make apply-model-train-flow apply-prediction-reporting DATASET=diabetes`: its own deployments,
    whose default parameters (what a quick run from the UI uses) name the data set."""
    from prefect.client.orchestration import get_client

    from flows.deployments import apply
    from flows.report_flow import report_flow
    from flows.retrain_flow import retrain_trigger_flow
    from flows.train_flow import train_flow

    apply("all", shipped("diabetes"))
    with get_client(sync_client=True) as client:
        names = {
            "train-churn-model/diabetes": "flows/train_flow.py:train_flow",
            "prediction-report/prediction-report-diabetes": "flows/report_flow.py:report_flow",
            "retrain-trigger/retrain-trigger-diabetes": "flows/retrain_flow.py:retrain_trigger_flow",
        }
        for name, entry in names.items():
            dep = client.read_deployment_by_name(name)
            assert dep.entrypoint == entry and dep.parameters == {"dataset": "diabetes"}, name
    for f in (train_flow, report_flow, retrain_trigger_flow):  # a quick run's parameters fit each flow
        f.validate_parameters({"dataset": "diabetes"})


@pytest.fixture(scope="module")
def image_line(shipped):
    """`DATASET=raw_digits` (`make demo-image`'s flow, tiny: 200 digits, 1 trial, 1 epoch) with the shipped
    `.env.local`: (summary, settings, versions of `raw-digits-cnn` before it: other modules may train it)."""
    pytest.importorskip("torch", reason="the image extra is not installed (pip install -e .[image])")
    pytest.importorskip("rawpy", reason="the image extra is not installed (pip install -e .[image])")
    from churnops.model_line import fingerprints_of, for_dataset
    from flows.image_train_flow import image_train_flow

    s = shipped("raw_digits")
    assert s.n_trials == 50 and not s.model_name  # read from the shipped file: MODEL_NAME empty there
    before = fingerprints_of("raw-digits-cnn", for_dataset(s))
    return image_train_flow(n_trials=1, limit=200, max_epochs=1, approval_timeout_s=0), s, before


def test_readme_image_command_registers_raw_digits_cnn(image_line):
    """The image line is registered as `raw-digits-cnn` under the raw_digits contract only, its aliases and
    outcome on the registry agreeing with what the run reported."""
    from churnops.contract import load_any_contract
    from churnops.model_line import fingerprints_of, for_dataset
    from churnops.registry import alias_version, client

    out, s, before = image_line
    line = for_dataset(s)
    v = str(out["version"])
    assert out["model_name"] == "raw-digits-cnn" and v not in sum(before.values(), [])
    fp = load_any_contract("raw_digits").fingerprint()
    assert set(fingerprints_of("raw-digits-cnn", line)) == {fp}  # one contract under the name
    assert v in fingerprints_of("raw-digits-cnn", line)[fp]
    assert fp not in fingerprints_of("churn-xgboost", line) and fp not in fingerprints_of("diabetes-xgboost", line)
    mv = client(line).get_model_version("raw-digits-cnn", v)
    assert mv.tags["outcome"] == out["outcome"]
    champion = alias_version("raw-digits-cnn", "champion", line)
    challenger = alias_version("raw-digits-cnn", "challenger", line)
    if not before:  # the first of its name: champion at once, never `challenger`
        assert (v, out["outcome"], champion.version) == ("1", "promoted", "1") and challenger is None
        assert "champion" in out["aliases"] and "challenger" not in out["aliases"]
    elif out["outcome"] == "promoted":  # passed the rules, approved automatically (AUTO_APPROVE)
        assert champion.version == v and (challenger is None or challenger.version != v)
    elif out["outcome"] == "awaiting approval":  # passed the rules against the session's champion
        assert challenger.version == v and champion.version != v
    else:  # blocked: the rules refused it, so no canary may reach it
        assert out["outcome"] == "blocked" and (challenger is None or challenger.version != v)


def test_three_lines_on_one_stack_never_cross(churn_line, diabetes_line, image_line, monkeypatch):
    """churn, diabetes and the raw_digits image line, trained and served side by side on one stack:
    registered names, aliases, experiments, prediction logs, windows, labels and `/audit?model=` stay
    each line's own."""
    from churnops.contract import load_any_contract
    from churnops.model_line import fingerprints_of, for_dataset
    from churnops.monitoring.window import summarize
    from churnops.registry import alias_version, client
    from churnops.store.factory import open_store
    from flows.image_train_flow import SAMPLE_IMAGE

    monkeypatch.delenv("PROMETHEUS_MULTIPROC_DIR", raising=False)
    s = diabetes_line[1]
    names = {"bank_churners": "churn-xgboost", "diabetes": "diabetes-xgboost", "raw_digits": "raw-digits-cnn"}
    lines = {d: for_dataset(s, d) for d in names}
    runs = {"bank_churners": churn_line[0], "diabetes": diabetes_line[0], "raw_digits": image_line[0]}
    contracts = {d: load_any_contract(d) for d in names}
    c = client(s)

    # registry: each name holds its own contract only; the run's version is there with its own aliases
    for d, name in names.items():
        assert lines[d].model_name == name and runs[d]["model_name"] == name
        assert set(fingerprints_of(name, lines[d])) == {contracts[d].fingerprint()}, d
        assert str(runs[d]["version"]) in fingerprints_of(name, lines[d])[contracts[d].fingerprint()]
        champion = alias_version(name, "champion", lines[d])
        assert champion is not None and champion.tags["contract_fingerprint"] == contracts[d].fingerprint()
    # experiments: three different ones, each run in its line's
    experiments = {d: c.get_run(runs[d]["run_id"]).info.experiment_id for d in names}
    assert len(set(experiments.values())) == 3
    assert {d: c.get_experiment(e).name for d, e in experiments.items()} == {
        "bank_churners": "churn-sweep",
        "diabetes": "diabetes-sweep",
        "raw_digits": "raw-digits-sweep",
    }
    # storage: three different prediction logs and serving states
    assert len({lines[d].prediction_db_path for d in names}) == 3
    assert len({lines[d].serving_state_file for d in names}) == 3

    apps, sent = {}, {}
    try:
        for d in names:
            apps[d] = _serve(lines[d])
        for d, (client_, state) in apps.items():
            rid = f"{d}-{time.time_ns()}"
            if d == "raw_digits":
                r = client_.post(
                    f"/predict/image?request_id={rid}",
                    data=(ROOT / SAMPLE_IMAGE).read_bytes(),
                    content_type="image/x-adobe-dng",
                )
                fb = {"request_id": rid, "outcome": "7"}
            else:
                r = client_.post("/predict", json={"request_id": rid, "features": contracts[d].example})
                fb = {"request_id": rid, "outcome": 1} if d == "bank_churners" else {"request_id": rid, "value": 120.0}
            assert r.status_code == 200, (d, r.json)
            assert client_.post("/feedback", json=fb).status_code in (200, 201, 202), d
            state.plog.flush()
            sent[d] = rid
        for d, (client_, _) in apps.items():  # the audit trail of each server is its own line's
            own = client_.get(f"/audit?model={names[d]}").json
            assert own["count"] >= 1, d
            every = client_.get("/audit?limit=500").json["records"]
            seen = {a["model"] for a in every}  # this line's models (other tests' copies of it included)
            assert names[d] in seen and not seen & (set(names.values()) - {names[d]}), (d, seen)
            for other in set(names.values()) - {names[d]}:
                assert client_.get(f"/audit?model={other}").json["count"] == 0, (d, other)
    finally:
        for _, state in apps.values():
            state.plog.close()
            state.store.close()

    for d, line in lines.items():  # each log holds its own request and label only; each window its own row
        store = open_store(line)
        # a line's store may hold other tests' requests of the same line (the module's and the session's
        # tests share the stack): the check is that this test's request is there and no other line's is
        others = {sent[o] for o in sent if o != d}
        try:
            preds = {r["request_id"] for r in store.find_predictions()}
            labels = {r["request_id"] for r in store.find_feedback()}
            w = summarize(store, line, contracts[d], 24.0, fresh=True)
        finally:
            store.close()
        served = alias_version(names[d], "champion", line).version
        assert sent[d] in preds and sent[d] in labels and not (preds | labels) & others, d
        assert w.summary["n"] >= 1 and str(served) in w.summary["model_versions"], (d, w.summary)
