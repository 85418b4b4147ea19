"""DualDA: sparse data attribution through a Crammer–Singer SVM surrogate of the final layer.

Paper: "DualXDA: Towards Sparse, Efficient and Explainable Data Attribution in Large AI
Models", §3.1 and Appendix A–C.  The final layer of a classifier is replaced by a
multiclass linear SVM fitted on the penultimate features ``f_i`` of the training data;
its dual variables ``lambda`` (N x K) give

* the surrogate: ``w_c = sum_i lambda_ic f_i``, ``bias_c = sum_i lambda_ic`` (constant-1
  feature), logits ``W f + bias``;
* local attribution: ``tau_c(x, i) = lambda_ic * f_i . f_x``, with the conservation
  ``sum_i tau_c(x, i) + bias_c = w_c . f_x + bias_c`` (the surrogate logit);
* global attribution ``lambda`` and self-influence ``lambda_{i,y_i} * ||f_i||^2``.

Only support vectors (``max_c |lambda_ic| > 1e-9 C``, see
:data:`datacredit.kernels.crammer_singer.SUPPORT_RTOL`) are kept after fitting.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

from datacredit._arrays import as_integer_array, check_float, check_int, positive_float
from datacredit._io import atomic_save_npz
from datacredit.dualda import stages
from datacredit.dualda.cache import (
    CACHE_ARRAYS,
    CACHE_VERSION,
    arrays_digest,
    check_cache,
    check_npz_sizes,
)
from datacredit.dualda.sparse_attribution import column_dense, column_topk
from datacredit.kernels import crammer_singer_fit
from datacredit.kernels.sparse_dual import (
    DENSE_SILENT_BYTES,
    DualColumns,
    SparseDual,
    check_dense_allocation,
)
from datacredit.models.features import (
    FeatureExtractor,
    batch_len,
    batch_to,
    count_batches,
    eval_mode,
    iterate_batches,
    layer_out_features,
    slice_batch,
)

SELF_INFLUENCE_KINDS = ("lambda_norm2", "lambda_norm", "lambda")


def _torch():
    import torch

    return torch


class DualDA:
    """DualDA data attribution for a torch classifier.

    Args:
        model: a ``torch.nn.Module`` classifier (put in eval mode while features are taken;
            its mode is restored afterwards).
        train_data: the training data: a torch ``Dataset``, a ``DataLoader`` (no shuffling),
            a Hugging Face ``datasets.Dataset`` (tensor columns are the model's keyword
            inputs, ``label``/``labels`` the labels) or an ``(X, y)`` pair of tensors/arrays.
            Position ``i`` is training index ``i``.  Batches may be dicts (the model is
            called as ``model(**batch)``) and the model may return a ``ModelOutput``
            (its ``.logits`` are used).
        layer: name (``model.named_modules()``) of the module whose *input* is the
            penultimate feature, usually the final ``Linear``.  ``K`` = its number of outputs.
        C: SVM regularization (> 0).  Larger C: fewer support vectors (sparser attributions).
        device: where the model runs and where inputs must live.
        batch_size: batch size of the feature extraction passes.
        cache_dir: directory for the fitted surrogate (support vectors only, ``.npz`` without
            pickles, written atomically); reused when model weights, layer, C, solver
            settings and the data fingerprint all match.  ``None`` disables caching.
        seed: seeds the solver's permutations (results are deterministic for a seed).
        use_predictions: fit on the model's predictions instead of the training labels.
        tol, max_iter, n_threads: passed to :func:`datacredit.kernels.crammer_singer_fit`.
            ``max_iter`` (solver passes over the samples not shrunk yet) defaults to
            1,000,000: near-hard-margin fits need many passes, but shrinking makes each
            cheap once few samples are free (measured on 4,000 MNIST CNN features, d=64:
            838 passes at C=1e-3, 23k at C=0.1, 86k at
            C=10, 7 s on one core).  The fit summary :attr:`stats` reports ``n_iter``,
            ``converged``, the objectives and the (relative) ``duality_gap``.
        progress: show a progress bar while extracting features.

    Raises:
        ValueError: unknown ``layer``, ``C <= 0``, bad ``batch_size`` or ``device``.
    """

    # self-influence flags suspicious samples: high = suspicious (see self_influence)
    self_influence_higher_is_better = False

    def __init__(
        self,
        model: Any,
        train_data: Any,
        *,
        layer: str,
        C: float = 1e-3,
        device: Any = "cpu",
        batch_size: int = 256,
        cache_dir: str | os.PathLike | None = None,
        seed: int = 0,
        use_predictions: bool = False,
        tol: float = 1e-4,
        max_iter: int = 1_000_000,
        n_threads: int | None = None,
        progress: bool = True,
    ) -> None:
        torch = _torch()
        c_val = positive_float(C, "C")
        batch_size = check_int(batch_size, "batch_size", 1)
        seed = check_int(seed, "seed", 0, 2**63 - 1)
        tol = check_float(tol, "tol", 0.0, lo_open=True)
        max_iter = check_int(max_iter, "max_iter", 1, 2**31 - 1)
        if not isinstance(model, torch.nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        try:
            self.device = torch.device(device)
        except (RuntimeError, TypeError) as exc:
            raise ValueError(f"device {device!r} is not a valid torch device: {exc}") from exc
        self.model = model
        self.train_data = train_data
        self.layer = layer
        self.C = c_val
        self.batch_size = batch_size
        self.cache_dir = None if cache_dir is None else Path(cache_dir)
        self.seed = int(seed)
        self.use_predictions = bool(use_predictions)
        self.tol = float(tol)
        self.max_iter = int(max_iter)
        self.n_threads = n_threads
        self.progress = progress
        self.extractor = FeatureExtractor(model, layer)  # raises on an unknown layer
        self.n_classes: int | None = layer_out_features(self.extractor.module)
        self._fitted = False
        self.loaded_from_cache = False

    # ------------------------------------------------------------------ features
    def _check_device(self, x: Any, name: str) -> Any:
        torch = _torch()
        if isinstance(x, dict):  # Hugging Face style keyword inputs
            return {k: self._check_device(v, f"{name}[{k!r}]") for k, v in x.items()}
        if isinstance(x, torch.Tensor):
            if x.device != self.device:
                raise ValueError(
                    f"{name} is on device '{x.device}' but DualDA runs on '{self.device}'; "
                    f"move it with .to('{self.device}')"
                )
            return x
        return torch.as_tensor(np.asarray(x), device=self.device)

    def _forward(self, inputs: Any, name: str = "inputs") -> tuple[Any, Any]:
        x = self._check_device(inputs, name)
        with eval_mode(self.model):  # the model's lock: threads sharing it take turns
            return self.extractor(x)

    def _features(self, inputs: Any, name: str = "inputs") -> tuple[np.ndarray, np.ndarray]:
        """Features (n, d) float32 and model outputs (n, K) of a batch of inputs."""
        feats, out = self._forward(inputs, name)
        f = feats.cpu().numpy().astype(np.float32, copy=False)
        if not np.isfinite(f).all():
            raise ValueError(f"the features of {name} at layer {self.layer!r} contain NaN or inf")
        return f, out.detach().float().cpu().numpy()

    def extract(self, data: Any, *, desc: str = "features") -> tuple[np.ndarray, ...]:
        """Features ``(N, d)`` float32, labels ``(N,)`` int64 (-1 when absent) and model
        predictions ``(N,)`` of a whole data set, in order.  ``O(N)`` forward passes."""
        feats, labels, preds = [], [], []
        batches = iterate_batches(data, self.batch_size, with_labels=False)
        if self.progress:
            from tqdm.auto import tqdm

            # a total and a line end: "0it" without either ran into the next print
            what = {"train": "the training data", "test": "the test data"}.get(desc, desc)
            batches = tqdm(
                batches,
                total=count_batches(data, self.batch_size),
                desc=f"DualDA: features of {what}",
                unit="batch",
                leave=True,
            )
        for inputs, lab in batches:
            inputs = batch_to(inputs, self.device)
            f, out = self._features(inputs, "the training data" if desc == "train" else desc)
            feats.append(f)
            preds.append(out.argmax(1))
            labels.append(
                np.full(len(f), -1, np.int64) if lab is None else stages.class_labels(lab, len(f))
            )
        if not feats:
            raise ValueError("the data is empty")
        return np.concatenate(feats), np.concatenate(labels), np.concatenate(preds)

    # ------------------------------------------------------------------ cache
    def _cache_key(self) -> str:
        torch = _torch()
        h = hashlib.sha256()
        h.update(CACHE_VERSION.encode())
        for name, tensor in self.model.state_dict().items():
            t = tensor.detach().cpu().contiguous()
            h.update(name.encode())
            h.update(str(t.dtype).encode())
            h.update(str(tuple(t.shape)).encode())
            if t.dtype == torch.bfloat16:
                t = t.float()
            h.update(t.numpy().tobytes())
        settings = dict(
            layer=self.layer,
            C=self.C,
            tol=self.tol,
            max_iter=self.max_iter,
            seed=self.seed,
            use_predictions=self.use_predictions,
        )
        h.update(json.dumps(settings, sort_keys=True).encode())
        self._n_rows = 0  # the data's length, which a cached fit must have
        for inputs, lab in iterate_batches(self.train_data, self.batch_size, with_labels=False):
            for name, x in sorted(inputs.items()) if isinstance(inputs, dict) else [("", inputs)]:
                x = x.detach().cpu().contiguous() if isinstance(x, torch.Tensor) else x
                h.update(name.encode())
                h.update(np.ascontiguousarray(np.asarray(x)).tobytes())
            self._n_rows += batch_len(inputs)
            if lab is not None:
                h.update(np.ascontiguousarray(lab.cpu().numpy()).tobytes())
        return h.hexdigest()

    def _cache_path(self, key: str) -> Path:
        assert self.cache_dir is not None
        return self.cache_dir / f"dualda-{key[:40]}.npz"

    def _save(self, path: Path, key: str) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        arrays = dict(
            support=self.support,
            features=self.support_features,
            dual_indptr=self.support_dual.indptr,
            dual_indices=self.support_dual.indices,
            dual_values=self.support_dual.values,
            train_labels=self.train_labels,
            coef=self.coef,
            bias=self._bias,
        )
        meta = dict(
            key=key,
            version=CACHE_VERSION,
            layer=self.layer,
            C=self.C,
            digest=arrays_digest(arrays),
            **self.stats,
        )
        atomic_save_npz(path, {**arrays, "meta": np.array(json.dumps(meta))})

    def _load(self, path: Path, key: str) -> bool:
        """Load a cached fit; ``False`` (refit) when it is for other settings or unusable.

        A damaged file (truncated, bit-flipped, arrays of the wrong shape or dtype, not the
        surrogate ``coef = lambda.T @ f``) is never used: it warns and returns ``False``.
        """
        try:
            # our own handle: np.load leaks its file when the zip is unreadable
            with open(path, "rb") as fh:
                check_npz_sizes(fh)  # before np.load allocates what a header claims
                with np.load(fh, allow_pickle=False) as z:
                    meta = json.loads(str(z["meta"][()]))
                    if not isinstance(meta, dict) or meta.get("key") != key:
                        # the file name is this fit's key, the contents another's: a copied or
                        # renamed cache of another model, layer, data or settings
                        other = meta.get("key") if isinstance(meta, dict) else None
                        warnings.warn(
                            f"DualDA cache {str(path)!r} holds the fit of another model, layer, "
                            f"data or settings (key {str(other)[:12]}..., this DualDA has "
                            f"{key[:12]}...): it is ignored, refitting (and the file is "
                            "overwritten)",
                            RuntimeWarning,
                            stacklevel=3,
                        )
                        return False
                    if meta.get("version") != CACHE_VERSION:
                        warnings.warn(
                            f"DualDA cache {str(path)!r} has format {meta.get('version')!r}, this "
                            f"version reads {CACHE_VERSION!r} (lambda in CSR): refitting, and the "
                            "file is overwritten with the new format",
                            RuntimeWarning,
                            stacklevel=3,
                        )
                        return False
                    arrays = {name: z[name] for name in CACHE_ARRAYS}
            stats = check_cache(arrays, meta, self)
        except Exception as exc:  # any unreadable cache is recomputed, never trusted
            warnings.warn(
                f"DualDA cache {str(path)!r} is damaged and is ignored (refitting): "
                f"{type(exc).__name__}: {exc}",
                RuntimeWarning,
                stacklevel=3,
            )
            return False
        self.support = arrays["support"]
        self.support_features = arrays["features"]
        self.support_dual = SparseDual(
            arrays["dual_indptr"], arrays["dual_indices"], arrays["dual_values"], stats["n_classes"]
        )
        self.train_labels = arrays["train_labels"]
        self.coef = arrays["coef"]
        self._bias = arrays["bias"]
        self.stats = stats
        self.n_train = stats["n_train"]
        self.n_classes = stats["n_classes"]
        return True

    # ------------------------------------------------------------------ fit
    def fit(self, *, executor: Any = None, store: str | os.PathLike | None = None) -> DualDA:
        """Extract training features, fit the SVM, keep only the support vectors.

        ``executor`` / ``store``: extract the features shard by shard
        (:func:`datacredit.dualda.stages.extract_features`: any
        ``concurrent.futures.Executor`` or ``RayExecutor``; ``store`` a directory for a
        resumable ``ShardStore`` of the features). Identical features either way.

        Time: one forward pass over the training data plus the solver
        (see :func:`~datacredit.kernels.crammer_singer_fit`).  Memory after fitting:
        ``O(n_sv * (d + K) + K * d)``.  Returns ``self``.

        Raises:
            ValueError: NaN/inf features, labels outside ``[0, K)``, missing labels.
        """
        key = path = None
        self._global_attribution = None  # a refit (or a cache load) invalidates it
        if self.cache_dir is not None:
            key = self._cache_key()
            path = self._cache_path(key)
            if path.exists() and self._load(path, key):
                self._fitted = True
                self.loaded_from_cache = True
                return self
        if path is not None and executor is None and store is None:
            # features on disk: streamed into memory-mapped files named by the cache key,
            # resumable; the solver reads them in place
            feats, labels, preds = stages.extract_features_to_disk(
                self,
                self.train_data,
                self.cache_dir / f"features-{key[:40]}",
                desc="train",
                key=key,
            )
        elif executor is not None or store is not None:
            feats, labels, preds = stages.extract_features(
                self, self.train_data, desc="train", store=store, executor=executor
            )
        else:
            feats, labels, preds = self.extract(self.train_data, desc="train")
        if self.n_classes is None:  # layer without out_features: infer from the outputs
            self.n_classes = int(self._forward(self._first_input())[1].shape[1])
        k = self.n_classes
        if self.use_predictions:
            y = preds.astype(np.int64)
        else:
            if np.any(labels < 0) and not np.all(labels < 0):
                raise ValueError("the training labels hold negative values")
            if np.all(labels < 0):
                raise ValueError(
                    "the training data has no labels; pass (inputs, labels) or use_predictions=True"
                )
            y = labels
        if y.max() >= k:
            raise ValueError(
                f"training labels hold {int(y.max())}, outside [0, {k}) (layer {self.layer!r} "
                f"has {k} outputs)"
            )
        res = crammer_singer_fit(
            feats,
            y,
            self.C,
            tol=self.tol,
            max_iter=self.max_iter,
            seed=self.seed,
            fit_bias=True,
            n_threads=self.n_threads,
            n_classes=k,
        )
        if not res.converged:
            warnings.warn(
                f"the SVM solver stopped after max_iter={self.max_iter} passes with max KKT "
                f"violation {res.max_violation:.3g} > tol={self.tol:g} (relative duality gap "
                f"{res.relative_duality_gap:.2g}); attributions are approximate. "
                + res.extras.get(
                    "advice",
                    "Raise max_iter, loosen tol (a margin violation; 1e-3 is often enough), or "
                    "lower C (large C on large-norm features needs the most passes)",
                ),
                RuntimeWarning,
                stacklevel=2,
            )
        self.n_train = feats.shape[0]
        self.train_labels = y
        self.support = res.support
        if isinstance(feats, np.memmap) and res.support.size * feats.shape[1] * 4 > (
            DENSE_SILENT_BYTES
        ):
            self.support_features = stages.gather_rows_to_disk(
                feats, res.support, self.cache_dir / f"support-{key[:40]}.npy"
            )
        else:
            self.support_features = np.ascontiguousarray(feats[res.support])
        self.support_dual = res.dual.take_rows(res.support)
        self.coef = res.coef
        self._bias = res.bias
        self.stats = dict(
            n_iter=res.n_iter,
            converged=res.converged,
            primal_objective=res.primal_objective,
            dual_objective=res.dual_objective,
            duality_gap=res.duality_gap,
            relative_duality_gap=res.relative_duality_gap,
            n_train=int(self.n_train),
            n_classes=int(k),
        )
        self._fitted = True
        self.loaded_from_cache = False
        if path is not None and key is not None:
            self._save(path, key)
        return self

    def _first_input(self) -> Any:
        return batch_to(
            next(iterate_batches(self.train_data, 1, with_labels=False))[0], self.device
        )

    def _require_fit(self) -> None:
        if not self._fitted:
            raise RuntimeError("call .fit() first")

    # ------------------------------------------------------------------ queries
    @property
    def bias(self) -> np.ndarray:
        """Surrogate bias ``(K,)`` float64: ``bias_c = sum_i lambda_ic``."""
        self._require_fit()
        return self._bias

    @property
    def n_support(self) -> int:
        """Number of support vectors (training samples with nonzero attribution)."""
        self._require_fit()
        return int(self.support.shape[0])

    def _targets(self, targets: Any, outputs: np.ndarray) -> np.ndarray:
        n = outputs.shape[0]
        if targets is None:
            return outputs.argmax(1).astype(np.int64)
        torch = _torch()
        t = targets.detach().cpu().numpy() if isinstance(targets, torch.Tensor) else targets
        t = np.asarray(t)
        if t.dtype == bool:
            raise TypeError("targets must be integer class indices, got dtype bool")
        if t.dtype.kind not in "iu":  # 1.7 must not become class 1; 1.0 may
            t = as_integer_array(t, "targets")
        if t.ndim == 0:
            t = np.full(n, int(t))
        if t.shape != (n,):
            raise ValueError(f"targets must be {n} integer class indices, got shape {t.shape}")
        if t.min() < 0 or t.max() >= self.n_classes:
            raise ValueError(f"targets must lie in [0, {self.n_classes}), got {t.min()}..{t.max()}")
        return t.astype(np.int64)

    def attribute(
        self,
        inputs: Any,
        targets: Any = None,
        *,
        top_k: int | None = None,
        opponents: bool = False,
        executor: Any = None,
        shard_rows: int | None = None,
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """Local attributions ``tau_c(x, i) = lambda_ic * f_i . f_x`` of test inputs.

        Args:
            inputs: a batch of model inputs ``(n, ...)`` on ``device`` (or a dict of such
                tensors, passed as ``model(**inputs)``); it is processed in chunks of
                ``batch_size`` (one forward pass and one Gram block each).
            targets: class ``c`` per input (int or ``(n,)``); default: model prediction.
            top_k: ``None`` for the dense matrix, else the ``top_k`` largest per input.
            opponents: with ``top_k``, return the ``top_k`` *most negative* attributions
                (the strongest opponents), most negative first, instead of the largest.
            executor, shard_rows: attribute the inputs in shards of ``shard_rows`` (default
                ``batch_size``) on ``executor`` (``None``: serially)
                (:func:`datacredit.dualda.stages.attribute`); the result does
                not depend on the executor (float32 rounding may differ from one unsharded
                call, whose forward pass sees another batch size).

        Returns:
            Dense float32 ``(n, N)`` (zeros for non-support samples), or ``(values,
            indices)``: float32 / int64 ``(n, top_k)``, largest first (most negative first
            with ``opponents``), indices into the training data (ties to the lower index).

        Complexity: ``ceil(n / batch_size)`` forward passes, then, per target class ``c``,
        ``O(n_c * nnz_c * d)`` through the fused Gram top-k kernel over the samples whose
        sparse ``lambda`` has class ``c`` (:mod:`datacredit.dualda.sparse_attribution`);
        memory ``O(n * N)`` dense or ``O(n * top_k + max_c nnz_c * d)`` with ``top_k``.
        Never forms an ``n x N x K`` tensor nor an ``(n_sv, K)`` weight matrix.

        Thread-safe once fitted: threads may share one ``DualDA`` (and one model); their
        forward passes take turns on the model's lock
        (:func:`datacredit.models.features.model_lock`), the kernels run in parallel.

        Raises:
            TypeError: non-integer ``targets`` (1.7 is not a class) or ``top_k``.
            ValueError: ``targets`` of the wrong length or outside ``[0, K)``.
        """
        if executor is not None or shard_rows is not None:
            return stages.attribute(
                self,
                inputs,
                targets,
                top_k=top_k,
                executor=executor,
                shard_rows=shard_rows,
                opponents=opponents,
            )
        self._require_fit()
        if top_k is not None:
            if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
                raise TypeError(f"top_k must be an integer, got {type(top_k).__name__}")
            if not 1 <= top_k <= self.n_train:
                raise ValueError(f"top_k = {top_k} must be in [1, N = {self.n_train}]")
        elif opponents:
            raise ValueError("opponents=True needs top_k (the dense matrix holds both signs)")
        n = batch_len(inputs)
        t_all = None
        if targets is not None and not (np.ndim(targets) == 0):
            t_all = targets  # validated per chunk against the chunk's outputs
            if len(t_all) != n:
                raise ValueError(f"targets must be {n} integer class indices, got {len(t_all)}")
        parts = []
        for start in range(0, max(n, 1), self.batch_size):
            chunk = slice_batch(inputs, start, start + self.batch_size)
            t_chunk = targets if t_all is None else t_all[start : start + self.batch_size]
            parts.append(self._attribute_chunk(chunk, t_chunk, top_k, bool(opponents)))
        if top_k is None:
            return parts[0] if len(parts) == 1 else np.concatenate(parts)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

    def _attribute_chunk(
        self, inputs: Any, targets: Any, top_k: int | None, opponents: bool
    ) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        f, out = self._features(inputs)
        t = self._targets(targets, out)
        cols = self._dual_columns()
        if top_k is None:
            return column_dense(
                f,
                self.support_features,
                cols,
                t,
                self.support,
                self.n_train,
                n_threads=self.n_threads,
            )
        return column_topk(
            f,
            self.support_features,
            cols,
            t,
            int(top_k),
            self.support,
            self.n_train,
            largest=not opponents,
            n_threads=self.n_threads,
        )

    def _dual_columns(self) -> DualColumns:
        """The support vectors' lambda by class column, built once per fit."""
        cols = getattr(self, "_columns", None)
        if cols is None or cols[0] is not self.support_dual:
            cols = (self.support_dual, self.support_dual.columns())
            self._columns = cols
        return cols[1]

    @property
    def support_dual_coef(self) -> np.ndarray:
        """lambda of the support vectors, dense float64 ``(n_sv, K)`` (built on each access,
        through the dense guard); ``support_dual`` is the sparse form the library uses."""
        self._require_fit()
        return self.support_dual.toarray(what="DualDA.support_dual_coef")

    def save_explainer(self, path: str | os.PathLike) -> None:
        """Write what a server needs to explain predictions, readable without Python.

        A safetensors file (format ``datacredit.dualda_explainer``, version 1; layout in
        :mod:`datacredit.dualda.explainer`): support-vector features (float32), lambda
        (float32, per class), the surrogate's weights and bias, the original training
        indices and labels of the support vectors.  Load it with
        :class:`datacredit.dualda.explainer.DualDAExplainer` or ``dc_dualda_load`` (C API).
        Written atomically; ``O(n_sv * (d + K))`` bytes.
        """
        from datacredit.dualda.explainer import write_explainer

        self._require_fit()
        write_explainer(
            path,
            features=self.support_features,
            dual=self.support_dual,
            coef=self.coef,
            bias=self._bias,
            support=self.support,
            labels=self.train_labels[self.support],
            n_train=int(self.n_train),
            extra_metadata={"layer": self.layer, "C": repr(self.C)},
        )

    def surrogate_logits(self, inputs: Any) -> np.ndarray:
        """Surrogate outputs ``W f(x) + bias``, float64 ``(n, K)``."""
        self._require_fit()
        f, _ = self._features(inputs)
        return f.astype(np.float64) @ self.coef.T + self._bias

    def global_attribution(self) -> np.ndarray:
        """``lambda``, float64 ``(N, K)`` (zeros for non-support samples), read-only.

        Built once per fit and cached (one dense ``N x K`` float64 array); :class:`XDA`
        does not need it (it reads the support vectors' rows directly).

        ``lambda[i, y_i] >= 0`` is how much sample ``i`` pushes its own class, ``lambda[i, c]
        <= 0`` how much it pushes against class ``c``; rows sum to 0.
        """
        self._require_fit()
        cached = getattr(self, "_global_attribution", None)
        if cached is not None and cached.shape == (self.n_train, self.n_classes):
            return cached
        check_dense_allocation(
            self.n_train * self.n_classes * 8, "DualDA.global_attribution (dense N x K)"
        )
        out = np.zeros((self.n_train, self.n_classes), np.float64)
        sd = self.support_dual
        out[self.support[sd.row_ids()], sd.indices] = sd.values
        out.flags.writeable = False
        self._global_attribution = out
        return out

    def dual_coef_rows(self, indices: np.ndarray) -> np.ndarray:
        """``lambda[indices]``, float64 ``(M, K)``, from the support vectors alone (zero rows
        off the support); ``O(M log n_sv)``, no ``N x K`` array."""
        self._require_fit()
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        out = np.zeros((idx.size, self.n_classes), np.float64)
        if self.n_support == 0:
            return out
        pos = np.searchsorted(self.support, idx)
        hit = (pos < self.n_support) & (self.support[np.minimum(pos, self.n_support - 1)] == idx)
        out[hit] = self.support_dual.dense_rows(pos[hit])
        return out

    def self_influence(self, kind: str = "lambda_norm2") -> np.ndarray:
        """Self-influence of every training sample, float64 ``(N,)`` (0 off the support).

        ``"lambda_norm2"``: ``lambda_{i,y_i} * ||f_i||^2`` = ``tau_{y_i}(x_i, i)``, the
        sample's attribution to its own prediction (the paper's E.2 definition);
        ``"lambda_norm"``: ``lambda_{i,y_i} * ||f_i||`` (the variant of one published
        codebase: less weight on feature norms); ``"lambda"``: ``lambda_{i,y_i}`` alone
        (in ``[0, C]``; ties at ``C`` for every margin violator).

        Direction: higher = more suspicious (a likely mislabeled or atypical sample), so
        check samples in decreasing order (``np.argsort(-si)``); as a score of the data's
        quality it is lower-is-better (:attr:`self_influence_higher_is_better` is False).
        """
        self._require_fit()
        if kind not in SELF_INFLUENCE_KINDS:
            raise ValueError(
                f"unknown kind {kind!r}; expected one of {', '.join(map(repr, SELF_INFLUENCE_KINDS))}"
            )
        sd = self.support_dual
        rows = sd.row_ids()
        on_y = sd.indices == self.train_labels[self.support][rows]
        lam_y = np.zeros(self.n_support)
        lam_y[rows[on_y]] = sd.values[on_y]
        sq = (self.support_features.astype(np.float64) ** 2).sum(1)
        vals = {"lambda": lam_y, "lambda_norm": lam_y * np.sqrt(sq), "lambda_norm2": lam_y * sq}
        out = np.zeros(self.n_train, np.float64)
        out[self.support] = vals[kind]
        return out

    def surrogate_fidelity(self, test_data: Any) -> dict[str, float]:
        """How faithful the surrogate is to the model's final layer (paper §4.5).

        Returns ``weight_cosine`` (cosine of the flattened final-layer weight matrices),
        ``logit_cosine`` (mean over ``test_data`` of the cosine between the model's and the
        surrogate's logit vectors) and ``mcc`` (multiclass Matthews correlation of their
        predictions).  All in ``[-1, 1]``; 1 is identical.
        """
        self._require_fit()
        from datacredit.metrics.attribution import matthews_corrcoef

        feats, _, _ = self.extract(test_data, desc="test")
        weight = getattr(self.extractor.module, "weight", None)
        if weight is None:
            raise ValueError(f"layer {self.layer!r} has no weight matrix to compare with")
        w_model = weight.detach().cpu().double().numpy().reshape(self.n_classes, -1)
        b_mod = getattr(self.extractor.module, "bias", None)
        b_model = (
            np.zeros(self.n_classes) if b_mod is None else b_mod.detach().cpu().double().numpy()
        )
        f64 = feats.astype(np.float64)
        logits_model = f64 @ w_model.T + b_model
        logits_sur = f64 @ self.coef.T + self._bias

        def cos(a, b, axis=None):
            num = (a * b).sum(axis)
            den = np.sqrt((a * a).sum(axis) * (b * b).sum(axis))
            return np.where(den > 0, num / np.where(den > 0, den, 1.0), 0.0)

        return dict(
            weight_cosine=float(cos(w_model.ravel(), self.coef.ravel())),
            logit_cosine=float(np.mean(cos(logits_model, logits_sur, axis=1))),
            mcc=float(matthews_corrcoef(logits_model.argmax(1), logits_sur.argmax(1))),
        )
