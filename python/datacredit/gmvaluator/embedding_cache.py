"""GMValuator's embedding cache: one ``.npz`` holding embeddings with the fingerprints of the
data and the model that made them, so a cache of other data or another model is never used."""

from __future__ import annotations

import os
import warnings
from typing import Any

import numpy as np

from datacredit._io import atomic_save_npz

CACHE_FORMAT = "datacredit.GMValuatorEmbeddings/1"


def read_cache(path: Any) -> dict[str, Any]:
    """The entries of a cache written by :func:`write_cache` (``{}`` when there is no
    file); a file that is not a GMValuator cache raises (it is never overwritten)."""
    if not os.path.exists(path):
        return {}
    not_ours = f"cache {path} is not a GMValuator embedding cache: delete it or pass another path"
    try:
        f = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise ValueError(not_ours) from exc
    if not isinstance(f, np.lib.npyio.NpzFile):
        raise ValueError(not_ours)
    with f:
        if "format" not in f.files or str(f["format"]) != CACHE_FORMAT:
            raise ValueError(not_ours)
        entries = {name: f[name] for name in f.files}
    for name, arr in entries.items():
        if name.endswith("embeddings") and (arr.ndim != 2 or arr.dtype != np.float32):
            raise ValueError(f"cache {path}: {name} has shape {arr.shape} and dtype {arr.dtype}")
    return entries


def cached(entries: dict, name: str, data_fp: str, model_fp: str, n: int) -> np.ndarray | None:
    """``entries[name]`` if it was computed from the same data by the same model."""
    if name not in entries:
        return None
    same = (
        str(entries.get(f"{name}_data_fingerprint")) == data_fp
        and str(entries.get(f"{name}_model_fingerprint")) == model_fp
        and entries[name].shape[0] == n
    )
    if not same:
        warnings.warn(
            f"the cached {name.replace('_', ' ')} belong to other data or another model: "
            "recomputing them and overwriting the cache",
            stacklevel=4,
        )
        return None
    return entries[name]


def write_cache(path: Any, arrays: dict[str, tuple[np.ndarray, str, str]]) -> None:
    """Atomically write ``{name: (embeddings, data fingerprint, model fingerprint)}``."""
    out: dict[str, np.ndarray] = {"format": np.array(CACHE_FORMAT)}
    for name, (emb, data_fp, model_fp) in arrays.items():
        out[name] = emb
        out[f"{name}_data_fingerprint"] = np.array(data_fp)
        out[f"{name}_model_fingerprint"] = np.array(model_fp)
    atomic_save_npz(path, out)
