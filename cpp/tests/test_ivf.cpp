// IVF-Flat search against a brute-force double-precision reference restricted to the
// probed lists, thread-count independence, padding, and argument errors.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "check.hpp"
#include "datacredit/ivf.hpp"

namespace {

void run_case(int64_t n, int64_t n_keys, int64_t dim, int64_t nlist, int64_t nprobe,
              int64_t per_list, int64_t r, std::mt19937& rng) {
  std::normal_distribution<float> normal;
  std::uniform_int_distribution<int64_t> pick_list(0, nlist - 1);
  std::vector<float> q(n * dim), keys(n_keys * dim);
  for (auto& v : q) v = normal(rng);
  for (auto& v : keys) v = normal(rng);
  // Random list of each key (some lists may stay empty); order groups keys by list.
  std::vector<int64_t> list_of(n_keys), order(n_keys), starts(nlist + 1, 0);
  for (auto& l : list_of) l = pick_list(rng);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return list_of[a] < list_of[b]; });
  for (int64_t j = 0; j < n_keys; ++j) ++starts[list_of[j] + 1];
  for (int64_t l = 0; l < nlist; ++l) starts[l + 1] += starts[l];
  // Distinct probed lists per query (a random permutation prefix); one query probes none.
  std::vector<int64_t> probes(n * nprobe);
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int64_t> perm(nlist);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int64_t s = 0; s < nprobe; ++s) probes[i * nprobe + s] = i == 1 ? -1 : perm[s];
  }
  std::vector<float> dist(n * r), dist2(n * r);
  std::vector<int64_t> idx(n * r), idx2(n * r);
  datacredit::ivf_flat_search(q.data(), n, keys.data(), n_keys, dim, order.data(), starts.data(),
                              nlist, probes.data(), nprobe, per_list, r, dist.data(), idx.data(),
                              1);
  datacredit::ivf_flat_search(q.data(), n, keys.data(), n_keys, dim, order.data(), starts.data(),
                              nlist, probes.data(), nprobe, per_list, r, dist2.data(), idx2.data(),
                              3);
  DC_EXPECT(idx == idx2 && dist == dist2);  // the thread count changes nothing
  for (int64_t i = 0; i < n; ++i) {
    // Reference: per probed list its best per_list keys (double distances), then the best r.
    std::vector<std::pair<double, int64_t>> pool;
    double bound = INFINITY;  // the first probed list's per_list-th distance, when full
    for (int64_t s = 0; s < nprobe; ++s) {
      const int64_t l = probes[i * nprobe + s];
      if (l < 0) continue;
      std::vector<std::pair<double, int64_t>> in_list;
      for (int64_t t = starts[l]; t < starts[l + 1]; ++t) {
        const int64_t j = order[t];
        double d2 = 0;
        for (int64_t p = 0; p < dim; ++p) {
          const double diff = double(q[i * dim + p]) - keys[j * dim + p];
          d2 += diff * diff;
        }
        in_list.emplace_back(d2, j);
      }
      std::sort(in_list.begin(), in_list.end());
      in_list.resize(std::min<size_t>(in_list.size(), static_cast<size_t>(per_list)));
      if (s == 0 && static_cast<int64_t>(in_list.size()) == per_list) bound = in_list.back().first;
      pool.insert(pool.end(), in_list.begin(), in_list.end());
    }
    std::sort(pool.begin(), pool.end());
    // Keys beyond the bound are skipped (the best per_list never are).
    while (!pool.empty() && pool.back().first > bound * (1 + 1e-5)) pool.pop_back();
    // (a key within float rounding of the bound may or may not be kept: not checked)
    const int64_t firm = std::count_if(pool.begin(), pool.end(),
                                       [&](const auto& e) { return e.first < bound * (1 - 1e-5); });
    // Rank by rank the same distances (float32 rounding may swap near-ties), and every
    // returned key from the pool with its own distance; padding past the pool.
    for (int64_t t = 0; t < r; ++t) {
      if (t < firm) {
        const double tol = 1e-4 * (1 + pool[t].first);
        DC_EXPECT(std::abs(dist[i * r + t] - pool[t].first) <= tol);
        const auto hit = std::find_if(pool.begin(), pool.end(),
                                      [&](const auto& e) { return e.second == idx[i * r + t]; });
        DC_EXPECT(hit != pool.end() && std::abs(hit->first - dist[i * r + t]) <= tol);
      } else if (t >= static_cast<int64_t>(pool.size())) {
        DC_EXPECT(idx[i * r + t] == -1 && std::isinf(dist[i * r + t]));
      }
    }
  }
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  run_case(40, 600, 8, 12, 3, 5, 10, rng);
  run_case(300, 3000, 16, 20, 4, 20, 20, rng);  // more queries per list than a block
  run_case(5, 50, 3, 30, 30, 2, 70, rng);       // all lists, tiny lists, padding
  std::vector<float> q(4, 0.0f), keys(8, 0.0f), d(2);
  std::vector<int64_t> order = {0, 1, 2, 3}, starts = {0, 2, 4}, probes = {0, 5}, ids(2);
  DC_EXPECT(dctest::throws_invalid(
      [&] {
        datacredit::ivf_flat_search(q.data(), 2, keys.data(), 4, 2, order.data(), starts.data(), 2,
                                    probes.data(), 1, 1, 1, d.data(), ids.data(), 1);
      },
      "outside [-1, nlist)"));
  q[0] = NAN;
  probes = {0, 1};
  DC_EXPECT(dctest::throws_invalid(
      [&] {
        datacredit::ivf_flat_search(q.data(), 2, keys.data(), 4, 2, order.data(), starts.data(), 2,
                                    probes.data(), 1, 1, 1, d.data(), ids.data(), 1);
      },
      "queries contains NaN"));
  return dctest::finish("test_ivf");
}
