// Crammer-Singer solver: dual feasibility, W = lambda^T X, KKT, duality gap, determinism
// and argument errors, on a small random problem.
#include <algorithm>
#include <cmath>
#include <limits>
#include <random>
#include <vector>

#include "check.hpp"
#include "datacredit/crammer_singer.hpp"

int main() {
  const int64_t n = 200, d = 7, K = 4;
  std::mt19937 rng(7);
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int> label(0, K - 1);
  std::vector<float> means(K * d), X(n * d);
  std::vector<int64_t> y(n);
  for (auto& v : means) v = normal(rng);
  for (int64_t i = 0; i < n; ++i) {
    y[i] = label(rng);
    for (int64_t j = 0; j < d; ++j)
      X[i * d + j] = std::max(0.0f, means[y[i] * d + j] + normal(rng));
  }
  datacredit::CrammerSingerOptions opt;
  opt.C = 0.3;
  opt.tol = 1e-7;
  opt.max_iter = 100000;
  opt.seed = 5;
  std::vector<double> lam(n * K), W(K * d), b(K);
  auto st = datacredit::crammer_singer_fit(X.data(), n, d, y.data(), K, opt, lam.data(), W.data(),
                                           b.data());
  DC_EXPECT(st.converged);
  DC_EXPECT(st.n_iter >= 1 && st.n_iter < opt.max_iter);
  DC_EXPECT(st.primal_objective >= st.dual_objective - 1e-12);
  DC_EXPECT(st.primal_objective - st.dual_objective < 1e-5 * st.primal_objective);
  // feasibility and W = lambda^T X, b = sum lambda
  double worst_w = 0.0, worst_kkt = 0.0;
  std::vector<double> ref(K * d, 0.0), refb(K, 0.0);
  for (int64_t i = 0; i < n; ++i) {
    double sum = 0.0;
    for (int m = 0; m < K; ++m) {
      const double l = lam[i * K + m];
      sum += l;
      if (m == y[i])
        DC_EXPECT(l >= 0.0 && l <= opt.C);
      else
        DC_EXPECT(l <= 0.0);
      for (int64_t j = 0; j < d; ++j) ref[m * d + j] += l * X[i * d + j];
      refb[m] += l;
    }
    DC_EXPECT(std::abs(sum) < 1e-12);
  }
  for (int64_t p = 0; p < K * d; ++p) worst_w = std::max(worst_w, std::abs(ref[p] - W[p]));
  for (int m = 0; m < K; ++m) worst_w = std::max(worst_w, std::abs(refb[m] - b[m]));
  DC_EXPECT(worst_w < 1e-10);
  // KKT: max_m G - min_{free m} G <= tol for every sample
  for (int64_t i = 0; i < n; ++i) {
    double gmax = -std::numeric_limits<double>::infinity();
    double gmin = std::numeric_limits<double>::infinity();
    for (int m = 0; m < K; ++m) {
      double g = b[m] + (m == y[i] ? 0.0 : 1.0);
      for (int64_t j = 0; j < d; ++j) g += W[m * d + j] * X[i * d + j];
      const double bound = m == y[i] ? opt.C : 0.0;
      gmax = std::max(gmax, g);
      if (lam[i * K + m] < bound) gmin = std::min(gmin, g);
    }
    worst_kkt = std::max(worst_kkt, gmax - gmin);
  }
  DC_EXPECT(worst_kkt < 1e-6);
  const double primal =
      datacredit::crammer_singer_primal(X.data(), n, d, y.data(), K, W.data(), b.data(), opt.C, 1);
  DC_EXPECT(std::abs(primal - st.primal_objective) < 1e-12 * primal);

  // deterministic for a seed, whatever the thread count
  std::vector<double> lam2(n * K), W2(K * d), b2(K);
  opt.n_threads = 1;
  datacredit::crammer_singer_fit(X.data(), n, d, y.data(), K, opt, lam2.data(), W2.data(),
                                 b2.data());
  DC_EXPECT(lam == lam2);

  // the sparse solve is the same solve: its CSR scattered is the dense lambda, rows ascending
  datacredit::CrammerSingerDual dual;
  std::vector<double> W3(K * d), b3(K);
  const auto st3 = datacredit::crammer_singer_fit_sparse(X.data(), n, d, y.data(), K, opt, dual,
                                                         W3.data(), b3.data());
  DC_EXPECT(static_cast<int64_t>(dual.indptr.size()) == n + 1 && dual.indptr[0] == 0);
  DC_EXPECT(st3.peak_nnz >= static_cast<int64_t>(dual.values.size()));
  std::vector<double> scattered(n * K, 0.0);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t p = dual.indptr[i]; p < dual.indptr[i + 1]; ++p) {
      DC_EXPECT(dual.values[p] != 0.0);
      if (p > dual.indptr[i]) DC_EXPECT(dual.indices[p] > dual.indices[p - 1]);
      scattered[i * K + dual.indices[p]] = dual.values[p];
    }
  DC_EXPECT(scattered == lam2 && W3 == W2);

  // errors name the argument
  auto fit = [&](double C, int64_t classes, std::vector<float> x, std::vector<int64_t> labels) {
    datacredit::CrammerSingerOptions o;
    o.C = C;
    std::vector<double> l(n * std::max<int64_t>(classes, 1)), w(std::max<int64_t>(classes, 1) * d),
        bb(std::max<int64_t>(classes, 1));
    datacredit::crammer_singer_fit(x.data(), n, d, labels.data(), classes, o, l.data(), w.data(),
                                   bb.data());
  };
  DC_EXPECT(dctest::throws_invalid([&] { fit(0.0, K, X, y); }, "C must be"));
  DC_EXPECT(dctest::throws_invalid([&] { fit(1.0, 1, X, y); }, "n_classes"));
  auto bad_y = y;
  bad_y[3] = K;
  DC_EXPECT(dctest::throws_invalid([&] { fit(1.0, K, X, bad_y); }, "y[3]"));
  auto bad_x = X;
  bad_x[5] = std::numeric_limits<float>::quiet_NaN();
  DC_EXPECT(dctest::throws_invalid([&] { fit(1.0, K, bad_x, y); }, "X contains NaN"));
  return dctest::finish("test_crammer_singer");
}
