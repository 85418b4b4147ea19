// The C API's reading of the library's safetensors artifacts, shared by every handle that
// loads one (c_api_dualda.cpp, c_api_pq_index.cpp).
#include <string>
#include <vector>

#include "c_api_internal.hpp"

namespace datacredit {
namespace capi {

void open_artifact(const char* path, const void* buffer, size_t size, const char* where,
                   Artifact* art) {
  std::string err;
  const uint8_t* bytes = static_cast<const uint8_t*>(buffer);
  if (path != nullptr) {
    art->mapping.reset(new datacredit::st::Mapping());
    if (!art->mapping->open(path, &err)) {
      // A file shorter than a header is a format problem, not an I/O one.
      const int code = err.rfind("shorter", 0) == 0 ? DC_ERR_FORMAT : DC_ERR_IO;
      raise(code, where, std::string(path) + ": " + err);
    }
    bytes = art->mapping->data();
    size = art->mapping->size();
  }
  const std::string name = path != nullptr ? path : "buffer";
  if (!datacredit::st::parse(bytes, size, &art->file, &err))
    raise(DC_ERR_FORMAT, where, name + ": not a valid safetensors file: " + err);
}

std::string meta_str(const Artifact& a, const char* key, const char* where) {
  auto it = a.file.metadata.find(key);
  if (it == a.file.metadata.end())
    raise(DC_ERR_FORMAT, where, std::string("metadata '") + key + "' is missing");
  return it->second;
}

int64_t meta_int(const Artifact& a, const char* key, const char* where, bool allow_negative) {
  const std::string s = meta_str(a, key, where);
  size_t i = (allow_negative && !s.empty() && s[0] == '-') ? 1 : 0;
  bool ok = s.size() > i && s.size() - i <= 18;
  for (size_t j = i; ok && j < s.size(); ++j) ok = s[j] >= '0' && s[j] <= '9';
  if (!ok)
    raise(DC_ERR_FORMAT, where,
          std::string("metadata '") + key + "' is not an integer: '" + s + "'");
  return std::stoll(s);
}

int check_format(const Artifact& a, const char* format, const char* where, int max_version) {
  const std::string f = meta_str(a, "format", where);
  if (f != format)
    raise(DC_ERR_FORMAT, where, "format is '" + f + "', expected '" + std::string(format) + "'");
  const std::string v = meta_str(a, "format_version", where);
  for (int version = 1; version <= max_version; ++version)
    if (v == std::to_string(version)) return version;
  raise(DC_ERR_FORMAT, where,
        "format version '" + v + "' is not supported (this version reads '1'" +
            (max_version > 1 ? " to '" + std::to_string(max_version) + "'" : std::string()) + ")");
}

const Tensor& tensor(const Artifact& a, const char* name, DType dtype,
                     const std::vector<int64_t>& shape, const char* where) {
  auto it = a.file.tensors.find(name);
  if (it == a.file.tensors.end())
    raise(DC_ERR_FORMAT, where, std::string("tensor '") + name + "' is missing");
  const Tensor& t = it->second;
  if (t.dtype != dtype)
    raise(DC_ERR_FORMAT, where,
          std::string("tensor '") + name + "' is " + datacredit::st::dtype_name(t.dtype) +
              ", expected " + datacredit::st::dtype_name(dtype));
  if (t.shape != shape) {
    std::string want, got;
    for (int64_t s : shape) want += std::to_string(s) + ",";
    for (int64_t s : t.shape) got += std::to_string(s) + ",";
    raise(DC_ERR_FORMAT, where,
          std::string("tensor '") + name + "' has shape (" + got + "), expected (" + want + ")");
  }
  return t;
}

}  // namespace capi
}  // namespace datacredit
