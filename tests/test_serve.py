"""The two explain servers (``datacredit serve`` and the C++ example): same answers as
:class:`DualDAExplainer`, clear 4xx errors, and a bounded loopback load test."""

from __future__ import annotations

import http.client
import json
import os
import socket
import subprocess
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest

from datacredit.dualda.explainer import DualDAExplainer
from datacredit.serve import make_server

EXPLAINER = Path(__file__).parent / "fixtures" / "v0.1.0" / "dualda_explainer.safetensors"


def _cpp_server_binary() -> Path | None:
    for cand in (os.environ.get("DATACREDIT_SERVE_BIN"), "build/dev/datacredit_serve"):
        if cand and Path(cand).exists():
            return Path(cand).resolve()
    return None


@pytest.fixture(scope="module", params=["python", "cpp"])
def server(request):
    """(host, port) of a running server of each kind."""
    if request.param == "python":
        srv = make_server(EXPLAINER, "127.0.0.1", 0, max_body=64 * 1024)
        t = threading.Thread(target=srv.serve_forever, daemon=True)
        t.start()
        yield "127.0.0.1", srv.server_address[1]
        srv.shutdown()
        srv.server_close()
        return
    binary = _cpp_server_binary()
    if binary is None:
        pytest.skip(
            "datacredit_serve not built (scripts/dev-build builds it when "
            "libcpp-httplib-dev and nlohmann-json3-dev are installed)"
        )
    proc = subprocess.Popen(
        [str(binary), str(EXPLAINER), "--port", "0"], stdout=subprocess.PIPE, text=True
    )
    try:
        line = proc.stdout.readline()
        assert line.startswith("listening on http://127.0.0.1:"), line
        yield "127.0.0.1", int(line.rsplit(":", 1)[1])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def request(server, method, path, body=None, raw=None, headers=None):
    conn = http.client.HTTPConnection(*server, timeout=10)
    try:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        conn.request(method, path, body=data, headers=headers or {})
        resp = conn.getresponse()
        payload = resp.read()
        return resp.status, json.loads(payload) if payload else None
    finally:
        conn.close()


@pytest.fixture(scope="module")
def explainer():
    return DualDAExplainer(EXPLAINER)


def test_health(server, explainer):
    status, body = request(server, "GET", "/health")
    assert status == 200
    assert body == {
        "status": "ok",
        "dim": explainer.dim,
        "n_classes": explainer.n_classes,
        "n_train": explainer.n_train,
    }


def test_explain_matches_explainer(server, explainer):
    rng = np.random.default_rng(0)
    q = rng.normal(size=(5, explainer.dim)).astype(np.float32)
    for payload, kw in (
        ({"features": q.tolist()}, dict(k=10)),
        ({"features": q.tolist(), "k": 7, "targets": [0, -1, 2, 1, -1]}, dict(k=7)),
        ({"features": q.tolist(), "k": 3, "opponents": True}, dict(k=3, opponents=True)),
    ):
        status, body = request(server, "POST", "/explain", payload)
        assert status == 200, body
        v, i = explainer.topk(q, kw.pop("k"), payload.get("targets"), **kw)
        np.testing.assert_array_equal(np.array(body["indices"]), i)
        np.testing.assert_allclose(np.array(body["values"]), v, rtol=0, atol=1e-6 * np.abs(v).max())


@pytest.mark.parametrize(
    "payload, status",
    [
        (b"{not json", 400),
        (b"[1, 2]", 400),
        (json.dumps({"k": 3}).encode(), 400),
        (json.dumps({"features": [[1.0, 2.0]]}).encode(), 422),
        (json.dumps({"features": [[0.0] * 8], "k": 0}).encode(), 422),
        (json.dumps({"features": [[0.0] * 8], "k": 10**6}).encode(), 422),
        (json.dumps({"features": [[0.0] * 8], "k": True}).encode(), 400),
        (json.dumps({"features": [[0.0] * 8], "targets": [0, 1]}).encode(), 422),
        (json.dumps({"features": [[0.0] * 8], "targets": [3]}).encode(), 422),
        (json.dumps({"features": [["a"] * 8]}).encode(), 400),
        (json.dumps({"features": [[1e39] * 8]}).encode(), 422),
        (json.dumps({"features": [[0.0] * 8], "extra": 1}).encode(), 400),
        (json.dumps({"features": [[0.0] * 8]} | {"opponents": 1}).encode(), 400),
        (json.dumps({"features": [[0.0] * 8] * 2000}).encode(), 413),
    ],
)
def test_bad_requests(server, payload, status):
    got, body = request(server, "POST", "/explain", raw=payload)
    assert got == status, body
    assert isinstance(body["error"], str) and body["error"]


def test_oversized_body_and_unknown_paths(server):
    # A declared length above the limit is refused before the body is read (none is sent).
    with socket.create_connection(server, timeout=10) as s:
        s.sendall(b"POST /explain HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n")
        assert s.recv(64).split(b" ")[1] == b"413"
    assert request(server, "GET", "/nope")[0] == 404
    assert request(server, "GET", "/explain")[0] == 405


def test_load_bounded(server, explainer):
    """400 requests from 8 client threads, each answered correctly within the timeout."""
    rng = np.random.default_rng(1)
    queries = rng.normal(size=(400, 2, explainer.dim)).astype(np.float32)

    def one(q):
        status, body = request(server, "POST", "/explain", {"features": q.tolist(), "k": 5})
        return status, body

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, queries, timeout=120))
    for q, (status, body) in zip(queries, results):
        assert status == 200
        np.testing.assert_array_equal(np.array(body["indices"]), explainer.topk(q, 5)[1])


def test_cli_serve_subcommand(tmp_path):
    """`datacredit serve` starts the Python server on the given port and answers /health."""
    import sys
    import time

    with socket.socket() as s:  # a free port (released just before the server binds it)
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = dict(os.environ)  # the datacredit under test (PYTHONPATH=python, or installed)
    cmd = [sys.executable, "-m", "datacredit.cli", "serve", "--explainer", str(EXPLAINER)]
    proc = subprocess.Popen(cmd + ["--port", str(port)], env=env, stdout=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                status, body = request(("127.0.0.1", port), "GET", "/health")
                break
            except OSError:
                assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.2)
        assert status == 200 and body["status"] == "ok"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    bad = subprocess.run(
        cmd[:-1] + [str(tmp_path / "missing")], env=env, capture_output=True, text=True
    )
    assert bad.returncode == 2 and "datacredit serve:" in bad.stderr, bad.stderr
