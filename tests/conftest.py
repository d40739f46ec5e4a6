"""Shared fixtures: real local servers (moto S3/Kinesis, MLflow, Prefect test harness).

Session-scoped and started only when a test asks for them, each on a free port with its state
in a temporary folder, so the suite never touches a developer's running stack or `.env.local`.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from churnops.settings import quiet_process
from ops.localservers import BIN, Server, free_port, start_mlflow, start_moto, wait_http  # noqa: F401 (re-exported)

ROOT = Path(__file__).resolve().parent.parent
REAL_DATA = ROOT.parent / "shared" / "data" / "bank_churners.csv"

# Never read the developer's .env.local during tests.
os.environ["ENV_FILE"] = str(ROOT / "tests" / ".env.test-does-not-exist")
quiet_process()  # MLflow telemetry and Prefect analytics off here and in every child (before any import of them)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


SUITES = ("code", "data", "model")  # tests/data -> data, tests/model -> model, everything else -> code


def pytest_collection_modifyitems(config, items):
    """Give every test exactly one suite marker, from its folder (`make test-code|test-data|test-model`)."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        suite = parts[0] if parts[0] in ("data", "model") else "code"
        item.add_marker(getattr(pytest.mark, suite))


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory):
    """A real moto server (S3 + Kinesis over HTTP) on a free port."""
    srv, url = start_moto(tmp_path_factory.mktemp("moto"))
    yield url
    srv.stop()


@pytest.fixture(scope="session")
def mlflow_uri(tmp_path_factory):
    """A real MLflow tracking server (SQLite, artifacts proxied) on a free port."""
    srv, url = start_mlflow(tmp_path_factory.mktemp("mlflow"))
    yield url
    srv.stop()


@pytest.fixture(scope="session")
def prefect_harness():
    """Prefect's own test harness: a temporary server and database for the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def stack_env(moto_endpoint, mlflow_uri, tmp_path_factory):
    """Point settings at the test servers (unique bucket); yields the Settings object."""
    from churnops.settings import get_settings

    values = {
        "AWS_ENDPOINT_URL": moto_endpoint,
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "test",
        "AWS_SECRET_ACCESS_KEY": "test",
        "MLFLOW_TRACKING_URI": mlflow_uri,
        "BUCKET": "test-feature-store",
        "MODEL_NAME": "churn-test",
        "EXPERIMENT_NAME": "churn-test",
        "APPROVAL_TIMEOUT_S": "0",  # no pause: a challenger that passes the rules awaits `make promote`
        "STATE_DIR": str(tmp_path_factory.mktemp("state")),  # the audit trail's store
    }
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    get_settings.cache_clear()
    yield get_settings()
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    get_settings.cache_clear()


@pytest.fixture
def pristine_env(monkeypatch):
    """No setting from the process environment for this test, so `Settings(_env_file=None)` is the
    defaults whatever ran before (the session's `stack_env` sets MODEL_NAME and others)."""
    from churnops.settings import Settings, get_settings

    names = {n.upper() for n in Settings.model_fields} | {
        str(f.validation_alias).upper() for f in Settings.model_fields.values() if f.validation_alias
    }
    for k in list(os.environ):
        if k.upper() in names:
            monkeypatch.delenv(k)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


def synthetic_data_forced() -> bool:
    """CHURNOPS_TEST_DATA=synthetic: run as a hosted runner does, on the generator, even where the file is."""
    return os.environ.get("CHURNOPS_TEST_DATA", "").lower() == "synthetic"


def uses_real_file() -> bool:
    """Whether the churn tests read the real BankChurners file (else the seeded synthetic generator)."""
    return REAL_DATA.exists() and not synthetic_data_forced()


@pytest.fixture(scope="session")
def real_data_path(tmp_path_factory) -> str:
    """The churn data file: the real BankChurners file beside the project (tests and benchmarks may read
    it) or, on a runner without ../shared (a hosted CI), the seeded synthetic generator's 10,127
    customers written in the same raw schema, so the flows, approval, loop and model tests still run."""
    if uses_real_file():
        return str(REAL_DATA)
    from churnops.synthetic import generate_customers

    path = tmp_path_factory.mktemp("data") / "bank_churners_synthetic.csv"
    generate_customers().to_csv(path, index=False)
    print(f"\n[tests] {REAL_DATA} not used: the churn tests run on the SYNTHETIC generator ({path})")
    return str(path)


real_file_only = pytest.mark.skipif(
    not uses_real_file(), reason="checks facts of the real BankChurners file (hand-copied rows, its row count)"
)


@pytest.fixture(scope="session")
def trained(stack_env, prefect_harness, real_data_path):
    """One small sweep on the real data through the real flow: the registered model's summary."""
    from churnops.aws import ensure_bucket, ensure_streams
    from flows.train_flow import train_flow

    ensure_bucket(stack_env)
    ensure_streams(stack_env)
    return train_flow(n_trials=6, data=real_data_path, data_profile=False)


@pytest.fixture
def own_model(stack_env, trained, monkeypatch, request):
    """Settings naming this test module's own registered model: a copy of the session's trained run as
    version 1 (champion). Tests that promote, approve or roll back use it, so the session's model (which
    other tests expect at version 1) never moves, whatever the order the tests run in."""
    import mlflow

    from churnops.registry import client
    from churnops.settings import get_settings

    name = f"{stack_env.model_name}-{request.module.__name__.rsplit('.', 1)[-1].removeprefix('test_')}"
    monkeypatch.setenv("MODEL_NAME", name)
    get_settings.cache_clear()
    s = get_settings()
    c = client(s)
    if not c.search_model_versions(f"name = '{name}'"):
        mlflow.set_registry_uri(s.mlflow_tracking_uri)
        mv = mlflow.register_model(f"runs:/{trained['run_id']}/model", name)
        c.set_registered_model_alias(name, "champion", mv.version)
    yield s
    monkeypatch.undo()
    get_settings.cache_clear()
