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

// IVF layout and search: codes in nlist random lists (duplicated codes spread over several
// lists, so ties cross lists), random distinct probes per query; the search must equal a
// brute force over the integer sums restricted to the probed lists (ties to the lower
// original index), with +inf / -1 padding; AVX2 == scalar; rerank over the candidates.
void check_ivf(int64_t n, int64_t m, int64_t nlist, int64_t nprobe, int64_t nq, int64_t k,
               PQMetric metric, uint64_t seed, int64_t distinct) {
  std::mt19937 gen(static_cast<unsigned>(seed));
  std::uniform_int_distribution<int> code(0, 15);
  std::uniform_int_distribution<int64_t> list(0, nlist - 1);
  std::normal_distribution<float> normal;
  std::vector<uint8_t> codes(static_cast<size_t>(n * m));  // `distinct` codes, repeated
  for (int64_t i = 0; i < distinct * m; ++i) codes[static_cast<size_t>(i)] = code(gen);
  for (int64_t i = distinct; i < n; ++i)
    std::copy_n(codes.begin() + (i % distinct) * m, m, codes.begin() + i * m);
  std::vector<int64_t> lists(static_cast<size_t>(n));
  for (auto& l : lists) l = list(gen) / 2 * 2;  // odd lists stay empty
  std::vector<float> tables(static_cast<size_t>(nq * m * 16));
  for (auto& v : tables) v = std::round(2.0f * normal(gen));  // coarse: many ties

  std::vector<int64_t> list_blocks(static_cast<size_t>(nlist + 1));
  const int64_t n_blocks = pq_fastscan_ivf_blocks(lists.data(), n, nlist, list_blocks.data());
  std::vector<uint8_t> packed(static_cast<size_t>(n_blocks * 32 * fastscan_m_pad(m) / 2));
  std::vector<int64_t> ids(static_cast<size_t>(n_blocks * 32));
  pq_fastscan_pack_ivf(codes.data(), n, m, lists.data(), nlist, list_blocks.data(), packed.data(),
                       ids.data(), 2);
  // Layout: list l holds its codes in index order, then -1 up to a whole block.
  for (int64_t l = 0; l < nlist; ++l) {
    int64_t p = list_blocks[static_cast<size_t>(l)] * 32;
    for (int64_t i = 0; i < n; ++i)
      if (lists[static_cast<size_t>(i)] == l) DC_EXPECT(ids[static_cast<size_t>(p++)] == i);
    DC_EXPECT(list_blocks[static_cast<size_t>(l + 1)] * 32 - p < 32);
    for (; p < list_blocks[static_cast<size_t>(l + 1)] * 32; ++p)
      DC_EXPECT(ids[static_cast<size_t>(p)] == -1);
  }
  std::vector<uint8_t> all(static_cast<size_t>(n_blocks * 32 * m));
  pq_fastscan_unpack(packed.data(), n_blocks * 32, m, all.data());
  for (int64_t p = 0; p < n_blocks * 32; ++p) {
    const int64_t i = ids[static_cast<size_t>(p)];
    for (int64_t s = 0; s < m; ++s)
      DC_EXPECT(all[static_cast<size_t>(p * m + s)] ==
                (i < 0 ? 0 : codes[static_cast<size_t>(i * m + s)]));
  }

  std::vector<int64_t> probes(static_cast<size_t>(nq * nprobe));
  for (int64_t q = 0; q < nq; ++q) {
    std::vector<int64_t> perm(static_cast<size_t>(nlist));
    std::iota(perm.begin(), perm.end(), int64_t{0});
    std::shuffle(perm.begin(), perm.end(), gen);
    std::copy_n(perm.begin(), nprobe, probes.begin() + q * nprobe);
  }
  std::vector<uint8_t> lut(static_cast<size_t>(nq * m * 16));
  std::vector<float> scale(static_cast<size_t>(nq)), bias(static_cast<size_t>(nq));
  pq_fastscan_quantize_tables(tables.data(), nq, m, metric, lut.data(), scale.data(), bias.data(),
                              1);
  std::vector<float> d_simd(static_cast<size_t>(nq * k)), d_scalar(d_simd.size());
  std::vector<int64_t> i_simd(static_cast<size_t>(nq * k)), i_scalar(i_simd.size());
  for (bool scalar : {false, true})
    pq_fastscan_search_ivf(tables.data(), nq, m, packed.data(), list_blocks.data(), nlist,
                           ids.data(), n, probes.data(), nprobe, k, metric,
                           (scalar ? d_scalar : d_simd).data(), (scalar ? i_scalar : i_simd).data(),
                           2, scalar);
  DC_EXPECT(i_simd == i_scalar);
  DC_EXPECT(d_simd == d_scalar);

  const float inf = std::numeric_limits<float>::infinity();
  const bool ip = metric == PQMetric::kInnerProduct;
  int64_t padded = 0;
  for (int64_t q = 0; q < nq; ++q) {
    const int64_t* pr = probes.data() + q * nprobe;
    std::vector<int64_t> sel;  // codes of the probed lists, index order
    for (int64_t i = 0; i < n; ++i)
      if (std::find(pr, pr + nprobe, lists[static_cast<size_t>(i)]) != pr + nprobe)
        sel.push_back(i);
    const uint8_t* l = lut.data() + q * m * 16;
    std::vector<int64_t> sum(static_cast<size_t>(n), 0);
    for (int64_t i : sel)
      for (int64_t s = 0; s < m; ++s) sum[static_cast<size_t>(i)] += l[s * 16 + codes[i * m + s]];
    std::stable_sort(sel.begin(), sel.end(), [&](int64_t a, int64_t b) {
      return sum[static_cast<size_t>(a)] < sum[static_cast<size_t>(b)];
    });
    for (int64_t j = 0; j < k; ++j) {
      const size_t at = static_cast<size_t>(q * k + j);
      if (j >= static_cast<int64_t>(sel.size())) {
        ++padded;
        DC_EXPECT(i_simd[at] == -1);
        DC_EXPECT(d_simd[at] == (ip ? -inf : inf));
        continue;
      }
      const int64_t want = sel[static_cast<size_t>(j)];
      DC_EXPECT(i_simd[at] == want);
      float dist =
          static_cast<float>(sum[static_cast<size_t>(want)]) / scale[static_cast<size_t>(q)] +
          bias[static_cast<size_t>(q)];
      DC_EXPECT(d_simd[at] == (ip ? -dist : dist));
    }
  }
  DC_EXPECT(padded > 0 || nprobe == nlist);  // some query probes fewer than k codes

  // Re-ranking every candidate (the -1 slots skipped) by its float ADC distance.
  std::vector<int64_t> positions(static_cast<size_t>(n));
  for (int64_t p = 0; p < n_blocks * 32; ++p)
    if (ids[static_cast<size_t>(p)] >= 0)
      positions[static_cast<size_t>(ids[static_cast<size_t>(p)])] = p;
  const int64_t kr = std::max<int64_t>(1, k / 2);
  std::vector<float> d_rr(static_cast<size_t>(nq * kr));
  std::vector<int64_t> i_rr(static_cast<size_t>(nq * kr));
  pq_fastscan_rerank_ivf(tables.data(), nq, m, packed.data(), n_blocks * 32, positions.data(), n,
                         i_simd.data(), k, kr, metric, d_rr.data(), i_rr.data(), 2);
  const float sign = ip ? -1.0f : 1.0f;
  for (int64_t q = 0; q < nq; ++q) {
    std::vector<int64_t> cand;
    for (int64_t j = 0; j < k; ++j)
      if (i_simd[static_cast<size_t>(q * k + j)] >= 0)
        cand.push_back(i_simd[static_cast<size_t>(q * k + j)]);
    std::vector<float> acc(static_cast<size_t>(n), 0.0f);
    for (int64_t i : cand)
      for (int64_t s = 0; s < m; ++s)
        acc[static_cast<size_t>(i)] +=
            tables[static_cast<size_t>((q * m + s) * 16 + codes[i * m + s])];
    std::sort(cand.begin(), cand.end(), [&](int64_t a, int64_t b) {
      const float ka = sign * acc[static_cast<size_t>(a)], kb = sign * acc[static_cast<size_t>(b)];
      return ka < kb || (ka == kb && a < b);
    });
    for (int64_t j = 0; j < kr; ++j) {
      const size_t at = static_cast<size_t>(q * kr + j);
      if (j >= static_cast<int64_t>(cand.size())) {
        DC_EXPECT(i_rr[at] == -1);
        DC_EXPECT(d_rr[at] == (ip ? -inf : inf));
        continue;
      }
      DC_EXPECT(i_rr[at] == cand[static_cast<size_t>(j)]);
      DC_EXPECT(d_rr[at] == acc[static_cast<size_t>(cand[static_cast<size_t>(j)])]);
    }
  }

  // Errors: nprobe > nlist, a repeated probe, a list outside [0, nlist).
  DC_EXPECT(dctest::throws_invalid(
      [&] {
        pq_fastscan_search_ivf(tables.data(), 1, m, packed.data(), list_blocks.data(), nlist,
                               ids.data(), n, probes.data(), nlist + 1, 1, metric, d_simd.data(),
                               i_simd.data(), 1);
      },
      "nprobe"));
  if (nprobe >= 2) {
    std::vector<int64_t> rep(probes.begin(), probes.begin() + nprobe);
    rep[1] = rep[0];
    DC_EXPECT(dctest::throws_invalid(
        [&] {
          pq_fastscan_search_ivf(tables.data(), 1, m, packed.data(), list_blocks.data(), nlist,
                                 ids.data(), n, rep.data(), nprobe, 1, metric, d_simd.data(),
                                 i_simd.data(), 1);
        },
        "repeat list"));
  }
  // An interior list_blocks entry beyond list_blocks[nlist] (the blocks ids and packed
  // hold) is refused before any id is read.
  if (nlist >= 3) {
    std::vector<int64_t> lb(list_blocks);
    lb[2] = int64_t{1} << 40;
    DC_EXPECT(dctest::throws_invalid(
        [&] {
          pq_fastscan_search_ivf(tables.data(), 1, m, packed.data(), lb.data(), nlist, ids.data(),
                                 n, probes.data(), nprobe, 1, metric, d_simd.data(), i_simd.data(),
                                 1);
        },
        "non-decreasing"));
  }
  lists[3] = nlist;
  DC_EXPECT(dctest::throws_invalid(
      [&] { pq_fastscan_ivf_blocks(lists.data(), n, nlist, list_blocks.data()); }, "lists[3]"));
}

}  // namespace

int main() {
  check_ivf(3000, 16, 20, 3, 30, 60, PQMetric::kL2, 11, 10);  // many ties across lists
  check_ivf(3000, 16, 20, 3, 9, 400, PQMetric::kInnerProduct, 14, 10);
  check_ivf(3000, 16, 20, 3, 9, 400, PQMetric::kL2, 15, 150);
  check_ivf(1001, 7, 9, 1, 5, 200, PQMetric::kInnerProduct, 12, 50);  // odd m
  check_ivf(500, 5, 4, 4, 3, 500, PQMetric::kL2, 13, 7);              // every list, k = n
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
