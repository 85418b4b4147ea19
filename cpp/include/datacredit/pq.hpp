// Product quantization: k-means codebooks per sub-space, encoding, decoding and
// asymmetric-distance (ADC) search with per-query lookup tables and fused top-k.
//
// A vector x (dim floats) is cut into m sub-vectors of dsub = dim / m floats; sub-vector s
// is replaced by the index of its nearest centroid among ksub = 2^nbits centroids of
// sub-space s.  Codes are one byte per sub-space (nbits <= 8), row-major (n x m).
// Centroids are stored (m x ksub x dsub), row-major.
//
// ADC distance of a query q to a code c: sum_s T[s][c_s] with the lookup table
//   l2: T[s][j] = |q_s - C[s][j]|^2        (smallest first)
//   ip: T[s][j] = q_s . C[s][j]            (largest first)
#pragma once

#include <cstdint>
#include <string>

namespace datacredit {

enum class PQMetric { kL2, kInnerProduct };

// "l2" or "ip"; anything else throws std::invalid_argument.
PQMetric parse_pq_metric(const std::string& name);

struct PQShape {
  int64_t dim = 0;
  int64_t m = 0;
  int nbits = 8;
  int64_t dsub() const { return dim / m; }
  int64_t ksub() const { return int64_t{1} << nbits; }
};

// Checks dim > 0, m > 0, dim % m == 0, 1 <= nbits <= 8 (throws naming `where`).
void check_pq_shape(const PQShape& shape, const char* where);

// Trains the codebooks: per sub-space, Lloyd's k-means on a seeded sample of at most
// max_points_per_centroid * ksub rows of x (n x dim), every sub-space initialised from the
// same ksub distinct sample rows (aligned starts: better neighbour ranking than independent
// ones), n_iter iterations, empty clusters re-seeded by splitting the largest one.
// Deterministic for a given seed, whatever the thread count.  Needs n >= ksub.
// Cost O(n_iter * n_sample * ksub * dim) through GEMM.  centroids: (m x ksub x dsub).
void pq_train(const PQShape& shape, const float* x, int64_t n, int n_iter,
              int64_t max_points_per_centroid, uint64_t seed, float* centroids, int n_threads = 0);

// Nearest centroid per sub-space (ties to the lower index): codes (n x m) uint8.
void pq_encode(const PQShape& shape, const float* centroids, const float* x, int64_t n,
               uint8_t* codes, int n_threads = 0);

// Reconstruction x_hat (n x dim) from codes (n x m).  Throws on codes >= ksub.
void pq_decode(const PQShape& shape, const float* centroids, const uint8_t* codes, int64_t n,
               float* x_hat, int n_threads = 0);

// Lookup tables (nq x m x ksub) of the queries (nq x dim), as defined above.
void pq_compute_tables(const PQShape& shape, const float* centroids, const float* queries,
                       int64_t nq, PQMetric metric, float* tables, int n_threads = 0);

// The k best codes per query by ADC: distances (nq x k; squared l2 ascending, or inner
// products descending) and indices (nq x k), ties to the lower code index.  Equal to a
// brute-force ADC scan over the same tables (partial sums are accumulated in sub-space
// order; codes whose partial sum plus the minimum of the remaining tables cannot beat
// the current k-th best are abandoned early, which never changes the result).
// Parallel over queries; codes are re-laid out once per call so the first sub-spaces
// of many codes stream from cache.  Requires 1 <= k <= n_codes.
void pq_search(const PQShape& shape, const float* centroids, const float* queries, int64_t nq,
               const uint8_t* codes, int64_t n_codes, int64_t k, PQMetric metric, float* distances,
               int64_t* indices, int n_threads = 0);

// Same search with precomputed tables (nq x m x ksub), e.g. from pq_compute_tables.
void pq_search_tables(const PQShape& shape, const float* tables, int64_t nq, const uint8_t* codes,
                      int64_t n_codes, int64_t k, PQMetric metric, float* distances,
                      int64_t* indices, int n_threads = 0);

// Plain k-means (the coarse quantizer of IVF): Lloyd iterations on a seeded sample of at
// most max_points_per_centroid * k rows of x (n x dim), GEMM assignment with the BLAS's
// own threads.  centroids: (k x dim).  Deterministic for a given seed.
void kmeans(const float* x, int64_t n, int64_t dim, int64_t k, int n_iter,
            int64_t max_points_per_centroid, uint64_t seed, float* centroids, int n_threads = 0);

// Argument checks shared by the IVF searches (8-bit and fast scan): non-empty queries and
// codes, nlist >= 1, 1 <= nprobe <= nlist, 1 <= k <= n_codes (throws naming `where`).
void check_ivf_search(const char* where, int64_t nq, int64_t n_codes, int64_t nlist, int64_t nprobe,
                      int64_t k);

// Inverted-file (IVF) search: only the codes whose list (lists[i] in [0, nlist), from a
// coarse quantizer) is among the query's nprobe probed lists (probes: nq x nprobe) are
// scanned, with the same tables, pruning and tie rule.  Slots beyond the number of codes
// in the probed lists get distance +inf (-inf for ip) and index -1.
void pq_search_ivf(const PQShape& shape, const float* tables, int64_t nq, const uint8_t* codes,
                   int64_t n_codes, const int64_t* lists, int64_t nlist, const int64_t* probes,
                   int64_t nprobe, int64_t k, PQMetric metric, float* distances, int64_t* indices,
                   int n_threads = 0);

}  // namespace datacredit
