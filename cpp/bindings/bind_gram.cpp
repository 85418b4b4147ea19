#include <optional>

#include "bindings.hpp"
#include "datacredit/gram.hpp"

namespace datacredit::bindings {

namespace {

// Shapes of queries (n, d), keys (N, d), weights (N,) or (N, C) and classes (n,), which
// the core reads without knowing the arrays' sizes.
void check_inputs(const char* where, const FloatArray& queries, const FloatArray& keys,
                  const std::optional<FloatArray>& weights,
                  const std::optional<Int64Array>& classes) {
  check_array(queries, where, "queries", 2);
  check_array(keys, where, "keys", 2, {-1, queries.shape(1)});
  if (weights) {
    check(weights->ndim() == 1 || weights->ndim() == 2, where,
          "weights must be a vector (N,) or a matrix (N, C)");
    check(weights->shape(0) == keys.shape(0), where, "weights must have one row per key");
    if (weights->ndim() == 2) {
      check(classes.has_value(), where, "a weight matrix (N, C) needs classes");
      check_array(*classes, where, "classes", 1, {queries.shape(0)});
    } else {
      check(!classes, where, "classes is only used with a weight matrix (N, C)");
    }
  } else {
    check(!classes, where, "classes was given without weights");
  }
}

KeyWeights make_weights(const std::optional<FloatArray>& weights,
                        const std::optional<Int64Array>& classes) {
  KeyWeights w;
  if (weights) {
    w.data = weights->data();
    w.n_cols = weights->ndim() == 2 ? weights->shape(1) : 1;
    if (classes) w.classes = classes->data();
  }
  return w;
}

}  // namespace

void bind_gram(py::module_& m) {
  m.def(
      "gram_topk",
      [](const FloatArray& queries, const FloatArray& keys, int64_t k,
         const std::optional<FloatArray>& weights, const std::optional<Int64Array>& classes,
         const std::string& metric, bool largest, int64_t n_threads) {
        check_inputs("gram_topk", queries, keys, weights, classes);
        const int threads = threads_arg(n_threads, "gram_topk");
        const int64_t n = queries.shape(0), n_keys = keys.shape(0), dim = queries.shape(1);
        check(k >= 1 && k <= n_keys, "gram_topk",
              "k = " + std::to_string(k) + " must be in [1, " + std::to_string(n_keys) + "]");
        const Metric met = parse_metric(metric);
        FloatArray values({n, k});
        Int64Array indices({n, k});
        const KeyWeights w = make_weights(weights, classes);
        float* pv = values.mutable_data();
        int64_t* pi = indices.mutable_data();
        {
          py::gil_scoped_release release;
          gram_topk(queries.data(), n, keys.data(), n_keys, dim, k, w, met, largest, pv, pi,
                    threads);
        }
        return py::make_tuple(values, indices);
      },
      py::arg("queries"), py::arg("keys"), py::arg("k"), py::arg("weights"), py::arg("classes"),
      py::arg("metric"), py::arg("largest"), py::arg("n_threads"));

  m.def(
      "gram_dense",
      [](const FloatArray& queries, const FloatArray& keys,
         const std::optional<FloatArray>& weights, const std::optional<Int64Array>& classes,
         const std::string& metric, int64_t n_threads) {
        check_inputs("gram", queries, keys, weights, classes);
        const int threads = threads_arg(n_threads, "gram");
        const int64_t n = queries.shape(0), n_keys = keys.shape(0), dim = queries.shape(1);
        const Metric met = parse_metric(metric);
        FloatArray out({n, n_keys});
        const KeyWeights w = make_weights(weights, classes);
        float* po = out.mutable_data();
        {
          py::gil_scoped_release release;
          gram_dense(queries.data(), n, keys.data(), n_keys, dim, w, met, po, threads);
        }
        return out;
      },
      py::arg("queries"), py::arg("keys"), py::arg("weights"), py::arg("classes"),
      py::arg("metric"), py::arg("n_threads"));
}

}  // namespace datacredit::bindings
