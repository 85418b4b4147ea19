// The C API (cpp/include/datacredit/c_api.h): a firewall around the C++ core.  Every entry
// point catches every exception and turns it into an error code plus a thread-local message
// (c_api_internal.hpp: guarded), so no exception and no C++ type crosses the boundary.
// This file: version, errors, threads and the stateless kernels.  The handles that load an
// artifact live one per file: c_api_dualda.cpp (DualDA explainer), c_api_pq_index.cpp
// (PQ / IVF-PQ index); their safetensors reading is c_api_artifact.cpp.
#include "datacredit/c_api.h"

#include <atomic>
#include <cmath>
#include <string>

#include "c_api_internal.hpp"
#include "datacredit/crammer_singer.hpp"
#include "datacredit/gram.hpp"
#include "datacredit/pq.hpp"
#include "datacredit/treeshap.hpp"

namespace datacredit {
namespace capi {

namespace {
std::atomic<int> g_num_threads{0};
}  // namespace

std::string& last_error() {
  thread_local std::string message;
  return message;
}

int default_threads() { return g_num_threads.load(); }

}  // namespace capi
}  // namespace datacredit

namespace {

using datacredit::capi::finite;
using datacredit::capi::guarded;
using datacredit::capi::raise;
using datacredit::capi::require;
using datacredit::capi::threads_of;

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

}  // namespace

extern "C" {

int dc_version(int* major, int* minor, int* patch) {
  if (major) *major = 0;
  if (minor) *minor = 1;
  if (patch) *patch = 0;
  return DC_OK;
}

const char* dc_last_error(void) { return datacredit::capi::last_error().c_str(); }

int dc_set_num_threads(int n_threads) {
  return guarded([&] {
    require(n_threads >= 0, "dc_set_num_threads", "n_threads must be >= 0");
    datacredit::capi::g_num_threads.store(n_threads);
  });
}

int dc_get_num_threads(void) { return datacredit::capi::default_threads(); }

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

}  // extern "C"
