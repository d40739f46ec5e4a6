"""`make compose-smoke`: the two compose files' own services, run here without Docker.

`python -m ops.composerun smoke` puts a `docker` program first on PATH (this module, `shim`)
and runs the README's Docker sequence with the Makefile itself (`make RUNTIME=docker
setup-model-registry`, `init_aws`, `train`, `setup-model-serve`, `apply-prediction-reporting`),
then `ops.composecheck` inside the network. Each `docker compose ...` the Makefile runs reads
docker-compose-registry.yml and docker-compose-serve.yml themselves (the `-f` files), interpolates
them as compose does (the `--env-file` files, the shell environment, `$$`, `${V:-d}`, `${V:?m}`),
and runs every service of the project's image as a host process with its `command`,
`environment` (plus the Dockerfile's ENV), `healthcheck` and `depends_on`, in start order. Every
service gets its own network namespace on one bridge, and a hosts file (`ip netns exec` mounts
/etc/netns/<ns>/hosts) where every service name resolves, so it is reached at the host and port
compose gives it. Named volumes are folders; a container path in an environment value is mapped to
the folder of the volume mounted there.

Stand-ins, named in the output: LocalStack -> the moto server on 4566; PostgreSQL -> the local
PostgreSQL server, initialised as the image does (POSTGRES_USER/PASSWORD/DB, then the mounted
/docker-entrypoint-initdb.d scripts on a socket-only server: a health check that passes then is a
failure); nginx and Prometheus -> their Debian packages with the compose-mounted configs, the
images' busybox `wget` by a small equivalent. MongoDB and Grafana are not available: the project
services use the embedded SQLite prediction log on one shared folder instead of MONGODB_URI.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml
from dotenv import dotenv_values

from churnops.settings import PROJECT_ROOT

STATE_ENV = "CHURNOPS_COMPOSE_STATE"  # the run's folder: services.json, volumes/, logs/, netns names
SUBNET = "10.221.{n}"
PROJECT_IMAGE = "churnops:local"
NOT_AVAILABLE = {"mongo": "MongoDB", "grafana": "Grafana"}
LOG_STANDIN = "/prediction-log"  # the shared embedded prediction log that replaces MongoDB here
VAR = re.compile(r"\$(\$|\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?+])((?:[^{}]|\{[^{}]*\})*))?\}|([A-Za-z_][A-Za-z0-9_]*))")


# ---- compose model: interpolation, files, order -----------------------------------------------------


class ComposeError(RuntimeError):
    """What compose itself would refuse (a required variable unset, an unknown service)."""


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's interpolation of one string: $$, ${V}, ${V:-d}, ${V-d}, ${V:?m}, ${V?m}, ${V:+a}, ${V+a}."""

    def one(m: re.Match) -> str:
        if m.group(1) == "$":
            return "$"
        if m.group(5):  # $NAME
            return env.get(m.group(5), "")
        name, op, arg = m.group(2), m.group(3), m.group(4) or ""
        val = env.get(name)
        empty = val is None or (op is not None and op.startswith(":") and val == "")
        if op in (":-", "-"):
            return interpolate(arg, env) if empty else val
        if op in (":?", "?"):
            if empty:
                raise ComposeError(f"required variable {name} is missing a value: {arg}")
            return val
        if op in (":+", "+"):
            return "" if empty else interpolate(arg, env)
        return val or ""

    return VAR.sub(one, value)


def interpolate_tree(node, env: dict[str, str]):
    if isinstance(node, str):
        return interpolate(node, env)
    if isinstance(node, list):
        return [interpolate_tree(v, env) for v in node]
    if isinstance(node, dict):
        return {k: interpolate_tree(v, env) for k, v in node.items()}
    return node


def read_env_file(path: Path) -> dict[str, str]:
    return {k: v or "" for k, v in dotenv_values(path, interpolate=False).items()}


def load_project(files: list[Path], env_files: list[Path], shell: dict[str, str]) -> tuple[dict, dict]:
    """(services, volumes) of the merged files; variables: env files in order, the shell environment wins."""
    env: dict[str, str] = {}
    for f in env_files:
        env.update(read_env_file(f))
    env.update(shell)
    services: dict[str, dict] = {}
    volumes: dict[str, object] = {}
    for f in files:
        doc = interpolate_tree(yaml.safe_load(f.read_text()), env)
        for name, spec in (doc.get("services") or {}).items():
            services.setdefault(name, {}).update(spec)
        volumes.update(doc.get("volumes") or {})
    return services, volumes


def environment_of(spec: dict) -> dict[str, str]:
    envs = spec.get("environment") or {}
    if isinstance(envs, list):
        envs = dict(e.split("=", 1) if "=" in e else (e, "") for e in envs)
    return {k: "" if v is None else str(v) for k, v in envs.items()}


def depends(spec: dict) -> dict[str, str]:
    dep = spec.get("depends_on") or {}
    return {d: "service_started" for d in dep} if isinstance(dep, list) else {d: c["condition"] for d, c in dep.items()}


def start_order(services: dict, names: list[str], with_deps: bool = True) -> list[str]:
    """`names` and (with_deps) what they depend on, dependencies first."""
    order: list[str] = []

    def visit(n: str, stack: tuple = ()):
        if n not in services:
            raise ComposeError(f"no such service: {n}")
        if n in order:
            return
        if with_deps:
            for d in depends(services[n]):
                if d not in stack:
                    visit(d, (*stack, n))
        order.append(n)

    for n in names:
        visit(n)
    return order if with_deps else [n for n in order if n in names]


def image_env(dockerfile: Path) -> dict[str, str]:
    """The ENV of the Dockerfile's last stage (what every container of the image starts with)."""
    text = dockerfile.read_text().replace("\\\n", " ")
    last = text[text.rindex("\nFROM ") :]
    args = dict(re.findall(r"^ARG (\w+)=(\S*)", last, re.M))
    out: dict[str, str] = {}
    for line in re.findall(r"^ENV (.+)$", last, re.M):
        for tok in shlex.split(line):
            k, _, v = tok.partition("=")
            out[k] = re.sub(r"\$\{?(\w+)\}?", lambda m: os.environ.get(m.group(1), args.get(m.group(1), "")), v)
    return out


# ---- the run's state ---------------------------------------------------------------------------------


class Run:
    """One emulated compose project: its folder, namespaces, processes."""

    def __init__(self, state: Path):
        self.state = state
        self.file = state / "services.json"
        self.data = json.loads(self.file.read_text()) if self.file.exists() else {"net": {}, "procs": {}}
        self.tag = state.name[-6:]

    def save(self) -> None:
        self.file.write_text(json.dumps(self.data, indent=1))

    def say(self, msg: str) -> None:
        print(f"[compose-emulation] {msg}", flush=True)

    def volume(self, name: str) -> Path:
        p = self.state / "volumes" / name
        p.mkdir(parents=True, exist_ok=True)
        os.chmod(p, 0o777)
        return p

    # -- network: one namespace per service, a bridge, a hosts file naming every service ----------
    def netns(self, service: str, all_services: list[str]) -> str:
        net = self.data["net"]
        if not net:
            br = f"csb{self.tag}"
            sh(
                f"ip link add {br} type bridge && ip addr add {SUBNET.format(n='0.1')}/16 dev {br} && ip link set {br} up"
            )
            net["bridge"], net["ns"] = br, {}
        for s in [*all_services, service]:
            if s in net["ns"]:
                continue
            i = len(net["ns"]) + 2
            ns, veth = f"cs{self.tag}-{s}"[:40], f"cv{self.tag}{i}"
            ip = SUBNET.format(n=f"{i // 250}.{i % 250 + 2}")
            sh(
                f"ip netns add {ns} && ip link add {veth} type veth peer name eth0 netns {ns} && "
                f"ip link set {veth} master {net['bridge']} up && ip -n {ns} addr add {ip}/16 dev eth0 && "
                f"ip -n {ns} link set eth0 up && ip -n {ns} link set lo up"
            )
            net["ns"][s] = {"ns": ns, "ip": ip, "veth": veth}
        hosts = "127.0.0.1 localhost\n" + "".join(
            f"{v['ip']} {k}\n" for k, v in net["ns"].items() if not k.startswith("run-")
        )
        for v in net["ns"].values():
            d = Path("/etc/netns") / v["ns"]
            d.mkdir(parents=True, exist_ok=True)
            (d / "hosts").write_text(hosts)
        self.save()
        return net["ns"][service]["ns"]

    def teardown(self) -> None:
        """Stop every process, delete the namespaces, the hosts files and the bridge (as `shim` calls left them)."""
        if self.file.exists():
            self.data = json.loads(self.file.read_text())
        for name in list(self.data["procs"]):
            self.stop(name)
        net = self.data.get("net") or {}
        for v in (net.get("ns") or {}).values():
            subprocess.run(["ip", "netns", "del", v["ns"]], capture_output=True)
            subprocess.run(["ip", "link", "del", v.get("veth", "")], capture_output=True)
            shutil.rmtree(Path("/etc/netns") / v["ns"], ignore_errors=True)
        if net.get("bridge"):
            subprocess.run(["ip", "link", "del", net["bridge"]], capture_output=True)
        self.data["net"] = {}
        self.save()

    # -- processes -----------------------------------------------------------------------------------
    def exit_file(self, name: str) -> Path:
        return self.state / "exit" / name

    def alive(self, name: str) -> bool:
        """Whether the service's process runs; when it ended, its exit code is in procs[name]["exit"]."""
        p = self.data["procs"].get(name)
        if not p:
            return False
        try:  # reap it when this invocation started it
            os.waitpid(p["pid"], os.WNOHANG)
        except ChildProcessError:
            pass
        try:
            running = "Z" != Path(f"/proc/{p['pid']}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            running = False
        if running:
            return True
        try:
            p["exit"] = int(self.exit_file(name).read_text())
        except (OSError, ValueError):
            p["exit"] = "killed"
        self.save()
        return False

    def stop(self, name: str) -> None:
        p = self.data["procs"].pop(name, None)
        self.save()
        if not p:
            return
        try:
            os.killpg(p["pid"], signal.SIGTERM)
        except OSError:
            return
        for _ in range(100):
            try:
                os.killpg(p["pid"], 0)
            except OSError:
                return
            time.sleep(0.1)
        try:
            os.killpg(p["pid"], signal.SIGKILL)
        except OSError:
            pass


def duration(value: object) -> float:
    """Seconds of a compose duration (`10s`, `1m30s`, `500ms`)."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001, "us": 1e-6}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|us|h|m|s)", str(value))
    return sum(float(n) * units[u] for n, u in parts)


def sh(cmd: str) -> None:
    out = subprocess.run(cmd, shell=True, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(f"{cmd}: {out.stderr.strip()}")


BUSYBOX_WGET = """#!/bin/sh
# the busybox `wget` of the alpine / busybox images (its -q still prints an HTTP error on stderr)
out=""; url=""
while [ $# -gt 0 ]; do case "$1" in -O) out="$2"; shift 2;; -q|-S|--spider) shift;; *) url="$1"; shift;; esac; done
code=$(curl -s -o "${out:-/dev/null}" -w '%{http_code}' --max-time 5 "$url") || { echo "wget: can't connect to remote host" >&2; exit 1; }
case "$code" in 2*|3*) exit 0;; *) echo "wget: server returned error: HTTP/1.1 $code" >&2; exit 1;; esac
"""


# ---- one `docker compose ...` invocation ----------------------------------------------------------


class Compose:
    """Parses the arguments the Makefile passes and does what compose would, on host processes."""

    def __init__(self, run: Run, files: list[Path], env_files: list[Path]):
        self.run, self.files = run, files
        self.services, self.volumes = load_project(files, env_files, dict(os.environ))
        self.root = files[0].resolve().parent
        self.image = image_env(self.root / "Dockerfile")
        self.bin = Path(sys.executable).parent
        self.tools = run.state / "tools"
        self.tools.mkdir(exist_ok=True)
        (self.tools / "wget").write_text(BUSYBOX_WGET)
        os.chmod(self.tools / "wget", 0o755)

    # -- what a container of `name` gets ----------------------------------------------------------
    def mounts(self, name: str, extra: list[str] = ()) -> dict[str, Path]:
        out: dict[str, Path] = {}
        for v in [*(self.services[name].get("volumes") or []), *extra]:
            src, dst = v.split(":")[:2]
            if src.startswith(("./", "/")):
                out[dst] = (self.root / src).resolve() if src.startswith("./") else Path(src)
            else:
                out[dst] = self.run.volume(src)
        if self.project(name):
            out[LOG_STANDIN] = self.run.volume("emulated-prediction-log")
        return out

    def project(self, name: str) -> bool:
        return self.services[name].get("image") == PROJECT_IMAGE

    def env(self, name: str, overrides: dict[str, str] | None = None, extra_mounts: list[str] = ()) -> dict[str, str]:
        spec, mounts = self.services[name], self.mounts(name, extra_mounts)
        env = {**(self.image if self.project(name) else {}), **environment_of(spec), **(overrides or {})}
        if self.project(name):
            env.pop("MONGODB_URI", None)
            env["PREDICTION_DB_PATH"] = f"{LOG_STANDIN}/predictions.db"
        for k, v in env.items():  # a container path -> the folder mounted there
            for dst in sorted(mounts, key=len, reverse=True):
                if v == dst or v.startswith(dst.rstrip("/") + "/"):
                    env[k] = str(mounts[dst]) + v[len(dst) :]
                    break
        env["PATH"] = f"{self.bin}:{self.tools}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        env.setdefault("HOME", str(self.mounts(name).get("/data", self.run.state)))
        return env

    def command(self, name: str, argv: list[str] | None = None) -> list[str]:
        """The process that stands for the container (the project's console scripts, or a stand-in)."""
        spec = self.services[name]
        if self.project(name):
            cmd = argv or spec.get("command") or ["churnops-api"]
            return [cmd] if isinstance(cmd, str) else list(cmd)
        image = spec.get("image", "")
        st = self.run.state
        if image.startswith("localstack/"):
            return [str(self.bin / "churnops-moto"), "-H", "0.0.0.0", "-p", "4566"]
        if image.startswith("postgres:"):
            return [
                sys.executable,
                "-m",
                "ops.composerun",
                "postgres",
                str(self.mounts(name)["/var/lib/postgresql/data"]),
            ]
        if image.startswith("prom/prometheus"):
            m = self.mounts(name)
            return [
                "prometheus",
                f"--config.file={m['/etc/prometheus/prometheus.yml']}",
                f"--storage.tsdb.path={m['/prometheus']}",
                "--web.listen-address=0.0.0.0:9090",
            ]
        if image.startswith("nginx:"):
            m = self.mounts(name)
            conf = m["/etc/nginx/conf.d/default.conf"].read_text().replace("/srv/reports", str(m["/srv/reports"]))
            d = st / "nginx"
            (d / "logs").mkdir(parents=True, exist_ok=True)
            (d / "default.conf").write_text(conf)
            (d / "nginx.conf").write_text(
                f"daemon off; pid {d}/nginx.pid; error_log {d}/logs/error.log warn; user nobody nogroup;\n"
                f"events {{}}\nhttp {{ include /etc/nginx/mime.types; access_log {d}/logs/access.log;\n"
                f"client_body_temp_path {d}/cb; proxy_temp_path {d}/px; fastcgi_temp_path {d}/fc;\n"
                f"uwsgi_temp_path {d}/uw; scgi_temp_path {d}/sc; include {d}/default.conf; }}\n"
            )
            return ["nginx", "-p", str(d), "-c", str(d / "nginx.conf")]
        raise ComposeError(f"{name}: no stand-in for image {image}")

    def standin(self, name: str) -> str | None:
        image = self.services[name].get("image", "")
        for prefix, what in (
            ("localstack/", "LocalStack -> moto server on 4566"),
            ("postgres:", "PostgreSQL image -> local PostgreSQL server, initialised as the image does"),
            ("prom/prometheus", "Prometheus image -> Debian prometheus with ./monitoring/prometheus.yml"),
            ("nginx:", "nginx image -> Debian nginx with ./nginx/reports.compose.conf"),
        ):
            if image.startswith(prefix):
                return what
        return None

    def healthcheck(self, name: str) -> list[str] | None:
        test = (self.services[name].get("healthcheck") or {}).get("test")
        if not test or test[0] == "NONE":
            return None
        image = self.services[name].get("image", "")
        if image.startswith("localstack/"):  # moto has no /_localstack/health
            return ["curl", "-fsS", "http://127.0.0.1:4566/moto-api/"]
        if test[0] == "CMD-SHELL":
            return ["sh", "-c", test[1]]
        return list(test[1:]) if test[0] == "CMD" else list(test)

    # -- processes ----------------------------------------------------------------------------------
    def wrap(self, name: str, argv: list[str], ns_of: str) -> list[str]:
        ns = self.run.netns(ns_of, [s for s in self.services if s not in NOT_AVAILABLE])
        pre = []
        if self.services[name].get("image", "").startswith("postgres:"):
            sock = self.run.volume("emulated-postgres-socket")
            pre = ["sh", "-c", f'mount --bind {sock} /var/run/postgresql && exec "$@"', "-"]
        return ["ip", "netns", "exec", ns, *pre, *argv]

    def start(self, name: str) -> None:
        if self.run.alive(name):
            return
        if name in NOT_AVAILABLE:
            self.run.say(
                f"{name}: {NOT_AVAILABLE[name]} is not available here: not started; the project services "
                f"use the embedded SQLite prediction log on one shared folder ({LOG_STANDIN}) instead"
            )
            return
        what = self.standin(name)
        self.run.say(f"start {name}" + (f" ({what})" if what else f": {' '.join(self.command(name))}"))
        logs = self.run.state / "logs"
        logs.mkdir(exist_ok=True)
        env = self.env(name)
        if self.services[name].get("image", "").startswith("postgres:"):
            env["PHASE_FILE"] = str(self.run.state / "postgres.phase")
            env["INITDB_SCRIPTS"] = os.pathsep.join(
                str(src) for dst, src in self.mounts(name).items() if dst.startswith("/docker-entrypoint-initdb.d/")
            )
        exit_file = self.run.exit_file(name)
        exit_file.parent.mkdir(exist_ok=True)
        exit_file.unlink(missing_ok=True)
        record = ["sh", "-c", f'"$@"; echo $? > {exit_file}', "-", *self.command(name)]
        with open(logs / f"{name}.log", "ab") as log:
            p = subprocess.Popen(
                self.wrap(name, record, name),
                env=env,
                cwd=self.root,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        self.run.data["procs"][name] = {"pid": p.pid, "started": time.time()}
        self.run.save()

    def healthy(self, name: str) -> bool:
        hc = self.healthcheck(name)
        if hc is None:
            return self.run.alive(name)
        timeout = float(str((self.services[name].get("healthcheck") or {}).get("timeout", "5s")).rstrip("s"))
        try:
            out = subprocess.run(
                self.wrap(name, hc, name),
                env=self.env(name),
                cwd=self.root,
                capture_output=True,
                timeout=max(timeout, 10.0),
            )
        except subprocess.TimeoutExpired:
            return False
        ok = out.returncode == 0
        phase = self.run.state / "postgres.phase"
        if (
            ok
            and self.services[name].get("image", "").startswith("postgres:")
            and phase.exists()
            and phase.read_text() == "init"
        ):
            raise ComposeError(
                "postgres: the health check passed while the server was still initialising "
                "(socket only, no TCP, databases not all created): it proves nothing"
            )
        return ok

    def patience_s(self, name: str) -> float:
        """How long compose waits before it calls the service unhealthy: start_period + interval x retries."""
        hc = self.services[name].get("healthcheck") or {}
        total = duration(hc.get("start_period", "0s")) + duration(hc.get("interval", "30s")) * int(hc.get("retries", 3))
        return min(max(total, 60.0), 420.0)

    def wait_condition(self, name: str, cond: str, timeout_s: float | None = None) -> None:
        if name in NOT_AVAILABLE:
            return
        timeout_s = timeout_s or (420.0 if cond == "service_completed_successfully" else self.patience_s(name))
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if cond == "service_completed_successfully":
                if not self.run.alive(name):
                    code = self.run.data["procs"].get(name, {}).get("exit")
                    if code == 0:
                        return
                    raise ComposeError(f"{name} did not complete successfully (exit {code}); see its log")
            else:
                if not self.run.alive(name):
                    raise ComposeError(
                        f"{name} exited (code {self.run.data['procs'].get(name, {}).get('exit')}); "
                        f"log tail:\n{self.tail(name, 30)}"
                    )
                if cond == "service_started" or self.healthy(name):
                    return
            time.sleep(1.0)
        raise ComposeError(
            f"{name}: not {cond.removeprefix('service_')} after {timeout_s:.0f} s; log tail:\n{self.tail(name, 30)}"
        )

    def tail(self, name: str, n: int) -> str:
        p = self.run.state / "logs" / f"{name}.log"
        return "\n".join(p.read_text(errors="replace").splitlines()[-n:]) if p.exists() else "(no log)"

    def up(self, names: list[str], no_deps: bool, wait: bool, recreate: bool) -> int:
        names = names or list(self.services)
        order = start_order(self.services, names, not no_deps)
        for n in order:
            for dep, cond in depends(self.services[n]).items():
                if not no_deps:
                    self.wait_condition(dep, cond)
            if recreate and n in names:
                self.run.stop(n)
            self.start(n)
        if wait:
            for n in order:
                if n in NOT_AVAILABLE:
                    continue
                if (self.services[n].get("restart") == "no") and not self.run.alive(n):
                    self.wait_condition(n, "service_completed_successfully")
                elif self.run.alive(n) or n in self.run.data["procs"]:
                    self.wait_condition(n, "service_healthy" if self.healthcheck(n) else "service_started")
                self.run.say(f"{n}: {'healthy' if self.healthcheck(n) else 'done'}")
        return 0

    def one_off(self, name: str, argv: list[str], no_deps: bool, env: dict[str, str], vols: list[str]) -> int:
        if not no_deps:
            self.up(list(depends(self.services[name])), False, False, False)
            for dep, cond in depends(self.services[name]).items():
                self.wait_condition(dep, cond)
        cmd = argv or self.command(name)
        self.run.say(f"run {name}: {' '.join(cmd)}")
        full = self.env(name, env, vols)
        return subprocess.run(self.wrap(name, cmd, f"run-{name}"), env=full, cwd=self.root).returncode


def shim(argv: list[str]) -> int:
    """`docker compose [-p P] [--env-file F]... [-f F]... <up|run|down|ps|logs|stop|build> ...`."""
    if not argv or argv[0] != "compose":
        print(
            f"docker (compose emulation): only `docker compose` is emulated, not `docker {' '.join(argv)}`",
            file=sys.stderr,
        )
        return 2
    args, files, env_files = argv[1:], [], []
    while args and args[0].startswith("-"):
        opt = args.pop(0)
        val = args.pop(0)
        (files if opt in ("-f", "--file") else env_files if opt == "--env-file" else []).append(Path(val).resolve())
    run = Run(Path(os.environ[STATE_ENV]))
    try:
        c = Compose(run, files, env_files)
        verb, rest = args[0], args[1:]
        flags = {a for a in rest if a.startswith("-")}
        if verb == "up":
            names = [a for a in rest if not a.startswith("-")]
            return c.up(names, "--no-deps" in flags, "--wait" in flags, "--force-recreate" in flags)
        if verb == "run":
            env, vols, i, no_deps = {}, [], 0, False
            while rest[i].startswith("-"):
                a = rest[i]
                if a in ("-e", "--env", "-v", "--volume", "--user", "-u"):
                    v = rest[i + 1]
                    if a in ("-e", "--env"):
                        k, eq, val = v.partition("=")
                        env[k] = val if eq else os.environ.get(k, "")
                    elif a in ("-v", "--volume"):
                        vols.append(v)
                    i += 2
                    continue
                no_deps |= a == "--no-deps"
                i += 1
            return c.one_off(rest[i], rest[i + 1 :], no_deps, env, vols)
        if verb in ("down", "stop"):
            for n in [a for a in rest if not a.startswith("-")] or list(run.data["procs"]):
                run.stop(n)
            return 0
        if verb == "ps":
            for n, p in run.data["procs"].items():
                print(f"{n:18} {'running' if run.alive(n) else 'exited ' + str(p.get('exit'))}")
            return 0
        if verb == "logs":
            for n in [a for a in rest if not a.startswith("-") and not a.isdigit()] or list(run.data["procs"]):
                print(f"== {n}\n{c.tail(n, 100)}")
            return 0
        if verb == "build":
            run.say("build: the image is this checkout with its .venv (the Dockerfile's ENV is applied)")
            return 0
        print(f"docker compose {verb}: not emulated", file=sys.stderr)
        return 2
    except ComposeError as exc:
        print(f"ERROR (compose emulation): {exc}", file=sys.stderr)
        return 1


# ---- the PostgreSQL stand-in: the official image's entrypoint, on the local server ------------------


def postgres_standin(datadir: str) -> int:
    """initdb (POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB), the init scripts on a socket-only
    server (the image's init phase; PHASE_FILE says `init`), then the server on 0.0.0.0:5432."""
    user, pw, db = os.environ["POSTGRES_USER"], os.environ["POSTGRES_PASSWORD"], os.environ.get("POSTGRES_DB", "")
    phase = Path(os.environ["PHASE_FILE"])
    found = shutil.which("postgres") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/postgres"))), None)
    data, bindir = Path(datadir) / "pgdata", Path(str(found or "/usr/local/bin/postgres")).parent
    sock = "/var/run/postgresql"
    as_pg = ["runuser", "-u", "postgres", "--"]
    subprocess.run(["chown", "postgres", datadir, sock], check=True)
    fresh = not (data / "PG_VERSION").exists()
    if fresh:
        phase.write_text("init")
        pwfile = Path(datadir) / ".pw"
        pwfile.write_text(pw)
        subprocess.run(["chown", "postgres", str(pwfile)], check=True)
        subprocess.run(
            [
                *as_pg,
                str(bindir / "initdb"),
                "-D",
                str(data),
                "-U",
                user,
                "--pwfile",
                str(pwfile),
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ],
            check=True,
        )
        pwfile.unlink()
        with open(data / "pg_hba.conf", "a") as f:
            f.write("host all all all scram-sha-256\n")
        subprocess.run(
            [*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-o", f"-c listen_addresses='' -k {sock}", "start"],
            check=True,
        )
        psql = ["psql", "-h", sock, "-U", user, "-v", "ON_ERROR_STOP=1"]
        if db and db != "postgres":
            subprocess.run([*psql, "-d", "postgres", "-c", f'CREATE DATABASE "{db}"'], check=True)
        time.sleep(3.0)  # the init phase lasts a few health-check polls, as with the image's scripts
        for script in sorted(Path("/docker-entrypoint-initdb.d").glob("*.sql")) + sorted(
            Path(p) for p in os.environ.get("INITDB_SCRIPTS", "").split(os.pathsep) if p
        ):
            subprocess.run([*psql, "-d", db or "postgres", "-f", str(script)], check=True)
        subprocess.run([*as_pg, str(bindir / "pg_ctl"), "-D", str(data), "-w", "-m", "fast", "stop"], check=True)
    phase.write_text("ready")
    os.execvp("runuser", [*as_pg, str(bindir / "postgres"), "-D", str(data), "-c", "listen_addresses=*", "-k", sock])
    return 1


# ---- make compose-smoke ----------------------------------------------------------------------------


def readme_sequence(root: Path) -> list[str]:
    """The make targets of the README's Docker sequence (the first ```bash block under "## With Docker")."""
    text = (root / "README.md").read_text()
    block = text[text.index("## With Docker") :]
    block = block[block.index("```bash") + 7 :]
    block = block[: block.index("```")]
    return [ln.split()[1] for ln in block.splitlines() if ln.startswith("make ") and "RUNTIME=docker" in ln]


COMPOSE_FILES = ("docker-compose-registry.yml", "docker-compose-serve.yml")


def workdir(root: Path, state: Path) -> Path:
    """Where make runs: links to the checkout's files (the compose files, Makefile, configs: read in
    place), a copy of .env.local (the pin writes RUN_ID into it) and a fresh .stack (the secrets)."""
    wd = state / "checkout"
    wd.mkdir()
    for entry in root.iterdir():
        if entry.name in (".stack", ".venv", ".git") or entry.name.startswith(".env."):
            continue
        (wd / entry.name).symlink_to(entry)
    for env in root.glob(".env.*"):
        shutil.copy(env, wd / env.name)
    return wd


def demo_problems(wd: Path, env: dict[str, str]) -> list[str]:
    """What `make RUNTIME=docker demo` would do wrong, read from `make -n` (nothing runs)."""
    out = subprocess.run(["make", "-n", "RUNTIME=docker", "demo"], cwd=wd, env=env, capture_output=True, text=True)
    text = out.stdout + out.stderr
    problems = []
    if "-m venv" in text or "pip install" in text:
        problems.append("RUNTIME=docker make demo builds the host venv")
    if "churnops-train" not in text:
        problems.append("RUNTIME=docker make demo does not train")
    for line in text.splitlines():
        if "docker compose" in line and " up " in line and "--no-deps" in line:
            problems.append(
                f"RUNTIME=docker make demo starts services without their dependencies: {line.strip()[-120:]}"
            )
    return problems


def smoke(root: Path = PROJECT_ROOT, keep: bool = False) -> int:
    state = Path(tempfile.mkdtemp(prefix="compose-smoke-"))
    os.chmod(state, 0o755)
    run = Run(state)
    bindir = state / "bin"
    bindir.mkdir()
    (bindir / "docker").write_text(f'#!/bin/sh\nexec {sys.executable} -m ops.composerun shim "$@"\n')
    os.chmod(bindir / "docker", 0o755)
    wd = workdir(root, state)
    env = {k: v for k, v in os.environ.items() if k not in ("ENV_FILE", "STATE_DIR", "MAKEFLAGS", "MAKELEVEL")}
    env.update({"PATH": f"{bindir}:{env.get('PATH', '')}", STATE_ENV: str(state), "N_TRIALS": "3"})
    run.say(f"files: {', '.join(str(root / f) for f in COMPOSE_FILES)} (read in place); state {state}")
    for name, what in NOT_AVAILABLE.items():
        run.say(f"{name}: {what} is not available here; checks that need it run only in the CI `compose` job")
    failures = [f"demo: {p}" for p in demo_problems(wd, env)]
    for p in failures:
        run.say(f"FAIL {p}")
    sequence = readme_sequence(root)
    run.say(f"the README's Docker sequence: {', '.join(sequence)}")
    try:
        for target in sequence:
            run.say(f"make RUNTIME=docker {target}")
            rc = subprocess.run(["make", "--no-print-directory", "RUNTIME=docker", target], cwd=wd, env=env).returncode
            if rc:
                failures.append(f"make RUNTIME=docker {target} (exit {rc})")
                run.say(f"FAIL make RUNTIME=docker {target} (exit {rc})")
        secrets = read_env_file(wd / ".stack" / "docker" / "secrets.env")
        dc = [
            "docker",
            "compose",
            "-p",
            "churnops",
            "--env-file",
            ".env.local",
            "--env-file",
            ".stack/docker/secrets.env",
        ]
        for f in COMPOSE_FILES:
            dc += ["-f", f]
        check = [
            *dc,
            "run",
            "--rm",
            "--no-deps",
            "-e",
            f"ADMIN_TOKEN={secrets.get('ADMIN_TOKEN', '')}",
            "prefect-worker",
            "python",
            "-m",
            "ops.composecheck",
        ]
        rc = subprocess.run(check, cwd=wd, env=env).returncode
        if rc:
            failures.append("smoke checks (ops.composecheck)")
        if failures:
            subprocess.run([*dc, "ps"], cwd=wd, env=env)
    finally:
        if not keep:
            run.teardown()
    run.say("FAILED: " + "; ".join(failures) + f" (logs in {state}/logs)" if failures else "compose smoke passed")
    if not failures and not keep:
        shutil.rmtree(state, ignore_errors=True)
    return 1 if failures else 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["shim"]:
        return shim(args[1:])
    if args[:1] == ["postgres"]:
        return postgres_standin(args[1])
    if args[:1] == ["smoke"]:
        if os.geteuid() != 0 or not shutil.which("ip"):
            print("compose-smoke needs root and `ip` (network namespaces)", file=sys.stderr)
            return 2
        return smoke(Path(args[1]).resolve() if len(args) > 1 else PROJECT_ROOT, keep=os.environ.get("KEEP") == "1")
    print("usage: python -m ops.composerun smoke [CHECKOUT] | shim ... | postgres DIR", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
