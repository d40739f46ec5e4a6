"""Secrets: URL redaction, the generated admin token, the model URI allowlist, bounded MLflow HTTP."""

from __future__ import annotations

import os
import stat
import threading

import pytest

from churnops.settings import Settings

pytestmark = pytest.mark.usefixtures("pristine_env")  # these tests read the defaults


def settings(tmp_path, **kw) -> Settings:
    # the default model name, whatever MODEL_NAME a session fixture (stack_env) has set meanwhile
    kw.setdefault("model_name", "churn-xgboost")
    return Settings(_env_file=None, state_dir=tmp_path / "state", **kw)


# ---- redact -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("http://alice:s3cret@mlflow.example:5051", "http://***@mlflow.example:5051"),
        (
            "API request to https://alice:s3cret@h/api/2.0/runs/get failed",
            "API request to https://***@h/api/2.0/runs/get failed",
        ),
        (
            "https://h/x?run=1&access_token=abc&X-Amz-Signature=ff#top",
            "https://h/x?run=1&access_token=***&X-Amz-Signature=***#top",
        ),
        ("mlflow-artifacts://u:p@h:1/a/b", "mlflow-artifacts://***@h:1/a/b"),
        ("no url here", "no url here"),
        ("http://127.0.0.1:5051", "http://127.0.0.1:5051"),
    ],
)
def test_redact_hides_credentials_and_query_tokens(text, expected):
    from churnops.redact import redact

    assert redact(text) == expected


def test_redact_webhook_hides_the_path():
    from churnops.redact import redact

    url = "https://hooks.slack.com/services/T000/B000/XXXXSECRET"
    assert redact(url, path=True) == "https://hooks.slack.com/***"
    assert redact(f"failed: {url} said 404", path=True) == "failed: https://hooks.slack.com/*** said 404"
    assert redact(None) == ""


# ---- admin token --------------------------------------------------------------------------------


def test_admin_token_generated_once_mode_0600_and_shared(tmp_path):
    from churnops.admin import admin_token, token_matches, token_path

    s = settings(tmp_path)
    tokens: list[str] = []
    threads = [threading.Thread(target=lambda: tokens.append(admin_token(s))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(tokens)) == 1 and len(tokens[0]) >= 40  # every racing worker got the same token
    p = token_path(s)
    assert p == tmp_path / "state" / "admin_token"
    assert stat.S_IMODE(os.stat(p).st_mode) == 0o600 and p.read_text().strip() == tokens[0]
    assert admin_token(s) == tokens[0]  # kept across restarts
    assert admin_token(settings(tmp_path / "other")) != tokens[0]  # random per state folder
    assert token_matches(tokens[0], tokens[0]) and not token_matches("", "") and not token_matches("x", tokens[0])


def test_old_default_token_never_works(tmp_path, caplog):
    from churnops.admin import OLD_DEFAULT, AdminTokenError, admin_token

    local = admin_token(settings(tmp_path, admin_token=OLD_DEFAULT))
    assert local != OLD_DEFAULT and "old published default" in caplog.text
    assert admin_token(settings(tmp_path, admin_token="my-own-token")) == "my-own-token"
    for bad in (OLD_DEFAULT, "", None, "short"):
        with pytest.raises(AdminTokenError, match="ADMIN_TOKEN must be set in env=cloud"):
            admin_token(settings(tmp_path, env="cloud", admin_token=bad))
    assert admin_token(settings(tmp_path, env="cloud", admin_token="x" * 32)) == "x" * 32


def test_api_refuses_to_start_in_cloud_with_the_old_default(tmp_path):
    from churnops.admin import AdminTokenError
    from serving.app import create_app

    with pytest.raises(AdminTokenError, match="change-me-local-admin"):
        create_app(settings(tmp_path, env="cloud", admin_token="change-me-local-admin"), start_background=False)


def test_make_up_prints_the_generated_token(tmp_path, capsys):
    from ops.stack import print_admin_token

    s = settings(tmp_path)
    assert print_admin_token(s) == 0
    out = capsys.readouterr().out
    token = (tmp_path / "state" / "admin_token").read_text().strip()
    assert token in out and str(tmp_path / "state" / "admin_token") in out
    assert print_admin_token(settings(tmp_path, env="cloud")) == 2
    assert "ADMIN_TOKEN must be set" in capsys.readouterr().err


# ---- model URI allowlist ------------------------------------------------------------------------

RUN = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    "uri",
    [
        f"runs:/{RUN}/model",
        f"runs:/{RUN}/artifacts/bundle",
        "models:/churn-xgboost@champion",
        "models:/churn-xgboost/12",
    ],
)
def test_accepted_model_uris(tmp_path, uri):
    from churnops.model_uri import check_model_uri

    assert check_model_uri(uri, settings(tmp_path)) == uri


@pytest.mark.parametrize(
    "uri",
    [
        "mlflow-artifacts://10.0.0.5:8080/evil/model",
        "http://10.0.0.5/model",
        "file:///etc",
        "/tmp/bundle",
        "models:/other-model@champion",
        "models:/churn-xgboost",
        "models:/churn-xgboost/1/../x",
        "models:/churn-xgboost@champ ion",
        f"runs:/{RUN}/../../etc",
        "runs:/abc/model",
        f"runs:/{RUN}/",
        f"runs:/{RUN.upper()}/model",
        "",
        12,
        None,
        ["runs:/x"],
        {"uri": 1},
    ],
)
def test_refused_model_uris_say_what_is_accepted(tmp_path, uri):
    from churnops.model_uri import ModelUriError, check_model_uri

    with pytest.raises(ModelUriError) as e:
        check_model_uri(uri, settings(tmp_path), "model_uri")
    assert e.value.field == "model_uri" and "models:/churn-xgboost@<alias>" in e.value.message


def test_settings_pin_is_checked_at_startup(tmp_path):
    from churnops.model_uri import ModelUriError, check_model_uri
    from churnops.registry import resolve_model_uri
    from serving.model import ModelManager

    assert resolve_model_uri(settings(tmp_path, run_id=RUN)) == f"runs:/{RUN}/model"
    with pytest.raises(ModelUriError, match="MODEL_URI"):
        ModelManager(settings(tmp_path, model_uri="mlflow-artifacts://10.0.0.5:8080/x"))
    with pytest.raises(ModelUriError, match="RUN_ID"):
        ModelManager(settings(tmp_path, run_id="../../x"))
    # the operator's own setting may name a local bundle folder (absolute path, existing); a request never can
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    assert resolve_model_uri(settings(tmp_path, model_uri=str(bundle))) == str(bundle)
    for not_local in ("bundle", str(tmp_path / "missing"), f"file://{bundle}"):
        with pytest.raises(ModelUriError, match="MODEL_URI"):
            resolve_model_uri(settings(tmp_path, model_uri=not_local))
    with pytest.raises(ModelUriError, match="model_uri"):
        check_model_uri(str(bundle), settings(tmp_path), "model_uri")


def test_servers_bound_mlflow_http(tmp_path, monkeypatch):
    """The variables MLflow's client reads on every request (checked against its own accessors)."""
    from mlflow.environment_variables import (
        MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR,
        MLFLOW_HTTP_REQUEST_MAX_RETRIES,
        MLFLOW_HTTP_REQUEST_TIMEOUT,
    )

    from churnops.registry import bound_mlflow_http

    for v in (MLFLOW_HTTP_REQUEST_TIMEOUT, MLFLOW_HTTP_REQUEST_MAX_RETRIES, MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR):
        monkeypatch.setenv(v.name, "0")  # recorded, so what bound_mlflow_http sets is undone after the test
        monkeypatch.delenv(v.name)
    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 120 and MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 7
    bound_mlflow_http(settings(tmp_path))
    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 10
    assert MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 2 and MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR.get() == 1
    bound_mlflow_http(settings(tmp_path, mlflow_http_request_timeout=3, mlflow_http_request_max_retries=0))
    assert MLFLOW_HTTP_REQUEST_TIMEOUT.get() == 3 and MLFLOW_HTTP_REQUEST_MAX_RETRIES.get() == 0
