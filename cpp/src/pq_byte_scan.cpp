// The 8-bit ADC scan through byte tables (AVX-512 VBMI), used by the flat PQ search when
// the processor has it and ksub = 256.
//
// A first pass bounds every code from below with tables quantized to bytes: per query,
// q_s[j] = floor((t_s[j] - min_s) / scale) with one scale for all sub-spaces, so that
// t_s[j] >= min_s + scale * q_s[j] and the exact ADC distance is at least
// sum_s min_s + scale * S with S = sum_s q_s[c_s] (uint16, saturating: a saturated S
// is still a lower bound).  A 256-entry byte table is four registers; two VBMI
// permutes and a blend look up 64 codes of one sub-space at once, with the codes of 64
// rows stored sub-space-major.  Only codes whose bound does not exceed the heap's worst
// distance are summed exactly in float, in sub-space order as the scalar scan (pq.cpp)
// does, so every returned distance and every tie is the scalar scan's: the bound only
// skips codes that cannot enter the heap (rounding of the float sums and of the
// quantization covered by a slack).
//
// Measured (300k x 256 clustered, m = 64, 300 queries, k = 50, one thread, shared 2-core
// machine): the scalar scan 1.2 s (about 45 look-ups per code after pruning, 4 G
// look-ups/s: the loads are the limit; AVX-512 gathers of 16 codes were no faster), this
// scan 0.44 s; docs/gmvaluator.md has the comparison with faiss.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <limits>
#include <vector>

#include "datacredit/common.hpp"
#include "pq_scan.hpp"

#if defined(__GNUC__) && defined(__x86_64__)
#define DATACREDIT_PQ_BYTES_X86 1
#include <immintrin.h>
// GCC 12 warns inside its own AVX-512 headers (the "undefined" upper halves of
// _mm512_extracti64x4_epi64 / _mm512_cvtepu8_epi16): a false positive.
#if !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif
#endif

namespace datacredit::pq_detail {

bool byte_scan_enabled(int64_t ksub) {
#ifdef DATACREDIT_PQ_BYTES_X86
  // DATACREDIT_PQ_SCAN=scalar forces the portable scan (tests compare the two).
  const char* env = std::getenv("DATACREDIT_PQ_SCAN");
  if (env != nullptr && std::strcmp(env, "scalar") == 0) return false;
  static const bool cpu = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                          __builtin_cpu_supports("avx512vbmi");
  return cpu && ksub == 256;
#else
  (void)ksub;
  return false;
#endif
}

std::vector<uint8_t> make_groups64(const uint8_t* codes, int64_t n, int64_t m, int threads) {
  const int64_t n_groups = (n + 63) / 64;
  // Padding rows of the last group hold code 0; the scan masks their lanes off.
  std::vector<uint8_t> g(static_cast<size_t>(n_groups * m * 64), 0);
  uint8_t* dst = g.data();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t gi = 0; gi < n_groups; ++gi) {
    const int64_t r1 = std::min<int64_t>(64, n - gi * 64);
    for (int64_t r = 0; r < r1; ++r) {
      const uint8_t* src = codes + (gi * 64 + r) * m;
      for (int64_t s = 0; s < m; ++s) dst[(gi * m + s) * 64 + r] = src[s];
    }
  }
  return g;
}

ByteTable make_byte_table(const float* table, int64_t m) {
  constexpr int64_t ksub = 256;
  ByteTable bt;
  bt.q.resize(static_cast<size_t>(m * ksub));
  std::vector<float> mins(static_cast<size_t>(m));
  double sum_min = 0.0, abs_total = 0.0, range = 0.0;
  for (int64_t s = 0; s < m; ++s) {
    const float* row = table + s * ksub;
    float lo = row[0], hi = row[0], amax = std::fabs(row[0]);
    for (int64_t j = 1; j < ksub; ++j) {
      lo = std::min(lo, row[j]);
      hi = std::max(hi, row[j]);
      amax = std::max(amax, std::fabs(row[j]));
    }
    mins[static_cast<size_t>(s)] = lo;
    sum_min += lo;
    abs_total += amax;
    range = std::max(range, static_cast<double>(hi) - static_cast<double>(lo));
  }
  bt.scale = range > 0.0 ? range / 255.0 : 1.0;
  for (int64_t s = 0; s < m; ++s) {
    const double lo = mins[static_cast<size_t>(s)];
    for (int64_t j = 0; j < ksub; ++j) {
      const double v = std::floor((static_cast<double>(table[s * ksub + j]) - lo) / bt.scale);
      bt.q[static_cast<size_t>(s * ksub + j)] = static_cast<uint8_t>(std::clamp(v, 0.0, 255.0));
    }
  }
  // Slack: the rounding of the sequential float sums (as prepare_bounds) plus a relative
  // 1e-9 per sub-space for the floor of a rounded quotient.
  bt.base = sum_min - (4.0 * static_cast<double>(m + 1) * 6.0e-8 * abs_total + 1e-30) -
            static_cast<double>(m) * bt.scale * 1e-9;
  return bt;
}

#ifdef DATACREDIT_PQ_BYTES_X86
namespace {

// The largest S whose bound base + scale * S may not exceed `bound` (one step generous),
// clamped to [-1, 65535]; -1: no code can enter.
inline int32_t s_limit(const ByteTable& bt, float bound) {
  if (!std::isfinite(bound)) return 65535;
  const double lim = std::floor((static_cast<double>(bound) - bt.base) / bt.scale) + 1.0;
  return static_cast<int32_t>(std::clamp(lim, -1.0, 65535.0));
}

inline float exact_sum(const float* table, const uint8_t* code, int64_t m) {
  float a = 0.0f;
  for (int64_t s = 0; s < m; ++s) a += table[s * 256 + code[s]];
  return a;
}

}  // namespace

__attribute__((target("avx512f,avx512bw,avx512vbmi"))) void scan_groups64(
    const float* table, const ByteTable& bt, int64_t m, const uint8_t* groups, const uint8_t* codes,
    int64_t b0, int64_t b1, TopKHeap& heap) {
  float bound = -heap.threshold();
  int32_t limit = s_limit(bt, bound);
  const uint8_t* qt = bt.q.data();
  for (int64_t g = b0 / 64; g * 64 < b1 && limit >= 0; ++g) {
    const uint8_t* cg = groups + g * m * 64;
    __m512i lo16 = _mm512_setzero_si512(), hi16 = _mm512_setzero_si512();
    for (int64_t s = 0; s < m; ++s) {
      const __m512i c = _mm512_loadu_si512(cg + s * 64);
      const uint8_t* ts = qt + s * 256;
      const __m512i t0 = _mm512_loadu_si512(ts), t1 = _mm512_loadu_si512(ts + 64);
      const __m512i t2 = _mm512_loadu_si512(ts + 128), t3 = _mm512_loadu_si512(ts + 192);
      const __m512i a = _mm512_permutex2var_epi8(t0, c, t1);  // entries 0..127 (7 bits)
      const __m512i b = _mm512_permutex2var_epi8(t2, c, t3);  // entries 128..255
      const __m512i v = _mm512_mask_blend_epi8(_mm512_movepi8_mask(c), a, b);
      lo16 = _mm512_adds_epu16(lo16, _mm512_cvtepu8_epi16(_mm512_castsi512_si256(v)));
      hi16 = _mm512_adds_epu16(hi16, _mm512_cvtepu8_epi16(_mm512_extracti64x4_epi64(v, 1)));
    }
    const int64_t lanes = std::min<int64_t>(64, b1 - g * 64);
    const __m512i lim = _mm512_set1_epi16(static_cast<int16_t>(static_cast<uint16_t>(limit)));
    uint64_t keep = static_cast<uint64_t>(_mm512_cmple_epu16_mask(lo16, lim)) |
                    (static_cast<uint64_t>(_mm512_cmple_epu16_mask(hi16, lim)) << 32);
    if (lanes < 64) keep &= (uint64_t{1} << lanes) - 1u;
    // Candidates in index order; each push may tighten the bound for the next.
    while (keep != 0) {
      const int r = __builtin_ctzll(keep);
      keep &= keep - 1u;
      const int64_t id = g * 64 + r;
      const float d = exact_sum(table, codes + id * m, m);
      if (d <= bound) {
        heap.push(-d, id);
        bound = -heap.threshold();
        limit = s_limit(bt, bound);
      }
    }
  }
}
#else
void scan_groups64(const float*, const ByteTable&, int64_t, const uint8_t*, const uint8_t*, int64_t,
                   int64_t, TopKHeap&) {
  fail("pq_search", "the byte-table scan is not built for this processor");
}
#endif

}  // namespace datacredit::pq_detail
