#include <new>
#include <stdexcept>

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
  // An allocation the problem needs but the process cannot get (std::bad_alloc, or a
  // std::length_error for a size beyond what a vector can hold) is Python's MemoryError.
  pybind11::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::bad_alloc&) {
      PyErr_SetString(PyExc_MemoryError,
                      "datacredit: not enough memory for this call (std::bad_alloc); use "
                      "smaller inputs, a smaller k or fewer queries per call");
    } catch (const std::length_error& e) {
      PyErr_SetString(PyExc_MemoryError,
                      (std::string("datacredit: the call needs more memory than can be "
                                   "allocated (") +
                       e.what() + ")")
                          .c_str());
    }
  });
  datacredit::bindings::bind_gram(m);
  datacredit::bindings::bind_crammer_singer(m);
  datacredit::bindings::bind_treeshap(m);
  datacredit::bindings::bind_pq(m);
  datacredit::bindings::bind_pq_fastscan(m);
  datacredit::bindings::bind_ivf(m);
}
