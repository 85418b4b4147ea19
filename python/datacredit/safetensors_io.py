"""The library's one binary container: safetensors files, written atomically, read memory-mapped.

Format (https://huggingface.co/docs/safetensors): an 8-byte little-endian header length ``H``,
``H`` bytes of JSON ``{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__":
{str: str}}``, then the raw little-endian tensor bytes (offsets relative to the end of the
header). We pad the header with spaces so the data starts on an 8-byte boundary and lay the
tensors out by decreasing item size, so every tensor is aligned to its dtype: a C reader
(``cpp/src/c_api``) can use the memory map directly.

Reading validates everything before touching the data (header size, JSON, dtypes, shapes,
offsets in bounds, no overlap, full coverage), so a truncated or corrupted file raises
``ValueError`` naming the file and the problem, never a crash and never executed code.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from datacredit._io import atomic_open

__all__ = ["save_safetensors", "load_safetensors", "read_safetensors_metadata"]

_DTYPES: dict[str, np.dtype] = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U64": np.dtype("<u8"),
    "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NAMES = {dt.newbyteorder("<") if dt.itemsize > 1 else dt: name for name, dt in _DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024  # as the reference implementation: headers beyond this are corrupt


def _dtype_name(dtype: np.dtype) -> str:
    key = dtype.newbyteorder("<") if dtype.itemsize > 1 else dtype
    if key not in _NAMES:
        raise TypeError(f"save_safetensors: dtype {dtype} is not storable")
    return _NAMES[key]


def save_safetensors(
    path: str | os.PathLike,
    tensors: Mapping[str, np.ndarray],
    metadata: Mapping[str, str] | None = None,
) -> None:
    """Write ``tensors`` (name → array) and string ``metadata`` to ``path`` atomically.

    Arrays are stored little-endian and C-contiguous (copied only when they are not); the
    caller's arrays are never modified. O(total bytes).
    """
    if not tensors:
        raise ValueError("save_safetensors: tensors must not be empty")
    meta = {} if metadata is None else dict(metadata)
    for k, v in meta.items():
        if not isinstance(k, str) or not isinstance(v, str):
            raise TypeError("save_safetensors: metadata must map str to str")
    arrays: dict[str, np.ndarray] = {}
    for name, a in tensors.items():
        if not isinstance(name, str) or not name or name == "__metadata__":
            raise ValueError(f"save_safetensors: invalid tensor name {name!r}")
        a = np.asarray(a)
        _dtype_name(a.dtype)
        b = a.astype(a.dtype.newbyteorder("<") if a.dtype.itemsize > 1 else a.dtype, copy=False)
        # np.ascontiguousarray would turn 0-d arrays into 1-d ones.
        arrays[name] = b if b.flags.c_contiguous else np.array(b, order="C")
    order = sorted(arrays, key=lambda n: (-arrays[n].dtype.itemsize, n))
    header: dict[str, object] = {}
    if meta:
        header["__metadata__"] = meta
    offset = 0
    for name in order:
        a = arrays[name]
        header[name] = {
            "dtype": _dtype_name(a.dtype),
            "shape": list(a.shape),
            "data_offsets": [offset, offset + a.nbytes],
        }
        offset += a.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-(8 + len(raw)) % 8)
    with atomic_open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in order:
            if arrays[name].nbytes:
                f.write(arrays[name].reshape(-1).view(np.uint8).data)


class _DuplicateKey(Exception):
    pass


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out: dict = {}
    for k, v in pairs:
        if k in out:
            raise _DuplicateKey(k)
        out[k] = v
    return out


# Dimensions and byte offsets are int64 in the format (and in the C reader).
_INT64_MAX = (1 << 63) - 1


def _parse_header(path: Path, f) -> tuple[dict, int, int]:
    size = os.fstat(f.fileno()).st_size
    bad = f"{path}: not a valid safetensors file"
    if size < 8:
        raise ValueError(f"{bad}: {size} bytes, shorter than the 8-byte header length")
    (hlen,) = struct.unpack("<Q", f.read(8))
    if hlen > min(_MAX_HEADER, size - 8):
        raise ValueError(f"{bad}: header length {hlen} exceeds the file ({size} bytes)")
    try:
        header = json.loads(f.read(hlen).decode("utf-8"), object_pairs_hook=_unique_keys)
    except _DuplicateKey as e:
        # As the C reader (cpp/src/safetensors_reader.cpp): one file must mean the same
        # tensors to every consumer, so a repeated name is an error, not "the last wins".
        raise ValueError(f"{bad}: entry {e.args[0]!r} appears twice") from None
    except RecursionError:
        raise ValueError(f"{bad}: header is nested too deeply") from None
    except (UnicodeDecodeError, ValueError) as e:  # JSONDecodeError; int literals too long
        raise ValueError(f"{bad}: header is not JSON ({str(e)[:200]})") from None
    if not isinstance(header, dict):
        raise ValueError(f"{bad}: header is not a JSON object")
    return header, 8 + hlen, size - 8 - hlen


def read_safetensors_metadata(path: str | os.PathLike) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file (validated as in :func:`load_safetensors`)."""
    return load_safetensors(path, mmap=True)[1]


def load_safetensors(
    path: str | os.PathLike, mmap: bool = True
) -> tuple[dict[str, np.ndarray], dict[str, str]]:
    """Read a safetensors file: ``(tensors, metadata)``.

    With ``mmap=True`` (default) every tensor is a read-only memory-mapped view (no copy, O(1)
    memory); with ``mmap=False`` they are loaded into owned arrays. Raises ``ValueError`` on
    any inconsistency, before reading tensor data.
    """
    path = Path(path)
    bad = f"{path}: not a valid safetensors file"
    with open(path, "rb") as f:
        header, data_start, data_len = _parse_header(path, f)
    meta = header.pop("__metadata__", {})
    if not isinstance(meta, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in meta.items()
    ):
        raise ValueError(f"{bad}: __metadata__ must map str to str")
    spans = []
    specs = {}
    for name, spec in header.items():
        if not isinstance(spec, dict) or set(spec) != {"dtype", "shape", "data_offsets"}:
            raise ValueError(f"{bad}: entry {name!r} is malformed")
        dt = _DTYPES.get(spec["dtype"]) if isinstance(spec["dtype"], str) else None
        if dt is None:
            raise ValueError(f"{bad}: entry {name!r} has unsupported dtype {spec['dtype']!r}")
        shape, offs = spec["shape"], spec["data_offsets"]
        if not isinstance(shape, list) or not all(
            isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= _INT64_MAX for s in shape
        ):
            raise ValueError(f"{bad}: entry {name!r} has an invalid shape {shape!r}")
        if (
            not isinstance(offs, list)
            or len(offs) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
            or not 0 <= offs[0] <= offs[1] <= data_len
        ):
            raise ValueError(f"{bad}: entry {name!r} has offsets {offs!r} outside the data")
        count = 1
        for s in shape:
            count *= s
        if count * dt.itemsize > _INT64_MAX:
            raise ValueError(f"{bad}: entry {name!r} has a shape {shape} too large to address")
        if offs[1] - offs[0] != count * dt.itemsize:
            raise ValueError(
                f"{bad}: entry {name!r} holds {offs[1] - offs[0]} bytes, "
                f"shape {shape} of {spec['dtype']} needs {count * dt.itemsize}"
            )
        spans.append((offs[0], offs[1], name))
        specs[name] = (dt, tuple(shape), offs[0], count * dt.itemsize)
    spans.sort()
    pos = 0
    for begin, end, name in spans:
        if begin != pos:
            raise ValueError(f"{bad}: entry {name!r} overlaps or leaves a gap at byte {pos}")
        pos = end
    if pos != data_len:
        raise ValueError(f"{bad}: {data_len - pos} trailing bytes after the last tensor")
    tensors: dict[str, np.ndarray] = {}
    whole = (
        np.memmap(path, dtype=np.uint8, mode="r", offset=data_start, shape=(data_len,))
        if mmap and data_len > 0
        else None
    )
    if not mmap and data_len > 0:
        with open(path, "rb") as f:
            f.seek(data_start)
            whole = np.frombuffer(f.read(data_len), dtype=np.uint8)
            if whole.size != data_len:
                raise ValueError(f"{bad}: file changed while reading")
    for name, (dt, shape, begin, nbytes) in specs.items():
        if nbytes == 0 or whole is None:
            try:
                tensors[name] = np.zeros(shape, dtype=dt)
            except ValueError:  # e.g. (0, 2**62): empty, but beyond what numpy can index
                raise ValueError(
                    f"{bad}: entry {name!r} has a shape {list(shape)} numpy cannot represent"
                ) from None
            continue
        view = whole[begin : begin + nbytes]
        arr = np.ndarray(shape, dtype=dt, buffer=view) if mmap else view.view(dt).reshape(shape)
        if not mmap:
            arr = arr.copy()
        tensors[name] = arr
    return tensors, dict(meta)
