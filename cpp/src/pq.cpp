#include "datacredit/pq.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <numeric>
#include <random>
#include <vector>

#include "datacredit/blas.hpp"
#include "datacredit/common.hpp"
#include "datacredit/topk.hpp"
#include "pq_scan.hpp"

#ifdef DATACREDIT_HAVE_OPENMP
#include <omp.h>
#endif

namespace datacredit {

PQMetric parse_pq_metric(const std::string& name) {
  if (name == "l2") return PQMetric::kL2;
  if (name == "ip") return PQMetric::kInnerProduct;
  fail("pq", "unknown metric '" + name + "' (expected 'l2' or 'ip')");
}

void check_pq_shape(const PQShape& shape, const char* where) {
  check(shape.dim > 0, where, "d must be positive, got " + std::to_string(shape.dim));
  check(shape.m > 0, where, "m must be positive, got " + std::to_string(shape.m));
  check(
      shape.dim % shape.m == 0, where,
      "d = " + std::to_string(shape.dim) + " is not a multiple of m = " + std::to_string(shape.m));
  check(shape.nbits >= 1 && shape.nbits <= 8, where,
        "nbits must be in [1, 8], got " + std::to_string(shape.nbits));
}

namespace pq_detail {

constexpr int64_t kAssignChunk = 1024;  // rows per GEMM tile in k-means / encoding

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define DATACREDIT_X86_DISPATCH 1
#include <immintrin.h>

// AVX2/FMA nearest centroid for tiny sub-vectors: centroids transposed (dsub x ksub),
// ksub a multiple of 8 * U.  v_j = |c_j|^2 - 2 x.c_j over U independent 8-lane groups at
// a time (hides the FMA latency); strict < keeps the lower index per lane, then the
// lanes are merged with ties to the lower index.
template <int U>
__attribute__((target("avx2,fma"))) void assign_rows_avx2(const float* x, int64_t rows, int64_t ld,
                                                          const float* ct, const float* cnorm,
                                                          int64_t ksub, int64_t dsub,
                                                          int32_t* out) {
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  alignas(32) float bv[8 * U];
  alignas(32) int32_t bi[8 * U];
  __m256 xb[32];
  for (int64_t r = 0; r < rows; ++r) {
    const float* xr = x + r * ld;
    for (int64_t t = 0; t < dsub; ++t) xb[t] = _mm256_set1_ps(-2.0f * xr[t]);
    __m256 best[U];
    __m256i besti[U];
    for (int u = 0; u < U; ++u) {
      best[u] = _mm256_set1_ps(std::numeric_limits<float>::infinity());
      besti[u] = _mm256_setzero_si256();
    }
    for (int64_t j0 = 0; j0 < ksub; j0 += 8 * U) {
      __m256 v[U];
      for (int u = 0; u < U; ++u) v[u] = _mm256_loadu_ps(cnorm + j0 + 8 * u);
      for (int64_t t = 0; t < dsub; ++t)
        for (int u = 0; u < U; ++u)
          v[u] = _mm256_fmadd_ps(xb[t], _mm256_loadu_ps(ct + t * ksub + j0 + 8 * u), v[u]);
      for (int u = 0; u < U; ++u) {
        const __m256 lt = _mm256_cmp_ps(v[u], best[u], _CMP_LT_OQ);
        best[u] = _mm256_blendv_ps(best[u], v[u], lt);
        const __m256i idx =
            _mm256_add_epi32(_mm256_set1_epi32(static_cast<int32_t>(j0 + 8 * u)), lane);
        besti[u] = _mm256_castps_si256(
            _mm256_blendv_ps(_mm256_castsi256_ps(besti[u]), _mm256_castsi256_ps(idx), lt));
      }
    }
    for (int u = 0; u < U; ++u) {
      _mm256_store_ps(bv + 8 * u, best[u]);
      _mm256_store_si256(reinterpret_cast<__m256i*>(bi + 8 * u), besti[u]);
    }
    int c = 0;
    for (int l = 1; l < 8 * U; ++l)
      if (bv[l] < bv[c] || (bv[l] == bv[c] && bi[l] < bi[c])) c = l;
    out[r] = bi[c];
  }
}

bool have_avx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
#endif

// Nearest centroid of each of `rows` sub-vectors (row stride `ld`) among ksub centroids
// (ksub x dsub, contiguous; ct its transpose) with squared norms cnorm:
// argmin_j |c_j|^2 - 2 x.c_j, ties to the lower index.  dots: kAssignChunk * ksub floats.
void assign_rows(const float* x, int64_t rows, int64_t ld, const float* cent, const float* ct,
                 const float* cnorm, int64_t ksub, int64_t dsub, float* dots, int32_t* out) {
#ifdef DATACREDIT_X86_DISPATCH
  if (ksub % 8 == 0 && dsub <= 32 && have_avx2()) {
    if (ksub % 32 == 0)
      assign_rows_avx2<4>(x, rows, ld, ct, cnorm, ksub, dsub, out);
    else
      assign_rows_avx2<1>(x, rows, ld, ct, cnorm, ksub, dsub, out);
    return;
  }
#endif
  (void)ct;
  for (int64_t r0 = 0; r0 < rows; r0 += kAssignChunk) {
    const int64_t nr = std::min(kAssignChunk, rows - r0);
    sgemm_nt(nr, ksub, dsub, x + r0 * ld, ld, cent, dsub, dots, ksub);
    for (int64_t r = 0; r < nr; ++r) {
      const float* row = dots + r * ksub;
      int32_t best = 0;
      float best_v = cnorm[0] - 2.0f * row[0];
      for (int64_t j = 1; j < ksub; ++j) {
        const float v = cnorm[j] - 2.0f * row[j];
        if (v < best_v) {
          best_v = v;
          best = static_cast<int32_t>(j);
        }
      }
      out[r0 + r] = best;
    }
  }
}

void transpose_centroids(const float* cent, int64_t ksub, int64_t dsub, float* ct) {
  for (int64_t j = 0; j < ksub; ++j)
    for (int64_t t = 0; t < dsub; ++t) ct[t * ksub + j] = cent[j * dsub + t];
}

void centroid_norms(const float* cent, int64_t ksub, int64_t dsub, float* cnorm) {
  for (int64_t j = 0; j < ksub; ++j) {
    float s = 0.0f;
    for (int64_t t = 0; t < dsub; ++t) s += cent[j * dsub + t] * cent[j * dsub + t];
    cnorm[j] = s;
  }
}

// `count` distinct indices of [0, n) in random order (partial Fisher-Yates), seeded.
std::vector<int64_t> distinct_rows(int64_t n, int64_t count, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<int64_t> perm(static_cast<size_t>(n));
  std::iota(perm.begin(), perm.end(), int64_t{0});
  for (int64_t j = 0; j < count; ++j) {
    std::uniform_int_distribution<int64_t> pick(j, n - 1);
    std::swap(perm[static_cast<size_t>(j)], perm[static_cast<size_t>(pick(rng))]);
  }
  perm.resize(static_cast<size_t>(count));
  return perm;
}

// min(n, per_centroid * k) without overflowing int64 for a huge per_centroid (a caller's
// "use every row").
int64_t sample_size(int64_t n, int64_t per_centroid, int64_t k) {
  return per_centroid >= (n + k - 1) / k ? n : per_centroid * k;
}

// A seeded sample of `count` distinct rows of [0, n), sorted (stable memory order); all
// rows when count == n.
std::vector<int64_t> sample_rows(int64_t n, int64_t count, uint64_t seed) {
  if (count >= n) {
    std::vector<int64_t> all(static_cast<size_t>(n));
    std::iota(all.begin(), all.end(), int64_t{0});
    return all;
  }
  std::vector<int64_t> rows = distinct_rows(n, count, seed);
  std::sort(rows.begin(), rows.end());
  return rows;
}

// Lloyd's k-means on centred rows xs (n x dsub) into cent; see kmeans_subspace.
void kmeans_centred(const float* xs, int64_t n, int64_t dsub, int64_t ksub, int n_iter,
                    const std::vector<int64_t>& init_rows, float* cent) {
  for (int64_t j = 0; j < ksub; ++j) {
    const int64_t r = init_rows[static_cast<size_t>(j)];
    std::copy(xs + r * dsub, xs + (r + 1) * dsub, cent + j * dsub);
  }
  std::vector<float> cnorm(static_cast<size_t>(ksub));
  std::vector<float> ct(static_cast<size_t>(ksub * dsub));
  std::vector<float> dots(static_cast<size_t>(kAssignChunk * ksub));
  std::vector<int32_t> assign(static_cast<size_t>(n));
  std::vector<double> sums(static_cast<size_t>(ksub * dsub));
  std::vector<int64_t> counts(static_cast<size_t>(ksub));
  for (int it = 0; it < n_iter; ++it) {
    centroid_norms(cent, ksub, dsub, cnorm.data());
    transpose_centroids(cent, ksub, dsub, ct.data());
    assign_rows(xs, n, dsub, cent, ct.data(), cnorm.data(), ksub, dsub, dots.data(), assign.data());
    std::fill(sums.begin(), sums.end(), 0.0);
    std::fill(counts.begin(), counts.end(), int64_t{0});
    for (int64_t i = 0; i < n; ++i) {
      const int64_t j = assign[static_cast<size_t>(i)];
      ++counts[static_cast<size_t>(j)];
      for (int64_t t = 0; t < dsub; ++t)
        sums[static_cast<size_t>(j * dsub + t)] += xs[i * dsub + t];
    }
    for (int64_t j = 0; j < ksub; ++j) {
      const int64_t c = counts[static_cast<size_t>(j)];
      if (c == 0) continue;
      for (int64_t t = 0; t < dsub; ++t)
        cent[j * dsub + t] = static_cast<float>(sums[static_cast<size_t>(j * dsub + t)] / c);
    }
    // Empty clusters: split the currently largest cluster in two (deterministic).
    for (int64_t j = 0; j < ksub; ++j) {
      if (counts[static_cast<size_t>(j)] != 0) continue;
      int64_t big = 0;
      for (int64_t b = 1; b < ksub; ++b)
        if (counts[static_cast<size_t>(b)] > counts[static_cast<size_t>(big)]) big = b;
      constexpr float kEps = 1.0f / 1024.0f;
      for (int64_t t = 0; t < dsub; ++t) {
        const float v = cent[big * dsub + t];
        const float delta = (t % 2 == 0 ? kEps : -kEps) * (std::fabs(v) > 0 ? v : 1.0f);
        cent[j * dsub + t] = v + delta;
        cent[big * dsub + t] = v - delta;
      }
      counts[static_cast<size_t>(j)] = counts[static_cast<size_t>(big)] / 2;
      counts[static_cast<size_t>(big)] -= counts[static_cast<size_t>(j)];
    }
  }
}

// Lloyd's k-means on xs (n x dsub, contiguous; overwritten: centred) into cent (ksub x
// dsub), initialised from the rows init_rows (ksub distinct indices into xs).  The rows
// are centred on their mean first (k-means is translation invariant): the assignment's
// |c|^2 - 2 x.c would otherwise cancel away a large common offset of the data.
void kmeans_subspace(float* xs, int64_t n, int64_t dsub, int64_t ksub, int n_iter,
                     const std::vector<int64_t>& init_rows, float* cent) {
  const std::vector<float> mean = row_mean(xs, n, dsub);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t t = 0; t < dsub; ++t) xs[i * dsub + t] -= mean[static_cast<size_t>(t)];
  kmeans_centred(xs, n, dsub, ksub, n_iter, init_rows, cent);
  for (int64_t j = 0; j < ksub; ++j)
    for (int64_t t = 0; t < dsub; ++t) cent[j * dsub + t] += mean[static_cast<size_t>(t)];
}

// Plane layout used by the scan: sub-spaces are grouped into planes of kPlane columns,
// each plane stored (n_codes x width) contiguously, so a first pass over plane 0 reads
// a quarter of the bytes a row-major scan would.
constexpr int64_t kPlane = 8;

// Width of the first plane: about 3/4 of the sub-spaces (a multiple of kPlane): the lower
// bound rarely prunes before most of the distance is known, and the first pass is the
// fast, interleaved one (measured on m = 64: 32 -> 2.6 s, 40 -> 2.0 s, 48 -> 1.4 s,
// 64 -> 2.0 s for 40 queries x 1M codes).
int64_t first_plane_width(int64_t m) {
  const int64_t w = (m * 3 / 4) / kPlane * kPlane;
  return std::min(m, std::max(kPlane, w));
}

Planes make_planes(const uint8_t* codes, int64_t n, int64_t m, int threads) {
  Planes p;
  p.data.resize(static_cast<size_t>(n * m));
  int64_t off = 0;
  for (int64_t s = 0; s < m;) {
    const int64_t w = s == 0 ? first_plane_width(m) : std::min(kPlane, m - s);
    p.offset.push_back(off);
    p.width.push_back(w);
    p.first.push_back(s);
    off += n * w;
    s += w;
  }
  const int64_t np = static_cast<int64_t>(p.width.size());
  uint8_t* dst = p.data.data();
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < n; ++i) {
    const uint8_t* src = codes + i * m;
    for (int64_t q = 0; q < np; ++q) {
      const int64_t w = p.width[static_cast<size_t>(q)];
      std::copy(src + p.first[static_cast<size_t>(q)], src + p.first[static_cast<size_t>(q)] + w,
                dst + p.offset[static_cast<size_t>(q)] + i * w);
    }
  }
  return p;
}

template <int W>
inline float partial_fixed(const float* t, int64_t ksub, const uint8_t* c, float acc) {
  for (int s = 0; s < W; ++s) acc += t[s * ksub + c[s]];
  return acc;
}

inline float partial(const float* t, int64_t ksub, const uint8_t* c, int64_t w, float acc) {
  if (w == 8) return partial_fixed<8>(t, ksub, c, acc);
  if (w == 16) return partial_fixed<16>(t, ksub, c, acc);
  if (w == 32) return partial_fixed<32>(t, ksub, c, acc);
  for (int64_t s = 0; s < w; ++s) acc += t[s * ksub + c[s]];
  return acc;
}

void prepare_bounds(QueryState& st, const Planes& pl, int64_t m, int64_t ksub) {
  const size_t np = pl.width.size();
  std::vector<double> mins(static_cast<size_t>(m));
  double abs_total = 0.0;
  for (int64_t s = 0; s < m; ++s) {
    const float* row = st.table + s * ksub;
    float lo = row[0], amax = std::fabs(row[0]);
    for (int64_t j = 1; j < ksub; ++j) {
      lo = std::min(lo, row[j]);
      amax = std::max(amax, std::fabs(row[j]));
    }
    mins[static_cast<size_t>(s)] = lo;
    abs_total += amax;
  }
  // Slack covering the float rounding of two sequential sums of m terms (|err| <= m u sum|t|).
  const double slack = 4.0 * static_cast<double>(m + 1) * 6.0e-8 * abs_total + 1e-30;
  st.tail.assign(np + 1, 0.0f);
  double acc = 0.0;
  for (size_t p = np; p-- > 0;) {
    for (int64_t s = pl.first[p]; s < pl.first[p] + pl.width[p]; ++s)
      acc += mins[static_cast<size_t>(s)];
    st.tail[p] = static_cast<float>(acc - slack);
  }
  st.tail[np] = 0.0f;
}

inline float heap_bound(const TopKHeap& h) {
  // The largest kept distance (heap keys are negated distances); +inf until full.
  return -h.threshold();
}

// Partial sums of 4 codes over W sub-spaces of 256 centroids, interleaved so the four
// dependency chains overlap; code bytes are read 8 at a time.  Each code's sum is still
// accumulated in sub-space order, so it is bit-identical to the scalar loop.
template <int W>
inline void partial4_256(const float* t, const uint8_t* c, int64_t stride, float* acc) {
  static_assert(W % 8 == 0, "W must be a multiple of 8");
  float a0 = 0.0f, a1 = 0.0f, a2 = 0.0f, a3 = 0.0f;
  for (int s0 = 0; s0 < W; s0 += 8) {
    uint64_t w0, w1, w2, w3;
    std::memcpy(&w0, c + s0, 8);
    std::memcpy(&w1, c + stride + s0, 8);
    std::memcpy(&w2, c + 2 * stride + s0, 8);
    std::memcpy(&w3, c + 3 * stride + s0, 8);
    const float* ts = t + s0 * 256;
    for (int b = 0; b < 8; ++b) {
      const float* tb = ts + b * 256;
      a0 += tb[(w0 >> (8 * b)) & 0xff];
      a1 += tb[(w1 >> (8 * b)) & 0xff];
      a2 += tb[(w2 >> (8 * b)) & 0xff];
      a3 += tb[(w3 >> (8 * b)) & 0xff];
    }
  }
  acc[0] = a0;
  acc[1] = a1;
  acc[2] = a2;
  acc[3] = a3;
}

// Scans codes [b0, b1) for one query.  W0 > 0: first plane has W0 columns and ksub = 256
// (the common 8-bit case, fully unrolled); W0 = 0: generic.
template <int W0>
void scan_block(QueryState& st, const Planes& pl, int64_t ksub, int64_t b0, int64_t b1) {
  const size_t np = pl.width.size();
  const float* t0 = st.table;
  const int64_t w0 = W0 > 0 ? W0 : pl.width[0];
  const uint8_t* plane0 = pl.data.data() + pl.offset[0];
  const float tail1 = st.tail[1];
  float bound = heap_bound(st.heap);
  auto finish = [&](int64_t i, float a) {
    // Continue a surviving code through the remaining planes, abandoning it early.
    for (size_t p = 1; p < np; ++p) {
      const int64_t w = pl.width[p];
      a = partial(t0 + pl.first[p] * ksub, ksub, pl.data.data() + pl.offset[p] + i * w, w, a);
      if (a + st.tail[p + 1] > bound) return;
    }
    st.heap.push(-a, st.id_map ? st.id_map[i] : i);
    bound = heap_bound(st.heap);
  };
  int64_t i = b0;
  float a[4];
  for (; i + 4 <= b1; i += 4) {
    const uint8_t* c = plane0 + i * w0;
    if constexpr (W0 > 0) {
      partial4_256<W0>(t0, c, W0, a);
    } else {
      a[0] = partial(t0, ksub, c, w0, 0.0f);
      a[1] = partial(t0, ksub, c + w0, w0, 0.0f);
      a[2] = partial(t0, ksub, c + 2 * w0, w0, 0.0f);
      a[3] = partial(t0, ksub, c + 3 * w0, w0, 0.0f);
    }
    if (a[0] + tail1 <= bound) finish(i, a[0]);
    if (a[1] + tail1 <= bound) finish(i + 1, a[1]);
    if (a[2] + tail1 <= bound) finish(i + 2, a[2]);
    if (a[3] + tail1 <= bound) finish(i + 3, a[3]);
  }
  for (; i < b1; ++i) {
    const float r = partial(t0, ksub, plane0 + i * w0, w0, 0.0f);
    if (r + tail1 <= bound) finish(i, r);
  }
}

void scan_block_any(QueryState& st, const Planes& pl, int64_t ksub, int64_t b0, int64_t b1) {
  if (ksub == 256) {
    switch (pl.width[0]) {
      case 8:
        return scan_block<8>(st, pl, ksub, b0, b1);
      case 16:
        return scan_block<16>(st, pl, ksub, b0, b1);
      case 24:
        return scan_block<24>(st, pl, ksub, b0, b1);
      case 32:
        return scan_block<32>(st, pl, ksub, b0, b1);
      case 40:
        return scan_block<40>(st, pl, ksub, b0, b1);
      case 48:
        return scan_block<48>(st, pl, ksub, b0, b1);
      case 64:
        return scan_block<64>(st, pl, ksub, b0, b1);
      default:
        break;
    }
  }
  scan_block<0>(st, pl, ksub, b0, b1);
}

void validate_codes(const PQShape& shape, const uint8_t* codes, int64_t n, const char* where) {
  if (shape.nbits == 8) return;
  const int64_t total = n * shape.m;
  const uint8_t ksub = static_cast<uint8_t>(shape.ksub());
  for (int64_t i = 0; i < total; ++i)
    if (codes[i] >= ksub)
      fail(where, "codes holds " + std::to_string(codes[i]) + ", outside [0, " +
                      std::to_string(shape.ksub()) + ")");
}

}  // namespace pq_detail

using namespace pq_detail;

void pq_train(const PQShape& shape, const float* x, int64_t n, int n_iter,
              int64_t max_points_per_centroid, uint64_t seed, float* centroids, int n_threads) {
  const char* where = "pq_train";
  check_pq_shape(shape, where);
  const int64_t ksub = shape.ksub(), dsub = shape.dsub(), m = shape.m, dim = shape.dim;
  check(n >= ksub, where,
        "x needs at least ksub = " + std::to_string(ksub) + " rows to train, got " +
            std::to_string(n));
  check(n_iter >= 1, where, "n_iter must be >= 1, got " + std::to_string(n_iter));
  check(max_points_per_centroid >= 1, where, "max_points_per_centroid must be >= 1");
  check(all_finite(x, n * dim), where, "x contains NaN or inf");
  const int threads = resolve_threads(n_threads);

  // One seeded sample of rows shared by all sub-spaces.
  const int64_t n_sample = sample_size(n, max_points_per_centroid, ksub);
  const std::vector<int64_t> rows = sample_rows(n, n_sample, seed);

  // Every sub-space starts from the same sample rows.  Aligned starts correlate the
  // sub-spaces' quantization errors per vector, which ranks neighbours better than
  // independent starts (clustered d=512, m=64, 200k: recall@50 0.5517 vs 0.5481 over 3
  // seeds, and a third of the seed-to-seed spread), at the same distortion.
  const std::vector<int64_t> init_rows =
      distinct_rows(n_sample, ksub, seed * 0x9E3779B97F4A7C15ULL + 1);

  SerialBlasScope serial;
  ParallelErrors errors;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t s = 0; s < m; ++s) {
    errors.run([&] {
      std::vector<float> xs(static_cast<size_t>(n_sample * dsub));
      for (int64_t i = 0; i < n_sample; ++i)
        std::copy(x + rows[static_cast<size_t>(i)] * dim + s * dsub,
                  x + rows[static_cast<size_t>(i)] * dim + (s + 1) * dsub, xs.data() + i * dsub);
      kmeans_subspace(xs.data(), n_sample, dsub, ksub, n_iter, init_rows,
                      centroids + s * ksub * dsub);
    });
  }
  errors.rethrow();
}

void pq_encode(const PQShape& shape, const float* centroids, const float* x, int64_t n,
               uint8_t* codes, int n_threads) {
  const char* where = "pq_encode";
  check_pq_shape(shape, where);
  check(n >= 0, where, "negative size");
  const int64_t ksub = shape.ksub(), dsub = shape.dsub(), m = shape.m, dim = shape.dim;
  check(all_finite(x, n * dim), where, "x contains NaN or inf");
  const int threads = resolve_threads(n_threads);
  // Centroids and rows are centred on each sub-space's centroid mean, so that |c|^2 - 2 x.c
  // keeps its precision for data with a large common offset.
  std::vector<float> mu(static_cast<size_t>(dim));
  std::vector<float> cc(static_cast<size_t>(m * ksub * dsub));
  for (int64_t s = 0; s < m; ++s) {
    const float* c = centroids + s * ksub * dsub;
    const std::vector<float> mean = row_mean(c, ksub, dsub);
    std::copy(mean.begin(), mean.end(), mu.begin() + s * dsub);
    for (int64_t j = 0; j < ksub; ++j)
      for (int64_t t = 0; t < dsub; ++t)
        cc[static_cast<size_t>((s * ksub + j) * dsub + t)] = c[j * dsub + t] - mean[t];
  }
  std::vector<float> cnorm(static_cast<size_t>(m * ksub));
  std::vector<float> ct(static_cast<size_t>(m * ksub * dsub));
  for (int64_t s = 0; s < m; ++s) {
    centroid_norms(cc.data() + s * ksub * dsub, ksub, dsub, cnorm.data() + s * ksub);
    transpose_centroids(cc.data() + s * ksub * dsub, ksub, dsub, ct.data() + s * ksub * dsub);
  }
  constexpr int64_t kRows = 4096;
  const int64_t n_blocks = (n + kRows - 1) / kRows;
  const int64_t team = std::max<int64_t>(1, std::min<int64_t>(threads, n_blocks));
  const int64_t block_rows = std::min(kRows, std::max<int64_t>(n, 1));
  // Per-thread buffers allocated here (a failure is a clean std::bad_alloc).
  std::vector<float> dots(static_cast<size_t>(team * kAssignChunk * ksub));
  std::vector<int32_t> assign(static_cast<size_t>(team * block_rows));
  std::vector<float> centred(static_cast<size_t>(team * block_rows * dim));
  SerialBlasScope serial;
#pragma omp parallel num_threads(static_cast<int>(team))
  {
#ifdef DATACREDIT_HAVE_OPENMP
    const int64_t tid = omp_get_thread_num();
#else
    const int64_t tid = 0;
#endif
    float* my_dots = dots.data() + tid * kAssignChunk * ksub;
    int32_t* my_assign = assign.data() + tid * block_rows;
    float* xb = centred.data() + tid * block_rows * dim;
#pragma omp for schedule(dynamic, 1)
    for (int64_t b = 0; b < n_blocks; ++b) {
      const int64_t r0 = b * kRows, nr = std::min(kRows, n - r0);
      for (int64_t r = 0; r < nr; ++r)
        for (int64_t t = 0; t < dim; ++t)
          xb[r * dim + t] = x[(r0 + r) * dim + t] - mu[static_cast<size_t>(t)];
      for (int64_t s = 0; s < m; ++s) {
        assign_rows(xb + s * dsub, nr, dim, cc.data() + s * ksub * dsub,
                    ct.data() + s * ksub * dsub, cnorm.data() + s * ksub, ksub, dsub, my_dots,
                    my_assign);
        for (int64_t r = 0; r < nr; ++r)
          codes[(r0 + r) * m + s] = static_cast<uint8_t>(my_assign[r]);
      }
    }
  }
}

void pq_decode(const PQShape& shape, const float* centroids, const uint8_t* codes, int64_t n,
               float* x_hat, int n_threads) {
  const char* where = "pq_decode";
  check_pq_shape(shape, where);
  validate_codes(shape, codes, n, where);
  const int64_t ksub = shape.ksub(), dsub = shape.dsub(), m = shape.m, dim = shape.dim;
  const int threads = resolve_threads(n_threads);
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t i = 0; i < n; ++i)
    for (int64_t s = 0; s < m; ++s) {
      const float* c = centroids + (s * ksub + codes[i * m + s]) * dsub;
      std::copy(c, c + dsub, x_hat + i * dim + s * dsub);
    }
}

namespace {

// One sub-space table: out[j] = |q - c_j|^2 (l2) or q . c_j (ip) from the transposed
// centroids ct (dsub x ksub); the loop over j vectorises (AVX2 clone when available).
#ifdef DATACREDIT_X86_DISPATCH
__attribute__((target_clones("avx2", "default")))
#endif
void table_one(const float* qs, const float* ct, int64_t ksub, int64_t dsub, bool l2, float* out) {
  for (int64_t j = 0; j < ksub; ++j) out[j] = 0.0f;
  for (int64_t t = 0; t < dsub; ++t) {
    const float qv = qs[t];
    const float* row = ct + t * ksub;
    if (l2) {
      for (int64_t j = 0; j < ksub; ++j) {
        const float diff = qv - row[j];
        out[j] += diff * diff;
      }
    } else {
      for (int64_t j = 0; j < ksub; ++j) out[j] += qv * row[j];
    }
  }
}

}  // namespace

void pq_compute_tables(const PQShape& shape, const float* centroids, const float* queries,
                       int64_t nq, PQMetric metric, float* tables, int n_threads) {
  const char* where = "pq_compute_tables";
  check_pq_shape(shape, where);
  check(all_finite(queries, nq * shape.dim), where, "queries contains NaN or inf");
  const int64_t ksub = shape.ksub(), dsub = shape.dsub(), m = shape.m, dim = shape.dim;
  const int threads = resolve_threads(n_threads);
  std::vector<float> ct(static_cast<size_t>(m * ksub * dsub));
  for (int64_t s = 0; s < m; ++s)
    transpose_centroids(centroids + s * ksub * dsub, ksub, dsub, ct.data() + s * ksub * dsub);
  const bool l2 = metric == PQMetric::kL2;
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t q = 0; q < nq; ++q)
    for (int64_t s = 0; s < m; ++s)
      table_one(queries + q * dim + s * dsub, ct.data() + s * ksub * dsub, ksub, dsub, l2,
                tables + (q * m + s) * ksub);
}

void pq_search_tables(const PQShape& shape, const float* tables, int64_t nq, const uint8_t* codes,
                      int64_t n_codes, int64_t k, PQMetric metric, float* distances,
                      int64_t* indices, int n_threads) {
  const char* where = "pq_search";
  check_pq_shape(shape, where);
  check(nq > 0, where, "queries is empty");
  check(n_codes > 0, where, "codes is empty");
  check(k >= 1 && k <= n_codes, where,
        "k = " + std::to_string(k) + " must be in [1, n_codes = " + std::to_string(n_codes) + "]");
  check(all_finite(tables, nq * shape.m * shape.ksub()), where, "tables contains NaN or inf");
  validate_codes(shape, codes, n_codes, where);
  const int64_t ksub = shape.ksub(), m = shape.m;
  const int threads = resolve_threads(n_threads);
  // One layout of the codes per search: groups of 64 for the byte-table scan, else planes.
  const bool bytes = byte_scan_enabled(ksub);
  const Planes pl = bytes ? Planes{} : make_planes(codes, n_codes, m, threads);
  const std::vector<uint8_t> groups =
      bytes ? make_groups64(codes, n_codes, m, threads) : std::vector<uint8_t>{};

  // Internally every table is minimised: inner products are negated (exact in floats).
  const bool negate = metric == PQMetric::kInnerProduct;
  constexpr int64_t kGroup = 8;     // queries sharing each code block while it is in cache
  constexpr int64_t kBlock = 8192;  // codes per block (plane 0: 128 KiB)
  const int64_t n_groups = (nq + kGroup - 1) / kGroup;
  // With fewer query groups than threads, split the code range too and merge the heaps.
  const int64_t parts = std::max<int64_t>(
      1, std::min<int64_t>((threads + n_groups - 1) / n_groups, (n_codes + kBlock - 1) / kBlock));
  // A multiple of 64, so every part starts on a group of the byte-table scan.
  const int64_t part_len = ((n_codes + parts - 1) / parts + 63) / 64 * 64;
  std::vector<float> heap_keys(static_cast<size_t>(nq * parts * k));
  std::vector<int64_t> heap_ids(static_cast<size_t>(nq * parts * k));
  std::vector<int64_t> heap_size(static_cast<size_t>(nq * parts), 0);

  ParallelErrors errors;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> neg;
#pragma omp for schedule(dynamic, 1)
    for (int64_t task = 0; task < n_groups * parts; ++task)
      errors.run([&] {
        const int64_t g = task / parts, part = task % parts;
        const int64_t q0 = g * kGroup, q1 = std::min(nq, q0 + kGroup);
        const int64_t c0 = std::min(n_codes, part * part_len);
        const int64_t c1 = std::min(n_codes, c0 + part_len);
        if (negate) neg.resize(static_cast<size_t>((q1 - q0) * m * ksub));
        std::vector<QueryState> states;
        std::vector<ByteTable> byte_tables;
        states.reserve(static_cast<size_t>(q1 - q0));
        for (int64_t q = q0; q < q1; ++q) {
          const float* t = tables + q * m * ksub;
          if (negate) {
            float* dst = neg.data() + (q - q0) * m * ksub;
            for (int64_t j = 0; j < m * ksub; ++j) dst[j] = -t[j];
            t = dst;
          }
          const size_t slot = static_cast<size_t>((q * parts + part) * k);
          states.emplace_back(t, heap_keys.data() + slot, heap_ids.data() + slot, k);
          if (bytes)
            byte_tables.push_back(make_byte_table(t, m));
          else
            prepare_bounds(states.back(), pl, m, ksub);
        }
        for (int64_t b0 = c0; b0 < c1; b0 += kBlock) {
          const int64_t b1 = std::min(c1, b0 + kBlock);
          for (size_t j = 0; j < states.size(); ++j) {
            QueryState& st = states[j];
            if (bytes)
              scan_groups64(st.table, byte_tables[j], m, groups.data(), codes, b0, b1, st.heap);
            else
              scan_block_any(st, pl, ksub, b0, b1);
          }
        }
        for (int64_t q = q0; q < q1; ++q)
          heap_size[static_cast<size_t>(q * parts + part)] =
              states[static_cast<size_t>(q - q0)].heap.size();
      });
  }
  errors.rethrow();

  // Merge the parts of each query and write best-first.
  const float sign = negate ? 1.0f : -1.0f;  // key = -dist (l2) or -(-ip) = ip
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t q = 0; q < nq; ++q) {
    errors.run([&] {
      const size_t base = static_cast<size_t>(q * parts * k);
      write_merged_sorted(heap_keys.data() + base, heap_ids.data() + base,
                          heap_size.data() + q * parts, parts, k, distances + q * k,
                          indices + q * k, sign);
    });
  }
  errors.rethrow();
}

void pq_search(const PQShape& shape, const float* centroids, const float* queries, int64_t nq,
               const uint8_t* codes, int64_t n_codes, int64_t k, PQMetric metric, float* distances,
               int64_t* indices, int n_threads) {
  check_pq_shape(shape, "pq_search");
  check(nq > 0, "pq_search", "queries is empty");
  // Tables for a chunk of queries at a time bound the memory (m * ksub floats per query).
  constexpr int64_t kChunk = 2048;
  std::vector<float> tables(static_cast<size_t>(std::min(nq, kChunk) * shape.m * shape.ksub()));
  for (int64_t q0 = 0; q0 < nq; q0 += kChunk) {
    const int64_t nc = std::min(kChunk, nq - q0);
    pq_compute_tables(shape, centroids, queries + q0 * shape.dim, nc, metric, tables.data(),
                      n_threads);
    pq_search_tables(shape, tables.data(), nc, codes, n_codes, k, metric, distances + q0 * k,
                     indices + q0 * k, n_threads);
  }
}

void kmeans(const float* x, int64_t n, int64_t dim, int64_t k, int n_iter,
            int64_t max_points_per_centroid, uint64_t seed, float* centroids, int n_threads) {
  const char* where = "kmeans";
  check(dim > 0, where, "dimension must be positive");
  check(k >= 1, where, "k must be >= 1, got " + std::to_string(k));
  check(n >= k, where,
        "x needs at least k = " + std::to_string(k) + " rows, got " + std::to_string(n));
  check(n_iter >= 1, where, "n_iter must be >= 1, got " + std::to_string(n_iter));
  check(max_points_per_centroid >= 1, where, "max_points_per_centroid must be >= 1");
  check(all_finite(x, n * dim), where, "x contains NaN or inf");
  (void)n_threads;  // the GEMM inside uses the BLAS's own threads
  const int64_t n_sample = sample_size(n, max_points_per_centroid, k);
  const std::vector<int64_t> rows = sample_rows(n, n_sample, seed);
  std::vector<float> xs(static_cast<size_t>(n_sample * dim));
  for (int64_t i = 0; i < n_sample; ++i)
    std::copy(x + rows[static_cast<size_t>(i)] * dim, x + (rows[static_cast<size_t>(i)] + 1) * dim,
              xs.data() + i * dim);
  kmeans_subspace(xs.data(), n_sample, dim, k, n_iter,
                  distinct_rows(n_sample, k, seed * 0x9E3779B97F4A7C15ULL + 1), centroids);
}

}  // namespace datacredit
