"""WSGI middleware that answers the common `POST /predict` before Flask's request machinery.

Flask's request context, routing, hooks and response objects cost a few hundred microseconds of
CPU per request on a small machine, several times the prediction itself; under load that time
is queueing, and it set the p99. The middleware (installed as `app.wsgi_app`, Flask's documented
hook) reads the body once and runs the same handler the Flask view runs. When the handler raises
(invalid JSON or features, model not loaded, anything), nothing has been logged yet and the
request goes to the Flask app unchanged, with the body re-attached, so every error answer,
status code and rejection metric stays exactly what the Flask view gives.
"""

from __future__ import annotations

import io
from typing import Callable

JSON_HEADERS = [("Content-Type", "application/json")]


class FastPredict:
    """Serve `POST <path>` through `handler(body) -> response bytes` (or every path `match` gives a
    handler for); all else (and errors) to `app`."""

    def __init__(
        self,
        app,
        handler: Callable[[bytes], bytes],
        max_body_bytes: int,
        on_ok: Callable[[], None],
        path: str = "/predict",
        accept: Callable[[dict], bool] | None = None,
        match: Callable[[str], Callable[[bytes], bytes] | None] | None = None,
    ):
        self.app = app
        self.accept = accept
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.on_ok = on_ok
        self.path = path
        self.match = match  # a family of paths: PATH_INFO -> its handler, or None (then `path` is unused)

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        if self.match is None:
            if environ.get("PATH_INFO") != self.path:
                return self.app(environ, start_response)
            handler = self.handler
        else:
            handler = self.match(environ.get("PATH_INFO", ""))
            if handler is None:
                return self.app(environ, start_response)
        try:
            n = int(environ.get("CONTENT_LENGTH") or -1)
        except ValueError:
            n = -1
        if not 0 < n <= self.max_body_bytes or environ.get("HTTP_TRANSFER_ENCODING"):
            return self.app(environ, start_response)
        if self.accept is not None and not self.accept(environ):  # the Flask view refuses it (Host, type)
            return self.app(environ, start_response)
        raw = environ["wsgi.input"].read(n)
        try:
            body = handler(raw)
        except Exception:  # the Flask view answers it (same handler, full error handling)
            environ["wsgi.input"] = io.BytesIO(raw)
            environ["CONTENT_LENGTH"] = str(len(raw))
            return self.app(environ, start_response)
        self.on_ok()
        start_response("200 OK", JSON_HEADERS + [("Content-Length", str(len(body)))])
        return [body]
