// IVF-Flat search against a brute-force double-precision reference restricted to the
// probed lists, thread-count independence, ragged / empty lists, padding, and argument
// errors.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <random>
#include <vector>

#include "check.hpp"
#include "datacredit/ivf.hpp"

namespace {

void run_case(int64_t n, int64_t n_keys, int64_t dim, int64_t nlist, int64_t nprobe, int64_t r,
              std::mt19937& rng) {
  std::normal_distribution<float> normal;
  // Ragged lists: list l is drawn with weight l + 1, so sizes differ and, with few keys,
  // some lists stay empty.
  std::vector<double> weight(nlist);
  std::iota(weight.begin(), weight.end(), 1.0);
  std::discrete_distribution<int64_t> pick_list(weight.begin(), weight.end());
  std::vector<float> q(n * dim), keys(n_keys * dim);
  for (auto& v : q) v = normal(rng);
  for (auto& v : keys) v = normal(rng);
  std::vector<int64_t> list_of(n_keys), order(n_keys), starts(nlist + 1, 0);
  for (auto& l : list_of) l = pick_list(rng);
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(),
                   [&](int64_t a, int64_t b) { return list_of[a] < list_of[b]; });
  for (int64_t j = 0; j < n_keys; ++j) ++starts[list_of[j] + 1];
  for (int64_t l = 0; l < nlist; ++l) starts[l + 1] += starts[l];
  // Contiguous list storage: row p is key order[p]; its squared norm from the double sum.
  std::vector<float> list_keys(n_keys * dim), key_sq(n_keys);
  for (int64_t p = 0; p < n_keys; ++p) {
    double s = 0;
    for (int64_t c = 0; c < dim; ++c) {
      list_keys[p * dim + c] = keys[order[p] * dim + c];
      s += double(keys[order[p] * dim + c]) * keys[order[p] * dim + c];
    }
    key_sq[p] = static_cast<float>(s);
  }
  // Distinct probed lists per query (a random permutation prefix, so the first probe is
  // not the nearest: the bound must stay safe); query 1 probes none, query 2 only -1 tails.
  std::vector<int64_t> probes(n * nprobe);
  for (int64_t i = 0; i < n; ++i) {
    std::vector<int64_t> perm(nlist);
    std::iota(perm.begin(), perm.end(), 0);
    std::shuffle(perm.begin(), perm.end(), rng);
    for (int64_t s = 0; s < nprobe; ++s)
      probes[i * nprobe + s] = (i == 1 || (i == 2 && s > 0)) ? -1 : perm[s];
  }
  std::vector<float> dist(n * r), dist2(n * r);
  std::vector<int64_t> idx(n * r), idx2(n * r);
  datacredit::ivf_flat_search(q.data(), n, list_keys.data(), key_sq.data(), order.data(), n_keys,
                              dim, starts.data(), nlist, probes.data(), nprobe, r, dist.data(),
                              idx.data(), 1);
  datacredit::ivf_flat_search(q.data(), n, list_keys.data(), key_sq.data(), order.data(), n_keys,
                              dim, starts.data(), nlist, probes.data(), nprobe, r, dist2.data(),
                              idx2.data(), 3);
  DC_EXPECT(idx == idx2 && dist == dist2);  // the thread count changes nothing
  for (int64_t i = 0; i < n; ++i) {
    // Reference: every key of the probed lists with its double distance, sorted.
    std::vector<std::pair<double, int64_t>> pool;
    for (int64_t s = 0; s < nprobe; ++s) {
      const int64_t l = probes[i * nprobe + s];
      if (l < 0) continue;
      for (int64_t t = starts[l]; t < starts[l + 1]; ++t) {
        const int64_t j = order[t];
        double d2 = 0;
        for (int64_t p = 0; p < dim; ++p) {
          const double diff = double(q[i * dim + p]) - keys[j * dim + p];
          d2 += diff * diff;
        }
        pool.emplace_back(d2, j);
      }
    }
    std::sort(pool.begin(), pool.end());
    // Rank by rank the same distances (float32 rounding may swap near-ties), every returned
    // key from the pool with its own distance and distinct; padding past the pool.
    for (int64_t t = 0; t < r; ++t) {
      if (t < static_cast<int64_t>(pool.size())) {
        const double tol = 1e-4 * (1 + pool[t].first);
        DC_EXPECT(std::abs(dist[i * r + t] - pool[t].first) <= tol);
        const auto hit = std::find_if(pool.begin(), pool.end(),
                                      [&](const auto& e) { return e.second == idx[i * r + t]; });
        DC_EXPECT(hit != pool.end() && std::abs(hit->first - dist[i * r + t]) <= tol);
        DC_EXPECT(std::count(idx.begin() + i * r, idx.begin() + (i + 1) * r, idx[i * r + t]) == 1);
      } else {
        DC_EXPECT(idx[i * r + t] == -1 && std::isinf(dist[i * r + t]));
      }
    }
  }
}

}  // namespace

int main() {
  std::mt19937 rng(7);
  run_case(40, 600, 8, 12, 3, 10, rng);
  run_case(1300, 3000, 16, 4, 2, 20, rng);  // > 512 queries and > 512 keys per list
  run_case(5, 50, 3, 30, 30, 70, rng);      // all lists, tiny and empty lists, r > keys
  run_case(30, 20, 4, 40, 6, 3, rng);       // most lists empty, r > most list sizes
  std::vector<float> q(4, 0.0f), keys(8, 0.0f), sq(4, 0.0f), d(2);
  std::vector<int64_t> order = {0, 1, 2, 3}, starts = {0, 2, 4}, probes = {0, 5}, ids(2);
  auto call = [&](int64_t nprobe) {
    datacredit::ivf_flat_search(q.data(), 2, keys.data(), sq.data(), order.data(), 4, 2,
                                starts.data(), 2, probes.data(), nprobe, 1, d.data(), ids.data(),
                                1);
  };
  DC_EXPECT(dctest::throws_invalid([&] { call(1); }, "outside [-1, nlist)"));
  probes = {1, 1};
  DC_EXPECT(dctest::throws_invalid([&] { call(2); }, "twice"));
  q[0] = NAN;
  probes = {0, 1};
  DC_EXPECT(dctest::throws_invalid([&] { call(1); }, "queries contains NaN"));
  return dctest::finish("test_ivf");
}
