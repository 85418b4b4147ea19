#include "bindings.hpp"
#include "datacredit/ivf.hpp"

namespace datacredit::bindings {

void bind_ivf(py::module_& m) {
  m.def(
      "ivf_flat_search",
      [](const FloatArray& queries, const FloatArray& list_keys, const FloatArray& key_sq,
         const Int64Array& ids, const Int64Array& starts, const Int64Array& probes, int64_t r,
         int64_t n_threads) {
        const char* where = "ivf_flat_search";
        check_array(queries, where, "queries", 2);
        check_array(list_keys, where, "keys", 2, {-1, queries.shape(1)});
        check_array(key_sq, where, "key_sq", 1, {list_keys.shape(0)});
        check_array(ids, where, "ids", 1, {list_keys.shape(0)});
        check_array(starts, where, "starts", 1);
        check(starts.shape(0) >= 2, where, "starts needs nlist + 1 >= 2 entries");
        check_array(probes, where, "probes", 2, {queries.shape(0)});
        const int threads = threads_arg(n_threads, where);
        const int64_t n = queries.shape(0);
        check(r >= 1, where, "r = " + std::to_string(r) + " must be >= 1");
        FloatArray dist({n, r});
        Int64Array idx({n, r});
        float* pd = dist.mutable_data();
        int64_t* pi = idx.mutable_data();
        {
          py::gil_scoped_release release;
          ivf_flat_search(queries.data(), n, list_keys.data(), key_sq.data(), ids.data(),
                          list_keys.shape(0), queries.shape(1), starts.data(), starts.shape(0) - 1,
                          probes.data(), probes.shape(1), r, pd, pi, threads);
        }
        return py::make_tuple(dist, idx);
      },
      py::arg("queries"), py::arg("list_keys"), py::arg("key_sq"), py::arg("ids"),
      py::arg("starts"), py::arg("probes"), py::arg("r"), py::arg("n_threads"));
}

}  // namespace datacredit::bindings
