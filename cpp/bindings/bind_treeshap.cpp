#include "bindings.hpp"
#include "datacredit/treeshap.hpp"

namespace datacredit::bindings {

namespace {

using Int32Array = py::array_t<int32_t, py::array::c_style>;
using UInt8Array = py::array_t<uint8_t, py::array::c_style>;
using DoubleArray = py::array_t<double, py::array::c_style>;

TreeEnsembleView make_view(const Int32Array& left, const Int32Array& right,
                           const Int32Array& feature, const FloatArray& threshold,
                           const UInt8Array& default_left, const FloatArray& value,
                           const Int64Array& roots) {
  const char* where = "tree_shap_interventional";
  check_array(left, where, "left", 1);
  const int64_t n = left.shape(0);
  check_array(right, where, "right", 1, {n});
  check_array(feature, where, "feature", 1, {n});
  check_array(threshold, where, "threshold", 1, {n});
  check_array(default_left, where, "default_left", 1, {n});
  check_array(value, where, "value", 1, {n});
  check_array(roots, where, "roots", 1);
  if (right.shape(0) != n || feature.shape(0) != n || threshold.shape(0) != n ||
      default_left.shape(0) != n || value.shape(0) != n)
    throw std::invalid_argument("tree arrays must all have the same length");
  TreeEnsembleView v;
  v.left = left.data();
  v.right = right.data();
  v.feature = feature.data();
  v.threshold = threshold.data();
  v.default_left = default_left.data();
  v.value = value.data();
  v.n_nodes = n;
  v.roots = roots.data();
  v.n_trees = roots.shape(0);
  return v;
}

}  // namespace

void bind_treeshap(py::module_& m) {
  m.def(
      "tree_shap_interventional",
      [](const Int32Array& left, const Int32Array& right, const Int32Array& feature,
         const FloatArray& threshold, const UInt8Array& default_left, const FloatArray& value,
         const Int64Array& roots, const FloatArray& X, const FloatArray& R, int64_t n_threads_arg) {
        const int n_threads = threads_arg(n_threads_arg, "tree_shap_interventional");
        const TreeEnsembleView view =
            make_view(left, right, feature, threshold, default_left, value, roots);
        check_array(X, "tree_shap_interventional", "X", 2);
        check_array(R, "tree_shap_interventional", "references", 2, {-1, X.shape(1)});
        const int64_t n_x = X.shape(0), n_refs = R.shape(0), n_features = X.shape(1);
        DoubleArray phi({n_x, n_features});
        DoubleArray base(n_x), fx(n_x);
        double* pp = phi.mutable_data();
        double* pb = base.mutable_data();
        double* pf = fx.mutable_data();
        {
          py::gil_scoped_release release;
          tree_shap_interventional(view, X.data(), n_x, R.data(), n_refs, n_features, pp, pb, pf,
                                   n_threads);
        }
        return py::make_tuple(phi, base, fx);
      },
      py::arg("left"), py::arg("right"), py::arg("feature"), py::arg("threshold"),
      py::arg("default_left"), py::arg("value"), py::arg("roots"), py::arg("X"),
      py::arg("references"), py::arg("n_threads"));

  m.def(
      "tree_ensemble_predict",
      [](const Int32Array& left, const Int32Array& right, const Int32Array& feature,
         const FloatArray& threshold, const UInt8Array& default_left, const FloatArray& value,
         const Int64Array& roots, const FloatArray& X, int64_t n_threads_arg) {
        const int n_threads = threads_arg(n_threads_arg, "tree_shap_interventional");
        const TreeEnsembleView view =
            make_view(left, right, feature, threshold, default_left, value, roots);
        check_array(X, "tree_ensemble_predict", "X", 2);
        const int64_t n = X.shape(0);
        DoubleArray out(n);
        double* po = out.mutable_data();
        {
          py::gil_scoped_release release;
          tree_ensemble_predict(view, X.data(), n, X.shape(1), po, n_threads);
        }
        return out;
      },
      py::arg("left"), py::arg("right"), py::arg("feature"), py::arg("threshold"),
      py::arg("default_left"), py::arg("value"), py::arg("roots"), py::arg("X"),
      py::arg("n_threads"));
}

}  // namespace datacredit::bindings
