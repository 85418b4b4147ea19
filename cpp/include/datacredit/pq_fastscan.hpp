// 4-bit product-quantization "fast scan": codes packed two per byte in blocks of 32
// vectors, lookup tables quantized to 8 bits, sums accumulated in uint16 by in-register
// byte shuffles (AVX2 `vpshufb`), fused top-k.  A portable scalar path gives bit-identical
// results (same quantized tables, same integer sums, same tie rule).
//
// Packed layout (pq_fastscan_pack).  With m sub-spaces of 4-bit codes (ksub = 16):
//   m_pad = m rounded up to even (an odd m gets one extra sub-space with code 0 and an
//   all-zero table), n_pad = n rounded up to a multiple of 32 (padding vectors get code 0
//   in every sub-space; their results are never reported).
//   The packed array holds n_pad / 32 blocks of m_pad / 2 rows of 32 bytes:
//     packed[(b * (m_pad / 2) + p) * 32 + j] = code[32 b + j][2p] | code[32 b + j][2p + 1] << 4
//   i.e. byte j of row p of block b holds the codes of sub-spaces 2p (low nibble) and
//   2p + 1 (high nibble) of vector 32 b + j.  Size: n_pad * m_pad / 2 bytes.
//
// Quantized tables (pq_fastscan_quantize_tables).  From the float ADC tables T (m x 16 per
// query; inner products are negated first so that smaller is always better):
//   bias_s = min_j T[s][j],  range_s = max_j T[s][j] - bias_s   (in double),
//   scale  = float(min(255 / max_s range_s, (65535 - m) / sum_s range_s, 1e30))
//            (1 when every range is 0),
//   lut[s][j] = (uint8) nearbyint((T[s][j] - bias_s) * scale)  in [0, 255],
// the last line in float32 (round half to even).  Every entry fits in 8 bits and the sum
// over the m sub-spaces of one code (each entry rounded up by at most 1/2) fits in 16
// bits: no overflow in the uint16 accumulators.
// The integer score of a code c is S(c) = sum_s lut[s][c_s]; its dequantized distance is
//   l2: S(c) / scale + sum_s bias_s,   ip: -(S(c) / scale + sum_s bias_s)
// (float32: float(S) / scale + bias with bias = float32(sum_s bias_s) summed in double),
// within m * 0.5 / scale (+ float rounding) of the float ADC distance.
//
// Search returns the k codes of smallest S (ties to the lower code index), best first.
// Every function here requires 1 <= m <= 16384 (so that (65535 - m) stays a useful budget).
//
// Inverted-list (IVF) layout (pq_fastscan_pack_ivf).  With lists[i] in [0, nlist) the list
// of code i (from a coarse quantizer), the codes are grouped by list (stable: index order
// inside a list) and every list is padded to whole blocks of 32:
//   list l occupies blocks [list_blocks[l], list_blocks[l + 1]), ceil(count_l / 32) blocks
//   (none for an empty list), list_blocks[0] = 0, n_blocks = list_blocks[nlist];
//   ids[32 b + j] (n_blocks * 32 int64) is the original index of the code at position j of
//   block b, -1 for a padding position (code 0, only at the end of a list);
//   the blocks themselves are laid out as above (packed: n_blocks * m_pad / 2 * 32 bytes).
#pragma once

#include <cstdint>

#include "datacredit/pq.hpp"

namespace datacredit {

// m rounded up to even, and n rounded up to a multiple of 32 (see the layout above).
inline int64_t fastscan_m_pad(int64_t m) { return m + (m & 1); }
inline int64_t fastscan_n_pad(int64_t n) { return (n + 31) / 32 * 32; }
inline int64_t fastscan_packed_bytes(int64_t n, int64_t m) {
  return fastscan_n_pad(n) * fastscan_m_pad(m) / 2;
}

// Packs codes (n x m uint8, each < 16) into `packed` (fastscan_packed_bytes(n, m) bytes).
// Throws on a code >= 16.  O(n m), parallel over blocks.
void pq_fastscan_pack(const uint8_t* codes, int64_t n, int64_t m, uint8_t* packed,
                      int n_threads = 0);

// Inverse of pq_fastscan_pack for the n real vectors: codes (n x m).
void pq_fastscan_unpack(const uint8_t* packed, int64_t n, int64_t m, uint8_t* codes);

// Quantizes float tables (nq x m x 16) as defined above: lut (nq x m x 16) uint8,
// scale (nq) and bias (nq, the float32 sum of the per-sub-space minima, after the
// negation for ip).  Throws on NaN / inf tables.
void pq_fastscan_quantize_tables(const float* tables, int64_t nq, int64_t m, PQMetric metric,
                                 uint8_t* lut, float* scale, float* bias, int n_threads = 0);

// The k best of the n packed codes per query from float tables (nq x m x 16), through the
// quantized tables above: indices (nq x k) of the k smallest integer scores (ties to the
// lower index) and their dequantized distances (nq x k; l2 ascending, ip descending).
// Requires 1 <= k <= n.  Parallel over groups of queries, and over code ranges when there
// are fewer query groups than threads.  `force_scalar` selects the portable path (the AVX2
// path is used when the CPU supports it otherwise); both give identical results.
// Cost O(nq * n * m / 2) byte shuffles (32 codes per instruction on AVX2).
void pq_fastscan_search(const float* tables, int64_t nq, int64_t m, const uint8_t* packed,
                        int64_t n, int64_t k, PQMetric metric, float* distances, int64_t* indices,
                        int n_threads = 0, bool force_scalar = false);

// Exact re-ranking of fast-scan candidates: for each query, the float ADC distance
// (sum_s T[s][c_s] in float32, sub-space order) of its kc candidates (cand: nq x kc code
// indices in [0, n), e.g. from pq_fastscan_search with k = kc) and the k best of them
// (1 <= k <= kc; l2 ascending, ip descending, ties to the lower index).  O(nq kc m).
void pq_fastscan_rerank(const float* tables, int64_t nq, int64_t m, const uint8_t* packed,
                        int64_t n, const int64_t* cand, int64_t kc, int64_t k, PQMetric metric,
                        float* distances, int64_t* indices, int n_threads = 0);

// Block ranges of the inverted lists (see the IVF layout): writes list_blocks (nlist + 1)
// and returns n_blocks = list_blocks[nlist].  Throws on a list outside [0, nlist).  O(n + nlist).
int64_t pq_fastscan_ivf_blocks(const int64_t* lists, int64_t n, int64_t nlist,
                               int64_t* list_blocks);

// Packs codes (n x m uint8, each < 16) in the IVF layout: list_blocks from
// pq_fastscan_ivf_blocks, packed (list_blocks[nlist] * 32 * m_pad / 2 bytes), ids
// (list_blocks[nlist] * 32).  O(n m + nlist), parallel over blocks.
void pq_fastscan_pack_ivf(const uint8_t* codes, int64_t n, int64_t m, const int64_t* lists,
                          int64_t nlist, const int64_t* list_blocks, uint8_t* packed, int64_t* ids,
                          int n_threads = 0);

// IVF fast scan: for each query, only the blocks of its nprobe probed lists (probes:
// nq x nprobe, distinct lists, e.g. the nearest coarse centroids) are scanned with the same
// kernels as pq_fastscan_search.  Results as pq_fastscan_search, restricted to the codes of
// the probed lists: the k smallest integer scores, ties to the lower ORIGINAL index (lists
// are not visited in index order, so a candidate enters when its score is <= the heap's
// worst, not <, and the heap breaks ties by index), indices reported through ids.  Slots
// beyond the codes of the probed lists get distance +inf (-inf for ip) and index -1.
// n is the number of codes (ids lie in [-1, n)); requires 1 <= k <= n, 1 <= nprobe <= nlist.
// Parallel over groups of queries; inside a group, the queries that probe the same list
// share each pass over its blocks (up to 4 tables per pass), every query's first probe
// (its nearest list) before the others.  The result does not depend on the visiting order,
// the grouping or the thread count.  Cost O(nq * (probed blocks) * 32 * m / 2) byte
// shuffles, plus an O(n_blocks * 32 + nq * nprobe) check of ids and probes per call.
void pq_fastscan_search_ivf(const float* tables, int64_t nq, int64_t m, const uint8_t* packed,
                            const int64_t* list_blocks, int64_t nlist, const int64_t* ids,
                            int64_t n, const int64_t* probes, int64_t nprobe, int64_t k,
                            PQMetric metric, float* distances, int64_t* indices, int n_threads = 0,
                            bool force_scalar = false);

// Re-ranking in the IVF layout: as pq_fastscan_rerank, with positions (n) the packed
// position of each code index (the inverse of ids; every position < list_blocks[nlist] * 32
// = n_positions).  Candidates equal to -1 (padding of pq_fastscan_search_ivf) are skipped;
// slots beyond the valid candidates get distance +inf (-inf for ip) and index -1.
void pq_fastscan_rerank_ivf(const float* tables, int64_t nq, int64_t m, const uint8_t* packed,
                            int64_t n_positions, const int64_t* positions, int64_t n,
                            const int64_t* cand, int64_t kc, int64_t k, PQMetric metric,
                            float* distances, int64_t* indices, int n_threads = 0);

// Whether pq_fastscan_search would use the AVX2 kernel on this CPU.
bool pq_fastscan_has_avx2();

}  // namespace datacredit
