#include "datacredit/gram.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <type_traits>
#include <vector>

#include "datacredit/blas.hpp"
#include "datacredit/common.hpp"
#include "datacredit/topk.hpp"

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

std::vector<float> squared_norms(const float* x, int64_t rows, int64_t dim, int threads) {
  std::vector<float> out(static_cast<size_t>(rows));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    const float* v = x + r * dim;
    double s = 0.0;
    for (int64_t p = 0; p < dim; ++p) s += static_cast<double>(v[p]) * v[p];
    out[static_cast<size_t>(r)] = static_cast<float>(s);
  }
  return out;
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

void gram_topk(const float* queries, int64_t n, const float* keys, int64_t n_keys, int64_t dim,
               int64_t k, const KeyWeights& weights, Metric metric, bool largest, float* values,
               int64_t* indices, int n_threads, bool keys_checked) {
  const char* where = "gram_topk";
  validate(where, queries, n, keys, n_keys, dim, weights, keys_checked);
  check(k >= 1 && k <= n_keys, where,
        "k = " + std::to_string(k) + " must be in [1, " + std::to_string(n_keys) + "]");
  const int threads = resolve_threads(n_threads);
  const bool l2 = metric == Metric::kSquaredL2, cosine = metric == Metric::kCosine;
  std::vector<float> q_sq, k_sq;
  if (l2) {
    q_sq = squared_norms(queries, n, dim, threads);
    k_sq = squared_norms(keys, n_keys, dim, threads);
  }
  const Scorer scorer{l2, weight_mode(weights), &weights, q_sq.data(), k_sq.data()};

  // Partition: query blocks first; when there are fewer blocks than threads, also
  // split the keys into ranges whose heaps are merged at the end.
  const int64_t n_qblocks = (n + kQueryBlock - 1) / kQueryBlock;
  const int64_t qblock = (n + n_qblocks - 1) / n_qblocks;
  const int64_t n_ktiles = (n_keys + kKeyTile - 1) / kKeyTile;
  int64_t n_parts = 1;
  if (n_qblocks < threads) n_parts = std::min<int64_t>(n_ktiles, threads / n_qblocks);
  n_parts = std::max<int64_t>(n_parts, 1);
  const int64_t tiles_per_part = (n_ktiles + n_parts - 1) / n_parts;

  std::vector<float> heap_keys(static_cast<size_t>(n_parts * n * k));
  std::vector<int64_t> heap_ids(static_cast<size_t>(n_parts * n * k));
  std::vector<int64_t> heap_sizes(static_cast<size_t>(n_parts * n), 0);
  const float sign = largest ? 1.0f : -1.0f;
  const int64_t n_items = n_qblocks * n_parts;
  SerialBlasScope serial_blas;

#pragma omp parallel num_threads(threads)
  {
    std::vector<float> tile(static_cast<size_t>(qblock * kKeyTile));
    // Cosine works on unit-norm copies of the current query block and key tile.
    std::vector<float> q_unit(cosine ? static_cast<size_t>(qblock * dim) : 0);
    std::vector<float> k_unit(cosine ? static_cast<size_t>(kKeyTile * dim) : 0);
#pragma omp for schedule(dynamic, 1)
    for (int64_t item = 0; item < n_items; ++item) {
      const int64_t b = item / n_parts, part = item % n_parts;
      const int64_t i0 = b * qblock, i1 = std::min(n, i0 + qblock);
      const int64_t t0 = part * tiles_per_part, t1 = std::min(n_ktiles, t0 + tiles_per_part);
      const float* q_block = queries + i0 * dim;
      if (cosine) {
        normalize_rows(q_block, i1 - i0, dim, q_unit.data());
        q_block = q_unit.data();
      }
      std::vector<TopKHeap> heaps;
      heaps.reserve(static_cast<size_t>(i1 - i0));
      for (int64_t i = i0; i < i1; ++i)
        heaps.emplace_back(heap_keys.data() + (part * n + i) * k,
                           heap_ids.data() + (part * n + i) * k, k);

      for (int64_t t = t0; t < t1; ++t) {
        const int64_t j0 = t * kKeyTile, j1 = std::min(n_keys, j0 + kKeyTile);
        const int64_t cols = j1 - j0;
        const float* k_tile = keys + j0 * dim;
        if (cosine) {
          normalize_rows(k_tile, cols, dim, k_unit.data());
          k_tile = k_unit.data();
        }
        sgemm_nt(i1 - i0, cols, dim, q_block, dim, k_tile, dim, tile.data(), cols);
        scorer.dispatch([&](auto is_l2, auto mode) {
          constexpr bool L2 = decltype(is_l2)::value;
          constexpr WeightMode W = decltype(mode)::value;
          for (int64_t i = i0; i < i1; ++i) {
            float* row = tile.data() + (i - i0) * cols;
            if (L2 || W != WeightMode::kNone) scorer.apply<L2, W>(row, cols, i, j0);
            scan_row(row, cols, j0, sign, heaps[static_cast<size_t>(i - i0)]);
          }
        });
      }
      for (int64_t i = i0; i < i1; ++i)
        heap_sizes[static_cast<size_t>(part * n + i)] = heaps[static_cast<size_t>(i - i0)].size();
    }

    // Merge the key ranges' heaps of each query (into part 0's storage) and write it out sorted.
#pragma omp for schedule(static)
    for (int64_t i = 0; i < n; ++i) {
      float* keys0 = heap_keys.data() + i * k;
      int64_t* ids0 = heap_ids.data() + i * k;
      TopKHeap merged(keys0, ids0, k, heap_sizes[static_cast<size_t>(i)]);
      if (n_parts > 1) {
        std::vector<float> mk(keys0, keys0 + merged.size());
        std::vector<int64_t> mi(ids0, ids0 + merged.size());
        for (int64_t part = 1; part < n_parts; ++part) {
          const int64_t sz = heap_sizes[static_cast<size_t>(part * n + i)];
          const float* pk = heap_keys.data() + (part * n + i) * k;
          const int64_t* pi = heap_ids.data() + (part * n + i) * k;
          mk.insert(mk.end(), pk, pk + sz);
          mi.insert(mi.end(), pi, pi + sz);
        }
        merged = TopKHeap(keys0, ids0, k);
        for (size_t e = 0; e < mk.size(); ++e) merged.push(mk[e], mi[e]);
      }
      merged.write_sorted(values + i * k, indices + i * k, sign);
    }
  }
}

void gram_dense(const float* queries, int64_t n, const float* keys, int64_t n_keys, int64_t dim,
                const KeyWeights& weights, Metric metric, float* out, int n_threads) {
  validate("gram", queries, n, keys, n_keys, dim, weights);
  const int threads = resolve_threads(n_threads);
  const bool l2 = metric == Metric::kSquaredL2;
  std::vector<float> q_sq, k_sq, q_unit, k_unit;
  if (l2) {
    q_sq = squared_norms(queries, n, dim, threads);
    k_sq = squared_norms(keys, n_keys, dim, threads);
  }
  if (metric == Metric::kCosine) {  // the n x N output dwarfs these copies
    q_unit.resize(static_cast<size_t>(n * dim));
    k_unit.resize(static_cast<size_t>(n_keys * dim));
    normalize_rows(queries, n, dim, q_unit.data());
    normalize_rows(keys, n_keys, dim, k_unit.data());
    queries = q_unit.data();
    keys = k_unit.data();
  }
  sgemm_nt(n, n_keys, dim, queries, dim, keys, dim, out, n_keys);
  const Scorer scorer{l2, weight_mode(weights), &weights, q_sq.data(), k_sq.data()};
  if (scorer.is_identity()) return;
  scorer.dispatch([&](auto is_l2, auto mode) {
    constexpr bool L2 = decltype(is_l2)::value;
    constexpr WeightMode W = decltype(mode)::value;
#pragma omp parallel for num_threads(threads) schedule(static)
    for (int64_t i = 0; i < n; ++i) scorer.apply<L2, W>(out + i * n_keys, n_keys, i, 0);
  });
}

}  // namespace datacredit
