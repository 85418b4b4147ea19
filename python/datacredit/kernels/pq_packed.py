"""4-bit PQ codes packed for the fast-scan search (:class:`PackedCodes`), and the format
checks of the PQ files (safetensors; legacy ``.npz`` read only)."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from datacredit import _core
from datacredit.safetensors_io import load_safetensors, save_safetensors

PACKED_FORMAT = "datacredit.PackedCodes/1"  # the legacy .npz files (read only)
# Safetensors formats (written since 0.1; readable from C, see docs/c_api.md).
PACKED_ST_FORMAT = "datacredit.packed_codes"
ST_VERSION = "1"


def is_npz(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zip archive (the legacy ``.npz`` format) rather than safetensors."""
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def check_st_format(path: Any, meta: dict[str, str], fmt: str, what: str) -> None:
    """Raise a ValueError naming ``path`` unless its safetensors metadata say ``fmt`` at the
    version this release reads (``what`` names the artifact in the message)."""
    if meta.get("format") != fmt:
        raise ValueError(f"{path} is not a datacredit {what} file (format {meta.get('format')!r})")
    if meta.get("format_version") != ST_VERSION:
        raise ValueError(
            f"{path}: {what} format version {meta.get('format_version')!r} is not supported "
            f"(this version reads {ST_VERSION!r})"
        )


def meta_int(path: Any, meta: dict[str, str], key: str) -> int:
    """Metadata ``key`` as a non-negative int; a ValueError naming ``path`` and ``key``
    otherwise."""
    value = meta.get(key, "")
    if not value.isdigit():
        raise ValueError(f"{path}: metadata {key!r} must be a non-negative integer, got {value!r}")
    return int(value)


class PackedCodes:
    """4-bit PQ codes packed for the fast-scan search (from :meth:`ProductQuantizer.pack`).

    Layout (``data``, uint8, shape ``(ceil(n / 32), ceil(m / 2), 32)``): blocks of 32
    vectors; in block ``b``, row ``p`` holds one byte per vector ``j``: the code of
    sub-space ``2p`` in the low nibble and of sub-space ``2p + 1`` in the high nibble of
    vector ``32 b + j``.  An odd ``m`` gets a zero code in the extra sub-space, and the
    last block is filled with zero codes whose results are never reported.
    ``n * m / 2`` bytes (plus padding): half the memory of the unpacked codes.

    Inverted lists (``pack(codes, lists=...)``): the codes are grouped by list (stable:
    index order inside a list) and every list is padded to whole blocks of 32, so that
    list ``l`` occupies blocks ``list_blocks[l]:list_blocks[l + 1]`` of ``data``
    (``ceil(count_l / 32)`` blocks, none for an empty list).  ``ids[32 b + j]`` is the
    original index of the code at position ``j`` of block ``b`` (-1 for a padding
    position, which holds zero codes and only ends a list).  Extra memory: 8 bytes per
    position, plus at most 31 padding positions per list.

    Persist with :meth:`save` / :meth:`load` (safetensors, no pickle).

    Attributes:
        data: the packed bytes (read them, do not modify them).
        n: number of codes.
        m: sub-spaces per code.
        list_blocks: ``(nlist + 1,)`` int64 block offsets of the lists, or ``None`` (flat).
        ids: ``(data.shape[0] * 32,)`` int64 position -> original index map, or ``None``.
    """

    __slots__ = ("_positions", "data", "ids", "list_blocks", "m", "n")

    def __init__(
        self,
        data: np.ndarray,
        n: int,
        m: int,
        list_blocks: np.ndarray | None = None,
        ids: np.ndarray | None = None,
    ) -> None:
        self.data, self.n, self.m, self.list_blocks, self.ids = check_packed(
            data, n, m, list_blocks, ids
        )
        self._positions: np.ndarray | None = None

    @property
    def nlist(self) -> int | None:
        """Number of inverted lists, or ``None`` when packed without lists."""
        return None if self.list_blocks is None else len(self.list_blocks) - 1

    def positions(self) -> np.ndarray:
        """``(n,)`` int64 packed position of each code (the inverse of ``ids``).

        Computed once (``O(n)``) and cached; the identity when packed without lists.
        """
        if self._positions is None:
            if self.ids is None:
                self._positions = np.arange(self.n, dtype=np.int64)
            else:
                pos = np.full(self.n, -1, np.int64)
                valid = np.flatnonzero(self.ids >= 0)
                pos[self.ids[valid]] = valid
                self._positions = pos
        return self._positions

    def __len__(self) -> int:
        return self.n

    @property
    def shape(self) -> tuple[int, int]:
        """``(n, m)``, the shape of the unpacked codes."""
        return (self.n, self.m)

    def unpack(self) -> np.ndarray:
        """The codes ``(n, m)`` uint8 again, in their original order (``O(n m)``)."""
        if self.ids is None:
            return _core.pq_fastscan_unpack(self.data, self.n, self.m)
        allpos = _core.pq_fastscan_unpack(self.data, len(self.ids), self.m)
        return np.ascontiguousarray(allpos[self.positions()])

    def save(self, path: str | os.PathLike) -> None:
        """Write the packed codes to a safetensors file at exactly ``path``, atomically.

        Format ``datacredit.packed_codes`` version 1 (readable by the C API,
        ``dc_pq_index_load``): tensors ``data`` (U8, as above), and with lists
        ``list_blocks`` and ``ids`` (I64); metadata ``n``, ``m``.
        """
        tensors = {"data": self.data}
        if self.list_blocks is not None:
            tensors["list_blocks"] = self.list_blocks
            tensors["ids"] = self.ids
        meta = {
            "format": PACKED_ST_FORMAT,
            "format_version": ST_VERSION,
            "n": str(self.n),
            "m": str(self.m),
        }
        save_safetensors(path, tensors, meta)

    @classmethod
    def load(cls, path: str | os.PathLike) -> PackedCodes:
        """Read packed codes written by :meth:`save` (or the ``.npz`` of datacredit <= 0.1's
        format 1); the layout is checked (``O(n)``)."""
        if is_npz(path):
            with np.load(path, allow_pickle=False) as f:
                if "format" not in f or str(f["format"]) != PACKED_FORMAT:
                    raise ValueError(f"{path} is not a datacredit PackedCodes file")
                data = np.ascontiguousarray(f["data"])
                n, m = int(f["n"]), int(f["m"])
                has_lists = bool(f["has_lists"])
                list_blocks = (
                    np.ascontiguousarray(f["list_blocks"], np.int64) if has_lists else None
                )
                ids = np.ascontiguousarray(f["ids"], np.int64) if has_lists else None
        else:
            tensors, meta = load_safetensors(path, mmap=False)
            check_st_format(path, meta, PACKED_ST_FORMAT, "PackedCodes")
            n, m = meta_int(path, meta, "n"), meta_int(path, meta, "m")
            data = tensors.get("data")
            list_blocks, ids = tensors.get("list_blocks"), tensors.get("ids")
            if data is None or (list_blocks is None) != (ids is None):
                raise ValueError(
                    f"{path}: PackedCodes file lacks data, or has only one of list_blocks/ids"
                )
            if list_blocks is not None and (list_blocks.dtype != np.int64 or ids.dtype != np.int64):
                raise ValueError(f"{path}: list_blocks and ids must be int64")
        n_blocks = data.shape[0] if data.ndim == 3 else -1
        if data.dtype != np.uint8 or data.shape[1:] != ((m + 1) // 2, 32) or n < 1:
            raise ValueError(f"{path}: packed data of shape {data.shape} does not fit n={n}, m={m}")
        if list_blocks is None:
            if n_blocks != (n + 31) // 32:
                raise ValueError(f"{path}: {n_blocks} blocks for n={n} codes")
        else:
            ok = (
                list_blocks.ndim == 1
                and len(list_blocks) >= 2
                and list_blocks[0] == 0
                and list_blocks[-1] == n_blocks
                and (np.diff(list_blocks) >= 0).all()
                and ids.shape == (n_blocks * 32,)
            )
            real = ids[ids >= 0] if ok else ids
            if not ok or real.size != n or not np.array_equal(np.sort(real), np.arange(n)):
                raise ValueError(f"{path}: inconsistent inverted-list layout")
        return cls(data, n, m, list_blocks, ids)

    def __repr__(self) -> str:
        lists = "" if self.list_blocks is None else f", nlist={self.nlist}"
        return f"PackedCodes(n={self.n}, m={self.m}{lists}, {self.data.nbytes} bytes)"


def check_packed(data: Any, n: Any, m: Any, list_blocks: Any, ids: Any):
    """Validated ``(data, n, m, list_blocks, ids)`` of a :class:`PackedCodes` (``O(n)``).

    The compiled searches read ``data`` and ``ids`` through ``list_blocks``: an
    inconsistent layout would read out of bounds, so it is refused here (and again in C++).
    """
    for name, v in (("n", n), ("m", m)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"PackedCodes: {name} must be a positive integer, got {v!r}")
    n, m = int(n), int(m)
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 3 or data.shape[1:] != ((m + 1) // 2, 32):
        raise ValueError(
            f"PackedCodes: data must be uint8 of shape (n_blocks, {(m + 1) // 2}, 32) for m={m}, "
            f"got {data.dtype} {data.shape}"
        )
    data = np.ascontiguousarray(data)
    n_blocks = data.shape[0]
    if (list_blocks is None) != (ids is None):
        raise ValueError("PackedCodes: list_blocks and ids go together (both or neither)")
    if list_blocks is None:
        if n_blocks != (n + 31) // 32:
            raise ValueError(
                f"PackedCodes: {n_blocks} blocks for n={n} codes (expected {(n + 31) // 32})"
            )
        return data, n, m, None, None
    lb, ids = np.asarray(list_blocks), np.asarray(ids)
    if lb.dtype.kind not in "iu" or ids.dtype.kind not in "iu":
        raise TypeError("PackedCodes: list_blocks and ids must be integer arrays")
    lb = np.ascontiguousarray(lb, dtype=np.int64)
    ids = np.ascontiguousarray(ids, dtype=np.int64)
    if (
        lb.ndim != 1
        or lb.shape[0] < 2
        or lb[0] != 0
        or lb[-1] != n_blocks
        or (np.diff(lb) < 0).any()
    ):
        raise ValueError(
            "PackedCodes: list_blocks must be a non-decreasing (nlist + 1,) vector from 0 to "
            f"the number of blocks ({n_blocks})"
        )
    if ids.shape != (n_blocks * 32,):
        raise ValueError(f"PackedCodes: ids must have shape ({n_blocks * 32},), got {ids.shape}")
    real = ids[ids >= 0]
    if (
        (ids < -1).any()
        or real.size != n
        or (real >= n).any()
        or np.bincount(real, minlength=n).max(initial=0) > 1
    ):
        raise ValueError(
            f"PackedCodes: ids must hold each code index 0..{n - 1} once (-1 for padding)"
        )
    return data, n, m, lb, ids
