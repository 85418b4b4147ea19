"""Content fingerprints of user data and models, so caches are reused only for the same inputs.

A cache keyed by the number of samples alone silently serves embeddings of other data of the
same length.  These fingerprints hash what determines the cached result: every sample's
bytes (shape and dtype included), and a model's weights and code.  Anything that cannot be
fingerprinted reliably (an object whose ``repr`` is just its address) gets a fingerprint
unique to this process, so the cache is rewritten rather than wrongly reused.
"""

from __future__ import annotations

import hashlib
import sys
import uuid
from typing import Any

import numpy as np

from datacredit.models._data import _is_torch, batches, data_len

_HASH_BATCH = 1024


def _update_array(h: Any, x: Any) -> None:
    if _is_torch(x):
        t = x.detach().cpu().contiguous()
        h.update(str(t.dtype).encode())
        if str(t.dtype) == "torch.bfloat16":
            t = t.float()
        x = t.numpy()
    elif not isinstance(x, np.ndarray):
        try:  # PIL images and other array-likes
            x = np.asarray(x)
        except Exception:  # pragma: no cover - exotic items
            h.update(repr(x).encode())
            return
        if x.dtype == object:
            for item in x.reshape(-1):
                _update_array(h, item)
            return
    a = np.ascontiguousarray(x)
    h.update(f"{a.dtype.str}{a.shape}".encode())
    h.update(a.view(np.uint8).reshape(-1).data if a.size else b"")


def fingerprint_data(data: Any, name: str = "data") -> str:
    """SHA-256 hex digest of every sample of ``data`` (array, tensor, sequence, dataset).

    O(total bytes): one pass over the data (datasets are read item by item, images decoded),
    which is cheap next to running an encoder over it.
    """
    h = hashlib.sha256(f"n={data_len(data, name)}".encode())
    if isinstance(data, np.ndarray) or _is_torch(data):
        _update_array(h, data)
        return h.hexdigest()
    for batch in batches(data, _HASH_BATCH, name):
        if isinstance(batch, list):
            for item in batch:
                _update_array(h, item)
        else:
            _update_array(h, batch)
    return h.hexdigest()


def _update_object(h: Any, obj: Any, depth: int = 0) -> None:
    torch = sys.modules.get("torch")
    if depth > 4:
        h.update(b"<deep>")
        return
    if obj is None or isinstance(obj, (bool, int, float, str, bytes)):
        h.update(repr(obj).encode())
        return
    if isinstance(obj, np.ndarray) or _is_torch(obj):
        _update_array(h, obj)
        return
    if isinstance(obj, (list, tuple)):
        for o in obj:
            _update_object(h, o, depth + 1)
        return
    if torch is not None and isinstance(obj, torch.nn.Module):
        h.update(type(obj).__qualname__.encode())
        for key, t in obj.state_dict().items():
            h.update(key.encode())
            _update_array(h, t)
        return
    func = getattr(obj, "__func__", None)
    if func is not None:  # bound method: its object and its function
        _update_object(h, obj.__self__, depth + 1)
        _update_object(h, func, depth + 1)
        return
    code = getattr(obj, "__code__", None)
    if code is not None:  # a plain function or lambda: its code and captured values
        h.update(f"{getattr(obj, '__module__', '')}.{obj.__qualname__}".encode())
        h.update(code.co_code)
        h.update(repr(code.co_consts).encode())
        h.update(repr(code.co_names).encode())
        glob = getattr(obj, "__globals__", {})
        for gname in code.co_names:  # models and arrays it looks up as globals
            g = glob.get(gname)
            if (
                isinstance(g, np.ndarray)
                or _is_torch(g)
                or (torch is not None and isinstance(g, torch.nn.Module))
            ):
                _update_object(h, g, depth + 1)
        for cell in obj.__closure__ or ():
            try:
                value = cell.cell_contents
            except ValueError:  # an empty cell
                continue
            # Captured models, arrays, functions and settings define the result; captured
            # containers are usually bookkeeping (counters, logs) and are not hashed.
            if isinstance(value, (list, dict, set)):
                h.update(type(value).__name__.encode())
            else:
                _update_object(h, value, depth + 1)
        for default in obj.__defaults__ or ():
            _update_object(h, default, depth + 1)
        return
    fp = getattr(obj, "fingerprint", None)
    if callable(fp):
        h.update(str(fp()).encode())
        return
    cls = type(obj)
    h.update(f"{cls.__module__}.{cls.__qualname__}".encode())
    state = getattr(obj, "__dict__", None)
    if state is not None:
        if not cls.__module__.startswith(("builtins", "datacredit.")):
            for key, attr in sorted(vars(cls).items()):  # a user class: its methods' code
                if getattr(attr, "__code__", None) is not None:
                    h.update(key.encode())
                    _update_object(h, attr, depth + 1)
        for key in sorted(state):
            h.update(key.encode())
            _update_object(h, state[key], depth + 1)
        return
    text = repr(obj)
    # An address-only repr identifies nothing across processes: never match.
    h.update((uuid.uuid4().hex if " at 0x" in text else text).encode())


def fingerprint_model(model: Any) -> str:
    """SHA-256 hex digest of a model or callable: torch weights, function code and the
    values it captures, an object's attributes (``fingerprint()`` when it defines one).

    Global torch modules and arrays a function names are hashed too; state reached in other
    ways (e.g. a model loaded inside a helper it calls) is not: give such an encoder a
    ``fingerprint()`` method, or a new cache path when its weights change.
    """
    h = hashlib.sha256()
    _update_object(h, model)
    return h.hexdigest()
