// Inverted-file search with exact squared l2 inside the probed lists ("IVF-Flat"): the
// recall stage of GMValuator's index="ivf".
#pragma once

#include <cstdint>

namespace datacredit {

// Exact squared-l2 top-r of each query over the union of the lists it probes.
//
// The keys are stored contiguously list by list: row p of list_keys (n_keys x dim) is the
// key numbered ids[p], list l holds rows starts[l] .. starts[l+1] (starts has nlist + 1
// non-decreasing entries from 0 to n_keys, empty lists allowed), and key_sq[p] is the
// squared norm of row p (float32 of the double sum).  probes (n x nprobe) names the lists
// query i scans, nearest first (-1: no list; a list at most once per query).  Each query's
// best r keys are written best-first to dist / idx (n x r): squared distances and key ids,
// ties to the lower id (deterministic whatever the thread count); slots beyond the keys
// probed hold +inf / -1.
//
// Work is batched by list: the queries probing a list are gathered, and one GEMM tile per
// (list, query block, key tile) scores them against the list's contiguous rows (no copy,
// norms precomputed), the same sgemm_nt + fused bounded-heap scan as the exact Gram top-k.
// Heaps are per (thread, query), so a query's threshold tightens over all the lists one
// thread scans; they are merged at the end.  Cost O(n * nprobe * L * dim) for lists of L
// keys; memory: the heaps of a block of queries (bounded) plus per-thread tiles.
void ivf_flat_search(const float* queries, int64_t n, const float* list_keys, const float* key_sq,
                     const int64_t* ids, int64_t n_keys, int64_t dim, const int64_t* starts,
                     int64_t nlist, const int64_t* probes, int64_t nprobe, int64_t r, float* dist,
                     int64_t* idx, int n_threads);

}  // namespace datacredit
