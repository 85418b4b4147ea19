#include <string>

#include "bindings.hpp"
#include "datacredit/common.hpp"
#include "datacredit/pq_fastscan.hpp"

namespace datacredit::bindings {

namespace {

using ByteArray = py::array_t<uint8_t, py::array::c_style>;

constexpr const char* kWhere = "ProductQuantizer";

void check_tables(const FloatArray& tables) {
  check(tables.ndim() == 3 && tables.shape(2) == 16 && tables.shape(1) > 0, kWhere,
        "tables must have shape (nq, m, 16)");
}

// 1 <= k <= n (before the (nq x k) results are allocated).
void check_k(int64_t k, int64_t n) {
  check(k >= 1 && k <= n, kWhere,
        "k = " + std::to_string(k) + " must be in [1, N = " + std::to_string(n) + "]");
}

// Candidates (nq x rerank) for a re-rank keeping k of them; returns rerank.
int64_t check_candidates(const Int64Array& cand, int64_t nq, int64_t k) {
  check(cand.ndim() == 2 && cand.shape(0) == nq, kWhere, "candidates must have shape (nq, rerank)");
  const int64_t kc = cand.shape(1);
  check(k >= 1 && k <= kc, kWhere,
        "k = " + std::to_string(k) + " must be in [1, rerank = " + std::to_string(kc) + "]");
  return kc;
}

void check_packed(const ByteArray& packed, int64_t n, int64_t m) {
  check(n > 0 && m > 0, kWhere, "packed codes are empty");
  check(packed.ndim() == 3 && packed.shape(0) == fastscan_n_pad(n) / 32 &&
            packed.shape(1) == fastscan_m_pad(m) / 2 && packed.shape(2) == 32,
        kWhere,
        "packed codes must have shape (" + std::to_string(fastscan_n_pad(n) / 32) + ", " +
            std::to_string(fastscan_m_pad(m) / 2) + ", 32) for n = " + std::to_string(n) +
            ", m = " + std::to_string(m));
}

// IVF layout: packed (n_blocks, m_pad / 2, 32), list_blocks (nlist + 1), ids (n_blocks * 32).
void check_packed_ivf(const ByteArray& packed, const Int64Array& list_blocks, const Int64Array& ids,
                      int64_t m) {
  check(list_blocks.ndim() == 1 && list_blocks.shape(0) >= 2, kWhere,
        "list_blocks must have shape (nlist + 1,)");
  const int64_t n_blocks = list_blocks.data()[list_blocks.shape(0) - 1];
  check(packed.ndim() == 3 && packed.shape(0) == n_blocks &&
            packed.shape(1) == fastscan_m_pad(m) / 2 && packed.shape(2) == 32,
        kWhere,
        "packed codes must have shape (" + std::to_string(n_blocks) + ", " +
            std::to_string(fastscan_m_pad(m) / 2) + ", 32) for list_blocks[-1] = " +
            std::to_string(n_blocks) + ", m = " + std::to_string(m));
  check(ids.ndim() == 1 && ids.shape(0) == n_blocks * 32, kWhere,
        "ids must have shape (" + std::to_string(n_blocks * 32) + ",)");
}

}  // namespace

void bind_pq_fastscan(py::module_& m) {
  m.def("pq_fastscan_has_avx2", &pq_fastscan_has_avx2);

  m.def(
      "pq_fastscan_pack",
      [](const ByteArray& codes, int64_t n_threads_arg) {
        const int n_threads = threads_arg(n_threads_arg, kWhere);
        check(codes.ndim() == 2 && codes.shape(0) > 0 && codes.shape(1) > 0, kWhere,
              "codes must be a non-empty (n, m) matrix");
        const int64_t n = codes.shape(0), ms = codes.shape(1);
        ByteArray out({fastscan_n_pad(n) / 32, fastscan_m_pad(ms) / 2, int64_t{32}});
        uint8_t* po = out.mutable_data();
        {
          py::gil_scoped_release release;
          pq_fastscan_pack(codes.data(), n, ms, po, n_threads);
        }
        return out;
      },
      py::arg("codes"), py::arg("n_threads"));

  m.def(
      "pq_fastscan_pack_ivf",
      [](const ByteArray& codes, const Int64Array& lists, int64_t nlist, int64_t n_threads_arg) {
        const int n_threads = threads_arg(n_threads_arg, kWhere);
        check(codes.ndim() == 2 && codes.shape(0) > 0 && codes.shape(1) > 0, kWhere,
              "codes must be a non-empty (n, m) matrix");
        const int64_t n = codes.shape(0), ms = codes.shape(1);
        check(lists.ndim() == 1 && lists.shape(0) == n, kWhere,
              "lists must have shape (" + std::to_string(n) + ",)");
        check(nlist >= 1, kWhere, "nlist must be >= 1");
        Int64Array list_blocks({nlist + 1});
        const int64_t n_blocks =
            pq_fastscan_ivf_blocks(lists.data(), n, nlist, list_blocks.mutable_data());
        ByteArray out({n_blocks, fastscan_m_pad(ms) / 2, int64_t{32}});
        Int64Array ids({n_blocks * 32});
        uint8_t* po = out.mutable_data();
        int64_t* pi = ids.mutable_data();
        const int64_t* pb = list_blocks.data();
        {
          py::gil_scoped_release release;
          pq_fastscan_pack_ivf(codes.data(), n, ms, lists.data(), nlist, pb, po, pi, n_threads);
        }
        return py::make_tuple(out, list_blocks, ids);
      },
      py::arg("codes"), py::arg("lists"), py::arg("nlist"), py::arg("n_threads"));

  m.def(
      "pq_fastscan_search_ivf",
      [](const FloatArray& tables, const ByteArray& packed, const Int64Array& list_blocks,
         const Int64Array& ids, int64_t n, const Int64Array& probes, int64_t k,
         const std::string& metric, int64_t n_threads_arg, bool force_scalar) {
        const int n_threads = threads_arg(n_threads_arg, kWhere);
        check_tables(tables);
        const int64_t nq = tables.shape(0), ms = tables.shape(1);
        check_packed_ivf(packed, list_blocks, ids, ms);
        check(probes.ndim() == 2 && probes.shape(0) == nq && probes.shape(1) >= 1, kWhere,
              "probes must have shape (nq, nprobe)");
        const PQMetric met = parse_pq_metric(metric);
        check_k(k, n);
        FloatArray dist({nq, k});
        Int64Array idx({nq, k});
        float* pd = dist.mutable_data();
        int64_t* pi = idx.mutable_data();
        {
          py::gil_scoped_release release;
          pq_fastscan_search_ivf(tables.data(), nq, ms, packed.data(), list_blocks.data(),
                                 list_blocks.shape(0) - 1, ids.data(), n, probes.data(),
                                 probes.shape(1), k, met, pd, pi, n_threads, force_scalar);
        }
        return py::make_tuple(dist, idx);
      },
      py::arg("tables"), py::arg("packed"), py::arg("list_blocks"), py::arg("ids"), py::arg("n"),
      py::arg("probes"), py::arg("k"), py::arg("metric"), py::arg("n_threads"),
      py::arg("force_scalar"));

  m.def(
      "pq_fastscan_rerank_ivf",
      [](const FloatArray& tables, const ByteArray& packed, const Int64Array& positions,
         const Int64Array& cand, int64_t k, const std::string& metric, int64_t n_threads_arg) {
        const int n_threads = threads_arg(n_threads_arg, kWhere);
        check_tables(tables);
        const int64_t nq = tables.shape(0), ms = tables.shape(1);
        check(packed.ndim() == 3 && packed.shape(1) == fastscan_m_pad(ms) / 2 &&
                  packed.shape(2) == 32,
              kWhere, "packed codes must have shape (n_blocks, ceil(m / 2), 32)");
        check(positions.ndim() == 1 && positions.shape(0) > 0, kWhere,
              "positions must be a non-empty vector");
        const int64_t kc = check_candidates(cand, nq, k);
        const PQMetric met = parse_pq_metric(metric);
        FloatArray dist({nq, k});
        Int64Array idx({nq, k});
        float* pd = dist.mutable_data();
        int64_t* pi = idx.mutable_data();
        {
          py::gil_scoped_release release;
          pq_fastscan_rerank_ivf(tables.data(), nq, ms, packed.data(), packed.shape(0) * 32,
                                 positions.data(), positions.shape(0), cand.data(), kc, k, met, pd,
                                 pi, n_threads);
        }
        return py::make_tuple(dist, idx);
      },
      py::arg("tables"), py::arg("packed"), py::arg("positions"), py::arg("candidates"),
      py::arg("k"), py::arg("metric"), py::arg("n_threads"));

  m.def(
      "pq_fastscan_unpack",
      [](const ByteArray& packed, int64_t n, int64_t ms) {
        check_packed(packed, n, ms);
        ByteArray out({n, ms});
        pq_fastscan_unpack(packed.data(), n, ms, out.mutable_data());
        return out;
      },
      py::arg("packed"), py::arg("n"), py::arg("m"));

  m.def(
      "pq_fastscan_quantize_tables",
      [](const FloatArray& tables, const std::string& metric, int64_t n_threads_arg) {
        const int n_threads = threads_arg(n_threads_arg, kWhere);
        check_tables(tables);
        const PQMetric met = parse_pq_metric(metric);
        const int64_t nq = tables.shape(0), ms = tables.shape(1);
        ByteArray lut({nq, ms, int64_t{16}});
        FloatArray scale({nq}), bias({nq});
        uint8_t* pl = lut.mutable_data();
        float* ps = scale.mutable_data();
        float* pb = bias.mutable_data();
        {
          py::gil_scoped_release release;
          pq_fastscan_quantize_tables(tables.data(), nq, ms, met, pl, ps, pb, n_threads);
        }
        return py::make_tuple(lut, scale, bias);
      },
      py::arg("tables"), py::arg("metric"), py::arg("n_threads"));

  m.def(
      "pq_fastscan_search",
      [](const FloatArray& tables, const ByteArray& packed, int64_t n, int64_t k,
         const std::string& metric, int64_t n_threads_arg, bool force_scalar) {
        const int n_threads = threads_arg(n_threads_arg, kWhere);
        check_tables(tables);
        const int64_t nq = tables.shape(0), ms = tables.shape(1);
        check_packed(packed, n, ms);
        const PQMetric met = parse_pq_metric(metric);
        check_k(k, n);
        FloatArray dist({nq, k});
        Int64Array idx({nq, k});
        float* pd = dist.mutable_data();
        int64_t* pi = idx.mutable_data();
        {
          py::gil_scoped_release release;
          pq_fastscan_search(tables.data(), nq, ms, packed.data(), n, k, met, pd, pi, n_threads,
                             force_scalar);
        }
        return py::make_tuple(dist, idx);
      },
      py::arg("tables"), py::arg("packed"), py::arg("n"), py::arg("k"), py::arg("metric"),
      py::arg("n_threads"), py::arg("force_scalar"));

  m.def(
      "pq_fastscan_rerank",
      [](const FloatArray& tables, const ByteArray& packed, int64_t n, const Int64Array& cand,
         int64_t k, const std::string& metric, int64_t n_threads_arg) {
        const int n_threads = threads_arg(n_threads_arg, kWhere);
        check_tables(tables);
        const int64_t nq = tables.shape(0), ms = tables.shape(1);
        check_packed(packed, n, ms);
        const int64_t kc = check_candidates(cand, nq, k);
        const PQMetric met = parse_pq_metric(metric);
        FloatArray dist({nq, k});
        Int64Array idx({nq, k});
        float* pd = dist.mutable_data();
        int64_t* pi = idx.mutable_data();
        {
          py::gil_scoped_release release;
          pq_fastscan_rerank(tables.data(), nq, ms, packed.data(), n, cand.data(), kc, k, met, pd,
                             pi, n_threads);
        }
        return py::make_tuple(dist, idx);
      },
      py::arg("tables"), py::arg("packed"), py::arg("n"), py::arg("candidates"), py::arg("k"),
      py::arg("metric"), py::arg("n_threads"));
}

}  // namespace datacredit::bindings
