#include "datacredit/common.hpp"

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

int resolve_threads(int n_threads) {
#ifdef DATACREDIT_HAVE_OPENMP
  if (n_threads <= 0) return omp_get_max_threads();
  return n_threads;
#else
  (void)n_threads;
  return 1;
#endif
}

}  // namespace datacredit
