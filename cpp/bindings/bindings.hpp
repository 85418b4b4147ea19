// The pybind11 layer: the only C++ that sees Python.  One bind_*.cpp per kernel;
// each registers its functions on the module from module.cpp.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <string>

#include "datacredit/common.hpp"

namespace datacredit::bindings {

namespace py = pybind11;

// Row-major contiguous float32 / int64 arrays: the Python layer converts user input
// (numpy, torch, cupy) to these before calling in, copying only when it must.
using FloatArray = py::array_t<float, py::array::c_style>;
using Int64Array = py::array_t<int64_t, py::array::c_style>;

// The bindings are a public API of their own (datacredit._core): they check every shape
// they read and every integer they narrow, with errors naming the function and argument.
inline int threads_arg(int64_t n_threads, const char* where) {
  check(n_threads >= 0 && n_threads <= kMaxThreads, where,
        "n_threads = " + std::to_string(n_threads) + " must be in [0, " +
            std::to_string(kMaxThreads) + "] (0: all cores)");
  return static_cast<int>(n_threads);
}

inline int int_arg(int64_t value, int64_t lo, int64_t hi, const char* where, const char* name) {
  check(value >= lo && value <= hi, where,
        std::string(name) + " = " + std::to_string(value) + " must be in [" + std::to_string(lo) +
            ", " + std::to_string(hi) + "]");
  return static_cast<int>(value);
}

inline uint64_t seed_arg(int64_t seed, const char* where) {
  check(seed >= 0, where, "seed = " + std::to_string(seed) + " must be >= 0");
  return static_cast<uint64_t>(seed);
}

// a.ndim() == ndim (and, for each non-negative entry of `shape`, a.shape(i) == it).
inline void check_array(const py::array& a, const char* where, const char* name, int ndim,
                        std::initializer_list<int64_t> shape = {}) {
  check(a.ndim() == ndim, where,
        std::string(name) + " must have " + std::to_string(ndim) + " dimensions, got " +
            std::to_string(a.ndim()));
  int i = 0;
  for (const int64_t want : shape) {
    if (want >= 0)
      check(a.shape(i) == want, where,
            std::string(name) + " has " + std::to_string(a.shape(i)) + " entries along axis " +
                std::to_string(i) + ", expected " + std::to_string(want));
    ++i;
  }
}

void bind_gram(py::module_& m);
void bind_crammer_singer(py::module_& m);
void bind_treeshap(py::module_& m);
void bind_pq(py::module_& m);
void bind_pq_fastscan(py::module_& m);
void bind_ivf(py::module_& m);

}  // namespace datacredit::bindings
