// The four kernels of the C API on caller-owned buffers, against independent references
// computed here (double-precision brute force, the SVM's optimality conditions, exact
// Shapley values by enumeration), and their argument errors.
#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

#include "check.hpp"
#include "datacredit/c_api.h"

namespace {

std::vector<float> randn(size_t n, uint32_t seed) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist;
  std::vector<float> v(n);
  for (float& x : v) x = dist(gen);
  return v;
}

void test_gram_topk() {
  const int64_t n = 7, nk = 300, d = 16, k = 5, nc = 3;
  const auto q = randn(n * d, 1), keys = randn(nk * d, 2), w = randn(nk * nc, 3);
  std::vector<int64_t> classes = {0, 1, 2, 0, 1, 2, 1};
  for (int metric : {DC_METRIC_IP, DC_METRIC_L2}) {
    std::vector<float> v(n * k);
    std::vector<int64_t> idx(n * k);
    DC_EXPECT(dc_gram_topk(q.data(), n, keys.data(), nk, d, k, w.data(), nc, classes.data(), metric,
                           metric == DC_METRIC_IP, v.data(), idx.data(), 2) == DC_OK);
    for (int64_t i = 0; i < n; ++i) {
      std::vector<std::pair<double, int64_t>> ref;
      for (int64_t j = 0; j < nk; ++j) {
        double s = 0;
        for (int64_t t = 0; t < d; ++t) {
          const double a = q[i * d + t], b = keys[j * d + t];
          s += metric == DC_METRIC_IP ? a * b : (a - b) * (a - b);
        }
        s *= w[j * nc + classes[i]];
        ref.push_back({metric == DC_METRIC_IP ? -s : s, j});  // best first after sorting
      }
      std::sort(ref.begin(), ref.end());
      for (int64_t j = 0; j < k; ++j) {
        DC_EXPECT(idx[i * k + j] == ref[j].second);
        DC_EXPECT(std::fabs(std::fabs(v[i * k + j]) - std::fabs(ref[j].first)) <=
                  1e-4 * (1 + std::fabs(ref[j].first)));
      }
    }
  }
  std::vector<float> v(n * k);
  std::vector<int64_t> idx(n * k);
  DC_EXPECT(dc_gram_topk(q.data(), n, keys.data(), nk, d, k, nullptr, 0, nullptr, 7, 1, v.data(),
                         idx.data(), 1) == DC_ERR_INVALID_ARGUMENT);
  DC_EXPECT(std::strstr(dc_last_error(), "metric") != nullptr);
  DC_EXPECT(dc_gram_topk(q.data(), n, keys.data(), nk, d, nk + 1, nullptr, 0, nullptr, 0, 1,
                         v.data(), idx.data(), 1) == DC_ERR_INVALID_ARGUMENT);
  DC_EXPECT(dc_gram_topk(nullptr, n, keys.data(), nk, d, k, nullptr, 0, nullptr, 0, 1, v.data(),
                         idx.data(), 1) == DC_ERR_INVALID_ARGUMENT);
}

void test_crammer_singer() {
  const int64_t n = 120, d = 5, nc = 3;
  const double C = 0.1;
  auto X = randn(n * d, 4);
  std::vector<int64_t> y(n);
  for (int64_t i = 0; i < n; ++i) {
    y[i] = i % nc;
    X[i * d + y[i]] += 2.0f;  // separable-ish blobs
  }
  std::vector<double> lam(n * nc), coef(nc * d), bias(nc);
  dc_crammer_singer_stats st{};
  DC_EXPECT(dc_crammer_singer_fit(X.data(), n, d, y.data(), nc, C, 1e-6, 10000, 0, 1, 1, lam.data(),
                                  coef.data(), bias.data(), &st) == DC_OK);
  DC_EXPECT(st.converged == 1);
  // Dual feasibility and W = lambda^T X, bias = sum lambda (the constant-1 feature).
  for (int64_t i = 0; i < n; ++i) {
    double row = 0;
    for (int64_t c = 0; c < nc; ++c) {
      row += lam[i * nc + c];
      if (c == y[i])
        DC_EXPECT(lam[i * nc + c] <= C + 1e-12);
      else
        DC_EXPECT(lam[i * nc + c] <= 1e-12);
    }
    DC_EXPECT(std::fabs(row) <= 1e-9);
  }
  double wnorm = 0;
  for (int64_t c = 0; c < nc; ++c) {
    double b = 0;
    for (int64_t i = 0; i < n; ++i) b += lam[i * nc + c];
    DC_EXPECT(std::fabs(b - bias[c]) <= 1e-9);
    for (int64_t t = 0; t < d; ++t) {
      double w = 0;
      for (int64_t i = 0; i < n; ++i) w += lam[i * nc + c] * X[i * d + t];
      DC_EXPECT(std::fabs(w - coef[c * d + t]) <= 1e-9 * (1 + std::fabs(w)));
      wnorm += w * w;
    }
    wnorm += b * b;
  }
  // Primal objective recomputed here; the duality gap closes at convergence.
  double loss = 0, lam_y = 0;
  for (int64_t i = 0; i < n; ++i) {
    double best = 0;
    auto score = [&](int64_t c) {
      double s = bias[c];
      for (int64_t t = 0; t < d; ++t) s += coef[c * d + t] * X[i * d + t];
      return s;
    };
    for (int64_t c = 0; c < nc; ++c)
      best = std::max(best, (c != y[i] ? 1.0 : 0.0) + score(c) - score(y[i]));
    loss += best;
    lam_y += lam[i * nc + y[i]];
  }
  const double primal = 0.5 * wnorm + C * loss, dual = lam_y - 0.5 * wnorm;
  DC_EXPECT(std::fabs(primal - st.primal_objective) <= 1e-6 * (1 + primal));
  DC_EXPECT(std::fabs(dual - st.dual_objective) <= 1e-6 * (1 + primal));
  DC_EXPECT(primal - dual >= -1e-9 && primal - dual <= 1e-3 * primal);
  std::vector<int64_t> bad_y(y);
  bad_y[5] = nc;
  DC_EXPECT(dc_crammer_singer_fit(X.data(), n, d, bad_y.data(), nc, C, 1e-6, 100, 0, 1, 1,
                                  lam.data(), coef.data(), bias.data(),
                                  nullptr) == DC_ERR_INVALID_ARGUMENT);
  DC_EXPECT(std::strstr(dc_last_error(), "y[5]") != nullptr);
}

void test_pq_search() {
  const int64_t d = 8, m = 4, nbits = 3, ksub = 8, dsub = 2, n = 200, nq = 4, k = 6;
  const auto cent = randn(m * ksub * dsub, 5), q = randn(nq * d, 6);
  std::mt19937 gen(7);
  std::vector<uint8_t> codes(n * m);
  for (auto& c : codes) c = static_cast<uint8_t>(gen() % ksub);
  std::vector<float> dist(nq * k);
  std::vector<int64_t> idx(nq * k);
  DC_EXPECT(dc_pq_search(d, m, nbits, cent.data(), q.data(), nq, codes.data(), n, k, DC_METRIC_L2,
                         dist.data(), idx.data(), 1) == DC_OK);
  for (int64_t i = 0; i < nq; ++i) {
    std::vector<std::pair<double, int64_t>> ref;
    for (int64_t c = 0; c < n; ++c) {
      double s = 0;
      for (int64_t sub = 0; sub < m; ++sub)
        for (int64_t t = 0; t < dsub; ++t) {
          const double x =
              q[i * d + sub * dsub + t] - cent[(sub * ksub + codes[c * m + sub]) * dsub + t];
          s += x * x;
        }
      ref.push_back({s, c});
    }
    std::sort(ref.begin(), ref.end());
    for (int64_t j = 0; j < k; ++j) {
      DC_EXPECT(idx[i * k + j] == ref[j].second);
      DC_EXPECT(std::fabs(dist[i * k + j] - ref[j].first) <= 1e-4 * (1 + ref[j].first));
    }
  }
  codes[3] = ksub;  // outside the codebook
  DC_EXPECT(dc_pq_search(d, m, nbits, cent.data(), q.data(), nq, codes.data(), n, k, DC_METRIC_L2,
                         dist.data(), idx.data(), 1) == DC_ERR_INVALID_ARGUMENT);
  DC_EXPECT(dc_pq_search(d, 3, nbits, cent.data(), q.data(), nq, codes.data(), n, k, DC_METRIC_L2,
                         dist.data(), idx.data(), 1) == DC_ERR_INVALID_ARGUMENT);
}

void test_treeshap() {
  // f(x) = 1 if x0 < 0.5, else (2 if x1 < 0.5 else 3): nodes 0 root, 1 leaf, 2 split, 3, 4 leaves.
  const int32_t left[] = {1, -1, 3, -1, -1}, right[] = {2, -1, 4, -1, -1};
  const int32_t feature[] = {0, 0, 1, 0, 0};
  const float threshold[] = {0.5f, 0, 0.5f, 0, 0}, value[] = {0, 1, 0, 2, 3};
  const uint8_t default_left[] = {1, 0, 1, 0, 0};
  const int64_t roots[] = {0};
  dc_tree_ensemble model{left, right, feature, threshold, default_left, value, 5, roots, 1};
  auto f = [](float x0, float x1) { return x0 < 0.5f ? 1.0 : (x1 < 0.5f ? 2.0 : 3.0); };
  const float X[] = {0.9f, 0.9f, 0.1f, 0.9f, 0.9f, 0.1f};
  const float R[] = {0.1f, 0.1f, 0.9f, 0.1f};
  double phi[6], base[3], fx[3];
  DC_EXPECT(dc_treeshap(&model, X, 3, R, 2, 2, phi, base, fx, 1) == DC_OK);
  for (int i = 0; i < 3; ++i) {
    // Exact interventional Shapley values by enumerating the coalitions of 2 features.
    double p0 = 0, p1 = 0, b = 0;
    for (int r = 0; r < 2; ++r) {
      const float x0 = X[2 * i], x1 = X[2 * i + 1], r0 = R[2 * r], r1 = R[2 * r + 1];
      const double v_empty = f(r0, r1), v0 = f(x0, r1), v1 = f(r0, x1), v01 = f(x0, x1);
      p0 += 0.5 * (v0 - v_empty) + 0.5 * (v01 - v1);
      p1 += 0.5 * (v1 - v_empty) + 0.5 * (v01 - v0);
      b += v_empty;
    }
    DC_EXPECT(std::fabs(phi[2 * i] - p0 / 2) <= 1e-12);
    DC_EXPECT(std::fabs(phi[2 * i + 1] - p1 / 2) <= 1e-12);
    DC_EXPECT(std::fabs(base[i] - b / 2) <= 1e-12);
    DC_EXPECT(fx[i] == f(X[2 * i], X[2 * i + 1]));
  }
  const int32_t bad_left[] = {0, -1, 3, -1, -1};  // a cycle at the root
  dc_tree_ensemble bad = model;
  bad.left = bad_left;
  DC_EXPECT(dc_treeshap(&bad, X, 3, R, 2, 2, phi, base, fx, 1) == DC_ERR_INVALID_ARGUMENT);
  DC_EXPECT(dc_treeshap(&model, X, 3, R, 2, 1, phi, base, fx, 1) == DC_ERR_INVALID_ARGUMENT);
}

}  // namespace

int main() {
  int major = 0, minor = 0, patch = 0;
  DC_EXPECT(dc_version(&major, &minor, &patch) == DC_OK && major == 0 && minor == 1);
  DC_EXPECT(dc_set_num_threads(-1) == DC_ERR_INVALID_ARGUMENT);
  DC_EXPECT(dc_set_num_threads(2) == DC_OK && dc_get_num_threads() == 2);
  DC_EXPECT(dc_set_num_threads(0) == DC_OK);
  test_gram_topk();
  test_crammer_singer();
  test_pq_search();
  test_treeshap();
  return dctest::finish("c_api_kernels");
}
