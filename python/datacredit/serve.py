"""``datacredit serve``: a loopback HTTP server answering "which training samples support
this prediction" from a saved DualDA explainer (standard library only).

Protocol (the same as the C++ example server, ``cpp/examples/serve/``):

- ``GET /health`` → 200 ``{"status": "ok", "dim": d, "n_classes": K, "n_train": N}``
- ``POST /explain`` with ``{"features": [[...], ...], "k": 10, "targets": [...],
  "opponents": false}`` (``k`` default 10; ``targets`` optional, ``-1`` or absent: the
  surrogate's predicted class; ``opponents`` optional) → 200 ``{"indices": [[...]],
  "values": [[...]]}``: per row, the top-k training indices and their scores tau.
- Errors are JSON ``{"error": "..."}``: 400 malformed JSON or fields of the wrong type,
  411 no Content-Length, 413 body above ``max_body`` bytes or more than ``max_rows`` rows,
  422 wrong feature dimension, ``k`` or target out of range, 404 / 405 other paths/methods.

The explainer is immutable and the Gram kernel releases the GIL, so the threading server
answers concurrent requests in parallel.
"""

from __future__ import annotations

import json
import math
import os
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import numpy as np

from datacredit.dualda.explainer import DualDAExplainer

DEFAULT_MAX_BODY = 8 * 1024 * 1024
DEFAULT_MAX_ROWS = 1024

__all__ = ["RequestError", "explain_request", "make_server", "serve"]


class RequestError(Exception):
    """A client error: an HTTP status (4xx) and a message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def explain_request(
    explainer: DualDAExplainer, body: Any, max_rows: int = DEFAULT_MAX_ROWS
) -> dict[str, list]:
    """Answer one parsed ``/explain`` body (validation and status codes as in the module doc).

    ``O(n * n_sv * d)`` for ``n`` feature rows.
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
            if isinstance(x, bool) or not isinstance(x, (int, float)) or not math.isfinite(x):
                raise RequestError(400, "'features' must hold finite numbers only")
    k = body.get("k", 10)
    if not _is_int(k):
        raise RequestError(400, "'k' must be an integer")
    if not 1 <= k <= explainer.n_train:
        raise RequestError(422, f"'k' = {k} must be in [1, n_train = {explainer.n_train}]")
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
    return {"indices": indices.tolist(), "values": values.astype(np.float64).tolist()}


def make_server(
    explainer_path: str | os.PathLike,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    max_body: int = DEFAULT_MAX_BODY,
    max_rows: int = DEFAULT_MAX_ROWS,
) -> ThreadingHTTPServer:
    """A ready (bound, not yet serving) server; ``port=0`` picks a free port
    (``server.server_address[1]``).  Call ``serve_forever()`` / ``shutdown()``."""
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

        def log_message(self, format: str, *args: Any) -> None:  # quiet by default
            pass

        def _send(self, status: int, payload: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(payload)))
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
                self._error(404 if self.path != "/health" else 405, f"no POST {self.path!r}")
                self.close_connection = True
                return
            length = self.headers.get("Content-Length")
            if length is None or not length.isdigit():
                self.close_connection = True
                return self._error(411, "a Content-Length header is required")
            if int(length) > max_body:
                self.close_connection = True  # the body is not read
                return self._error(413, f"the body exceeds {max_body} bytes")
            raw = self.rfile.read(int(length))
            try:
                body = json.loads(raw)
            except (UnicodeDecodeError, json.JSONDecodeError) as exc:
                return self._error(400, f"the body is not JSON: {exc}")
            try:
                answer = explain_request(explainer, body, max_rows)
            except RequestError as exc:
                return self._error(exc.status, str(exc))
            self._send(200, json.dumps(answer).encode())

        def do_PUT(self) -> None:
            self._error(405, "use GET /health or POST /explain")
            self.close_connection = True

        do_DELETE = do_PUT

    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
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
