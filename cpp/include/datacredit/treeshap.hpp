// Interventional TreeSHAP: exact Shapley values of a tree ensemble for explain points X
// against reference points R (averaged over R), independent of any tree file format.
#pragma once

#include <cstdint>

namespace datacredit {

// A tree ensemble as flat node arrays (all trees concatenated).  Node k is a leaf when
// left[k] < 0; otherwise it splits on feature[k]: a finite value v goes to left[k] when
// v < threshold[k] (XGBoost's rule, float32 compare) and to right[k] otherwise; NaN goes
// to left[k] when default_left[k] != 0.  value[k] is the leaf output (ignored for inner
// nodes).  Tree t starts at node roots[t]; the model's output is the sum of the leaves
// reached (add any base score outside).
struct TreeEnsembleView {
  const int32_t* left = nullptr;
  const int32_t* right = nullptr;
  const int32_t* feature = nullptr;
  const float* threshold = nullptr;
  const uint8_t* default_left = nullptr;
  const float* value = nullptr;
  int64_t n_nodes = 0;
  const int64_t* roots = nullptr;
  int64_t n_trees = 0;
};

// phi (n_x × n_features, row-major, double): phi[i, j] = mean over references r of the
// Shapley value of feature j in the game S -> f(x_i on S, r elsewhere).  Per row,
// sum_j phi[i, j] = f(x_i) − mean_r f(r).  base (n_x) receives mean_r f(r) and, when not
// null, fx (n_x) receives f(x_i).  X is n_x × n_features and R is n_refs × n_features,
// row-major float32 (NaN = missing).
//
// Algorithm: every root-to-leaf path is reduced to one interval (plus a NaN flag) per
// distinct feature it tests (d ≤ 63 features); a point then satisfies a subset of them
// (a d-bit mask).  References are grouped by mask per leaf, and the leaf's contribution
// is computed once per distinct explain-point mask: cost per leaf
// O((n_x + n_refs)·d + distinct_x_masks · distinct_ref_masks · d), so the work grows like
// n_x + n_refs, not n_x · n_refs.  With ≤ 4 references each (x, r) pair instead walks the
// leaves its hybrid points can reach.  `n_threads` threads (≤ 0: all).
void tree_shap_interventional(const TreeEnsembleView& model, const float* X, int64_t n_x,
                              const float* R, int64_t n_refs, int64_t n_features, double* phi,
                              double* base, double* fx, int n_threads);

// Model output f(x) (sum of leaves, no base score) for n rows: out (n).
void tree_ensemble_predict(const TreeEnsembleView& model, const float* X, int64_t n,
                           int64_t n_features, double* out, int n_threads);

}  // namespace datacredit
