"""The smoke check of a running compose stack, from inside its network (compose addresses).

    docker compose ... run --rm --no-deps -e ADMIN_TOKEN prefect-worker python -m ops.composecheck [--grafana]

Run in a container of the project's image on the compose network: under Docker (the CI `compose`
job) and under `make compose-smoke` (ops/composerun.py, the same files without Docker). Each
check prints PASS or FAIL with the reason; all run, the exit code is 1 when any failed:

- the API answers /ready and a prediction at `api:9696` as soon as compose calls it healthy;
- a Kinesis record on each input shard gives a result and a prediction-log entry (/logs);
- an admin reload of the API to a new registry version is followed by every consumer (the results
  of both shards carry the new version);
- a report built by the worker's report flow is served by nginx at `nginx:8888`;
- Prometheus at `prometheus:9090` scrapes the API (target up); Grafana's /api/health (`--grafana`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable

import httpx

from churnops.aws import client
from churnops.contract import load_contract
from churnops.model_line import resolved
from churnops.settings import Settings, get_settings
from simulators.traffic import customer_pool, plan_records

API = "http://api:9696"
NGINX = "http://nginx:8888"
PROMETHEUS = "http://prometheus:9090"
GRAFANA = "http://grafana:3000"
# the two halves of the hash-key space: one record lands on each of the input stream's two shards
SHARD_KEYS = ("1", str(2**127 + 1))


def sample_requests(s: Settings, n: int) -> list[dict]:
    """`n` prediction requests from the seeded synthetic generator (the simulators' own planner)."""
    contract = load_contract(s.dataset)
    pool, _ = customer_pool(s, contract, "synthetic", n=max(n, 50))
    records, _ = plan_records(pool, contract, n, 7, [], "sudden", 0.0, prefix=f"smoke-{uuid.uuid4().hex[:6]}")
    return [{"request_id": r.request_id, "features": r.features} for r in records]


def wait_for(probe: Callable[[], object], timeout_s: float, every_s: float = 1.0) -> object:
    """The first truthy value of `probe()` within `timeout_s`, else the last value (an exception counts as
    falsy; the last one is printed when time runs out)."""
    deadline, value, last = time.monotonic() + timeout_s, None, ""
    while True:
        try:
            value = probe()
        except Exception as exc:  # a server not answering yet: keep probing
            value, last = None, f"{type(exc).__name__}: {exc}"
        if value:
            return value
        if time.monotonic() > deadline:
            if last:
                print(f"    last error: {last[:300]}", flush=True)
            return value
        time.sleep(every_s)


class Kinesis:
    """Puts records on the input stream and finds their results on the output stream."""

    def __init__(self, s: Settings):
        self.s, self.kin = s, client("kinesis", s)
        self.iters: dict[str, str] = {}
        self.seen: dict[str, dict] = {}

    def put(self, requests: list[dict]) -> None:
        for req, key in zip(requests, SHARD_KEYS * len(requests)):
            self.kin.put_record(
                StreamName=self.s.input_stream,
                Data=json.dumps(req).encode(),
                PartitionKey=req["request_id"],
                ExplicitHashKey=key,
            )

    def results(self, ids: set[str]) -> dict[str, dict]:
        """Results read so far for `ids` (reads every output shard from where it stopped)."""
        if not self.iters:
            for sh in self.kin.list_shards(StreamName=self.s.output_stream)["Shards"]:
                self.iters[sh["ShardId"]] = self.kin.get_shard_iterator(
                    StreamName=self.s.output_stream, ShardId=sh["ShardId"], ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
        for shard, it in list(self.iters.items()):
            out = self.kin.get_records(ShardIterator=it, Limit=1000)
            self.iters[shard] = out["NextShardIterator"]
            for rec in out["Records"]:
                body = json.loads(rec["Data"])
                self.seen[body.get("request_id", "")] = body
        return {i: self.seen[i] for i in ids if i in self.seen}


class Smoke:
    """The checks, in order; each records PASS/FAIL."""

    def __init__(self, s: Settings, admin_token: str):
        self.s, self.token = s, admin_token
        self.http = httpx.Client(timeout=15.0)
        self.failed: list[str] = []

    def check(self, name: str, fn: Callable[[], str]) -> None:
        try:
            detail = fn()
            print(f"PASS {name}: {detail}", flush=True)
        except Exception as exc:
            self.failed.append(name)
            print(f"FAIL {name}: {type(exc).__name__}: {str(exc)[:400]}", flush=True)

    def ready_and_predict(self) -> str:
        """Healthy must mean ready: no retry here."""
        r = self.http.get(f"{API}/ready")
        assert r.status_code == 200, f"GET {API}/ready -> {r.status_code} {r.text[:200]} (compose called it healthy)"
        req = sample_requests(self.s, 1)[0]
        r = self.http.post(f"{API}/predict", json=req)
        assert r.status_code == 200, f"POST {API}/predict -> {r.status_code} {r.text[:200]}"
        return f"{API}/predict -> {r.json().get('probability', r.json())}"

    def traffic(self, n: int = 220) -> str:
        ok = sum(self.http.post(f"{API}/predict", json=req).status_code == 200 for req in sample_requests(self.s, n))
        assert ok == n, f"{n - ok} of {n} predictions failed"
        return f"{n} predictions logged for the report"

    def stream_round(self, kin: Kinesis, version: str | None = None) -> dict[str, dict]:
        reqs = sample_requests(self.s, 2)
        kin.put(reqs)
        ids = {r["request_id"] for r in reqs}

        def done():
            got = kin.results(ids)
            if len(got) < len(ids):
                return None
            if version is not None and any(str(g.get("model_version")) != version for g in got.values()):
                return None
            return got

        got = wait_for(done, 60.0)
        got = got or kin.results(ids)
        assert len(got) == len(ids), f"results for {len(got)} of {len(ids)} records (one per input shard) in 60 s"
        if version is not None:
            versions = {g["shard_id"]: g.get("model_version") for g in got.values()}
            assert all(str(v) == version for v in versions.values()), f"after the reload to v{version}: {versions}"
        return got

    def stream_and_log(self, kin: Kinesis) -> str:
        since = time.time() - 5.0
        got = self.stream_round(kin)
        ids = set(got)

        def logged():
            params = {"start": since, "limit": 10_000}  # the simulators' traffic is logged too
            recs = self.http.get(f"{API}/logs", params=params).json()["records"]
            return ids <= {r.get("request_id") for r in recs}

        assert wait_for(logged, 30.0), f"no /logs entry for {sorted(ids)}"
        return f"{len(got)} records -> results (shards {sorted(g['shard_id'] for g in got.values())}) -> /logs"

    def reload_followed(self, kin: Kinesis) -> str:
        import mlflow
        from mlflow import MlflowClient

        model = self.http.get(f"{API}/model").json()
        name = self.s.model_name
        champ = MlflowClient().get_model_version_by_alias(name, "champion")
        # a second version of the champion's model: the reload target (no training needed)
        new = mlflow.register_model(f"models:/{name}/{champ.version}", name)
        r = self.http.post(
            f"{API}/model/reload",
            json={"model_uri": f"models:/{name}/{new.version}"},
            headers={"Authorization": f"Bearer {self.token}"},
        )
        assert r.status_code in (200, 202), f"POST /model/reload -> {r.status_code} {r.text[:200]}"

        def api_moved():
            return str(self.http.get(f"{API}/model").json()["champion"]["version"]) == str(new.version)

        assert wait_for(api_moved, 60.0), f"the API still serves {model.get('champion', {}).get('version')}"
        # a consumer follows the shared serving state within seconds: records put before it has moved are
        # answered by the old model (rightly), so new rounds are put until every shard answers the new one
        deadline, versions = time.monotonic() + 90.0, {}
        while time.monotonic() < deadline:
            got = self.stream_round(kin)
            versions = {g["shard_id"]: str(g.get("model_version")) for g in got.values()}
            if all(v == str(new.version) for v in versions.values()):
                return f"API and both consumers' shards serve v{new.version} (was v{champ.version})"
            time.sleep(2.0)
        raise AssertionError(f"after the reload to v{new.version}, 90 s later: {versions}")

    def report_through_nginx(self) -> str:
        out = subprocess.run(["churnops-report"], capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, f"churnops-report exit {out.returncode}: {(out.stdout + out.stderr)[-600:]}"
        r = self.http.get(f"{NGINX}/index.html")
        assert r.status_code == 200, f"GET {NGINX}/index.html -> {r.status_code}"
        link = next((w.split('"')[0] for w in r.text.split('href="')[1:] if w.startswith("report-")), None)
        assert link, "the index links no report"
        r2 = self.http.get(f"{NGINX}/{link}")
        assert r2.status_code == 200 and len(r2.content) > 1000, f"GET /{link} -> {r2.status_code}"
        return f"{NGINX}/{link} ({len(r2.content)} bytes)"

    def prometheus_scrapes(self) -> str:
        def up():
            targets = self.http.get(f"{PROMETHEUS}/api/v1/targets").json()["data"]["activeTargets"]
            api = [t for t in targets if t["labels"].get("job") == "churn-api"]
            return api if api and all(t["health"] == "up" for t in api) else None

        got = wait_for(up, 60.0, 2.0)
        assert got, "Prometheus has no churn-api target up within 60 s"
        return f"churn-api target {got[0]['scrapeUrl']} up"

    def grafana(self) -> str:
        r = self.http.get(f"{GRAFANA}/api/health")
        assert r.status_code == 200 and r.json().get("database") == "ok", f"{r.status_code} {r.text[:200]}"
        return f"{GRAFANA}/api/health ok"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--grafana", action="store_true", help="also check Grafana (not available without Docker)")
    a = p.parse_args(argv)
    token = os.environ.get("ADMIN_TOKEN", "")
    if not token:
        print("ADMIN_TOKEN is not set (pass it with -e ADMIN_TOKEN)", file=sys.stderr)
        return 2
    s = resolved(get_settings())  # the data set's model line (MODEL_NAME is empty in the env files)
    smoke = Smoke(s, token)
    smoke.check("API ready and predicting when healthy", smoke.ready_and_predict)
    kin = Kinesis(s)
    smoke.check("Kinesis record -> result -> prediction log", lambda: smoke.stream_and_log(kin))
    smoke.check("admin reload followed by every serving service", lambda: smoke.reload_followed(kin))
    smoke.check("traffic for the report", smoke.traffic)
    smoke.check("report through nginx", smoke.report_through_nginx)
    smoke.check("Prometheus scrapes the API", smoke.prometheus_scrapes)
    if a.grafana:
        smoke.check("Grafana /api/health", smoke.grafana)
    print(f"compose smoke: {'FAILED ' + ', '.join(smoke.failed) if smoke.failed else 'all checks passed'}")
    return 1 if smoke.failed else 0


if __name__ == "__main__":
    from churnops.settings import quiet_process

    quiet_process()
    sys.exit(main())
