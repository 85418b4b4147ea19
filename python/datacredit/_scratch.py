"""Scratch arrays that follow their input's memory: anonymous for in-memory inputs, backed by
an unlinked temporary file for memory-mapped ones.

A memory-mapped training set (``np.load(path, mmap_mode="r")``) is how users value data
larger than RAM in core; a derived N × d array (the inverted file's list-ordered copy, a
shifted or normalised search space) allocated with ``np.empty`` would put all of it in
anonymous memory (2 GB at 4M × 128).  Backed by a file, its pages are the page cache's:
written back and dropped under memory pressure, like the input's own.  The file lives next
to the input's (a disk, where ``/tmp`` may be RAM-backed tmpfs) and is unlinked at once
(``tempfile.TemporaryFile``), so nothing is left on disk once the array is released,
whatever happens to the process.
"""

from __future__ import annotations

import mmap
import os
import tempfile
from typing import Any

import numpy as np


def _mapping(a: Any) -> Any:
    """The ``np.memmap`` or ``mmap.mmap`` that ``a``'s data lives in, else None."""
    base = a
    while base is not None:
        if isinstance(base, (np.memmap, mmap.mmap)):
            return base
        base = getattr(base, "base", None)
    return None


def is_memory_mapped(a: Any) -> bool:
    """Whether ``a``'s data lives in a memory-mapped file (``np.memmap``, ``np.load(...,
    mmap_mode=...)``, or a view of one)."""
    return _mapping(a) is not None


def scratch_dir(like: Any) -> str:
    """Where a scratch file for ``like`` goes: the directory of the file ``like`` is mapped
    from when it is writable (that file system holds the input, so it is a disk, never a
    RAM-backed tmpfs), else ``tempfile.gettempdir()`` (``$TMPDIR``)."""
    name = getattr(_mapping(like), "filename", None)
    if name:
        folder = os.path.dirname(os.path.abspath(name))
        if os.access(folder, os.W_OK | os.X_OK):
            return folder
    return tempfile.gettempdir()


def scratch_array(shape: tuple[int, ...], dtype: Any, *, like: Any = None) -> np.ndarray:
    """An uninitialised C-contiguous array of ``shape`` / ``dtype``: file-backed (an unlinked
    temporary file in :func:`scratch_dir`, next to ``like``'s own file) when ``like`` is
    memory-mapped (:func:`is_memory_mapped`), else ``np.empty``.  O(1) time; the file needs
    ``prod(shape) · itemsize`` bytes of disk while the array lives."""
    dtype = np.dtype(dtype)
    if like is None or not is_memory_mapped(like):
        return np.empty(shape, dtype)
    nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if nbytes == 0:
        return np.empty(shape, dtype)
    with tempfile.TemporaryFile(prefix=".datacredit-scratch-", dir=scratch_dir(like)) as f:
        os.ftruncate(f.fileno(), nbytes)
        # the mapping keeps the (already unlinked) file alive after f is closed
        return np.memmap(f, dtype=dtype, mode="r+", shape=shape)
