// Small shared helpers of the C++ core: argument checks and thread counts.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace datacredit {

// Every argument error of the core is a std::invalid_argument whose message names
// the function and the argument; the Python bindings turn it into ValueError.
[[noreturn]] inline void fail(const std::string& where, const std::string& what) {
  throw std::invalid_argument(where + ": " + what);
}

inline void check(bool ok, const char* where, const std::string& what) {
  if (!ok) fail(where, what);
}

// True when all `count` values are finite (no NaN, no +-inf).
bool all_finite(const float* values, int64_t count);

// Resolves a user thread count: <= 0 means "all hardware threads OpenMP offers".
int resolve_threads(int n_threads);

}  // namespace datacredit
