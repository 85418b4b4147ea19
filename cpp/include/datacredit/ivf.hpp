// Inverted-file search with exact squared l2 inside the probed lists ("IVF-Flat"): the
// recall stage of GMValuator's index="ivf".
#pragma once

#include <cstdint>

namespace datacredit {

// Exact squared-l2 top candidates of each query inside the lists it probes.
//
// keys (n_keys x dim) stay in their own order; list l holds the keys
// order[starts[l] .. starts[l+1]) (starts has nlist + 1 non-decreasing entries ending at
// n_keys).  probes (n x nprobe) names the lists query i scans (-1: no list).  Each
// (query, probed list) keeps its best `per_list` keys; each query's best `r` of those are
// written best-first to dist / idx (n x r), squared distances and key indices, ties to the
// lower key index (deterministic whatever the thread count); slots beyond the candidates
// found hold +inf / -1.  Keys farther than the per_list-th nearest key of the query's
// first probed list (probes are nearest first) are skipped: they can never be among its
// best per_list, so those are exact; with r > per_list the slots after them hold only
// keys within that distance.
//
// Work is batched by list (first lists, then the others under that bound): the queries probing a
// list are gathered, and one GEMM tile per (list, query block) scores them against the list's keys
// (gathered once per call), so the cost is O(n * nprobe * L * dim) for lists of L keys with few
// per-list overheads; then a bounded-heap merge per query, O(n * nprobe * per_list * log r).
// Memory: the per-(query, list) candidates of a block of queries (bounded) plus per-thread tiles.
void ivf_flat_search(const float* queries, int64_t n, const float* keys, int64_t n_keys,
                     int64_t dim, const int64_t* order, const int64_t* starts, int64_t nlist,
                     const int64_t* probes, int64_t nprobe, int64_t per_list, int64_t r,
                     float* dist, int64_t* idx, int n_threads);

}  // namespace datacredit
