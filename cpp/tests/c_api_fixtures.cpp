// The C API through libdatacredit.so: every committed fixture directory (tests/fixtures/v*/)
// loads, and answers as the independent references stored next to it (dense float64 brute
// force for the DualDA explainer, exact ADC over the probed lists for the IVF-PQ index);
// argument errors and corrupt or truncated files give error codes, never a crash.
#include <dirent.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <fstream>
#include <iterator>
#include <numeric>
#include <string>
#include <thread>
#include <vector>

#include "check.hpp"
#include "datacredit/c_api.h"
#include "safetensors_reader.hpp"

namespace st = datacredit::st;

#define CHECK(cond) DC_EXPECT(cond)
#define CHECK_NEAR(a, b, tol) DC_EXPECT(std::fabs(double(a) - double(b)) <= (tol))
#define REQUIRE(cond)                                                          \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "%s:%d: required %s\n", __FILE__, __LINE__, #cond); \
      std::exit(1);                                                            \
    }                                                                          \
  } while (0)

namespace {

std::vector<uint8_t> read_file(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(f), {});
}

template <class T>
std::vector<T> tensor(const st::File& file, const char* name) {
  auto it = file.tensors.find(name);
  REQUIRE(it != file.tensors.end());
  const T* p = reinterpret_cast<const T*>(it->second.data);
  return std::vector<T>(p, p + it->second.nbytes / sizeof(T));
}

void check_dualda(const std::string& dir, const st::File& expected) {
  const std::string path = dir + "/dualda_explainer.safetensors";
  dc_dualda* h = nullptr;
  REQUIRE(dc_dualda_load(path.c_str(), &h) == DC_OK);
  int64_t d = 0, nc = 0, n_sv = 0, n_train = 0;
  CHECK(dc_dualda_dim(h, &d, &nc) == DC_OK);
  CHECK(dc_dualda_size(h, &n_sv, &n_train) == DC_OK);
  const auto q = tensor<float>(expected, "dualda_queries");
  const auto targets = tensor<int32_t>(expected, "dualda_targets");
  const int64_t n = static_cast<int64_t>(targets.size()), k = 10;
  REQUIRE(static_cast<int64_t>(q.size()) == n * d);
  for (int opp = 0; opp < 2; ++opp) {
    const auto want_v = tensor<double>(expected, opp ? "opponent_values" : "proponent_values");
    const auto want_i = tensor<int64_t>(expected, opp ? "opponent_indices" : "proponent_indices");
    std::vector<float> v(n * k);
    std::vector<int64_t> idx(n * k);
    CHECK(dc_dualda_topk_ex(h, q.data(), n, d, targets.data(), k, opp ? DC_DUALDA_OPPONENTS : 0, 1,
                            v.data(), idx.data()) == DC_OK);
    double scale = 0;
    for (double x : want_v) scale = std::max(scale, std::fabs(x));
    for (int64_t j = 0; j < n * k; ++j) {
      CHECK(idx[j] == want_i[j]);
      CHECK_NEAR(v[j], want_v[j], 1e-5 * scale);
    }
    if (!opp) {
      // targets NULL: the surrogate's prediction, as the rows whose stored target is -1.
      std::vector<float> v2(n * k);
      std::vector<int64_t> i2(n * k);
      CHECK(dc_dualda_topk(h, q.data(), n, d, nullptr, k, v2.data(), i2.data()) == DC_OK);
      for (int64_t i = 0; i < n; ++i)
        if (targets[i] == -1)
          for (int64_t j = 0; j < k; ++j) CHECK(i2[i * k + j] == idx[i * k + j]);
    }
  }
  // Concurrent queries on one handle (documented as thread-safe) give the serial answer.
  {
    std::vector<float> v0(n * k);
    std::vector<int64_t> i0(n * k);
    CHECK(dc_dualda_topk(h, q.data(), n, d, targets.data(), k, v0.data(), i0.data()) == DC_OK);
    std::vector<int> ok(4, 1);
    std::vector<std::thread> pool;
    for (int t = 0; t < 4; ++t)
      pool.emplace_back([&, t] {
        std::vector<float> v(n * k);
        std::vector<int64_t> idx(n * k);
        for (int rep = 0; rep < 25; ++rep) {
          const int rc = dc_dualda_topk_ex(h, q.data(), n, d, targets.data(), k, 0, 1 + t % 2,
                                           v.data(), idx.data());
          if (rc != DC_OK || idx != i0 || v != v0) ok[t] = 0;
        }
      });
    for (auto& th : pool) th.join();
    for (int t = 0; t < 4; ++t) CHECK(ok[t] == 1);
  }
  // Argument errors: a code, a message naming the function, outputs untouched.
  std::vector<float> v(n * k, 7.0f);
  std::vector<int64_t> idx(n * k, 7);
  CHECK(dc_dualda_topk(h, q.data(), n, d + 1, nullptr, k, v.data(), idx.data()) ==
        DC_ERR_INVALID_ARGUMENT);
  CHECK(std::strstr(dc_last_error(), "dc_dualda_topk") != nullptr);
  CHECK(dc_dualda_topk(h, q.data(), n, d, nullptr, 0, v.data(), idx.data()) ==
        DC_ERR_INVALID_ARGUMENT);
  CHECK(dc_dualda_topk(h, q.data(), n, d, nullptr, n_train + 1, v.data(), idx.data()) ==
        DC_ERR_INVALID_ARGUMENT);
  std::vector<int32_t> bad(targets);
  bad[1] = static_cast<int32_t>(nc);
  CHECK(dc_dualda_topk(h, q.data(), n, d, bad.data(), k, v.data(), idx.data()) ==
        DC_ERR_INVALID_ARGUMENT);
  std::vector<float> nanq(q);
  nanq[3] = std::nanf("");
  CHECK(dc_dualda_topk(h, nanq.data(), n, d, nullptr, k, v.data(), idx.data()) ==
        DC_ERR_INVALID_ARGUMENT);
  CHECK(dc_dualda_topk(nullptr, q.data(), n, d, nullptr, k, v.data(), idx.data()) ==
        DC_ERR_INVALID_ARGUMENT);
  CHECK(v[0] == 7.0f && idx[0] == 7);
  dc_dualda_free(h);

  // Every truncation and a sweep of byte corruptions: an error or a valid handle, no crash.
  const auto bytes = read_file(path);
  for (size_t len = 0; len < bytes.size(); len += (len < 512 ? 1 : 97)) {
    std::vector<uint8_t> cut(bytes.begin(), bytes.begin() + len);
    dc_dualda* t = nullptr;
    CHECK(dc_dualda_load_buffer(cut.data(), cut.size(), &t) == DC_ERR_FORMAT);
    CHECK(t == nullptr);
  }
  for (size_t pos = 0; pos < bytes.size(); pos += 3) {
    std::vector<uint8_t> bad_bytes(bytes);
    bad_bytes[pos] ^= 0x5A;
    dc_dualda* t = nullptr;
    const int rc = dc_dualda_load_buffer(bad_bytes.data(), bad_bytes.size(), &t);
    CHECK((rc == DC_OK) == (t != nullptr));
    if (t != nullptr) {
      std::vector<float> tv(k);
      std::vector<int64_t> ti(k);
      dc_dualda_topk(t, q.data(), 1, d, nullptr, k, tv.data(), ti.data());
    }
    dc_dualda_free(t);
  }
}

void check_pq(const std::string& dir, const st::File& expected) {
  const std::string qpath = dir + "/pq.safetensors", cpath = dir + "/packed_ivf.safetensors";
  dc_pq_index* h = nullptr;
  REQUIRE(dc_pq_index_load(qpath.c_str(), cpath.c_str(), &h) == DC_OK);
  int64_t d = 0, n = 0, nlist = 0;
  CHECK(dc_pq_index_dim(h, &d, &n, &nlist) == DC_OK);
  // Reference: exact float ADC over the codes of the nprobe nearest lists, ties to the lower index.
  const auto qbytes = read_file(qpath);
  st::File qf;
  std::string err;
  REQUIRE(st::parse(qbytes.data(), qbytes.size(), &qf, &err));
  const auto cent = tensor<float>(qf, "centroids");
  const auto coarse = tensor<float>(qf, "coarse_centroids");
  const int64_t m = std::stoll(qf.metadata.at("m")), nprobe = std::stoll(qf.metadata.at("nprobe"));
  const int64_t dsub = d / m;
  const auto queries = tensor<float>(expected, "pq_queries");
  const auto codes = tensor<uint8_t>(expected, "pq_codes");
  const auto lists = tensor<int64_t>(expected, "pq_lists");
  const int64_t nq = static_cast<int64_t>(queries.size()) / d, k = 5;
  REQUIRE(static_cast<int64_t>(lists.size()) == n && nlist > 0);
  std::vector<float> dist(nq * k);
  std::vector<int64_t> idx(nq * k);
  CHECK(dc_pq_index_search(h, queries.data(), nq, d, k, 0, n, 1, dist.data(), idx.data()) == DC_OK);
  for (int64_t i = 0; i < nq; ++i) {
    const float* q = queries.data() + i * d;
    std::vector<std::pair<double, int64_t>> lists_by_dist;
    for (int64_t l = 0; l < nlist; ++l) {
      double s = 0;
      for (int64_t j = 0; j < d; ++j) s += std::pow(double(q[j]) - coarse[l * d + j], 2);
      lists_by_dist.push_back({s, l});
    }
    std::sort(lists_by_dist.begin(), lists_by_dist.end());
    std::vector<std::pair<double, int64_t>> cand;
    for (int64_t c = 0; c < n; ++c) {
      bool probed = false;
      for (int64_t p = 0; p < nprobe; ++p) probed |= lists[c] == lists_by_dist[p].second;
      if (!probed) continue;
      double s = 0;
      for (int64_t sub = 0; sub < m; ++sub)
        for (int64_t j = 0; j < dsub; ++j) {
          const double x = q[sub * dsub + j] - cent[(sub * 16 + codes[c * m + sub]) * dsub + j];
          s += x * x;
        }
      cand.push_back({s, c});
    }
    std::sort(cand.begin(), cand.end());
    for (int64_t j = 0; j < k; ++j) {
      CHECK(idx[i * k + j] == cand[j].second);
      CHECK_NEAR(dist[i * k + j], cand[j].first, 1e-4 * (1.0 + cand[j].first));
    }
  }
  CHECK(dc_pq_index_search(h, queries.data(), nq, d - 1, k, 0, 0, 1, dist.data(), idx.data()) ==
        DC_ERR_INVALID_ARGUMENT);
  CHECK(dc_pq_index_search(h, queries.data(), nq, d, k, nlist + 1, 0, 1, dist.data(), idx.data()) ==
        DC_ERR_INVALID_ARGUMENT);
  dc_pq_index_free(h);
  // Swapped files are rejected by their format tags.
  CHECK(dc_pq_index_load(cpath.c_str(), qpath.c_str(), &h) == DC_ERR_FORMAT && h == nullptr);
  const auto cbytes = read_file(cpath);
  for (size_t len = 0; len < cbytes.size(); len += 7) {
    CHECK(dc_pq_index_load_buffer(qbytes.data(), qbytes.size(), cbytes.data(), len, &h) ==
          DC_ERR_FORMAT);
  }
  // The metadata's n is checked against the blocks in the file before anything is sized by
  // it (edits of the same number of digits keep every offset; n up to 10^18 - 1:
  // tests/test_c_api_untrusted_lengths.py).
  const std::string text(cbytes.begin(), cbytes.end());
  const std::string key = "\"n\":\"";
  const size_t at = text.find(key);
  REQUIRE(at != std::string::npos);
  const size_t begin = at + key.size(), end = text.find('"', begin);
  const std::string n0 = text.substr(begin, end - begin);
  // All nines: more codes than the file's blocks hold (the fixture: 300 codes, 12 blocks).
  {
    const std::string edited =
        text.substr(0, begin) + std::string(n0.size(), '9') + text.substr(end);
    CHECK(dc_pq_index_load_buffer(qbytes.data(), qbytes.size(), edited.data(), edited.size(), &h) ==
              DC_ERR_FORMAT &&
          h == nullptr);
    CHECK(std::string(dc_last_error()).find("blocks of 32") != std::string::npos);
  }
}

}  // namespace

int main(int argc, char** argv) {
  REQUIRE(argc == 2);
  const std::string root = argv[1];
  DIR* dir = opendir(root.c_str());
  REQUIRE(dir != nullptr);
  int n_versions = 0;
  while (dirent* e = readdir(dir)) {
    if (e->d_name[0] != 'v') continue;
    const std::string vdir = root + "/" + e->d_name;
    const auto bytes = read_file(vdir + "/expected.safetensors");
    st::File expected;
    std::string err;
    REQUIRE(st::parse(bytes.data(), bytes.size(), &expected, &err));
    check_dualda(vdir, expected);
    check_pq(vdir, expected);
    std::printf("fixtures %s: OK\n", e->d_name);
    ++n_versions;
  }
  closedir(dir);
  CHECK(n_versions >= 1);
  return dctest::finish("c_api_fixtures");
}
