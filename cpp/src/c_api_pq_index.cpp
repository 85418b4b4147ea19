// The C API of the PQ / IVF-PQ index artifact (dc_pq_index_*): loading and validating the
// quantizer and packed-codes files written by python/datacredit/kernels/pq.py, and search.
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "c_api_internal.hpp"
#include "datacredit/c_api.h"
#include "datacredit/gram.hpp"
#include "datacredit/pq.hpp"
#include "datacredit/pq_fastscan.hpp"

namespace {
using datacredit::capi::Artifact;
using datacredit::capi::as;
using datacredit::capi::check_format;
using datacredit::capi::DType;
using datacredit::capi::finite;
using datacredit::capi::guarded;
using datacredit::capi::meta_int;
using datacredit::capi::meta_str;
using datacredit::capi::open_artifact;
using datacredit::capi::raise;
using datacredit::capi::require;
using datacredit::capi::tensor;
using datacredit::capi::threads_of;
}  // namespace

struct dc_pq_index {
  Artifact quantizer, codes;
  datacredit::PQShape shape;
  datacredit::PQMetric metric = datacredit::PQMetric::kL2;
  int64_t n = 0, nlist = 0, nprobe = 1, n_blocks = 0;
  const float* centroids = nullptr;      // m x 16 x dsub
  const float* coarse = nullptr;         // nlist x d
  const uint8_t* packed = nullptr;       // n_blocks x m_pad/2 x 32
  const int64_t* list_blocks = nullptr;  // nlist + 1
  const int64_t* ids = nullptr;          // n_blocks * 32
  std::vector<int64_t> positions;        // n: inverse of ids (IVF only)
};

extern "C" {

static void load_pq_index(const char* qpath, const void* qbuf, size_t qsize, const char* cpath,
                          const void* cbuf, size_t csize, dc_pq_index** out) {
  const char* where = "dc_pq_index_load";
  require(out != nullptr, where, "out is NULL");
  *out = nullptr;
  std::unique_ptr<dc_pq_index> h(new dc_pq_index());
  open_artifact(qpath, qbuf, qsize, where, &h->quantizer);
  open_artifact(cpath, cbuf, csize, where, &h->codes);
  const Artifact& q = h->quantizer;
  const Artifact& c = h->codes;
  check_format(q, "datacredit.product_quantizer", where);
  check_format(c, "datacredit.packed_codes", where);
  const int64_t d = meta_int(q, "d", where), m = meta_int(q, "m", where);
  const int64_t nbits = meta_int(q, "nbits", where);
  if (nbits != 4) raise(DC_ERR_FORMAT, where, "the index needs a 4-bit quantizer (fast scan)");
  if (d < 1 || m < 1 || m > 16384 || d % m != 0)
    raise(DC_ERR_FORMAT, where,
          "invalid quantizer shape d = " + std::to_string(d) + ", m = " + std::to_string(m));
  h->shape = datacredit::PQShape{d, m, 4};
  const std::string metric = meta_str(q, "metric", where);
  if (metric == "l2")
    h->metric = datacredit::PQMetric::kL2;
  else if (metric == "ip")
    h->metric = datacredit::PQMetric::kInnerProduct;
  else
    raise(DC_ERR_FORMAT, where, "unknown metric '" + metric + "'");
  h->nlist = meta_int(q, "nlist", where);
  h->nprobe = meta_int(q, "nprobe", where);
  h->centroids = as<float>(tensor(q, "centroids", DType::kF32, {m, 16, d / m}, where));
  if (!finite(h->centroids, m * 16 * (d / m)))
    raise(DC_ERR_FORMAT, where, "centroids hold NaN or inf");
  if (h->nlist > 0) {
    if (h->nprobe < 1 || h->nprobe > h->nlist)
      raise(DC_ERR_FORMAT, where, "nprobe outside [1, nlist]");
    h->coarse = as<float>(tensor(q, "coarse_centroids", DType::kF32, {h->nlist, d}, where));
    if (!finite(h->coarse, h->nlist * d))
      raise(DC_ERR_FORMAT, where, "coarse centroids hold NaN or inf");
  }
  // Packed codes.
  h->n = meta_int(c, "n", where);
  if (meta_int(c, "m", where) != m)
    raise(DC_ERR_FORMAT, where, "packed codes and quantizer differ in m");
  if (h->n < 1) raise(DC_ERR_FORMAT, where, "packed codes hold no code");
  auto it = c.file.tensors.find("data");
  if (it == c.file.tensors.end() || it->second.shape.size() != 3)
    raise(DC_ERR_FORMAT, where, "tensor 'data' is missing or not 3-d");
  h->n_blocks = it->second.shape[0];
  const int64_t rows = datacredit::fastscan_m_pad(m) / 2;
  h->packed = as<uint8_t>(tensor(c, "data", DType::kU8, {h->n_blocks, rows, 32}, where));
  const bool has_lists = c.file.tensors.count("list_blocks") > 0;
  if (has_lists != (h->nlist > 0))
    raise(DC_ERR_FORMAT, where,
          has_lists ? "codes are packed with lists but the quantizer has no coarse quantizer"
                    : "the quantizer has lists but the codes are packed without them");
  if (!has_lists) {
    if (h->n_blocks != (h->n + 31) / 32)
      raise(DC_ERR_FORMAT, where, "the number of blocks does not fit n");
  } else {
    h->list_blocks = as<int64_t>(tensor(c, "list_blocks", DType::kI64, {h->nlist + 1}, where));
    if (h->n_blocks > std::numeric_limits<int64_t>::max() / 32)
      raise(DC_ERR_FORMAT, where, "too many blocks");
    h->ids = as<int64_t>(tensor(c, "ids", DType::kI64, {h->n_blocks * 32}, where));
    if (h->list_blocks[0] != 0 || h->list_blocks[h->nlist] != h->n_blocks)
      raise(DC_ERR_FORMAT, where, "list_blocks does not span the blocks");
    for (int64_t l = 0; l < h->nlist; ++l)
      if (h->list_blocks[l + 1] < h->list_blocks[l])
        raise(DC_ERR_FORMAT, where, "list_blocks decreases");
    // The metadata's n is untrusted: it sizes the inverse map below, so it is checked
    // against the blocks actually in the file (each holds 32 codes) before allocating.
    if (h->n > h->n_blocks * 32)
      raise(DC_ERR_FORMAT, where,
            "n = " + std::to_string(h->n) + " codes but the file holds " +
                std::to_string(h->n_blocks) + " blocks of 32");
    // ids: every code exactly once, -1 for padding; the inverse map for the re-rank.
    h->positions.assign(static_cast<size_t>(h->n), -1);
    int64_t seen = 0;
    for (int64_t p = 0; p < h->n_blocks * 32; ++p) {
      const int64_t id = h->ids[p];
      if (id == -1) continue;
      if (id < 0 || id >= h->n || h->positions[id] != -1)
        raise(DC_ERR_FORMAT, where, "ids is not a permutation of the codes (plus -1 padding)");
      h->positions[id] = p;
      ++seen;
    }
    if (seen != h->n) raise(DC_ERR_FORMAT, where, "ids does not hold every code");
  }
  // Codes beyond 4 bits cannot occur in packed nibbles; nothing else to check in `data`.
  *out = h.release();
}

int dc_pq_index_load(const char* quantizer_path, const char* codes_path, dc_pq_index** out) {
  return guarded([&] {
    require(quantizer_path && codes_path, "dc_pq_index_load", "a path is NULL");
    load_pq_index(quantizer_path, nullptr, 0, codes_path, nullptr, 0, out);
  });
}

int dc_pq_index_load_buffer(const void* quantizer, size_t quantizer_size, const void* codes,
                            size_t codes_size, dc_pq_index** out) {
  return guarded([&] {
    require((quantizer || !quantizer_size) && (codes || !codes_size), "dc_pq_index_load_buffer",
            "a buffer is NULL");
    load_pq_index(nullptr, quantizer, quantizer_size, nullptr, codes, codes_size, out);
  });
}

int dc_pq_index_dim(const dc_pq_index* h, int64_t* d, int64_t* n, int64_t* nlist) {
  return guarded([&] {
    require(h != nullptr, "dc_pq_index_dim", "handle is NULL");
    if (d) *d = h->shape.dim;
    if (n) *n = h->n;
    if (nlist) *nlist = h->nlist;
  });
}

int dc_pq_index_search(const dc_pq_index* h, const float* queries, int64_t nq, int64_t d, int64_t k,
                       int64_t nprobe, int64_t rerank, int n_threads, float* distances,
                       int64_t* indices) {
  return guarded([&] {
    const char* where = "dc_pq_index_search";
    require(h != nullptr, where, "handle is NULL");
    require(queries && distances && indices, where, "queries, distances or indices is NULL");
    require(nq >= 1, where, "nq must be >= 1");
    require(d == h->shape.dim, where,
            "d = " + std::to_string(d) + " but the index has d = " + std::to_string(h->shape.dim));
    require(k >= 1 && k <= h->n, where,
            "k = " + std::to_string(k) + " must be in [1, n = " + std::to_string(h->n) + "]");
    require(rerank == 0 || (rerank >= k && rerank <= h->n), where, "rerank must be 0 or in [k, n]");
    require(finite(queries, nq * d), where, "queries contain NaN or inf");
    const int threads = threads_of(n_threads);
    const int64_t m = h->shape.m, kc = rerank ? rerank : k;
    std::vector<float> tables(static_cast<size_t>(nq * m * 16));
    datacredit::pq_compute_tables(h->shape, h->centroids, queries, nq, h->metric, tables.data(),
                                  threads);
    std::vector<float> cd(static_cast<size_t>(nq * kc));
    std::vector<int64_t> ci(static_cast<size_t>(nq * kc));
    float* out_d = rerank ? cd.data() : distances;
    int64_t* out_i = rerank ? ci.data() : indices;
    if (h->nlist == 0) {
      require(nprobe == 0, where, "nprobe is only used with an IVF index");
      datacredit::pq_fastscan_search(tables.data(), nq, m, h->packed, h->n, kc, h->metric, out_d,
                                     out_i, threads);
      if (rerank)
        datacredit::pq_fastscan_rerank(tables.data(), nq, m, h->packed, h->n, ci.data(), kc, k,
                                       h->metric, distances, indices, threads);
      return;
    }
    const int64_t np = nprobe ? nprobe : h->nprobe;
    require(np >= 1 && np <= h->nlist, where,
            "nprobe must be in [1, nlist = " + std::to_string(h->nlist) + "]");
    std::vector<float> pd(static_cast<size_t>(nq * np));
    std::vector<int64_t> probes(static_cast<size_t>(nq * np));
    datacredit::gram_topk(queries, nq, h->coarse, h->nlist, d, np, datacredit::KeyWeights{},
                          datacredit::Metric::kSquaredL2, false, pd.data(), probes.data(), threads,
                          /*keys_checked=*/true);
    datacredit::pq_fastscan_search_ivf(tables.data(), nq, m, h->packed, h->list_blocks, h->nlist,
                                       h->ids, h->n, probes.data(), np, kc, h->metric, out_d, out_i,
                                       threads);
    if (rerank)
      datacredit::pq_fastscan_rerank_ivf(tables.data(), nq, m, h->packed, h->n_blocks * 32,
                                         h->positions.data(), h->n, ci.data(), kc, k, h->metric,
                                         distances, indices, threads);
  });
}

void dc_pq_index_free(dc_pq_index* h) { delete h; }

}  // extern "C"
