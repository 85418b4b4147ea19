"""Interventional TreeSHAP for tree ensembles (XGBoost models are parsed here).

The compiled kernel sees only flat node arrays (:class:`TreeEnsemble`), so it does not
depend on any tree file format; this module turns an XGBoost model's JSON dump into them.
"""

from __future__ import annotations

import json
import math
import numbers
from dataclasses import dataclass
from typing import Any

import numpy as np

from datacredit._arrays import as_float_matrix, resolve_threads


@dataclass(frozen=True)
class TreeEnsemble:
    """A tree ensemble as flat arrays (all trees concatenated), the kernel's input format.

    Node k is a leaf when ``left[k] < 0``; otherwise a value v of ``feature[k]`` goes to
    ``left[k]`` when ``v < threshold[k]`` (float32 compare) and to ``right[k]`` otherwise,
    and a missing value (NaN) goes left iff ``default_left[k]``.  Children come after
    their parent.  ``value[k]`` is a leaf's output; the model output (margin) is
    ``base_score + Σ_trees value[leaf reached]``.

    Attributes: left, right, feature (int32, n_nodes); threshold, value (float32, n_nodes);
    default_left (uint8, n_nodes); roots (int64, n_trees); base_score (float, margin space;
    a ``(n_outputs,)`` array for a multi-output model); n_features (int); missing (float:
    the input value routed as missing, like NaN; XGBoost's ``missing=``); tree_output
    (``None`` for one output, else int64 ``(n_trees,)``: the output each tree adds to).

    Arrays of other integer/float dtypes are converted (copies; the caller's arrays are
    never modified); shapes and index ranges are checked here, the tree structure (each
    node one parent, children after their parent) by the compiled core.
    """

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    base_score: float | np.ndarray
    n_features: int
    missing: float = float("nan")
    tree_output: np.ndarray | None = None

    def __post_init__(self) -> None:
        conv = {
            "left": np.int32,
            "right": np.int32,
            "feature": np.int32,
            "threshold": np.float32,
            "default_left": np.uint8,
            "value": np.float32,
            "roots": np.int64,
        }
        for name, dtype in conv.items():
            object.__setattr__(self, name, _node_array(getattr(self, name), name, dtype))
        n_nodes = self.left.shape[0]
        for name in ("right", "feature", "threshold", "default_left", "value"):
            if getattr(self, name).shape[0] != n_nodes:
                raise ValueError(
                    f"TreeEnsemble: {name} has {getattr(self, name).shape[0]} entries, "
                    f"left has {n_nodes}: all node arrays need one entry per node"
                )
        if n_nodes == 0 or self.roots.shape[0] == 0:
            raise ValueError("TreeEnsemble: needs at least one node and one tree (roots)")
        if isinstance(self.n_features, bool) or not isinstance(self.n_features, (int, np.integer)):
            raise TypeError(f"TreeEnsemble: n_features must be an integer, got {self.n_features!r}")
        if not 1 <= self.n_features <= 2**31 - 1:
            raise ValueError(f"TreeEnsemble: n_features = {self.n_features} is outside [1, 2**31)")
        object.__setattr__(self, "n_features", int(self.n_features))
        if isinstance(self.missing, (bool, np.bool_)) or not isinstance(self.missing, numbers.Real):
            raise TypeError(f"TreeEnsemble: missing must be a number, got {self.missing!r}")
        object.__setattr__(self, "missing", float(self.missing))
        # numpy would parse a string ("0") or take a bool as a number: refuse both.
        if np.asarray(self.base_score).dtype.kind not in "fiu":
            raise TypeError(
                f"TreeEnsemble: base_score must be a real number (or a vector of them), "
                f"got {self.base_score!r}"
            )
        if self.tree_output is None:
            base = np.asarray(self.base_score, dtype=np.float64)
            if base.ndim != 0 or not np.isfinite(base):
                raise ValueError(
                    "TreeEnsemble: base_score must be one finite number for a one-output "
                    f"model (give tree_output for several outputs), got {self.base_score!r}"
                )
            object.__setattr__(self, "base_score", float(base))
        else:
            to = _node_array(self.tree_output, "tree_output", np.int64)
            base = np.asarray(self.base_score, dtype=np.float64)
            if base.ndim != 1 or base.shape[0] < 1 or not np.isfinite(base).all():
                raise ValueError(
                    "TreeEnsemble: with tree_output, base_score must be a finite "
                    f"(n_outputs,) vector, got {self.base_score!r}"
                )
            if to.shape[0] != self.roots.shape[0] or to.min() < 0 or to.max() >= base.shape[0]:
                raise ValueError(
                    f"TreeEnsemble: tree_output must have one entry per tree ({self.roots.shape[0]}) "
                    f"in [0, n_outputs = {base.shape[0]})"
                )
            object.__setattr__(self, "tree_output", to)
            object.__setattr__(self, "base_score", base)

    @property
    def n_trees(self) -> int:
        return int(self.roots.shape[0])

    @property
    def n_outputs(self) -> int:
        """1, or the number of outputs of a multi-output model (classes or targets)."""
        return 1 if self.tree_output is None else int(self.base_score.shape[0])

    def _output_arrays(self):
        """Per output: the node arrays with the roots of that output's trees."""
        if self.tree_output is None:
            return [self._arrays()]
        out = []
        for o in range(self.n_outputs):
            roots = np.ascontiguousarray(self.roots[self.tree_output == o])
            if roots.size == 0:
                raise ValueError(f"TreeEnsemble: output {o} has no trees")
            out.append(self._arrays()[:-1] + (roots,))
        return out

    def _arrays(self):
        return (
            self.left,
            self.right,
            self.feature,
            self.threshold,
            self.default_left,
            self.value,
            self.roots,
        )

    def predict(self, X: Any, *, n_threads: int | None = None) -> np.ndarray:
        """Margin output for the rows of X (n × n_features): float64 (n,), or
        (n, n_outputs) for a multi-output model.  O(n · T · depth)."""
        from datacredit import _core

        x = _points(X, "X", self.n_features, self.missing)
        threads = resolve_threads(n_threads)
        outs = [_core.tree_ensemble_predict(*a, x, threads) for a in self._output_arrays()]
        if self.tree_output is None:
            return outs[0] + self.base_score
        return np.stack(outs, axis=1) + self.base_score


def _node_array(a: Any, name: str, dtype: Any) -> np.ndarray:
    arr = np.asarray(a)
    if arr.ndim != 1:
        raise ValueError(f"TreeEnsemble: {name} must be a vector (1-D), got shape {arr.shape}")
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"TreeEnsemble: {name} must be numeric, got dtype {arr.dtype}")
    if np.dtype(dtype).kind in "iu" and arr.dtype != dtype:
        if arr.dtype.kind == "f" and not np.all(np.mod(arr, 1) == 0):
            raise TypeError(f"TreeEnsemble: {name} must hold integers, got dtype {arr.dtype}")
        info = np.iinfo(dtype)
        if arr.size and (arr.min() < info.min or arr.max() > info.max):
            raise ValueError(
                f"TreeEnsemble: {name} holds values outside [{info.min}, {info.max}] ({np.dtype(dtype)})"
            )
    return np.ascontiguousarray(arr, dtype=dtype)


def _points(X: Any, name: str, n_features: int, missing: float = float("nan")) -> np.ndarray:
    x = as_float_matrix(X, name, check_finite=False)
    if x.shape[1] != n_features:
        raise ValueError(f"{name} must have {n_features} columns (the model's), got {x.shape[1]}")
    if not math.isnan(missing):
        # XGBoost treats this value as missing (like NaN): route it by default_left.
        hit = x == np.float32(missing)
        if hit.any():
            x = np.where(hit, np.float32(np.nan), x)  # a copy: the input is never modified
    return x


_LOG_LINK = {"count:poisson", "reg:gamma", "reg:tweedie", "survival:cox", "survival:aft"}
_LOGIT_LINK = {"reg:logistic", "binary:logistic", "binary:logitraw"}


def _parse_base_scores(s: Any) -> list[float]:
    if isinstance(s, (int, float)):
        return [float(s)]
    s = str(s).strip().strip("[]")
    return [float(t) for t in s.split(",") if t.strip()]


def _margin_base_score(base: float, objective: str) -> float:
    if objective in _LOGIT_LINK and objective != "binary:logitraw":
        base = min(max(base, 1e-16), 1 - 1e-16)
        return math.log(base / (1 - base))
    if objective in _LOG_LINK:
        return math.log(max(base, 1e-300))
    return base


def _default_iteration_range(model: Any) -> tuple[int, int]:
    """The trees ``model.predict`` uses: an early-stopped scikit-learn model predicts with
    the iterations up to ``best_iteration`` only; a Booster (and anything else) with all."""
    if hasattr(model, "get_booster"):
        try:
            best = model.best_iteration
        except AttributeError:
            best = None
        if best is not None:
            return (0, int(best) + 1)
    return (0, 0)


def from_xgboost(model: Any, *, iteration_range: tuple[int, int] | None = None) -> TreeEnsemble:
    """Flatten an XGBoost ``Booster`` / ``XGBModel`` (sklearn API) into a :class:`TreeEnsemble`.

    base_score is mapped to margin space (logit for logistic objectives, log for
    Poisson/Gamma/Tweedie); DART tree weights are folded into the leaf values.  The trees
    are those the model's own ``predict`` uses: ``iteration_range`` (XGBoost's meaning:
    boosting rounds ``[begin, end)``, ``(0, 0)`` all) or, by default, ``(0,
    best_iteration + 1)`` for an early-stopped scikit-learn model and all rounds
    otherwise.  The scikit-learn model's ``missing`` value is recorded so that it is
    routed as missing.  Multi-class (``multi:softprob`` / ``softmax``) and multi-target
    models (one tree per output) give a multi-output ensemble.  Raises ValueError for
    categorical splits and vector-leaf trees (``multi_strategy="multi_output_tree"``).
    """
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    if not hasattr(booster, "save_raw"):
        raise TypeError(f"model must be an xgboost Booster or XGBModel, got {type(model).__name__}")
    if iteration_range is None:
        iteration_range = _default_iteration_range(model)
    try:
        begin, end = (int(v) for v in iteration_range)
    except (TypeError, ValueError) as exc:
        raise TypeError(
            f"iteration_range must be a pair of integers, got {iteration_range!r}"
        ) from exc
    missing = float("nan")
    if hasattr(model, "get_booster") and getattr(model, "missing", None) is not None:
        missing = float(model.missing)
    doc = json.loads(bytes(booster.save_raw(raw_format="json")))
    learner = doc["learner"]
    mparam = learner["learner_model_param"]
    n_out = max(int(mparam.get("num_class", "0")), int(mparam.get("num_target", "1")), 1)
    objective = learner["objective"]["name"]
    bases = _parse_base_scores(mparam["base_score"])
    if len(bases) == 1 and n_out > 1:
        bases = bases * n_out
    if len(bases) != n_out:
        raise ValueError(f"base_score has {len(bases)} values for a model with {n_out} outputs")
    bases = [_margin_base_score(b, objective) for b in bases]
    gb = learner["gradient_booster"]
    name = gb["name"]
    weights = None
    if name == "dart":
        weights = [float(w) for w in gb.get("weight_drop", [])]
        gb = gb["gbtree"]
    elif name != "gbtree":
        raise ValueError(f"booster {name!r} is not a tree model (gbtree or dart expected)")
    trees = gb["model"]["trees"]
    if not trees:
        raise ValueError("the model has no trees")
    tree_info = [int(t) for t in gb["model"].get("tree_info", [0] * len(trees))]
    indptr = gb["model"].get("iteration_indptr")
    if indptr is None:  # older models: a fixed number of trees per round
        per_round = max(1, len(trees) // max(1, booster.num_boosted_rounds()))
        indptr = list(range(0, len(trees) + 1, per_round))
    indptr = [int(v) for v in indptr]
    n_rounds = len(indptr) - 1
    if end == 0:
        end = n_rounds
    if not 0 <= begin < end <= n_rounds:
        raise ValueError(
            f"iteration_range = ({begin}, {end}) must satisfy 0 <= begin < end <= {n_rounds} "
            "(the model's boosting rounds; (0, 0) for all)"
        )
    selected = range(indptr[begin], indptr[end])
    n_features = int(mparam.get("num_feature", "0"))
    lefts, rights, feats, thrs, dls, vals, roots, outputs = [], [], [], [], [], [], [], []
    offset = 0
    for t in selected:
        tree = trees[t]
        tp = tree.get("tree_param", {})
        if int(tp.get("size_leaf_vector", "1")) > 1:
            raise ValueError(
                "vector-leaf trees (multi_strategy='multi_output_tree') are not supported"
            )
        if any(int(s) != 0 for s in tree.get("split_type", [])):
            raise ValueError("categorical splits are not supported; use numerical features")
        left = np.asarray(tree["left_children"], dtype=np.int64)
        right = np.asarray(tree["right_children"], dtype=np.int64)
        cond = np.asarray(tree["split_conditions"], dtype=np.float64).astype(np.float32)
        leaf = left < 0
        value = np.where(leaf, cond, 0.0).astype(np.float32)
        if weights is not None and t < len(weights):
            value = (value.astype(np.float64) * weights[t]).astype(np.float32)
        lefts.append(np.where(leaf, -1, left + offset))
        rights.append(np.where(leaf, -1, right + offset))
        feats.append(np.where(leaf, 0, np.asarray(tree["split_indices"], dtype=np.int64)))
        thrs.append(np.where(leaf, 0.0, cond).astype(np.float32))
        dls.append(np.asarray(tree["default_left"], dtype=np.uint8))
        vals.append(value)
        roots.append(offset)
        outputs.append(tree_info[t])
        offset += left.shape[0]
    feature = np.concatenate(feats).astype(np.int32)
    if n_features <= 0:
        n_features = int(feature.max()) + 1
    return TreeEnsemble(
        left=np.concatenate(lefts).astype(np.int32),
        right=np.concatenate(rights).astype(np.int32),
        feature=feature,
        threshold=np.concatenate(thrs).astype(np.float32),
        default_left=np.concatenate(dls).astype(np.uint8),
        value=np.concatenate(vals).astype(np.float32),
        roots=np.asarray(roots, dtype=np.int64),
        base_score=float(bases[0]) if n_out == 1 else np.asarray(bases, np.float64),
        n_features=n_features,
        missing=missing,
        tree_output=None if n_out == 1 else np.asarray(outputs, np.int64),
    )


def tree_shap_interventional(
    model: Any, X: Any, references: Any, *, n_threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact interventional Shapley values of a tree ensemble, averaged over references.

    Args:
        model: an xgboost Booster / XGBModel (see :func:`from_xgboost` for which trees,
            missing value and outputs), or a :class:`TreeEnsemble`.
        X: explain points, (n_x × n_features), float32 (converted once; NaN = missing).
        references: background points, (n_refs × n_features).
        n_threads: threads (None: all).

    Returns:
        ``(phi, base_values)``: phi float64 (n_x × n_features), the mean over references r
        of the Shapley values of the game S ↦ f(x on S, r elsewhere) in margin space;
        base_values float64 (n_x,) = mean_r f(r).  For a multi-output model (classes or
        targets), phi is (n_x × n_features × n_outputs) and base_values (n_x × n_outputs),
        one game per output, as shap's ``TreeExplainer.shap_values`` lays them out.  Each row satisfies
        Σ_j phi[i, j] = f(x_i) − base_values[i] (equals shap's
        ``TreeExplainer(model, data=R, feature_perturbation="interventional")``).

    Complexity: per leaf O((n_x + n_refs)·d + u_x·u_r·d) with d ≤ depth the distinct
    features on its path and u_x, u_r ≤ 2^d the distinct masks of satisfied path
    conditions among X and references, i.e. far below O(n_x·n_refs·T·L·D) when many
    points share paths.  With ≤ 4 references, each (x, r) pair walks only the leaves
    its hybrid points reach (O(T · reachable leaves · D) per pair).  Parallel, GIL released.
    """
    from datacredit import _core

    ens = model if isinstance(model, TreeEnsemble) else from_xgboost(model)
    x = _points(X, "X", ens.n_features, ens.missing)
    r = _points(references, "references", ens.n_features, ens.missing)
    threads = resolve_threads(n_threads)
    phis, bases = [], []
    for arrays in ens._output_arrays():
        phi, base, _ = _core.tree_shap_interventional(*arrays, x, r, threads)
        phis.append(phi)
        bases.append(base)
    if ens.tree_output is None:
        return phis[0], bases[0] + ens.base_score
    return np.stack(phis, axis=2), np.stack(bases, axis=1) + ens.base_score
