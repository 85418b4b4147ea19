"""``datacredit serve``: a loopback HTTP server answering "which training samples support
this prediction" from a saved DualDA explainer (standard library only).

Protocol (the same as the C++ example server, ``cpp/examples/serve/``):

- ``GET /health`` → 200 ``{"status": "ok", "dim": d, "n_classes": K, "n_train": N}``
- ``POST /explain`` with ``{"features": [[...], ...], "k": 10, "targets": [...],
  "opponents": false}`` (``k`` default 10; ``targets`` optional, ``-1`` or absent: the
  surrogate's predicted class; ``opponents`` optional) → 200 ``{"indices": [[...]],
  "values": [[...]]}``: per row, the top-k training indices and their scores tau.
- Errors are JSON ``{"error": "..."}``: 400 malformed JSON (also: nesting too deep, integer
  literals too long, a malformed request line or header) or fields of the wrong type,
  408 a request not received within ``timeout`` seconds, 411 no (or a non-decimal)
  Content-Length, 413 body above ``max_body`` bytes, more than ``max_rows`` rows, or
  ``rows * k`` above ``max_results`` (the answer's size), 422 wrong feature dimension, ``k``
  or target out of range, features beyond float32, or scores that overflow to a non-finite
  value, 404 / 405 other paths/methods, 503 more than ``max_connections`` open connections.
- Only standard JSON (RFC 8259) is written: a non-finite score is a 422, never ``Infinity``.

Robustness: each connection has its own thread, at most ``max_connections`` at once (the
listen backlog is as large, so bursts queue instead of being reset); a connection idle for
``timeout`` seconds, or taking longer than that to send one request (slow or never-finished
requests), is closed, so slow clients cannot lock the others out. The explainer is immutable
and the Gram kernel releases the GIL, so requests are answered in parallel.
"""

from __future__ import annotations

import json
import math
import os
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from datacredit.dualda.explainer import DualDAExplainer

DEFAULT_MAX_BODY = 8 * 1024 * 1024
DEFAULT_MAX_ROWS = 1024
# Rows x k per request: bounds the answer (about 30 bytes a pair: 8 MB) and its memory.
DEFAULT_MAX_RESULTS = 1 << 18
DEFAULT_TIMEOUT = 10.0  # seconds a connection may stay idle or take to send one request
DEFAULT_MAX_CONNECTIONS = 256  # also at most half the process's file-descriptor limit
_F32_MAX = float(np.finfo(np.float32).max)

__all__ = ["RequestError", "explain_request", "make_server", "serve"]


class RequestError(Exception):
    """A client error: an HTTP status (4xx) and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def explain_request(
    explainer: DualDAExplainer,
    body: Any,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_results: int = DEFAULT_MAX_RESULTS,
) -> dict[str, list]:
    """Answer one parsed ``/explain`` body (validation and status codes as in the module doc).

    ``O(n * n_sv * d)`` for ``n`` feature rows; the answer holds ``n * k <= max_results``
    pairs. Raises :class:`RequestError` (4xx) for every bad body, never another exception.
    """
    if not isinstance(body, dict):
        raise RequestError(400, "the body must be a JSON object")
    unknown = set(body) - {"features", "k", "targets", "opponents"}
    if unknown:
        raise RequestError(400, f"unknown fields: {', '.join(sorted(unknown))}")
    rows = body.get("features")
    if not isinstance(rows, list) or not rows or not all(isinstance(r, list) for r in rows):
        raise RequestError(400, "'features' must be a non-empty list of lists of numbers")
    if len(rows) > max_rows:
        raise RequestError(413, f"at most {max_rows} feature rows per request, got {len(rows)}")
    for r in rows:
        if len(r) != explainer.dim:
            raise RequestError(422, f"every feature row needs {explainer.dim} values, got {len(r)}")
        for x in r:
            if isinstance(x, bool) or not isinstance(x, (int, float)):
                raise RequestError(400, "'features' must hold finite numbers only")
            if isinstance(x, int):  # exact and unbounded: compare before any float()
                if abs(x) > _F32_MAX:
                    raise RequestError(422, "'features' overflow float32")
            elif not math.isfinite(x):
                raise RequestError(400, "'features' must hold finite numbers only")
    k = body.get("k", 10)
    if not _is_int(k):
        raise RequestError(400, "'k' must be an integer")
    if not 1 <= k <= explainer.n_train:
        raise RequestError(422, f"'k' = {k} must be in [1, n_train = {explainer.n_train}]")
    if len(rows) * k > max_results:
        raise RequestError(
            413,
            f"rows * k = {len(rows)} * {k} exceeds {max_results} results per request: "
            "send fewer rows or a smaller k",
        )
    targets = body.get("targets")
    if targets is not None:
        if not isinstance(targets, list) or not all(_is_int(t) for t in targets):
            raise RequestError(400, "'targets' must be a list of integers")
        if len(targets) != len(rows):
            raise RequestError(422, f"'targets' needs {len(rows)} entries, got {len(targets)}")
        if any(not -1 <= t < explainer.n_classes for t in targets):
            raise RequestError(422, f"'targets' must lie in [-1, {explainer.n_classes})")
        targets = np.asarray(targets, np.int64)
    opponents = body.get("opponents", False)
    if not isinstance(opponents, bool):
        raise RequestError(400, "'opponents' must be true or false")
    features = np.asarray(rows, np.float64)
    if np.abs(features).max() > np.finfo(np.float32).max:
        raise RequestError(422, "'features' overflow float32")
    values, indices = explainer.topk(features, k, targets, opponents=opponents)
    if not np.isfinite(values).all():
        raise RequestError(
            422, "the scores overflow float32 (non-finite): the features are too large"
        )
    return {"indices": indices.tolist(), "values": values.astype(np.float64).tolist()}


class _Server(ThreadingHTTPServer):
    """Thread per connection, at most ``max_connections`` at once, a backlog as large, and a
    reaper that closes connections past their request deadline."""

    daemon_threads = True

    def __init__(self, address, handler, *, max_connections: int, timeout: float) -> None:
        self.request_queue_size = max(128, min(max_connections, socket.SOMAXCONN))
        self.max_connections = max_connections
        self.request_timeout = timeout
        self._slots = threading.BoundedSemaphore(max_connections)
        self._deadlines: dict[socket.socket, float] = {}  # connection -> time it must be done
        self._lock = threading.Lock()
        self._closed = threading.Event()
        super().__init__(address, handler)
        self._reaper = threading.Thread(target=self._reap, daemon=True)
        self._reaper.start()

    def process_request(self, request, client_address) -> None:
        if not self._slots.acquire(blocking=False):
            try:  # over the cap: a clear answer, not a silent queue
                request.settimeout(1.0)
                payload = json.dumps({"error": "too many open connections, retry"}).encode()
                request.sendall(
                    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\n"
                    b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(payload) + payload
                )
            except OSError:
                pass
            self.shutdown_request(request)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._lock:
                self._deadlines.pop(request, None)
            self._slots.release()

    def server_close(self) -> None:
        self._closed.set()  # ends the reaper
        super().server_close()

    def arm(self, conn: socket.socket, deadline: float | None) -> None:
        with self._lock:
            if deadline is None:
                self._deadlines.pop(conn, None)
            else:
                self._deadlines[conn] = deadline

    def _reap(self) -> None:
        # A per-recv socket timeout alone lets a client trickle one byte per interval
        # forever: this closes the read side of any connection past its request deadline.
        while not self._closed.wait(min(1.0, self.request_timeout / 4)):
            now = time.monotonic()
            with self._lock:
                late = [c for c, t in self._deadlines.items() if t < now]
                for c in late:
                    del self._deadlines[c]
            for c in late:
                try:
                    c.shutdown(socket.SHUT_RD)
                except OSError:
                    pass


def make_server(
    explainer_path: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    max_rows: int = DEFAULT_MAX_ROWS,
    max_results: int = DEFAULT_MAX_RESULTS,
    timeout: float = DEFAULT_TIMEOUT,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> ThreadingHTTPServer:
    """A ready (bound, not yet serving) server; ``port=0`` picks a free port
    (``server.server_address[1]``).  Call ``serve_forever()`` / ``shutdown()``.

    ``max_results`` caps ``rows * k`` per request, ``timeout`` (seconds) the idle time of a
    connection and the time to send one request, ``max_connections`` the open connections
    (one thread each; the listen backlog is as large). Limits as in the module doc.
    """
    for name, v in (
        ("max_body", max_body),
        ("max_rows", max_rows),
        ("max_results", max_results),
        ("max_connections", max_connections),
    ):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive integer, got {v!r}")
    if not isinstance(timeout, (int, float)) or not 0 < timeout < math.inf:
        raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
    try:  # connections over the cap get a 503; past the fd limit accept() itself would fail
        import resource

        fds = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
        if fds != resource.RLIM_INFINITY:
            max_connections = max(1, min(max_connections, fds // 2))
    except (ImportError, OSError, ValueError):  # pragma: no cover - no resource module
        pass
    explainer = DualDAExplainer(explainer_path)
    health = json.dumps(
        {
            "status": "ok",
            "dim": explainer.dim,
            "n_classes": explainer.n_classes,
            "n_train": explainer.n_train,
        }
    ).encode()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms ACK stall
        error_content_type = "application/json"

        def setup(self) -> None:
            self.timeout = float(timeout)  # per recv/send: an idle connection is closed
            super().setup()

        def log_message(self, format: str, *args: Any) -> None:  # quiet by default
            pass

        def handle_one_request(self) -> None:
            # The whole request (line, headers, body) must arrive within `timeout`.
            self.server.arm(self.connection, time.monotonic() + float(timeout))
            try:
                super().handle_one_request()
            except (TimeoutError, ConnectionError, OSError):
                self.close_connection = True
            finally:
                self.server.arm(self.connection, None)

        def send_error(self, code: int, message: str | None = None, explain: Any = None) -> None:
            # http.server's own errors (bad request line, header too long, unsupported
            # method...) as JSON like every other answer, and the connection closed.
            if self.request_version == "HTTP/0.9":  # not parsed yet: answer with headers
                self.request_version = "HTTP/1.0"
            if code >= 500:  # 501 unknown method, 505 HTTP version: the client's fault
                code, message = 400, f"{message or 'unsupported request'} ({code})"
            try:
                self.close_connection = True
                self._error(code, message or self.responses.get(code, ("error",))[0])
            except OSError:
                pass

        def _send(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(payload)

        def _error(self, status: int, message: str) -> None:
            self._send(status, json.dumps({"error": message}).encode())

        def do_GET(self) -> None:
            if self.path == "/health":
                self._send(200, health)
            elif self.path == "/explain":
                self._error(405, "use POST /explain")
            else:
                self._error(404, f"no such path {self.path!r}")

        def do_POST(self) -> None:
            if self.path != "/explain":
                self.close_connection = True
                self._error(404 if self.path != "/health" else 405, f"no POST {self.path!r}")
                return
            length = self.headers.get("Content-Length")
            # ASCII digits only: str.isdigit() accepts e.g. superscripts that int() refuses.
            if length is None or not (length.isascii() and length.isdigit()):
                self.close_connection = True
                return self._error(411, "a decimal Content-Length header is required")
            if int(length) > max_body:
                self.close_connection = True  # the body is not read
                return self._error(413, f"the body exceeds {max_body} bytes")
            raw = self.rfile.read(int(length))
            if len(raw) != int(length):  # the client closed (or the deadline cut it off)
                self.close_connection = True
                return self._error(408, "the body was not received in time")
            self.server.arm(self.connection, None)  # received: the deadline covers reading only
            try:
                body = json.loads(raw)
            except RecursionError:
                return self._error(400, "the body is not JSON: nested too deeply")
            except (UnicodeDecodeError, ValueError) as exc:  # JSONDecodeError, int too long
                return self._error(400, f"the body is not JSON: {str(exc)[:200]}")
            try:
                answer = explain_request(explainer, body, max_rows, max_results)
            except RequestError as exc:
                return self._error(exc.status, str(exc))
            except RecursionError:
                return self._error(400, "the body is nested too deeply")
            self._send(200, json.dumps(answer, allow_nan=False).encode())

        def do_PUT(self) -> None:
            self.close_connection = True
            self._error(405, "use GET /health or POST /explain")

        do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = do_PUT

    server = _Server((host, port), Handler, max_connections=max_connections, timeout=float(timeout))
    return server


def serve(
    explainer_path: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 8080,
    **kwargs: Any,
) -> None:
    """Serve until interrupted (Ctrl-C); see :func:`make_server`."""
    server = make_server(explainer_path, host, port, **kwargs)
    print(f"datacredit serve: http://{host}:{server.server_address[1]} (Ctrl-C stops)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
