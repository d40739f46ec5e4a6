"""Hello-world WSGI app: the ceiling a server reaches with no app work (bench/bench_servers.py)."""

BODY = b'{"hello":"world"}'
HEADERS = [("Content-Type", "application/json"), ("Content-Length", str(len(BODY)))]


def app(environ, start_response):
    """Answer every request with the same small JSON."""
    start_response("200 OK", HEADERS)
    return [BODY]
