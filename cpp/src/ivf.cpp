#include "datacredit/ivf.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <string>
#include <utility>
#include <vector>

#include "datacredit/blas.hpp"
#include "datacredit/common.hpp"
#include "datacredit/topk.hpp"

#ifdef DATACREDIT_HAVE_OPENMP
#include <omp.h>
#endif

namespace datacredit {

namespace {

// Queries per GEMM tile and keys per tile, as in the exact Gram top-k: a
// (kQueryBlock x kKeyTile) float tile per thread stays in cache while it is scanned.
constexpr int64_t kQueryBlock = 512;
constexpr int64_t kKeyTile = 512;
// Heap slots (thread x query x r) held at once: 12 bytes each (about 48 MB).
constexpr int64_t kMaxSlots = int64_t{1} << 22;

void validate(const float* queries, int64_t n, const float* list_keys, const float* key_sq,
              const int64_t* ids, int64_t n_keys, int64_t dim, const int64_t* starts, int64_t nlist,
              const int64_t* probes, int64_t nprobe, int64_t r) {
  const char* where = "ivf_flat_search";
  check(n > 0, where, "queries is empty");
  check(n_keys > 0, where, "keys is empty");
  check(dim > 0, where, "feature dimension is 0");
  check(nlist > 0, where, "nlist must be positive");
  check(nprobe > 0, where, "nprobe must be positive");
  check(r > 0, where, "r must be positive");
  check(all_finite(queries, n * dim), where, "queries contains NaN or inf");
  check(all_finite(list_keys, n_keys * dim), where, "keys contains NaN or inf");
  check(all_finite(key_sq, n_keys), where, "key norms contain NaN or inf");
  check(starts[0] == 0 && starts[nlist] == n_keys, where,
        "starts must begin at 0 and end at the number of keys");
  for (int64_t l = 0; l < nlist; ++l)
    check(starts[l] <= starts[l + 1], where, "starts must be non-decreasing");
  // (messages are built only on failure: these loops run over every key and probe)
  for (int64_t p = 0; p < n_keys; ++p)
    if (ids[p] < 0) check(false, where, "ids[" + std::to_string(p) + "] is negative");
  // A list probed twice by one query would enter its heap twice.
  std::vector<int64_t> seen(static_cast<size_t>(nlist), -1);
  for (int64_t i = 0; i < n; ++i)
    for (int64_t s = 0; s < nprobe; ++s) {
      const int64_t l = probes[i * nprobe + s];
      if (l < -1 || l >= nlist)
        check(false, where, "probes holds " + std::to_string(l) + ", outside [-1, nlist)");
      if (l < 0) continue;
      if (seen[static_cast<size_t>(l)] == i)
        check(false, where,
              "probes row " + std::to_string(i) + " lists list " + std::to_string(l) + " twice");
      seen[static_cast<size_t>(l)] = i;
    }
}

// Turns one tile row of dot products into keys -(squared distance) in place (a loop
// that vectorises), then pushes the keys that can enter the heap, checked in chunks of 16
// with a branch-free compare: once the heap is full most chunks are rejected at once.
void scan_row(float* row, int64_t cols, float qs, const float* ks, const int64_t* ids,
              TopKHeap& heap) {
  for (int64_t j = 0; j < cols; ++j) row[j] = -std::max(qs + ks[j] - 2.0f * row[j], 0.0f);
  constexpr int64_t kChunk = 16;
  float thr = heap.threshold();
  auto push_range = [&](int64_t c0, int64_t c1) {
    for (int64_t c = c0; c < c1; ++c)
      if (!(row[c] < thr)) {
        heap.push(row[c], ids[c]);
        thr = heap.threshold();
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

void ivf_flat_search(const float* queries, int64_t n, const float* list_keys, const float* key_sq,
                     const int64_t* ids, int64_t n_keys, int64_t dim, const int64_t* starts,
                     int64_t nlist, const int64_t* probes, int64_t nprobe, int64_t r, float* dist,
                     int64_t* idx, int n_threads) {
  validate(queries, n, list_keys, key_sq, ids, n_keys, dim, starts, nlist, probes, nprobe, r);
  const int team = resolve_threads(n_threads);
  const float inf = std::numeric_limits<float>::infinity();
  const int64_t chunk = std::max<int64_t>(1, kMaxSlots / (int64_t{team} * r));
  std::vector<float> q_sq(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i) {
    double s = 0.0;
    for (int64_t p = 0; p < dim; ++p) s += double(queries[i * dim + p]) * queries[i * dim + p];
    q_sq[static_cast<size_t>(i)] = static_cast<float>(s);
  }
  const int64_t nc_max = std::min(chunk, n);
  // Per (thread, query of the chunk): a bounded heap of r (keys, ids, size).
  std::vector<float> heap_keys(static_cast<size_t>(team * nc_max * r));
  std::vector<int64_t> heap_ids(static_cast<size_t>(team * nc_max * r));
  std::vector<int64_t> heap_size(static_cast<size_t>(team * nc_max));
  // Per thread: the gathered queries of one block and the GEMM tile.
  std::vector<float> q_rows(static_cast<size_t>(team * kQueryBlock * dim));
  std::vector<float> tiles(static_cast<size_t>(team * kQueryBlock * kKeyTile));
  std::vector<int64_t> list_ptr(static_cast<size_t>(nlist + 1));
  std::vector<int64_t> entries;                    // query - c0, grouped by list
  std::vector<std::pair<int64_t, int64_t>> items;  // (list, first entry | block size << 32)
  ParallelErrors errors;
  SerialBlasScope serial_blas;

  for (int64_t c0 = 0; c0 < n; c0 += chunk) {
    const int64_t nc = std::min(chunk, n - c0);
    std::fill(heap_size.begin(), heap_size.end(), 0);
    const int64_t* pc = probes + c0 * nprobe;
    // Invert the probes: for each list, the queries scanning it.
    std::fill(list_ptr.begin(), list_ptr.end(), 0);
    for (int64_t t = 0; t < nc * nprobe; ++t)
      if (pc[t] >= 0) ++list_ptr[static_cast<size_t>(pc[t] + 1)];
    for (int64_t l = 0; l < nlist; ++l) list_ptr[l + 1] += list_ptr[l];
    entries.resize(static_cast<size_t>(list_ptr[nlist]));
    {
      std::vector<int64_t> fill(list_ptr.begin(), list_ptr.end() - 1);
      for (int64_t t = 0; t < nc * nprobe; ++t)
        if (pc[t] >= 0) entries[static_cast<size_t>(fill[pc[t]]++)] = t / nprobe;
    }
    // Work items: (list, query block) pairs, larger lists first (better load balance).
    items.clear();
    for (int64_t l = 0; l < nlist; ++l) {
      const int64_t m = list_ptr[l + 1] - list_ptr[l];
      if (m == 0 || starts[l + 1] == starts[l]) continue;
      // Balanced blocks of at most kQueryBlock queries (no thin remainder GEMM).
      const int64_t nb = (m + kQueryBlock - 1) / kQueryBlock, bs = (m + nb - 1) / nb;
      for (int64_t b = 0; b < m; b += bs) items.emplace_back(l, b | (bs << 32));
    }
    std::stable_sort(items.begin(), items.end(), [&](const auto& a, const auto& b) {
      const int64_t wa = (starts[a.first + 1] - starts[a.first]) * (a.second >> 32);
      const int64_t wb = (starts[b.first + 1] - starts[b.first]) * (b.second >> 32);
      return wa > wb;
    });
    const int64_t n_items = static_cast<int64_t>(items.size());

#pragma omp parallel num_threads(team)
    {
#ifdef DATACREDIT_HAVE_OPENMP
      const int64_t tid = omp_get_thread_num();
#else
      const int64_t tid = 0;
#endif
      float* qr = q_rows.data() + tid * kQueryBlock * dim;
      float* tile = tiles.data() + tid * kQueryBlock * kKeyTile;
      float* hk = heap_keys.data() + tid * nc_max * r;
      int64_t* hi = heap_ids.data() + tid * nc_max * r;
      int64_t* hs = heap_size.data() + tid * nc_max;
      std::vector<TopKHeap> heaps;
      heaps.reserve(static_cast<size_t>(kQueryBlock));
#pragma omp for schedule(dynamic, 1)
      for (int64_t it = 0; it < n_items; ++it) {
        errors.run([&] {
          const int64_t l = items[static_cast<size_t>(it)].first;
          const int64_t packed = items[static_cast<size_t>(it)].second;
          const int64_t b0 = list_ptr[l] + (packed & 0xffffffff), bs = packed >> 32;
          const int64_t m = std::min(bs, list_ptr[l + 1] - b0);
          const int64_t* qs_of = entries.data() + b0;  // queries (- c0) of this block
          heaps.clear();
          for (int64_t a = 0; a < m; ++a) {
            const int64_t q = qs_of[a];
            std::copy(queries + (c0 + q) * dim, queries + (c0 + q + 1) * dim, qr + a * dim);
            heaps.emplace_back(hk + q * r, hi + q * r, r, hs[q]);
          }
          const int64_t s = starts[l], e = starts[l + 1];
          for (int64_t j0 = s; j0 < e; j0 += kKeyTile) {
            const int64_t cols = std::min(kKeyTile, e - j0);
            sgemm_nt(m, cols, dim, qr, dim, list_keys + j0 * dim, dim, tile, cols);
            for (int64_t a = 0; a < m; ++a) {
              const int64_t q = qs_of[a];
              scan_row(tile + a * cols, cols, q_sq[static_cast<size_t>(c0 + q)], key_sq + j0,
                       ids + j0, heaps[static_cast<size_t>(a)]);
            }
          }
          for (int64_t a = 0; a < m; ++a) hs[qs_of[a]] = heaps[static_cast<size_t>(a)].size();
        });
      }
    }
    errors.rethrow();
    // Merge: each query's best r of its threads' heaps, written best first.
#pragma omp parallel for num_threads(team) schedule(static)
    for (int64_t a = 0; a < nc; ++a) {
      std::vector<float> mk(static_cast<size_t>(r));
      std::vector<int64_t> mi(static_cast<size_t>(r));
      TopKHeap heap(mk.data(), mi.data(), r);
      for (int64_t t = 0; t < team; ++t) {
        const float* k = heap_keys.data() + (t * nc_max + a) * r;
        const int64_t* id = heap_ids.data() + (t * nc_max + a) * r;
        const int64_t sz = heap_size[static_cast<size_t>(t * nc_max + a)];
        for (int64_t e = 0; e < sz; ++e) heap.push(k[e], id[e]);
      }
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

}  // namespace datacredit
