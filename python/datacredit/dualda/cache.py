"""DualDA's cache of a fitted surrogate: what a valid file holds, and its checks.

A cache file (``dualda-<key>.npz``, written by the one atomic writer, no pickles) holds the
support vectors' indices, features and dual variables (``lambda`` in CSR: ``dual_indptr``,
``dual_indices``, ``dual_values``; never a dense ``(n_sv, K)`` array), the training labels, ``coef`` and
``bias``, and JSON metadata with the settings key, the solver statistics and a sha256
digest of the arrays.  A file that fails any check of :func:`check_cache` is never used:
DualDA warns and refits.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

# v2: a digest of the arrays; v3: support = max|lambda| > 1e-9 C; v4: lambda in CSR
CACHE_VERSION = "dualda-cache-v4"
CACHE_ARRAYS = (
    "support",
    "features",
    "dual_indptr",
    "dual_indices",
    "dual_values",
    "train_labels",
    "coef",
    "bias",
)


def check_npz_sizes(fh: Any) -> None:
    """Check, before anything is read into memory, that every member of the uncompressed
    ``.npz`` open in ``fh`` holds the bytes its ``.npy`` header promises: a truncated or
    forged header (``shape=(10**12,)``) must not allocate what its shape claims.

    O(number of members): only the zip directory and the ``.npy`` headers are read.

    Raises:
        ValueError: a compressed member, an object dtype, or a header whose shape and dtype
            need more bytes than the member holds.
    """
    import zipfile

    with zipfile.ZipFile(fh) as zf:
        for info in zf.infolist():
            if info.compress_type != zipfile.ZIP_STORED:
                raise ValueError(f"member {info.filename!r} is compressed (the cache never is)")
            # ZipFile.open reads here (mode 'r'); spelled on the class so that the
            # package's no-direct-writes check (tests/test_atomic_writes.py) can see it
            with zipfile.ZipFile.open(zf, info, "r") as member:
                version = np.lib.format.read_magic(member)
                read = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                shape, _, dtype = read(member)
                if dtype.hasobject:
                    raise ValueError(f"member {info.filename!r} has an object dtype")
                need = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
                if member.tell() + need > info.file_size:
                    raise ValueError(
                        f"member {info.filename!r} claims {dtype} {tuple(shape)} ({need} bytes) "
                        f"but holds {info.file_size - member.tell()} bytes"
                    )
    fh.seek(0)


def arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over name, dtype, shape and bytes of each array (catches any bit flip)."""
    h = hashlib.sha256()
    for name in CACHE_ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.reshape(-1).view(np.uint8))  # the buffer itself: no copy of a memory map
    return h.hexdigest()


def check_cache(arrays: dict[str, np.ndarray], meta: dict[str, Any], dd: Any) -> dict[str, Any]:
    """Validate a loaded cache against itself and the current model; its stats, or raise.

    Checks the digest, every dtype and shape, index and label ranges, the number of
    training samples and classes against ``dd`` (the current data and layer), and that the
    surrogate is the one the dual variables give (``coef = lambda.T @ f``, ``bias =
    lambda.sum(0)``, to 1e-6 of the norms).  ``dd`` is the ``DualDA`` loading the file.
    ``O(nnz(lambda) * d + K * d)``.

    Raises:
        ValueError: saying what is wrong with the file.
    """

    def need(ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(what)

    need(meta.get("version") == CACHE_VERSION, f"cache version {meta.get('version')!r}")
    need(meta.get("layer") == dd.layer and meta.get("C") == dd.C, "layer or C differ")
    need(
        getattr(dd, "_n_rows", None) in (None, meta.get("n_train")),
        f"{meta.get('n_train')!r} training samples, the data has {getattr(dd, '_n_rows', None)}",
    )
    need(meta.get("digest") == arrays_digest(arrays), "the arrays do not match their digest")
    n, k = meta.get("n_train"), meta.get("n_classes")
    need(
        all(isinstance(v, int) and not isinstance(v, bool) for v in (n, k)) and n >= 1 and k >= 2,
        f"n_train = {n!r}, n_classes = {k!r}",
    )
    if dd.n_classes is not None:
        need(k == dd.n_classes, f"{k} classes, the layer has {dd.n_classes}")
    sup, feats = arrays["support"], arrays["features"]
    indptr, indices, values = arrays["dual_indptr"], arrays["dual_indices"], arrays["dual_values"]
    labels, coef, bias = arrays["train_labels"], arrays["coef"], arrays["bias"]
    need(sup.dtype == np.int64 and sup.ndim == 1, f"support: {sup.dtype} {sup.shape}")
    n_sv = sup.shape[0]
    need(
        n_sv == 0 or (sup[0] >= 0 and sup[-1] < n and bool(np.all(np.diff(sup) > 0))),
        "support indices are not ascending in [0, n_train)",
    )
    need(
        feats.dtype == np.float32 and feats.ndim == 2 and feats.shape[0] == n_sv,
        f"features: {feats.dtype} {feats.shape} for {n_sv} support vectors",
    )
    d = feats.shape[1]
    in_features = getattr(getattr(dd.extractor.module, "weight", None), "shape", (None, None))
    if len(in_features) == 2 and isinstance(in_features[1], int):
        need(d == in_features[1], f"{d} features, the layer takes {in_features[1]}")
    need(
        indptr.dtype == np.int64 and indptr.shape == (n_sv + 1,),
        f"dual_indptr: {indptr.dtype} {indptr.shape}, not ({n_sv + 1},)",
    )
    need(
        indices.dtype == np.int32
        and values.dtype == np.float64
        and indices.ndim == 1
        and values.shape == indices.shape,
        f"dual_indices / dual_values: {indices.dtype} {indices.shape} / {values.dtype} "
        f"{values.shape}",
    )
    need(
        indptr[0] == 0 and indptr[-1] == values.size and bool(np.all(np.diff(indptr) >= 0)),
        "dual_indptr does not rise from 0 to nnz",
    )
    need(
        values.size == 0 or (indices.min() >= 0 and indices.max() < k),
        f"dual_indices outside [0, {k})",
    )
    for name, a, shape in (("coef", coef, (k, d)), ("bias", bias, (k,))):
        need(
            a.dtype == np.float64 and a.shape == shape, f"{name}: {a.dtype} {a.shape}, not {shape}"
        )
    need(
        labels.dtype == np.int64 and labels.shape == (n,),
        f"train_labels: {labels.dtype} {labels.shape}, not ({n},)",
    )
    need(bool(np.all((labels >= 0) & (labels < k))), f"train_labels outside [0, {k})")
    for name, a in (("features", feats), ("dual_values", values), ("coef", coef), ("bias", bias)):
        need(bool(np.isfinite(a).all()), f"{name} holds NaN or inf")
    # The surrogate must be the dual variables' (W = lambda.T f, bias = lambda.sum(0)): a
    # file with another W would give attributions that do not add up to its logits.  The
    # solver accumulates W in float64 (relative error ~1e-12); 1e-6 of the norms is loose
    # for that and tight for any real mismatch.  Accumulated class by class from the CSR.
    rows = np.repeat(np.arange(n_sv), np.diff(indptr))
    want, scale = np.zeros((k, d)), np.zeros((k, d))
    for b in range(0, values.size, 65536):  # bounded temporaries
        r, c, v = rows[b : b + 65536], indices[b : b + 65536], values[b : b + 65536]
        f64 = feats[r].astype(np.float64)
        np.add.at(want, c, v[:, None] * f64)
        np.add.at(scale, c, np.abs(v)[:, None] * np.abs(f64))
    for name, got, want_, scale_ in (
        ("coef", coef, want, scale),
        ("bias", bias, np.bincount(indices, values, k), np.bincount(indices, np.abs(values), k)),
    ):
        need(
            np.linalg.norm(got - want_) <= 1e-6 * np.linalg.norm(scale_),
            f"{name} is not the one the dual variables give",
        )
    names = ("n_iter", "converged", "primal_objective", "dual_objective")
    need(all(x in meta for x in names), "metadata lacks the solver statistics")
    return dict(
        n_iter=int(meta["n_iter"]),
        converged=bool(meta["converged"]),
        primal_objective=float(meta["primal_objective"]),
        dual_objective=float(meta["dual_objective"]),
        n_train=n,
        n_classes=k,
        **{
            name: float(meta[name])
            for name in ("duality_gap", "relative_duality_gap")
            if isinstance(meta.get(name), (int, float))
        },
    )
