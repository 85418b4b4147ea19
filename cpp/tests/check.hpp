// Minimal test helpers for the C++ tests run by ctest (no framework dependency).
#pragma once

#include <cstdio>
#include <cstdlib>
#include <functional>
#include <stdexcept>
#include <string>

namespace dctest {

inline int& failures() {
  static int count = 0;
  return count;
}

#define DC_EXPECT(cond)                                                        \
  do {                                                                         \
    if (!(cond)) {                                                             \
      std::fprintf(stderr, "%s:%d: expected %s\n", __FILE__, __LINE__, #cond); \
      ++dctest::failures();                                                    \
    }                                                                          \
  } while (0)

// Expects f() to throw std::invalid_argument whose message contains `needle`.
inline bool throws_invalid(const std::function<void()>& f, const std::string& needle) {
  try {
    f();
  } catch (const std::invalid_argument& e) {
    return std::string(e.what()).find(needle) != std::string::npos;
  }
  return false;
}

inline int finish(const char* name) {
  if (failures() == 0) std::printf("%s: all checks passed\n", name);
  return failures() == 0 ? 0 : 1;
}

}  // namespace dctest
