#include <algorithm>
#include <limits>
#include <vector>

#include "bindings.hpp"
#include "datacredit/common.hpp"
#include "datacredit/pq.hpp"

namespace datacredit::bindings {

namespace {

using ByteArray = py::array_t<uint8_t, py::array::c_style>;

PQShape make_shape(int64_t dim, int64_t m, int64_t nbits) {
  PQShape s;
  s.dim = dim;
  s.m = m;
  s.nbits = int_arg(nbits, 1, 8, "ProductQuantizer", "nbits");
  check_pq_shape(s, "ProductQuantizer");
  return s;
}

// Rows (n, d) and centroids (m, ksub, dsub) are checked before any of their shapes is read.
const FloatArray& matrix(const FloatArray& x, const char* name) {
  check_array(x, "ProductQuantizer", name, 2);
  return x;
}
const FloatArray& cube(const FloatArray& c) {
  check_array(c, "ProductQuantizer", "centroids", 3);
  return c;
}

void check_k(int64_t k, int64_t n) {
  check(k >= 1 && k <= n, "ProductQuantizer",
        "k = " + std::to_string(k) + " must be in [1, " + std::to_string(n) + "]");
}

void check_centroids(const PQShape& s, const FloatArray& c) {
  check(c.ndim() == 3 && c.shape(0) == s.m && c.shape(1) == s.ksub() && c.shape(2) == s.dsub(),
        "ProductQuantizer", "centroids must have shape (m, ksub, dsub)");
}

void check_rows(const PQShape& s, const FloatArray& x, const char* name) {
  check(x.ndim() == 2 && x.shape(1) == s.dim, "ProductQuantizer",
        std::string(name) + " must have shape (n, " + std::to_string(s.dim) + ")");
}

void check_codes(const PQShape& s, const ByteArray& codes) {
  check(codes.ndim() == 2 && codes.shape(1) == s.m, "ProductQuantizer",
        "codes must have shape (n, " + std::to_string(s.m) + ")");
}

}  // namespace

void bind_pq(py::module_& m) {
  m.def(
      "pq_train",
      [](const FloatArray& x, int64_t m_sub, int64_t nbits, int64_t n_iter, int64_t mppc,
         int64_t seed, int64_t n_threads_arg) {
        const int n_threads = threads_arg(n_threads_arg, "ProductQuantizer");
        const PQShape s = make_shape(matrix(x, "x").shape(1), m_sub, nbits);
        const int iters = int_arg(n_iter, 1, std::numeric_limits<int>::max(), "pq_train", "n_iter");
        const uint64_t seed_u = seed_arg(seed, "pq_train");
        FloatArray cent({s.m, s.ksub(), s.dsub()});
        float* pc = cent.mutable_data();
        {
          py::gil_scoped_release release;
          pq_train(s, x.data(), x.shape(0), iters, mppc, seed_u, pc, n_threads);
        }
        return cent;
      },
      py::arg("x"), py::arg("m"), py::arg("nbits"), py::arg("n_iter"),
      py::arg("max_points_per_centroid"), py::arg("seed"), py::arg("n_threads"));

  m.def(
      "pq_encode",
      [](const FloatArray& cent, const FloatArray& x, int64_t nbits, int64_t n_threads_arg) {
        const int n_threads = threads_arg(n_threads_arg, "ProductQuantizer");
        const PQShape s = make_shape(matrix(x, "x").shape(1), cube(cent).shape(0), nbits);
        check_centroids(s, cent);
        check_rows(s, x, "x");
        ByteArray codes({x.shape(0), s.m});
        uint8_t* pc = codes.mutable_data();
        {
          py::gil_scoped_release release;
          pq_encode(s, cent.data(), x.data(), x.shape(0), pc, n_threads);
        }
        return codes;
      },
      py::arg("centroids"), py::arg("x"), py::arg("nbits"), py::arg("n_threads"));

  m.def(
      "pq_decode",
      [](const FloatArray& cent, const ByteArray& codes, int64_t dim, int64_t nbits,
         int64_t n_threads_arg) {
        const int n_threads = threads_arg(n_threads_arg, "ProductQuantizer");
        const PQShape s = make_shape(dim, cube(cent).shape(0), nbits);
        check_array(codes, "ProductQuantizer", "codes", 2);
        check_centroids(s, cent);
        check_codes(s, codes);
        FloatArray out({codes.shape(0), dim});
        float* po = out.mutable_data();
        {
          py::gil_scoped_release release;
          pq_decode(s, cent.data(), codes.data(), codes.shape(0), po, n_threads);
        }
        return out;
      },
      py::arg("centroids"), py::arg("codes"), py::arg("dim"), py::arg("nbits"),
      py::arg("n_threads"));

  m.def(
      "pq_compute_tables",
      [](const FloatArray& cent, const FloatArray& queries, int64_t nbits,
         const std::string& metric, int64_t n_threads_arg) {
        const int n_threads = threads_arg(n_threads_arg, "ProductQuantizer");
        const PQShape s =
            make_shape(matrix(queries, "queries").shape(1), cube(cent).shape(0), nbits);
        check_centroids(s, cent);
        const PQMetric met = parse_pq_metric(metric);
        FloatArray out({queries.shape(0), s.m, s.ksub()});
        float* po = out.mutable_data();
        {
          py::gil_scoped_release release;
          pq_compute_tables(s, cent.data(), queries.data(), queries.shape(0), met, po, n_threads);
        }
        return out;
      },
      py::arg("centroids"), py::arg("queries"), py::arg("nbits"), py::arg("metric"),
      py::arg("n_threads"));

  m.def(
      "pq_search",
      [](const FloatArray& cent, const FloatArray& queries, const ByteArray& codes, int64_t k,
         int64_t nbits, const std::string& metric, int64_t n_threads_arg) {
        const int n_threads = threads_arg(n_threads_arg, "ProductQuantizer");
        const PQShape s =
            make_shape(matrix(queries, "queries").shape(1), cube(cent).shape(0), nbits);
        check_centroids(s, cent);
        check_codes(s, codes);
        const PQMetric met = parse_pq_metric(metric);
        const int64_t nq = queries.shape(0);
        check_k(k, codes.shape(0));
        FloatArray dist({nq, k});
        Int64Array idx({nq, k});
        float* pd = dist.mutable_data();
        int64_t* pi = idx.mutable_data();
        {
          py::gil_scoped_release release;
          pq_search(s, cent.data(), queries.data(), nq, codes.data(), codes.shape(0), k, met, pd,
                    pi, n_threads);
        }
        return py::make_tuple(dist, idx);
      },
      py::arg("centroids"), py::arg("queries"), py::arg("codes"), py::arg("k"), py::arg("nbits"),
      py::arg("metric"), py::arg("n_threads"));

  m.def(
      "kmeans",
      [](const FloatArray& x, int64_t k, int64_t n_iter, int64_t mppc, int64_t seed,
         int64_t n_threads_arg) {
        const int n_threads = threads_arg(n_threads_arg, "ProductQuantizer");
        check(x.ndim() == 2, "kmeans", "x must be a matrix");
        check(
            k >= 1 && k <= x.shape(0), "kmeans",
            "k = " + std::to_string(k) + " must be in [1, n = " + std::to_string(x.shape(0)) + "]");
        const int iters = int_arg(n_iter, 1, std::numeric_limits<int>::max(), "kmeans", "n_iter");
        const uint64_t seed_u = seed_arg(seed, "kmeans");
        FloatArray cent({k, static_cast<int64_t>(x.shape(1))});
        float* pc = cent.mutable_data();
        {
          py::gil_scoped_release release;
          kmeans(x.data(), x.shape(0), x.shape(1), k, iters, mppc, seed_u, pc, n_threads);
        }
        return cent;
      },
      py::arg("x"), py::arg("k"), py::arg("n_iter"), py::arg("max_points_per_centroid"),
      py::arg("seed"), py::arg("n_threads"));

  m.def(
      "pq_search_ivf",
      [](const FloatArray& cent, const FloatArray& queries, const ByteArray& codes,
         const Int64Array& lists, int64_t nlist, const Int64Array& probes, int64_t k, int64_t nbits,
         const std::string& metric, int64_t n_threads_arg) {
        const int n_threads = threads_arg(n_threads_arg, "ProductQuantizer");
        const PQShape s =
            make_shape(matrix(queries, "queries").shape(1), cube(cent).shape(0), nbits);
        check_centroids(s, cent);
        check_codes(s, codes);
        const PQMetric met = parse_pq_metric(metric);
        const int64_t nq = queries.shape(0);
        check(lists.ndim() == 1 && lists.shape(0) == codes.shape(0), "ProductQuantizer",
              "lists must have one entry per code");
        check(probes.ndim() == 2 && probes.shape(0) == nq, "ProductQuantizer",
              "probes must have shape (nq, nprobe)");
        check_k(k, codes.shape(0));
        FloatArray dist({nq, k});
        Int64Array idx({nq, k});
        float* pd = dist.mutable_data();
        int64_t* pi = idx.mutable_data();
        {
          py::gil_scoped_release release;
          constexpr int64_t kChunk = 2048;  // bounds the table memory
          const int64_t np = probes.shape(1);
          std::vector<float> tables(static_cast<size_t>(std::min(nq, kChunk) * s.m * s.ksub()));
          for (int64_t q0 = 0; q0 < nq; q0 += kChunk) {
            const int64_t nc = std::min(kChunk, nq - q0);
            pq_compute_tables(s, cent.data(), queries.data() + q0 * s.dim, nc, met, tables.data(),
                              n_threads);
            pq_search_ivf(s, tables.data(), nc, codes.data(), codes.shape(0), lists.data(), nlist,
                          probes.data() + q0 * np, np, k, met, pd + q0 * k, pi + q0 * k, n_threads);
          }
        }
        return py::make_tuple(dist, idx);
      },
      py::arg("centroids"), py::arg("queries"), py::arg("codes"), py::arg("lists"),
      py::arg("nlist"), py::arg("probes"), py::arg("k"), py::arg("nbits"), py::arg("metric"),
      py::arg("n_threads"));
}

}  // namespace datacredit::bindings
