"""The sample bank's files: the seeds of each (label, chunk), the manifest ``bank.json`` and
the checks that make a resumed bank the bank that was started (shared by
:class:`~datacredit.surrogateshap.bank.SampleBank` and its sharded stages)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Hashable
from pathlib import Path
from typing import Any, Callable

import numpy as np

from datacredit._arrays import to_numpy
from datacredit._io import atomic_open, atomic_write_text

MANIFEST = "bank.json"


def label_seed(seed: int, index: int, chunk: int) -> int:
    """A 31-bit seed per (bank seed, label index, chunk), stable across runs."""
    ss = np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(index), int(chunk)])
    return int(ss.generate_state(1, dtype=np.uint32)[0] >> 1)


def atomic_save_npy(path: Path, array: np.ndarray) -> None:
    """Write ``array`` to ``path`` as ``.npy`` (no pickle) through the atomic writer."""
    with atomic_open(path) as f:
        np.save(f, array, allow_pickle=False)


def callable_name(fn: Any) -> str | None:
    """module.qualname of a function or of a callable object's class (None for None)."""
    if fn is None:
        return None
    target = fn if hasattr(fn, "__qualname__") else type(fn)
    return f"{getattr(target, '__module__', '?')}.{getattr(target, '__qualname__', '?')}"


def array_digest(a: np.ndarray) -> str:
    """SHA-256 of an array's dtype, shape and bytes (hex): identifies a bank chunk."""
    h = hashlib.sha256(str((a.dtype.str, a.shape)).encode())
    h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


def write_manifest(
    path: Path, labels: list, meta: dict, counts: list | None, complete: bool
) -> None:
    """Write the bank manifest at ``path`` atomically (labels, generator meta, counts, complete)."""
    doc = {"labels": labels, "meta": meta, "label_counts": counts, "complete": complete}
    atomic_write_text(path / MANIFEST, json.dumps(doc))


def bank_meta(
    n_per_label: int,
    seed: int,
    batch_size: int,
    generator: Any,
    transform: Any,
    fingerprint: str | None,
) -> dict:
    """The settings a bank's manifest records (and a resume must match)."""
    return {
        "n_per_label": int(n_per_label),
        "seed": int(seed),
        "batch_size": batch_size,
        "generator": callable_name(generator),
        "transform": callable_name(transform),
        "fingerprint": fingerprint,
    }


def claim_path(
    path: Path,
    labels: list,
    meta: dict,
    counts: list | None,
    make_first: Callable[[], np.ndarray],
) -> np.ndarray | None:
    """Check the bank stored at ``path`` (if any) against this run and write the manifest,
    before any chunk is written there, so that every chunk on disk is attributable.

    ``meta`` holds ``n_per_label``, ``seed``, ``batch_size``, ``generator``, ``transform``
    and ``fingerprint``; with no fingerprint it gains ``first_chunk_sha256``: the digest of
    chunk 0 of label 0, which ``make_first()`` makes (one generator call) to record it or,
    resuming, to compare it.  Returns that chunk when it was made, else None.  Used by the
    serial :meth:`SampleBank.generate` and by the executor path before its workers write.

    Raises:
        ValueError: the stored bank has other labels or settings, another generator,
            transform or fingerprint, a first chunk this generator does not reproduce, or
            bank files that no manifest attributes to a generator (a run killed before
            its manifest was written, by a version that wrote chunks first).
    """
    path.mkdir(parents=True, exist_ok=True)
    man = path / MANIFEST
    stored = sorted(p.name for p in path.glob("label*.npy"))
    first = None
    if man.exists():
        old = json.loads(man.read_text())
        om = old.get("meta", {})
        if old.get("labels") != labels or any(
            om.get(k) != meta[k] for k in ("n_per_label", "seed", "batch_size")
        ):
            raise ValueError(
                f"path {str(path)!r} holds a different bank (labels, n_per_label, "
                "seed or batch_size differ); use another path"
            )
        for key in ("generator", "transform", "fingerprint"):
            if om.get(key) != meta[key]:
                raise ValueError(
                    f"path {str(path)!r} holds a bank made with {key} "
                    f"{om.get(key)!r}, not {meta[key]!r}; resuming would mix the "
                    "two — use another path"
                )
        if meta["fingerprint"] is None and om.get("first_chunk_sha256"):
            first = make_first()
            if array_digest(first) != om["first_chunk_sha256"]:
                raise ValueError(
                    f"path {str(path)!r} holds a bank whose first chunk this "
                    "generator/transform does not reproduce (another model, or a "
                    "non-deterministic one: pass fingerprint=...); use another path"
                )
            meta["first_chunk_sha256"] = om["first_chunk_sha256"]
        elif meta["fingerprint"] is None and stored:
            raise ValueError(
                f"path {str(path)!r} holds bank files ({', '.join(stored[:3])}) but its "
                "manifest records neither a fingerprint nor the first chunk's digest: "
                "nothing tells which generator made them; remove them or use another path"
            )
    elif stored:
        raise ValueError(
            f"path {str(path)!r} holds bank files ({', '.join(stored[:3])}"
            f"{' ...' if len(stored) > 3 else ''}) but no manifest {MANIFEST}: nothing "
            "tells which generator made them, so they cannot be resumed; remove them or "
            "use another path"
        )
    if meta["fingerprint"] is None and "first_chunk_sha256" not in meta:
        first = make_first()
        meta["first_chunk_sha256"] = array_digest(first)
    write_manifest(path, labels, meta, counts, complete=False)
    return first


def counts_from(labels: list, train_labels: Any) -> dict:
    """Training count of each of ``labels`` in ``train_labels`` (integer-valued): ``{label: count}``."""
    y = np.asarray(to_numpy(train_labels, "train_labels")).ravel()
    if y.dtype.kind == "f":
        if not np.all(np.isfinite(y)) or not np.all(y == np.round(y)):
            raise ValueError("train_labels must be integer or string labels")
        y = y.astype(np.int64)
    counts = {}
    for lab in labels:
        counts[lab] = int(np.sum(y == lab))
    return counts


def check_label(label: Any) -> Hashable:
    """A bank label as ``int`` or ``str`` (numpy integers converted); ``TypeError`` otherwise."""
    if isinstance(label, (np.integer,)):
        label = int(label)
    if not isinstance(label, (int, str)) or isinstance(label, bool):
        raise TypeError(f"labels must be int or str, got {type(label).__name__} ({label!r})")
    return label


def make_chunk(
    generator: Callable, transform: Any, labels: list, seed: int, i: int, k: int, size: int
) -> np.ndarray:
    """Chunk ``k`` (``size`` samples) of label ``labels[i]``: ``generator(label, size,
    label_seed(seed, i, k))``, then ``transform``, as an owned array checked for ``size``
    rows.  The serial bank and its sharded stage both call this, so they make the same bank."""
    out = generator(labels[i], size, label_seed(seed, i, k))
    if transform is not None:
        out = transform(out)
    arr = np.array(to_numpy(out, "generator output"), copy=True)
    if arr.ndim < 1 or arr.shape[0] != size:
        raise ValueError(
            f"generator({labels[i]!r}, {size}, seed) returned shape {arr.shape}; "
            f"expected {size} samples along the first axis"
        )
    return arr
