/* Loads a DualDA explainer through the installed C API and checks its top-k against the
 * Python result (make_reference.py writes the explainer, the queries and the expected top-k).
 *   consumer EXPLAINER QUERIES EXPECTED
 * QUERIES: "n d k" then n*d floats; EXPECTED: n*k pairs "index value" (best first). */
#include <datacredit/c_api.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: consumer EXPLAINER QUERIES EXPECTED\n");
    return 2;
  }
  int major, minor, patch;
  dc_version(&major, &minor, &patch);
  dc_dualda* h = NULL;
  if (dc_dualda_load(argv[1], &h) != DC_OK) {
    fprintf(stderr, "load failed: %s\n", dc_last_error());
    return 1;
  }
  int64_t d = 0, n_classes = 0;
  dc_dualda_dim(h, &d, &n_classes);
  FILE* fq = fopen(argv[2], "r");
  FILE* fe = fopen(argv[3], "r");
  long n = 0, qd = 0, k = 0;
  if (!fq || !fe || fscanf(fq, "%ld %ld %ld", &n, &qd, &k) != 3 || qd != d || n < 1 || k < 1) {
    fprintf(stderr, "bad query file or dimension (explainer d = %lld)\n", (long long)d);
    return 1;
  }
  float* q = malloc(sizeof(float) * n * d);
  float* v = malloc(sizeof(float) * n * k);
  int64_t* idx = malloc(sizeof(int64_t) * n * k);
  for (long i = 0; i < n * d; ++i)
    if (fscanf(fq, "%f", &q[i]) != 1) return 1;
  if (dc_dualda_topk(h, q, n, d, NULL, k, v, idx) != DC_OK) {
    fprintf(stderr, "topk failed: %s\n", dc_last_error());
    return 1;
  }
  /* Python and this library may link different BLAS builds: values agree to float32
   * rounding, and an index may differ only where the two values are tied within it. */
  double scale = 0;
  long mismatches = 0, swaps = 0;
  long long want_i;
  double want_v;
  for (long j = 0; j < n * k; ++j) {
    if (fscanf(fe, "%lld %lf", &want_i, &want_v) != 2) return 1;
    if (fabs(want_v) > scale) scale = fabs(want_v);
    const double tol = 1e-5 * (scale > 1e-30 ? scale : 1.0);
    if (fabs(v[j] - want_v) > tol) ++mismatches;
    if (idx[j] != want_i) ++swaps;
    if (idx[j] != want_i && fabs(v[j] - want_v) > tol) ++mismatches;
  }
  printf(
      "consumer (datacredit %d.%d.%d): %ld queries, k = %ld, %ld value mismatches, %ld tied "
      "swaps\n",
      major, minor, patch, n, k, mismatches, swaps);
  dc_dualda_free(h);
  free(q);
  free(v);
  free(idx);
  return mismatches == 0 ? 0 : 1;
}
