// Small shared helpers of the C++ core: argument checks and thread counts.
#pragma once

#include <atomic>
#include <cstdint>
#include <exception>
#include <mutex>
#include <stdexcept>
#include <string>
#include <vector>

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

// Mean of the rows of the row-major `rows` x `dim` matrix x, accumulated in double and
// rounded to float.  Gram l2 and PQ k-means centre on it, so that a large common offset
// of the data does not cancel |q|^2 + |k|^2 - 2 q.k away.
std::vector<float> row_mean(const float* x, int64_t rows, int64_t dim);

// Largest thread count any entry point accepts: beyond it is a mistake (and asking the
// OpenMP runtime for that many threads can end the process when creation fails).
constexpr int64_t kMaxThreads = 1024;

// Resolves a user thread count: <= 0 means "all hardware threads OpenMP offers"; more
// than the processors available is clamped to them (extra threads only oversubscribe).
// Throws std::invalid_argument above kMaxThreads.
int resolve_threads(int64_t n_threads);

// Exceptions thrown inside an OpenMP region must not leave it (std::terminate): each
// thread runs its work through run(), which records the first exception and makes later
// work a no-op; rethrow() after the region raises it on the calling thread (so a
// std::bad_alloc becomes Python's MemoryError).
class ParallelErrors {
 public:
  template <class F>
  void run(F&& f) noexcept {
    if (failed_.load(std::memory_order_relaxed)) return;
    try {
      f();
    } catch (...) {
      std::lock_guard<std::mutex> lock(mutex_);
      if (!first_) first_ = std::current_exception();
      failed_.store(true);
    }
  }
  bool failed() const { return failed_.load(std::memory_order_relaxed); }
  void rethrow() {
    if (first_) std::rethrow_exception(first_);
  }

 private:
  std::atomic<bool> failed_{false};
  std::mutex mutex_;
  std::exception_ptr first_;
};

}  // namespace datacredit
