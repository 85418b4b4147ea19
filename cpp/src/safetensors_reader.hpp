// Reader of the library's safetensors container (python/datacredit/safetensors_io.py writes
// it): validates a whole file held in memory (a memory map or a caller's buffer) and gives
// typed views of its tensors.  Internal to the C API (no exceptions escape it: every
// function reports errors through a message string).
#pragma once

#include <cstddef>
#include <cstdint>
#include <map>
#include <string>
#include <vector>

namespace datacredit {
namespace st {

enum class DType { kF64, kF32, kF16, kI64, kI32, kI16, kI8, kU64, kU32, kU16, kU8, kBool };

size_t dtype_size(DType t);
const char* dtype_name(DType t);

struct Tensor {
  DType dtype = DType::kU8;
  std::vector<int64_t> shape;
  const uint8_t* data = nullptr;  // aligned to the item size (checked), may be null when empty
  uint64_t nbytes = 0;
  int64_t numel() const;
};

struct File {
  std::map<std::string, Tensor> tensors;
  std::map<std::string, std::string> metadata;
};

// Parses and validates `size` bytes at `data` as a safetensors file: header length within
// the file (and <= 100 MiB), a JSON object header, known dtypes, non-negative shapes whose
// byte counts match data_offsets (no overflow), offsets in bounds, tensors covering the
// data exactly without gaps or overlap, metadata mapping strings to strings, every tensor
// aligned to its item size.  Returns false and sets *error on any problem; never reads
// outside [data, data + size).
bool parse(const uint8_t* data, size_t size, File* out, std::string* error);

// A read-only memory map of a whole file (unmapped by the destructor).
class Mapping {
 public:
  Mapping() = default;
  Mapping(const Mapping&) = delete;
  Mapping& operator=(const Mapping&) = delete;
  ~Mapping();
  // Maps `path`; false and *error when it cannot be opened, is empty or cannot be mapped.
  bool open(const char* path, std::string* error);
  const uint8_t* data() const { return data_; }
  size_t size() const { return size_; }

 private:
  const uint8_t* data_ = nullptr;
  size_t size_ = 0;
};

}  // namespace st
}  // namespace datacredit
