"""A shard store: one stage's output split by rows into safetensors files, with a manifest.

Layout of a store directory::

    manifest.json                 written by the driver only (atomically)
    shard-00000.safetensors       written by the worker of shard 0 only (atomically)
    shard-00000.done              its done marker (JSON: rows, sha256, tensors), written last

    .shard-00000.lock             the shard's claim (an advisory flock, held while computing)

A shard is complete when its done marker exists and the shard file's SHA-256 is the one the
marker records: a worker killed mid-shard leaves no marker (the atomic writer never leaves a
partial file), so a rerun recomputes exactly the missing shards. The driver folds the markers
into the manifest (:meth:`ShardStore.refresh`); workers never touch it, so any number of them
(threads, processes, Ray tasks, a SLURM array) can run at once.

What is read is verified: :meth:`ShardStore.refresh` (run by :meth:`ShardStore.create` and by
``run_stage`` before and after computing) and the first :meth:`ShardStore.shard` read of each
shard in a process compare the file's SHA-256 with its marker (a shard already verified by this
object is hashed again only when its size, mtime or inode changed). A shard that fails (a
truncated or bit-flipped file, another store's file put in its place) is discarded by
``refresh`` (a warning names it) and recomputed by the next ``run_stage``; a read of it raises
``ValueError``. Each shard's tensors are checked against the manifest's dtypes and row shapes
when read, so an edited manifest cannot make :meth:`ShardStore.take` cast data.

Several drivers on one store cooperate: a worker computes a shard only while it holds the
shard's claim (``flock`` on ``.shard-NNNNN.lock``, released by the kernel when the process
dies, even by SIGKILL); a driver that finds a shard claimed computes the others, then waits
for the claim and adopts the shard the other driver finished. File and marker of a shard
therefore always come from one writer. (On network file systems this relies on their
``flock``/``fcntl`` lock support, e.g. NFSv4 or Lustre with ``-o flock``.) Temporaries left by
writers killed mid-write (``.NAME.~PID@HOST~XXXX.tmp``) are deleted by ``refresh`` once their
writer no longer runs (:func:`datacredit._io.clean_stale_temporaries`).

The manifest records the format version, the datacredit version, the method and stage, the
configuration (a JSON object) and its SHA-256, the row count and rows per shard, and per
shard its row range, status, file checksum and tensors' dtype/shape. Opening a store with
another configuration raises ``ValueError`` naming the keys that differ. Reading never
executes code (JSON and validated safetensors only) and tensors come back memory-mapped.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from datacredit._io import atomic_write_text, clean_stale_temporaries, exclusive_lock
from datacredit.safetensors_io import load_safetensors, save_safetensors

__all__ = ["ShardStore", "claim_shard", "compute_shard", "config_hash", "write_shard"]

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def _canonical(config: Mapping[str, Any]) -> str:
    try:
        return json.dumps(config, sort_keys=True, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"config must be a JSON object of plain values: {exc}") from None


def config_hash(config: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the canonical JSON of ``config`` (sorted keys, no whitespace)."""
    return hashlib.sha256(_canonical(config).encode()).hexdigest()


def _sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()


def _shard_name(shard: int) -> str:
    return f"shard-{shard:05d}"


def _row_range(shard: int, n_rows: int, shard_rows: int) -> tuple[int, int]:
    return shard * shard_rows, min(n_rows, (shard + 1) * shard_rows)


def _json_object(text: str, what: str) -> dict[str, Any]:
    """``text`` parsed as a JSON object; ``ValueError`` naming ``what`` otherwise (also for
    nesting too deep for the parser, which raises ``RecursionError``)."""
    try:
        obj = json.loads(text)
    except (json.JSONDecodeError, RecursionError, ValueError) as exc:
        raise ValueError(f"{what}: not valid JSON ({str(exc)[:200]})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{what}: not a JSON object")
    return obj


@contextmanager
def claim_shard(path: str | os.PathLike, shard: int, *, blocking: bool) -> Iterator[bool]:
    """Hold shard ``shard``'s claim of the store at ``path`` for the ``with`` block.

    Yields ``True`` when held (exclusive across processes and threads: an ``flock`` on
    ``.shard-NNNNN.lock``, released on exit and by the kernel when the process dies), or
    ``False`` when ``blocking`` is false and another writer holds it. Without POSIX locks
    (Windows) always yields ``True``.
    """
    with exclusive_lock(Path(path) / f".{_shard_name(shard)}.lock", blocking=blocking) as held:
        yield held


def _valid_marker(path: Path, shard: int, config_hash: str | None) -> dict[str, Any] | None:
    """The marker of ``shard`` when it and the file it names are intact, else ``None``."""
    base = path / _shard_name(shard)
    try:
        marker = _json_object(base.with_suffix(".done").read_text(), "marker")
        ok = marker.get("config_hash") == config_hash and marker.get("sha256") == _sha256_file(
            base.with_suffix(".safetensors")
        )
    except (OSError, ValueError):
        return None
    return marker if ok else None


def compute_shard(
    path: str | os.PathLike,
    shard: int,
    rows: tuple[int, int],
    fn: Callable[[int, tuple[int, int]], Mapping[str, np.ndarray]],
    config_hash: str | None = None,
    *,
    blocking: bool = True,
) -> dict[str, Any] | None:
    """Worker side: compute and write shard ``shard`` unless another writer did or does.

    Under the shard's claim (:func:`claim_shard`): when an intact shard of this configuration
    is there already (another driver finished it), returns its marker without calling ``fn``;
    otherwise writes ``fn(shard, rows)`` (see :func:`write_shard`). With ``blocking=False``
    returns ``None`` at once when another writer holds the claim.
    """
    path = Path(path)
    with claim_shard(path, shard, blocking=blocking) as held:
        if not held:
            return None
        marker = _valid_marker(path, shard, config_hash)
        if marker is not None:
            return marker
        return _write_claimed(path, shard, rows, fn(shard, rows), config_hash)


def write_shard(
    path: str | os.PathLike,
    shard: int,
    rows: tuple[int, int],
    tensors: Mapping[str, np.ndarray],
    config_hash: str | None = None,
) -> dict[str, Any]:
    """Worker side: write shard ``shard``'s tensors, then its done marker; returns the marker.

    Every tensor's first axis must have ``rows[1] - rows[0]`` entries. ``config_hash`` (the
    manifest's) is recorded in the marker, so a shard is never adopted by a store of another
    configuration. Writes only the two files of this shard (each atomically, while holding the
    shard's claim, so file and marker come from one writer), never the manifest. O(shard bytes).
    """
    with claim_shard(path, shard, blocking=True):
        return _write_claimed(Path(path), shard, rows, tensors, config_hash)


def _write_claimed(
    path: Path,
    shard: int,
    rows: tuple[int, int],
    tensors: Mapping[str, np.ndarray],
    config_hash: str | None,
) -> dict[str, Any]:
    n = rows[1] - rows[0]
    if not isinstance(tensors, Mapping) or not tensors:
        raise TypeError(
            f"shard {shard}: a stage must return a non-empty dict name -> array, "
            f"got {type(tensors).__name__}"
        )
    arrays = {}
    for name, a in tensors.items():
        a = np.asarray(a)
        if a.ndim == 0 or a.shape[0] != n:
            raise ValueError(
                f"shard {shard}: tensor {name!r} has shape {a.shape}, expected {n} rows first"
            )
        arrays[name] = a
    base = path / _shard_name(shard)
    file = base.with_suffix(".safetensors")
    save_safetensors(file, arrays, {"shard": str(shard), "rows": f"{rows[0]}:{rows[1]}"})
    marker = {
        "shard": shard,
        "rows": list(rows),
        "sha256": _sha256_file(file),
        "config_hash": config_hash,
        "tensors": {
            k: {"dtype": v.dtype.str, "row_shape": list(v.shape[1:])} for k, v in arrays.items()
        },
    }
    atomic_write_text(base.with_suffix(".done"), json.dumps(marker))
    return marker


class ShardStore:
    """A directory of row shards of one stage's output (see the module docstring).

    ``ShardStore(path)`` opens an existing store; :meth:`ShardStore.create` makes one or
    reopens it when its configuration matches. ``n_rows`` rows are split in shards of
    ``shard_rows`` (the last may be shorter); shard ``i`` holds rows
    ``[i * shard_rows, min(n_rows, (i + 1) * shard_rows))``.
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        file = self.path / MANIFEST
        if not file.is_file():
            raise FileNotFoundError(f"{self.path} is not a shard store: {MANIFEST} is missing")
        m = _json_object(file.read_text(), str(file))
        if m.get("format_version") != FORMAT_VERSION:
            raise ValueError(
                f"{file}: unsupported format_version {m.get('format_version')!r} "
                f"(this datacredit reads {FORMAT_VERSION})"
            )
        for key in ("method", "stage", "config", "config_hash", "n_rows", "shard_rows", "shards"):
            if key not in m:
                raise ValueError(f"{file}: manifest has no {key!r}")
        for key, low in (("n_rows", 0), ("shard_rows", 1)):
            v = m[key]
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{file}: {key} must be an integer >= {low}, got {v!r}")
        if not isinstance(m["config"], dict) or not isinstance(m.get("tensors", {}), dict):
            raise ValueError(f"{file}: config and tensors must be JSON objects")
        if not isinstance(m["shards"], list) or not all(isinstance(e, dict) for e in m["shards"]):
            raise ValueError(f"{file}: shards must be a list of objects")
        if config_hash(m["config"]) != m["config_hash"]:
            raise ValueError(f"{file}: config_hash does not match the recorded config")
        n_shards = -(-m["n_rows"] // m["shard_rows"]) if m["n_rows"] else 0
        if len(m["shards"]) != n_shards:
            raise ValueError(f"{file}: {len(m['shards'])} shards listed, expected {n_shards}")
        self.manifest: dict[str, Any] = m
        self._maps: dict[int, dict[str, np.ndarray]] = {}  # open memory maps of done shards
        # Shards whose file this object hashed: shard -> (sha256, stat signature).
        self._verified: dict[int, tuple[str, tuple]] = {}
        self._all_done = False

    # ---------------------------------------------------------------- creation
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        method: str,
        stage: str,
        config: Mapping[str, Any],
        n_rows: int,
        shard_rows: int,
        worker: str | None = None,
    ) -> ShardStore:
        """Create the store at ``path``, or reopen it if it was made by the same configuration.

        ``worker``: optional ``"package.module:function"`` computing one shard as
        ``function(config, shard, (begin, end)) -> {name: array}``; it lets
        ``datacredit shard run`` compute shards from the command line (SLURM arrays).

        Raises ``ValueError`` naming what differs (method, stage, config keys, rows, worker)
        when ``path`` holds a store of another configuration, so results are never mixed.
        """
        from datacredit import __version__

        if isinstance(n_rows, bool) or not isinstance(n_rows, (int, np.integer)) or n_rows < 0:
            raise ValueError(f"n_rows must be a non-negative integer, got {n_rows!r}")
        if (
            isinstance(shard_rows, bool)
            or not isinstance(shard_rows, (int, np.integer))
            or shard_rows < 1
        ):
            raise ValueError(f"shard_rows must be a positive integer, got {shard_rows!r}")
        n_rows, shard_rows = int(n_rows), int(shard_rows)
        config = json.loads(_canonical(config))
        if worker is not None and (not isinstance(worker, str) or ":" not in worker):
            raise ValueError(f"worker must be 'package.module:function', got {worker!r}")
        path = Path(path)
        if (path / MANIFEST).exists():
            store = cls(path)
            store._check_same(method, stage, config, n_rows, shard_rows)
            if store.manifest.get("worker") != worker:
                raise ValueError(
                    f"{path} holds a store of another configuration (worker: store has "
                    f"{store.manifest.get('worker')!r}, requested {worker!r})"
                )
            return store.refresh()
        path.mkdir(parents=True, exist_ok=True)
        chash = config_hash(config)
        for done in sorted(path.glob("shard-*.done")):  # left by a run whose manifest is gone
            try:
                other = _json_object(done.read_text(), str(done)).get("config_hash")
            except (OSError, ValueError):
                other = None
            if other != chash:
                raise ValueError(
                    f"{done}: written by another configuration (config_hash "
                    f"{str(other)[:12]}..., requested {chash[:12]}...): delete the shard files"
                )
        n_shards = -(-n_rows // shard_rows) if n_rows else 0
        manifest = {
            "format_version": FORMAT_VERSION,
            "datacredit_version": __version__,
            "method": method,
            "stage": stage,
            "config": config,
            "config_hash": chash,
            "n_rows": n_rows,
            "shard_rows": shard_rows,
            "worker": worker,
            "tensors": {},
            "shards": [
                {
                    "rows": list(_row_range(i, n_rows, shard_rows)),
                    "status": "pending",
                    "sha256": None,
                }
                for i in range(n_shards)
            ],
        }
        atomic_write_text(path / MANIFEST, json.dumps(manifest, indent=1))
        store = cls(path)
        return store.refresh()  # shards a previous, manifest-less run left behind

    def _check_same(
        self, method: str, stage: str, config: dict, n_rows: int, shard_rows: int
    ) -> None:
        m = self.manifest
        diffs = []
        for key, want in (("method", method), ("stage", stage), ("n_rows", n_rows)):
            if m[key] != want:
                diffs.append(f"{key}: store has {m[key]!r}, requested {want!r}")
        if m["shard_rows"] != shard_rows:
            diffs.append(f"shard_rows: store has {m['shard_rows']}, requested {shard_rows}")
        have = m["config"]
        for key in sorted(set(have) | set(config)):
            if have.get(key, "<absent>") != config.get(key, "<absent>"):
                diffs.append(
                    f"config[{key!r}]: store has {have.get(key, '<absent>')!r}, "
                    f"requested {config.get(key, '<absent>')!r}"
                )
        if diffs:
            raise ValueError(
                f"{self.path} holds a store of another configuration ("
                + "; ".join(diffs)
                + "): pass another directory or delete this one"
            )

    # ---------------------------------------------------------------- status
    @property
    def n_shards(self) -> int:
        return len(self.manifest["shards"])

    @property
    def n_rows(self) -> int:
        return int(self.manifest["n_rows"])

    @property
    def config(self) -> dict[str, Any]:
        return self.manifest["config"]

    def rows(self, shard: int) -> tuple[int, int]:
        """Row range ``[begin, end)`` of ``shard``."""
        self._check_shard(shard)
        return _row_range(shard, self.n_rows, int(self.manifest["shard_rows"]))

    def _check_shard(self, shard: Any) -> None:
        if isinstance(shard, bool) or not isinstance(shard, (int, np.integer)):
            raise TypeError(f"shard must be an integer, got {type(shard).__name__}")
        if not 0 <= shard < self.n_shards:
            raise ValueError(f"shard {shard} is out of range: the store has {self.n_shards}")

    def _marker(self, shard: int) -> dict[str, Any] | None:
        """The done marker of ``shard`` (``None`` without one, or when it is unreadable: a
        shard to recompute); raises ``ValueError`` for a marker of other rows or of another
        configuration (never silently overwritten). Does not hash the file."""
        base = self.path / _shard_name(shard)
        done = base.with_suffix(".done")
        if not done.is_file() or not base.with_suffix(".safetensors").is_file():
            return None
        try:
            marker = _json_object(done.read_text(), str(done))
        except (OSError, ValueError):
            return None
        if marker.get("rows") != list(self.rows(shard)):
            raise ValueError(
                f"{done}: rows {marker.get('rows')} differ from the manifest's {self.rows(shard)}"
            )
        if marker.get("config_hash") != self.manifest["config_hash"]:
            raise ValueError(
                f"{done}: written by another configuration (config_hash "
                f"{str(marker.get('config_hash'))[:12]}..., the manifest's "
                f"{self.manifest['config_hash'][:12]}...): delete the shard files"
            )
        if not isinstance(marker.get("sha256"), str) or not isinstance(marker.get("tensors"), dict):
            return None
        return marker

    def _file_problem(self, shard: int, marker: dict[str, Any]) -> str | None:
        """Why shard ``shard``'s file does not match ``marker`` (its SHA-256), or ``None``.

        O(shard bytes) the first time; again only when the file's stat signature changed."""
        file = (self.path / _shard_name(shard)).with_suffix(".safetensors")
        try:
            st = file.stat()
        except OSError as exc:
            return f"cannot be read ({exc})"
        sig = (st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns)
        if self._verified.get(shard) == (marker["sha256"], sig):
            return None
        try:
            digest = _sha256_file(file)
        except OSError as exc:
            return f"cannot be read ({exc})"
        if digest != marker["sha256"]:
            return (
                f"checksum mismatch (SHA-256 {digest[:12]}..., its marker records "
                f"{marker['sha256'][:12]}...): the file changed after writing"
            )
        self._verified[shard] = (digest, sig)
        return None

    def _discard(self, shard: int, marker: dict[str, Any], problem: str) -> bool:
        """Delete a bad shard's marker and file so that ``run_stage`` recomputes it; ``False``
        when a writer holds its claim right now (it is being rewritten: left alone)."""
        base = self.path / _shard_name(shard)
        with claim_shard(self.path, shard, blocking=False) as held:
            if not held:
                return False
            try:  # only the marker that was judged (not one a writer put there since)
                now = _json_object(base.with_suffix(".done").read_text(), "marker")
            except (OSError, ValueError):
                now = None
            if now is not None and now != marker:
                return False
            for suffix in (".done", ".safetensors"):
                try:
                    base.with_suffix(suffix).unlink()
                except FileNotFoundError:
                    pass
        self._maps.pop(shard, None)
        self._verified.pop(shard, None)
        warnings.warn(
            f"{base.with_suffix('.safetensors')}: {problem}; discarded, the next run_stage "
            "recomputes it",
            RuntimeWarning,
            stacklevel=3,
        )
        return True

    def refresh(self) -> ShardStore:
        """Driver side: fold the workers' done markers into the manifest (atomic rewrite).

        Verifies every done shard's SHA-256 (each file hashed once per object unless it
        changes: O(new store bytes)); a shard that fails is discarded with a warning and
        counts as pending, so the next ``run_stage`` recomputes it. Checks that every
        completed shard holds the same tensors (names, dtypes, row shapes); a mismatch raises
        ``ValueError`` naming the shard. Deletes the temporaries of killed writers.
        """
        clean_stale_temporaries(self.path)
        changed = False
        tensors = self.manifest.get("tensors", {})
        for i, entry in enumerate(self.manifest["shards"]):
            marker = self._marker(i)
            if marker is not None:
                problem = self._file_problem(i, marker)
                if problem is not None:
                    self._discard(i, marker, problem)
                    marker = None
            if marker is None:
                if entry.get("status") != "pending":
                    entry.update(status="pending", sha256=None)
                    changed = True
                self._all_done = False
                continue
            if not tensors:
                tensors = marker["tensors"]
                self.manifest["tensors"] = tensors
                changed = True
            elif marker["tensors"] != tensors:
                raise ValueError(
                    f"{self.path}: shard {i} holds tensors {marker['tensors']}, "
                    f"the other shards {tensors}"
                )
            if entry.get("status") != "done" or entry.get("sha256") != marker["sha256"]:
                entry.update(status="done", sha256=marker["sha256"])
                changed = True
        if changed:
            atomic_write_text(self.path / MANIFEST, json.dumps(self.manifest, indent=1))
        return self

    def status(self) -> list[str]:
        """``"done"`` or ``"pending"`` per shard, from the done markers (read only; the files
        are verified by :meth:`refresh` and on first read, not here)."""
        return ["pending" if self._marker(i) is None else "done" for i in range(self.n_shards)]

    def missing(self) -> list[int]:
        """Shards without a done marker, in shard order."""
        return [i for i, s in enumerate(self.status()) if s != "done"]

    @property
    def complete(self) -> bool:
        return not self.missing()

    def verify(self) -> None:
        """Recompute every completed shard's SHA-256 against its marker (O(store bytes));
        ``ValueError`` naming the first that differs. Unlike :meth:`refresh` it deletes
        nothing and ignores what this object verified before."""
        for i in range(self.n_shards):
            marker = self._marker(i)
            if marker is None:
                continue
            file = (self.path / _shard_name(i)).with_suffix(".safetensors")
            if _sha256_file(file) != marker["sha256"]:
                raise ValueError(f"{file}: checksum mismatch (the file changed after writing)")

    # ---------------------------------------------------------------- reading
    def shard(self, shard: int) -> dict[str, np.ndarray]:
        """Shard ``shard``'s tensors, memory-mapped read-only (validated; no code executed).

        The first read in this object checks the file's SHA-256 against its marker and the
        tensors against the manifest's dtypes and row shapes (``ValueError`` otherwise:
        rerun the stage, which recomputes a bad shard). O(shard bytes) once, then O(1).
        """
        self._check_shard(shard)
        if shard in self._maps:
            return self._maps[shard]
        marker = self._marker(shard)
        if marker is None:
            raise ValueError(f"{self.path}: shard {shard} is not complete")
        file = (self.path / _shard_name(shard)).with_suffix(".safetensors")
        problem = self._file_problem(shard, marker)
        if problem is not None:
            raise ValueError(
                f"{file}: {problem}; run the stage again (run_stage or `datacredit shard "
                "run`): it recomputes this shard"
            )
        tensors, meta = load_safetensors(file)
        b, e = self.rows(shard)
        if meta.get("rows") != f"{b}:{e}":
            raise ValueError(f"{self.path}: shard {shard} file holds rows {meta.get('rows')}")
        want = self.manifest.get("tensors") or marker["tensors"]
        have = {
            k: {"dtype": v.dtype.str, "row_shape": list(v.shape[1:])} for k, v in tensors.items()
        }
        if have != want or marker["tensors"] != want:
            raise ValueError(
                f"{file}: holds tensors {have}, the manifest records {want} (an edited or "
                "stale manifest.json: restore it, or delete it and ShardStore.create with the same "
                "configuration adopts the shards)"
            )
        self._maps[shard] = tensors
        return tensors

    def _require_complete(self) -> None:
        if self._all_done:
            return
        missing = self.missing()
        if missing:
            raise ValueError(
                f"{self.path}: {len(missing)} of {self.n_shards} shards are not complete "
                f"(first: {missing[:5]}); run the stage again to compute them"
            )
        self._all_done = True

    def _check_tensor(self, name: str) -> None:
        if name not in self.manifest.get("tensors", {}):
            raise KeyError(
                f"{self.path}: no tensor {name!r} (has {sorted(self.manifest.get('tensors', {}))})"
            )

    def concat(self, name: str) -> np.ndarray:
        """Tensor ``name`` of all shards concatenated in row order (loaded into memory)."""
        self._require_complete()
        self._check_tensor(name)
        if not self.n_shards:
            raise ValueError(f"{self.path}: the store is empty")
        return np.concatenate([self.shard(i)[name] for i in range(self.n_shards)])

    def take(self, name: str, indices: Any) -> np.ndarray:
        """Rows ``indices`` (any int array shape) of tensor ``name``, gathered across shards.

        Reads only the touched rows of the memory maps: O(len(indices) * row bytes).
        """
        self._require_complete()
        self._check_tensor(name)
        idx = np.asarray(indices)
        if idx.dtype.kind not in "iu":
            raise TypeError(f"indices must be integers, got dtype {idx.dtype}")
        flat = idx.reshape(-1).astype(np.int64, copy=False)
        if flat.size and (flat.min() < 0 or flat.max() >= self.n_rows):
            raise ValueError(f"indices must lie in [0, {self.n_rows})")
        spec = self.manifest["tensors"][name]
        if flat.size:  # the manifest's row shape sizes `out`: check it against a shard first
            self.shard(int(flat[0]) // int(self.manifest["shard_rows"]))
        out = np.empty((flat.size, *spec["row_shape"]), np.dtype(spec["dtype"]))
        shard_rows = int(self.manifest["shard_rows"])
        which = flat // shard_rows
        order = np.argsort(which, kind="stable")
        bounds = np.searchsorted(which[order], np.arange(self.n_shards + 1))
        for s in range(self.n_shards):
            sel = order[bounds[s] : bounds[s + 1]]
            if sel.size:
                # shard() checked its dtype and row shape against the manifest: no cast here.
                out[sel] = self.shard(s)[name][flat[sel] - s * shard_rows]
        return out.reshape(*idx.shape, *spec["row_shape"])

    def __repr__(self) -> str:
        done = self.n_shards - len(self.missing())
        m = self.manifest
        return (
            f"ShardStore({str(self.path)!r}, method={m['method']!r}, stage={m['stage']!r}, "
            f"{done}/{self.n_shards} shards done)"
        )
