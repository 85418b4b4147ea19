#include "datacredit/pq_fastscan.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "datacredit/common.hpp"
#include "datacredit/topk.hpp"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define DATACREDIT_FASTSCAN_X86 1
#include <immintrin.h>
#endif

namespace datacredit {

namespace {

constexpr int64_t kBlock = 32;  // vectors per packed block
constexpr int64_t kKsub = 16;   // 4-bit codes
constexpr int64_t kGroup = 32;  // queries sharing each chunk of codes while it is in cache
constexpr int kBatch = 4;       // queries per pass over a block (accumulators in registers)
constexpr int64_t kChunkBytes = 192 * 1024;  // packed bytes per chunk (stays in L2)
constexpr int32_t kNoBound = 65536;          // strict bound while a heap is not full
constexpr int64_t kMaxM = 16384;             // keeps (65535 - m) / sum of ranges useful
constexpr int64_t kIvfGroup = 256;           // IVF: queries per task (batched per shared list)

void check_m(int64_t m, const char* where) {
  check(m > 0 && m <= kMaxM, where,
        "m must be in [1, " + std::to_string(kMaxM) + "] for the fast scan, got " +
            std::to_string(m));
}

// Strict upper bound on the integer score of a candidate that may still enter `h`, or
// kNoBound while it is not full.  Flat scan (tie = 0): the heap's worst kept score (every
// code scanned later has a higher index, so a tie cannot enter).  IVF scan (tie = 1): one
// more, because lists are not visited in index order: a tie may enter, and TopKHeap::push
// decides by the index.
inline int32_t score_bound(const TopKHeap& h, int32_t tie) {
  const float t = h.threshold();
  return t == -std::numeric_limits<float>::infinity() ? kNoBound : static_cast<int32_t>(-t) + tie;
}

// One query's quantized table: lut (m_pad x 16, zero rows beyond m), scale and bias.
void quantize_one(const float* t, int64_t m, int64_t m_pad, bool negate, uint8_t* lut,
                  float* scale_out, float* bias_out) {
  double r_max = 0.0, r_sum = 0.0, b_sum = 0.0;
  std::vector<float> bias(static_cast<size_t>(m));
  for (int64_t s = 0; s < m; ++s) {
    const float* row = t + s * kKsub;
    float lo = negate ? -row[0] : row[0], hi = lo;
    for (int64_t j = 1; j < kKsub; ++j) {
      const float v = negate ? -row[j] : row[j];
      lo = std::min(lo, v);
      hi = std::max(hi, v);
    }
    bias[static_cast<size_t>(s)] = lo;
    const double r = static_cast<double>(hi) - static_cast<double>(lo);  // no overflow
    r_max = std::max(r_max, r);
    r_sum += r;
    b_sum += lo;
  }
  // Every entry <= 255 and every sum of m entries (each rounded up by at most 1/2)
  // <= (65535 - m) + m / 2 < 65536; capped so that tiny ranges cannot overflow floats.
  double sc = 1.0;
  if (r_max > 0.0) {
    sc = std::min(255.0 / r_max, (65535.0 - static_cast<double>(m)) / r_sum);
    sc = std::min(sc, 1e30);
  }
  const float scale = static_cast<float>(sc);
  for (int64_t s = 0; s < m; ++s) {
    const float* row = t + s * kKsub;
    const float lo = bias[static_cast<size_t>(s)];
    for (int64_t j = 0; j < kKsub; ++j) {
      const float v = negate ? -row[j] : row[j];
      const float q = std::nearbyint((v - lo) * scale);
      lut[s * kKsub + j] = static_cast<uint8_t>(std::min(255.0f, std::max(0.0f, q)));
    }
  }
  std::fill(lut + m * kKsub, lut + m_pad * kKsub, uint8_t{0});
  *scale_out = scale;
  *bias_out = static_cast<float>(b_sum);
}

// The quantized tables of every query: luts (nq x m_pad x 16), scale and bias (nq).
struct QuantizedTables {
  std::vector<uint8_t> luts;
  std::vector<float> scale, bias;
};

QuantizedTables quantize_all(const float* tables, int64_t nq, int64_t m, bool negate, int threads) {
  const int64_t m_pad = fastscan_m_pad(m);
  QuantizedTables qt;
  qt.luts.resize(static_cast<size_t>(nq * m_pad * kKsub));
  qt.scale.resize(static_cast<size_t>(nq));
  qt.bias.resize(static_cast<size_t>(nq));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t q = 0; q < nq; ++q)
    quantize_one(tables + q * m * kKsub, m, m_pad, negate, qt.luts.data() + q * m_pad * kKsub,
                 qt.scale.data() + q, qt.bias.data() + q);
  return qt;
}

inline float dequantize(float score, float scale, float bias, bool negate) {
  const float d = score / scale + bias;
  return negate ? -d : d;
}

// Scalar scan of blocks [blk0, blk1) for nb queries (luts[q]: m_pad x 16 table of query q).
// Positions >= n are padding.  The code at position p is reported as ids[p] (p when ids is
// null); tie: see score_bound.
void scan_scalar(const uint8_t* packed, int64_t npairs, int64_t blk0, int64_t blk1, int64_t n,
                 const uint8_t* const* luts, int nb, TopKHeap* heaps, const int64_t* ids,
                 int32_t tie) {
  uint32_t sums[kBlock];
  for (int64_t blk = blk0; blk < blk1; ++blk) {
    const uint8_t* codes = packed + blk * npairs * kBlock;
    const int64_t base = blk * kBlock;
    const int64_t valid = std::min(kBlock, n - base);
    for (int q = 0; q < nb; ++q) {
      const uint8_t* lut = luts[q];
      std::fill(sums, sums + kBlock, 0u);
      for (int64_t p = 0; p < npairs; ++p) {
        const uint8_t* row = codes + p * kBlock;
        const uint8_t* l0 = lut + 2 * p * kKsub;
        const uint8_t* l1 = l0 + kKsub;
        for (int64_t j = 0; j < kBlock; ++j) sums[j] += l0[row[j] & 15] + l1[row[j] >> 4];
      }
      TopKHeap& h = heaps[q];
      const int32_t bound = score_bound(h, tie);
      for (int64_t j = 0; j < valid; ++j)
        if (static_cast<int32_t>(sums[j]) < bound)
          h.push(-static_cast<float>(sums[j]), ids ? ids[base + j] : base + j);
    }
  }
}

#ifdef DATACREDIT_FASTSCAN_X86

// AVX2 scan of blocks [blk0, blk1) for Q queries.  Per row of 32 code bytes: the low and
// high nibbles index the 16-entry tables of sub-spaces 2p and 2p+1 (broadcast to both
// 128-bit lanes) through vpshufb; the byte results are accumulated in uint16 lanes as
//   ae += r   (lane i: byte 2i + 256 * byte 2i+1, modulo 2^16)
//   ao += r >> 8   (lane i: byte 2i+1)
// so that vector 2i scores ae - (ao << 8) and vector 2i+1 scores ao (exact modulo 2^16,
// and every score is < 2^16).  Candidates are found with one unsigned compare per half
// against the query's bound and a movemask; only they reach the heap.
template <int Q>
__attribute__((target("avx2"))) void scan_avx2(const uint8_t* packed, int64_t npairs, int64_t blk0,
                                               int64_t blk1, int64_t n, const uint8_t* const* luts,
                                               TopKHeap* heaps, const int64_t* ids, int32_t tie) {
  const uint8_t* lq[Q];
  for (int q = 0; q < Q; ++q) lq[q] = luts[q];
  alignas(32) uint16_t half[Q][2][16];
  int32_t bound[Q];
  for (int q = 0; q < Q; ++q) bound[q] = score_bound(heaps[q], tie);
  for (int64_t blk = blk0; blk < blk1; ++blk) {
    const uint8_t* codes = packed + blk * npairs * kBlock;
    {
      const __m256i low4 = _mm256_set1_epi8(0x0f);
      __m256i ae[Q], ao[Q];
#pragma GCC unroll 8
      for (int q = 0; q < Q; ++q) {
        ae[q] = _mm256_setzero_si256();
        ao[q] = _mm256_setzero_si256();
      }
      for (int64_t p = 0, off = 0; p < npairs; ++p, codes += kBlock, off += 2 * kKsub) {
        const __m256i c = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes));
        const __m256i lo = _mm256_and_si256(c, low4);
        const __m256i hi = _mm256_and_si256(_mm256_srli_epi16(c, 4), low4);
#pragma GCC unroll 8
        for (int q = 0; q < Q; ++q) {
          const uint8_t* l = lq[q] + off;
          const __m256i t0 =
              _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(l)));
          const __m256i t1 = _mm256_broadcastsi128_si256(
              _mm_loadu_si128(reinterpret_cast<const __m128i*>(l + kKsub)));
          const __m256i r0 = _mm256_shuffle_epi8(t0, lo);
          const __m256i r1 = _mm256_shuffle_epi8(t1, hi);
          ae[q] = _mm256_add_epi16(ae[q], _mm256_add_epi16(r0, r1));
          ao[q] = _mm256_add_epi16(
              ao[q], _mm256_add_epi16(_mm256_srli_epi16(r0, 8), _mm256_srli_epi16(r1, 8)));
        }
      }
#pragma GCC unroll 8
      for (int q = 0; q < Q; ++q) {
        _mm256_store_si256(reinterpret_cast<__m256i*>(half[q][0]),
                           _mm256_sub_epi16(ae[q], _mm256_slli_epi16(ao[q], 8)));
        _mm256_store_si256(reinterpret_cast<__m256i*>(half[q][1]), ao[q]);
      }
    }
    const int64_t base = blk * kBlock;
    const uint32_t valid = n - base >= kBlock ? 0xffffffffu : ((uint32_t{1} << (n - base)) - 1u);
    for (int q = 0; q < Q; ++q) {
      if (bound[q] == 0) continue;  // nothing can beat a full heap of zero scores
      const __m256i even = _mm256_load_si256(reinterpret_cast<const __m256i*>(half[q][0]));
      const __m256i odd = _mm256_load_si256(reinterpret_cast<const __m256i*>(half[q][1]));
      const __m256i lim = _mm256_set1_epi16(static_cast<int16_t>(bound[q] - 1));
      const uint32_t me = static_cast<uint32_t>(
          _mm256_movemask_epi8(_mm256_cmpeq_epi16(_mm256_min_epu16(even, lim), even)));
      const uint32_t mo = static_cast<uint32_t>(
          _mm256_movemask_epi8(_mm256_cmpeq_epi16(_mm256_min_epu16(odd, lim), odd)));
      // Bit j of `bits` <=> vector j of the block (lane i holds vectors 2i and 2i+1).
      uint32_t bits = ((me & 0x55555555u) | (mo & 0xAAAAAAAAu)) & valid;
      if (bits == 0) continue;
      TopKHeap& h = heaps[q];
      while (bits) {
        const int j = __builtin_ctz(bits);
        bits &= bits - 1;
        h.push(-static_cast<float>(half[q][j & 1][j >> 1]), ids ? ids[base + j] : base + j);
      }
      bound[q] = score_bound(h, tie);
    }
  }
}

bool cpu_has_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2");
  return ok;
}

void scan_avx2_any(const uint8_t* packed, int64_t npairs, int64_t blk0, int64_t blk1, int64_t n,
                   const uint8_t* const* luts, int nb, TopKHeap* heaps, const int64_t* ids,
                   int32_t tie) {
  switch (nb) {
    case 1:
      return scan_avx2<1>(packed, npairs, blk0, blk1, n, luts, heaps, ids, tie);
    case 2:
      return scan_avx2<2>(packed, npairs, blk0, blk1, n, luts, heaps, ids, tie);
    case 3:
      return scan_avx2<3>(packed, npairs, blk0, blk1, n, luts, heaps, ids, tie);
    default:
      return scan_avx2<4>(packed, npairs, blk0, blk1, n, luts, heaps, ids, tie);
  }
}
#endif

// Scans blocks [blk0, blk1) on the AVX2 path when `simd`, the scalar one otherwise.
void scan_any(bool simd, const uint8_t* packed, int64_t npairs, int64_t blk0, int64_t blk1,
              int64_t n, const uint8_t* const* luts, int nb, TopKHeap* heaps, const int64_t* ids,
              int32_t tie) {
#ifdef DATACREDIT_FASTSCAN_X86
  if (simd) return scan_avx2_any(packed, npairs, blk0, blk1, n, luts, nb, heaps, ids, tie);
#else
  (void)simd;
#endif
  scan_scalar(packed, npairs, blk0, blk1, n, luts, nb, heaps, ids, tie);
}

bool use_simd(bool force_scalar) {
#ifdef DATACREDIT_FASTSCAN_X86
  return !force_scalar && cpu_has_avx2();
#else
  (void)force_scalar;
  return false;
#endif
}

void check_codes_4bit(const uint8_t* codes, int64_t n, int64_t m, const char* where) {
  for (int64_t i = 0; i < n * m; ++i)
    if (codes[i] >= kKsub)
      fail(where, "codes[" + std::to_string(i / m) + ", " + std::to_string(i % m) +
                      "] = " + std::to_string(codes[i]) + " is outside [0, 16) (4-bit codes)");
}

// Packs n_blocks blocks; position p holds the codes of row(p), zero codes when row(p) < 0.
template <class Row>
void pack_blocks(const uint8_t* codes, int64_t m, int64_t n_blocks, Row row, uint8_t* packed,
                 int threads) {
  const int64_t npairs = fastscan_m_pad(m) / 2;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t b = 0; b < n_blocks; ++b) {
    uint8_t* out = packed + b * npairs * kBlock;
    for (int64_t p = 0; p < npairs; ++p)
      for (int64_t j = 0; j < kBlock; ++j) {
        const int64_t i = row(b * kBlock + j);
        uint8_t v = 0;
        if (i >= 0) {
          v = codes[i * m + 2 * p];
          if (2 * p + 1 < m) v = static_cast<uint8_t>(v | (codes[i * m + 2 * p + 1] << 4));
        }
        out[p * kBlock + j] = v;
      }
  }
}

}  // namespace

bool pq_fastscan_has_avx2() {
#ifdef DATACREDIT_FASTSCAN_X86
  return cpu_has_avx2();
#else
  return false;
#endif
}

void pq_fastscan_pack(const uint8_t* codes, int64_t n, int64_t m, uint8_t* packed, int n_threads) {
  const char* where = "pq_fastscan_pack";
  check(n > 0, where, "codes is empty");
  check_m(m, where);
  check_codes_4bit(codes, n, m, where);
  pack_blocks(
      codes, m, fastscan_n_pad(n) / kBlock, [n](int64_t p) { return p < n ? p : int64_t{-1}; },
      packed, resolve_threads(n_threads));
}

int64_t pq_fastscan_ivf_blocks(const int64_t* lists, int64_t n, int64_t nlist,
                               int64_t* list_blocks) {
  const char* where = "pq_fastscan_pack_ivf";
  check(n > 0, where, "codes is empty");
  check(nlist >= 1, where, "nlist must be >= 1");
  std::vector<int64_t> count(static_cast<size_t>(nlist), 0);
  for (int64_t i = 0; i < n; ++i) {
    if (lists[i] < 0 || lists[i] >= nlist)
      fail(where, "lists[" + std::to_string(i) + "] = " + std::to_string(lists[i]) +
                      " is outside [0, " + std::to_string(nlist) + ")");
    ++count[static_cast<size_t>(lists[i])];
  }
  list_blocks[0] = 0;
  for (int64_t l = 0; l < nlist; ++l)
    list_blocks[l + 1] = list_blocks[l] + fastscan_n_pad(count[static_cast<size_t>(l)]) / kBlock;
  return list_blocks[nlist];
}

void pq_fastscan_pack_ivf(const uint8_t* codes, int64_t n, int64_t m, const int64_t* lists,
                          int64_t nlist, const int64_t* list_blocks, uint8_t* packed, int64_t* ids,
                          int n_threads) {
  const char* where = "pq_fastscan_pack_ivf";
  check(n > 0, where, "codes is empty");
  check_m(m, where);
  check_codes_4bit(codes, n, m, where);
  std::vector<int64_t> expect(static_cast<size_t>(nlist + 1));
  pq_fastscan_ivf_blocks(lists, n, nlist, expect.data());
  check(std::equal(expect.begin(), expect.end(), list_blocks), where,
        "list_blocks does not match lists (use pq_fastscan_ivf_blocks)");
  const int64_t n_blocks = list_blocks[nlist];
  // Stable grouping by list: fill each list's positions in index order, pad with -1.
  std::fill(ids, ids + n_blocks * kBlock, int64_t{-1});
  std::vector<int64_t> next(static_cast<size_t>(nlist));
  for (int64_t l = 0; l < nlist; ++l) next[static_cast<size_t>(l)] = list_blocks[l] * kBlock;
  for (int64_t i = 0; i < n; ++i) ids[next[static_cast<size_t>(lists[i])]++] = i;
  pack_blocks(
      codes, m, n_blocks, [ids](int64_t p) { return ids[p]; }, packed, resolve_threads(n_threads));
}

void pq_fastscan_unpack(const uint8_t* packed, int64_t n, int64_t m, uint8_t* codes) {
  const int64_t npairs = fastscan_m_pad(m) / 2;
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* blk = packed + (i / kBlock) * npairs * kBlock;
    const int64_t j = i % kBlock;
    for (int64_t s = 0; s < m; ++s) {
      const uint8_t byte = blk[(s / 2) * kBlock + j];
      codes[i * m + s] = static_cast<uint8_t>(s % 2 == 0 ? byte & 15 : byte >> 4);
    }
  }
}

void pq_fastscan_quantize_tables(const float* tables, int64_t nq, int64_t m, PQMetric metric,
                                 uint8_t* lut, float* scale, float* bias, int n_threads) {
  const char* where = "pq_fastscan_quantize_tables";
  check_m(m, where);
  check(nq >= 0, where, "negative size");
  check(all_finite(tables, nq * m * kKsub), where, "tables contains NaN or inf");
  const bool negate = metric == PQMetric::kInnerProduct;
  const int threads = resolve_threads(n_threads);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t q = 0; q < nq; ++q)
    quantize_one(tables + q * m * kKsub, m, m, negate, lut + q * m * kKsub, scale + q, bias + q);
}

void pq_fastscan_search(const float* tables, int64_t nq, int64_t m, const uint8_t* packed,
                        int64_t n, int64_t k, PQMetric metric, float* distances, int64_t* indices,
                        int n_threads, bool force_scalar) {
  const char* where = "pq_fastscan_search";
  check_m(m, where);
  check(nq > 0, where, "queries is empty");
  check(n > 0, where, "codes is empty");
  check(k >= 1 && k <= n, where,
        "k = " + std::to_string(k) + " must be in [1, n_codes = " + std::to_string(n) + "]");
  check(all_finite(tables, nq * m * kKsub), where, "tables contains NaN or inf");
  const bool negate = metric == PQMetric::kInnerProduct;
  const int threads = resolve_threads(n_threads);
  const int64_t m_pad = fastscan_m_pad(m), npairs = m_pad / 2;
  const int64_t n_blocks = fastscan_n_pad(n) / kBlock;

  // Quantized tables of every query (m_pad x 16 bytes each).
  const QuantizedTables qt = quantize_all(tables, nq, m, negate, threads);

  const bool simd = use_simd(force_scalar);
  const int64_t chunk = std::max<int64_t>(1, kChunkBytes / (npairs * kBlock));  // blocks
  const int64_t n_groups = (nq + kGroup - 1) / kGroup;
  // With fewer query groups than threads, split the code range too and merge the heaps.
  // (at least kMinPartBlocks blocks per part).
  constexpr int64_t kMinPartBlocks = 64;
  const int64_t parts = std::max<int64_t>(
      1, std::min<int64_t>((threads + n_groups - 1) / n_groups, n_blocks / kMinPartBlocks));
  const int64_t part_len = (n_blocks + parts - 1) / parts;
  std::vector<float> heap_keys(static_cast<size_t>(nq * parts * k));
  std::vector<int64_t> heap_ids(static_cast<size_t>(nq * parts * k));
  std::vector<int64_t> heap_size(static_cast<size_t>(nq * parts), 0);

  ParallelErrors errors;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t task = 0; task < n_groups * parts; ++task)
    errors.run([&] {
      const int64_t g = task / parts, part = task % parts;
      const int64_t q0 = g * kGroup, q1 = std::min(nq, q0 + kGroup);
      const int64_t b0 = part * part_len, b1 = std::min(n_blocks, b0 + part_len);
      std::vector<TopKHeap> heaps;
      heaps.reserve(static_cast<size_t>(q1 - q0));
      for (int64_t q = q0; q < q1; ++q) {
        const size_t slot = static_cast<size_t>((q * parts + part) * k);
        heaps.emplace_back(heap_keys.data() + slot, heap_ids.data() + slot, k);
      }
      for (int64_t c0 = b0; c0 < b1; c0 += chunk) {
        const int64_t c1 = std::min(b1, c0 + chunk);
        for (int64_t qb = q0; qb < q1; qb += kBatch) {
          const int nb = static_cast<int>(std::min<int64_t>(kBatch, q1 - qb));
          const uint8_t* l[kBatch];
          for (int t = 0; t < nb; ++t) l[t] = qt.luts.data() + (qb + t) * m_pad * kKsub;
          scan_any(simd, packed, npairs, c0, c1, n, l, nb, heaps.data() + (qb - q0), nullptr, 0);
        }
      }
      for (int64_t q = q0; q < q1; ++q)
        heap_size[static_cast<size_t>(q * parts + part)] =
            heaps[static_cast<size_t>(q - q0)].size();
    });
  errors.rethrow();

  // Merge the parts of each query, write best-first, dequantize.
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t q = 0; q < nq; ++q)
    errors.run([&] {
      const size_t base = static_cast<size_t>(q * parts * k);
      float* d = distances + q * k;
      write_merged_sorted(heap_keys.data() + base, heap_ids.data() + base,
                          heap_size.data() + q * parts, parts, k, d, indices + q * k, -1.0f);
      for (int64_t j = 0; j < k; ++j)
        d[j] = dequantize(d[j], qt.scale[static_cast<size_t>(q)], qt.bias[static_cast<size_t>(q)],
                          negate);
    });
  errors.rethrow();
}

namespace {

// Re-ranking shared by the flat and IVF layouts: the code of index i lies at packed
// position positions[i] (i when positions is null); candidates -1 are skipped when
// allow_missing, and the slots beyond the valid candidates get +inf (-inf for ip) and -1.
void rerank_impl(const char* where, const float* tables, int64_t nq, int64_t m,
                 const uint8_t* packed, int64_t n_positions, const int64_t* positions, int64_t n,
                 const int64_t* cand, int64_t kc, int64_t k, PQMetric metric, float* distances,
                 int64_t* indices, int n_threads, bool allow_missing) {
  check_m(m, where);
  check(nq > 0, where, "queries is empty");
  check(n > 0, where, "codes is empty");
  check(kc >= 1 && kc <= n, where,
        "rerank = " + std::to_string(kc) + " must be in [1, n_codes = " + std::to_string(n) + "]");
  check(k >= 1 && k <= kc, where,
        "k = " + std::to_string(k) + " must be in [1, rerank = " + std::to_string(kc) + "]");
  check(all_finite(tables, nq * m * kKsub), where, "tables contains NaN or inf");
  for (int64_t i = 0; i < nq * kc; ++i) {
    if (allow_missing && cand[i] == -1) continue;
    if (cand[i] < 0 || cand[i] >= n)
      fail(where, "candidate index " + std::to_string(cand[i]) + " is outside [0, n_codes)");
    if (positions && (positions[cand[i]] < 0 || positions[cand[i]] >= n_positions))
      fail(where, "positions[" + std::to_string(cand[i]) +
                      "] = " + std::to_string(positions[cand[i]]) + " is outside the packed codes");
  }
  const bool negate = metric == PQMetric::kInnerProduct;
  const int64_t npairs = fastscan_m_pad(m) / 2;
  const int threads = resolve_threads(n_threads);
  ParallelErrors errors;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> keys;
    std::vector<int64_t> ids;
    errors.run([&] {
      keys.resize(static_cast<size_t>(k));
      ids.resize(static_cast<size_t>(k));
    });
#pragma omp for schedule(static)
    for (int64_t q = 0; q < nq; ++q)
      errors.run([&] {
        const float* t = tables + q * m * kKsub;
        TopKHeap h(keys.data(), ids.data(), k);
        for (int64_t c = 0; c < kc; ++c) {
          const int64_t i = cand[q * kc + c];
          if (i < 0) continue;
          const int64_t pos = positions ? positions[i] : i;
          const uint8_t* blk = packed + (pos / kBlock) * npairs * kBlock + pos % kBlock;
          float acc = 0.0f;
          for (int64_t s = 0; s < m; ++s) {
            const uint8_t byte = blk[(s / 2) * kBlock];
            acc += t[s * kKsub + (s % 2 == 0 ? byte & 15 : byte >> 4)];
          }
          h.push(negate ? acc : -acc, i);
        }
        const int64_t got = h.size();
        h.write_sorted(distances + q * k, indices + q * k, negate ? 1.0f : -1.0f);
        for (int64_t j = got; j < k; ++j) {
          distances[q * k + j] = negate ? -std::numeric_limits<float>::infinity()
                                        : std::numeric_limits<float>::infinity();
          indices[q * k + j] = -1;
        }
      });
  }
  errors.rethrow();
}

}  // namespace

void pq_fastscan_rerank(const float* tables, int64_t nq, int64_t m, const uint8_t* packed,
                        int64_t n, const int64_t* cand, int64_t kc, int64_t k, PQMetric metric,
                        float* distances, int64_t* indices, int n_threads) {
  rerank_impl("pq_fastscan_rerank", tables, nq, m, packed, fastscan_n_pad(n), nullptr, n, cand, kc,
              k, metric, distances, indices, n_threads, false);
}

void pq_fastscan_rerank_ivf(const float* tables, int64_t nq, int64_t m, const uint8_t* packed,
                            int64_t n_positions, const int64_t* positions, int64_t n,
                            const int64_t* cand, int64_t kc, int64_t k, PQMetric metric,
                            float* distances, int64_t* indices, int n_threads) {
  rerank_impl("pq_fastscan_rerank_ivf", tables, nq, m, packed, n_positions, positions, n, cand, kc,
              k, metric, distances, indices, n_threads, true);
}

void pq_fastscan_search_ivf(const float* tables, int64_t nq, int64_t m, const uint8_t* packed,
                            const int64_t* list_blocks, int64_t nlist, const int64_t* ids,
                            int64_t n, const int64_t* probes, int64_t nprobe, int64_t k,
                            PQMetric metric, float* distances, int64_t* indices, int n_threads,
                            bool force_scalar) {
  const char* where = "pq_fastscan_search_ivf";
  check_m(m, where);
  check_ivf_search(where, nq, n, nlist, nprobe, k);
  check(all_finite(tables, nq * m * kKsub), where, "tables contains NaN or inf");
  check(list_blocks[0] == 0, where, "list_blocks[0] must be 0");
  // The whole of list_blocks first (non-decreasing, so every entry <= list_blocks[nlist],
  // the number of blocks that packed and ids hold): only then are ids read.
  for (int64_t l = 0; l < nlist; ++l)
    if (list_blocks[l + 1] < list_blocks[l])
      fail(where, "list_blocks must be non-decreasing (list_blocks[" + std::to_string(l + 1) +
                      "] = " + std::to_string(list_blocks[l + 1]) + " < list_blocks[" +
                      std::to_string(l) + "] = " + std::to_string(list_blocks[l]) + ")");
  check(list_blocks[nlist] <= (std::numeric_limits<int64_t>::max() / kBlock), where,
        "list_blocks[nlist] is too large");
  // End (exclusive position) of the real codes of each list; checks the layout: ids in
  // [0, n) before it, -1 after it, less than one block of padding.
  std::vector<int64_t> list_end(static_cast<size_t>(nlist));
  for (int64_t l = 0; l < nlist; ++l) {
    const int64_t p0 = list_blocks[l] * kBlock, p1 = list_blocks[l + 1] * kBlock;
    int64_t end = p1;
    while (end > p0 && ids[end - 1] == -1) --end;
    if (p1 - end >= kBlock)
      fail(where, "list " + std::to_string(l) + " has a block of padding only (ids of -1)");
    for (int64_t p = p0; p < end; ++p)
      if (ids[p] < 0 || ids[p] >= n)
        fail(where, "ids[" + std::to_string(p) + "] = " + std::to_string(ids[p]) +
                        " is outside [0, n_codes) (or -1 outside the padding of a list)");
    list_end[static_cast<size_t>(l)] = end;
  }
  {
    std::vector<int64_t> seen(static_cast<size_t>(nlist), -1);  // query that last probed l
    for (int64_t q = 0; q < nq; ++q)
      for (int64_t pr = 0; pr < nprobe; ++pr) {
        const int64_t l = probes[q * nprobe + pr];
        if (l < 0 || l >= nlist)
          fail(where, "probes holds " + std::to_string(l) + ", outside [0, nlist)");
        if (seen[static_cast<size_t>(l)] == q)  // (message built only on failure)
          fail(where, "probes of query " + std::to_string(q) + " repeat list " + std::to_string(l));
        seen[static_cast<size_t>(l)] = q;
      }
  }
  const bool negate = metric == PQMetric::kInnerProduct;
  const int threads = resolve_threads(n_threads);
  const int64_t m_pad = fastscan_m_pad(m), npairs = m_pad / 2;
  const bool simd = use_simd(force_scalar);
  const float inf = std::numeric_limits<float>::infinity();

  const QuantizedTables qt = quantize_all(tables, nq, m, negate, threads);

  // Queries in groups (one task each).  Inside a group, the queries that probe the same
  // list are scanned together, kBatch per pass over its blocks (one load of the codes for up
  // to kBatch tables), in two phases: first every query's nearest list (rank 0 of its
  // probes), so that its heap holds good candidates and its bound rejects most codes early,
  // then the other probes.  Lists are visited in list order within a phase.
  const int64_t group =
      std::max<int64_t>(1, std::min<int64_t>(kIvfGroup, (nq + threads - 1) / threads));
  const int64_t n_groups = (nq + group - 1) / group;
  std::vector<float> heap_keys(static_cast<size_t>(nq * k));
  std::vector<int64_t> heap_ids(static_cast<size_t>(nq * k));
  ParallelErrors errors;
#pragma omp parallel num_threads(threads)
  {
    std::vector<int64_t> start, fill, by_list, heap_size;
    std::vector<TopKHeap> batch;
    errors.run([&] {
      start.resize(static_cast<size_t>(nlist + 1));
      fill.resize(static_cast<size_t>(nlist));
      by_list.resize(static_cast<size_t>(group * nprobe));
      heap_size.resize(static_cast<size_t>(group));
      batch.reserve(kBatch);
    });
#pragma omp for schedule(dynamic, 1)
    for (int64_t g = 0; g < n_groups; ++g)
      errors.run([&] {
        const int64_t q0 = g * group, q1 = std::min(nq, q0 + group);
        std::fill(heap_size.begin(), heap_size.end(), int64_t{0});
        for (int phase = 0; phase < 2; ++phase) {
          const int64_t r0 = phase == 0 ? 0 : 1, r1 = phase == 0 ? 1 : nprobe;
          // The group's queries of each list, in query order (counting sort of the probes).
          std::fill(start.begin(), start.end(), int64_t{0});
          for (int64_t q = q0; q < q1; ++q)
            for (int64_t pr = r0; pr < r1; ++pr)
              ++start[static_cast<size_t>(probes[q * nprobe + pr] + 1)];
          for (int64_t l = 0; l < nlist; ++l) {
            start[static_cast<size_t>(l + 1)] += start[static_cast<size_t>(l)];
            fill[static_cast<size_t>(l)] = start[static_cast<size_t>(l)];
          }
          for (int64_t q = q0; q < q1; ++q)
            for (int64_t pr = r0; pr < r1; ++pr)
              by_list[static_cast<size_t>(fill[static_cast<size_t>(probes[q * nprobe + pr])]++)] =
                  q;
          for (int64_t l = 0; l < nlist; ++l) {
            if (list_blocks[l + 1] == list_blocks[l]) continue;
            const int64_t a = start[static_cast<size_t>(l)], b = start[static_cast<size_t>(l + 1)];
            for (int64_t c = a; c < b; c += kBatch) {
              const int nb = static_cast<int>(std::min<int64_t>(kBatch, b - c));
              const uint8_t* batch_lut[kBatch];
              batch.clear();
              for (int t = 0; t < nb; ++t) {
                const int64_t q = by_list[static_cast<size_t>(c + t)];
                batch_lut[t] = qt.luts.data() + q * m_pad * kKsub;
                batch.emplace_back(heap_keys.data() + q * k, heap_ids.data() + q * k, k,
                                   heap_size[static_cast<size_t>(q - q0)]);
              }
              scan_any(simd, packed, npairs, list_blocks[l], list_blocks[l + 1],
                       list_end[static_cast<size_t>(l)], batch_lut, nb, batch.data(), ids, 1);
              for (int t = 0; t < nb; ++t)
                heap_size[static_cast<size_t>(by_list[static_cast<size_t>(c + t)] - q0)] =
                    batch[static_cast<size_t>(t)].size();
            }
          }
        }
        for (int64_t q = q0; q < q1; ++q) {
          const int64_t got = heap_size[static_cast<size_t>(q - q0)];
          float* d = distances + q * k;
          TopKHeap(heap_keys.data() + q * k, heap_ids.data() + q * k, k, got)
              .write_sorted(d, indices + q * k, -1.0f);
          for (int64_t j = 0; j < got; ++j)
            d[j] = dequantize(d[j], qt.scale[static_cast<size_t>(q)],
                              qt.bias[static_cast<size_t>(q)], negate);
          for (int64_t j = got; j < k; ++j) {
            d[j] = negate ? -inf : inf;
            indices[q * k + j] = -1;
          }
        }
      });
  }
  errors.rethrow();
}

}  // namespace datacredit
