// Gram top-k against a brute-force double-precision reference, plus argument errors.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "check.hpp"
#include "datacredit/gram.hpp"

using datacredit::KeyWeights;
using datacredit::Metric;

namespace {

float normal_sample(std::mt19937& rng) {
  std::normal_distribution<float> normal;
  return normal(rng);
}

double score(const float* q, const float* key, int64_t dim, Metric m) {
  double dot = 0, qq = 0, kk = 0;
  for (int64_t p = 0; p < dim; ++p) {
    dot += double(q[p]) * key[p];
    qq += double(q[p]) * q[p];
    kk += double(key[p]) * key[p];
  }
  if (m == Metric::kCosine) return dot / std::sqrt(qq * kk);
  if (m == Metric::kSquaredL2) return qq + kk - 2 * dot;
  return dot;
}

void run_case(int64_t n, int64_t n_keys, int64_t dim, int64_t k, Metric m, bool largest,
              int threads, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::vector<float> q(n * dim), keys(n_keys * dim), w(n_keys);
  for (auto& v : q) v = normal(rng);
  for (auto& v : keys) v = normal(rng);
  for (auto& v : w) v = 0.5f + std::abs(normal(rng));
  KeyWeights weights{w.data(), 1, nullptr};
  std::vector<float> values(n * k);
  std::vector<int64_t> idx(n * k);
  datacredit::gram_topk(q.data(), n, keys.data(), n_keys, dim, k, weights, m, largest,
                        values.data(), idx.data(), threads);
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> s(n_keys);
    for (int64_t j = 0; j < n_keys; ++j) s[j] = w[j] * score(&q[i * dim], &keys[j * dim], dim, m);
    std::vector<int64_t> order(n_keys);
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](int64_t a, int64_t b) { return largest ? s[a] > s[b] : s[a] < s[b]; });
    for (int64_t r = 0; r < k; ++r) {
      // Compare by score value (random data: no ties beyond float rounding).
      DC_EXPECT(std::abs(values[i * k + r] - s[order[r]]) <= 1e-3 * (1 + std::abs(s[order[r]])));
      DC_EXPECT(std::abs(s[idx[i * k + r]] - s[order[r]]) <= 1e-3 * (1 + std::abs(s[order[r]])));
    }
  }
}

}  // namespace

int main() {
  std::mt19937 rng(42);
  for (Metric m : {Metric::kInnerProduct, Metric::kCosine, Metric::kSquaredL2})
    for (bool largest : {true, false})
      for (int threads : {1, 2, 3}) {
        run_case(1, 1300, 7, 5, m, largest, threads, rng);     // one query: key ranges split
        run_case(37, 600, 16, 1, m, largest, threads, rng);    // k = 1
        run_case(5, 40, 3, 40, m, largest, threads, rng);      // k = N, N < tile
        run_case(700, 1100, 9, 10, m, largest, threads, rng);  // several query blocks
      }

  std::vector<float> a(4 * 2, 1.0f), b(3 * 2, 1.0f), v(4), nan_b(3 * 2, 1.0f);
  std::vector<int64_t> ix(4);
  nan_b[3] = std::nanf("");
  auto call = [&](const float* keys, int64_t k, KeyWeights w = {}) {
    return [=, &a, &v, &ix] {
      datacredit::gram_topk(a.data(), 4, keys, 3, 2, k, w, Metric::kInnerProduct, true, v.data(),
                            ix.data());
    };
  };
  DC_EXPECT(dctest::throws_invalid(call(b.data(), 0), "k = 0"));
  DC_EXPECT(dctest::throws_invalid(call(b.data(), 4), "k = 4"));
  DC_EXPECT(dctest::throws_invalid(call(nan_b.data(), 1), "keys contains NaN"));
  std::vector<float> wm(3 * 2, 1.0f);
  std::vector<int64_t> classes = {0, 1, 2, 0};
  DC_EXPECT(dctest::throws_invalid(call(b.data(), 1, KeyWeights{wm.data(), 2, classes.data()}),
                                   "classes[2] = 2"));
  DC_EXPECT(dctest::throws_invalid([] { datacredit::parse_metric("dot"); }, "unknown metric"));
  DC_EXPECT(dctest::throws_invalid(
      [&] {
        datacredit::gram_topk(a.data(), 4, b.data(), 3, 2, 1, {}, Metric::kInnerProduct, true,
                              v.data(), ix.data(), 5000);
      },
      "n_threads = 5000"));

  // l2 on data with a large common offset (1000 + N(0, 1), d = 64): every value is the
  // float32 rounding of the exact distance, the order is the exact one, and a key equal to
  // the query is at distance 0.
  {
    const int64_t n = 7, N = 300, d = 64, k = 12;
    std::vector<float> q(n * d), keys(N * d);
    for (auto& x : q) x = 1000.0f + normal_sample(rng);
    for (auto& x : keys) x = 1000.0f + normal_sample(rng);
    std::copy(q.begin(), q.begin() + d, keys.begin() + 17 * d);  // key 17 == query 0
    for (int threads : {1, 2}) {
      std::vector<float> val(n * k);
      std::vector<int64_t> ids(n * k);
      datacredit::gram_topk(q.data(), n, keys.data(), N, d, k, {}, Metric::kSquaredL2, false,
                            val.data(), ids.data(), threads);
      for (int64_t i = 0; i < n; ++i) {
        std::vector<double> exact(N);
        for (int64_t j = 0; j < N; ++j) {
          double s = 0;
          for (int64_t p = 0; p < d; ++p) {
            const double t = double(q[i * d + p]) - keys[j * d + p];
            s += t * t;
          }
          exact[j] = s;
        }
        std::vector<int64_t> order(N);
        std::iota(order.begin(), order.end(), 0);
        std::stable_sort(order.begin(), order.end(),
                         [&](int64_t x, int64_t y) { return float(exact[x]) < float(exact[y]); });
        for (int64_t r = 0; r < k; ++r) {
          DC_EXPECT(ids[i * k + r] == order[r]);
          DC_EXPECT(val[i * k + r] == float(exact[order[r]]));
        }
      }
      DC_EXPECT(ids[0] == 17 && val[0] == 0.0f);
    }
  }
  return dctest::finish("test_gram");
}
