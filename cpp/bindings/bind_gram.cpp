#include <optional>

#include "bindings.hpp"
#include "datacredit/gram.hpp"

namespace datacredit::bindings {

namespace {

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
         const std::string& metric, bool largest, int n_threads) {
        const int64_t n = queries.shape(0), n_keys = keys.shape(0), dim = queries.shape(1);
        const Metric met = parse_metric(metric);
        FloatArray values({n, k});
        Int64Array indices({n, k});
        const KeyWeights w = make_weights(weights, classes);
        float* pv = values.mutable_data();
        int64_t* pi = indices.mutable_data();
        {
          py::gil_scoped_release release;
          gram_topk(queries.data(), n, keys.data(), n_keys, dim, k, w, met, largest, pv, pi,
                    n_threads);
        }
        return py::make_tuple(values, indices);
      },
      py::arg("queries"), py::arg("keys"), py::arg("k"), py::arg("weights"), py::arg("classes"),
      py::arg("metric"), py::arg("largest"), py::arg("n_threads"));

  m.def(
      "gram_dense",
      [](const FloatArray& queries, const FloatArray& keys,
         const std::optional<FloatArray>& weights, const std::optional<Int64Array>& classes,
         const std::string& metric, int n_threads) {
        const int64_t n = queries.shape(0), n_keys = keys.shape(0), dim = queries.shape(1);
        const Metric met = parse_metric(metric);
        FloatArray out({n, n_keys});
        const KeyWeights w = make_weights(weights, classes);
        float* po = out.mutable_data();
        {
          py::gil_scoped_release release;
          gram_dense(queries.data(), n, keys.data(), n_keys, dim, w, met, po, n_threads);
        }
        return out;
      },
      py::arg("queries"), py::arg("keys"), py::arg("weights"), py::arg("classes"),
      py::arg("metric"), py::arg("n_threads"));
}

}  // namespace datacredit::bindings
