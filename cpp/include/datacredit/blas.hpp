// The one GEMM the core needs, C = A * B^T, behind whichever BLAS the build found
// (scipy-openblas32, a system CBLAS, or a portable blocked fallback).
#pragma once

#include <cstdint>

namespace datacredit {

// C (m x n, row stride ldc) = A (m x k, row stride lda) * B^T, B being (n x k, row stride ldb).
// All row-major float32.  Uses the BLAS's own threads unless a SerialBlasScope is alive.
void sgemm_nt(int64_t m, int64_t n, int64_t k, const float* A, int64_t lda, const float* B,
              int64_t ldb, float* C, int64_t ldc);

// While alive, BLAS calls stay on the calling thread: hold one around an OpenMP region
// whose threads each call sgemm_nt, so the cores are not oversubscribed.
class SerialBlasScope {
 public:
  SerialBlasScope();
  ~SerialBlasScope();
  SerialBlasScope(const SerialBlasScope&) = delete;
  SerialBlasScope& operator=(const SerialBlasScope&) = delete;
};

// Name of the BLAS compiled in: "scipy-openblas32", "cblas" or "builtin".
const char* blas_name();

}  // namespace datacredit
