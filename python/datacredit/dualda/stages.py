"""DualDA's heavy stages shard by shard: feature extraction (training and test data) and
attribution over test shards.

The Crammer–Singer fit itself stays on one node (it needs all N training features and
keeps α, N × K); see ``docs/distributed.md`` for the sizes that covers. Shards are whole
multiples of ``DualDA.batch_size`` rows, so every forward pass sees the same batches as the
serial extraction and the features are identical to it.
"""

from __future__ import annotations

import hashlib
import os
import threading
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from datacredit.distributed.executor import ShardRows, map_shards, run_stage
from datacredit.models._data import is_hf_dataset
from datacredit.store import MANIFEST, ShardStore

DEFAULT_SHARD_BATCHES = 64  # forward batches per shard
# The feature hook of a DualDA lives on its model, so two threads must not run forward
# passes of it at once: threads take turns (processes and Ray workers hold their own copy).
_FORWARD = threading.Lock()


def _torch():
    import torch

    return torch


def class_labels(lab: Any, n: int) -> np.ndarray:
    """A batch's labels as int64 class indices (0.5 raises: it must not become class 0)."""
    from datacredit._arrays import as_integer_array

    a = as_integer_array(lab.detach().cpu() if hasattr(lab, "detach") else lab, "training labels")
    if a.shape != (n,):
        raise ValueError(f"the training labels of a batch have shape {a.shape}, expected ({n},)")
    return a


def _length(data: Any) -> int:
    torch = _torch()
    from torch.utils.data import DataLoader, Dataset

    if isinstance(data, DataLoader):
        return len(data.dataset)
    if isinstance(data, Dataset) or is_hf_dataset(data):
        return len(data)
    if isinstance(data, (tuple, list)) and len(data) in (1, 2):
        return int(data[0].shape[0])
    if isinstance(data, (np.ndarray, torch.Tensor)):
        return int(data.shape[0])
    raise TypeError(
        "data must be a torch Dataset, a DataLoader, an (X, y) pair or a tensor, "
        f"got {type(data).__name__}"
    )


def subset(data: Any, begin: int, end: int) -> Any:
    """Rows ``[begin, end)`` of DualDA input data, in the same form (no copy of arrays)."""
    from torch.utils.data import DataLoader, Dataset, RandomSampler, Subset

    if isinstance(data, DataLoader):
        if isinstance(data.sampler, RandomSampler):
            raise ValueError("the DataLoader shuffles (RandomSampler); pass one with shuffle=False")
        return Subset(data.dataset, range(begin, end))
    if isinstance(data, Dataset):
        return Subset(data, range(begin, end))
    if is_hf_dataset(data):
        return data.select(range(begin, end))  # keeps the user's format / transform
    if isinstance(data, (tuple, list)):
        return type(data)(part[begin:end] for part in data)
    return data[begin:end]


def extract_shard(dualda: Any, data: Any, desc: str, shard: int, rows: tuple[int, int]) -> dict:
    """Stage ``features``: features ``(rows, d)`` float32, labels and predictions ``(rows,)``
    int64 of rows ``[begin, end)`` of ``data`` (one forward pass over them)."""
    with _FORWARD:
        feats, labels, preds = dualda.extract(subset(data, *rows), desc=f"{desc} shard {shard}")
    return {
        "features": feats,
        "labels": labels,
        "predictions": np.asarray(preds, dtype=np.int64),
    }


def _fingerprint(dualda: Any, data: Any) -> str:
    """SHA-256 of the model weights, the layer, the batch size and the data."""
    from datacredit.models.features import iterate_batches

    torch = _torch()
    h = hashlib.sha256()
    for name, tensor in dualda.model.state_dict().items():
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.float().numpy().tobytes() if t.dtype == torch.bfloat16 else t.numpy().tobytes())
    h.update(f"{dualda.layer}|{dualda.batch_size}".encode())
    for inputs, lab in iterate_batches(data, dualda.batch_size, with_labels=False):
        x = inputs.detach().cpu().contiguous() if isinstance(inputs, torch.Tensor) else inputs
        h.update(np.ascontiguousarray(np.asarray(x)).tobytes())
        if lab is not None:
            h.update(np.ascontiguousarray(lab.cpu().numpy()).tobytes())
    return h.hexdigest()


def _shard_rows(batch_size: int, shard_rows: int | None) -> int:
    rows = batch_size * DEFAULT_SHARD_BATCHES if shard_rows is None else int(shard_rows)
    if rows < 1 or rows % batch_size:
        raise ValueError(
            f"shard_rows = {rows} must be a positive multiple of batch_size = {batch_size} "
            "(so each shard's forward batches are the serial ones)"
        )
    return rows


def extract_features(
    dualda: Any,
    data: Any,
    *,
    desc: str = "train",
    store: str | os.PathLike | None = None,
    executor: Any = None,
    shard_rows: int | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``DualDA.extract(data)`` shard by shard: features ``(N, d)`` float32, labels ``(N,)``
    int64 (-1 when absent), predictions ``(N,)`` int64 — identical to the serial extraction.

    With ``store`` the shards are written to a :class:`ShardStore` there (resumable; a
    complete store of the same model, layer and data is read back, nothing recomputed;
    shards computed by ``datacredit shard run`` on a store of
    :func:`datacredit.dualda.feature_store.create_feature_store` count as done) and the
    features come back memory-mapped from one file next to them (:func:`assemble_features`),
    so the memory is one shard, not ``N x d``.  ``shard_rows`` must be a multiple of
    ``dualda.batch_size`` (default: an existing store's, else 64 batches).
    """
    n = _length(data)
    if n == 0:
        raise ValueError("the data is empty")
    requested_rows = shard_rows
    shard_rows = _shard_rows(dualda.batch_size, shard_rows)
    fn = partial(extract_shard, dualda, data, desc)
    if store is None:
        stage = ShardRows(fn, n, shard_rows)
        parts = map_shards(
            stage,
            stage.n_shards,
            executor=executor,
            progress=dualda.progress,
            desc=f"DualDA {desc} (shards)",
        )
        return tuple(np.concatenate([p[name] for p in parts]) for name in _NAMES)  # type: ignore[return-value]
    factories = worker = None
    if (Path(store) / MANIFEST).is_file():
        # A store made by feature_store.create_feature_store (shards from the command line):
        # the same configuration plus the factories its workers import, and its shard size
        # unless the caller names one.
        old = ShardStore(store)
        if "factories" in old.config:
            factories, worker = old.config["factories"], old.manifest.get("worker")
        if requested_rows is None:
            shard_rows = int(old.manifest["shard_rows"])
    st = create_features_store(
        dualda, data, store, desc=desc, shard_rows=shard_rows, factories=factories, worker=worker
    )
    run_stage(st, fn, executor=executor, progress=dualda.progress, desc=f"DualDA {desc}")
    return assemble_features(st)


_NAMES = ("features", "labels", "predictions")


def create_features_store(
    dualda: Any,
    data: Any,
    path: str | os.PathLike,
    *,
    desc: str = "train",
    shard_rows: int | None = None,
    factories: dict[str, Any] | None = None,
    worker: str | None = None,
) -> ShardStore:
    """The :class:`ShardStore` of ``dualda``'s features of ``data`` at ``path`` (stage
    ``features-<desc>``; created, or reopened when it holds the same configuration).

    Its configuration is the row count and the fingerprint of the model weights, layer,
    batch size and data, plus ``factories`` when a command-line ``worker`` must rebuild them
    (see :mod:`datacredit.dualda.feature_store`).  O(data) once, for the fingerprint.

    Raises:
        ValueError: empty data, ``shard_rows`` not a positive multiple of the batch size, or
            a store of another configuration at ``path``.
    """
    n = _length(data)
    if n == 0:
        raise ValueError("the data is empty")
    shard_rows = _shard_rows(dualda.batch_size, shard_rows)
    config: dict[str, Any] = {"n": n, "fingerprint": _fingerprint(dualda, data)}
    if factories is not None:
        config["factories"] = factories
    return ShardStore.create(
        path,
        method="dualda",
        stage=f"features-{desc}",
        config=config,
        n_rows=n,
        shard_rows=shard_rows,
        worker=worker,
    )


ASSEMBLED_FEATURES = "features.npy"  # the shards' features in one file, next to the shards
_ASSEMBLED_META = "features.json"


def assemble_features(st: ShardStore) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A complete features store as the solver reads it: ``features`` ``(N, d)`` float32 in
    one memory-mapped ``.npy`` file next to the shards (copied shard by shard, written to a
    temporary file and renamed into place, reused while the store's configuration hash is
    the same), ``labels`` and ``predictions`` ``(N,)`` int64 in memory.

    Memory: one shard (the copy reads the shards' memory maps); disk: ``4 N d`` bytes.
    """
    import json
    import warnings

    from datacredit._io import atomic_write_text

    final = st.path / ASSEMBLED_FEATURES
    meta_file = st.path / _ASSEMBLED_META
    chash = st.manifest["config_hash"]
    labels = np.concatenate([np.asarray(st.shard(i)["labels"]) for i in range(st.n_shards)])
    preds = np.concatenate([np.asarray(st.shard(i)["predictions"]) for i in range(st.n_shards)])
    n = int(labels.shape[0])
    first = st.shard(0)["features"]
    shape = (n, int(first.shape[1]))
    if final.is_file() and meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_text())
            f = np.load(final, mmap_mode="r")
            if meta.get("config_hash") == chash and f.dtype == np.float32 and f.shape == shape:
                return f, labels, preds
        except (OSError, ValueError) as exc:
            warnings.warn(
                f"{final} is unusable and is written again: {type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=2,
            )
    meta_file.unlink(missing_ok=True)  # the file is being replaced: never trust it half done
    tmp = final.with_name(final.name + ".partial")
    out = _open_npy(tmp, "w+", np.float32, shape)
    row = 0
    for i in range(st.n_shards):
        block = st.shard(i)["features"]
        out[row : row + block.shape[0]] = block
        row += block.shape[0]
    out.flush()
    del out
    os.replace(tmp, final)
    atomic_write_text(meta_file, json.dumps({"config_hash": chash, "n": n, "dim": shape[1]}))
    return np.load(final, mmap_mode="r"), labels, preds


def _attribute_shard(
    dualda: Any, inputs: Any, targets: Any, top_k: Any, n: int, rows, opponents: bool, shard
):
    b, e = shard * rows, min(n, (shard + 1) * rows)
    t = targets if targets is None or np.ndim(targets) == 0 else targets[b:e]
    with _FORWARD:
        return dualda.attribute(subset(inputs, b, e), t, top_k=top_k, opponents=opponents)


def attribute(
    dualda: Any,
    inputs: Any,
    targets: Any = None,
    *,
    top_k: int | None = None,
    executor: Any = None,
    shard_rows: int | None = None,
    opponents: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """``DualDA.attribute`` over test shards of ``shard_rows`` inputs, concatenated in order.

    The fitted surrogate (support vectors, λ) travels once per worker (Ray puts it in the
    object store once). Each shard's result is the serial one for those rows (the kernels
    compute every test row independently), so the output does not depend on the executor.
    """
    dualda._require_fit()
    n = _length(inputs)
    if n == 0:
        raise ValueError("inputs is empty")
    rows = dualda.batch_size if shard_rows is None else int(shard_rows)
    if rows < 1:
        raise ValueError(f"shard_rows must be a positive integer, got {shard_rows!r}")
    if targets is not None and np.ndim(targets) > 0:
        targets = np.asarray(targets.cpu() if hasattr(targets, "cpu") else targets)
        if targets.shape != (n,):
            raise ValueError(f"targets must be {n} integer class indices, got {targets.shape}")
    parts = map_shards(
        partial(_attribute_shard, dualda, inputs, targets, top_k, n, rows, opponents),
        -(-n // rows),
        executor=executor,
        progress=dualda.progress,
        desc="DualDA attribution (shards)",
    )
    if top_k is None:
        return np.concatenate(parts)
    return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


# ---------------------------------------------------------------------- features on disk
FEATURES_ON_DISK_VERSION = 1
_SHARD_ROWS_ON_DISK = 64  # forward batches between two progress records


def _open_npy(path: Any, mode: str, dtype: Any, shape: tuple[int, ...]) -> np.ndarray:
    return np.lib.format.open_memmap(path, mode=mode, dtype=dtype, shape=shape)


def _finished_features(directory: Any, n: int, key: str | None) -> tuple[np.ndarray, ...] | None:
    """The features of a completed extraction in ``directory``, memory-mapped read-only, or
    None (with a warning) when the files are missing, of the wrong dtype or shape, or were
    extracted for another ``key`` (another model, layer or data: copied or renamed files)."""
    import json
    import warnings
    from pathlib import Path

    d = Path(directory)
    try:
        meta = json.loads((d / "meta.json").read_text())
        if key is not None and meta.get("key") != key:
            raise ValueError(
                f"they were extracted for another model, layer or data (key "
                f"{str(meta.get('key'))[:12]}..., this DualDA has {key[:12]}...)"
            )
        f = np.load(d / "features.npy", mmap_mode="r")
        lab = np.load(d / "labels.npy", mmap_mode="r")
        pred = np.load(d / "predictions.npy", mmap_mode="r")
        ok = (
            meta.get("version") == FEATURES_ON_DISK_VERSION
            and f.dtype == np.float32
            and f.ndim == 2
            and f.shape[0] == n
            and f.flags.c_contiguous
            and lab.dtype == np.int64
            and lab.shape == (n,)
            and pred.dtype == np.int64
            and pred.shape == (n,)
        )
        if not ok:
            raise ValueError(
                f"features {f.dtype} {f.shape}, labels {lab.dtype} {lab.shape}, predictions "
                f"{pred.dtype} {pred.shape}; expected float32 ({n}, d) and int64 ({n},)"
            )
    except Exception as exc:  # an unusable file is re-extracted, never trusted
        warnings.warn(
            f"DualDA features in {str(d)!r} are unusable and are extracted again: "
            f"{type(exc).__name__}: {exc}",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    return f, np.asarray(lab), np.asarray(pred)


def extract_features_to_disk(
    dualda: Any,
    data: Any,
    directory: str | os.PathLike,
    *,
    desc: str = "train",
    key: str | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``DualDA.extract(data)`` streamed batch by batch into memory-mapped ``.npy`` files.

    ``directory`` (named by the caller after the model, layer, settings and data, e.g. the
    DualDA cache key) ends up holding ``features.npy`` float32 ``(N, d)``, ``labels.npy``
    and ``predictions.npy`` int64 ``(N,)`` and ``meta.json``.  They are written in
    ``directory.partial`` first, with a progress record (written atomically) every 64
    batches: an interrupted extraction resumes from its last record; the directory is
    renamed into place only when complete, so a complete ``directory`` is never half
    written.  A complete one is reused (files of the wrong dtype or shape: warning,
    re-extraction).  ``key`` (the DualDA cache key: model weights, layer, settings, data) is
    recorded with the files and checked on reuse and on resume, so features of another model
    are never read back, even from a copied or renamed directory.

    Returns the features memory-mapped read-only (page cache, not anonymous memory) and the
    labels and predictions.  Memory: one batch plus ``O(N)`` for labels; the data is only
    iterated (a torch ``Dataset`` of millions of items streams through its DataLoader).
    """
    import json
    import shutil
    from pathlib import Path

    from datacredit._io import atomic_write_text
    from datacredit.models.features import batch_to, iterate_batches

    n = _length(data)
    if n == 0:
        raise ValueError("the data is empty")
    final = Path(directory)
    if final.exists():
        got = _finished_features(final, n, key)
        if got is not None:
            return got
        shutil.rmtree(final)
    part = final.with_name(final.name + ".partial")
    part.mkdir(parents=True, exist_ok=True)
    progress_file = part / "progress.json"
    done = 0
    if progress_file.exists() and (part / "features.npy").exists():
        record = json.loads(progress_file.read_text())
        if record.get("key") == key:  # a partial extraction of another model starts over
            done = int(record.get("rows", 0))
    bs = dualda.batch_size
    feats = labels = preds = None
    if done:
        feats = np.load(part / "features.npy", mmap_mode="r+")
        labels = np.load(part / "labels.npy", mmap_mode="r+")
        preds = np.load(part / "predictions.npy", mmap_mode="r+")
        if feats.shape[0] != n or labels.shape != (n,):
            feats = labels = preds = None
            done = 0
    rest = subset(data, done, n) if done else data
    batches = iterate_batches(rest, bs, with_labels=False)
    if dualda.progress:
        from tqdm.auto import tqdm

        batches = tqdm(
            batches, desc=f"DualDA {desc} (to disk)", total=-(-(n - done) // bs), leave=False
        )
    row = done
    for b, (inputs, lab) in enumerate(batches):
        with _FORWARD:
            f, out = dualda._features(batch_to(inputs, dualda.device), f"the {desc} data")
        m = f.shape[0]
        if feats is None:  # the feature width is known after the first batch
            feats = _open_npy(part / "features.npy", "w+", np.float32, (n, f.shape[1]))
            labels = _open_npy(part / "labels.npy", "w+", np.int64, (n,))
            preds = _open_npy(part / "predictions.npy", "w+", np.int64, (n,))
        if f.shape[1] != feats.shape[1] or row + m > n:
            raise ValueError(f"the {desc} data changed during extraction (batch at row {row})")
        feats[row : row + m] = f
        preds[row : row + m] = out.argmax(1)
        labels[row : row + m] = -1 if lab is None else class_labels(lab, m)
        row += m
        if (b + 1) % _SHARD_ROWS_ON_DISK == 0 or row == n:
            for a in (feats, labels, preds):
                a.flush()
            atomic_write_text(progress_file, json.dumps({"rows": row, "key": key}))
    if row != n:
        raise ValueError(f"the {desc} data yielded {row} rows, expected {n}")
    atomic_write_text(
        part / "meta.json",
        json.dumps(
            {"version": FEATURES_ON_DISK_VERSION, "n": n, "dim": int(feats.shape[1]), "key": key}
        ),
    )
    del feats, labels, preds
    progress_file.unlink()
    os.replace(part, final)
    got = _finished_features(final, n, key)
    assert got is not None
    return got


def gather_rows_to_disk(src: np.ndarray, rows: np.ndarray, path: str | os.PathLike) -> np.ndarray:
    """``src[rows]`` written chunk by chunk to the ``.npy`` file ``path`` (atomically: a
    temporary file renamed into place) and returned memory-mapped read-only.  Memory: one
    chunk of 65,536 rows."""
    from pathlib import Path

    final = Path(path)
    tmp = final.with_name(final.name + ".partial")
    out = _open_npy(tmp, "w+", src.dtype, (int(rows.size), int(src.shape[1])))
    for b in range(0, rows.size, 65536):
        out[b : b + 65536] = src[rows[b : b + 65536]]
    out.flush()
    del out
    os.replace(tmp, final)
    return np.load(final, mmap_mode="r")
