#include "bindings.hpp"
#include "datacredit/ivf.hpp"

namespace datacredit::bindings {

void bind_ivf(py::module_& m) {
  m.def(
      "ivf_flat_search",
      [](const FloatArray& queries, const FloatArray& keys, const Int64Array& order,
         const Int64Array& starts, const Int64Array& probes, int64_t per_list, int64_t r,
         int64_t n_threads) {
        const char* where = "ivf_flat_search";
        check_array(queries, where, "queries", 2);
        check_array(keys, where, "keys", 2, {-1, queries.shape(1)});
        check_array(order, where, "order", 1, {keys.shape(0)});
        check_array(starts, where, "starts", 1);
        check(starts.shape(0) >= 2, where, "starts needs nlist + 1 >= 2 entries");
        check_array(probes, where, "probes", 2, {queries.shape(0)});
        const int threads = threads_arg(n_threads, where);
        const int64_t n = queries.shape(0);
        check(r >= 1, where, "r = " + std::to_string(r) + " must be >= 1");
        check(per_list >= 1, where, "per_list = " + std::to_string(per_list) + " must be >= 1");
        FloatArray dist({n, r});
        Int64Array idx({n, r});
        float* pd = dist.mutable_data();
        int64_t* pi = idx.mutable_data();
        {
          py::gil_scoped_release release;
          ivf_flat_search(queries.data(), n, keys.data(), keys.shape(0), queries.shape(1),
                          order.data(), starts.data(), starts.shape(0) - 1, probes.data(),
                          probes.shape(1), per_list, r, pd, pi, threads);
        }
        return py::make_tuple(dist, idx);
      },
      py::arg("queries"), py::arg("keys"), py::arg("order"), py::arg("starts"), py::arg("probes"),
      py::arg("per_list"), py::arg("r"), py::arg("n_threads"));
}

}  // namespace datacredit::bindings
