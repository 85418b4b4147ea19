// The pybind11 layer: the only C++ that sees Python.  One bind_*.cpp per kernel;
// each registers its functions on the module from module.cpp.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

namespace datacredit::bindings {

namespace py = pybind11;

// Row-major contiguous float32 / int64 arrays: the Python layer converts user input
// (numpy, torch, cupy) to these before calling in, copying only when it must.
using FloatArray = py::array_t<float, py::array::c_style>;
using Int64Array = py::array_t<int64_t, py::array::c_style>;

void bind_gram(py::module_& m);
void bind_crammer_singer(py::module_& m);
void bind_treeshap(py::module_& m);
void bind_pq(py::module_& m);
void bind_pq_fastscan(py::module_& m);

}  // namespace datacredit::bindings
