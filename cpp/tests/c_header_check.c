/* Compiled as C: the public header is plain C and the shared library links from C. */
#include <stdio.h>
#include <string.h>

#include "datacredit/c_api.h"

int main(void) {
  int major = -1, minor = -1, patch = -1;
  dc_dualda* h = (dc_dualda*)1;
  if (dc_version(&major, &minor, &patch) != 0 || major != 0 || minor != 1) return 1;
  /* A missing file: an error code, a message naming the function, and a NULL handle. */
  if (dc_dualda_load("/nonexistent/explainer.safetensors", &h) != DC_ERR_IO) return 2;
  if (h != NULL || strstr(dc_last_error(), "dc_dualda_load") == NULL) return 3;
  dc_dualda_free(NULL);
  printf("C header OK: datacredit %d.%d.%d\n", major, minor, patch);
  return 0;
}
