"""Misbehaving HTTP clients and a /health prober: the edge's fault scenarios (tests and bench-faults).

Each scenario opens its connections against a running API, holds them while `/health` is probed
for a while, and reports whether every probe was answered (200) within `HEALTH_DEADLINE_S`:

- `fake_end`: `POST /predict`, `Transfer-Encoding: chunked`, body `10\\r\\n\\r\\n0\\r\\n\\r\\n` (a chunk
  that announces 16 bytes and sends 7, ending in what looks like the last chunk), then silence;
- `trickle`: a chunked body that never ends, a few bytes at a time;
- `slow_oversize`: a `Content-Length` above MAX_BODY_BYTES, uploaded slowly;
- `slow_reader`: `GET /logs?limit=10000`, then nothing read;
- `urllib_oversize`: an 8 MB `/predict` body from Python's urllib, which must read the 413.
"""

from __future__ import annotations

import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field

HEALTH_DEADLINE_S = 2.0
FAKE_END = b"10\r\n\r\n0\r\n\r\n"


@dataclass
class Probe:
    """`/health` probes while faults are held: status and seconds of each."""

    answers: list[tuple[int, float]] = field(default_factory=list)

    @property
    def failed(self) -> int:
        return sum(1 for st, dt in self.answers if st != 200 or dt > HEALTH_DEADLINE_S)

    @property
    def worst_s(self) -> float:
        return max((dt for _, dt in self.answers), default=0.0)

    def summary(self) -> dict:
        return {
            "probes": len(self.answers),
            "failed_or_over_2s": self.failed,
            "worst_s": round(self.worst_s, 3),
        }


def probe_health(port: int, seconds: float, interval: float = 0.25, host: str = "127.0.0.1") -> Probe:
    """GET /health on a new connection every `interval` for `seconds`; each waits up to 5 s."""
    p = Probe()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        t0 = time.monotonic()
        try:
            with urllib.request.urlopen(f"http://{host}:{port}/health", timeout=5) as r:  # noqa: S310 (loopback)
                r.read()
                status = r.status
        except urllib.error.HTTPError as e:
            status = e.code
        except OSError:
            status = 0
        p.answers.append((status, time.monotonic() - t0))
        time.sleep(max(0.0, interval - (time.monotonic() - t0)))
    return p


def _open(port: int, head: bytes, host: str = "127.0.0.1") -> socket.socket:
    s = socket.create_connection((host, port), timeout=10)
    s.sendall(head)
    return s


def fake_end(port: int, n: int = 4) -> list[socket.socket]:
    """`n` chunked /predict requests whose body looks finished but is not; then silence."""
    head = (
        b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n" + FAKE_END
    )
    return [_open(port, head) for _ in range(n)]


class Trickle:
    """`n` chunked /predict uploads that never end: one small chunk per connection every `every` s."""

    def __init__(self, port: int, n: int = 2, every: float = 0.05):
        head = b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
        self.socks = [_open(port, head) for _ in range(n)]
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        chunk = b"20\r\n" + b" " * 32 + b"\r\n"
        while not self._stop.wait(every):
            for s in list(self.socks):
                try:
                    s.sendall(chunk)
                    self.sent += 32
                except OSError:
                    self.socks.remove(s)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self.socks:
            s.close()


class SlowUpload:
    """`n` /predict uploads announcing `length` bytes (above the body limit), sent 1 KB per `every` s."""

    def __init__(self, port: int, length: int = 20 << 20, n: int = 2, every: float = 0.05):
        head = (
            b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
            + f"Content-Length: {length}\r\n\r\n".encode()
        )
        self.socks = [_open(port, head) for _ in range(n)]
        self.answers: list[bytes] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(every,), daemon=True)
        self._thread.start()

    def _run(self, every: float) -> None:
        while not self._stop.wait(every) and self.socks:
            for s in list(self.socks):
                try:
                    s.sendall(b" " * 1024)
                except OSError:
                    self.socks.remove(s)
                    self.answers.append(_drain(s))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        for s in self.socks:
            s.close()


def _drain(s: socket.socket) -> bytes:
    try:
        s.settimeout(1)
        return s.recv(4096)
    except OSError:
        return b""
    finally:
        s.close()


def slow_reader(port: int, path: str = "/logs?limit=10000", n: int = 2) -> list[socket.socket]:
    """`n` GETs of a large answer whose answers are never read (a tiny receive buffer)."""
    socks = []
    for _ in range(n):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        s.settimeout(10)
        s.connect(("127.0.0.1", port))
        s.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
        socks.append(s)
    return socks


def urllib_oversize(port: int, size: int = 8 << 20, path: str = "/predict") -> tuple[int, str]:
    """An oversize body from urllib (it sends the whole body before reading): (status, error text)."""
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=b"x" * size, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:  # noqa: S310 (loopback)
            return r.status, ""
    except urllib.error.HTTPError as e:
        return e.code, e.read()[:200].decode(errors="replace")
    except OSError as e:
        return 0, f"{type(e).__name__}: {e}"


def held(port: int, open_fault: Callable[[], object], seconds: float) -> dict:
    """Open a fault, probe /health for `seconds` while it is held, close it; the probe's summary."""
    fault = open_fault()
    try:
        probe = probe_health(port, seconds)
    finally:
        close = getattr(fault, "close", None)
        if close is not None:
            close()
        else:
            for s in fault:  # type: ignore[union-attr]
                s.close()
    return probe.summary() | {"passed": probe.failed == 0 and len(probe.answers) > 0}
