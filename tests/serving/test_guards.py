"""Who may read and write, and bounded reads, on the HTTP API (issue 19)."""

from __future__ import annotations

import json

import pytest

from tests.support.serving import example, local_model_set

READ, FEEDBACK, ADMIN = "r" * 32, "f" * 32, "a" * 32


def make_client(serving_settings, bundles, **over):
    """(client, state) of an app on `serving_settings` updated with `over`."""
    from churnops.store.sqlite import SQLiteStore
    from serving.app import create_app
    from serving.model import ModelManager

    s = serving_settings.model_copy(update=over)
    mm = ModelManager(s)
    mm.freeze_gc = False
    mm.current = local_model_set(bundles)
    app = create_app(s, store=SQLiteStore(s.state_dir / "predictions.db"), models=mm, start_background=False)
    return app.test_client(), app.extensions["churn"]


@pytest.fixture
def cloud(serving_settings, bundles):
    from pydantic import SecretStr

    client, state = make_client(
        serving_settings,
        bundles,
        env="cloud",
        admin_token=ADMIN,
        read_token=SecretStr(READ),
        feedback_token=SecretStr(FEEDBACK),
    )
    state.plog.start()
    yield client, state
    state.plog.close()


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# ---- content types -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/predict", "/predict/batch", "/feedback"])
@pytest.mark.parametrize("ctype", ["text/plain", "application/x-www-form-urlencoded", None])
def test_json_routes_refuse_other_content_types_with_415(app_client, path, ctype):
    client, state = app_client
    body = {"/predict": example(), "/predict/batch": [example()], "/feedback": {"request_id": "x1", "outcome": 1}}[path]
    headers = {"Content-Type": ctype} if ctype else {}
    r = client.post(path, data=json.dumps(body), headers=headers)
    assert r.status_code == 415, r.json
    assert (
        "application/json" in r.json["details"]["content-type"]
        and (ctype or "none") in r.json["details"]["content-type"]
    )
    state.plog.flush()
    assert state.store.count_predictions() == 0  # refused before anything was logged
    ok = client.post(path, data=json.dumps(body), content_type="application/json; charset=utf-8")
    assert ok.status_code in (200, 202), ok.json


# ---- Host --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/predict", "/health", "/logs"])
def test_a_host_not_allowed_is_a_400_naming_it(app_client, path):
    client, _ = app_client
    kw = {"data": json.dumps(example()), "content_type": "application/json"} if path == "/predict" else {}
    call = client.post if path == "/predict" else client.get
    r = call(path, headers={"Host": "rebind.attacker.example"}, **kw)
    assert r.status_code == 400 and "rebind.attacker.example" in r.json["details"]["host"], r.json
    for host in ("127.0.0.1:9696", "localhost", "[::1]:9696"):
        assert call(path, headers={"Host": host}, **kw).status_code == 200, host


def test_allowed_hosts_setting_names_the_compose_service(serving_settings, bundles):
    client, _ = make_client(serving_settings, bundles, allowed_hosts="api, 127.0.0.1")
    assert client.get("/health", headers={"Host": "api:9696"}).status_code == 200
    r = client.get("/health", headers={"Host": "localhost"})
    assert r.status_code == 400 and "ALLOWED_HOSTS" in r.json["details"]["host"]


def test_default_allowed_hosts_include_api_url_and_api_host(serving_settings):
    from serving.guards import allowed_hosts

    s = serving_settings.model_copy(update={"api_url": "http://churn-api.internal:9696", "api_host": "10.0.0.5"})
    assert {"localhost", "127.0.0.1", "::1", "churn-api.internal", "10.0.0.5"} <= allowed_hosts(s)
    assert "0.0.0.0" not in allowed_hosts(s.model_copy(update={"api_host": "0.0.0.0"}))


# ---- scoped tokens -------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "method,path", [("GET", "/logs"), ("GET", "/audit"), ("GET", "/model"), ("GET", "/drift/report")]
)
def test_cloud_reading_needs_the_read_token(cloud, method, path):
    client, _ = cloud
    for headers in ({}, bearer(FEEDBACK), bearer("r" * 31)):
        r = client.open(path, method=method, headers=headers)
        assert r.status_code == 401 and "READ_TOKEN" in r.json["details"]["authorization"], (headers, r.json)
        assert READ not in r.get_data(as_text=True) and FEEDBACK not in r.get_data(as_text=True)
    for token in (READ, ADMIN):
        assert client.open(path, method=method, headers=bearer(token)).status_code != 401


def test_cloud_feedback_needs_the_feedback_token_and_predict_stays_open(cloud):
    client, state = cloud
    assert client.post("/predict", json={"request_id": "c1", "features": example()}).status_code == 200
    fb = {"request_id": "c1", "outcome": 1}
    for headers in ({}, bearer(READ)):
        r = client.post("/feedback", json=fb, headers=headers)
        assert r.status_code == 401 and "FEEDBACK_TOKEN" in r.json["details"]["authorization"]
    assert client.post("/feedback", json=fb, headers={"X-Api-Token": FEEDBACK}).status_code == 202
    state.plog.flush()
    assert [f["outcome"] for f in state.store.find_feedback(["c1"])] == [1]


@pytest.mark.parametrize("missing", ["read_token", "feedback_token"])
def test_cloud_refuses_to_start_without_a_scope_token(serving_settings, bundles, missing):
    from pydantic import SecretStr

    from serving.guards import TokenError

    over = {"env": "cloud", "admin_token": ADMIN, "read_token": SecretStr(READ), "feedback_token": SecretStr(FEEDBACK)}
    over[missing] = SecretStr("short")
    with pytest.raises(TokenError, match=missing.upper()):
        make_client(serving_settings, bundles, **over)


def test_scope_tokens_are_redacted_in_settings(serving_settings):
    from pydantic import SecretStr

    s = serving_settings.model_copy(update={"read_token": SecretStr(READ), "feedback_token": SecretStr(FEEDBACK)})
    assert READ not in repr(s) and FEEDBACK not in repr(s) and READ not in str(s.model_dump())


def test_local_default_stays_open(app_client):
    client, _ = app_client
    assert client.get("/logs").status_code == 200 and client.get("/audit").status_code == 200
    assert client.post("/feedback", json={"request_id": "l1", "outcome": 0}).status_code == 202


# ---- bounds ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", ["1e20", "100000000000000000000", "-1", "1.5", "nan"])
def test_audit_offset_out_of_range_is_a_422_naming_it(app_client, offset):
    client, _ = app_client
    r = client.get(f"/audit?offset={offset}")
    assert r.status_code == 422 and "0..1000000000" in r.json["details"]["offset"], r.json
    assert client.get("/audit?offset=1e3").json["offset"] == 1000


@pytest.mark.parametrize("field", ["label", "outcome"])
def test_feedback_nested_1000_deep_is_a_422_not_a_500(app_client, field):
    client, _ = app_client
    body = '{"request_id": "n1", "%s": %s}' % (field, "[" * 1000 + "]" * 1000)
    r = client.post("/feedback", data=body, content_type="application/json")
    assert r.status_code == 422 and "got an array" in r.json["details"][field], r.json


def test_an_invented_http_method_is_counted_as_other(app_client):
    from serving.metrics import render

    client, _ = app_client
    for m in ("FOOBAR", "BAZQUX"):
        client.open("/health", method=m)
    text = render()[0].decode()
    assert 'method="other"' in text and "FOOBAR" not in text and "BAZQUX" not in text


def test_drift_report_reads_at_most_drift_max_rows(serving_settings, bundles):
    client, state = make_client(serving_settings, bundles, drift_max_rows=10, max_body_bytes=200_000)
    state.plog.start()
    rows = [{"request_id": f"d{i}", "features": example()} for i in range(40)]
    assert client.post("/predict/batch", json=rows).status_code == 200
    state.plog.flush()
    body = client.get("/drift/report?hours=1").json
    state.plog.close()
    assert body["n"] == 10 and body["truncated"] is True and body["max_rows"] == 10, body


def test_bounded_records_keeps_the_newest_and_never_reads_more_than_the_bound():
    from churnops.monitoring.window import bounded_records

    class Store:
        limits: list = []

        def find_predictions(self, start=None, end=None, limit=None):
            self.limits.append(limit)
            got = [{"ts": float(t)} for t in range(1000) if start <= t < end]  # oldest first
            return got if limit is None else got[:limit]

    store = Store()
    records, truncated = bounded_records(store, 0.0, 1000.0, 25)
    assert [r["ts"] for r in records] == [float(t) for t in range(975, 1000)] and truncated
    assert store.limits and max(store.limits) <= 26
    assert bounded_records(Store(), 0.0, 1000.0, 5000) == ([{"ts": float(t)} for t in range(1000)], False)


def test_drift_windows_share_one_cache_entry_per_rounded_hours(app_client, monkeypatch):
    from churnops.monitoring import window as W

    client, _ = app_client
    computed: list[float] = []

    def fake(store, settings, contract, hours, now=None, **kwargs):
        computed.append(hours)
        return W.Window({"n": 0, "status": "insufficient_data", "window": {"hours": hours}})

    monkeypatch.setattr(W, "compute", fake)
    W.clear_cache()
    for h in ("2159.91", "2159.92", "2159.937", "2159.5"):
        assert client.get(f"/drift/report?hours={h}").json["window"]["hours"] == 2160
    assert computed == [2160.0]
    assert client.get("/drift/report?hours=0.1").json["window"]["hours"] == 0.1
    W.clear_cache()
