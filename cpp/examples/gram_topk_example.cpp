// A C++ consumer of datacredit::core: nearest training features for a few queries.
// Built and run by CI (ctest) to prove the core links without Python.
#include <cmath>
#include <cstdio>
#include <vector>

#include "datacredit/gram.hpp"

int main() {
  const int64_t n_keys = 1000, dim = 16, n = 3, k = 4;
  std::vector<float> keys(n_keys * dim), queries(n * dim);
  for (int64_t j = 0; j < n_keys; ++j)
    for (int64_t p = 0; p < dim; ++p) keys[j * dim + p] = std::sin(0.37f * j + 1.3f * p);
  // Each query is a copy of a known key, so its nearest neighbour is that key.
  const int64_t planted[n] = {7, 512, 999};
  for (int64_t i = 0; i < n; ++i)
    for (int64_t p = 0; p < dim; ++p) queries[i * dim + p] = keys[planted[i] * dim + p];

  std::vector<float> values(n * k);
  std::vector<int64_t> indices(n * k);
  datacredit::gram_topk(queries.data(), n, keys.data(), n_keys, dim, k, {},
                        datacredit::Metric::kSquaredL2, /*largest=*/false, values.data(),
                        indices.data());
  for (int64_t i = 0; i < n; ++i) {
    std::printf("query %lld: nearest key %lld (squared distance %.3g)\n", (long long)i,
                (long long)indices[i * k], values[i * k]);
    if (indices[i * k] != planted[i] || values[i * k] > 1e-4f) return 1;
  }
  return 0;
}
