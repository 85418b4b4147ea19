// Batched feature Gram products with fused top-k selection.
//
// score(i, j) = w_j * s(q_i, k_j), s one of
//   inner product  q.k
//   cosine         q.k / (|q| |k|)      (0 when either vector is all zeros)
//   squared l2     |q - k|^2           (exact: see gram_topk; gram_dense by differences)
// and w_j either 1, a per-key weight, or a per-key-per-class weight W[j, classes[i]]
// (DualDA's tau = lambda_{j,c(i)} f_j . f_i).
#pragma once

#include <cstdint>
#include <string>

namespace datacredit {

enum class Metric { kInnerProduct, kCosine, kSquaredL2 };

// "ip", "cosine" or "l2"; anything else throws std::invalid_argument.
Metric parse_metric(const std::string& name);

// Optional key weights: none (data == nullptr), a vector (n_cols == 1, classes ==
// nullptr) or a row-major matrix (n_keys x n_cols) with a class per query.
struct KeyWeights {
  const float* data = nullptr;
  int64_t n_cols = 0;
  const int64_t* classes = nullptr;
};

// Inputs are row-major, contiguous float32: queries (n x dim), keys (n_keys x dim).
// Writes the k best scores per query, best-first (largest when `largest`, else
// smallest), ties to the lower key index: values (n x k), indices (n x k).
// Memory: O(n * k + threads * tile); never n x n_keys.  Parallel over query blocks,
// and over key ranges when there are few queries.
// Squared l2: the GEMM runs on rows minus the key mean (a large common offset does not
// cancel), each query keeps k + max(16, k / 4) candidates, their distances are recomputed
// directly in double and re-ranked, and a rounding-error bound certifies that no other
// key can enter (otherwise that query is scanned exactly): every value is the float32
// rounding of the exact w_j |q - k_j|^2 and the selection is the exact one.
// Throws std::invalid_argument on bad sizes, k outside [1, n_keys], non-finite
// inputs or classes out of range; std::bad_alloc (never from inside a parallel region)
// when the heaps or per-thread buffers cannot be allocated.  `keys_checked`: the caller has
// already checked that keys and weights are finite (an artifact validated once at load, e.g.
// the C API's DualDA explainer), so the O(n_keys * (dim + cols)) scans are skipped: a single
// query then reads the keys once instead of twice.
void gram_topk(const float* queries, int64_t n, const float* keys, int64_t n_keys, int64_t dim,
               int64_t k, const KeyWeights& weights, Metric metric, bool largest, float* values,
               int64_t* indices, int n_threads = 0, bool keys_checked = false);

// The dense score matrix out (n x n_keys), same definitions and checks (l2 from the
// differences, in double: O(n N d) without the GEMM).
void gram_dense(const float* queries, int64_t n, const float* keys, int64_t n_keys, int64_t dim,
                const KeyWeights& weights, Metric metric, float* out, int n_threads = 0);

}  // namespace datacredit
