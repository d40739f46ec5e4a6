"""Shared fixtures: real local servers (moto S3/Kinesis, MLflow, Prefect test harness), fresh settings.

Session-scoped and started only when a test asks for them, each on a free port with its state
in a temporary folder, so the suite never touches a developer's running stack or `.env.local`.
Every fixture that starts (or needs) a real server requests `real_server`: the tests using one,
directly or through other fixtures, are marked `integration` (`pytest -m "not integration"`: units).
Every test starts and ends with no cached settings (`fresh_settings`); `monkeypatch.setenv` and
`delenv` drop the cache too, so a test reads its own environment through `get_settings()`.
Helpers shared by several test files live in tests/support/.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from churnops.settings import get_settings, quiet_process
from ops.localservers import start_mlflow, start_moto
from tests.support.env import EnvPatch
from tests.support.paths import REAL_DATA, ROOT, uses_real_file
from tests.support.registry import register_copy

# Never read the developer's .env.local during tests.
os.environ["ENV_FILE"] = str(ROOT / "tests" / ".env.test-does-not-exist")
quiet_process()  # MLflow telemetry and Prefect analytics off here and in every child (before any import of them)
os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
os.environ.setdefault("GIT_PYTHON_REFRESH", "quiet")
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")


SUITES = ("code", "data", "model")  # tests/data -> data, tests/model -> model, everything else -> code


def pytest_collection_modifyitems(config, items):
    """Give every test exactly one suite marker, from its folder (`make test-code|test-data|test-model`),
    and `integration` to every test that uses a real server (a fixture requesting `real_server`)."""
    for item in items:
        parts = Path(str(item.fspath)).relative_to(ROOT / "tests").parts
        suite = parts[0] if parts[0] in ("data", "model") else "code"
        item.add_marker(getattr(pytest.mark, suite))
        if "real_server" in item.fixturenames:
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def real_server():
    """Requested by every fixture that starts a real local server (moto, MLflow, Prefect, gunicorn,
    nginx, Prometheus ...) and by a test that starts one itself: marks its tests `integration`."""


@pytest.fixture
def monkeypatch():
    """pytest's `monkeypatch`, as an EnvPatch: `get_settings()` after `setenv`/`delenv` reads them."""
    mp = EnvPatch()
    yield mp
    mp.undo()


@pytest.fixture(autouse=True)
def fresh_settings():
    """No settings cached from another test (nor left for the next): the one place that clears them
    between tests (fixtures of a wider scope use EnvPatch)."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture(scope="session")
def moto_endpoint(real_server, tmp_path_factory):
    """A real moto server (S3 + Kinesis over HTTP) on a free port."""
    srv, url = start_moto(tmp_path_factory.mktemp("moto"))
    yield url
    srv.stop()


@pytest.fixture(scope="session")
def mlflow_uri(real_server, tmp_path_factory):
    """A real MLflow tracking server (SQLite, artifacts proxied) on a free port."""
    srv, url = start_mlflow(tmp_path_factory.mktemp("mlflow"))
    yield url
    srv.stop()


@pytest.fixture(scope="session")
def prefect_harness(real_server):
    """Prefect's own test harness: a temporary server and database for the session."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def stack_env(moto_endpoint, mlflow_uri, tmp_path_factory):
    """Point settings at the test servers (unique bucket); yields the Settings object."""
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
    mp = EnvPatch()
    for k, v in values.items():
        mp.setenv(k, v)
    yield get_settings()
    mp.undo()


@pytest.fixture
def pristine_env(monkeypatch):
    """No setting from the process environment for this test, so `Settings(_env_file=None)` is the
    defaults whatever ran before (the session's `stack_env` sets MODEL_NAME and others)."""
    from churnops.settings import Settings

    names = {n.upper() for n in Settings.model_fields} | {
        str(f.validation_alias).upper() for f in Settings.model_fields.values() if f.validation_alias
    }
    for k in list(os.environ):
        if k.upper() in names:
            monkeypatch.delenv(k)


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
    """Settings naming this test's own registered model (a fresh, unique name): the session's trained
    version copied as its version 1 (champion). Tests that promote, approve, roll back or train again
    use it, so the session's model never moves and no test sees another's versions or aliases."""
    module = request.module.__name__.rsplit(".", 1)[-1].removeprefix("test_")
    name = f"{stack_env.model_name}-{module}-{uuid.uuid4().hex[:8]}"
    register_copy(stack_env, stack_env.model_name, trained["version"], name)
    monkeypatch.setenv("MODEL_NAME", name)
    return get_settings()
