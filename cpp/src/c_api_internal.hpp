// Private to the C API's translation units (c_api*.cpp): the error firewall every entry point
// runs in, the shared thread setting, and the helpers that read the library's safetensors
// artifacts.  Nothing here is exported (the core is built with hidden visibility and the
// shared library exports only dc_*).
#pragma once

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <new>
#include <stdexcept>
#include <string>
#include <vector>

#include "datacredit/c_api.h"
#include "datacredit/common.hpp"
#include "safetensors_reader.hpp"

namespace datacredit {
namespace capi {

// The message of the last failed call on this thread (dc_last_error).
std::string& last_error();
// The default thread count of dc_set_num_threads (0: the core's default).
int default_threads();

// Carries an error code through the C++ code of one entry point.
struct ApiError : std::runtime_error {
  int code;
  ApiError(int c, const std::string& what) : std::runtime_error(what), code(c) {}
};

[[noreturn]] inline void raise(int code, const std::string& where, const std::string& what) {
  throw ApiError(code, where + ": " + what);
}

inline void require(bool ok, const char* where, const std::string& what) {
  if (!ok) raise(DC_ERR_INVALID_ARGUMENT, where, what);
}

// Runs `body`, turning every exception into an error code and the thread's last message, so
// that no exception and no C++ type crosses the C boundary.
template <class F>
int guarded(F&& body) {
  try {
    body();
    return DC_OK;
  } catch (const ApiError& e) {
    last_error() = e.what();
    return e.code;
  } catch (const std::invalid_argument& e) {
    last_error() = e.what();
    return DC_ERR_INVALID_ARGUMENT;
  } catch (const std::bad_alloc&) {
    last_error() = "out of memory";
    return DC_ERR_OUT_OF_MEMORY;
  } catch (const std::exception& e) {
    last_error() = std::string("internal error: ") + e.what();
    return DC_ERR_INTERNAL;
  } catch (...) {
    last_error() = "internal error: unknown exception";
    return DC_ERR_INTERNAL;
  }
}

inline int threads_of(int n_threads) { return n_threads > 0 ? n_threads : default_threads(); }

inline bool finite(const float* x, int64_t n) { return n == 0 || datacredit::all_finite(x, n); }
inline bool finite(const double* x, int64_t n) {
  for (int64_t i = 0; i < n; ++i)
    if (!std::isfinite(x[i])) return false;
  return true;
}

// ------------------------------------------------------------------ artifacts (c_api_artifact.cpp)
using datacredit::st::DType;
using datacredit::st::File;
using datacredit::st::Tensor;

// A parsed file and what keeps its bytes alive (a memory map, or nothing for a caller's buffer).
struct Artifact {
  std::unique_ptr<datacredit::st::Mapping> mapping;
  File file;
};

// Maps `path` (or takes the caller's `buffer` of `size` bytes when path is NULL) and parses it;
// raises DC_ERR_IO / DC_ERR_FORMAT.
void open_artifact(const char* path, const void* buffer, size_t size, const char* where,
                   Artifact* art);

// Metadata `key` (raises DC_ERR_FORMAT when missing).
std::string meta_str(const Artifact& a, const char* key, const char* where);

// Metadata `key` as a decimal integer of at most 18 digits (raises DC_ERR_FORMAT otherwise).
int64_t meta_int(const Artifact& a, const char* key, const char* where,
                 bool allow_negative = false);

// Checks the metadata 'format' is `format` and 'format_version' one of 1 .. max_version;
// returns the version (raises DC_ERR_FORMAT otherwise).
int check_format(const Artifact& a, const char* format, const char* where, int max_version = 1);

// The tensor `name` with dtype `dtype` and exactly `shape`; raises DC_ERR_FORMAT otherwise.
const Tensor& tensor(const Artifact& a, const char* name, DType dtype,
                     const std::vector<int64_t>& shape, const char* where);

template <class T>
const T* as(const Tensor& t) {
  return reinterpret_cast<const T*>(t.data);
}

}  // namespace capi
}  // namespace datacredit
