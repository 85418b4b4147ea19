#include "bindings.hpp"
#include "datacredit/blas.hpp"

PYBIND11_MODULE(_core, m) {
  m.doc() = "datacredit's compiled core (use datacredit.kernels, not this module directly)";
  m.attr("blas") = datacredit::blas_name();
#ifdef DATACREDIT_HAVE_CUDA
  m.attr("cuda") = true;
#else
  m.attr("cuda") = false;
#endif
  datacredit::bindings::bind_gram(m);
  datacredit::bindings::bind_crammer_singer(m);
  datacredit::bindings::bind_treeshap(m);
  datacredit::bindings::bind_pq(m);
  datacredit::bindings::bind_pq_fastscan(m);
}
