"""The one atomic writer of the library, and the small file helpers built on it.

Every file datacredit writes (caches, sample banks, result files, artifacts, shards) goes
through :func:`atomic_open`: a temporary file in the target's directory, flushed and fsynced,
then renamed over the target. A kill -9 at any moment leaves either the old file or the new
one, never a truncated mix.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np


def _fsync_dir(directory: Path) -> None:
    # The rename is durable only once the directory entry is on disk (POSIX); best effort
    # where directories cannot be opened (Windows).
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _umask() -> int:
    # os.umask can only be read by setting it; restore at once.
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; it replaces ``path`` only if the block succeeds.

    The data is fsynced before the rename and the directory after it, so an interrupted or
    failing write (exception, kill -9, power loss) never leaves a truncated file at ``path``:
    the previous file, if any, stays intact until the new one is complete.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 & ~umask).
        os.chmod(tmp, 0o666 & ~_umask())
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_save_npz(path: str | os.PathLike, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` as an uncompressed ``.npz`` at exactly ``path`` (no suffix added).

    Object arrays are refused, so the file can always be read with ``allow_pickle=False``.
    """
    for name, a in arrays.items():
        if np.asarray(a).dtype == object:
            raise TypeError(f"atomic_save_npz: array {name!r} has dtype object (not storable)")
    with atomic_open(path, "wb") as f:
        np.savez(f, **arrays)


def atomic_save_npy(path: str | os.PathLike, array: np.ndarray) -> None:
    """Write one array as ``.npy`` at exactly ``path``, atomically, never pickled."""
    with atomic_open(path, "wb") as f:
        np.save(f, array, allow_pickle=False)


def to_jsonable(x: Any) -> Any:
    """``json.dumps(default=...)`` hook: numpy arrays and scalars to Python, else ``str``."""
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, np.generic):
        return x.item()
    return str(x)
