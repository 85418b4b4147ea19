#include "datacredit/gram.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "datacredit/blas.hpp"
#include "datacredit/common.hpp"
#include "datacredit/topk.hpp"

#ifdef DATACREDIT_HAVE_OPENMP
#include <omp.h>
#endif

namespace datacredit {

Metric parse_metric(const std::string& name) {
  if (name == "ip") return Metric::kInnerProduct;
  if (name == "cosine") return Metric::kCosine;
  if (name == "l2") return Metric::kSquaredL2;
  fail("gram", "unknown metric '" + name + "' (expected 'ip', 'cosine' or 'l2')");
}

namespace {

// Tile sizes: a (kQueryBlock x kKeyTile) float tile per thread stays in L2/L3 while
// it is scanned, and each GEMM call is large enough for the BLAS to run near peak.
// Measured (2-core EPYC, d=512, 2000 x 50000): 0.63 s against 0.59 s for one dense GEMM
// through the same BLAS; 256..2048 on either side were no better.
constexpr int64_t kQueryBlock = 512;
constexpr int64_t kKeyTile = 512;
constexpr double kUnit = 1.0 / 16777216.0;  // float32 unit roundoff, 2^-24

enum class WeightMode { kNone, kVector, kPerClass };

void validate(const char* where, const float* queries, int64_t n, const float* keys, int64_t n_keys,
              int64_t dim, const KeyWeights& weights, bool keys_checked = false) {
  check(n >= 0 && n_keys >= 0 && dim >= 0, where, "negative size");
  check(n > 0, where, "queries is empty");
  check(n_keys > 0, where, "keys is empty");
  check(dim > 0, where, "feature dimension is 0");
  check(all_finite(queries, n * dim), where, "queries contains NaN or inf");
  check(keys_checked || all_finite(keys, n_keys * dim), where, "keys contains NaN or inf");
  if (weights.data != nullptr) {
    check(weights.n_cols >= 1, where, "weights has no columns");
    check(weights.classes != nullptr || weights.n_cols == 1, where,
          "a weight matrix needs classes (one column index per query)");
    check(keys_checked || all_finite(weights.data, n_keys * weights.n_cols), where,
          "weights contains NaN or inf");
    if (weights.classes != nullptr)
      for (int64_t i = 0; i < n; ++i)
        check(weights.classes[i] >= 0 && weights.classes[i] < weights.n_cols, where,
              "classes[" + std::to_string(i) + "] = " + std::to_string(weights.classes[i]) +
                  " is outside [0, " + std::to_string(weights.n_cols) + ")");
  }
}

WeightMode weight_mode(const KeyWeights& w) {
  if (w.data == nullptr) return WeightMode::kNone;
  return w.classes == nullptr ? WeightMode::kVector : WeightMode::kPerClass;
}

// Unit-norm copies of rows (all-zero rows stay zero).  Scaled by the largest |x| first,
// in double, so tiny (even subnormal) and huge rows normalise without under/overflow.
void normalize_rows(const float* x, int64_t rows, int64_t dim, float* out) {
  for (int64_t r = 0; r < rows; ++r) {
    const float* v = x + r * dim;
    float* o = out + r * dim;
    double big = 0.0;
    for (int64_t p = 0; p < dim; ++p) big = std::max(big, std::abs(static_cast<double>(v[p])));
    if (big == 0.0) {
      std::fill(o, o + dim, 0.0f);
      continue;
    }
    double ss = 0.0;
    for (int64_t p = 0; p < dim; ++p) ss += (v[p] / big) * (v[p] / big);
    const double scale = 1.0 / (big * std::sqrt(ss));
    for (int64_t p = 0; p < dim; ++p) o[p] = static_cast<float>(v[p] * scale);
  }
}

// Turns raw dot products into scores.  Cosine arrives here as a dot product of unit
// vectors, so only the l2 expansion and the weights remain.
struct Scorer {
  bool l2;
  WeightMode mode;
  const KeyWeights* weights;
  const float* q_sq;  // l2 only: squared norms of queries
  const float* k_sq;  // l2 only: squared norms of keys

  // s[0..count) holds dot products of query i with keys j0..j0+count; rewritten in place.
  template <bool L2, WeightMode W>
  void apply(float* s, int64_t count, int64_t i, int64_t j0) const {
    const float qs = L2 ? q_sq[i] : 0.0f;
    const float* ks = L2 ? k_sq + j0 : nullptr;
    const int64_t cols = weights->n_cols;
    const float* w = weights->data;
    const int64_t c = (W == WeightMode::kPerClass) ? weights->classes[i] : 0;
    for (int64_t t = 0; t < count; ++t) {
      float v = s[t];
      if (L2) v = std::max(qs + ks[t] - 2.0f * v, 0.0f);
      if (W == WeightMode::kVector) v *= w[j0 + t];
      if (W == WeightMode::kPerClass) v *= w[(j0 + t) * cols + c];
      s[t] = v;
    }
  }

  bool is_identity() const { return !l2 && mode == WeightMode::kNone; }

  // Calls f(bool_constant<L2>, integral_constant<WeightMode>) resolved once, outside hot loops.
  template <class F>
  void dispatch(F&& f) const {
    auto with_mode = [&](auto is_l2) {
      switch (mode) {
        case WeightMode::kNone:
          return f(is_l2, std::integral_constant<WeightMode, WeightMode::kNone>{});
        case WeightMode::kVector:
          return f(is_l2, std::integral_constant<WeightMode, WeightMode::kVector>{});
        case WeightMode::kPerClass:
          return f(is_l2, std::integral_constant<WeightMode, WeightMode::kPerClass>{});
      }
    };
    if (l2)
      with_mode(std::true_type{});
    else
      with_mode(std::false_type{});
  }
};

// Pushes the candidates of one tile row that can enter the heap.  Rows are checked in
// chunks with a branch-free compare that vectorises; once the heap is full almost every
// chunk is rejected by it, so the selection costs a small fraction of the GEMM.
void scan_row(const float* row, int64_t cols, int64_t j0, float sign, TopKHeap& heap) {
  constexpr int64_t kChunk = 16;
  float thr = heap.threshold();
  auto push_range = [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c) {
      float key = sign * row[c];
      if (!(key < thr)) {  // NaN lands here too
        // Scores that overflowed to NaN (inf - inf) rank last, never lost.
        if (key != key) key = -std::numeric_limits<float>::infinity();
        heap.push(key, j0 + c);
        thr = heap.threshold();
      }
    }
  };
  int64_t c = 0;
  for (; c + kChunk <= cols; c += kChunk) {
    int any = 0;
    for (int64_t t = 0; t < kChunk; ++t) any |= !(sign * row[c + t] < thr);
    if (any) push_range(c, c + kChunk);
  }
  push_range(c, cols);
}

}  // namespace

namespace {

void subtract_rows(const float* x, int64_t rows, int64_t dim, const float* mean, float* out) {
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t p = 0; p < dim; ++p) out[r * dim + p] = x[r * dim + p] - mean[p];
}

// Squared norms of rows minus `mean` (the very float values the GEMM sees), in double.
std::vector<float> centred_squared_norms(const float* x, int64_t rows, int64_t dim,
                                         const float* mean, int threads) {
  std::vector<float> out(static_cast<size_t>(rows));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    double s = 0.0;
    for (int64_t p = 0; p < dim; ++p) {
      const double v = static_cast<float>(x[r * dim + p] - mean[p]);
      s += v * v;
    }
    out[static_cast<size_t>(r)] = static_cast<float>(s);
  }
  return out;
}

// The squared distance computed directly, in double: exact up to one final rounding.
// Compiled for x86-64-v3 (AVX2 + FMA) and the baseline ISA; the loader picks one.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__linux__)
__attribute__((target_clones("arch=x86-64-v3", "default")))
#endif
double exact_sq_l2(const float* a, const float* b, int64_t dim) {
  double s = 0.0;
#pragma omp simd reduction(+ : s)
  for (int64_t p = 0; p < dim; ++p) {
    const double t = static_cast<double>(a[p]) - static_cast<double>(b[p]);
    s += t * t;
  }
  return s;
}

inline float key_weight(const KeyWeights& w, WeightMode mode, int64_t i, int64_t j) {
  if (mode == WeightMode::kVector) return w.data[j];
  if (mode == WeightMode::kPerClass) return w.data[j * w.n_cols + w.classes[i]];
  return 1.0f;
}

// Exact heap key (sign * w_j * |q_i - k_j|^2, rounded once to float; NaN ranks last).
inline float exact_l2_key(const float* q, const float* keys, int64_t j, int64_t dim,
                          const KeyWeights& w, WeightMode mode, int64_t i, float sign) {
  const double v = exact_sq_l2(q, keys + j * dim, dim) * key_weight(w, mode, i, j);
  const float key = sign * static_cast<float>(v);
  return key != key ? -std::numeric_limits<float>::infinity() : key;
}

}  // namespace

void gram_topk(const float* queries, int64_t n, const float* keys, int64_t n_keys, int64_t dim,
               int64_t k, const KeyWeights& weights, Metric metric, bool largest, float* values,
               int64_t* indices, int n_threads, bool keys_checked) {
  const char* where = "gram_topk";
  validate(where, queries, n, keys, n_keys, dim, weights, keys_checked);
  check(k >= 1 && k <= n_keys, where,
        "k = " + std::to_string(k) + " must be in [1, " + std::to_string(n_keys) + "]");
  const int threads = resolve_threads(n_threads);
  const bool l2 = metric == Metric::kSquaredL2, cosine = metric == Metric::kCosine;
  const WeightMode mode = weight_mode(weights);
  // l2: the GEMM works on rows minus the key mean (no cancellation of a common offset);
  // each query keeps `kk` > k candidates whose distances are then recomputed directly
  // and re-ranked, and a bound on the GEMM's rounding error certifies that no other key
  // can enter; a query that is not certified is scanned exactly (rare).
  std::vector<float> q_sq, k_sq, mean;
  int64_t kk = k;
  if (l2) {
    mean = row_mean(keys, n_keys, dim);
    q_sq = centred_squared_norms(queries, n, dim, mean.data(), threads);
    k_sq = centred_squared_norms(keys, n_keys, dim, mean.data(), threads);
    kk = std::min(n_keys, k + std::max<int64_t>(16, k / 4));
  }
  // |approximate - exact| <= slack_coef * (|q - mean|^2 + max_j |k_j - mean|^2): the GEMM's
  // dot product (gamma_dim), the rounded norms and centring, with a factor 2 of margin.
  double slack_coef = 0.0, max_k_sq = 0.0;
  if (l2) {
    double max_w = 1.0;
    if (mode != WeightMode::kNone) {
      max_w = 0.0;
      for (int64_t e = 0; e < n_keys * weights.n_cols; ++e)
        max_w = std::max(max_w, std::abs(static_cast<double>(weights.data[e])));
    }
    for (const float v : k_sq) max_k_sq = std::max(max_k_sq, static_cast<double>(v));
    slack_coef = 2.0 * static_cast<double>(dim + 16) * kUnit * max_w;
  }
  const Scorer scorer{l2, mode, &weights, q_sq.data(), k_sq.data()};

  // Partition: query blocks first; when there are fewer blocks than threads, also
  // split the keys into ranges whose heaps are merged at the end.
  const int64_t n_qblocks = (n + kQueryBlock - 1) / kQueryBlock;
  const int64_t qblock = (n + n_qblocks - 1) / n_qblocks;
  const int64_t n_ktiles = (n_keys + kKeyTile - 1) / kKeyTile;
  const int64_t ktile = std::min(kKeyTile, n_keys);
  int64_t n_parts = 1;
  if (n_qblocks < threads) n_parts = std::min<int64_t>(n_ktiles, threads / n_qblocks);
  n_parts = std::max<int64_t>(n_parts, 1);
  const int64_t tiles_per_part = (n_ktiles + n_parts - 1) / n_parts;

  // Every buffer is allocated here, on the calling thread, sized to the problem (a
  // failure is a std::bad_alloc the bindings turn into MemoryError).
  std::vector<float> heap_keys(static_cast<size_t>(n_parts * n * kk));
  std::vector<int64_t> heap_ids(static_cast<size_t>(n_parts * n * kk));
  std::vector<int64_t> heap_sizes(static_cast<size_t>(n_parts * n), 0);
  const int64_t team = std::max<int64_t>(1, std::min<int64_t>(threads, n_qblocks * n_parts));
  const bool copy_rows = cosine || l2;  // per-thread unit-norm / centred copies
  std::vector<float> tiles(static_cast<size_t>(team * qblock * ktile));
  std::vector<float> q_copies(copy_rows ? static_cast<size_t>(team * qblock * dim) : 0);
  std::vector<float> k_copies(copy_rows ? static_cast<size_t>(team * ktile * dim) : 0);
  const float sign = largest ? 1.0f : -1.0f;
  const int64_t n_items = n_qblocks * n_parts;
  ParallelErrors errors;
  SerialBlasScope serial_blas;

#pragma omp parallel num_threads(static_cast<int>(team))
  {
#ifdef DATACREDIT_HAVE_OPENMP
    const int64_t tid = omp_get_thread_num();
#else
    const int64_t tid = 0;
#endif
    float* tile = tiles.data() + tid * qblock * ktile;
    float* q_copy = copy_rows ? q_copies.data() + tid * qblock * dim : nullptr;
    float* k_copy = copy_rows ? k_copies.data() + tid * ktile * dim : nullptr;
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < n_items; ++item) {
      errors.run([&] {
        const int64_t b = item / n_parts, part = item % n_parts;
        const int64_t i0 = b * qblock, i1 = std::min(n, i0 + qblock);
        const int64_t t0 = part * tiles_per_part, t1 = std::min(n_ktiles, t0 + tiles_per_part);
        const float* q_block = queries + i0 * dim;
        if (cosine) {
          normalize_rows(q_block, i1 - i0, dim, q_copy);
          q_block = q_copy;
        } else if (l2) {
          subtract_rows(q_block, i1 - i0, dim, mean.data(), q_copy);
          q_block = q_copy;
        }
        std::vector<TopKHeap> heaps;
        heaps.reserve(static_cast<size_t>(i1 - i0));
        for (int64_t i = i0; i < i1; ++i)
          heaps.emplace_back(heap_keys.data() + (part * n + i) * kk,
                             heap_ids.data() + (part * n + i) * kk, kk);

        for (int64_t t = t0; t < t1; ++t) {
          const int64_t j0 = t * kKeyTile, j1 = std::min(n_keys, j0 + kKeyTile);
          const int64_t cols = j1 - j0;
          const float* k_tile = keys + j0 * dim;
          if (cosine) {
            normalize_rows(k_tile, cols, dim, k_copy);
            k_tile = k_copy;
          } else if (l2) {
            subtract_rows(k_tile, cols, dim, mean.data(), k_copy);
            k_tile = k_copy;
          }
          sgemm_nt(i1 - i0, cols, dim, q_block, dim, k_tile, dim, tile, cols);
          scorer.dispatch([&](auto is_l2, auto wmode) {
            constexpr bool L2 = decltype(is_l2)::value;
            constexpr WeightMode W = decltype(wmode)::value;
            for (int64_t i = i0; i < i1; ++i) {
              float* row = tile + (i - i0) * cols;
              if (L2 || W != WeightMode::kNone) scorer.apply<L2, W>(row, cols, i, j0);
              scan_row(row, cols, j0, sign, heaps[static_cast<size_t>(i - i0)]);
            }
          });
        }
        for (int64_t i = i0; i < i1; ++i)
          heap_sizes[static_cast<size_t>(part * n + i)] = heaps[static_cast<size_t>(i - i0)].size();
      });
    }

    // Merge the key ranges' heaps of each query (into part 0's storage) and write it out
    // sorted (l2: re-ranked by the exact distances first).
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      errors.run([&] {
        float* keys0 = heap_keys.data() + i * kk;
        int64_t* ids0 = heap_ids.data() + i * kk;
        TopKHeap merged(keys0, ids0, kk, heap_sizes[static_cast<size_t>(i)]);
        if (n_parts > 1) {
          std::vector<float> mk(keys0, keys0 + merged.size());
          std::vector<int64_t> mi(ids0, ids0 + merged.size());
          for (int64_t part = 1; part < n_parts; ++part) {
            const int64_t sz = heap_sizes[static_cast<size_t>(part * n + i)];
            const float* pk = heap_keys.data() + (part * n + i) * kk;
            const int64_t* pi = heap_ids.data() + (part * n + i) * kk;
            mk.insert(mk.end(), pk, pk + sz);
            mi.insert(mi.end(), pi, pi + sz);
          }
          merged = TopKHeap(keys0, ids0, kk);
          for (size_t e = 0; e < mk.size(); ++e) merged.push(mk[e], mi[e]);
        }
        if (!l2) {
          merged.write_sorted(values + i * k, indices + i * k, sign);
          return;
        }
        const float* q = queries + i * dim;
        // Every key left out has an approximate key <= the worst kept one, and its exact
        // key exceeds its approximation by at most `slack` (the rounding bound of the
        // centred expansion, scaled by the largest |weight|).
        const float worst_kept = merged.keys()[0];
        const bool all_kept = merged.size() >= n_keys;
        std::vector<float> ek(static_cast<size_t>(k));
        std::vector<int64_t> ei(static_cast<size_t>(k));
        TopKHeap exact(ek.data(), ei.data(), k);
        for (int64_t e = 0; e < merged.size(); ++e) {
          const int64_t j = merged.ids()[e];
          exact.push(exact_l2_key(q, keys, j, dim, weights, mode, i, sign), j);
        }
        bool certified = all_kept;
        if (!certified) {
          const double slack =
              slack_coef * (static_cast<double>(q_sq[static_cast<size_t>(i)]) + max_k_sq);
          const double bound = static_cast<double>(worst_kept) + slack +
                               4 * kUnit * std::abs(static_cast<double>(worst_kept));
          // (a non-finite bound, e.g. from scores that overflowed, certifies nothing)
          certified = std::isfinite(bound) && static_cast<double>(exact.threshold()) > bound;
        }
        if (!certified) {  // scan every key exactly
          exact = TopKHeap(ek.data(), ei.data(), k);
          for (int64_t j = 0; j < n_keys; ++j)
            exact.push(exact_l2_key(q, keys, j, dim, weights, mode, i, sign), j);
        }
        exact.write_sorted(values + i * k, indices + i * k, sign);
      });
    }
  }
  errors.rethrow();
}

void gram_dense(const float* queries, int64_t n, const float* keys, int64_t n_keys, int64_t dim,
                const KeyWeights& weights, Metric metric, float* out, int n_threads) {
  validate("gram", queries, n, keys, n_keys, dim, weights);
  const int threads = resolve_threads(n_threads);
  const WeightMode mode = weight_mode(weights);
  if (metric == Metric::kSquaredL2) {
    // Direct differences, in double: no cancellation whatever the offset of the data
    // (O(n N d) without the GEMM; the n x N output is the cost that matters here).
    // Blocks of 64 queries x 256 keys: the key block stays in cache while it is reused.
    constexpr int64_t kQ = 64, kK = 256;
    const int64_t n_qb = (n + kQ - 1) / kQ;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (int64_t qb = 0; qb < n_qb; ++qb)
      for (int64_t j0 = 0; j0 < n_keys; j0 += kK)
        for (int64_t i = qb * kQ; i < std::min(n, (qb + 1) * kQ); ++i)
          for (int64_t j = j0; j < std::min(n_keys, j0 + kK); ++j)
            out[i * n_keys + j] =
                static_cast<float>(exact_sq_l2(queries + i * dim, keys + j * dim, dim) *
                                   key_weight(weights, mode, i, j));
    return;
  }
  std::vector<float> q_unit, k_unit;
  if (metric == Metric::kCosine) {  // the n x N output dwarfs these copies
    q_unit.resize(static_cast<size_t>(n * dim));
    k_unit.resize(static_cast<size_t>(n_keys * dim));
    normalize_rows(queries, n, dim, q_unit.data());
    normalize_rows(keys, n_keys, dim, k_unit.data());
    queries = q_unit.data();
    keys = k_unit.data();
  }
  sgemm_nt(n, n_keys, dim, queries, dim, keys, dim, out, n_keys);
  const Scorer scorer{false, mode, &weights, nullptr, nullptr};
  if (scorer.is_identity()) return;
  scorer.dispatch([&](auto is_l2, auto wmode) {
    constexpr bool L2 = decltype(is_l2)::value;
    constexpr WeightMode W = decltype(wmode)::value;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) scorer.apply<L2, W>(out + i * n_keys, n_keys, i, 0);
  });
}

}  // namespace datacredit
