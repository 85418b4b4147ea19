// The C API of the DualDA explainer artifact (dc_dualda_*): loading and validating the
// file written by python/datacredit/dualda/explainer.py, and the top-k query on it.
#include <algorithm>
#include <limits>
#include <memory>
#include <string>
#include <vector>

#include "c_api_internal.hpp"
#include "datacredit/c_api.h"
#include "datacredit/gram.hpp"

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

extern "C" {

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

}  // extern "C"
