// Inverted-file 8-bit PQ search: only the codes of the probed lists are scanned, with the
// flat search's tables, pruning and tie rule (pq_scan.hpp).
#include <algorithm>
#include <limits>
#include <string>
#include <vector>

#include "datacredit/common.hpp"
#include "datacredit/pq.hpp"
#include "datacredit/topk.hpp"
#include "pq_scan.hpp"

namespace datacredit {

using namespace pq_detail;

void check_ivf_search(const char* where, int64_t nq, int64_t n_codes, int64_t nlist, int64_t nprobe,
                      int64_t k) {
  check(nq > 0, where, "queries is empty");
  check(n_codes > 0, where, "codes is empty");
  check(nlist >= 1, where, "nlist must be >= 1");
  check(nprobe >= 1 && nprobe <= nlist, where,
        "nprobe = " + std::to_string(nprobe) + " must be in [1, nlist = " + std::to_string(nlist) +
            "]");
  check(k >= 1 && k <= n_codes, where,
        "k = " + std::to_string(k) + " must be in [1, n_codes = " + std::to_string(n_codes) + "]");
}

void pq_search_ivf(const PQShape& shape, const float* tables, int64_t nq, const uint8_t* codes,
                   int64_t n_codes, const int64_t* lists, int64_t nlist, const int64_t* probes,
                   int64_t nprobe, int64_t k, PQMetric metric, float* distances, int64_t* indices,
                   int n_threads) {
  const char* where = "pq_search";
  check_pq_shape(shape, where);
  check_ivf_search(where, nq, n_codes, nlist, nprobe, k);
  check(all_finite(tables, nq * shape.m * shape.ksub()), where, "tables contains NaN or inf");
  validate_codes(shape, codes, n_codes, where);
  for (int64_t i = 0; i < n_codes; ++i)
    if (lists[i] < 0 || lists[i] >= nlist)
      fail(where, "lists[" + std::to_string(i) + "] = " + std::to_string(lists[i]) +
                      " is outside [0, " + std::to_string(nlist) + ")");
  for (int64_t i = 0; i < nq * nprobe; ++i)
    if (probes[i] < 0 || probes[i] >= nlist)
      fail(where, "probes holds " + std::to_string(probes[i]) + ", outside [0, nlist)");
  const int64_t ksub = shape.ksub(), m = shape.m;
  const int threads = resolve_threads(n_threads);

  // Inverted lists: codes grouped by list (stable counting sort keeps index order inside).
  std::vector<int64_t> start(static_cast<size_t>(nlist + 1), 0);
  for (int64_t i = 0; i < n_codes; ++i) ++start[static_cast<size_t>(lists[i] + 1)];
  for (int64_t l = 0; l < nlist; ++l)
    start[static_cast<size_t>(l + 1)] += start[static_cast<size_t>(l)];
  std::vector<int64_t> order(static_cast<size_t>(n_codes));
  {
    std::vector<int64_t> fill(start.begin(), start.end() - 1);
    for (int64_t i = 0; i < n_codes; ++i)
      order[static_cast<size_t>(fill[static_cast<size_t>(lists[i])]++)] = i;
  }
  std::vector<uint8_t> sorted(static_cast<size_t>(n_codes * m));
#pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t p = 0; p < n_codes; ++p)
    std::copy(codes + order[static_cast<size_t>(p)] * m,
              codes + (order[static_cast<size_t>(p)] + 1) * m, sorted.data() + p * m);
  const Planes pl = make_planes(sorted.data(), n_codes, m, threads);
  std::vector<uint8_t>().swap(sorted);

  const bool negate = metric == PQMetric::kInnerProduct;
  const float sign = negate ? 1.0f : -1.0f;
  ParallelErrors errors;
#pragma omp parallel num_threads(threads)
  {
    std::vector<float> neg, keys;
    std::vector<int64_t> ids;
    errors.run([&] {
      keys.resize(static_cast<size_t>(k));
      ids.resize(static_cast<size_t>(k));
    });
#pragma omp for schedule(dynamic, 4)
    for (int64_t q = 0; q < nq; ++q)
      errors.run([&] {
        const float* t = tables + q * m * ksub;
        if (negate) {
          neg.resize(static_cast<size_t>(m * ksub));
          for (int64_t j = 0; j < m * ksub; ++j) neg[static_cast<size_t>(j)] = -t[j];
          t = neg.data();
        }
        QueryState st(t, keys.data(), ids.data(), k);
        st.id_map = order.data();
        prepare_bounds(st, pl, m, ksub);
        for (int64_t pr = 0; pr < nprobe; ++pr) {
          const int64_t l = probes[q * nprobe + pr];
          scan_block_any(st, pl, ksub, start[static_cast<size_t>(l)],
                         start[static_cast<size_t>(l + 1)]);
        }
        // Fewer than k codes in the probed lists: pad with +inf distances and index -1.
        const int64_t got = st.heap.size();
        st.heap.write_sorted(distances + q * k, indices + q * k, sign);
        for (int64_t j = got; j < k; ++j) {
          distances[q * k + j] = negate ? -std::numeric_limits<float>::infinity()
                                        : std::numeric_limits<float>::infinity();
          indices[q * k + j] = -1;
        }
      });
  }
  errors.rethrow();
}

}  // namespace datacredit
