"""The two compose files: schema, variables, ports, images, commands, mounts, health, shard split."""

from __future__ import annotations

import re
import subprocess

import yaml

from tests.support.deploy import (
    COMPOSE_FILES,
    PUBLISHED,
    ROOT,
    SECRET_VARS,
    console_scripts,
    env_keys,
    load_compose,
    tool,
)

VAR = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])([^}]*))?\}")


def test_both_files_pass_the_compose_spec_schema():
    out = subprocess.run(
        [tool("check-jsonschema"), "--builtin-schema", "vendor.compose-spec", *(str(ROOT / f) for f in COMPOSE_FILES)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    for f in COMPOSE_FILES:
        assert load_compose(f)["name"] == "churnops"  # one project: the serve side reaches the registry side


def test_every_variable_is_defined_in_the_env_templates_and_no_secret_is_committed():
    local, cloud = env_keys(ROOT / ".env.local"), env_keys(ROOT / ".env.cloud")
    # GIT_COMMIT: the image's build argument, exported by make (git rev-parse HEAD)
    used = {m.group(1) for f in COMPOSE_FILES for m in VAR.finditer((ROOT / f).read_text())} - {"GIT_COMMIT"}
    assert {"RUN_ID", "API_WORKERS", "SIMULATE_INTERVAL_S", "BUCKET", *SECRET_VARS} <= used
    missing = sorted(v for v in used if v not in local and v not in cloud)
    assert not missing, f"compose uses {missing}, defined in neither .env.local nor .env.cloud"
    for v in SECRET_VARS:
        assert v not in local and cloud[v] == "", f"{v}: a secret, never a value in the repository"
    # a missing secret stops compose with a message naming it (`${VAR:?message}`), never a default
    for f in COMPOSE_FILES:
        for m in VAR.finditer((ROOT / f).read_text()):
            if m.group(1) in SECRET_VARS:
                assert m.group(2) == ":?" and m.group(1) in m.group(3), m.group(0)


def test_published_ports_are_the_architecture_ports_on_loopback(compose):
    from churnops.settings import Settings

    published = {}
    for svc, spec in compose.items():
        for p in spec.get("ports", []):
            host, hport, cport = str(p).split(":")
            assert host == "127.0.0.1", f"{svc} publishes {p} beyond loopback"
            assert hport == cport
            published[svc] = int(hport)
    assert published == PUBLISHED
    # the embedded stack's defaults (the class's, not this process's environment): the same ports
    default = {name: f.default for name, f in Settings.model_fields.items()}
    assert {default["api_port"], default["reports_port"], default["prometheus_port"]} <= set(PUBLISHED.values())
    for key in ("aws_endpoint_url", "mlflow_tracking_uri", "prefect_api_url", "api_url"):
        assert int(default[key].split(":")[2].split("/")[0]) in PUBLISHED.values(), key
    readme = (ROOT / "README.md").read_text()
    for port in PUBLISHED.values():
        assert f"127.0.0.1:{port}" in readme or f":{port}" in readme, f"port {port} not in the README"
    arch = ROOT.parent / "shared" / "ARCHITECTURE.md"
    if arch.exists():  # a fresh clone beside ../shared
        text = arch.read_text()
        for svc in ("localstack", "mlflow", "prefect-server", "api", "nginx", "prometheus", "grafana"):
            assert str(PUBLISHED[svc]) in text, svc


def test_every_image_is_pinned_or_built_from_the_repo(compose):
    builders = [svc for svc, spec in compose.items() if "build" in spec]
    assert builders == ["mlflow"], f"one service builds the project's image, the others use it: {builders}"
    build = compose["mlflow"]["build"]
    assert (ROOT / build["context"] / build["dockerfile"]).is_file()
    assert build["args"] == {"GIT_COMMIT": "${GIT_COMMIT:-unknown}"}  # runs record the commit
    for svc, spec in compose.items():
        if spec["image"] == "churnops:local":
            continue
        image = spec["image"]
        name, _, tag = image.rpartition(":")
        assert name and tag and tag != "latest" and re.search(r"\d+\.\d+", tag), f"{svc}: {image} is not pinned"


def test_every_command_is_a_console_script(compose):
    scripts = console_scripts()
    for svc, spec in compose.items():
        if spec["image"] == "churnops:local":
            cmd = spec.get("command")
            assert isinstance(cmd, list) and cmd[0] in scripts, f"{svc}: {cmd} is not a console script"
        else:
            assert "command" not in spec, f"{svc}: third-party images run their documented default command"
    for svc, spec in compose.items():
        test = spec.get("healthcheck", {}).get("test", [])
        if spec["image"] == "churnops:local" and spec.get("restart") != "no":
            assert test[:2] == ["CMD", "churnops-health"], svc


def test_health_checks_dependencies_and_volumes(compose):
    declared = set()
    for f in COMPOSE_FILES:
        declared |= set(load_compose(f).get("volumes") or {})
    for svc, spec in compose.items():
        if spec.get("restart") == "no":  # the one-shot init: it exits, it has no health
            assert svc == "init-aws"
        else:
            assert spec["healthcheck"]["test"], f"{svc} has no health check"
        for dep, cond in (spec.get("depends_on") or {}).items():
            assert dep in compose, f"{svc} depends on unknown service {dep}"
            assert cond["condition"] in ("service_healthy", "service_started", "service_completed_successfully")
            # a one-shot completes; a server is healthy
            assert (cond["condition"] == "service_completed_successfully") == (dep == "init-aws"), (svc, dep)
        for v in spec.get("volumes", []):
            src = v.split(":")[0]
            if src.startswith("./"):
                assert (ROOT / src).exists(), f"{svc} mounts missing {src}"
            else:
                assert src in declared, f"{svc}: named volume {src} not declared"
    for svc in ("mlflow", "prefect-server", "prefect-worker", "api", "consumer-0", "consumer-1", "simulate-http"):
        assert compose[svc]["depends_on"], svc
        assert all(c["condition"] != "service_started" for c in compose[svc]["depends_on"].values()), svc
    # what needs the bucket and streams waits for init-aws, which runs at every `make up`
    for svc in ("prefect-worker", "api", "consumer-0", "consumer-1"):
        assert compose[svc]["depends_on"]["init-aws"]["condition"] == "service_completed_successfully", svc
    # state on named volumes: databases, the API's spool, the reports
    assert "postgres-data:/var/lib/postgresql/data" in compose["postgres"]["volumes"]
    assert "mongo-data:/data/db" in compose["mongo"]["volumes"]
    assert "api-data:/data" in compose["api"]["volumes"]
    assert "reports:/reports" in compose["prefect-worker"]["volumes"]
    assert "reports:/srv/reports:ro" in compose["nginx"]["volumes"]
    # MLflow's artifacts on its own volume (LocalStack's community image keeps nothing)
    assert "mlflow-data:/data" in compose["mlflow"]["volumes"]
    assert compose["mlflow"]["environment"]["MLFLOW_ARTIFACTS_DESTINATION"] == "/data/artifacts"
    # one serving state for the API and every consumer: an admin reload reaches them all
    for svc in ("api", "consumer-0", "consumer-1"):
        assert "serving-state:/serving" in compose[svc]["volumes"], svc
        assert compose[svc]["environment"]["SERVING_STATE_DIR"] == "/serving", svc


def test_health_checks_prove_what_they_claim(compose):
    pg = " ".join(compose["postgres"]["healthcheck"]["test"][1:])
    assert "pg_isready -h 127.0.0.1" in pg and "'mlflow', 'prefect'" in pg  # over TCP, both databases
    assert compose["api"]["healthcheck"]["test"] == ["CMD", "churnops-health", "http://127.0.0.1:9696/ready"]
    for sim in ("simulate-http", "simulate-kinesis"):  # themselves, not the API
        assert compose[sim]["healthcheck"]["test"] == ["CMD", "churnops-health", "heartbeat"], sim
    assert compose["nginx"]["healthcheck"]["test"][-1] == "http://127.0.0.1:8888/healthz"
    conf = (ROOT / "nginx" / "reports.compose.conf").read_text()
    assert "location = /healthz" in conf and "return 204;" in conf


def test_mlflow_accepts_the_host_names_its_clients_send(compose):
    from mlflow.server.security_utils import is_allowed_host_header

    allowed = [h.strip() for h in compose["mlflow"]["environment"]["MLFLOW_SERVER_ALLOWED_HOSTS"].split(",")]
    for host in ("mlflow:5051", "127.0.0.1:5051", "localhost:5051"):
        assert is_allowed_host_header(allowed, host), host
    assert not is_allowed_host_header(allowed, "evil.example:5051")


def test_env_cloud_names_its_own_endpoints_and_no_secret_gets_a_default(compose):
    for svc, spec in compose.items():
        env = spec.get("environment") or {}
        if spec["image"] != "churnops:local" or "BUCKET" not in env:  # the alert receiver reaches no store
            continue
        assert env["AWS_ENDPOINT_URL"] == "${CONTAINER_AWS_ENDPOINT_URL-http://localstack:4566}", svc
        assert env["MLFLOW_TRACKING_URI"] == "${CONTAINER_MLFLOW_TRACKING_URI:-http://mlflow:5051}", svc
        assert env["AWS_ACCESS_KEY_ID"] == "${AWS_ACCESS_KEY_ID-}", svc  # an empty key stays empty
        assert env["AWS_SECRET_ACCESS_KEY"] == "${AWS_SECRET_ACCESS_KEY-}", svc
    cloud = env_keys(ROOT / ".env.cloud")
    assert cloud["CONTAINER_AWS_ENDPOINT_URL"] == "" and "localstack" not in str(cloud)
    assert cloud["CONTAINER_MLFLOW_TRACKING_URI"].startswith("https://")


def test_two_consumers_share_the_shards_by_lease_in_one_store(compose):
    """The consumers take shards by lease from the lease table in the store: they must all use the same
    MongoDB (one lease table), each its own state volume (outbox), and no fixed split of the shards."""
    consumers = {k: v for k, v in compose.items() if k.startswith("consumer-")}
    assert len(consumers) == 2
    uris = {spec["environment"]["MONGODB_URI"] for spec in consumers.values()}
    assert len(uris) == 1 and "@${CONTAINER_MONGODB_HOST:-mongo:27017}/" in uris.pop()
    volumes = [tuple(spec["volumes"]) for spec in consumers.values()]
    assert len(set(volumes)) == 2
    for spec in consumers.values():
        assert spec["command"] == ["churnops-consumer"]
        assert "CONSUMER_COUNT" not in spec["environment"]


def test_services_get_their_configuration_from_the_environment(compose):
    api = compose["api"]["environment"]
    assert api["API_WORKERS"] == "${API_WORKERS:-2}" and api["RUN_ID"] == "${RUN_ID:-}"
    assert api["MONGODB_URI"].startswith("mongodb://churn:${MONGO_PASSWORD:?") and api["API_HOST"] == "0.0.0.0"
    assert "postgresql+asyncpg://" in compose["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    for sim in ("simulate-http", "simulate-kinesis"):
        env = compose[sim]["environment"]
        assert env["SIMULATE_INTERVAL_S"] == "${SIMULATE_INTERVAL_S:-60}" and env["API_URL"] == "http://api:9696"
        assert "--allow-remote" in compose[sim]["command"]
    assert "GF_SECURITY_ADMIN_PASSWORD" in compose["grafana"]["environment"]


def test_mounted_monitoring_files_are_the_checked_ones(compose):
    """Prometheus and Grafana get exactly the files tests/monitoring/test_monitoring_config.py checks."""
    prom = dict(v.split(":")[:2][::-1] for v in compose["prometheus"]["volumes"] if v.startswith("./"))
    assert prom == {
        "/etc/prometheus/prometheus.yml": "./monitoring/prometheus.yml",
        "/etc/prometheus/alerts.yml": "./monitoring/alerts.yml",
    }
    cfg = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    assert cfg["rule_files"] == ["alerts.yml"]  # relative to the config: /etc/prometheus/alerts.yml
    api_targets = {
        t
        for j in cfg["scrape_configs"]
        if j["job_name"].startswith("churn-")
        for sc in j["static_configs"]
        for t in sc["targets"]
    }
    assert api_targets == {"api:9696"} and "api" in compose  # the service name and its container port
    graf = dict(v.split(":")[:2][::-1] for v in compose["grafana"]["volumes"] if v.startswith("./"))
    assert graf["/var/lib/grafana/dashboards"] == "./monitoring/grafana/dashboards"
    assert (ROOT / "monitoring/grafana/dashboards/churn.json").is_file()
    prov = yaml.safe_load((ROOT / "monitoring/grafana/provisioning/dashboards/churn.yml").read_text())
    assert prov["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    assert graf["/etc/grafana/provisioning/datasources"] == "./monitoring/grafana/provisioning/datasources"
    ds = yaml.safe_load((ROOT / "monitoring/grafana/provisioning/datasources/prometheus.yml").read_text())
    assert ds["datasources"][0]["url"] == "http://prometheus:9090" and "prometheus" in compose
