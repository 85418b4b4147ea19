#include "datacredit/ivf.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "datacredit/blas.hpp"
#include "datacredit/common.hpp"
#include "datacredit/topk.hpp"

#ifdef DATACREDIT_HAVE_OPENMP
#include <omp.h>
#endif

namespace datacredit {

namespace {

// Queries scored per GEMM tile and keys per tile: a (kQueryBlock x kKeyTile) float tile
// per thread stays in cache while it is scanned.
constexpr int64_t kQueryBlock = 256;
constexpr int64_t kKeyTile = 512;
// (query, probed list) candidate slots held at once: about 12 bytes each (48 MB).
constexpr int64_t kMaxSlots = int64_t{1} << 22;

void validate(const float* queries, int64_t n, const float* keys, int64_t n_keys, int64_t dim,
              const int64_t* order, const int64_t* starts, int64_t nlist, const int64_t* probes,
              int64_t nprobe, int64_t per_list, int64_t r) {
  const char* where = "ivf_flat_search";
  check(n > 0, where, "queries is empty");
  check(n_keys > 0, where, "keys is empty");
  check(dim > 0, where, "feature dimension is 0");
  check(nlist > 0, where, "nlist must be positive");
  check(nprobe > 0, where, "nprobe must be positive");
  check(per_list > 0, where, "per_list must be positive");
  check(r > 0, where, "r must be positive");
  check(all_finite(queries, n * dim), where, "queries contains NaN or inf");
  check(all_finite(keys, n_keys * dim), where, "keys contains NaN or inf");
  check(starts[0] == 0 && starts[nlist] == n_keys, where,
        "starts must begin at 0 and end at the number of keys");
  for (int64_t l = 0; l < nlist; ++l)
    check(starts[l] <= starts[l + 1], where, "starts must be non-decreasing");
  for (int64_t j = 0; j < n_keys; ++j)
    check(order[j] >= 0 && order[j] < n_keys, where,
          "order[" + std::to_string(j) + "] = " + std::to_string(order[j]) + " is not a key index");
  for (int64_t t = 0; t < n * nprobe; ++t)
    check(probes[t] >= -1 && probes[t] < nlist, where,
          "probes holds " + std::to_string(probes[t]) + ", outside [-1, nlist)");
}

// Turns one tile row of dot products into keys -(squared distance) in place (a loop
// that vectorises), then pushes the keys that can enter the heap, checked in chunks of 16
// with a branch-free compare: once the heap is full most chunks are rejected at once.
// Keys below `floor` (farther than the query's bound) are skipped as well.
void scan_row(float* row, int64_t cols, float qs, const float* ks, const int64_t* ids, float floor,
              TopKHeap& heap) {
  for (int64_t j = 0; j < cols; ++j) row[j] = -std::max(qs + ks[j] - 2.0f * row[j], 0.0f);
  constexpr int64_t kChunk = 16;
  float thr = std::max(floor, heap.threshold());
  auto push_range = [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      if (!(row[c] < thr)) {
        heap.push(row[c], ids[c]);
        thr = std::max(floor, heap.threshold());
      }
  };
  int64_t c = 0;
  for (; c + kChunk <= cols; c += kChunk) {
    int any = 0;
    for (int64_t t = 0; t < kChunk; ++t) any |= !(row[c + t] < thr);
    if (any) push_range(c, c + kChunk);
  }
  push_range(c, cols);
}

}  // namespace

void ivf_flat_search(const float* queries, int64_t n, const float* keys, int64_t n_keys,
                     int64_t dim, const int64_t* order, const int64_t* starts, int64_t nlist,
                     const int64_t* probes, int64_t nprobe, int64_t per_list, int64_t r,
                     float* dist, int64_t* idx, int n_threads) {
  validate(queries, n, keys, n_keys, dim, order, starts, nlist, probes, nprobe, per_list, r);
  const int team = resolve_threads(n_threads);
  const float inf = std::numeric_limits<float>::infinity();
  int64_t max_list = 0;
  for (int64_t l = 0; l < nlist; ++l) max_list = std::max(max_list, starts[l + 1] - starts[l]);
  const int64_t ktile = std::min(kKeyTile, std::max<int64_t>(1, max_list));
  const int64_t chunk = std::max<int64_t>(1, kMaxSlots / (nprobe * per_list));
  std::vector<float> slot_keys;
  std::vector<int64_t> slot_ids;
  std::vector<int64_t> list_ptr(static_cast<size_t>(nlist + 1));
  std::vector<int64_t> entries;  // (query - c0) * nprobe + slot, grouped by list
  std::vector<float> q_sq(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double s = 0.0;
    for (int64_t p = 0; p < dim; ++p) s += double(queries[i * dim + p]) * queries[i * dim + p];
    q_sq[static_cast<size_t>(i)] = static_cast<float>(s);
  }
  // Per-thread scratch: the gathered keys of one key tile and their norms, the gathered
  // queries of one block, the GEMM tile and the block's heaps.
  std::vector<float> k_rows(static_cast<size_t>(team * ktile * dim));
  std::vector<float> k_sq(static_cast<size_t>(team * ktile));
  std::vector<float> q_rows(static_cast<size_t>(team * kQueryBlock * dim));
  std::vector<float> tiles(static_cast<size_t>(team * kQueryBlock * ktile));
  std::vector<float> heap_keys(static_cast<size_t>(team * kQueryBlock * per_list));
  std::vector<int64_t> heap_ids(static_cast<size_t>(team * kQueryBlock * per_list));
  ParallelErrors errors;
  SerialBlasScope serial_blas;

  std::vector<float> bound(static_cast<size_t>(n), inf);  // per query: skip keys beyond

  for (int64_t c0 = 0; c0 < n; c0 += chunk) {
    const int64_t nc = std::min(chunk, n - c0);
    const int64_t n_slots = nc * nprobe;
    slot_keys.assign(static_cast<size_t>(n_slots * per_list), -inf);
    slot_ids.assign(static_cast<size_t>(n_slots * per_list), -1);
    const int64_t* pc = probes + c0 * nprobe;
    // Two passes.  First each query's first probed list (its nearest, as the coarse top-k
    // lists them): its per_list-th nearest key bounds the distance of any key that can
    // still be among the query's best per_list, so the second pass (all other lists)
    // skips farther keys before they reach a heap.  Most keys of the farther lists fail
    // that bound, which is what makes the per-(query, list) selection cheap.
    for (int pass = 0; pass < 2; ++pass) {
      // Invert the probes of this pass: for each list, the (query, slot) pairs scanning it.
      std::fill(list_ptr.begin(), list_ptr.end(), 0);
      auto in_pass = [&](int64_t t) { return pc[t] >= 0 && ((t % nprobe == 0) == (pass == 0)); };
      for (int64_t t = 0; t < n_slots; ++t)
        if (in_pass(t)) ++list_ptr[static_cast<size_t>(pc[t] + 1)];
      for (int64_t l = 0; l < nlist; ++l) list_ptr[l + 1] += list_ptr[l];
      entries.resize(static_cast<size_t>(list_ptr[nlist]));
      {
        std::vector<int64_t> fill(list_ptr.begin(), list_ptr.end() - 1);
        for (int64_t t = 0; t < n_slots; ++t)
          if (in_pass(t)) entries[static_cast<size_t>(fill[pc[t]]++)] = t;
      }
      // Work items: (list, query block) pairs.
      std::vector<std::pair<int64_t, int64_t>> items;
      for (int64_t l = 0; l < nlist; ++l) {
        const int64_t m = list_ptr[l + 1] - list_ptr[l];
        if (m == 0 || starts[l + 1] == starts[l]) continue;
        // Balanced blocks of at most kQueryBlock queries (no thin remainder GEMM).
        const int64_t nb = (m + kQueryBlock - 1) / kQueryBlock, bs = (m + nb - 1) / nb;
        for (int64_t b = 0; b < m; b += bs) items.emplace_back(l, b | (bs << 32));
      }
      const int64_t n_items = static_cast<int64_t>(items.size());

#pragma omp parallel num_threads(team)
      {
#ifdef DATACREDIT_HAVE_OPENMP
        const int64_t tid = omp_get_thread_num();
#else
        const int64_t tid = 0;
#endif
        float* kr = k_rows.data() + tid * ktile * dim;
        float* ks = k_sq.data() + tid * ktile;
        float* qr = q_rows.data() + tid * kQueryBlock * dim;
        float* tile = tiles.data() + tid * kQueryBlock * ktile;
        float* hk = heap_keys.data() + tid * kQueryBlock * per_list;
        int64_t* hi = heap_ids.data() + tid * kQueryBlock * per_list;
#pragma omp for schedule(dynamic, 1)
        for (int64_t it = 0; it < n_items; ++it) {
          errors.run([&] {
            const int64_t l = items[static_cast<size_t>(it)].first;
            const int64_t packed = items[static_cast<size_t>(it)].second;
            const int64_t b0 = list_ptr[l] + (packed & 0xffffffff), bs = packed >> 32;
            const int64_t m = std::min(bs, list_ptr[l + 1] - b0);
            for (int64_t a = 0; a < m; ++a) {
              const int64_t q = c0 + entries[static_cast<size_t>(b0 + a)] / nprobe;
              std::copy(queries + q * dim, queries + (q + 1) * dim, qr + a * dim);
            }
            const int64_t s = starts[l], e = starts[l + 1];
            const int64_t kk = std::min(per_list, e - s);
            std::vector<TopKHeap> heaps;
            heaps.reserve(static_cast<size_t>(m));
            for (int64_t a = 0; a < m; ++a)
              heaps.emplace_back(hk + a * per_list, hi + a * per_list, kk);
            for (int64_t j0 = s; j0 < e; j0 += ktile) {
              const int64_t cols = std::min(ktile, e - j0);
              for (int64_t j = 0; j < cols; ++j) {
                const float* src = keys + order[j0 + j] * dim;
                float* dst = kr + j * dim;
                float sq = 0.0f;
                for (int64_t p = 0; p < dim; ++p) {
                  dst[p] = src[p];
                  sq += src[p] * src[p];
                }
                ks[j] = sq;
              }
              sgemm_nt(m, cols, dim, qr, dim, kr, dim, tile, cols);
              for (int64_t a = 0; a < m; ++a) {
                const int64_t q = c0 + entries[static_cast<size_t>(b0 + a)] / nprobe;
                scan_row(tile + a * cols, cols, q_sq[static_cast<size_t>(q)], ks, order + j0,
                         -bound[static_cast<size_t>(q)], heaps[static_cast<size_t>(a)]);
              }
            }
            for (int64_t a = 0; a < m; ++a) {
              const int64_t t = entries[static_cast<size_t>(b0 + a)];  // (query - c0, slot)
              const TopKHeap& heap = heaps[static_cast<size_t>(a)];
              std::copy(heap.keys(), heap.keys() + heap.size(), slot_keys.data() + t * per_list);
              std::copy(heap.ids(), heap.ids() + heap.size(), slot_ids.data() + t * per_list);
              // The first list's per_list-th distance (its heap root) bounds the others.
              if (pass == 0 && heap.size() == per_list)
                bound[static_cast<size_t>(c0 + t / nprobe)] = -heap.keys()[0];
            }
          });
        }
      }
      errors.rethrow();
    }
    // Merge: each query's best r of its nprobe * per_list candidates.
#pragma omp parallel num_threads(team)
    {
      std::vector<float> mk(static_cast<size_t>(r));
      std::vector<int64_t> mi(static_cast<size_t>(r));
#pragma omp for schedule(static)
      for (int64_t a = 0; a < nc; ++a) {
        TopKHeap heap(mk.data(), mi.data(), r);
        const float* sk = slot_keys.data() + a * nprobe * per_list;
        const int64_t* si = slot_ids.data() + a * nprobe * per_list;
        for (int64_t t = 0; t < nprobe * per_list; ++t)
          if (si[t] >= 0 && !(sk[t] < heap.threshold())) heap.push(sk[t], si[t]);
        float* od = dist + (c0 + a) * r;
        int64_t* oi = idx + (c0 + a) * r;
        heap.write_sorted(od, oi, -1.0f);
        for (int64_t t = heap.size(); t < r; ++t) {
          od[t] = inf;
          oi[t] = -1;
        }
      }
    }
  }
}

}  // namespace datacredit
