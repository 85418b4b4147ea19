#include "safetensors_reader.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <memory>
#include <tuple>
#include <utility>

namespace datacredit {
namespace st {

namespace {

constexpr uint64_t kMaxHeader = 100ull * 1024 * 1024;  // as the reference implementation
constexpr int kMaxDepth = 32;

// A small JSON value: enough for safetensors headers (objects, arrays, strings, numbers).
struct Json {
  enum Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = kNull;
  bool is_uint = false;  // a number written as a plain non-negative integer that fits uint64
  uint64_t uint_value = 0;
  std::string str;
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> members;
};

class Parser {
 public:
  Parser(const char* p, const char* end) : p_(p), end_(end) {}

  bool parse_document(Json* out, std::string* error) {
    if (!value(out, 0)) {
      *error = "header is not JSON: " + err_;
      return false;
    }
    skip_ws();
    if (p_ != end_) {
      *error = "header is not JSON: trailing characters";
      return false;
    }
    return true;
  }

 private:
  const char* p_;
  const char* end_;
  std::string err_;

  bool fail(const char* what) {
    err_ = what;
    return false;
  }
  void skip_ws() {
    while (p_ < end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  bool literal(const char* word) {
    const size_t len = std::strlen(word);
    if (static_cast<size_t>(end_ - p_) < len || std::memcmp(p_, word, len) != 0)
      return fail("invalid literal");
    p_ += len;
    return true;
  }

  static void put_utf8(uint32_t cp, std::string* s) {
    if (cp < 0x80) {
      s->push_back(static_cast<char>(cp));
    } else if (cp < 0x800) {
      s->push_back(static_cast<char>(0xC0 | (cp >> 6)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else if (cp < 0x10000) {
      s->push_back(static_cast<char>(0xE0 | (cp >> 12)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    } else {
      s->push_back(static_cast<char>(0xF0 | (cp >> 18)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 12) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | ((cp >> 6) & 0x3F)));
      s->push_back(static_cast<char>(0x80 | (cp & 0x3F)));
    }
  }

  bool hex4(uint32_t* out) {
    if (end_ - p_ < 4) return fail("truncated \\u escape");
    uint32_t v = 0;
    for (int i = 0; i < 4; ++i) {
      const char c = *p_++;
      v <<= 4;
      if (c >= '0' && c <= '9')
        v |= static_cast<uint32_t>(c - '0');
      else if (c >= 'a' && c <= 'f')
        v |= static_cast<uint32_t>(c - 'a' + 10);
      else if (c >= 'A' && c <= 'F')
        v |= static_cast<uint32_t>(c - 'A' + 10);
      else
        return fail("invalid \\u escape");
    }
    *out = v;
    return true;
  }

  bool string(std::string* out) {
    if (p_ >= end_ || *p_ != '"') return fail("expected a string");
    ++p_;
    while (true) {
      if (p_ >= end_) return fail("unterminated string");
      const unsigned char c = static_cast<unsigned char>(*p_++);
      if (c == '"') return true;
      if (c < 0x20) return fail("control character in a string");
      if (c != '\\') {
        out->push_back(static_cast<char>(c));
        continue;
      }
      if (p_ >= end_) return fail("unterminated escape");
      const char e = *p_++;
      switch (e) {
        case '"':
          out->push_back('"');
          break;
        case '\\':
          out->push_back('\\');
          break;
        case '/':
          out->push_back('/');
          break;
        case 'b':
          out->push_back('\b');
          break;
        case 'f':
          out->push_back('\f');
          break;
        case 'n':
          out->push_back('\n');
          break;
        case 'r':
          out->push_back('\r');
          break;
        case 't':
          out->push_back('\t');
          break;
        case 'u': {
          uint32_t cp = 0;
          if (!hex4(&cp)) return false;
          if (cp >= 0xD800 && cp < 0xDC00) {  // a surrogate pair
            uint32_t lo = 0;
            if (end_ - p_ < 2 || p_[0] != '\\' || p_[1] != 'u') return fail("lone surrogate");
            p_ += 2;
            if (!hex4(&lo)) return false;
            if (lo < 0xDC00 || lo >= 0xE000) return fail("invalid surrogate pair");
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
          } else if (cp >= 0xDC00 && cp < 0xE000) {
            return fail("lone surrogate");
          }
          put_utf8(cp, out);
          break;
        }
        default:
          return fail("invalid escape");
      }
    }
  }

  bool number(Json* out) {
    out->kind = Json::kNumber;
    const char* start = p_;
    bool negative = false, plain = true;
    if (p_ < end_ && *p_ == '-') {
      negative = true;
      ++p_;
    }
    if (p_ >= end_ || *p_ < '0' || *p_ > '9') return fail("invalid number");
    if (*p_ == '0' && p_ + 1 < end_ && p_[1] >= '0' && p_[1] <= '9')
      return fail("leading zero in a number");
    uint64_t v = 0;
    bool overflow = false;
    while (p_ < end_ && *p_ >= '0' && *p_ <= '9') {
      const uint64_t digit = static_cast<uint64_t>(*p_ - '0');
      if (v > (UINT64_MAX - digit) / 10) overflow = true;
      v = v * 10 + digit;
      ++p_;
    }
    if (p_ < end_ && *p_ == '.') {
      plain = false;
      ++p_;
      if (p_ >= end_ || *p_ < '0' || *p_ > '9') return fail("invalid number");
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    if (p_ < end_ && (*p_ == 'e' || *p_ == 'E')) {
      plain = false;
      ++p_;
      if (p_ < end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      if (p_ >= end_ || *p_ < '0' || *p_ > '9') return fail("invalid number");
      while (p_ < end_ && *p_ >= '0' && *p_ <= '9') ++p_;
    }
    (void)start;
    out->is_uint = plain && !negative && !overflow;
    out->uint_value = out->is_uint ? v : 0;
    return true;
  }

  bool value(Json* out, int depth) {
    if (depth > kMaxDepth) return fail("nested too deeply");
    skip_ws();
    if (p_ >= end_) return fail("unexpected end");
    switch (*p_) {
      case '{': {
        ++p_;
        out->kind = Json::kObject;
        skip_ws();
        if (p_ < end_ && *p_ == '}') {
          ++p_;
          return true;
        }
        while (true) {
          skip_ws();
          std::string key;
          if (!string(&key)) return false;
          skip_ws();
          if (p_ >= end_ || *p_ != ':') return fail("expected ':'");
          ++p_;
          out->members.emplace_back(std::move(key), Json());
          if (!value(&out->members.back().second, depth + 1)) return false;
          skip_ws();
          if (p_ < end_ && *p_ == ',') {
            ++p_;
            continue;
          }
          if (p_ < end_ && *p_ == '}') {
            ++p_;
            return true;
          }
          return fail("expected ',' or '}'");
        }
      }
      case '[': {
        ++p_;
        out->kind = Json::kArray;
        skip_ws();
        if (p_ < end_ && *p_ == ']') {
          ++p_;
          return true;
        }
        while (true) {
          out->items.emplace_back();
          if (!value(&out->items.back(), depth + 1)) return false;
          skip_ws();
          if (p_ < end_ && *p_ == ',') {
            ++p_;
            continue;
          }
          if (p_ < end_ && *p_ == ']') {
            ++p_;
            return true;
          }
          return fail("expected ',' or ']'");
        }
      }
      case '"':
        out->kind = Json::kString;
        return string(&out->str);
      case 't':
        out->kind = Json::kBool;
        return literal("true");
      case 'f':
        out->kind = Json::kBool;
        return literal("false");
      case 'n':
        out->kind = Json::kNull;
        return literal("null");
      default:
        return number(out);
    }
  }
};

bool parse_dtype(const std::string& s, DType* t) {
  static const std::pair<const char*, DType> kNames[] = {
      {"F64", DType::kF64}, {"F32", DType::kF32}, {"F16", DType::kF16}, {"I64", DType::kI64},
      {"I32", DType::kI32}, {"I16", DType::kI16}, {"I8", DType::kI8},   {"U64", DType::kU64},
      {"U32", DType::kU32}, {"U16", DType::kU16}, {"U8", DType::kU8},   {"BOOL", DType::kBool}};
  for (const auto& entry : kNames)
    if (s == entry.first) {
      *t = entry.second;
      return true;
    }
  return false;
}

}  // namespace

size_t dtype_size(DType t) {
  switch (t) {
    case DType::kF64:
    case DType::kI64:
    case DType::kU64:
      return 8;
    case DType::kF32:
    case DType::kI32:
    case DType::kU32:
      return 4;
    case DType::kF16:
    case DType::kI16:
    case DType::kU16:
      return 2;
    default:
      return 1;
  }
}

const char* dtype_name(DType t) {
  switch (t) {
    case DType::kF64:
      return "F64";
    case DType::kF32:
      return "F32";
    case DType::kF16:
      return "F16";
    case DType::kI64:
      return "I64";
    case DType::kI32:
      return "I32";
    case DType::kI16:
      return "I16";
    case DType::kI8:
      return "I8";
    case DType::kU64:
      return "U64";
    case DType::kU32:
      return "U32";
    case DType::kU16:
      return "U16";
    case DType::kU8:
      return "U8";
    default:
      return "BOOL";
  }
}

int64_t Tensor::numel() const {
  int64_t count = 1;
  for (int64_t s : shape) count *= s;  // bounded at parse time (count * item size <= file size)
  return count;
}

bool parse(const uint8_t* data, size_t size, File* out, std::string* error) {
  out->tensors.clear();
  out->metadata.clear();
  if (data == nullptr || size < 8) {
    *error = "shorter than the 8-byte header length (" + std::to_string(size) + " bytes)";
    return false;
  }
  uint64_t hlen = 0;
  for (int i = 7; i >= 0; --i) hlen = (hlen << 8) | data[i];  // little-endian
  if (hlen > kMaxHeader || hlen > size - 8) {
    *error = "header length " + std::to_string(hlen) + " exceeds the file (" +
             std::to_string(size) + " bytes)";
    return false;
  }
  const char* hbegin = reinterpret_cast<const char*>(data + 8);
  Json root;
  Parser parser(hbegin, hbegin + hlen);
  if (!parser.parse_document(&root, error)) return false;
  if (root.kind != Json::kObject) {
    *error = "header is not a JSON object";
    return false;
  }
  const uint8_t* base = data + 8 + hlen;
  const uint64_t data_len = size - 8 - hlen;
  std::vector<std::tuple<uint64_t, uint64_t, std::string>> spans;
  for (auto& member : root.members) {
    const std::string& name = member.first;
    const Json& spec = member.second;
    if (out->tensors.count(name) || (name == "__metadata__" && !out->metadata.empty())) {
      *error = "entry '" + name + "' appears twice";
      return false;
    }
    if (name == "__metadata__") {
      if (spec.kind != Json::kObject) {
        *error = "__metadata__ must map str to str";
        return false;
      }
      for (const auto& kv : spec.members) {
        if (kv.second.kind != Json::kString || out->metadata.count(kv.first)) {
          *error = "__metadata__ must map str to str (key '" + kv.first + "')";
          return false;
        }
        out->metadata[kv.first] = kv.second.str;
      }
      continue;
    }
    const Json *dtype = nullptr, *shape = nullptr, *offsets = nullptr;
    bool malformed = spec.kind != Json::kObject || spec.members.size() != 3;
    if (!malformed)
      for (const auto& kv : spec.members) {
        const Json** slot = kv.first == "dtype"          ? &dtype
                            : kv.first == "shape"        ? &shape
                            : kv.first == "data_offsets" ? &offsets
                                                         : nullptr;
        if (slot == nullptr || *slot != nullptr) {
          malformed = true;
          break;
        }
        *slot = &kv.second;
      }
    if (malformed || dtype == nullptr || shape == nullptr || offsets == nullptr) {
      *error = "entry '" + name + "' is malformed";
      return false;
    }
    Tensor t;
    if (dtype->kind != Json::kString || !parse_dtype(dtype->str, &t.dtype)) {
      *error = "entry '" + name + "' has an unsupported dtype";
      return false;
    }
    if (shape->kind != Json::kArray) {
      *error = "entry '" + name + "' has an invalid shape";
      return false;
    }
    // Element count, with overflow guarded by the file size: count * item <= data_len.
    const uint64_t item = dtype_size(t.dtype);
    uint64_t count = 1;
    bool zero = false, too_big = false;
    for (const Json& s : shape->items) {
      if (s.kind != Json::kNumber || !s.is_uint ||
          s.uint_value > static_cast<uint64_t>(INT64_MAX)) {
        *error = "entry '" + name + "' has an invalid shape";
        return false;
      }
      t.shape.push_back(static_cast<int64_t>(s.uint_value));
      if (s.uint_value == 0) zero = true;
      if (!too_big && s.uint_value != 0) {
        if (count > data_len / s.uint_value)
          too_big = true;
        else
          count *= s.uint_value;
      }
    }
    if (zero) count = 0;
    if (too_big && !zero) {
      *error = "entry '" + name + "' has a shape larger than the file";
      return false;
    }
    if (offsets->kind != Json::kArray || offsets->items.size() != 2 ||
        offsets->items[0].kind != Json::kNumber || !offsets->items[0].is_uint ||
        offsets->items[1].kind != Json::kNumber || !offsets->items[1].is_uint) {
      *error = "entry '" + name + "' has invalid data_offsets";
      return false;
    }
    const uint64_t begin = offsets->items[0].uint_value, end = offsets->items[1].uint_value;
    if (!(begin <= end && end <= data_len)) {
      *error = "entry '" + name + "' has offsets outside the data";
      return false;
    }
    if (count > data_len / item || end - begin != count * item) {
      *error = "entry '" + name + "' holds " + std::to_string(end - begin) +
               " bytes, its shape needs " + std::to_string(count) + " x " + std::to_string(item);
      return false;
    }
    t.nbytes = end - begin;
    t.data = t.nbytes ? base + begin : nullptr;
    if (t.data != nullptr && reinterpret_cast<uintptr_t>(t.data) % item != 0) {
      *error = "entry '" + name + "' is not aligned to its item size (" + std::to_string(item) +
               " bytes); rewrite the file with datacredit";
      return false;
    }
    spans.emplace_back(begin, end, name);
    out->tensors.emplace(name, std::move(t));
  }
  std::sort(spans.begin(), spans.end());
  uint64_t pos = 0;
  for (const auto& span : spans) {
    if (std::get<0>(span) != pos) {
      *error = "entry '" + std::get<2>(span) + "' overlaps or leaves a gap at byte " +
               std::to_string(pos);
      return false;
    }
    pos = std::get<1>(span);
  }
  if (pos != data_len) {
    *error = std::to_string(data_len - pos) + " trailing bytes after the last tensor";
    return false;
  }
  return true;
}

Mapping::~Mapping() {
  if (data_ != nullptr) munmap(const_cast<uint8_t*>(data_), size_);
}

bool Mapping::open(const char* path, std::string* error) {
  const int fd = ::open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    *error = std::string("cannot open: ") + std::strerror(errno);
    return false;
  }
  struct stat sb;
  if (fstat(fd, &sb) != 0 || !S_ISREG(sb.st_mode)) {
    ::close(fd);
    *error = "not a regular file";
    return false;
  }
  if (sb.st_size < 8) {
    ::close(fd);
    *error = "shorter than the 8-byte header length (" + std::to_string(sb.st_size) + " bytes)";
    return false;
  }
  void* p = mmap(nullptr, static_cast<size_t>(sb.st_size), PROT_READ, MAP_PRIVATE, fd, 0);
  ::close(fd);
  if (p == MAP_FAILED) {
    *error = std::string("cannot map: ") + std::strerror(errno);
    return false;
  }
  data_ = static_cast<const uint8_t*>(p);
  size_ = static_cast<size_t>(sb.st_size);
  return true;
}

}  // namespace st
}  // namespace datacredit
