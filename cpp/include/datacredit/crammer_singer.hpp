// Crammer-Singer multiclass linear SVM, solved in the dual by sequential (coordinate)
// descent over samples (Keerthi et al. 2008, the method LIBLINEAR calls MCSVM_CS).
//
// Primal (eq. (1) of the DualXDA paper), with x_i optionally extended by a constant 1:
//   min_W  1/2 ||W||_F^2 + C * sum_i max_m ( [m != y_i] + w_m.x_i - w_{y_i}.x_i )
// Dual, in "lambda" form (lambda = C*onehot(y) - alpha of the paper):
//   min_lambda 1/2 ||lambda^T X||_F^2 - sum_i lambda_{i,y_i}
//   s.t. lambda_{i,y_i} <= C, lambda_{i,m} <= 0 (m != y_i), sum_m lambda_{i,m} = 0,
// and W = lambda^T X.  Features are dense row-major float32 and are never copied.
// lambda is kept sparse throughout (a sample has a handful of nonzero classes at the optimum):
// the solve needs O(n d) for the (possibly memory-mapped) features plus O(nnz(lambda) + K d).
#pragma once

#include <cstdint>
#include <stdexcept>
#include <vector>

namespace datacredit {

struct CrammerSingerOptions {
  double C = 1e-3;          // regularization (> 0)
  double tol = 1e-4;        // stop when the max KKT violation of a full, unshrunk pass < tol
  int64_t max_iter = 1000;  // maximum number of epochs (passes over the active samples)
  uint64_t seed = 0;        // seeds the per-epoch random permutation (results are deterministic)
  bool fit_bias = true;     // append a constant-1 feature (regularized, as LIBLINEAR's -B 1)
  // Each time a pass over the shrunk set gets below the shrink tolerance, every sample is
  // unshrunk and the tolerance is multiplied by this factor.  LIBLINEAR halves it (0.5);
  // 0.1 needs fewer full (unshrunk) passes, the dominant cost on large N: 1.2-2x faster in
  // benchmarks/bench_crammer_singer.py.  The stopping rule, hence the accuracy, is the same.
  double shrink_factor = 0.1;
  int n_threads = 0;  // threads for the objective / W passes (<= 0: all)
  // Optional per-sample weights w_i >= 0 (n values): sample i's loss is weighted by w_i,
  // i.e. its dual box uses C_i = C * w_i.  Null means all ones.
  const double* sample_weight = nullptr;
  // Upper bound on the nonzeros of lambda during the solve (<= 0: none).  lambda is sparse
  // because a sample has a handful of active classes; on features that do not separate the
  // classes (identical rows, say) nearly every class stays active and nnz approaches N*K/4,
  // a dense array in disguise.  Passing the count that available memory holds turns that
  // into a clear NonzeroLimitExceeded instead of an out-of-memory kill.
  int64_t max_nnz = 0;
};

// Thrown by crammer_singer_fit_sparse when lambda outgrows CrammerSingerOptions::max_nnz.
struct NonzeroLimitExceeded : std::runtime_error {
  using std::runtime_error::runtime_error;
};

struct CrammerSingerStats {
  int64_t n_iter = 0;             // epochs actually run
  bool converged = false;         // a full unshrunk pass had max KKT violation < tol
  double max_violation = 0.0;     // max KKT violation of the last pass
  double primal_objective = 0.0;  // 1/2||W||^2 + C * sum of hinge losses (W = lambda^T X)
  double dual_objective = 0.0;    // sum_i lambda_{i,y_i} - 1/2||W||^2  (<= primal)
  int64_t peak_nnz = 0;           // the most nonzeros lambda held at any point of the solve
};

// lambda in compressed sparse rows: sample i's nonzero classes are
// indices[indptr[i] .. indptr[i+1]) (ascending), with values at the same positions.
struct CrammerSingerDual {
  std::vector<int64_t> indptr;   // n + 1
  std::vector<int32_t> indices;  // nnz, class of each value
  std::vector<double> values;    // nnz, lambda_{i,c} (> 0 only for c = y_i)
};

// Fits the SVM; lambda comes back sparse in `dual` (overwritten), coef (n_classes x d) and
// bias (n_classes) as below.  Time O(epochs * n_active * (k_active * d)); memory besides X:
// O(n + nnz(lambda) + K * d), where the working set of a shrunk sample is stored only when it
// has at most kMaxStoredActive classes (a larger one is kept as "all classes").
CrammerSingerStats crammer_singer_fit_sparse(const float* X, int64_t n, int64_t d, const int64_t* y,
                                             int64_t n_classes, const CrammerSingerOptions& options,
                                             CrammerSingerDual& dual, double* coef, double* bias);

// Fits the SVM on X (n x d, row-major float32) with labels y (n, values in [0, n_classes)).
// Outputs (caller-owned): dual_coef (n x n_classes, lambda, float64, dense: the sparse solve
// scattered into it), coef (n_classes x d, W = lambda^T X accumulated in float64), bias
// (n_classes; sum_i lambda_{i,c} when fit_bias, else zeros).  For small problems and the C
// API; large ones use crammer_singer_fit_sparse.
CrammerSingerStats crammer_singer_fit(const float* X, int64_t n, int64_t d, const int64_t* y,
                                      int64_t n_classes, const CrammerSingerOptions& options,
                                      double* dual_coef, double* coef, double* bias);

// Primal objective of an arbitrary (W, b) on (X, y):
// 1/2(||W||^2 + ||b||^2) + C * sum_i w_i * loss_i.  `bias` may be null (no bias),
// `sample_weight` null (all ones).  Parallel over samples; used by tests and benchmarks.
double crammer_singer_primal(const float* X, int64_t n, int64_t d, const int64_t* y,
                             int64_t n_classes, const double* coef, const double* bias, double C,
                             int n_threads, const double* sample_weight = nullptr);

}  // namespace datacredit
