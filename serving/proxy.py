"""nginx in front of the prediction API: the embedded stack's buffering proxy on API_PORT.

    python -m serving.proxy                 # render the config, run nginx in the foreground (supervisor)
    python -m serving.proxy --render-only   # write <state_dir>/nginx-api/nginx.conf, print its path
    python -m serving.proxy --check         # render + `nginx -t`

nginx listens on API_HOST:API_PORT (9696) and passes whole requests to the API server (granian, see
serving/server.py) on 127.0.0.1:API_INTERNAL_PORT (ops.stack sets API_BIND to it), so a client that
sends half a request and stops ties up an nginx connection (answered 408 by nginx), not an API worker
thread. Used when nginx is installed and API_PROXY=auto; without nginx granian serves the port itself
(serving/edge.py bounds bodies; granian drops half-sent headers after API_READ_TIMEOUT_S).
"""

from __future__ import annotations

import argparse
import math
import os
import subprocess
import sys
from pathlib import Path

from churnops.nginx import nginx_args, nginx_binary, user_directive
from churnops.settings import Settings, get_settings

TEMPLATE = Path(__file__).resolve().parent.parent / "nginx" / "api-proxy.conf"


def proxy_enabled(s: Settings) -> bool:
    """nginx goes in front of the API: API_PROXY=auto and an nginx binary is installed."""
    return s.api_proxy == "auto" and nginx_binary() is not None


def upstream_bind(s: Settings) -> str:
    """Where gunicorn listens behind the proxy (loopback only)."""
    return f"127.0.0.1:{s.api_internal_port}"


def render_config(s: Settings, prefix: Path | None = None, template: Path = TEMPLATE) -> Path:
    """Render the template into `<prefix>/nginx.conf` (default prefix <state_dir>/nginx-api)."""
    prefix = Path(prefix or s.state_dir / "nginx-api").resolve()
    for d in (prefix / "logs", prefix / "tmp"):
        d.mkdir(parents=True, exist_ok=True)
    for bad in (";", "{", "}", "\n", '"', "'", " ", "$"):
        if bad in str(prefix):
            raise ValueError(f"path {prefix} contains {bad!r}: not allowed in an nginx config")
    if s.api_port == s.api_internal_port:
        raise ValueError(f"API_INTERNAL_PORT must differ from API_PORT ({s.api_port})")
    values = {
        "PREFIX": str(prefix),
        "HOST": s.api_host,
        "PORT": str(int(s.api_port)),
        "UPSTREAM": upstream_bind(s),
        "READ_TIMEOUT": str(max(1, math.ceil(s.api_read_timeout_s))),
        "MAX_BODY": str(int(s.max_body_bytes)),
        "IMAGE_MAX_BODY": str(int(s.image_max_body_bytes)),  # POST /predict/image
        "CONN_PER_CLIENT": str(int(s.api_conn_per_client)),  # limit_conn per client address
        "USER_DIRECTIVE": user_directive(prefix),
    }
    text = template.read_text()
    for key, value in values.items():
        text = text.replace("{{" + key + "}}", value)
    out = prefix / "nginx.conf"
    out.write_text(text)
    return out


def main(argv: list[str] | None = None) -> int:
    s = get_settings()
    p = argparse.ArgumentParser(description="nginx in front of the prediction API")
    p.add_argument("--prefix", type=Path, default=None, help="nginx pid/log/temp folder")
    p.add_argument("--render-only", action="store_true")
    p.add_argument("--check", action="store_true", help="render and run `nginx -t`")
    a = p.parse_args(argv)
    conf = render_config(s, a.prefix)
    binary = nginx_binary()
    if a.render_only:
        print(conf)
        return 0
    if binary is None:
        print("nginx not installed (make system-deps installs it)", file=sys.stderr)
        return 1
    if a.check:
        r = subprocess.run(nginx_args(conf, binary) + ["-t"], capture_output=True, text=True, timeout=30)
        print(r.stdout + r.stderr)
        return r.returncode
    print(f"nginx on http://{s.api_host}:{s.api_port}/ -> gunicorn on {upstream_bind(s)} (config {conf})", flush=True)
    os.execv(binary, nginx_args(conf, binary))
    return 0  # not reached


if __name__ == "__main__":
    sys.exit(main())
