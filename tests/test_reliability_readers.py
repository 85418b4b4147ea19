"""Regression tests of issue 26 for the readers and caches (``shared/repros/turn3/``): the
Python safetensors reader (ValueError only; duplicate names refused as by the C reader), the
RetrainingHarness cache (a zero-byte or truncated file is retrained) and its masks (a list of
masks is masks, not indices), and GMValuator's store fingerprint (a change to any row is seen).
"""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from datacredit.metrics.retraining import RetrainingHarness, random_subsets
from datacredit.safetensors_io import load_safetensors, save_safetensors


def _write(path, header: bytes, data: bytes = b"") -> None:
    header += b" " * (-(8 + len(header)) % 8)
    path.write_bytes(struct.pack("<Q", len(header)) + header + data)


@pytest.mark.parametrize(
    "header, data",
    [
        # repro safetensors_py_reader_errors_and_parser_differential: OverflowError before
        (json.dumps({"a": {"dtype": "F32", "shape": [0, 2**70], "data_offsets": [0, 0]}}), b""),
        (json.dumps({"a": {"dtype": "F32", "shape": [0, 2**62], "data_offsets": [0, 0]}}), b""),
        (json.dumps({"a": {"dtype": "U8", "shape": [2**40, 2**40], "data_offsets": [0, 0]}}), b""),
        # RecursionError before
        ("[" * 100_000 + "]" * 100_000, b""),
        ('{"__metadata__": ' + "[" * 100_000 + "]" * 100_000 + "}", b""),
        # an integer literal beyond Python's digit limit
        ('{"a": {"dtype": "U8", "shape": [' + "1" * 5000 + '], "data_offsets": [0, 0]}}', b""),
    ],
    ids=["zero_by_2e70", "zero_by_2e62", "bytes_overflow", "deep", "deep_metadata", "long_int"],
)
def test_corrupt_headers_raise_valueerror(tmp_path, header, data):
    p = tmp_path / "x.safetensors"
    _write(p, header.encode(), data)
    for mmap in (True, False):
        with pytest.raises(ValueError, match="not a valid safetensors file"):
            load_safetensors(p, mmap=mmap)


def test_duplicate_tensor_names_are_refused_as_by_the_c_reader(tmp_path):
    p = tmp_path / "x.safetensors"
    _write(
        p,
        b'{"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
        b'"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}',
        b"\x01\x02\x03\x04",
    )
    with pytest.raises(ValueError, match="'a' appears twice"):
        load_safetensors(p)
    _write(
        p,
        b'{"__metadata__":{"k":"1","k":"2"},"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]}}',
        b"\x01",
    )
    with pytest.raises(ValueError, match="'k' appears twice"):
        load_safetensors(p)
    save_safetensors(p, {"a": np.arange(3, dtype=np.uint8)}, {"k": "v"})  # still reads
    t, m = load_safetensors(p)
    np.testing.assert_array_equal(t["a"], np.arange(3)) and m == {"k": "v"}


def test_c_reader_agrees_on_duplicates(tmp_path):
    """The same duplicate-name file is refused by the C API (the artifact reader)."""
    import ctypes
    import os

    lib = os.environ.get("DATACREDIT_C_LIB")
    if not lib or not os.path.exists(lib):
        pytest.skip("DATACREDIT_C_LIB (libdatacredit.so) not given")
    c = ctypes.CDLL(lib)
    c.dc_last_error.restype = ctypes.c_char_p
    p = tmp_path / "x.safetensors"
    _write(
        p,
        b'{"__metadata__":{"format":"datacredit.dualda_explainer"},'
        b'"a":{"dtype":"U8","shape":[4],"data_offsets":[0,4]},'
        b'"a":{"dtype":"I32","shape":[1],"data_offsets":[0,4]}}',
        b"\x01\x02\x03\x04",
    )
    h = ctypes.c_void_p()
    assert c.dc_dualda_load(str(p).encode(), ctypes.byref(h)) != 0
    assert b"twice" in c.dc_last_error()


def _harness(d, seen=None):
    def train(idx, seed):
        if seen is not None:
            seen.append(idx.tolist())
        return idx.sum()

    return RetrainingHarness(train, lambda m: np.array([m, 1.0]), cache_dir=d, progress=False)


@pytest.mark.parametrize("content", [b"", b"\x93NUMPY", b"\x93NUMPY\x01\x00v\x00{'descr'"])
def test_retraining_cache_truncated_file_is_retrained(tmp_path, content):
    # repro retraining_cache_empty_file_crash: EOFError instead of a retrain.
    h = _harness(tmp_path)
    np.testing.assert_array_equal(h.run_one([1, 2, 3]), [6.0, 1.0])
    (f,) = tmp_path.glob("*.npy")
    f.write_bytes(content)
    h2 = _harness(tmp_path)
    np.testing.assert_array_equal(h2.run_one([1, 2, 3]), [6.0, 1.0])
    assert h2.n_trained == 1
    np.testing.assert_array_equal(np.load(f), [6.0, 1.0])  # overwritten with a good file


def test_retraining_masks_in_any_container_are_masks(tmp_path):
    # repro retraining_bool_mask_list_as_indices: a list of masks trained on samples {0, 1}.
    masks = random_subsets(10, 3, 0.5, seed=0)
    want = [np.flatnonzero(m).tolist() for m in masks]
    for given in (masks, list(masks), masks.tolist(), [list(m) for m in masks]):
        seen = []
        out = _harness(None, seen).run(given)
        assert seen == want
        np.testing.assert_array_equal(out[:, 0], [sum(w) for w in want])
    import torch

    seen = []
    _harness(None, seen).run([torch.as_tensor(m) for m in masks])
    assert seen == want
    seen = []
    _harness(None, seen).run_one(masks[0].tolist())
    assert seen == [want[0]]
    seen = []
    _harness(None, seen).run([[1, 4, 4], np.array([0, 9])])  # index lists still work
    assert seen == [[1, 4], [0, 9]]
    with pytest.raises(TypeError, match=r"subsets\[0\]"):
        _harness(None).run([[0.5, 1.5]])
    with pytest.raises(ValueError, match=r"subsets\[1\].*1-d"):
        _harness(None).run([masks[0], masks[:2]])


def test_gmvaluator_store_sees_a_change_to_any_row(tmp_path):
    # repro gmvaluator_store_reuses_stale_embeddings: the fingerprint covered three rows, so
    # embeddings of other training data were reused (values off by up to 0.44).
    from datacredit.gmvaluator import GMValuator

    P = np.random.default_rng(7).standard_normal((16, 24)).astype(np.float32)

    def project(batch):
        return np.tanh(np.asarray(batch, np.float32) @ P / 4)

    rng = np.random.default_rng(0)
    train_a = rng.standard_normal((300, 16)).astype(np.float32)
    gen = rng.standard_normal((10, 16)).astype(np.float32)

    def fit(train, path):
        return GMValuator(encoder=project, k=5, recall=20, index="exact", progress=False).fit(
            train, store=path, shard_rows=64
        )

    fit(train_a, tmp_path / "s")
    for row in (1, 77, 298):  # none of the three rows the old fingerprint looked at
        train_b = train_a.copy()
        train_b[row, 3] += 1e-3
        with pytest.raises(ValueError, match="fingerprint"):
            fit(train_b, tmp_path / "s")
    # The same data (another array object, a list of rows) reuses the store.
    again = fit(train_a.copy(), tmp_path / "s")
    fresh = fit(train_a, tmp_path / "fresh")
    np.testing.assert_array_equal(again.value(gen).values, fresh.value(gen).values)
