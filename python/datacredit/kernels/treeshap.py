"""Interventional TreeSHAP for tree ensembles (XGBoost models are parsed here).

The compiled kernel sees only flat node arrays (:class:`TreeEnsemble`), so it does not
depend on any tree file format; this module turns an XGBoost model's JSON dump into them.
"""

from __future__ import annotations

import json
import math
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
    default_left (uint8, n_nodes); roots (int64, n_trees); base_score (float, margin space);
    n_features (int).
    """

    left: np.ndarray
    right: np.ndarray
    feature: np.ndarray
    threshold: np.ndarray
    default_left: np.ndarray
    value: np.ndarray
    roots: np.ndarray
    base_score: float
    n_features: int

    @property
    def n_trees(self) -> int:
        return int(self.roots.shape[0])

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
        """Margin output for the rows of X (n × n_features); float64 (n,).  O(n · T · depth)."""
        from datacredit import _core

        x = _points(X, "X", self.n_features)
        out = _core.tree_ensemble_predict(*self._arrays(), x, resolve_threads(n_threads))
        return out + self.base_score


def _points(X: Any, name: str, n_features: int) -> np.ndarray:
    x = as_float_matrix(X, name, check_finite=False)
    if x.shape[1] != n_features:
        raise ValueError(f"{name} must have {n_features} columns (the model's), got {x.shape[1]}")
    return x


_LOG_LINK = {"count:poisson", "reg:gamma", "reg:tweedie", "survival:cox", "survival:aft"}
_LOGIT_LINK = {"reg:logistic", "binary:logistic", "binary:logitraw"}


def _parse_float_list(s: Any) -> float:
    if isinstance(s, (int, float)):
        return float(s)
    s = str(s).strip().strip("[]")
    vals = [float(t) for t in s.split(",") if t.strip()]
    if len(vals) != 1:
        raise ValueError(f"vector base_score {s!r} (multi-output models) is not supported")
    return vals[0]


def _margin_base_score(base: float, objective: str) -> float:
    if objective in _LOGIT_LINK and objective != "binary:logitraw":
        base = min(max(base, 1e-16), 1 - 1e-16)
        return math.log(base / (1 - base))
    if objective in _LOG_LINK:
        return math.log(max(base, 1e-300))
    return base


def from_xgboost(model: Any) -> TreeEnsemble:
    """Flatten an XGBoost ``Booster`` / ``XGBModel`` (sklearn API) into a :class:`TreeEnsemble`.

    base_score is mapped to margin space (logit for logistic objectives, log for
    Poisson/Gamma/Tweedie); DART tree weights are folded into the leaf values.  Raises
    ValueError for categorical splits, vector leaves or multi-output/multi-class models.
    """
    booster = model.get_booster() if hasattr(model, "get_booster") else model
    if not hasattr(booster, "save_raw"):
        raise TypeError(f"model must be an xgboost Booster or XGBModel, got {type(model).__name__}")
    doc = json.loads(bytes(booster.save_raw(raw_format="json")))
    learner = doc["learner"]
    mparam = learner["learner_model_param"]
    if int(mparam.get("num_class", "0")) > 1:
        raise ValueError("multi-class XGBoost models are not supported (one output only)")
    if int(mparam.get("num_target", "1")) > 1:
        raise ValueError("multi-target XGBoost models are not supported (one output only)")
    objective = learner["objective"]["name"]
    base = _margin_base_score(_parse_float_list(mparam["base_score"]), objective)
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
    n_features = int(mparam.get("num_feature", "0"))
    lefts, rights, feats, thrs, dls, vals, roots = [], [], [], [], [], [], []
    offset = 0
    for t, tree in enumerate(trees):
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
        base_score=float(base),
        n_features=n_features,
    )


def tree_shap_interventional(
    model: Any, X: Any, references: Any, *, n_threads: int | None = None
) -> tuple[np.ndarray, np.ndarray]:
    """Exact interventional Shapley values of a tree ensemble, averaged over references.

    Args:
        model: an xgboost Booster / XGBRegressor (or any XGBModel with one output), or a
            :class:`TreeEnsemble`.
        X: explain points, (n_x × n_features), float32 (converted once; NaN = missing).
        references: background points, (n_refs × n_features).
        n_threads: threads (None: all).

    Returns:
        ``(phi, base_values)``: phi float64 (n_x × n_features), the mean over references r
        of the Shapley values of the game S ↦ f(x on S, r elsewhere) in margin space;
        base_values float64 (n_x,) = mean_r f(r).  Each row satisfies
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
    x = _points(X, "X", ens.n_features)
    r = _points(references, "references", ens.n_features)
    phi, base, _ = _core.tree_shap_interventional(*ens._arrays(), x, r, resolve_threads(n_threads))
    return phi, base + ens.base_score
