// Internals of the 8-bit PQ scan shared by the flat search (pq.cpp) and the inverted-file
// search (pq_ivf.cpp): codes laid out in planes of sub-space columns, the per-query scan
// state with its pruning bounds, and the block scan.  Not part of the public headers.
#pragma once

#include <cstdint>
#include <vector>

#include "datacredit/pq.hpp"
#include "datacredit/topk.hpp"

namespace datacredit::pq_detail {

// Codes (n x m) regrouped in planes of a few sub-space columns each, so the first plane's
// partial sums reject most codes before the others are read.
struct Planes {
  std::vector<uint8_t> data;
  std::vector<int64_t> offset;  // start of each plane in data
  std::vector<int64_t> width;   // columns of each plane
  std::vector<int64_t> first;   // first sub-space of each plane
};

Planes make_planes(const uint8_t* codes, int64_t n, int64_t m, int threads);

// Per-query scan state: the (minimised) table, the heap and the pruning bounds.
struct QueryState {
  const float* table;       // m x ksub, smaller is better
  std::vector<float> tail;  // tail[p]: lower bound of the sum over planes >= p (minus slack)
  TopKHeap heap;
  const int64_t* id_map = nullptr;  // scan position -> code index (IVF order), or identity
  QueryState(const float* t, float* keys, int64_t* ids, int64_t k) : table(t), heap(keys, ids, k) {}
};

// tail bounds of the query's table over the planes (lower bounds minus rounding slack).
void prepare_bounds(QueryState& st, const Planes& pl, int64_t m, int64_t ksub);

// Scans codes [b0, b1) of the planes for one query into its heap.
void scan_block_any(QueryState& st, const Planes& pl, int64_t ksub, int64_t b0, int64_t b1);

// The byte-table scan (pq_byte_scan.cpp): true when the processor has AVX-512 VBMI,
// ksub = 256 and DATACREDIT_PQ_SCAN is not "scalar".
bool byte_scan_enabled(int64_t ksub);

// Codes (n x m) in groups of 64 rows, sub-space-major inside each group
// (ceil(n / 64) * m * 64 bytes, padding rows hold code 0).
std::vector<uint8_t> make_groups64(const uint8_t* codes, int64_t n, int64_t m, int threads);

// A query's (minimised, ksub = 256) table quantized to bytes, rounded down: the exact
// float ADC sum of a code is >= base + scale * (sum of its bytes).
struct ByteTable {
  std::vector<uint8_t> q;  // m x 256
  double scale = 1.0;
  double base = 0.0;  // sum of the sub-spaces' minima minus rounding slack
};
ByteTable make_byte_table(const float* table, int64_t m);

// Scans codes [b0, b1) (b0 a multiple of 64) of the groups for one query into its heap:
// the same distances (float sums in sub-space order of the row-major `codes`) and ties
// as scan_block_any.
void scan_groups64(const float* table, const ByteTable& bt, int64_t m, const uint8_t* groups,
                   const uint8_t* codes, int64_t b0, int64_t b1, TopKHeap& heap);

// Throws when a code is outside [0, ksub) (nbits < 8).
void validate_codes(const PQShape& shape, const uint8_t* codes, int64_t n, const char* where);

}  // namespace datacredit::pq_detail
