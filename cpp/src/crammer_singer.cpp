#include "datacredit/crammer_singer.hpp"

#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <string>
#include <vector>

#include "datacredit/common.hpp"

// The two hot loops (class scores w_m.x and the rank-1 updates w_m += delta*x) are compiled
// twice, for x86-64-v3 (AVX2 + FMA) and for the baseline ISA; the loader picks the best one
// at run time, so the wheel stays portable.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
#define DC_MULTIVERSION __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define DC_MULTIVERSION
#endif
// Shared bodies are force-inlined so that each clone compiles them for its own ISA.
#if defined(__GNUC__)
#define DC_INLINE inline __attribute__((always_inline))
#else
#define DC_INLINE inline
#endif

namespace datacredit {

namespace {

constexpr const char* kWhere = "crammer_singer_fit";

// A shrunk sample's working set of classes is stored only up to this size; a larger one
// counts as "all classes" (shrinking is an optimisation, not part of the solution), which
// bounds the solver's per-sample state by 4 * kMaxStoredActive bytes.
constexpr int64_t kMaxStoredActive = 64;

// One nonzero lambda_{i,c} of a sample's row.
struct NonZero {
  int32_t cls;
  double val;
};

// out[a] = W[classes[a]] . x for a < count.  Four classes share each load of x and keep
// four independent accumulators; a last partial group repeats its final class rather than
// falling back to a single latency-bound accumulator.
template <typename T>
DC_INLINE void class_scores_impl(const T* W, int64_t d, const float* x, const int32_t* classes,
                                 int count, double* out) {
  for (int a = 0; a < count; a += 4) {
    const int last = count - 1;
    const T* w0 = W + classes[a] * d;
    const T* w1 = W + classes[std::min(a + 1, last)] * d;
    const T* w2 = W + classes[std::min(a + 2, last)] * d;
    const T* w3 = W + classes[std::min(a + 3, last)] * d;
    T s0 = 0, s1 = 0, s2 = 0, s3 = 0;
#pragma omp simd reduction(+ : s0, s1, s2, s3)
    for (int64_t j = 0; j < d; ++j) {
      const T xv = static_cast<T>(x[j]);
      s0 += w0[j] * xv;
      s1 += w1[j] * xv;
      s2 += w2[j] * xv;
      s3 += w3[j] * xv;
    }
    out[a] = static_cast<double>(s0);
    if (a + 1 < count) out[a + 1] = static_cast<double>(s1);
    if (a + 2 < count) out[a + 2] = static_cast<double>(s2);
    if (a + 3 < count) out[a + 3] = static_cast<double>(s3);
  }
}

// float64 W (the exact path) ...
DC_MULTIVERSION
void class_scores(const double* W, int64_t d, const float* x, const int32_t* classes, int count,
                  double* out) {
  class_scores_impl<double>(W, d, x, classes, count, out);
}

// ... and float32 W (8 lanes per AVX2 register): the fast path of the solver's passes.
DC_MULTIVERSION
void class_scores_f32(const float* W, int64_t d, const float* x, const int32_t* classes, int count,
                      double* out) {
  class_scores_impl<float>(W, d, x, classes, count, out);
}

// w += delta * x in float64, and wf = float(w): the float32 copy never drifts from the
// float64 master.
DC_MULTIVERSION
void axpy(double delta, const float* x, double* w, float* wf, int64_t d) {
#pragma omp simd
  for (int64_t j = 0; j < d; ++j) {
    const double v = w[j] + delta * static_cast<double>(x[j]);
    w[j] = v;
    wf[j] = static_cast<float>(v);
  }
}

DC_MULTIVERSION
double squared_norm(const float* x, int64_t d) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t j = 0; j < d; ++j) s += static_cast<double>(x[j]) * static_cast<double>(x[j]);
  return s;
}

// A small, platform-independent generator (splitmix64): the permutation, hence the result,
// is the same on every platform and standard library for a given seed.
struct SplitMix64 {
  uint64_t state;
  uint64_t next() {
    uint64_t z = (state += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  int64_t below(int64_t bound) {
    return static_cast<int64_t>(next() % static_cast<uint64_t>(bound));
  }
};

// Solves the per-sample sub-problem
//   min_a 1/2 A ||a||^2 + B.a   s.t.  a_m <= bound_m,  sum_m a_m = -fixed
// over the `count` active classes, where only the true class may have bound C (all others 0)
// and `fixed` is C when the true class is shrunk (its lambda sits at C) and 0 otherwise.
// KKT gives a_m = min(bound_m, (beta - B_m) / A); with D_m = B_m + A*bound_m sorted in
// decreasing order, beta = (sum_{r<t} D_r - A*C) / t for the smallest t with beta >= D_t.
double subproblem_beta(const double* B, int count, int y_pos, double A, double C, double* D) {
  for (int a = 0; a < count; ++a) D[a] = B[a];
  if (y_pos >= 0) D[y_pos] += A * C;
  if (count <= 32) {  // insertion sort, decreasing
    for (int a = 1; a < count; ++a) {
      const double v = D[a];
      int b = a - 1;
      while (b >= 0 && D[b] < v) {
        D[b + 1] = D[b];
        --b;
      }
      D[b + 1] = v;
    }
  } else {
    std::sort(D, D + count, std::greater<double>());
  }
  double beta = D[0] - A * C;
  int r = 1;
  while (r < count && beta < r * D[r]) {
    beta += D[r];
    ++r;
  }
  return beta / r;
}

void validate(const float* X, int64_t n, int64_t d, const int64_t* y, int64_t n_classes,
              const CrammerSingerOptions& o) {
  check(n > 0, kWhere, "X is empty (no samples)");
  check(d > 0, kWhere, "X has no features (d = 0)");
  check(n_classes >= 2, kWhere, "n_classes must be at least 2, got " + std::to_string(n_classes));
  check(n_classes <= std::numeric_limits<int32_t>::max(), kWhere, "n_classes is too large");
  check(std::isfinite(o.C) && o.C > 0.0, kWhere, "C must be a finite number > 0");
  check(std::isfinite(o.tol) && o.tol > 0.0, kWhere, "tol must be a finite number > 0");
  check(o.max_iter >= 1, kWhere, "max_iter must be >= 1");
  check(o.shrink_factor > 0.0 && o.shrink_factor < 1.0, kWhere, "shrink_factor must be in (0, 1)");
  if (o.sample_weight != nullptr)
    for (int64_t i = 0; i < n; ++i)
      check(std::isfinite(o.sample_weight[i]) && o.sample_weight[i] >= 0.0, kWhere,
            "sample_weight[" + std::to_string(i) + "] must be finite and >= 0");
  check(all_finite(X, n * d), kWhere, "X contains NaN or inf");
  for (int64_t i = 0; i < n; ++i)
    check(y[i] >= 0 && y[i] < n_classes, kWhere,
          "y[" + std::to_string(i) + "] = " + std::to_string(y[i]) + " is outside [0, " +
              std::to_string(n_classes) + ")");
}

}  // namespace

double crammer_singer_primal(const float* X, int64_t n, int64_t d, const int64_t* y,
                             int64_t n_classes, const double* coef, const double* bias, double C,
                             int n_threads, const double* sample_weight) {
  const int threads = resolve_threads(n_threads);
  const int K = static_cast<int>(n_classes);
  double reg = 0.0;
  for (int64_t p = 0; p < n_classes * d; ++p) reg += coef[p] * coef[p];
  if (bias != nullptr)
    for (int m = 0; m < K; ++m) reg += bias[m] * bias[m];
  std::vector<int32_t> all(static_cast<size_t>(K));
  for (int m = 0; m < K; ++m) all[static_cast<size_t>(m)] = m;
  double loss = 0.0;
  // Threads only pay off on large passes: waking a team costs more than a small pass,
  // and much more on a loaded machine.
  const bool parallel = threads > 1 && n * n_classes * d >= (int64_t{1} << 26);
#pragma omp parallel num_threads(threads) reduction(+ : loss) if (parallel)
  {
    std::vector<double> s(static_cast<size_t>(K));
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      class_scores(coef, d, X + i * d, all.data(), K, s.data());
      if (bias != nullptr)
        for (int m = 0; m < K; ++m) s[static_cast<size_t>(m)] += bias[m];
      const double sy = s[static_cast<size_t>(y[i])];
      double worst = 0.0;  // m = y_i contributes 0
      for (int m = 0; m < K; ++m)
        if (m != y[i]) worst = std::max(worst, 1.0 + s[static_cast<size_t>(m)] - sy);
      loss += sample_weight ? sample_weight[i] * worst : worst;
    }
  }
  return 0.5 * reg + C * loss;
}

CrammerSingerStats crammer_singer_fit_sparse(const float* X, int64_t n, int64_t d, const int64_t* y,
                                             int64_t n_classes, const CrammerSingerOptions& o,
                                             CrammerSingerDual& dual, double* coef, double* bias) {
  validate(X, n, d, y, n_classes, o);
  const int K = static_cast<int>(n_classes);
  // Per-sample box: C_i = C * sample_weight[i] (C when no weights are given).
  auto sample_c = [&](int64_t i) { return o.sample_weight ? o.C * o.sample_weight[i] : o.C; };
  const double bias_term = o.fit_bias ? 1.0 : 0.0;

  // lambda, row by row: the nonzero classes of each sample.  A visit scatters its row into the
  // dense K-vector `lam_d` (zero outside the visit), works on it and gathers it back, so the
  // per-visit cost is O(nnz_i + k_active) beside the O(k_active * d) of the scores.
  std::vector<std::vector<NonZero>> rows(static_cast<size_t>(n));
  std::vector<double> lam_d(static_cast<size_t>(K), 0.0);
  int64_t nnz = 0, peak_nnz = 0;
  std::vector<double> W(static_cast<size_t>(K * d), 0.0);   // maintained W = lambda^T X
  std::vector<float> Wf(static_cast<size_t>(K * d), 0.0f);  // its float32 rounding
  std::vector<double> b(static_cast<size_t>(K), 0.0);       // maintained bias = sum_i lambda_i

  // Cached squared norms A_i = ||x_i||^2 (+1 for the bias feature).
  std::vector<double> sqnorm(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {  // O(n d): serial (a thread team costs more)
    sqnorm[static_cast<size_t>(i)] = squared_norm(X + i * d, d) + bias_term;
  }

  // Active set: samples index[0..active) and, per sample, its unshrunk classes act[i]; an
  // empty act[i] means all K classes (so an unshrunk problem stores nothing per sample).
  std::vector<int64_t> index;
  index.reserve(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    if (sample_c(i) == 0.0) continue;  // weight 0: the sample is out of the problem
    if (sqnorm[static_cast<size_t>(i)] > 0.0) {
      index.push_back(i);
    } else {
      // x_i = 0 without bias: it does not move W; the dual optimum puts lambda_{i,y_i} = C
      // against any other class (its hinge loss is 1 whatever W is).
      const int32_t yi = static_cast<int32_t>(y[i]), other = yi == 0 ? 1 : 0;
      rows[static_cast<size_t>(i)] = {
          {std::min(yi, other), yi < other ? sample_c(i) : -sample_c(i)},
          {std::max(yi, other), yi < other ? -sample_c(i) : sample_c(i)}};
      nnz += 2;
    }
  }
  peak_nnz = nnz;
  const int64_t n_work = static_cast<int64_t>(index.size());
  std::vector<std::vector<int32_t>> act(static_cast<size_t>(n));
  std::vector<int32_t> cls(static_cast<size_t>(K));

  std::vector<double> G(static_cast<size_t>(K)), B(static_cast<size_t>(K)),
      D(static_cast<size_t>(K));
  SplitMix64 rng{o.seed * 0x2545F4914F6CDD1DULL + 0x1234567ULL};

  CrammerSingerStats stats;
  int64_t active = n_work;
  double eps_shrink = std::max(10.0 * o.tol, 1.0);
  bool start_from_all = true;
  // Passes score classes with the float32 copy of W (twice the SIMD width); a pass that
  // would end the solve is repeated with float64 scores, so the stopping test is exact.
  // The KKT violation of the returned (lambda, W) itself, from scratch with float64 scores:
  // a solve only counts as converged when this is below tol too.
  const int threads = resolve_threads(o.n_threads);
  auto final_violation = [&]() {
    std::vector<int32_t> all(static_cast<size_t>(K));
    for (int m = 0; m < K; ++m) all[static_cast<size_t>(m)] = m;
    double worst = 0.0;
    const bool parallel = threads > 1 && n * n_classes * d >= (int64_t{1} << 26);
#pragma omp parallel num_threads(threads) reduction(max : worst) if (parallel)
    {
      std::vector<double> g(static_cast<size_t>(K)), lam(static_cast<size_t>(K), 0.0);
#pragma omp for schedule(static)
      for (int64_t i = 0; i < n; ++i) {
        const double Ci = sample_c(i);
        if (Ci == 0.0) continue;
        const auto& row = rows[static_cast<size_t>(i)];
        for (const auto& e : row) lam[static_cast<size_t>(e.cls)] = e.val;
        class_scores(W.data(), d, X + i * d, all.data(), K, g.data());
        double gmax = -std::numeric_limits<double>::infinity();
        double gmin = std::numeric_limits<double>::infinity();
        for (int m = 0; m < K; ++m) {
          const double gm = g[static_cast<size_t>(m)] + bias_term * b[static_cast<size_t>(m)] +
                            (m == y[i] ? 0.0 : 1.0);
          gmax = std::max(gmax, gm);
          if (lam[static_cast<size_t>(m)] < (m == y[i] ? Ci : 0.0)) gmin = std::min(gmin, gm);
        }
        for (const auto& e : row) lam[static_cast<size_t>(e.cls)] = 0.0;
        if (gmin < std::numeric_limits<double>::infinity()) worst = std::max(worst, gmax - gmin);
      }
    }
    return worst;
  };
  // Typical rounding error of a float32 score (sqrt(d) ulps of |w||x|): once the shrink
  // tolerance gets near it, float32 scores cannot resolve the KKT test any more.
  double x_max = 0.0;
  for (int64_t i = 0; i < n; ++i) x_max = std::max(x_max, sqnorm[static_cast<size_t>(i)]);
  x_max = std::sqrt(x_max);
  auto float_noise = [&]() {
    double w_max = 0.0;
    for (int m = 0; m < K; ++m) {
      double s2 = bias_term * b[static_cast<size_t>(m)] * b[static_cast<size_t>(m)];
      for (int64_t j = 0; j < d; ++j) s2 += W[static_cast<size_t>(m * d + j)] * W[m * d + j];
      w_max = std::max(w_max, std::sqrt(s2));
    }
    return std::sqrt(static_cast<double>(d)) * 0x1p-24 * w_max * x_max;
  };
  const int max_stored = static_cast<int>(std::min<int64_t>(K, kMaxStoredActive));
  bool confirm = false;       // the next pass confirms a float32 convergence in float64
  bool force_double = false;  // float32 scores are too coarse for the remaining tolerance
  while (stats.n_iter < o.max_iter) {
    const bool precise = confirm || force_double;
    double max_violation = 0.0;
    for (int64_t s = 0; s < active; ++s) std::swap(index[s], index[s + rng.below(active - s)]);
    for (int64_t s = 0; s < active; ++s) {
      const int64_t i = index[static_cast<size_t>(s)];
      const float* x = X + i * d;
      const int64_t yi = y[i];
      const double C = sample_c(i);
      auto& row = rows[static_cast<size_t>(i)];
      auto& act_i = act[static_cast<size_t>(i)];
      double* lam_i = lam_d.data();
      for (const auto& e : row) lam_i[e.cls] = e.val;
      int32_t* cls_i = cls.data();
      int na;
      if (act_i.empty()) {
        na = K;
        for (int m = 0; m < K; ++m) cls_i[m] = m;
      } else {
        na = static_cast<int>(act_i.size());
        std::copy(act_i.begin(), act_i.end(), cls_i);
      }
      // Leaves the visit: lambda_d back to zero, the row unchanged.
      auto leave = [&]() {
        for (const auto& e : row) lam_i[e.cls] = 0.0;
      };

      if (precise)
        class_scores(W.data(), d, x, cls_i, na, G.data());
      else
        class_scores_f32(Wf.data(), d, x, cls_i, na, G.data());
      double min_g = std::numeric_limits<double>::infinity();
      double max_g = -std::numeric_limits<double>::infinity();
      for (int a = 0; a < na; ++a) {
        const int m = cls_i[a];
        G[a] += bias_term * b[m] + (m == yi ? 0.0 : 1.0);
        const double bound = m == yi ? C : 0.0;
        if (lam_i[m] < bound && G[a] < min_g) min_g = G[a];
        if (G[a] > max_g) max_g = G[a];
      }
      // Shrink classes whose lambda sits at its bound with a gradient below every free one.
      for (int a = 0; a < na;) {
        const int m = cls_i[a];
        const double bound = m == yi ? C : 0.0;
        if (lam_i[m] == bound && G[a] < min_g) {
          --na;
          std::swap(cls_i[a], cls_i[na]);
          std::swap(G[a], G[na]);
        } else {
          ++a;
        }
      }
      if (na <= 1) {  // nothing left to move for this sample
        leave();
        act_i.clear();
        --active;
        std::swap(index[static_cast<size_t>(s)], index[static_cast<size_t>(active)]);
        --s;
        continue;
      }
      if (na < K && na <= max_stored)
        act_i.assign(cls_i, cls_i + na);
      else
        act_i.clear();  // too many to store: all classes stay active (shrinking is optional)
      const double violation = max_g - min_g;
      if (violation <= 1e-12) {
        leave();
        continue;
      }
      max_violation = std::max(max_violation, violation);

      const double A = sqnorm[static_cast<size_t>(i)];
      int y_pos = -1;
      for (int a = 0; a < na; ++a) {
        const int m = cls_i[a];
        if (m == yi) y_pos = a;
        B[a] = G[a] - A * lam_i[m];
      }
      const double beta = subproblem_beta(B.data(), na, y_pos, A, C, D.data());
      // New values, written over B.  The true class's value is also clamped at 0 from below
      // (it is >= 0 in exact arithmetic), so rounding cannot make it negative.
      double largest_change = 0.0, largest_value = 0.0;
      for (int a = 0; a < na; ++a) {
        const int m = cls_i[a];
        const double v = (beta - B[a]) / A;
        B[a] = m == yi ? std::min(C, std::max(0.0, v)) : std::min(0.0, v);
        largest_change = std::max(largest_change, std::abs(B[a] - lam_i[m]));
        largest_value = std::max({largest_value, std::abs(B[a]), std::abs(lam_i[m])});
      }
      // Nothing moves: relative to the lambdas themselves, not to C (with a huge C or huge
      // features every useful step is far below 1e-15 * C).
      if (largest_change <= 1e-15 * largest_value) {
        leave();
        continue;
      }
      for (int a = 0; a < na; ++a) {
        const int m = cls_i[a];
        const double delta = B[a] - lam_i[m];
        if (delta == 0.0) continue;
        lam_i[m] = B[a];
        axpy(delta, x, W.data() + m * d, Wf.data() + m * d, d);
        b[m] += delta;
      }
      // Gather: the old nonzeros take their new values (and leave lam_d), then any active
      // class still nonzero in lam_d is new; zeros are dropped.
      const int64_t old_nnz = static_cast<int64_t>(row.size());
      for (auto& e : row) {
        e.val = lam_i[e.cls];
        lam_i[e.cls] = 0.0;
      }
      for (int a = 0; a < na; ++a) {
        const int m = cls_i[a];
        if (lam_i[m] != 0.0) {
          row.push_back({m, lam_i[m]});
          lam_i[m] = 0.0;
        }
      }
      row.erase(
          std::remove_if(row.begin(), row.end(), [](const NonZero& e) { return e.val == 0.0; }),
          row.end());
      nnz += static_cast<int64_t>(row.size()) - old_nnz;
      peak_nnz = std::max(peak_nnz, nnz);
      if (o.max_nnz > 0 && nnz > o.max_nnz) {
        throw NonzeroLimitExceeded(
            std::string(kWhere) + ": lambda grew to " + std::to_string(nnz) + " nonzeros (" +
            std::to_string(static_cast<double>(nnz) / static_cast<double>(n)).substr(0, 6) +
            " per sample of " + std::to_string(K) + " classes) in epoch " +
            std::to_string(stats.n_iter + 1) + ", above the limit of " + std::to_string(o.max_nnz) +
            " (max_nnz)");
      }
    }
    ++stats.n_iter;
    stats.max_violation = max_violation;
    if (max_violation < eps_shrink) {
      bool next_confirm = false;
      if (max_violation < o.tol && start_from_all) {
        if (precise) {
          const double kkt = final_violation();
          if (kkt < o.tol) {
            stats.converged = true;
            stats.max_violation = kkt;
            break;
          }
          force_double = true;  // keep iterating, in float64 from now on
        } else {
          next_confirm = true;  // converged by float32 scores: confirm in float64
        }
      }
      confirm = next_confirm;
      // Unshrink everything and tighten the shrink tolerance.
      active = n_work;
      for (auto& a : act) a.clear();
      eps_shrink = std::max(o.shrink_factor * eps_shrink, o.tol);
      start_from_all = true;
      if (!force_double && eps_shrink <= 4.0 * float_noise()) force_double = true;
    } else {
      confirm = false;
      start_from_all = false;
    }
  }
  act = {};  // the working sets are no longer needed: free them before building the CSR

  // The maintained W and bias are lambda^T X and sum_i lambda_i, accumulated in float64
  // along the way (rounding error ~1e-15 relative).
  std::copy(W.begin(), W.end(), coef);
  for (int m = 0; m < K; ++m) bias[m] = o.fit_bias ? b[static_cast<size_t>(m)] : 0.0;
  double sum_lam_y = 0.0, reg = 0.0;
  dual.indptr.assign(static_cast<size_t>(n + 1), 0);
  dual.indices.clear();
  dual.values.clear();
  dual.indices.reserve(static_cast<size_t>(nnz));
  dual.values.reserve(static_cast<size_t>(nnz));
  for (int64_t i = 0; i < n; ++i) {
    auto& row = rows[static_cast<size_t>(i)];
    std::sort(row.begin(), row.end(),
              [](const NonZero& a, const NonZero& c) { return a.cls < c.cls; });
    for (const auto& e : row) {
      dual.indices.push_back(e.cls);
      dual.values.push_back(e.val);
      if (e.cls == y[i]) sum_lam_y += e.val;
    }
    dual.indptr[static_cast<size_t>(i + 1)] = static_cast<int64_t>(dual.indices.size());
    std::vector<NonZero>().swap(row);  // free as we go: the CSR and the rows never both peak
  }
  for (int64_t p = 0; p < K * d; ++p) reg += coef[p] * coef[p];
  for (int m = 0; m < K; ++m) reg += bias[m] * bias[m];
  stats.dual_objective = sum_lam_y - 0.5 * reg;
  stats.peak_nnz = peak_nnz;
  stats.primal_objective = crammer_singer_primal(
      X, n, d, y, n_classes, coef, o.fit_bias ? bias : nullptr, o.C, o.n_threads, o.sample_weight);
  return stats;
}

CrammerSingerStats crammer_singer_fit(const float* X, int64_t n, int64_t d, const int64_t* y,
                                      int64_t n_classes, const CrammerSingerOptions& o,
                                      double* dual_coef, double* coef, double* bias) {
  CrammerSingerDual dual;
  const auto stats = crammer_singer_fit_sparse(X, n, d, y, n_classes, o, dual, coef, bias);
  std::fill(dual_coef, dual_coef + n * n_classes, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t p = dual.indptr[static_cast<size_t>(i)];
         p < dual.indptr[static_cast<size_t>(i + 1)]; ++p)
      dual_coef[i * n_classes + dual.indices[static_cast<size_t>(p)]] =
          dual.values[static_cast<size_t>(p)];
  return stats;
}

}  // namespace datacredit
