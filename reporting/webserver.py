"""Serve the reports directory on REPORTS_PORT (8888): nginx when installed, else Flask (werkzeug).

    python -m reporting.webserver                 # foreground (supervisor): nginx or the fallback
    python -m reporting.webserver --python        # force the Python fallback
    python -m reporting.webserver --render-only   # write <state_dir>/nginx/nginx.conf, print its path
    python -m reporting.webserver --check         # render + `nginx -t`

Both servers follow the same rules: GET/HEAD only (405 otherwise), `/` -> index.html, no
directory listings, no dot-files, no path traversal (`..` in the decoded path: 400), nothing
outside the reports folder (symlinks refused), `index.html` served `no-cache`, report files
cacheable (immutable once written).
"""

from __future__ import annotations

import argparse
import os
import sys
from http import HTTPStatus
from pathlib import Path

from flask import Flask, Response, request, send_from_directory
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

from churnops.nginx import nginx_args, nginx_binary, nginx_test, user_directive
from churnops.settings import get_settings
from reporting.index import write_index

TEMPLATE = Path(__file__).resolve().parent.parent / "nginx" / "nginx.conf"


def render_config(
    reports_dir: Path, prefix: Path, port: int, host: str = "127.0.0.1", template: Path = TEMPLATE
) -> Path:
    """Render the nginx template into `<prefix>/nginx.conf` (creating logs/ and tmp/)."""
    reports_dir, prefix = Path(reports_dir).resolve(), Path(prefix).resolve()
    for d in (reports_dir, prefix / "logs", prefix / "tmp"):
        d.mkdir(parents=True, exist_ok=True)
    for bad in (";", "{", "}", "\n", '"', "'", " ", "$"):
        if bad in str(reports_dir) or bad in str(prefix):
            raise ValueError(f"path {reports_dir} / {prefix} contains {bad!r}: not allowed in an nginx config")
    text = template.read_text()
    for key, value in {
        "REPORTS_DIR": str(reports_dir),
        "PREFIX": str(prefix),
        "PORT": str(int(port)),
        "HOST": host,
        "USER_DIRECTIVE": user_directive(reports_dir),
    }.items():
        text = text.replace("{{" + key + "}}", value)
    out = prefix / "nginx.conf"
    out.write_text(text)
    return out


# ---- Python fallback: Flask's send_from_directory under the same rules ----------------------------

MAX_PATH = 4096  # bytes of request target; longer is a 414 (no file path is that long)


def _deny(status: int) -> Response:
    headers = {"Allow": "GET, HEAD"} if status == 405 else {}
    return Response(
        f"{status} {HTTPStatus(status).phrase}\n", status, headers, content_type="text/plain; charset=utf-8"
    )


def _allowed(root: Path, path: str) -> int:
    """200 when the decoded URL path `path` may be served from `root`, else the status refusing it."""
    if "\x00" in path or "\\" in path or not path.startswith("/"):
        return 400
    parts = path.split("/")
    if any(p in ("..", ".") for p in parts):
        return 400
    if any(p.startswith(".") for p in parts if p):
        return 404
    target = root.joinpath(*(p for p in parts if p)) if path != "/" else root / "index.html"
    try:  # no symlinks, nothing outside the folder (ENAMETOOLONG and the like: 404)
        if target.is_symlink() or root not in target.resolve(strict=True).parents:
            return 404
    except OSError:
        return 404
    return 200


def reports_app(reports_dir: Path) -> Flask:
    """The Flask app serving `reports_dir` (GET/HEAD, the rules of the module docstring)."""
    root = Path(reports_dir).resolve()
    app = Flask(__name__, static_folder=None)
    app.url_map.merge_slashes = False  # `//etc/passwd` is refused, not redirected

    @app.route("/", defaults={"name": ""}, methods=["GET", "HEAD"], provide_automatic_options=False)
    @app.route("/<path:name>", methods=["GET", "HEAD"], provide_automatic_options=False)
    def serve(name: str) -> Response:
        if len(request.environ.get("RAW_URI") or request.full_path) > MAX_PATH:
            return _deny(414)
        status = _allowed(root, request.path)
        if status != 200:
            return _deny(status)
        name = name or "index.html"  # autoindex off: only the root has an index
        resp = send_from_directory(root, name, max_age=None, etag=False)
        resp.headers["X-Content-Type-Options"] = "nosniff"
        base = Path(name).name
        if base == "index.html" or (base.startswith("index-") and base.endswith(".html")):
            resp.headers["Cache-Control"] = "no-cache"
        elif base.startswith("report-"):
            resp.headers["Cache-Control"] = "public, max-age=604800, immutable"
        else:
            resp.headers["Cache-Control"] = "public, max-age=300"
        return resp

    @app.errorhandler(HTTPException)
    def refuse(exc: HTTPException) -> Response:
        return _deny(exc.code or 500)

    return app


class _Handler(WSGIRequestHandler):
    server_version = "churn-reports"
    sys_version = ""

    def log_request(self, *args, **kwargs) -> None:  # quiet: the supervisor keeps stderr
        if os.environ.get("REPORTS_ACCESS_LOG"):
            super().log_request(*args, **kwargs)


def python_server(reports_dir: Path, port: int, host: str = "127.0.0.1") -> BaseWSGIServer:
    """A threaded werkzeug server of `reports_app` (`serve_forever`, `shutdown`, `server_close`)."""
    return make_server(host, port, reports_app(reports_dir), threaded=True, request_handler=_Handler)


def main(argv: list[str] | None = None) -> int:
    s = get_settings()
    p = argparse.ArgumentParser(description="serve the reports directory")
    p.add_argument("--dir", type=Path, default=s.state_path(s.reports_dir, "reports"))
    p.add_argument("--port", type=int, default=s.reports_port)
    p.add_argument("--host", default=s.reports_host)
    p.add_argument("--prefix", type=Path, default=s.state_dir / "nginx", help="nginx pid/log/temp folder")
    p.add_argument("--python", action="store_true", help="use the Python server even when nginx exists")
    p.add_argument("--render-only", action="store_true")
    p.add_argument("--check", action="store_true", help="render and run `nginx -t`")
    a = p.parse_args(argv)
    a.dir.mkdir(parents=True, exist_ok=True)
    if not (a.dir / "index.html").exists():
        write_index(a.dir)
    binary = None if a.python else nginx_binary()
    if binary or a.render_only or a.check:
        conf = render_config(a.dir, a.prefix, a.port, a.host)
        if a.render_only:
            print(conf)
            print(" ".join(nginx_args(conf, binary)))
            return 0
        if a.check:
            if not binary:
                print("nginx not installed", file=sys.stderr)
                return 1
            r = nginx_test(conf)
            print(r.stdout + r.stderr)
            return r.returncode
        print(f"nginx serving {a.dir} on http://{a.host}:{a.port}/ (config {conf})", flush=True)
        os.execv(binary, nginx_args(conf, binary))
    srv = python_server(a.dir, a.port, a.host)
    print(f"python server (no nginx found) serving {a.dir} on http://{a.host}:{a.port}/", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        srv.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
