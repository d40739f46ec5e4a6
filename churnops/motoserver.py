"""The embedded stack's S3 + Kinesis endpoint: moto's server, with Kinesis calls taken one at a time.

    python -m churnops.motoserver -H 127.0.0.1 -p 4566

moto (5.2.5) numbers a Kinesis record as the shard's highest sequence number + 1 without a lock
(`moto.kinesis.models.Shard.put_record`), and its server answers requests on several threads. Two
put_records on one stream at the same moment can then get the same number, and one record silently
replaces the other. The stream consumer polls shards in parallel threads, and several consumers
may run at once, so on plain `moto_server` a result could vanish from `results`. Real Kinesis has
no such problem. Here every Kinesis request holds one lock while moto answers it; S3 and the rest
stay concurrent. Otherwise this is `moto_server` (same app, same request handler).
"""

from __future__ import annotations

import argparse
import os
import threading


def is_kinesis(environ: dict) -> bool:
    """A Kinesis API call: JSON protocol (X-Amz-Target) or the RPC-v2 CBOR path."""
    return environ.get("HTTP_X_AMZ_TARGET", "").startswith("Kinesis_") or "/service/Kinesis_" in environ.get(
        "PATH_INFO", ""
    )


def one_kinesis_call_at_a_time(app):
    """WSGI middleware: Kinesis requests run (and produce their whole body) under one lock."""
    lock = threading.Lock()

    def wsgi(environ, start_response):
        if not is_kinesis(environ):
            return app(environ, start_response)
        with lock:
            body = app(environ, start_response)
            try:
                return [b"".join(body)]
            finally:
                if hasattr(body, "close"):
                    body.close()

    return wsgi


def main(argv: list[str] | None = None) -> None:
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
    from moto.server import MotoRequestHandler
    from werkzeug.serving import run_simple

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("-H", "--host", default="127.0.0.1")
    p.add_argument("-p", "--port", type=int, default=4566)
    args = p.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto_server does
    app = DomainDispatcherApplication(create_backend_app)
    run_simple(args.host, args.port, one_kinesis_call_at_a_time(app), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
