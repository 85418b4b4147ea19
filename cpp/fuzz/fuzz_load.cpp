// libFuzzer target of the artifact loaders of the C API: the input is tried as a DualDA
// explainer, as a PQ quantizer (with the committed packed codes) and as packed codes (with
// the committed quantizer); whatever loads is queried once.  Any crash, sanitizer report,
// leak or hang is a bug.  Build and run: cpp/fuzz/run.sh.
#include <cstddef>
#include <cstdint>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "datacredit/c_api.h"

namespace {
std::vector<uint8_t> g_quantizer, g_codes;

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

void query_dualda(const dc_dualda* h) {
  int64_t d = 0, nc = 0;
  if (dc_dualda_dim(h, &d, &nc) != DC_OK || d > 4096) return;
  std::vector<float> f(static_cast<size_t>(d), 0.5f), v(3);
  std::vector<int64_t> idx(3);
  dc_dualda_topk(h, f.data(), 1, d, nullptr, 3, v.data(), idx.data());
  dc_dualda_topk_ex(h, f.data(), 1, d, nullptr, 1, DC_DUALDA_OPPONENTS, 1, v.data(), idx.data());
}

void query_pq(const dc_pq_index* h) {
  int64_t d = 0, n = 0, nlist = 0;
  if (dc_pq_index_dim(h, &d, &n, &nlist) != DC_OK || d > 4096) return;
  std::vector<float> q(static_cast<size_t>(d), 0.25f), dist(2);
  std::vector<int64_t> idx(2);
  dc_pq_index_search(h, q.data(), 1, d, 1, 0, 0, 1, dist.data(), idx.data());
  if (n >= 2) dc_pq_index_search(h, q.data(), 1, d, 1, 0, 2, 1, dist.data(), idx.data());
}
}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  g_quantizer = read_file(DATACREDIT_FIXTURES "/pq.safetensors");
  g_codes = read_file(DATACREDIT_FIXTURES "/packed_ivf.safetensors");
  dc_set_num_threads(1);
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  dc_dualda* h = nullptr;
  if (dc_dualda_load_buffer(data, size, &h) == DC_OK) query_dualda(h);
  dc_dualda_free(h);
  dc_pq_index* p = nullptr;
  if (dc_pq_index_load_buffer(data, size, g_codes.data(), g_codes.size(), &p) == DC_OK) query_pq(p);
  dc_pq_index_free(p);
  p = nullptr;
  if (dc_pq_index_load_buffer(g_quantizer.data(), g_quantizer.size(), data, size, &p) == DC_OK)
    query_pq(p);
  dc_pq_index_free(p);
  return 0;
}
