// C++ checks of the product quantizer: ADC search equals a brute-force scan over the
// same tables, encode/decode shapes, argument errors.
#include <algorithm>
#include <cstdlib>
#include <limits>
#include <numeric>
#include <random>
#include <string>
#include <vector>

#include "check.hpp"
#include "datacredit/pq.hpp"

using namespace datacredit;

int main() {
  std::mt19937 gen(11);
  std::normal_distribution<float> normal;
  PQShape s;
  s.dim = 24;
  s.m = 6;
  s.nbits = 6;
  const int64_t n = 2000, nq = 9, k = 25;
  std::vector<float> x(static_cast<size_t>(n * s.dim));
  for (auto& v : x) v = normal(gen);
  std::vector<float> cent(static_cast<size_t>(s.m * s.ksub() * s.dsub()));
  pq_train(s, x.data(), n, 4, 64, 3, cent.data(), 2);
  std::vector<uint8_t> codes(static_cast<size_t>(n * s.m));
  pq_encode(s, cent.data(), x.data(), n, codes.data(), 2);
  std::vector<float> tables(static_cast<size_t>(nq * s.m * s.ksub()));
  pq_compute_tables(s, cent.data(), x.data(), nq, PQMetric::kL2, tables.data(), 1);
  std::vector<float> dist(static_cast<size_t>(nq * k));
  std::vector<int64_t> idx(static_cast<size_t>(nq * k));
  pq_search(s, cent.data(), x.data(), nq, codes.data(), n, k, PQMetric::kL2, dist.data(),
            idx.data(), 2);
  for (int64_t q = 0; q < nq; ++q) {
    std::vector<float> acc(static_cast<size_t>(n), 0.0f);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t sub = 0; sub < s.m; ++sub)
        acc[static_cast<size_t>(i)] +=
            tables[static_cast<size_t>((q * s.m + sub) * s.ksub() + codes[i * s.m + sub])];
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), int64_t{0});
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return acc[static_cast<size_t>(a)] < acc[static_cast<size_t>(b)];
    });
    for (int64_t j = 0; j < k; ++j) {
      DC_EXPECT(idx[static_cast<size_t>(q * k + j)] == order[static_cast<size_t>(j)]);
      DC_EXPECT(dist[static_cast<size_t>(q * k + j)] ==
                acc[static_cast<size_t>(order[static_cast<size_t>(j)])]);
    }
  }
  std::vector<float> xhat(static_cast<size_t>(n * s.dim));
  pq_decode(s, cent.data(), codes.data(), n, xhat.data(), 1);
  DC_EXPECT(std::equal(xhat.begin(), xhat.begin() + s.dsub(), cent.begin() + codes[0] * s.dsub()));

  // A huge max_points_per_centroid means "every row": the sample size must not overflow
  // int64 (max * ksub), so it trains exactly as with max = n.
  {
    const int64_t huge = std::numeric_limits<int64_t>::max();
    std::vector<float> all_rows(cent.size()), huge_rows(cent.size());
    pq_train(s, x.data(), n, 2, n, 3, all_rows.data(), 1);
    pq_train(s, x.data(), n, 2, huge, 3, huge_rows.data(), 1);
    DC_EXPECT(all_rows == huge_rows);
    std::vector<float> km_all(static_cast<size_t>(7 * s.dim)), km_huge(km_all.size());
    kmeans(x.data(), n, s.dim, 7, 2, n, 5, km_all.data(), 1);
    kmeans(x.data(), n, s.dim, 7, 2, huge, 5, km_huge.data(), 1);
    DC_EXPECT(km_all == km_huge);
  }

  PQShape bad = s;
  bad.m = 5;
  DC_EXPECT(dctest::throws_invalid([&] { check_pq_shape(bad, "t"); }, "multiple of m"));
  DC_EXPECT(dctest::throws_invalid([&] { pq_train(s, x.data(), 10, 4, 64, 3, cent.data(), 1); },
                                   "at least"));
  DC_EXPECT(dctest::throws_invalid(
      [&] {
        pq_search(s, cent.data(), x.data(), nq, codes.data(), n, n + 1, PQMetric::kL2, dist.data(),
                  idx.data(), 1);
      },
      "k = "));
  DC_EXPECT(dctest::throws_invalid([&] { parse_pq_metric("cos"); }, "unknown metric"));
  // 8 bits (ksub = 256): the byte-table scan (where the processor has AVX-512 VBMI) and
  // the scalar scan (DATACREDIT_PQ_SCAN=scalar) both equal the brute force, including a
  // partial last group of 64 codes, ties from duplicated codes and one query split over
  // code ranges.
  {
    PQShape s8;
    s8.dim = 32;
    s8.m = 16;
    s8.nbits = 8;
    const int64_t n8 = 9000 + 37, nq8 = 3, k8 = 70;
    std::vector<float> x8(static_cast<size_t>(n8 * s8.dim));
    for (auto& v : x8) v = normal(gen);
    std::vector<float> c8(static_cast<size_t>(s8.m * s8.ksub() * s8.dsub()));
    pq_train(s8, x8.data(), n8, 2, 64, 5, c8.data(), 2);
    std::vector<uint8_t> codes8(static_cast<size_t>(n8 * s8.m));
    pq_encode(s8, c8.data(), x8.data(), n8, codes8.data(), 2);
    for (int64_t i = 0; i < 900; ++i)  // ties: rows 0..899 repeated at the end
      std::copy(codes8.begin() + i * s8.m, codes8.begin() + (i + 1) * s8.m,
                codes8.begin() + (n8 - 900 + i) * s8.m);
    std::vector<float> t8(static_cast<size_t>(nq8 * s8.m * s8.ksub()));
    pq_compute_tables(s8, c8.data(), x8.data(), nq8, PQMetric::kL2, t8.data(), 1);
    for (const char* mode : {"default", "scalar"}) {
      if (std::string(mode) == "scalar")
        setenv("DATACREDIT_PQ_SCAN", "scalar", 1);
      else
        unsetenv("DATACREDIT_PQ_SCAN");
      for (const int64_t nq_run : {int64_t{1}, nq8}) {
        std::vector<float> d8(static_cast<size_t>(nq_run * k8));
        std::vector<int64_t> i8(static_cast<size_t>(nq_run * k8));
        pq_search(s8, c8.data(), x8.data(), nq_run, codes8.data(), n8, k8, PQMetric::kL2, d8.data(),
                  i8.data(), 2);
        for (int64_t q = 0; q < nq_run; ++q) {
          std::vector<float> acc(static_cast<size_t>(n8), 0.0f);
          for (int64_t i = 0; i < n8; ++i)
            for (int64_t sub = 0; sub < s8.m; ++sub)
              acc[static_cast<size_t>(i)] +=
                  t8[static_cast<size_t>((q * s8.m + sub) * 256 + codes8[i * s8.m + sub])];
          std::vector<int64_t> order(static_cast<size_t>(n8));
          std::iota(order.begin(), order.end(), int64_t{0});
          std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
            return acc[static_cast<size_t>(a)] < acc[static_cast<size_t>(b)];
          });
          for (int64_t j = 0; j < k8; ++j) {
            DC_EXPECT(i8[static_cast<size_t>(q * k8 + j)] == order[static_cast<size_t>(j)]);
            DC_EXPECT(d8[static_cast<size_t>(q * k8 + j)] ==
                      acc[static_cast<size_t>(order[static_cast<size_t>(j)])]);
          }
        }
      }
    }
    unsetenv("DATACREDIT_PQ_SCAN");
  }
  return dctest::finish("test_pq");
}
