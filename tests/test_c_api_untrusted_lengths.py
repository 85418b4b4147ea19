"""The C API's loaders check every untrusted length against the file before allocating
(issue 26, repro ``capi_pq_codes_n_allocation``): a 4 KB packed-codes file claiming
n = 4e8 or 1e18 codes is refused with DC_ERR_FORMAT at once, in O(file) memory."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from datacredit.safetensors_io import load_safetensors, save_safetensors

FIX = Path(__file__).parent / "fixtures" / "v0.1.0"
DC_OK, DC_ERR_FORMAT = 0, 3


def c_library_path() -> Path | None:
    """libdatacredit.so: ``DATACREDIT_C_LIB`` or a development build."""
    for cand in (
        os.environ.get("DATACREDIT_C_LIB"),
        "build/dev/libdatacredit.so",
        "build/cpp/libdatacredit.so",
        "build/py/libdatacredit.so",
    ):
        if cand and Path(cand).exists():
            return Path(cand).resolve()
    return None


_LOAD = textwrap.dedent(
    """
    import ctypes, resource, sys, time
    resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))  # 1 GiB: O(file) suffices
    lib = ctypes.CDLL(sys.argv[1])
    lib.dc_last_error.restype = ctypes.c_char_p
    h = ctypes.c_void_p()
    t = time.perf_counter()
    rc = lib.dc_pq_index_load(sys.argv[2].encode(), sys.argv[3].encode(), ctypes.byref(h))
    print(rc, round(time.perf_counter() - t, 3), lib.dc_last_error().decode())
    lib.dc_pq_index_free(h)
    """
)


@pytest.mark.parametrize("n", ["385", "400000000", "999999999999999999"])
def test_pq_index_load_checks_n_against_the_file(tmp_path, n):
    lib = c_library_path()
    if lib is None:
        pytest.skip("libdatacredit.so not built (scripts/dev-build builds it)")
    tensors, meta = load_safetensors(FIX / "packed_ivf.safetensors", mmap=False)
    assert tensors["data"].shape[0] * 32 == 384  # the fixture: 300 codes in 12 blocks
    codes = tmp_path / "codes.safetensors"
    save_safetensors(codes, tensors, {**meta, "n": n})
    assert codes.stat().st_size < 64 * 1024
    out = subprocess.run(
        [sys.executable, "-c", _LOAD, str(lib), str(FIX / "pq.safetensors"), str(codes)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    rc, seconds, message = out.stdout.split(" ", 2)
    assert int(rc) == DC_ERR_FORMAT, message
    assert "blocks of 32" in message, message
    assert float(seconds) < 1.0  # no 3 GB fill before the refusal (8 s before the fix)


def test_pq_index_load_fixture_still_loads():
    lib = c_library_path()
    if lib is None:
        pytest.skip("libdatacredit.so not built (scripts/dev-build builds it)")
    out = subprocess.run(
        [
            sys.executable,
            "-c",
            _LOAD,
            str(lib),
            str(FIX / "pq.safetensors"),
            str(FIX / "packed_ivf.safetensors"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.split(" ", 1)[0] == str(DC_OK), out.stdout + out.stderr
