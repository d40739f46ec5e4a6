"""Serve the reports directory on REPORTS_PORT (8888): nginx when installed, else Python.

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
import mimetypes
import os
import shutil
import sys
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit

from churnops.nginx import nginx_args, nginx_binary, nginx_test, user_directive

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


# ---- Python fallback ---------------------------------------------------------------------------------


class ReportsHandler(BaseHTTPRequestHandler):
    root: Path = Path(".")
    server_version = "churn-reports"
    sys_version = ""

    def log_message(self, fmt, *args):  # quiet: the supervisor keeps stderr
        if os.environ.get("REPORTS_ACCESS_LOG"):
            super().log_message(fmt, *args)

    def _deny(self, status: int) -> None:
        body = f"{status} {HTTPStatus(status).phrase}\n".encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        if status == 405:
            self.send_header("Allow", "GET, HEAD")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    MAX_PATH = 4096  # bytes of request target; longer is a 414 (no file path is that long)

    def resolve(self) -> tuple[Path | None, int]:
        if len(self.path) > self.MAX_PATH:
            return None, 414
        try:
            return self._resolve()
        except OSError:  # a name longer than the file system allows (ENAMETOOLONG), and the like
            return None, 404

    def _resolve(self) -> tuple[Path | None, int]:
        raw = urlsplit(self.path).path
        path = unquote(raw)
        if "\x00" in path or "\\" in path or not path.startswith("/"):
            return None, 400
        parts = path.split("/")
        if any(p in ("..", ".") for p in parts):
            return None, 400
        if any(p.startswith(".") for p in parts if p):
            return None, 404
        rel = "/".join(p for p in parts if p)
        root = self.root.resolve()
        target = root / rel if rel else root
        if target.is_dir():
            if rel:  # autoindex off; only the root has an index
                return None, 404
            target = root / "index.html"
        try:
            real = target.resolve(strict=True)
        except (FileNotFoundError, OSError):
            return None, 404
        if target.is_symlink() or root not in real.parents or not real.is_file():
            return None, 404
        return real, 200

    def _serve(self) -> None:
        f, status = self.resolve()
        if f is None:
            return self._deny(status)
        ctype = mimetypes.guess_type(f.name)[0] or "application/octet-stream"
        if ctype.startswith("text/") or ctype == "application/json":
            ctype += "; charset=utf-8"
        size = f.stat().st_size
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(size))
        self.send_header("X-Content-Type-Options", "nosniff")
        if f.name == "index.html":
            self.send_header("Cache-Control", "no-cache")
        elif f.name.startswith("report-"):
            self.send_header("Cache-Control", "public, max-age=604800, immutable")
        else:
            self.send_header("Cache-Control", "public, max-age=300")
        self.end_headers()
        if self.command == "GET":
            with open(f, "rb") as fh:
                shutil.copyfileobj(fh, self.wfile)

    do_GET = _serve
    do_HEAD = _serve

    def _method_not_allowed(self):
        return self._deny(405)

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_TRACE = do_CONNECT = _method_not_allowed


def python_server(reports_dir: Path, port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    handler = type("Handler", (ReportsHandler,), {"root": Path(reports_dir).resolve()})
    ThreadingHTTPServer.allow_reuse_address = True
    srv = ThreadingHTTPServer((host, port), handler)
    srv.daemon_threads = True
    return srv


def main(argv: list[str] | None = None) -> int:
    from churnops.settings import get_settings
    from reporting.index import write_index

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
