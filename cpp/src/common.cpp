#include "datacredit/common.hpp"

#include <algorithm>
#include <cmath>

#ifdef DATACREDIT_HAVE_OPENMP
#include <omp.h>
#endif

namespace datacredit {

bool all_finite(const float* values, int64_t count) {
  // Branch-free accumulation vectorises; x - x is NaN exactly when x is NaN or inf.
  float acc = 0.0f;
  for (int64_t i = 0; i < count; ++i) acc += values[i] - values[i];
  return acc == 0.0f;
}

std::vector<float> row_mean(const float* x, int64_t rows, int64_t dim) {
  std::vector<double> acc(static_cast<size_t>(dim), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t p = 0; p < dim; ++p) acc[static_cast<size_t>(p)] += x[r * dim + p];
  std::vector<float> mean(static_cast<size_t>(dim));
  for (int64_t p = 0; p < dim; ++p)
    mean[static_cast<size_t>(p)] = static_cast<float>(acc[static_cast<size_t>(p)] / rows);
  return mean;
}

int resolve_threads(int64_t n_threads) {
  check(n_threads <= kMaxThreads, "n_threads",
        "n_threads = " + std::to_string(n_threads) + " is above the limit of " +
            std::to_string(kMaxThreads) + " (use <= 0 or None for all cores)");
#ifdef DATACREDIT_HAVE_OPENMP
  if (n_threads <= 0) return omp_get_max_threads();
  return static_cast<int>(std::min<int64_t>(n_threads, std::max(1, omp_get_num_procs())));
#else
  return 1;
#endif
}

}  // namespace datacredit
