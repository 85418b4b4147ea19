// C++ checks of the 4-bit PQ fast scan: pack/unpack round trip, quantized tables within
// their documented ranges, search equal to a brute force over the integer sums of the
// quantized tables (ties to the lower index) on both the AVX2 and the scalar path,
// argument errors.
#include <algorithm>
#include <cmath>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "check.hpp"
#include "datacredit/pq_fastscan.hpp"

using namespace datacredit;

namespace {

// coarse: tables with few distinct values, so that many codes tie on their score.
void check_search(int64_t n, int64_t m, int64_t nq, int64_t k, PQMetric metric, int threads,
                  uint64_t seed, bool coarse = false) {
  std::mt19937 gen(static_cast<unsigned>(seed));
  std::uniform_int_distribution<int> code(0, 15);
  std::normal_distribution<float> normal;
  // Few distinct codes (duplicates force ties).
  std::vector<uint8_t> codes(static_cast<size_t>(n * m));
  const int64_t distinct = std::max<int64_t>(1, n / 7);
  for (int64_t i = 0; i < distinct * m; ++i) codes[static_cast<size_t>(i)] = code(gen);
  for (int64_t i = distinct; i < n; ++i)
    std::copy_n(codes.begin() + (i % distinct) * m, m, codes.begin() + i * m);
  std::vector<float> tables(static_cast<size_t>(nq * m * 16));
  for (auto& v : tables) v = coarse ? std::round(normal(gen)) : normal(gen);

  std::vector<uint8_t> packed(static_cast<size_t>(fastscan_packed_bytes(n, m)));
  pq_fastscan_pack(codes.data(), n, m, packed.data(), threads);
  std::vector<uint8_t> back(static_cast<size_t>(n * m));
  pq_fastscan_unpack(packed.data(), n, m, back.data());
  DC_EXPECT(back == codes);

  std::vector<uint8_t> lut(static_cast<size_t>(nq * m * 16));
  std::vector<float> scale(static_cast<size_t>(nq)), bias(static_cast<size_t>(nq));
  pq_fastscan_quantize_tables(tables.data(), nq, m, metric, lut.data(), scale.data(), bias.data(),
                              threads);

  std::vector<float> d_simd(static_cast<size_t>(nq * k)), d_scalar(d_simd.size());
  std::vector<int64_t> i_simd(static_cast<size_t>(nq * k)), i_scalar(i_simd.size());
  pq_fastscan_search(tables.data(), nq, m, packed.data(), n, k, metric, d_simd.data(),
                     i_simd.data(), threads, false);
  pq_fastscan_search(tables.data(), nq, m, packed.data(), n, k, metric, d_scalar.data(),
                     i_scalar.data(), threads, true);
  DC_EXPECT(i_simd == i_scalar);
  DC_EXPECT(d_simd == d_scalar);

  for (int64_t q = 0; q < nq; ++q) {
    const uint8_t* l = lut.data() + q * m * 16;
    int64_t max_sum = 0;
    for (int64_t s = 0; s < m; ++s) max_sum += *std::max_element(l + s * 16, l + s * 16 + 16);
    DC_EXPECT(max_sum <= 65535);
    std::vector<int64_t> sum(static_cast<size_t>(n), 0);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t s = 0; s < m; ++s) sum[static_cast<size_t>(i)] += l[s * 16 + codes[i * m + s]];
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), int64_t{0});
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return sum[static_cast<size_t>(a)] < sum[static_cast<size_t>(b)];
    });
    for (int64_t j = 0; j < k; ++j) {
      const int64_t want = order[static_cast<size_t>(j)];
      DC_EXPECT(i_simd[static_cast<size_t>(q * k + j)] == want);
      float dist =
          static_cast<float>(sum[static_cast<size_t>(want)]) / scale[static_cast<size_t>(q)] +
          bias[static_cast<size_t>(q)];
      if (metric == PQMetric::kInnerProduct) dist = -dist;
      DC_EXPECT(d_simd[static_cast<size_t>(q * k + j)] == dist);
    }
  }

  // Re-ranking every code by its float ADC distance: a brute-force float scan.
  std::vector<int64_t> cand(static_cast<size_t>(nq * n));
  for (int64_t q = 0; q < nq; ++q)
    std::iota(cand.begin() + q * n, cand.begin() + (q + 1) * n, int64_t{0});
  std::vector<float> d_rr(static_cast<size_t>(nq * k));
  std::vector<int64_t> i_rr(static_cast<size_t>(nq * k));
  pq_fastscan_rerank(tables.data(), nq, m, packed.data(), n, cand.data(), n, k, metric, d_rr.data(),
                     i_rr.data(), threads);
  const float sign = metric == PQMetric::kInnerProduct ? -1.0f : 1.0f;
  for (int64_t q = 0; q < nq; ++q) {
    std::vector<float> acc(static_cast<size_t>(n), 0.0f);
    for (int64_t i = 0; i < n; ++i)
      for (int64_t s = 0; s < m; ++s)
        acc[static_cast<size_t>(i)] +=
            tables[static_cast<size_t>((q * m + s) * 16 + codes[i * m + s])];
    std::vector<int64_t> order(static_cast<size_t>(n));
    std::iota(order.begin(), order.end(), int64_t{0});
    std::stable_sort(order.begin(), order.end(), [&](int64_t a, int64_t b) {
      return sign * acc[static_cast<size_t>(a)] < sign * acc[static_cast<size_t>(b)];
    });
    for (int64_t j = 0; j < k; ++j) {
      DC_EXPECT(i_rr[static_cast<size_t>(q * k + j)] == order[static_cast<size_t>(j)]);
      DC_EXPECT(d_rr[static_cast<size_t>(q * k + j)] ==
                acc[static_cast<size_t>(order[static_cast<size_t>(j)])]);
    }
  }
}

}  // namespace

int main() {
  check_search(1000, 16, 9, 40, PQMetric::kL2, 2, 1);
  check_search(333, 7, 6, 333, PQMetric::kInnerProduct, 2, 2);  // odd m, k = n, n % 32 != 0
  check_search(5000, 3, 1, 77, PQMetric::kL2, 2, 3);            // one query: split code range
  check_search(31, 1, 3, 5, PQMetric::kL2, 1, 4);
  check_search(2000, 64, 37, 50, PQMetric::kL2, 2, 5);  // query batches of 4 and a remainder
  check_search(3000, 6, 10, 60, PQMetric::kL2, 2, 6, true);
  check_search(777, 9, 7, 100, PQMetric::kInnerProduct, 1, 7, true);

  std::vector<uint8_t> codes(8, 3), packed(static_cast<size_t>(fastscan_packed_bytes(2, 4)));
  codes[5] = 16;
  DC_EXPECT(dctest::throws_invalid([&] { pq_fastscan_pack(codes.data(), 2, 4, packed.data(), 1); },
                                   "outside [0, 16)"));
  codes[5] = 1;
  pq_fastscan_pack(codes.data(), 2, 4, packed.data(), 1);
  std::vector<float> tables(4 * 16, 1.0f);
  std::vector<float> d(3);
  std::vector<int64_t> idx(3);
  DC_EXPECT(dctest::throws_invalid(
      [&] {
        pq_fastscan_search(tables.data(), 1, 4, packed.data(), 2, 3, PQMetric::kL2, d.data(),
                           idx.data(), 1);
      },
      "k = 3"));
  DC_EXPECT(dctest::throws_invalid(
      [&] {
        pq_fastscan_search(tables.data(), 1, 20000, packed.data(), 2, 1, PQMetric::kL2, d.data(),
                           idx.data(), 1);
      },
      "m must be in [1, 16384]"));
  tables[7] = std::numeric_limits<float>::quiet_NaN();
  DC_EXPECT(dctest::throws_invalid(
      [&] {
        pq_fastscan_search(tables.data(), 1, 4, packed.data(), 2, 1, PQMetric::kL2, d.data(),
                           idx.data(), 1);
      },
      "NaN"));
  return dctest::finish("test_pq_fastscan");
}
