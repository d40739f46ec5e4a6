"""Tripwire on the gunicorn code that serving/gunicorn_worker.py copies or overrides.

The keep-alive worker subclasses gthread's `ThreadWorker` and `Response`, copies
`ThreadWorker.handle_request` (to answer through `CoalescingResponse` and decide keep-alive
itself) and works around `Body.read` (`WholeBody`; gunicorn 27 reads large bodies in big steps
itself, so `WholeBody` can go with an upgrade). pyproject.toml pins the release these hashes come
from. A new gunicorn fails here first: compare the changed functions with the worker, adapt it
(and run tests/serving/test_slow_clients.py, test_worker_faults.py, test_gunicorn*.py), then
update the pin and the hashes.
"""

from __future__ import annotations

from importlib.metadata import version

from tests.tripwire import changed

GUNICORN_VERSION = "26.2.0"
GUNICORN_SOURCES = {
    # copied into KeepAliveWorker.handle_request
    "gunicorn.workers.gthread:ThreadWorker.handle_request": "a3ccb3ba1b4db837",
    # the event loop and connection handling KeepAliveWorker overrides or calls
    "gunicorn.workers.gthread:ThreadWorker.handle": "ca85c9be3df75da4",
    "gunicorn.workers.gthread:ThreadWorker.run": "e50ebf2d88b17eb2",
    "gunicorn.workers.gthread:ThreadWorker.accept": "f8dcead3dce5c851",
    "gunicorn.workers.gthread:ThreadWorker.enqueue_req": "c9f428953d24acef",
    "gunicorn.workers.gthread:ThreadWorker.on_client_socket_readable": "aead1a3ea7b7daff",
    "gunicorn.workers.gthread:ThreadWorker.on_pending_socket_readable": "2475f7087832c086",
    "gunicorn.workers.gthread:ThreadWorker.wait_for_and_dispatch_events": "ea969b352482bd5c",
    "gunicorn.workers.gthread:ThreadWorker.murder_keepalived": "fa9a01fbf2ab15c5",
    "gunicorn.workers.gthread:ThreadWorker.murder_pending": "7bf11f46454296e1",
    "gunicorn.workers.gthread:ThreadWorker.set_accept_enabled": "140150ebfd3cae34",
    "gunicorn.workers.gthread:ThreadWorker.init_process": "e4fc63a1a68e4f48",
    "gunicorn.workers.gthread:ThreadWorker.get_thread_pool": "003f3549a71b6d34",
    "gunicorn.workers.gthread:TConn.init": "5ff3d4ba451cfdf3",
    "gunicorn.workers.gthread:TConn.close": "6d1c334ed1979fcb",
    # CoalescingResponse (response_class of create; the 100-continue flag it reads)
    "gunicorn.http.wsgi:create": "aaadff15e88a065a",
    "gunicorn.http.wsgi:Response.send_headers": "7aff3b7d004fc17b",
    "gunicorn.http.wsgi:Response.write": "a13659ff072c00e1",
    "gunicorn.http.wsgi:Response.sendfile": "417ea65fb9a19f5b",
    "gunicorn.http.wsgi:Response.close": "1e78fc7777ff09ae",
    # WholeBody: Body.read's 1 KB steps, the reader and the unreader's chunk size it adjusts
    "gunicorn.http.body:Body.read": "fc1375d3ddfc7a38",
    "gunicorn.http.body:LengthReader.read": "fc91f195060d2a2a",
    "gunicorn.http.unreader:SocketUnreader.chunk": "89fd6eb6d4b1c71f",
}


def test_tripwire_gunicorn_version():
    assert version("gunicorn") == GUNICORN_VERSION, "gunicorn changed: re-check serving/gunicorn_worker.py"


def test_tripwire_gunicorn_code_the_worker_copies_or_overrides():
    assert not changed(GUNICORN_SOURCES), (
        f"gunicorn code copied or overridden by serving/gunicorn_worker.py changed: {changed(GUNICORN_SOURCES)}"
    )
