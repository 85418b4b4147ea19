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


# Limits of the servers under test: small, so that the tests reach them cheaply.
MAX_RESULTS = 1000
TIMEOUT = 2


def _cpp_server_binary() -> Path | None:
    given = os.environ.get("DATACREDIT_SERVE_BIN")
    if given and not Path(given).exists():  # CI names it: a missing build is a failure
        pytest.fail(f"DATACREDIT_SERVE_BIN={given} does not exist")
    for cand in (
        given,
        "build/dev/datacredit_serve",
        "build/cpp/datacredit_serve",
        "build/py/datacredit_serve",
    ):
        if cand and Path(cand).exists():
            return Path(cand).resolve()
    return None


@pytest.fixture(scope="module", params=["python", "cpp"])
def server(request):
    """(host, port) of a running server of each kind."""
    if request.param == "python":
        srv = make_server(
            EXPLAINER,
            "127.0.0.1",
            0,
            max_body=64 * 1024,
            max_results=MAX_RESULTS,
            timeout=TIMEOUT,
        )
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
    args = ["--port", "0", "--max-results", str(MAX_RESULTS), "--timeout", str(TIMEOUT)]
    proc = subprocess.Popen([str(binary), str(EXPLAINER), *args], stdout=subprocess.PIPE, text=True)
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
        # rows * k above the cap (the answer's size; repro serve_py_large_k_amplification)
        (json.dumps({"features": [[0.0] * 8] * 20, "k": 60}).encode(), 413),
        # repro serve_py_uncaught_parse_errors: no answer at all before
        (b'{"features": [[' + b"1" * 5000 + b",0,0,0,0,0,0,0]]}", 400),
        # (the two servers' JSON parsers differ on these: both answer a JSON 4xx)
        (b'{"features": [[1' + b"0" * 400 + b",0,0,0,0,0,0,0]]}", (400, 422)),
        (b'{"features": ' + b"[" * 30_000 + b"]" * 30_000 + b"}", (400, 422)),
        (b'{"features": [[0,0,0,0,0,0,0,0]], "k": ' + b"9" * 30 + b"}", (400, 422)),
        (b"\xff\xfe{}", 400),
        # repro serve_py_nonstandard_json_infinity: scores overflow to inf (was `Infinity`)
        (json.dumps({"features": [[3e38] * 8], "k": 3}).encode(), 422),
    ],
)
def test_bad_requests(server, payload, status):
    got, body = request(server, "POST", "/explain", raw=payload)
    assert got in (status if isinstance(status, tuple) else (status,)), body
    assert isinstance(body["error"], str) and body["error"]


def _strict_json(raw: bytes):
    def refuse(token):
        raise ValueError(f"non-standard JSON token {token}")

    return json.loads(raw, parse_constant=refuse)


def _raw_exchange(server, data: bytes) -> tuple[int, dict]:
    with socket.create_connection(server, timeout=10) as s:
        s.sendall(data)
        resp = http.client.HTTPResponse(s)
        resp.begin()
        return resp.status, _strict_json(resp.read())


@pytest.mark.parametrize(
    "data",
    [
        b"POST /explain HTTP/1.1\r\nContent-Length: \xb2\r\n\r\nab",  # a non-ASCII digit
        b"POST /explain HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST /explain HTTP/1.1\r\nContent-Length: 0x10\r\n\r\n",
        b"garbage\r\n\r\n",
        b"GET /health HTTP/9.9\r\n\r\n",
        b"POST /explain HTTP/1.1\r\nContent-Length: 5\r\nX: " + b"a" * 70000 + b"\r\n\r\n{}",
    ],
    ids=["cl_superscript", "cl_negative", "cl_hex", "garbage_line", "bad_version", "huge_header"],
)
def test_malformed_requests_get_a_json_4xx(server, data):
    status, body = _raw_exchange(server, data)
    assert 400 <= status < 500 and isinstance(body["error"], str), (status, body)
    assert request(server, "GET", "/health")[0] == 200  # still serving


def test_answers_are_standard_json(server, explainer):
    q = np.random.default_rng(3).normal(size=(3, explainer.dim)).astype(np.float32) * 1e18
    conn = http.client.HTTPConnection(*server, timeout=10)
    conn.request("POST", "/explain", json.dumps({"features": q.tolist(), "k": 5}))
    resp = conn.getresponse()
    body = _strict_json(resp.read())  # finite or refused, never Infinity / NaN tokens
    conn.close()
    if resp.status == 200:
        assert np.isfinite(np.array(body["values"])).all()
    else:
        assert resp.status == 422 and "overflow" in body["error"]


def test_slow_clients_do_not_lock_out_the_others(server, explainer):
    """Connections that never finish a request (repro serve_py_slowloris_no_timeout) hold
    no one up: others are answered meanwhile, and the server closes the slow ones."""
    slow = []
    for i in range(40):
        s = socket.create_connection(server, timeout=30)
        if i % 3 == 0:
            s.sendall(b"POST /explain HTTP/1.1\r\nContent-Length: 1000\r\n\r\n{")
        elif i % 3 == 1:
            s.sendall(b"GET /hea")
        slow.append(s)  # (i % 3 == 2: connected, silent)
    try:
        q = np.random.default_rng(2).normal(size=(16, 2, explainer.dim)).astype(np.float32)

        def one(x):
            return request(server, "POST", "/explain", {"features": x.tolist(), "k": 4})

        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(one, q))
        for x, (status, body) in zip(q, results):
            assert status == 200
            np.testing.assert_array_equal(np.array(body["indices"]), explainer.topk(x, 4)[1])
        # The server ends each slow connection (after its timeout): recv sees the close,
        # perhaps after a 408 answer, and never blocks until our own 30 s timeout.
        for s in slow:
            rest = b""
            while True:
                chunk = s.recv(4096)
                if not chunk:
                    break
                rest += chunk
            assert rest == b"" or rest.startswith(b"HTTP/1.1 4"), rest[:80]
    finally:
        for s in slow:
            s.close()


def test_a_trickling_request_is_cut_off():
    """One header byte every 0.2 s never trips a per-recv timeout: the request deadline
    (``timeout`` for the whole request) ends it (Python server; httplib has per-read ones)."""
    import time

    srv = make_server(EXPLAINER, "127.0.0.1", 0, timeout=1)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    try:
        with socket.create_connection(("127.0.0.1", srv.server_address[1]), timeout=30) as s:
            s.sendall(b"POST /explain HTTP/1.1\r\n")
            cut = False
            for _ in range(150):  # up to 30 s of trickling
                try:
                    s.sendall(b"X")
                except OSError:
                    cut = True
                    break
                time.sleep(0.2)
                s.setblocking(False)
                try:
                    cut = s.recv(4096) == b""
                except BlockingIOError:
                    pass
                except OSError:
                    cut = True
                s.setblocking(True)
                if cut:
                    break
            assert cut, "the server kept a trickling request open"
    finally:
        srv.shutdown()
        srv.server_close()


def test_connections_over_the_cap_get_a_503():
    srv = make_server(EXPLAINER, "127.0.0.1", 0, max_connections=3, timeout=TIMEOUT)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    addr = ("127.0.0.1", srv.server_address[1])
    held = [socket.create_connection(addr, timeout=10) for _ in range(3)]
    try:
        for s in held:  # each holds a connection thread (a request line, never finished)
            s.sendall(b"GET /hea")
        status = None
        for _ in range(50):  # the accept of the three may lag a little
            with socket.create_connection(addr, timeout=10) as s:
                s.sendall(b"GET /health HTTP/1.1\r\n\r\n")
                resp = http.client.HTTPResponse(s)
                resp.begin()
                status, body = resp.status, _strict_json(resp.read())
            if status == 503:
                break
        assert status == 503 and "too many" in body["error"]
    finally:
        for s in held:
            s.close()
        srv.shutdown()
        srv.server_close()
    with pytest.raises(ValueError, match="max_connections"):
        make_server(EXPLAINER, max_connections=0)


def test_bursts_of_fresh_connections_are_not_reset(server):
    """50 clients opening a new connection per request (repro serve_py_backlog5_resets)."""
    errors, ok = [], []

    def client(_):
        for _ in range(8):
            try:
                status, _body = request(server, "GET", "/health")
                ok.append(status == 200)
            except OSError as exc:
                errors.append(repr(exc))

    threads = [threading.Thread(target=client, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and len(ok) == 400 and all(ok), (errors[:3], len(ok))


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
