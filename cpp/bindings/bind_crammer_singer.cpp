#include <algorithm>
#include <limits>
#include <optional>
#include <string>

#include "bindings.hpp"
#include "datacredit/crammer_singer.hpp"

namespace datacredit::bindings {

using DoubleArray = py::array_t<double, py::array::c_style>;

void bind_crammer_singer(py::module_& m) {
  m.def(
      "crammer_singer_fit",
      [](const FloatArray& X, const Int64Array& y, int64_t n_classes, double C, double tol,
         int64_t max_iter, int64_t seed, bool fit_bias, int64_t n_threads,
         const std::optional<DoubleArray>& sample_weight, double shrink_factor, int64_t max_nnz) {
        if (X.ndim() != 2) throw py::value_error("crammer_singer_fit: X must be 2-D");
        if (y.ndim() != 1 || y.shape(0) != X.shape(0))
          throw py::value_error("crammer_singer_fit: y must have one label per row of X");
        const int64_t n = X.shape(0), d = X.shape(1);
        CrammerSingerOptions opt;
        opt.C = C;
        opt.tol = tol;
        opt.max_iter = max_iter;
        opt.seed = seed_arg(seed, "crammer_singer_fit");
        opt.fit_bias = fit_bias;
        opt.n_threads = threads_arg(n_threads, "crammer_singer_fit");
        int_arg(n_classes, 2, std::numeric_limits<int32_t>::max(), "crammer_singer_fit",
                "n_classes");
        opt.shrink_factor = shrink_factor;
        opt.max_nnz = max_nnz;
        if (sample_weight) {
          if (sample_weight->ndim() != 1 || sample_weight->shape(0) != X.shape(0))
            throw py::value_error("crammer_singer_fit: sample_weight must have one value per row");
          opt.sample_weight = sample_weight->data();
        }
        DoubleArray coef({n_classes > 0 ? n_classes : int64_t{0}, d});
        DoubleArray bias({n_classes > 0 ? n_classes : int64_t{0}});
        double* pc = coef.mutable_data();
        double* pb = bias.mutable_data();
        CrammerSingerStats st;
        CrammerSingerDual dual;
        std::string limit;  // NonzeroLimitExceeded's message, raised as MemoryError below
        {
          py::gil_scoped_release release;
          try {
            st = crammer_singer_fit_sparse(X.data(), n, d, y.data(), n_classes, opt, dual, pc, pb);
          } catch (const NonzeroLimitExceeded& e) {
            limit = e.what();
          }
        }
        if (!limit.empty()) {
          PyErr_SetString(PyExc_MemoryError, limit.c_str());
          throw py::error_already_set();
        }
        // lambda as CSR (O(nnz), never dense N x K).
        const auto nnz = static_cast<py::ssize_t>(dual.values.size());
        Int64Array indptr(static_cast<py::ssize_t>(dual.indptr.size()));
        py::array_t<int32_t> indices(nnz);
        DoubleArray values(nnz);
        std::copy(dual.indptr.begin(), dual.indptr.end(), indptr.mutable_data());
        std::copy(dual.indices.begin(), dual.indices.end(), indices.mutable_data());
        std::copy(dual.values.begin(), dual.values.end(), values.mutable_data());
        py::dict stats;
        stats["n_iter"] = st.n_iter;
        stats["converged"] = st.converged;
        stats["max_violation"] = st.max_violation;
        stats["primal_objective"] = st.primal_objective;
        stats["dual_objective"] = st.dual_objective;
        stats["peak_nnz"] = st.peak_nnz;
        return py::make_tuple(indptr, indices, values, coef, bias, stats);
      },
      py::arg("X"), py::arg("y"), py::arg("n_classes"), py::arg("C"), py::arg("tol"),
      py::arg("max_iter"), py::arg("seed"), py::arg("fit_bias"), py::arg("n_threads"),
      py::arg("sample_weight") = py::none(), py::arg("shrink_factor") = 0.1,
      py::arg("max_nnz") = 0);

  m.def(
      "crammer_singer_primal",
      [](const FloatArray& X, const Int64Array& y, const DoubleArray& coef,
         const std::optional<DoubleArray>& bias, double C, int64_t n_threads,
         const std::optional<DoubleArray>& sample_weight) {
        check_array(X, "crammer_singer_primal", "X", 2);
        check_array(coef, "crammer_singer_primal", "coef", 2, {-1, X.shape(1)});
        const int threads = threads_arg(n_threads, "crammer_singer_primal");
        const int64_t n = X.shape(0), d = X.shape(1), k = coef.shape(0);
        if (y.ndim() != 1 || y.shape(0) != n)
          throw py::value_error("crammer_singer_primal: y must have one label per row of X");
        if (bias && (bias->ndim() != 1 || bias->shape(0) != k))
          throw py::value_error("crammer_singer_primal: bias must be (K,)");
        for (int64_t i = 0; i < n; ++i)
          if (y.data()[i] < 0 || y.data()[i] >= k)
            throw py::value_error("crammer_singer_primal: y holds a label outside [0, K)");
        const double* pb = bias ? bias->data() : nullptr;
        if (sample_weight && (sample_weight->ndim() != 1 || sample_weight->shape(0) != n))
          throw py::value_error("crammer_singer_primal: sample_weight must have one value per row");
        const double* pw = sample_weight ? sample_weight->data() : nullptr;
        double out;
        {
          py::gil_scoped_release release;
          out = crammer_singer_primal(X.data(), n, d, y.data(), k, coef.data(), pb, C, threads, pw);
        }
        return out;
      },
      py::arg("X"), py::arg("y"), py::arg("coef"), py::arg("bias"), py::arg("C"),
      py::arg("n_threads"), py::arg("sample_weight") = py::none());
}

}  // namespace datacredit::bindings
