"""The one atomic writer of the library, and the small file helpers built on it.

Every file datacredit writes (caches, sample banks, result files, artifacts, shards) goes
through :func:`atomic_open`: a temporary file in the target's directory, flushed and fsynced,
then renamed over the target. A kill -9 at any moment leaves either the old file or the new
one, never a truncated mix.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

import numpy as np

try:  # POSIX advisory locks
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]


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


def _owner_tag() -> str:
    # Who writes a temporary file: its name says so, so that a later process can tell a
    # temporary left by a killed writer (stale) from one being written right now.
    host = re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname()) or "host"
    return f"~{os.getpid()}@{host}~"


_TEMP_OWNER = re.compile(r"~(\d+)@([A-Za-z0-9_-]+)~[^/]*\.tmp$")
# A temporary of another host is stale only when nothing touched it for this long (its
# writer's liveness cannot be checked from here).
FOREIGN_TEMP_AGE = 24 * 3600.0


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


def clean_stale_temporaries(directory: str | os.PathLike, prefix: str = ".") -> list[Path]:
    """Delete the temporaries of :func:`atomic_open` in ``directory`` whose writer is gone.

    A writer killed by SIGKILL (OOM killer, preemption) leaves its ``.NAME.~PID@HOST~XXXX.tmp``;
    it is deleted when PID no longer runs on this host, or, for another host's file, when it
    was not modified for :data:`FOREIGN_TEMP_AGE` seconds.  Temporaries of live writers (and
    files of any other name) are never touched.  Only names starting with ``prefix`` are
    considered.  Returns the deleted paths.  O(files in ``directory``).
    """
    directory = Path(directory)
    host = _owner_tag().split("@", 1)[1].rstrip("~")
    removed = []
    try:
        names = os.listdir(directory)
    except OSError:
        return removed
    now = time.time()
    for name in names:
        if not name.startswith(prefix) or not name.endswith(".tmp"):
            continue
        m = _TEMP_OWNER.search(name)
        if m is None:
            continue
        path = directory / name
        if m.group(2) == host:
            stale = not _pid_alive(int(m.group(1)))
        else:
            try:
                stale = now - path.stat().st_mtime > FOREIGN_TEMP_AGE
            except OSError:
                continue
        if stale:
            try:
                path.unlink()
                removed.append(path)
            except OSError:
                pass
    return removed


_CLEANED_DIRS: set[str] = set()


def _clean_once(directory: Path) -> None:
    # The first write of this process into a directory deletes the temporaries that killed
    # writers left there (a resumed run rewrites exactly the files it was killed writing, so
    # their leftovers go on the resume). Once per directory: O(files) once, not per write.
    key = os.path.abspath(directory)
    if key not in _CLEANED_DIRS:
        _CLEANED_DIRS.add(key)
        clean_stale_temporaries(directory)


@contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO[Any]]:
    """Open a temporary file next to ``path``; it replaces ``path`` only if the block succeeds.

    The data is fsynced before the rename and the directory after it, so an interrupted or
    failing write (exception, kill -9, power loss) never leaves a truncated file at ``path``:
    the previous file, if any, stays intact until the new one is complete.  The temporary's
    name records the writer's pid and host, so that one left by a kill -9 is recognised and
    removed by :func:`clean_stale_temporaries`, which the first write of a process into a
    directory runs there.
    """
    path = Path(path)
    _clean_once(path.parent)
    fd, tmp = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.{_owner_tag()}", suffix=".tmp"
    )
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


@contextmanager
def exclusive_lock(path: str | os.PathLike, *, blocking: bool) -> Iterator[bool]:
    """Hold an exclusive advisory lock on the (empty) lock file ``path`` for the block.

    Yields ``True`` when held, ``False`` when ``blocking`` is false and another holder has it.
    An ``flock``: exclusive between processes and between threads (each call opens its own
    file description), released on exit and by the kernel when the holder dies (SIGKILL
    included), so no lock outlives its process. The lock file is created empty and kept.
    Without POSIX locks (Windows) always yields ``True`` (no exclusion).
    """
    if fcntl is None:  # pragma: no cover - Windows
        yield True
        return
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)  # no data is ever written to it
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True
    finally:
        os.close(fd)  # releases the lock


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
