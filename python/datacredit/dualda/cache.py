"""DualDA's cache of a fitted surrogate: what a valid file holds, and its checks.

A cache file (``dualda-<key>.npz``, written by the one atomic writer, no pickles) holds the
support vectors' indices, features and dual variables, the training labels, ``coef`` and
``bias``, and JSON metadata with the settings key, the solver statistics and a sha256
digest of the arrays.  A file that fails any check of :func:`check_cache` is never used:
DualDA warns and refits.
"""

from __future__ import annotations

import hashlib
from typing import Any

import numpy as np

CACHE_VERSION = "dualda-cache-v3"  # v2: a digest of the arrays; v3: support = max|lambda| > 1e-9 C
CACHE_ARRAYS = ("support", "features", "dual_coef", "train_labels", "coef", "bias")


def arrays_digest(arrays: dict[str, np.ndarray]) -> str:
    """sha256 over name, dtype, shape and bytes of each array (catches any bit flip)."""
    h = hashlib.sha256()
    for name in CACHE_ARRAYS:
        a = np.ascontiguousarray(arrays[name])
        h.update(f"{name}|{a.dtype.str}|{a.shape}|".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def check_cache(arrays: dict[str, np.ndarray], meta: dict[str, Any], dd: Any) -> dict[str, Any]:
    """Validate a loaded cache against itself and the current model; its stats, or raise.

    Checks the digest, every dtype and shape, index and label ranges, the number of
    training samples and classes against ``dd`` (the current data and layer), and that the
    surrogate is the one the dual variables give (``coef = lambda.T @ f``, ``bias =
    lambda.sum(0)``, to 1e-6 of the norms).  ``dd`` is the ``DualDA`` loading the file.
    ``O(n_sv * K * d)``.

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
    sup, feats, lam = arrays["support"], arrays["features"], arrays["dual_coef"]
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
    for name, a, shape in (
        ("dual_coef", lam, (n_sv, k)),
        ("coef", coef, (k, d)),
        ("bias", bias, (k,)),
    ):
        need(
            a.dtype == np.float64 and a.shape == shape, f"{name}: {a.dtype} {a.shape}, not {shape}"
        )
    need(
        labels.dtype == np.int64 and labels.shape == (n,),
        f"train_labels: {labels.dtype} {labels.shape}, not ({n},)",
    )
    need(bool(np.all((labels >= 0) & (labels < k))), f"train_labels outside [0, {k})")
    for name, a in (("features", feats), ("dual_coef", lam), ("coef", coef), ("bias", bias)):
        need(bool(np.isfinite(a).all()), f"{name} holds NaN or inf")
    # The surrogate must be the dual variables' (W = lambda.T f, bias = lambda.sum(0)): a
    # file with another W would give attributions that do not add up to its logits.  The
    # solver accumulates W in float64 (relative error ~1e-12); 1e-6 of the norms is loose
    # for that and tight for any real mismatch.
    f64 = feats.astype(np.float64)
    for name, got, want, scale in (
        ("coef", coef, lam.T @ f64, np.abs(lam).T @ np.abs(f64)),
        ("bias", bias, lam.sum(0), np.abs(lam).sum(0)),
    ):
        need(
            np.linalg.norm(got - want) <= 1e-6 * np.linalg.norm(scale),
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
