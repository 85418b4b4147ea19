// The C API (cpp/include/datacredit/c_api.h): a firewall around the C++ core.  Every entry
// point catches every exception and turns it into an error code plus a thread-local message,
// so no exception and no C++ type crosses the boundary.
#include "datacredit/c_api.h"

#include <atomic>
#include <cmath>
#include <cstring>
#include <limits>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "datacredit/common.hpp"
#include "datacredit/crammer_singer.hpp"
#include "datacredit/gram.hpp"
#include "datacredit/pq.hpp"
#include "datacredit/pq_fastscan.hpp"
#include "datacredit/treeshap.hpp"
#include "safetensors_reader.hpp"

namespace {

thread_local std::string g_last_error;
std::atomic<int> g_num_threads{0};

// Carries an error code through the C++ code of one entry point.
struct ApiError : std::runtime_error {
  int code;
  ApiError(int c, const std::string& what) : std::runtime_error(what), code(c) {}
};

[[noreturn]] void raise(int code, const std::string& where, const std::string& what) {
  throw ApiError(code, where + ": " + what);
}

void require(bool ok, const char* where, const std::string& what) {
  if (!ok) raise(DC_ERR_INVALID_ARGUMENT, where, what);
}

template <class F>
int guarded(F&& body) {
  try {
    body();
    return DC_OK;
  } catch (const ApiError& e) {
    g_last_error = e.what();
    return e.code;
  } catch (const std::invalid_argument& e) {
    g_last_error = e.what();
    return DC_ERR_INVALID_ARGUMENT;
  } catch (const std::bad_alloc&) {
    g_last_error = "out of memory";
    return DC_ERR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    g_last_error = std::string("internal error: ") + e.what();
    return DC_ERR_INTERNAL;
  } catch (...) {
    g_last_error = "internal error: unknown exception";
    return DC_ERR_INTERNAL;
  }
}

int threads_of(int n_threads) { return n_threads > 0 ? n_threads : g_num_threads.load(); }

datacredit::Metric gram_metric(int metric, const char* where) {
  switch (metric) {
    case DC_METRIC_IP:
      return datacredit::Metric::kInnerProduct;
    case DC_METRIC_COSINE:
      return datacredit::Metric::kCosine;
    case DC_METRIC_L2:
      return datacredit::Metric::kSquaredL2;
    default:
      raise(DC_ERR_INVALID_ARGUMENT, where, "unknown metric " + std::to_string(metric));
  }
}

datacredit::PQMetric pq_metric(int metric, const char* where) {
  if (metric == DC_METRIC_L2) return datacredit::PQMetric::kL2;
  if (metric == DC_METRIC_IP) return datacredit::PQMetric::kInnerProduct;
  raise(DC_ERR_INVALID_ARGUMENT, where, "metric must be DC_METRIC_L2 or DC_METRIC_IP");
}

// ------------------------------------------------------------------ artifact helpers
using datacredit::st::DType;
using datacredit::st::File;
using datacredit::st::Tensor;

// A parsed file and what keeps its bytes alive (a memory map, or nothing for a caller's buffer).
struct Artifact {
  std::unique_ptr<datacredit::st::Mapping> mapping;
  File file;
};

void open_artifact(const char* path, const void* buffer, size_t size, const char* where,
                   Artifact* art) {
  std::string err;
  const uint8_t* bytes = static_cast<const uint8_t*>(buffer);
  if (path != nullptr) {
    art->mapping.reset(new datacredit::st::Mapping());
    if (!art->mapping->open(path, &err)) {
      // A file shorter than a header is a format problem, not an I/O one.
      const int code = err.rfind("shorter", 0) == 0 ? DC_ERR_FORMAT : DC_ERR_IO;
      raise(code, where, std::string(path) + ": " + err);
    }
    bytes = art->mapping->data();
    size = art->mapping->size();
  }
  const std::string name = path != nullptr ? path : "buffer";
  if (!datacredit::st::parse(bytes, size, &art->file, &err))
    raise(DC_ERR_FORMAT, where, name + ": not a valid safetensors file: " + err);
}

std::string meta_str(const Artifact& a, const char* key, const char* where) {
  auto it = a.file.metadata.find(key);
  if (it == a.file.metadata.end())
    raise(DC_ERR_FORMAT, where, std::string("metadata '") + key + "' is missing");
  return it->second;
}

int64_t meta_int(const Artifact& a, const char* key, const char* where,
                 bool allow_negative = false) {
  const std::string s = meta_str(a, key, where);
  size_t i = (allow_negative && !s.empty() && s[0] == '-') ? 1 : 0;
  bool ok = s.size() > i && s.size() - i <= 18;
  for (size_t j = i; ok && j < s.size(); ++j) ok = s[j] >= '0' && s[j] <= '9';
  if (!ok)
    raise(DC_ERR_FORMAT, where,
          std::string("metadata '") + key + "' is not an integer: '" + s + "'");
  return std::stoll(s);
}

// The file's format version, one of 1 .. max_version; raises DC_ERR_FORMAT otherwise.
int check_format(const Artifact& a, const char* format, const char* where, int max_version = 1) {
  const std::string f = meta_str(a, "format", where);
  if (f != format)
    raise(DC_ERR_FORMAT, where, "format is '" + f + "', expected '" + std::string(format) + "'");
  const std::string v = meta_str(a, "format_version", where);
  for (int version = 1; version <= max_version; ++version)
    if (v == std::to_string(version)) return version;
  raise(DC_ERR_FORMAT, where,
        "format version '" + v + "' is not supported (this version reads '1'" +
            (max_version > 1 ? " to '" + std::to_string(max_version) + "'" : std::string()) + ")");
}

// The tensor `name` with dtype `dtype` and exactly `shape`; raises DC_ERR_FORMAT otherwise.
const Tensor& tensor(const Artifact& a, const char* name, DType dtype,
                     const std::vector<int64_t>& shape, const char* where) {
  auto it = a.file.tensors.find(name);
  if (it == a.file.tensors.end())
    raise(DC_ERR_FORMAT, where, std::string("tensor '") + name + "' is missing");
  const Tensor& t = it->second;
  if (t.dtype != dtype)
    raise(DC_ERR_FORMAT, where,
          std::string("tensor '") + name + "' is " + datacredit::st::dtype_name(t.dtype) +
              ", expected " + datacredit::st::dtype_name(dtype));
  if (t.shape != shape) {
    std::string want, got;
    for (int64_t s : shape) want += std::to_string(s) + ",";
    for (int64_t s : t.shape) got += std::to_string(s) + ",";
    raise(DC_ERR_FORMAT, where,
          std::string("tensor '") + name + "' has shape (" + got + "), expected (" + want + ")");
  }
  return t;
}

template <class T>
const T* as(const Tensor& t) {
  return reinterpret_cast<const T*>(t.data);
}

bool finite(const float* x, int64_t n) { return n == 0 || datacredit::all_finite(x, n); }
bool finite(const double* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

}  // namespace

// ------------------------------------------------------------------ handles
struct dc_dualda {
  Artifact art;
  int64_t n_sv = 0, d = 0, n_classes = 0, n_train = 0;
  const float* features = nullptr;  // n_sv x d
  const float* lambda = nullptr;    // n_sv x n_classes (format version 1; null in 2)
  // Format version 2 (lambda in CSR): its nonzeros by class column, built at load, so a
  // query for class c scores only the samples of column c (O(nnz_c * d)).
  std::vector<int64_t> col_ptr;      // n_classes + 1
  std::vector<int64_t> col_rows;     // nnz, support position, ascending within a column
  std::vector<float> col_vals;       // nnz
  const double* coef = nullptr;      // n_classes x d
  const double* bias = nullptr;      // n_classes
  const int64_t* support = nullptr;  // n_sv, strictly increasing
};

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

int dc_version(int* major, int* minor, int* patch) {
  if (major) *major = 0;
  if (minor) *minor = 1;
  if (patch) *patch = 0;
  return DC_OK;
}

const char* dc_last_error(void) { return g_last_error.c_str(); }

int dc_set_num_threads(int n_threads) {
  return guarded([&] {
    require(n_threads >= 0, "dc_set_num_threads", "n_threads must be >= 0");
    g_num_threads.store(n_threads);
  });
}

int dc_get_num_threads(void) { return g_num_threads.load(); }

// ------------------------------------------------------------------ kernels
int dc_gram_topk(const float* queries, int64_t n, const float* keys, int64_t n_keys, int64_t dim,
                 int64_t k, const float* weights, int64_t n_weight_cols, const int64_t* classes,
                 int metric, int largest, float* values, int64_t* indices, int n_threads) {
  return guarded([&] {
    const char* where = "dc_gram_topk";
    require(queries && keys && values && indices, where, "a required pointer is NULL");
    datacredit::KeyWeights w{weights, weights ? n_weight_cols : 0, weights ? classes : nullptr};
    datacredit::gram_topk(queries, n, keys, n_keys, dim, k, w, gram_metric(metric, where),
                          largest != 0, values, indices, threads_of(n_threads));
  });
}

int dc_crammer_singer_fit(const float* X, int64_t n, int64_t d, const int64_t* y, int64_t n_classes,
                          double C, double tol, int64_t max_iter, uint64_t seed, int fit_bias,
                          int n_threads, double* dual_coef, double* coef, double* bias,
                          dc_crammer_singer_stats* stats) {
  return guarded([&] {
    const char* where = "dc_crammer_singer_fit";
    require(X && y && dual_coef && coef && bias, where, "a required pointer is NULL");
    require(n > 0 && d > 0 && n_classes >= 2, where, "need n > 0, d > 0 and n_classes >= 2");
    require(C > 0 && std::isfinite(C), where, "C must be a positive finite number");
    require(tol > 0 && max_iter > 0, where, "tol and max_iter must be positive");
    for (int64_t i = 0; i < n; ++i)
      require(
          y[i] >= 0 && y[i] < n_classes, where,
          "y[" + std::to_string(i) + "] = " + std::to_string(y[i]) + " is outside [0, n_classes)");
    require(finite(X, n * d), where, "X contains NaN or inf");
    datacredit::CrammerSingerOptions opt;
    opt.C = C;
    opt.tol = tol;
    opt.max_iter = max_iter;
    opt.seed = seed;
    opt.fit_bias = fit_bias != 0;
    opt.n_threads = threads_of(n_threads);
    const auto s =
        datacredit::crammer_singer_fit(X, n, d, y, n_classes, opt, dual_coef, coef, bias);
    if (stats) {
      stats->n_iter = s.n_iter;
      stats->converged = s.converged ? 1 : 0;
      stats->max_violation = s.max_violation;
      stats->primal_objective = s.primal_objective;
      stats->dual_objective = s.dual_objective;
    }
  });
}

int dc_pq_search(int64_t dim, int64_t m, int nbits, const float* centroids, const float* queries,
                 int64_t nq, const uint8_t* codes, int64_t n_codes, int64_t k, int metric,
                 float* distances, int64_t* indices, int n_threads) {
  return guarded([&] {
    const char* where = "dc_pq_search";
    require(centroids && queries && codes && distances && indices, where,
            "a required pointer is NULL");
    datacredit::PQShape shape{dim, m, nbits};
    datacredit::check_pq_shape(shape, where);
    require(nq > 0 && n_codes > 0, where, "queries and codes must not be empty");
    require(finite(queries, nq * dim), where, "queries contains NaN or inf");
    datacredit::pq_search(shape, centroids, queries, nq, codes, n_codes, k,
                          pq_metric(metric, where), distances, indices, threads_of(n_threads));
  });
}

int dc_treeshap(const dc_tree_ensemble* model, const float* X, int64_t n_x, const float* R,
                int64_t n_refs, int64_t n_features, double* phi, double* base, double* fx,
                int n_threads) {
  return guarded([&] {
    const char* where = "dc_treeshap";
    require(model && X && R && phi && base, where, "a required pointer is NULL");
    require(model->left && model->right && model->feature && model->threshold &&
                model->default_left && model->value && model->roots,
            where, "a node array of the model is NULL");
    require(model->n_nodes > 0 && model->n_trees > 0 && n_x > 0 && n_refs > 0 && n_features > 0,
            where, "empty model, X, R or features");
    // The core trusts the node arrays: check every link and feature here.
    for (int64_t t = 0; t < model->n_trees; ++t)
      require(model->roots[t] >= 0 && model->roots[t] < model->n_nodes, where,
              "roots[" + std::to_string(t) + "] is outside the nodes");
    for (int64_t i = 0; i < model->n_nodes; ++i) {
      if (model->left[i] < 0) continue;
      require(model->left[i] < model->n_nodes && model->right[i] >= 0 &&
                  model->right[i] < model->n_nodes && model->left[i] > i && model->right[i] > i,
              where,
              "node " + std::to_string(i) + " has children outside the nodes (or not after it)");
      require(model->feature[i] >= 0 && model->feature[i] < n_features, where,
              "node " + std::to_string(i) + " splits on a feature outside [0, n_features)");
    }
    datacredit::TreeEnsembleView view;
    view.left = model->left;
    view.right = model->right;
    view.feature = model->feature;
    view.threshold = model->threshold;
    view.default_left = model->default_left;
    view.value = model->value;
    view.n_nodes = model->n_nodes;
    view.roots = model->roots;
    view.n_trees = model->n_trees;
    datacredit::tree_shap_interventional(view, X, n_x, R, n_refs, n_features, phi, base, fx,
                                         threads_of(n_threads));
  });
}

// ------------------------------------------------------------------ DualDA explainer
static void load_dualda(const char* path, const void* buffer, size_t size, dc_dualda** out) {
  const char* where = "dc_dualda_load";
  require(out != nullptr, where, "out is NULL");
  *out = nullptr;
  std::unique_ptr<dc_dualda> h(new dc_dualda());
  open_artifact(path, buffer, size, where, &h->art);
  const Artifact& a = h->art;
  const int version = check_format(a, "datacredit.dualda_explainer", where, 2);
  h->n_train = meta_int(a, "n_train", where);
  h->n_classes = meta_int(a, "n_classes", where);
  h->d = meta_int(a, "dim", where);
  if (h->d < 1 || h->n_classes < 1)
    raise(DC_ERR_FORMAT, where, "dim and n_classes must be positive");
  auto it = a.file.tensors.find("features");
  if (it == a.file.tensors.end() || it->second.shape.size() != 2)
    raise(DC_ERR_FORMAT, where, "tensor 'features' is missing or not 2-d");
  h->n_sv = it->second.shape[0];
  const int64_t n_sv = h->n_sv, d = h->d, nc = h->n_classes;
  if (n_sv > h->n_train) raise(DC_ERR_FORMAT, where, "more support vectors than training samples");
  h->features = as<float>(tensor(a, "features", DType::kF32, {n_sv, d}, where));
  if (version == 1) {
    h->lambda = as<float>(tensor(a, "dual_coef", DType::kF32, {n_sv, nc}, where));
  } else {
    auto vt = a.file.tensors.find("dual_values");
    if (vt == a.file.tensors.end() || vt->second.shape.size() != 1)
      raise(DC_ERR_FORMAT, where, "tensor 'dual_values' is missing or not 1-d");
    const int64_t nnz = vt->second.shape[0];
    const auto* indptr = as<int64_t>(tensor(a, "dual_indptr", DType::kI64, {n_sv + 1}, where));
    const auto* cls = as<int32_t>(tensor(a, "dual_indices", DType::kI32, {nnz}, where));
    const auto* val = as<float>(tensor(a, "dual_values", DType::kF32, {nnz}, where));
    if (indptr[0] != 0 || indptr[n_sv] != nnz)
      raise(DC_ERR_FORMAT, where, "dual_indptr does not rise from 0 to nnz");
    for (int64_t i = 0; i < n_sv; ++i)
      if (indptr[i + 1] < indptr[i])
        raise(DC_ERR_FORMAT, where, "dual_indptr does not rise from 0 to nnz");
    if (!finite(val, nnz)) raise(DC_ERR_FORMAT, where, "dual_values hold NaN or inf");
    h->col_ptr.assign(static_cast<size_t>(nc + 1), 0);
    for (int64_t p = 0; p < nnz; ++p) {
      if (cls[p] < 0 || cls[p] >= nc)
        raise(DC_ERR_FORMAT, where, "dual_indices outside [0, n_classes)");
      ++h->col_ptr[static_cast<size_t>(cls[p] + 1)];
    }
    for (int64_t c = 0; c < nc; ++c) h->col_ptr[c + 1] += h->col_ptr[c];
    h->col_rows.resize(static_cast<size_t>(nnz));
    h->col_vals.resize(static_cast<size_t>(nnz));
    std::vector<int64_t> fill(h->col_ptr.begin(), h->col_ptr.end() - 1);
    for (int64_t i = 0; i < n_sv; ++i)  // rows ascending: each column's rows come out sorted
      for (int64_t p = indptr[i]; p < indptr[i + 1]; ++p) {
        const int64_t at = fill[static_cast<size_t>(cls[p])]++;
        h->col_rows[static_cast<size_t>(at)] = i;
        h->col_vals[static_cast<size_t>(at)] = val[p];
      }
  }
  h->coef = as<double>(tensor(a, "coef", DType::kF64, {nc, d}, where));
  h->bias = as<double>(tensor(a, "bias", DType::kF64, {nc}, where));
  h->support = as<int64_t>(tensor(a, "support", DType::kI64, {n_sv}, where));
  tensor(a, "labels", DType::kI64, {n_sv}, where);
  for (int64_t i = 0; i < n_sv; ++i) {
    const int64_t s = h->support[i];
    if (s < 0 || s >= h->n_train || (i > 0 && s <= h->support[i - 1]))
      raise(DC_ERR_FORMAT, where, "support indices are not strictly increasing in [0, n_train)");
  }
  if (!finite(h->features, n_sv * d) || (h->lambda && !finite(h->lambda, n_sv * nc)) ||
      !finite(h->coef, nc * d) || !finite(h->bias, nc))
    raise(DC_ERR_FORMAT, where, "features, dual_coef, coef or bias hold NaN or inf");
  *out = h.release();
}

// Top-k for format version 2: queries grouped by class; each group scores the samples of
// its class's column (gathered, then the fused Gram top-k kernel) and merges them with the
// lowest-indexed samples outside the column, which score exactly 0.  Same answers as the
// Python reader (datacredit.dualda.sparse_attribution.column_topk).
static void dualda_topk_columns(const dc_dualda& h, const float* features, int64_t n,
                                const std::vector<int64_t>& cls, int64_t k, bool opponents,
                                int n_threads, float* values, int64_t* indices) {
  const int64_t d = h.d;
  std::vector<std::vector<int64_t>> groups(static_cast<size_t>(h.n_classes));
  for (int64_t i = 0; i < n; ++i) groups[static_cast<size_t>(cls[i])].push_back(i);
  auto better = [opponents](float va, int64_t ia, float vb, int64_t ib) {
    if (va != vb) return opponents ? va < vb : va > vb;
    return ia < ib;
  };
  std::vector<float> keys, queries, cv;
  std::vector<int64_t> ci, taken, zeros;
  for (int64_t c = 0; c < h.n_classes; ++c) {
    const auto& g = groups[static_cast<size_t>(c)];
    if (g.empty()) continue;
    const int64_t b = h.col_ptr[static_cast<size_t>(c)], e = h.col_ptr[static_cast<size_t>(c + 1)];
    const int64_t m = e - b, nq = static_cast<int64_t>(g.size()), k_col = std::min(k, m);
    taken.resize(static_cast<size_t>(m));
    keys.resize(static_cast<size_t>(m * d));
    for (int64_t r = 0; r < m; ++r) {
      const int64_t row = h.col_rows[static_cast<size_t>(b + r)];
      taken[static_cast<size_t>(r)] = h.support[row];
      std::copy(h.features + row * d, h.features + (row + 1) * d, keys.begin() + r * d);
    }
    queries.resize(static_cast<size_t>(nq * d));
    for (int64_t q = 0; q < nq; ++q)
      std::copy(features + g[q] * d, features + (g[q] + 1) * d, queries.begin() + q * d);
    cv.resize(static_cast<size_t>(nq * k_col));
    ci.resize(static_cast<size_t>(nq * k_col));
    if (k_col > 0) {
      datacredit::KeyWeights w{h.col_vals.data() + b, 1, nullptr};
      datacredit::gram_topk(queries.data(), nq, keys.data(), m, d, k_col, w,
                            datacredit::Metric::kInnerProduct, !opponents, cv.data(), ci.data(),
                            n_threads, /*keys_checked=*/true);
    }
    // The k lowest training indices outside the column (taken is ascending).
    zeros.clear();
    for (int64_t i = 0, t = 0; i < h.n_train && static_cast<int64_t>(zeros.size()) < k; ++i) {
      if (t < m && taken[static_cast<size_t>(t)] == i) {
        ++t;
        continue;
      }
      zeros.push_back(i);
    }
    const int64_t nz = static_cast<int64_t>(zeros.size());
    for (int64_t q = 0; q < nq; ++q) {
      float* vo = values + g[q] * k;
      int64_t* io = indices + g[q] * k;
      int64_t a = 0, z = 0;
      for (int64_t j = 0; j < k; ++j) {
        bool take_col;
        if (a >= k_col)
          take_col = false;
        else if (z >= nz)
          take_col = true;
        else
          take_col = better(cv[q * k_col + a], taken[ci[q * k_col + a]], 0.0f, zeros[z]);
        if (take_col) {
          vo[j] = cv[q * k_col + a];
          io[j] = taken[ci[q * k_col + a]];
          ++a;
        } else {
          vo[j] = 0.0f;
          io[j] = zeros[z];
          ++z;
        }
      }
    }
  }
}

int dc_dualda_load(const char* path, dc_dualda** out) {
  return guarded([&] {
    require(path != nullptr, "dc_dualda_load", "path is NULL");
    load_dualda(path, nullptr, 0, out);
  });
}

int dc_dualda_load_buffer(const void* data, size_t size, dc_dualda** out) {
  return guarded([&] {
    require(data != nullptr || size == 0, "dc_dualda_load_buffer", "data is NULL");
    load_dualda(nullptr, data, size, out);
  });
}

int dc_dualda_dim(const dc_dualda* h, int64_t* d, int64_t* n_classes) {
  return guarded([&] {
    require(h != nullptr, "dc_dualda_dim", "handle is NULL");
    if (d) *d = h->d;
    if (n_classes) *n_classes = h->n_classes;
  });
}

int dc_dualda_size(const dc_dualda* h, int64_t* n_support, int64_t* n_train) {
  return guarded([&] {
    require(h != nullptr, "dc_dualda_size", "handle is NULL");
    if (n_support) *n_support = h->n_sv;
    if (n_train) *n_train = h->n_train;
  });
}

int dc_dualda_topk_ex(const dc_dualda* h, const float* features, int64_t n, int64_t d,
                      const int32_t* targets, int64_t k, int flags, int n_threads, float* values,
                      int64_t* indices) {
  return guarded([&] {
    const char* where = "dc_dualda_topk";
    require(h != nullptr, where, "handle is NULL");
    require(features && values && indices, where, "features, values or indices is NULL");
    require(n >= 1, where, "n must be >= 1");
    require(d == h->d, where,
            "d = " + std::to_string(d) + " but the explainer has d = " + std::to_string(h->d));
    require(k >= 1 && k <= h->n_train, where,
            "k = " + std::to_string(k) + " must be in [1, n_train = " + std::to_string(h->n_train) +
                "]");
    require((flags & ~DC_DUALDA_OPPONENTS) == 0, where, "unknown flags");
    require(n <= std::numeric_limits<int64_t>::max() / d &&
                n <= std::numeric_limits<int64_t>::max() / k,
            where, "n * d or n * k overflows");
    require(finite(features, n * d), where, "features contain NaN or inf");
    const bool opponents = (flags & DC_DUALDA_OPPONENTS) != 0;
    const int64_t nc = h->n_classes;
    // Classes: given, or the surrogate's prediction argmax (W f + bias) in double.
    std::vector<int64_t> cls(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i) {
      const int32_t t = targets ? targets[i] : -1;
      require(t >= -1 && t < nc, where,
              "targets[" + std::to_string(i) + "] = " + std::to_string(t) + " is outside [-1, " +
                  std::to_string(nc) + ")");
      if (t >= 0) {
        cls[i] = t;
        continue;
      }
      const float* f = features + i * d;
      int64_t best = 0;
      double best_v = -std::numeric_limits<double>::infinity();
      for (int64_t c = 0; c < nc; ++c) {
        const double* w = h->coef + c * d;
        double s = 0.0;
        for (int64_t j = 0; j < d; ++j) s += w[j] * static_cast<double>(f[j]);
        s += h->bias[c];
        if (s > best_v) {
          best_v = s;
          best = c;
        }
      }
      cls[i] = best;
    }
    if (h->lambda == nullptr) {
      dualda_topk_columns(*h, features, n, cls, k, opponents, threads_of(n_threads), values,
                          indices);
      return;
    }
    const int64_t k_sv = std::min(k, h->n_sv);
    std::vector<float> sv_vals(static_cast<size_t>(n * k_sv));
    std::vector<int64_t> sv_idx(static_cast<size_t>(n * k_sv));
    if (k_sv > 0) {
      datacredit::KeyWeights w{h->lambda, nc, cls.data()};
      datacredit::gram_topk(features, n, h->features, h->n_sv, d, k_sv, w,
                            datacredit::Metric::kInnerProduct, !opponents, sv_vals.data(),
                            sv_idx.data(), threads_of(n_threads), /*keys_checked=*/true);
    }
    // Non-support samples score exactly 0: the k lowest-indexed ones are the other candidates.
    std::vector<int64_t> zeros;
    zeros.reserve(static_cast<size_t>(std::min(k, h->n_train - h->n_sv)));
    for (int64_t i = 0, s = 0; i < h->n_train && static_cast<int64_t>(zeros.size()) < k; ++i) {
      if (s < h->n_sv && h->support[s] == i) {
        ++s;
        continue;
      }
      zeros.push_back(i);
    }
    const int64_t nz = static_cast<int64_t>(zeros.size());
    // Merge two best-first lists: better value first, ties to the lower training index.
    auto better = [opponents](float va, int64_t ia, float vb, int64_t ib) {
      if (va != vb) return opponents ? va < vb : va > vb;
      return ia < ib;
    };
    for (int64_t i = 0; i < n; ++i) {
      int64_t a = 0, b = 0;
      for (int64_t j = 0; j < k; ++j) {
        bool take_sv;
        if (a >= k_sv)
          take_sv = false;
        else if (b >= nz)
          take_sv = true;
        else
          take_sv = better(sv_vals[i * k_sv + a], h->support[sv_idx[i * k_sv + a]], 0.0f, zeros[b]);
        if (take_sv) {
          values[i * k + j] = sv_vals[i * k_sv + a];
          indices[i * k + j] = h->support[sv_idx[i * k_sv + a]];
          ++a;
        } else {
          values[i * k + j] = 0.0f;
          indices[i * k + j] = zeros[b];
          ++b;
        }
      }
    }
  });
}

int dc_dualda_topk(const dc_dualda* h, const float* features, int64_t n, int64_t d,
                   const int32_t* targets, int64_t k, float* values, int64_t* indices) {
  return dc_dualda_topk_ex(h, features, n, d, targets, k, 0, 0, values, indices);
}

void dc_dualda_free(dc_dualda* h) { delete h; }

// ------------------------------------------------------------------ PQ / IVF-PQ index
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
