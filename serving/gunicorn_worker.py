"""A single-threaded gunicorn worker that keeps connections alive.

    gunicorn -k serving.gunicorn_worker.KeepAliveWorker ...   (the default in serving/gunicorn_conf.py)

gunicorn's `sync` worker serves one connection at a time and closes it after every response, so
each request pays for a new TCP connection (accept, handshake, close) on both sides. Its
`gthread` worker keeps connections alive but hands every request to a thread pool and back
through a pipe, which costs more than it saves when the work is a few hundred microseconds of
CPU. This worker is gthread's event loop with the pool taken out:

- the loop waits on the listeners and on kept-alive connections, and serves a readable
  connection inline; connections stay registered (and blocking) between requests;
- a request is served once all of it has arrived: the loop reads what a connection sends without
  blocking into the parser's buffer, and hands the request over when its headers and its
  Content-Length body (or final chunk) are there, so a client that sends nothing, or stops half
  way through a request, never blocks the worker; one that has not sent a whole request within
  `api_read_timeout_s` of its first byte gets a 408 and is closed;
- new connections are spread evenly over the workers (`ConnectionBoard`) and taken between
  requests, not once per round;
- headers go out in the same write as the body (`CoalescingResponse`), and a Content-Length body
  is read in one go (`WholeBody`).

On 2 cores this gives about 1.3x the requests/s of the sync worker at concurrency 16, with a
lower p99 (alternating A/B runs; the figures in bench/bench_serve.py's results).
"""

from __future__ import annotations

import mmap
import multiprocessing
import os
import select
import selectors
import socket
import ssl
import sys
import time
from datetime import datetime
from functools import partial

from gunicorn import util
from gunicorn.http import wsgi
from gunicorn.http.body import LengthReader
from gunicorn.workers.gthread import TConn, ThreadWorker
from psutil import pid_exists


class CoalescingResponse(wsgi.Response):
    """Sends the status line and headers in the same write as the first body bytes.

    gunicorn writes the headers and the body with two `sendall` calls; on a kept-alive
    connection each write is a TCP segment and a wake-up of the client, so a small JSON answer
    costs two of each. Headers of a response with a known length are held back and go out with
    the body (or at `close()` when there is none). Chunked answers, answers without a body and
    `sendfile` keep gunicorn's own order.
    """

    _held = b""
    _hold = True
    UNREAD_LIMIT = 64 * 1024  # request bytes left unread above which the connection is closed, not drained

    def send_headers(self):
        if self.headers_sent:
            return
        reader = getattr(self.req.body, "reader", None)
        if isinstance(reader, LengthReader) and reader.length > self.UNREAD_LIMIT:
            self.force_close()  # e.g. a 413 answered before its body: say close rather than drain it
        if not self._hold or self.chunked or self._omits_body:
            return super().send_headers()
        tosend = self.default_headers()
        tosend.extend(["%s: %s\r\n" % (k, v) for k, v in self.headers])
        self._held = util.to_bytestring("%s\r\n" % "".join(tosend), "latin-1")
        self.headers_sent = True

    def write(self, arg):
        if not isinstance(arg, bytes):  # before the headers are held: the error can still be a 500
            raise TypeError("%r is not a byte" % arg)
        super().write(arg)

    def _flush_held(self) -> None:
        if self._held:
            held, self._held = self._held, b""
            util.write(self.sock, held)

    def _emit_body(self, data):
        if self._held:
            held, self._held = self._held, b""
            data = held + data
        util.write(self.sock, data, self.chunked)

    def sendfile(self, respiter):
        self._flush_held()
        self._hold = False
        return super().sendfile(respiter)

    def close(self):
        if not self.headers_sent:  # no body at all: the headers are all there is
            self.send_headers()
        self._flush_held()
        super().close()


def _read_ahead(conn) -> bool:
    """Bytes of a next request already read from the socket (or held by TLS), invisible to the poller."""
    if conn.parser.unreader.buf.getbuffer().nbytes:
        return True
    pending = getattr(conn.sock, "pending", None)
    return bool(pending and pending())


class WholeBody:
    """`wsgi.input` for a request with a Content-Length: `read(n)` takes the n bytes in one go.

    gunicorn's `Body.read(n)` fetches 1 KB at a time and copies the rest of its 8 KB socket buffer
    after each piece, which costs about 5 ms for a 500 KB batch body. This reads the socket in
    pieces of up to 1 MB instead. Lines and iteration, and anything after them, stay gunicorn's.
    gunicorn 27's `Body.read` reads in large steps itself: this class goes with that upgrade.
    """

    def __init__(self, body):
        self._body = body
        self._reader: LengthReader = body.reader

    def read(self, size=None):
        if self._body.buf.tell():  # readline() left bytes in gunicorn's buffer: its own way
            return self._body.read(size)
        left = self._reader.length
        n = left if size is None or size < 0 else min(size, left)
        if n <= 0:
            return b""
        unreader = self._reader.unreader
        chunk = getattr(unreader, "mxchunk", None)
        if chunk is not None and n > chunk:
            unreader.mxchunk = min(n, 1 << 20)
        try:
            return self._reader.read(n)
        finally:
            if chunk is not None:
                unreader.mxchunk = chunk

    def __getattr__(self, name):  # readline, readlines, __iter__ helpers
        return getattr(self._body, name)

    def __iter__(self):
        return iter(self._body)


class ConnectionBoard:
    """How many connections each worker holds, in memory shared by all workers.

    Created when the master imports this module, so every forked worker sees the same pages.
    The master hands out slots (worker objects are built in the master before the fork); a
    worker writes its pid and its connection count into its own slot and reads the others'.
    """

    def __init__(self, slots: int = 64):
        self.slots = slots
        self._mem = mmap.mmap(-1, 24 * slots + 8)  # anonymous and shared: inherited across fork
        view = memoryview(self._mem)
        self._cells = view[: 16 * slots + 8].cast("q")  # [pid, connections] per slot, then slots ever used
        self._ready_pids = view[16 * slots + 8 :].cast("q")  # per slot: the pid of its worker once its app is ready
        self._reserved: dict[int, float] = {}  # master only: slot -> when handed out (pid -1)

    def claim(self) -> int | None:
        """A free slot for a worker about to be forked (called in the master), or None."""
        now = time.monotonic()
        for slot in range(self.slots):
            pid = self._cells[2 * slot]
            free = (
                pid == 0 or (pid > 0 and not pid_exists(pid)) or (pid < 0 and now - self._reserved.get(slot, -1e9) > 60)
            )  # never started
            if free:
                self._cells[2 * slot], self._cells[2 * slot + 1] = -1, 0
                self._ready_pids[slot] = 0
                self._reserved[slot] = now
                self._cells[2 * self.slots] = max(self._cells[2 * self.slots], slot + 1)
                return slot
        return None

    def start(self, slot: int, pid: int) -> None:
        self._cells[2 * slot + 1] = 0
        self._cells[2 * slot] = pid

    def release(self, slot: int) -> None:
        self._ready_pids[slot] = 0
        self._cells[2 * slot], self._cells[2 * slot + 1] = 0, 0

    def set_ready(self, slot: int, pid: int) -> None:
        """`pid`, in `slot`, has its app ready (its model loaded); it may not take connections yet."""
        self._ready_pids[slot] = pid

    def ready_elsewhere(self, slot: int) -> bool:
        """Another live worker has its app ready: a worker still loading can leave connections to it."""
        for other in range(self.slots):
            pid = self._ready_pids[other]
            if other != slot and pid > 0 and pid_exists(pid):
                return True
        return False

    def publish(self, slot: int, connections: int) -> None:
        self._cells[2 * slot + 1] = connections

    def fewest_elsewhere(self, slot: int) -> int | None:
        """The smallest connection count among the other live workers (None: there are none)."""
        cells, fewest = self._cells, None
        for other in range(cells[2 * self.slots]):  # the slots ever handed out, not all of them
            pid = cells[2 * other]
            if other == slot or pid <= 0:
                continue
            count = cells[2 * other + 1]
            if fewest is None or count < fewest:
                if not pid_exists(pid):  # killed without cleaning up: forget it
                    self.release(other)
                    continue
                fewest = count
        return fewest


BOARD = ConnectionBoard()
ACCEPT_LOCK = multiprocessing.Lock()  # created in the master like BOARD: shared by the forked workers


class _NoPool:
    """Stands in for gthread's thread pool: requests are served in the loop's thread."""

    def shutdown(self, wait: bool = True, **_) -> None:
        return None


class KeepAliveWorker(ThreadWorker):
    """gthread without threads: one request at a time, connections kept alive between them.

    Connections are spread evenly over the workers: a worker takes a new connection only while
    it holds no more than the least busy of its siblings (`ConnectionBoard`). A kept-alive
    connection stays with the worker that accepted it, and whichever worker wakes first would
    otherwise take a whole burst of new connections and leave its siblings idle. When no
    sibling takes a waiting connection within `ACCEPT_PATIENCE_S` (all busy with long
    requests, or gone), the worker takes it anyway.
    """

    ACCEPT_PATIENCE_S = 0.02
    READ_TIMEOUT_S = 10.0  # settings.api_read_timeout_s: a whole request within this of its first byte
    MAX_HEAD = 64 * 1024  # request line and headers longer than this: 431
    READ_CHUNK = 1 << 20  # largest single read of a body still to come
    ACCEPT_BURST = 64  # new connections taken in one round at most
    MAX_PIPELINED = 16  # requests answered back to back on one connection before the others' turn
    LINGER_S = 2.0  # how long a closing connection with unread input is read before it is closed

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._idle: dict = {}  # kept-alive connection -> its keep-alive deadline, oldest first
        self._backlog: list = []  # connections with requests read ahead but not yet answered
        self._lingering: dict = {}  # closing connection -> when to stop reading it
        self.board_slot = BOARD.claim()  # in the master, before the fork
        self._waiting_since: float | None = None
        self._forced = False
        self._partial: dict = {}  # connection with part of a request -> when it must be complete
        self._max_body = 1 << 20

    @classmethod
    def check_config(cls, cfg, log):
        super().check_config(cfg, log)
        if cfg.threads > 1:
            log.warning("KeepAliveWorker serves one request at a time; threads=%s is ignored", cfg.threads)

    def get_thread_pool(self):
        return _NoPool()

    def init_process(self):
        from churnops.settings import get_settings

        s = get_settings()
        self.READ_TIMEOUT_S = float(s.api_read_timeout_s)
        self._max_body = int(s.max_body_bytes)
        self._listening = select.poll()
        for listener in self.sockets:
            self._listening.register(listener, select.POLLIN)
        super().init_process()  # loads the app, then run()

    # ---- readiness -----------------------------------------------------------------------
    # The app loads its model in the background (serving/app.py); until it has, every request
    # would get a 503. A worker whose app is not ready yet (`app.ready_check()` False) takes no
    # connection while a ready sibling can answer it: the listeners stay with the siblings (a
    # replacement of a killed worker waits out its model load this way). When no worker is ready
    # (the first start, or the model cannot be loaded anywhere), every worker takes connections
    # and answers them itself (a 503 naming the reason, /health), rather than leave them unanswered.
    _ready = False

    def _app_ready(self) -> bool:
        """The app says it can serve (checked until it does once; then a plain attribute)."""
        if not self._ready:
            check = getattr(self.wsgi, "ready_check", None)
            if check is None or check():
                self._ready = True
                if self.board_slot is not None:
                    BOARD.set_ready(self.board_slot, os.getpid())
                self.log.info("worker %s ready: taking connections", os.getpid())
        return self._ready

    def _leave_to_siblings(self) -> bool:
        """Not ready while a ready sibling is: take no connections."""
        return not self._app_ready() and self.board_slot is not None and BOARD.ready_elsewhere(self.board_slot)

    def _wait_until_ready(self) -> None:
        """Before the loop: stay off the listeners (and off the board) while loading and a sibling is ready."""
        logged = False
        while self.alive and self._leave_to_siblings():
            if not logged:
                self.log.info("worker %s loading: its siblings take the connections meanwhile", os.getpid())
                logged = True
            self.notify()
            if not self.is_parent_alive():
                self.alive = False
                break
            time.sleep(0.05)

    # ---- the loop ------------------------------------------------------------------------
    def run(self):
        self._wait_until_ready()
        if self.board_slot is not None:  # on the board once it takes connections, not while it loads
            BOARD.start(self.board_slot, os.getpid())
        self.poller.register(self.method_queue.fileno(), selectors.EVENT_READ, self.method_queue.run_callbacks)
        try:
            while self.alive:
                self.notify()
                self.set_accept_enabled(self._should_accept())
                timeout = 0 if self._backlog else 1.0 if self._accepting else self.ACCEPT_PATIENCE_S / 2
                self.wait_for_and_dispatch_events(timeout=timeout)
                self._serve_backlog()
                if not self.is_parent_alive():
                    break
                self.murder_keepalived()
                self.murder_pending()
                self.murder_partial()
                self._publish()
            # Shutting down: no new connections; kept-alive ones are still answered (with
            # `Connection: close`) until their keep-alive deadline, as gthread does, so a request
            # sent on an idle pooled connection right now is not met by a reset.
            self.set_accept_enabled(False)
            deadline = time.monotonic() + self.cfg.graceful_timeout
            while self.nr_conns > 0 and time.monotonic() < deadline:
                self.notify()
                self.wait_for_and_dispatch_events(timeout=0 if self._backlog else min(0.5, deadline - time.monotonic()))
                self._serve_backlog()
                self.murder_keepalived()
                self.murder_pending()
                self.murder_partial()
        finally:
            if self.board_slot is not None:
                BOARD.release(self.board_slot)
            self.poller.close()
            self.method_queue.close()
            for s in self.sockets:
                s.close()

    def _load(self) -> int:
        """Connections this worker serves (closing ones, which only wait for the client, not counted)."""
        return self.nr_conns - len(self._lingering)

    def _publish(self) -> None:
        if self.board_slot is not None:
            BOARD.publish(self.board_slot, self._load())

    def _should_accept(self) -> bool:
        """Listen for new connections while this worker is no busier than the least busy sibling."""
        if not self._ready and self._leave_to_siblings():  # took connections when none was ready
            self._waiting_since = None
            return False
        if self._fair():
            self._waiting_since = None
            return True
        # More than our share (or full): leave waiting connections to the siblings, unless none takes one.
        if self.nr_conns >= self.worker_connections or not self._listening.poll(0):
            self._waiting_since = None
            return False
        now = time.monotonic()
        if self._waiting_since is None:
            self._waiting_since = now
            return False
        if now - self._waiting_since >= self.ACCEPT_PATIENCE_S:
            self._waiting_since = None
            self._forced = True  # take one even though it is not our turn
            return True
        return False

    def wait_for_and_dispatch_events(self, timeout):
        """Serve every ready connection; take new connections as they come, between requests.

        A round can serve dozens of requests; a new connection should not wait for all of them,
        so the listeners are polled (one cheap `poll`) after each request and a worker that is
        no busier than its siblings takes what waits at once.
        """
        try:
            events = self.poller.select(timeout)
        except InterruptedError:
            return
        for key, _ in events:
            if key.fileobj in self.sockets:
                self._take_new(key.fileobj, force=self._forced)
                self._forced = False
            else:
                key.data(key.fileobj)
                if self._accepting and self._listening.poll(0):
                    for listener in self.sockets:
                        self._take_new(listener)

    def _take_new(self, listener, force: bool = False) -> None:
        """Accept while this worker is no busier than its siblings (one anyway when `force`).

        The check, the accept and the new count happen under a lock shared by the workers, so two
        workers with equal counts cannot both take the same burst; a worker killed while holding
        it only costs the others a 50 ms wait, after which they go on without it.
        """
        for i in range(self.ACCEPT_BURST):
            locked = ACCEPT_LOCK.acquire(timeout=0.05)
            try:
                if not (i == 0 and force) and not self._fair():
                    return
                if not self.accept(listener):
                    return
                self._publish()
            finally:
                if locked:
                    ACCEPT_LOCK.release()

    def _crowded(self) -> bool:
        """More than one connection above the least busy sibling: time to hand one over.

        Kept-alive connections cannot move between processes; a burst, or connections opened
        while a sibling was still closing others, can leave one worker with most of them. Such a
        worker answers its next request with `Connection: close` and the client's reconnection
        goes to the least busy worker.
        """
        if self.board_slot is None:
            return False
        fewest = BOARD.fewest_elsewhere(self.board_slot)
        return fewest is not None and self._load() > fewest + 1

    def _fair(self) -> bool:
        """This worker holds no more connections than the least busy sibling."""
        if self.nr_conns >= self.worker_connections:
            return False
        if self.board_slot is None:
            return True
        fewest = BOARD.fewest_elsewhere(self.board_slot)
        return fewest is None or self._load() <= fewest

    def accept(self, listener) -> bool:
        """Accept one connection and wait, in the loop, for its first bytes; False: none was waiting."""
        try:
            client_sock, client_addr = listener.accept()
        except BlockingIOError:
            return False
        except OSError as exc:  # ECONNABORTED and friends: the client gave up
            self.log.debug("accept failed: %s", exc)
            return True
        self.nr_conns += 1
        conn = TConn(self.cfg, client_sock, client_addr, listener.getsockname())  # non-blocking
        conn.timeout = time.monotonic() + self.cfg.keepalive
        self.pending_conns.append(conn)
        self.poller.register(client_sock, selectors.EVENT_READ, partial(self.on_pending_socket_readable, conn))
        return True

    # ---- serving a connection -------------------------------------------------------------
    # A kept-alive connection stays registered in the poller (and blocking) between requests:
    # no unregister/register and no blocking-mode switches per request, as gthread needs for
    # its hand-offs. `_idle` holds each one's keep-alive deadline, oldest first.

    def enqueue_req(self, conn):
        """A new connection whose first bytes have arrived: from now on it is served when readable."""
        self.poller.register(conn.sock, selectors.EVENT_READ, partial(self.on_client_socket_readable, conn))
        self.on_client_socket_readable(conn, conn.sock)

    def on_client_socket_readable(self, conn, client):
        """More bytes (or the client closing): serve the request once all of it is there."""
        self._idle.pop(conn, None)
        whole = self._gather(conn)
        if whole is None:  # closed, or refused (431) before any answer
            self._partial.pop(conn, None)
            self.poller.unregister(client)
            self._close(conn)
            return
        if whole:
            self._partial.pop(conn, None)
            if not self._serve(conn):
                self.poller.unregister(client)
                self._close(conn)
                return
            if not _read_ahead(conn) or conn in self._backlog:
                self._idle[conn] = time.monotonic() + self.cfg.keepalive
                return
        # part of a request: the clock runs from its first byte
        self._partial.setdefault(conn, time.monotonic() + self.READ_TIMEOUT_S)

    # ---- reading whole requests without blocking --------------------------------------------
    def _gather(self, conn) -> bool | None:
        """Read what the client sent, without blocking, into the parser's buffer.

        True: a whole request is buffered (or the connection is not ours to buffer: TLS, HTTP/2,
        a body above the size limit, which the app refuses unread); False: wait for more; None:
        the client closed before a whole request (or it was refused with a 431).
        """
        if not conn.initialized:
            conn.init()  # the parser, and blocking mode for the app's reads
        if conn.is_http2 or isinstance(conn.sock, ssl.SSLSocket):
            return True
        buf = conn.parser.unreader.buf
        if buf.getbuffer().nbytes:
            state = self._whole(buf)
            if state is not False:
                return state
        size = 8192  # recv allocates what it is asked for: small first, then what the body still needs
        while True:
            try:
                data = conn.sock.recv(size, socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return False
            except OSError:
                return None
            if not data:
                return None
            buf.seek(0, os.SEEK_END)
            buf.write(data)
            state = self._whole(buf, conn)
            if state is not False:
                return state
            size = max(8192, min(conn.need - buf.tell(), self.READ_CHUNK))

    def _whole(self, buf, conn=None) -> bool | None:
        """Whether `buf` holds a whole request (see `_gather`)."""
        with buf.getbuffer() as value:
            size = value.nbytes
            raw = bytes(value[: self.MAX_HEAD + 4]) if size > self.MAX_HEAD + 4 else None
        if raw is None:
            raw = buf.getvalue()
        end = raw.find(b"\r\n\r\n")
        if end < 0:
            if size <= self.MAX_HEAD:
                if conn is not None:
                    conn.need = 0
                return False
            if conn is not None:
                self._refuse(conn, 431, "request line and headers larger than %d bytes" % self.MAX_HEAD)
            return None
        head = raw[:end].lower()
        body = end + 4
        if b"\ntransfer-encoding:" in head:  # chunked: whole once the last (empty) chunk is there
            if conn is not None:
                conn.need = 0
            rest = buf.getvalue()[body:]
            return rest.startswith(b"0\r\n") and rest.endswith(b"\r\n\r\n") or b"\r\n0\r\n\r\n" in rest
        at = head.find(b"\ncontent-length:")
        if at < 0:
            return True  # no body
        stop = head.find(b"\r", at + 16)
        try:
            length = int(head[at + 16 : stop if stop >= 0 else len(head)])
        except ValueError:
            return True  # the parser answers the bad header
        if length > self._max_body or size >= body + length:
            return True
        if conn is not None:
            conn.need = body + length
        if conn is not None and b"\nexpect: 100-continue" in head and not getattr(conn, "continued", False):
            conn.continued = True  # the client waits for this before it sends the body
            try:
                conn.sock.send(b"HTTP/1.1 100 Continue\r\n\r\n", socket.MSG_DONTWAIT)
            except OSError:
                pass
        return False

    def _refuse(self, conn, status: int, why: str) -> None:
        """Answer `status` with a JSON error and `Connection: close`, without blocking."""
        reason = {408: "Request Timeout", 431: "Request Header Fields Too Large"}.get(status, "Bad Request")
        body = ('{"error":"%s","details":{"request":"%s"}}' % (reason.lower(), why)).encode()
        head = (
            "HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n"
            "Connection: close\r\n\r\n" % (status, reason, len(body))
        ).encode()
        try:
            conn.sock.send(head + body, socket.MSG_DONTWAIT)
        except OSError:
            pass

    def murder_partial(self) -> None:
        """A connection that has not sent a whole request within `READ_TIMEOUT_S` gets a 408 and is closed."""
        if not self._partial:
            return
        now = time.monotonic()
        for conn, deadline in list(self._partial.items()):
            if deadline > now:
                break  # oldest first: the rest are later
            del self._partial[conn]
            self.log.info(
                "closing a connection from %s: no whole request within %.0f s", conn.client, self.READ_TIMEOUT_S
            )
            self._refuse(conn, 408, "no whole request within %g s" % self.READ_TIMEOUT_S)
            try:
                self.poller.unregister(conn.sock)
            except (OSError, KeyError, ValueError):
                pass
            self._forget(conn)

    def _serve(self, conn) -> bool:
        """Answer the waiting request and up to `MAX_PIPELINED` the client sent behind it; True: keep alive.

        Requests already read ahead are invisible to the poller, so a connection that still holds
        some after the cap goes on `_backlog` and is served again in the next round; one that holds
        only part of the next request waits in the poller for the rest.
        """
        for _ in range(self.MAX_PIPELINED):
            try:
                keep = self.handle(conn)
            except Exception:  # handle() answers request errors itself; this is belt and braces
                self.log.exception("Error serving a connection")
                return False
            if not keep:
                return False
            if not _read_ahead(conn):
                return True
            if not isinstance(conn.sock, ssl.SSLSocket) and self._whole(conn.parser.unreader.buf) is False:
                return True  # part of the next request: the caller starts its clock
        self._backlog.append(conn)
        return True

    def _serve_backlog(self) -> None:
        backlog, self._backlog = self._backlog, []
        for conn in backlog:
            if conn in self._idle and _read_ahead(conn):  # still open, and not served meanwhile
                self.on_client_socket_readable(conn, conn.sock)

    # ---- closing -------------------------------------------------------------------------
    def _close(self, conn) -> None:
        """Close a connection that is out of the poller.

        When the client sent nothing that is still unread, a plain close sends FIN and nothing can
        turn into a reset, so it closes at once. Otherwise (a body left unread, more requests
        behind a `Connection: close`) it shuts the write side and reads the rest in the loop until
        the client closes or `LINGER_S` passes, so the answer is not destroyed by a reset and the
        worker is not blocked meanwhile (gunicorn's own lingering close blocks for up to 2 s).
        """
        sock = conn.sock
        if isinstance(sock, ssl.SSLSocket):
            return self._forget(conn, graceful=True)
        try:
            pending = sock.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT)
        except OSError:  # BlockingIOError included: nothing waiting
            pending = b""
        if not pending:
            return self._forget(conn)
        try:
            sock.shutdown(socket.SHUT_WR)
            sock.setblocking(False)
            self.poller.register(sock, selectors.EVENT_READ, partial(self._on_lingering_readable, conn))
        except (OSError, ValueError, KeyError):
            return self._forget(conn)
        self._lingering[conn] = time.monotonic() + self.LINGER_S
        self._publish()  # no longer served: not counted

    def _forget(self, conn, registered: bool = False, graceful: bool = False) -> None:
        """Done with a connection: out of the poller, out of the count, closed."""
        if registered:
            try:
                self.poller.unregister(conn.sock)
            except (OSError, KeyError, ValueError):
                pass
        self.nr_conns -= 1
        self._publish()
        try:
            conn.close(graceful=graceful)
        except OSError:
            pass

    def _on_lingering_readable(self, conn, sock) -> None:
        try:
            while sock.recv(65536):
                pass
        except BlockingIOError:
            return  # more may come
        except OSError:
            pass
        self._end_linger(conn)

    def _end_linger(self, conn) -> None:
        if self._lingering.pop(conn, None) is not None:
            self._forget(conn, registered=True)

    def murder_keepalived(self):
        """Close the kept-alive connections idle for longer than `keepalive` seconds (and lingering ones)."""
        now = time.monotonic()
        for conn, deadline in list(self._lingering.items()):
            if deadline <= now:
                self._end_linger(conn)
        while self._idle:
            conn = next(iter(self._idle))
            if self._idle[conn] > now:
                break
            del self._idle[conn]
            self._forget(conn, registered=True)

    def handle_request(self, req, conn):
        """gthread's `handle_request` (gunicorn 26.2, the pinned release: tests/serving/test_gunicorn_tripwire.py),
        answering through `CoalescingResponse` and deciding keep-alive with this worker's own state."""
        environ = {}
        resp = None
        try:
            self.cfg.pre_request(self, req)
            request_start = datetime.now()
            if getattr(conn, "continued", False):  # `_whole` sent the 100 Continue already
                conn.continued = False
                req._expected_100_continue = False
            resp, environ = wsgi.create(
                req, conn.sock, conn.client, conn.server, self.cfg, response_class=CoalescingResponse
            )
            environ["wsgi.multithread"] = False
            if isinstance(getattr(req.body, "reader", None), LengthReader):
                environ["wsgi.input"] = WholeBody(req.body)
            self.nr += 1
            if self.nr >= self.max_requests:
                if self.alive:
                    self.log.info("Autorestarting worker after current request.")
                    self.alive = False
                resp.force_close()
            if not self.alive or not self.cfg.keepalive:
                resp.force_close()
            elif len(self._idle) >= self.max_keepalived:
                resp.force_close()
            elif self._crowded():
                resp.force_close()  # the client reconnects, and the least busy worker takes it
            elif not self._ready:
                resp.force_close()  # answered while loading: the reconnection may find a ready sibling

            respiter = self.wsgi(environ, resp.start_response)
            try:
                if isinstance(respiter, environ["wsgi.file_wrapper"]):
                    resp.write_file(respiter)
                else:
                    for item in respiter:
                        resp.write(item)
                resp.close()
            finally:
                request_time = datetime.now() - request_start
                self.log.access(resp, req, environ, request_time)
                if hasattr(respiter, "close"):
                    respiter.close()
            if resp.should_close():
                self.log.debug("Closing connection.")
                return False
        except OSError:
            util.reraise(*sys.exc_info())
        except Exception:
            if resp and resp.headers_sent:
                # The answer has started (or its headers are held): close to show the error.
                self.log.exception("Error handling request")
                util.close_graceful(conn.sock)
                raise StopIteration() from None
            raise
        finally:
            try:
                self.cfg.post_request(self, req, environ, resp)
            except Exception:
                self.log.exception("Exception in post_request hook")
        return True
