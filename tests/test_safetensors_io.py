"""The library's safetensors container against the reference `safetensors` package."""

from __future__ import annotations

import numpy as np
import pytest

from datacredit.safetensors_io import load_safetensors, save_safetensors

safetensors_numpy = pytest.importorskip("safetensors.numpy")


def _tensors():
    rng = np.random.default_rng(3)
    return {
        "emb": rng.standard_normal((5, 3)).astype(np.float32),
        "ids": np.arange(7, dtype=np.int64),
        "codes": np.array([1, 2, 255], dtype=np.uint8),
        "empty": np.zeros((0, 4), np.float32),
        "scalar": np.full((), 3.5),
        "fortran": np.asfortranarray(rng.standard_normal((3, 4))),
        "bigendian": np.arange(4, dtype=">i4"),
    }


def test_roundtrip_readable_by_reference(tmp_path):
    t = _tensors()
    before = {k: v.copy() for k, v in t.items()}
    p = tmp_path / "x.safetensors"
    save_safetensors(p, t, {"format": "1"})
    ref = safetensors_numpy.load_file(str(p))
    got, meta = load_safetensors(p)
    assert meta == {"format": "1"}
    for k, v in t.items():
        assert np.array_equal(ref[k], v) and ref[k].shape == v.shape, k
        assert np.array_equal(got[k], v) and got[k].shape == v.shape, k
        assert np.array_equal(before[k], v)  # caller's arrays untouched
    assert not got["emb"].flags.writeable
    # every tensor aligned to its item size inside the file (C readers map it directly)
    raw = p.read_bytes()
    hlen = int.from_bytes(raw[:8], "little")
    assert (8 + hlen) % 8 == 0


def test_reads_reference_files(tmp_path):
    t = {
        k: np.ascontiguousarray(v).astype(v.dtype.newbyteorder("<")) for k, v in _tensors().items()
    }
    p = tmp_path / "ref.safetensors"
    safetensors_numpy.save_file(t, str(p), metadata={"a": "b"})
    got, meta = load_safetensors(p, mmap=False)
    assert meta == {"a": "b"}
    for k, v in t.items():
        assert np.array_equal(got[k], v), k


def test_truncated_and_flipped_files_raise_valueerror(tmp_path):
    p = tmp_path / "x.safetensors"
    save_safetensors(p, _tensors())
    raw = p.read_bytes()
    for cut in range(0, len(raw), 7):
        p.write_bytes(raw[:cut])
        with pytest.raises(ValueError, match="not a valid safetensors file"):
            load_safetensors(p)
    hlen = int.from_bytes(raw[:8], "little")
    for i in range(8 + hlen):  # every header byte; data bytes are free-form
        b = bytearray(raw)
        b[i] ^= 0xFF
        p.write_bytes(bytes(b))
        try:
            load_safetensors(p)
        except ValueError:
            pass


def test_refuses_object_and_bad_names(tmp_path):
    with pytest.raises(TypeError, match="dtype"):
        save_safetensors(tmp_path / "o", {"x": np.array(["a"], dtype=object)})
    with pytest.raises(ValueError, match="name"):
        save_safetensors(tmp_path / "o", {"__metadata__": np.zeros(1)})
    with pytest.raises(ValueError, match="empty"):
        save_safetensors(tmp_path / "o", {})
