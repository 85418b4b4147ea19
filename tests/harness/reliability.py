"""Harness cases of issue 26's surfaces: the shard store (manifests, markers and shard files
corrupted every way), the Python safetensors reader (corrupt headers), the RetrainingHarness
(subsets and cache files), and the explain server (``explain_request`` bodies, and raw bytes
sent to a live ``datacredit serve`` in the child: every one must get a 4xx JSON answer).

A corrupted store must never give wrong data: a read raises ``ValueError`` naming the file,
or ``run_stage`` recomputes the shard (then the case checks the data against the stage).
"""

from __future__ import annotations

import json
import socket
import struct
import tempfile
import threading
from pathlib import Path

import numpy as np

from harness.registry import Case, add, case, mutations

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "v0.1.0"


def _tmp() -> Path:
    return Path(tempfile.mkdtemp(prefix="dc-harness-store-"))


def _stage(shard, rows):
    return {"x": np.arange(rows[0], rows[1], dtype=np.float32)}


def _store(n_rows=30, shard_rows=10):
    from datacredit.distributed.executor import run_stage
    from datacredit.store import ShardStore

    d = _tmp() / "s"
    st = ShardStore.create(
        d, method="m", stage="s", config={"v": 1}, n_rows=n_rows, shard_rows=shard_rows
    )
    run_stage(st, _stage)
    return d


# ================================================================ ShardStore.create arguments


def _create(**kw):
    from datacredit.store import ShardStore

    return ShardStore.create(_tmp() / "s", **kw)


def _create_base():
    return dict(method="m", stage="s", config={"v": 1}, n_rows=30, shard_rows=10)


mutations(
    "store.create",
    _create,
    _create_base,
    {
        "n_rows": [
            ("negative", lambda kw: -1, "raises"),
            ("float", lambda kw: 3.5, "raises"),
            ("bool", lambda kw: True, "raises"),
            ("string", lambda kw: "30", "raises"),
            ("zero", lambda kw: 0, "returns"),
            ("numpy_int", lambda kw: np.int64(30), "returns"),
        ],
        "shard_rows": [
            ("zero", lambda kw: 0, "raises"),
            ("negative", lambda kw: -5, "raises"),
            ("float", lambda kw: 2.0, "raises"),
            ("bool", lambda kw: True, "raises"),
            ("none", lambda kw: None, "raises"),
        ],
        "config": [
            ("object_value", lambda kw: {"f": object()}, "raises", "JSON"),
            ("nan", lambda kw: {"f": float("nan")}, "raises", "JSON"),
            ("bytes", lambda kw: {"f": b"x"}, "raises", "JSON"),
        ],
        "worker": [
            ("no_colon", lambda kw: "pkg.mod", "raises", "worker"),
            ("int", lambda kw: 3, "raises", "worker"),
        ],
    },
)


# ================================================================ manifests edited on disk


def _open_with_manifest(edit):
    from datacredit.store import ShardStore

    d = _store()
    m = json.loads((d / "manifest.json").read_text())
    text = edit(m)
    (d / "manifest.json").write_text(text if isinstance(text, str) else json.dumps(m))
    st = ShardStore(d)
    # If it opens, reading must be right (or refuse).
    np.testing.assert_array_equal(st.concat("x"), np.arange(30, dtype=np.float32))


def _set(key, value):
    def edit(m):
        m[key] = value

    return edit


def _tensors_dtype(dtype):
    def edit(m):
        m["tensors"]["x"]["dtype"] = dtype

    return edit


MANIFEST_EDITS = {
    "shard_rows_zero": (_set("shard_rows", 0), "shard_rows"),
    "shard_rows_string": (_set("shard_rows", "10"), "shard_rows"),
    "shard_rows_float": (_set("shard_rows", 10.0), "shard_rows"),
    "shard_rows_bool": (_set("shard_rows", True), "shard_rows"),
    "shard_rows_huge": (_set("shard_rows", 10**30), "shards"),
    "n_rows_negative": (_set("n_rows", -1), "n_rows"),
    "n_rows_null": (_set("n_rows", None), "n_rows"),
    "n_rows_more": (_set("n_rows", 31), "shards"),
    "shards_dict": (_set("shards", {}), "shards"),
    "shards_of_ints": (_set("shards", [1, 2, 3]), "shards"),
    "config_changed": (lambda m: m["config"].update(v=2), "config_hash"),  # returns None
    "config_list": (_set("config", []), "config"),
    "tensors_list": (_set("tensors", []), "tensors"),
    "version_2": (_set("format_version", 2), "format_version"),
    "version_string": (_set("format_version", "1"), "format_version"),
    "no_method": (lambda m: m.pop("method") and None, "method"),
    "dtype_int32": (_tensors_dtype("<i4"), "manifest records"),
    "dtype_float64": (_tensors_dtype("<f8"), "manifest records"),
    "dtype_bogus": (_tensors_dtype("zz"), None),
    "row_shape_edit": (lambda m: m["tensors"]["x"].update(row_shape=[2]), "manifest records"),
    "row_shape_huge": (
        lambda m: m["tensors"]["x"].update(row_shape=[10**6, 10**6]),
        "manifest records",
    ),
    "deep_nesting": (lambda m: "[" * 100_000 + "]" * 100_000, "manifest.json"),
    "not_an_object": (lambda m: "[1, 2]", "manifest.json"),
    "truncated": (lambda m: json.dumps(m)[:40], "manifest.json"),
    "empty": (lambda m: "", "manifest.json"),
    "huge_int": (lambda m: json.dumps(m).replace('"n_rows": 30', '"n_rows": ' + "9" * 5000), None),
}
for _label, (_edit, _match) in MANIFEST_EDITS.items():
    add(
        Case(
            f"store.manifest.{_label}",
            (lambda e=_edit: _open_with_manifest(e)),
            "raises",
            _match,
        )
    )


# ================================================================ shard files and markers


def _corrupt_then(corrupt, then):
    from datacredit.distributed.executor import run_stage
    from datacredit.store import ShardStore

    d = _store()
    corrupt(d)
    if then == "read":
        ShardStore(d).concat("x")  # must refuse (ValueError), never return other data
        raise AssertionError("unreachable: the corrupt shard was read")  # pragma: no cover
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # "discarded, recomputed"
        st = ShardStore.create(d, method="m", stage="s", config={"v": 1}, n_rows=30, shard_rows=10)
        run_stage(st, _stage)
    np.testing.assert_array_equal(st.concat("x"), np.arange(30, dtype=np.float32))
    st.verify()


def _file(name, fn):
    def corrupt(d):
        p = d / name
        p.write_bytes(fn(p.read_bytes()))

    return corrupt


def _flip(offset):
    def fn(b):
        b = bytearray(b)
        b[offset] ^= 0x01
        return bytes(b)

    return fn


def _other_store_shard(d):
    from datacredit.distributed.executor import run_stage
    from datacredit.store import ShardStore

    o = _tmp() / "o"
    run_stage(
        ShardStore.create(o, method="m", stage="s", config={"v": 1}, n_rows=30, shard_rows=10),
        lambda s, r: {"x": np.arange(r[0], r[1], dtype=np.float32) + 1},
    )
    (d / "shard-00001.safetensors").write_bytes((o / "shard-00001.safetensors").read_bytes())


def _swap_shards(d):
    a, b = d / "shard-00000.safetensors", d / "shard-00002.safetensors"
    ta, tb = a.read_bytes(), b.read_bytes()
    a.write_bytes(tb)
    b.write_bytes(ta)


SHARD_DAMAGE = {
    "truncated_half": _file("shard-00001.safetensors", lambda b: b[: len(b) // 2]),
    "truncated_last_byte": _file("shard-00001.safetensors", lambda b: b[:-1]),
    "zero_bytes": _file("shard-00001.safetensors", lambda b: b""),
    "bitflip_data": _file("shard-00001.safetensors", _flip(-3)),
    "bitflip_header": _file("shard-00001.safetensors", _flip(20)),
    "appended_byte": _file("shard-00001.safetensors", lambda b: b + b"\0"),
    "other_store_file": _other_store_shard,
    "swapped_shards": _swap_shards,
    "marker_sha_edited": _file(
        "shard-00001.done",
        lambda b: json.dumps({**json.loads(b), "sha256": "0" * 64}).encode(),
    ),
}
for _label, _corrupt in SHARD_DAMAGE.items():
    add(
        Case(
            f"store.shard.{_label}.read",
            (lambda c=_corrupt: _corrupt_then(c, "read")),
            "raises",
            "checksum|not a valid|not complete",
        )
    )
    add(
        Case(
            f"store.shard.{_label}.resume",
            (lambda c=_corrupt: _corrupt_then(c, "resume")),
            "returns",
        )
    )

MARKER_DAMAGE = {
    "marker_empty": _file("shard-00001.done", lambda b: b""),
    "marker_deep": _file("shard-00001.done", lambda b: b"[" * 100_000),
    "marker_list": _file("shard-00001.done", lambda b: b"[1]"),
    "marker_no_sha": _file(
        "shard-00001.done", lambda b: json.dumps({**json.loads(b), "sha256": None}).encode()
    ),
    "marker_deleted": lambda d: (d / "shard-00001.done").unlink(),
    "file_deleted": lambda d: (d / "shard-00001.safetensors").unlink(),
}
for _label, _corrupt in MARKER_DAMAGE.items():
    add(
        Case(
            f"store.marker.{_label}.resume",
            (lambda c=_corrupt: _corrupt_then(c, "resume")),
            "returns",
        )
    )


def _take(indices):
    from datacredit.store import ShardStore

    return ShardStore(_store()).take("x", indices)


for _label, _idx, _expect in (
    ("float", np.array([0.5]), "raises"),
    ("negative", np.array([-1]), "raises"),
    ("past_end", np.array([30]), "raises"),
    ("bool", np.array([True]), "raises"),
    ("string", np.array(["1"]), "raises"),
    ("empty", np.array([], np.int64), "returns"),
    ("2d", np.arange(6).reshape(2, 3), "returns"),
    ("uint8", np.array([29], np.uint8), "returns"),
):
    add(Case(f"store.take.indices.{_label}", (lambda i=_idx: _take(i)), _expect))


@case("store.take.values_right", "returns")
def _take_right():
    got = _take(np.array([[29, 0], [15, 15]]))
    np.testing.assert_array_equal(got, np.array([[29, 0], [15, 15]], np.float32))


@case("store.shard.index.out_of_range", match="out of range")
def _shard_oob():
    from datacredit.store import ShardStore

    ShardStore(_store()).shard(3)


@case("store.shard.index.bool", match="integer")
def _shard_bool():
    from datacredit.store import ShardStore

    ShardStore(_store()).shard(True)


@case("store.stage.returns_wrong_rows", match="rows")
def _stage_wrong_rows():
    from datacredit.distributed.executor import run_stage
    from datacredit.store import ShardStore

    st = ShardStore.create(_tmp() / "s", method="m", stage="s", config={}, n_rows=9, shard_rows=3)
    run_stage(st, lambda s, r: {"x": np.zeros(2)})


@case("store.stage.returns_not_a_dict", match="dict")
def _stage_not_dict():
    from datacredit.distributed.executor import run_stage
    from datacredit.store import ShardStore

    st = ShardStore.create(_tmp() / "s", method="m", stage="s", config={}, n_rows=9, shard_rows=3)
    run_stage(st, lambda s, r: np.zeros(3))


@case("store.stale_temporaries_cleaned", "returns")
def _stale_tmp():
    import subprocess
    import sys

    from datacredit.store import ShardStore

    d = _store()
    pid = int(
        subprocess.run(
            [sys.executable, "-c", "import os; print(os.getpid())"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    host = "".join(c if c.isalnum() or c in "_-" else "_" for c in socket.gethostname())
    t = d / f".shard-00001.safetensors.~{pid}@{host}~zz.tmp"
    t.write_bytes(b"x" * 1000)
    ShardStore(d).refresh()
    assert not t.exists()


# ================================================================ safetensors reader


def _st_file(header: bytes, data: bytes = b"", hlen: int | None = None) -> Path:
    p = _tmp() / "x.safetensors"
    header += b" " * (-(8 + len(header)) % 8)
    p.write_bytes(struct.pack("<Q", len(header) if hlen is None else hlen) + header + data)
    return p


def _load_st(header, data=b"", hlen=None, mmap=True):
    from datacredit.safetensors_io import load_safetensors

    return load_safetensors(_st_file(header, data, hlen), mmap=mmap)


def _e(spec: dict) -> bytes:
    return json.dumps(spec).encode()


_T = {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}
SAFETENSORS_BAD = {
    "deep_nesting": (b"[" * 100_000 + b"]" * 100_000, b""),
    "deep_in_metadata": (b'{"__metadata__":' + b"[" * 50_000 + b"]" * 50_000 + b"}", b""),
    "duplicate_name": (
        b'{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
        b'"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}',
        b"\1\2\3\4",
    ),
    "duplicate_metadata_key": (
        b'{"__metadata__":{"k":"1","k":"2"},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
        b"\1",
    ),
    "shape_2e70_empty": (
        _e({"a": {"dtype": "F32", "shape": [0, 2**70], "data_offsets": [0, 0]}}),
        b"",
    ),
    "shape_2e62_empty": (
        _e({"a": {"dtype": "F32", "shape": [0, 2**62], "data_offsets": [0, 0]}}),
        b"",
    ),
    "shape_negative": (_e({"a": {**_T, "shape": [-2]}}), b"\0" * 8),
    "shape_float": (_e({"a": {**_T, "shape": [2.0]}}), b"\0" * 8),
    "shape_bool": (_e({"a": {**_T, "shape": [True, 2]}}), b"\0" * 8),
    "shape_string": (_e({"a": {**_T, "shape": "2"}}), b"\0" * 8),
    "bytes_overflow": (
        _e({"a": {"dtype": "F64", "shape": [2**32, 2**32], "data_offsets": [0, 8]}}),
        b"\0" * 8,
    ),
    "long_int_literal": (
        b'{"a":{"dtype":"U8","shape":[' + b"1" * 5000 + b'],"data_offsets":[0,1]}}',
        b"\0",
    ),
    "offsets_past_end": (_e({"a": {**_T, "data_offsets": [0, 16]}}), b"\0" * 8),
    "offsets_reversed": (_e({"a": {**_T, "data_offsets": [8, 0]}}), b"\0" * 8),
    "offsets_negative": (_e({"a": {**_T, "data_offsets": [-8, 0]}}), b"\0" * 8),
    "offsets_three": (_e({"a": {**_T, "data_offsets": [0, 4, 8]}}), b"\0" * 8),
    "gap": (_e({"a": {**_T, "data_offsets": [0, 8]}}), b"\0" * 12),
    "overlap": (_e({"a": _T, "b": _T}), b"\0" * 8),
    "dtype_unknown": (_e({"a": {**_T, "dtype": "F128"}}), b"\0" * 8),
    "dtype_int": (_e({"a": {**_T, "dtype": 3}}), b"\0" * 8),
    "entry_extra_key": (_e({"a": {**_T, "extra": 1}}), b"\0" * 8),
    "entry_not_object": (_e({"a": [1, 2]}), b""),
    "metadata_not_str": (_e({"__metadata__": {"k": 1}, "a": _T}), b"\0" * 8),
    "header_not_object": (b"[1,2]", b""),
    "header_not_utf8": (b"\xff\xfe{}", b""),
    "header_nan": (b'{"a":{"dtype":"F32","shape":[NaN],"data_offsets":[0,0]}}', b""),
}
for _label, (_h, _d) in SAFETENSORS_BAD.items():
    for _mm in (True, False):
        add(
            Case(
                f"safetensors.load.{_label}.{'mmap' if _mm else 'copy'}",
                (lambda h=_h, d=_d, mm=_mm: _load_st(h, d, mmap=mm)),
                "raises",
                "not a valid safetensors",
            )
        )

for _label, _hlen in (("hlen_past_file", 10**6), ("hlen_2e64", 2**64 - 1), ("hlen_zero", 0)):
    add(
        Case(
            f"safetensors.load.{_label}",
            (lambda n=_hlen: _load_st(_e({"a": _T}), b"\0" * 8, hlen=n)),
            "raises",
            "not a valid safetensors",
        )
    )


@case("safetensors.load.short_file", match="not a valid safetensors")
def _st_short():
    from datacredit.safetensors_io import load_safetensors

    p = _tmp() / "x.safetensors"
    p.write_bytes(b"\1\2\3")
    load_safetensors(p)


# ================================================================ RetrainingHarness


def _harness(cache=None):
    from datacredit.metrics.retraining import RetrainingHarness

    return RetrainingHarness(
        lambda idx, seed: idx.astype(np.float64).sum(),
        lambda m: np.array([m, 1.0]),
        cache_dir=cache,
        progress=False,
    )


def _run(subsets):
    return _harness().run(subsets)


_MASK = np.array([True, False, True, True])
for _label, _subsets, _expect, _match in (
    ("list_of_bool_lists", [[True, False, True, True]], "returns", None),
    ("list_of_bool_arrays", [_MASK], "returns", None),
    ("bool_2d_array", _MASK[None], "returns", None),
    ("bool_3d_array", _MASK[None, None], "raises", "subset masks"),
    ("list_of_2d_masks", [_MASK[None]], "raises", "1-d"),
    ("float_indices", [[0.0, 2.0]], "raises", r"subsets\[0\]"),
    ("string_indices", [["a"]], "raises", r"subsets\[0\]"),
    ("empty_subset", [[]], "raises", "empty"),
    ("all_false_mask", [[False, False]], "raises", "empty"),
    ("ragged_index_lists", [[0, 1], [2]], "returns", None),
):

    def _fn(s=_subsets, expect=_expect):
        out = _run(s)
        if (
            expect == "returns"
            and isinstance(s, (list, np.ndarray))
            and len(s)
            and (np.asarray(s[0]).dtype == bool)
        ):
            want = [np.flatnonzero(np.asarray(m)).sum() for m in s]
            np.testing.assert_array_equal(out[:, 0], want)  # the mask's samples, not {0, 1}
        return out

    add(Case(f"retraining.run.subsets.{_label}", _fn, _expect, _match))


def _huge_npy_header() -> bytes:
    import io

    buf = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (10**12,)}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue() + b"\0" * 64  # 8 TB claimed, 64 bytes there


def _cache_corrupted(content: bytes | str):
    if content == "HUGE_NPY":
        content = _huge_npy_header()
    d = _tmp()
    h = _harness(d)
    h.run_one([1, 2, 3])
    (f,) = d.glob("*.npy")
    f.write_bytes(content)
    h2 = _harness(d)
    np.testing.assert_array_equal(h2.run_one([1, 2, 3]), [6.0, 1.0])
    assert h2.n_trained == 1


for _label, _content in (
    ("zero_bytes", b""),
    ("magic_only", b"\x93NUMPY"),
    ("truncated_header", b"\x93NUMPY\x01\x00v\x00{'descr'"),
    (
        "pickled_object",
        b"\x93NUMPY\x01\x00v\x00{'descr': '|O', 'fortran_order': False, 'shape': (2,), }"
        + b" " * 50
        + b"\n",
    ),
    ("npz_instead", b"PK\x03\x04" + b"\0" * 30),
    ("header_claims_1e12", "HUGE_NPY"),
    ("text", b"hello"),
):
    add(Case(f"retraining.cache.{_label}", (lambda c=_content: _cache_corrupted(c)), "returns"))


# ================================================================ explain server


def _explainer():
    from datacredit.dualda.explainer import DualDAExplainer

    return DualDAExplainer(FIXTURE / "dualda_explainer.safetensors")


def _expect_4xx(body, status=None):
    """explain_request on a parsed body: a RequestError 4xx (``status`` when given)."""
    from datacredit.serve import RequestError, explain_request

    try:
        explain_request(_explainer(), body, max_rows=16, max_results=100)
    except RequestError as exc:
        assert 400 <= exc.status < 500 and str(exc), (exc.status, str(exc))
        assert status is None or exc.status == status, (exc.status, str(exc))
        return
    raise AssertionError(f"accepted {str(body)[:80]}")


_ROW = [0.0] * 8
EXPLAIN_BAD = {
    "not_object": ([1, 2], 400),
    "string": ("x", 400),
    "no_features": ({"k": 3}, 400),
    "features_empty": ({"features": []}, 400),
    "features_flat": ({"features": _ROW}, 400),
    "features_dict": ({"features": {"a": 1}}, 400),
    "row_short": ({"features": [[0.0] * 7]}, 422),
    "row_long": ({"features": [[0.0] * 9]}, 422),
    "row_strings": ({"features": [["a"] * 8]}, 400),
    "row_bools": ({"features": [[True] * 8]}, 400),
    "row_null": ({"features": [[None] * 8]}, 400),
    "row_nan": ({"features": [[float("nan")] * 8]}, 400),
    "row_inf": ({"features": [[float("inf")] * 8]}, 400),
    "row_float32_overflow": ({"features": [[1e39] * 8]}, 422),
    "row_huge_int": ({"features": [[10**400] + [0] * 7]}, 422),
    "row_nested": ({"features": [[[0.0]] * 8]}, 400),
    "too_many_rows": ({"features": [_ROW] * 17}, 413),
    "rows_times_k": ({"features": [_ROW] * 10, "k": 11}, 413),
    "k_zero": ({"features": [_ROW], "k": 0}, 422),
    "k_negative": ({"features": [_ROW], "k": -1}, 422),
    "k_past_n_train": ({"features": [_ROW], "k": 61}, 422),
    "k_huge": ({"features": [_ROW], "k": 10**30}, 422),
    "k_float": ({"features": [_ROW], "k": 3.0}, 400),
    "k_bool": ({"features": [_ROW], "k": True}, 400),
    "k_string": ({"features": [_ROW], "k": "3"}, 400),
    "targets_short": ({"features": [_ROW, _ROW], "targets": [0]}, 422),
    "targets_out_of_range": ({"features": [_ROW], "targets": [3]}, 422),
    "targets_below_minus_one": ({"features": [_ROW], "targets": [-2]}, 422),
    "targets_float": ({"features": [_ROW], "targets": [0.0]}, 400),
    "targets_not_list": ({"features": [_ROW], "targets": 0}, 400),
    "opponents_int": ({"features": [_ROW], "opponents": 1}, 400),
    "unknown_field": ({"features": [_ROW], "x": 1}, 400),
    "scores_overflow": ({"features": [[3e38] * 8], "k": 3}, 422),
}
for _label, (_body, _status) in EXPLAIN_BAD.items():
    add(
        Case(
            f"serve.explain_request.{_label}",
            (lambda b=_body, s=_status: _expect_4xx(b, s)),
            "returns",
        )
    )


def _raw_to_live_server(data: bytes):
    """Send ``data`` to a live server (in this child): a 4xx JSON answer, the server alive."""
    import http.client

    from datacredit.serve import make_server

    srv = make_server(
        FIXTURE / "dualda_explainer.safetensors",
        "127.0.0.1",
        0,
        max_body=64 * 1024,
        max_results=1000,
        timeout=2,
    )
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    addr = srv.server_address
    try:
        with socket.create_connection(addr, timeout=10) as s:
            s.sendall(data)
            resp = http.client.HTTPResponse(s)
            resp.begin()
            body = json.loads(resp.read(), parse_constant=lambda t: 1 / 0)
            assert 400 <= resp.status < 500 and isinstance(body["error"], str), (resp.status, body)
        with socket.create_connection(addr, timeout=10) as s:
            s.sendall(b"GET /health HTTP/1.1\r\n\r\n")
            assert s.recv(64).startswith(b"HTTP/1.1 200"), "the server stopped answering"
    finally:
        srv.shutdown()
        srv.server_close()


def _post(body: bytes, length: bytes | None = None) -> bytes:
    cl = str(len(body)).encode() if length is None else length
    return b"POST /explain HTTP/1.1\r\nContent-Length: " + cl + b"\r\n\r\n" + body


RAW_BAD = {
    "long_int_feature": _post(b'{"features": [[' + b"1" * 5000 + b",0,0,0,0,0,0,0]]}"),
    "huge_int_feature": _post(b'{"features": [[1' + b"0" * 400 + b",0,0,0,0,0,0,0]]}"),
    "deep_nesting": _post(b'{"features": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"),
    "not_utf8": _post(b"\xff\xfe{}"),
    "not_json": _post(b"{nope"),
    "nan_token": _post(b'{"features": [[NaN,0,0,0,0,0,0,0]]}'),
    "infinity_token": _post(b'{"features": [[Infinity,0,0,0,0,0,0,0]]}'),
    "cl_superscript": _post(b"ab", b"\xb2"),
    "cl_negative": _post(b"", b"-1"),
    "cl_hex": _post(b"", b"0x10"),
    "cl_spaces": _post(b"", b"1 2"),
    "cl_too_big": _post(b"", b"99999999999"),
    "no_content_length": b"POST /explain HTTP/1.1\r\n\r\n{}",
    "garbage_line": b"garbage\r\n\r\n",
    "bad_version": b"GET /health HTTP/9.9\r\n\r\n",
    "unknown_method": b"BREW /explain HTTP/1.1\r\n\r\n",
    "put": b"PUT /explain HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
    "huge_header": b"GET /health HTTP/1.1\r\nX: " + b"a" * 70_000 + b"\r\n\r\n",
    "many_headers": b"GET /health HTTP/1.1\r\n" + b"X: 1\r\n" * 200 + b"\r\n",
    "unknown_path": b"GET /nope HTTP/1.1\r\n\r\n",
    "rows_times_k": _post(json.dumps({"features": [[0.0] * 8] * 1024, "k": 60}).encode()),
    "scores_overflow": _post(json.dumps({"features": [[3e38] * 8], "k": 3}).encode()),
}
for _label, _data in RAW_BAD.items():
    add(
        Case(
            f"serve.raw.{_label}",
            (lambda d=_data: _raw_to_live_server(d)),
            "returns",
            timeout=30,
        )
    )


@case("serve.make_server.bad_limits", match="max_results")
def _bad_limits():
    from datacredit.serve import make_server

    make_server(FIXTURE / "dualda_explainer.safetensors", max_results=0)


@case("serve.make_server.bad_timeout", match="timeout")
def _bad_timeout():
    from datacredit.serve import make_server

    make_server(FIXTURE / "dualda_explainer.safetensors", timeout=float("inf"))
