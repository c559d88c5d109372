// SPDX-License-Identifier: MIT
// Routing trace files: save_trace / load_trace of a RoutingTrace as a
// safetensors file, the format the local-routing-consistency tools read
// (METHODS.md §5): one tensor `topk_ids`, int32 [T, L, k], and the string
// `"num_experts": "E"` in `__metadata__`.
//
// NOTE: this header carries its own tiny safetensors writer and reader for
// exactly this format (detail::trace_file), because the library's general
// reader (io/safetensors.hpp) needs nlohmann/json and <moekit/moekit.hpp>
// does not. It is fuzzed on its own (tests/fuzz, fuzz_trace_file). The reader accepts any valid
// safetensors file that holds such a tensor (other tensors and metadata keys
// are checked for consistency and ignored). A malformed file throws
// moekit::Error naming the file and the problem; it never reads outside the
// bytes it loaded.
//
// Layout: u64 little-endian N, N bytes of JSON header (padded with spaces to
// a multiple of 8), then the data section (int32 little-endian, row-major).
#pragma once

#include <cstdint>
#include <cstring>
#include <fstream>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "routing_trace.hpp"

MOEKIT_NAMESPACE_BEGIN

namespace detail {
namespace trace_file {

/// Largest header accepted (the reference implementation's limit, 100 MB).
constexpr std::uint64_t kMaxHeaderBytes = 100ull * 1024ull * 1024ull;
/// Deepest nesting of JSON arrays and objects accepted.
constexpr int kMaxJsonDepth = 64;

/// A parsed JSON value (only what a safetensors header needs).
struct JsonValue {
  enum class Kind { null, boolean, number, string, array, object };
  Kind kind = Kind::null;
  std::string text;               // string contents, or the number's literal text
  std::vector<std::string> keys;  // object keys, in file order
  std::vector<JsonValue> items;   // array items, or object values (parallel to keys)

  const JsonValue* find(const std::string& key) const {
    for (std::size_t i = 0; i < keys.size(); ++i)
      if (keys[i] == key) return &items[i];
    return nullptr;
  }
};

/// A strict recursive-descent JSON parser over [begin, end).
class JsonParser {
 public:
  JsonParser(const char* begin, const char* end, const std::string& where)
      : begin_(begin), p_(begin), end_(end), where_(where) {}

  JsonValue parse_document() {
    JsonValue v = parse_value(0);
    skip_ws();
    if (p_ != end_) error("unexpected trailing characters");
    return v;
  }

 private:
  [[noreturn]] void error(const char* what) const {
    fail(where_, ": bad header JSON at byte ", static_cast<long long>(p_ - begin_), ": ", what);
  }
  void skip_ws() {
    while (p_ != end_ && (*p_ == ' ' || *p_ == '\t' || *p_ == '\n' || *p_ == '\r')) ++p_;
  }
  bool literal(const char* word) {
    const std::size_t n = std::strlen(word);
    if (static_cast<std::size_t>(end_ - p_) < n || std::memcmp(p_, word, n) != 0) return false;
    p_ += n;
    return true;
  }

  JsonValue parse_value(int depth) {
    if (depth > kMaxJsonDepth) error("nested too deeply");
    skip_ws();
    if (p_ == end_) error("unexpected end of header");
    JsonValue v;
    const char c = *p_;
    if (c == '{') {
      v.kind = JsonValue::Kind::object;
      ++p_;
      skip_ws();
      if (p_ != end_ && *p_ == '}') {
        ++p_;
        return v;
      }
      for (;;) {
        skip_ws();
        if (p_ == end_ || *p_ != '"') error("expected a string key");
        std::string key = parse_string();
        for (const std::string& k : v.keys)
          if (k == key) error("duplicate key");
        skip_ws();
        if (p_ == end_ || *p_ != ':') error("expected ':'");
        ++p_;
        v.keys.push_back(std::move(key));
        v.items.push_back(parse_value(depth + 1));
        skip_ws();
        if (p_ != end_ && *p_ == ',') {
          ++p_;
          continue;
        }
        if (p_ != end_ && *p_ == '}') {
          ++p_;
          return v;
        }
        error("expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.kind = JsonValue::Kind::array;
      ++p_;
      skip_ws();
      if (p_ != end_ && *p_ == ']') {
        ++p_;
        return v;
      }
      for (;;) {
        v.items.push_back(parse_value(depth + 1));
        skip_ws();
        if (p_ != end_ && *p_ == ',') {
          ++p_;
          continue;
        }
        if (p_ != end_ && *p_ == ']') {
          ++p_;
          return v;
        }
        error("expected ',' or ']'");
      }
    }
    if (c == '"') {
      v.kind = JsonValue::Kind::string;
      v.text = parse_string();
      return v;
    }
    if (c == '-' || (c >= '0' && c <= '9')) {
      v.kind = JsonValue::Kind::number;
      v.text = parse_number();
      return v;
    }
    if (literal("true") || literal("false")) {
      v.kind = JsonValue::Kind::boolean;
      return v;
    }
    if (literal("null")) return v;
    error("unexpected character");
  }

  std::string parse_number() {
    const char* start = p_;
    if (*p_ == '-') ++p_;
    const auto digits = [&] {
      const char* d = p_;
      while (p_ != end_ && *p_ >= '0' && *p_ <= '9') ++p_;
      if (p_ == d) error("expected a digit");
    };
    digits();
    if (p_ != end_ && *p_ == '.') {
      ++p_;
      digits();
    }
    if (p_ != end_ && (*p_ == 'e' || *p_ == 'E')) {
      ++p_;
      if (p_ != end_ && (*p_ == '+' || *p_ == '-')) ++p_;
      digits();
    }
    return std::string(start, p_);
  }

  static void put_utf8(std::string& s, unsigned cp) {
    if (cp < 0x80) {
      s += static_cast<char>(cp);
    } else if (cp < 0x800) {
      s += static_cast<char>(0xC0 | (cp >> 6));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    } else {
      s += static_cast<char>(0xE0 | (cp >> 12));
      s += static_cast<char>(0x80 | ((cp >> 6) & 0x3F));
      s += static_cast<char>(0x80 | (cp & 0x3F));
    }
  }

  std::string parse_string() {
    ++p_;  // opening quote
    std::string s;
    for (;;) {
      if (p_ == end_) error("unterminated string");
      const char c = *p_++;
      if (c == '"') return s;
      if (static_cast<unsigned char>(c) < 0x20) error("control character in a string");
      if (c != '\\') {
        s += c;
        continue;
      }
      if (p_ == end_) error("unterminated escape");
      const char e = *p_++;
      switch (e) {
        case '"': s += '"'; break;
        case '\\': s += '\\'; break;
        case '/': s += '/'; break;
        case 'b': s += '\b'; break;
        case 'f': s += '\f'; break;
        case 'n': s += '\n'; break;
        case 'r': s += '\r'; break;
        case 't': s += '\t'; break;
        case 'u': {
          if (end_ - p_ < 4) error("short \\u escape");
          unsigned cp = 0;
          for (int i = 0; i < 4; ++i) {
            const char h = *p_++;
            cp <<= 4;
            if (h >= '0' && h <= '9')
              cp |= static_cast<unsigned>(h - '0');
            else if (h >= 'a' && h <= 'f')
              cp |= static_cast<unsigned>(h - 'a' + 10);
            else if (h >= 'A' && h <= 'F')
              cp |= static_cast<unsigned>(h - 'A' + 10);
            else
              error("bad hex digit in a \\u escape");
          }
          put_utf8(s, cp);
          break;
        }
        default: error("unknown escape");
      }
    }
  }

  const char* begin_;
  const char* p_;
  const char* end_;
  const std::string& where_;
};

/// The value of a JSON number that must be a non-negative integer.
inline std::uint64_t to_u64(const JsonValue& v, const std::string& where, const char* what) {
  if (v.kind != JsonValue::Kind::number || v.text.empty() || v.text[0] == '-')
    fail(where, ": ", what, ": expected a non-negative integer");
  std::uint64_t out = 0;
  for (const char c : v.text) {
    if (c < '0' || c > '9') fail(where, ": ", what, ": expected an integer, got ", v.text);
    const auto digit = static_cast<std::uint64_t>(c - '0');
    if (out > (UINT64_MAX - digit) / 10) fail(where, ": ", what, ": value too large: ", v.text);
    out = out * 10 + digit;
  }
  return out;
}

/// Size in bytes of one element of a safetensors dtype, or 0 if unknown.
inline std::uint64_t dtype_size(const std::string& dtype) noexcept {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" || dtype == "F8_E5M2")
    return 1;
  return 0;
}

inline std::uint64_t read_u64_le(const unsigned char* p) noexcept {
  std::uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | p[i];
  return v;
}

}  // namespace trace_file
}  // namespace detail

/// The bytes of the safetensors file save_trace writes: `topk_ids` int32
/// [T, L, k] and `__metadata__` {"num_experts": "E"}.
inline std::vector<unsigned char> trace_to_bytes(const RoutingTrace& trace) {
  const std::uint64_t T = static_cast<std::uint64_t>(trace.num_tokens()),
                      L = static_cast<std::uint64_t>(trace.num_layers()),
                      k = static_cast<std::uint64_t>(trace.top_k());
  const std::uint64_t nbytes = T * L * k * 4;
  std::string header = detail::concat("{\"__metadata__\":{\"num_experts\":\"", trace.num_experts(),
                                      "\"},\"topk_ids\":{\"dtype\":\"I32\",\"shape\":[", T, ",", L,
                                      ",", k, "],\"data_offsets\":[0,", nbytes, "]}}");
  while (header.size() % 8 != 0) header += ' ';
  std::vector<unsigned char> bytes(8 + header.size() + static_cast<std::size_t>(nbytes));
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i)
    bytes[static_cast<std::size_t>(i)] = static_cast<unsigned char>(n >> (8 * i));
  std::memcpy(bytes.data() + 8, header.data(), header.size());
  unsigned char* data = bytes.data() + 8 + header.size();
  for (std::size_t i = 0; i < trace.data().size(); ++i) {
    const auto u = static_cast<std::uint32_t>(trace.data()[i]);
    for (int b = 0; b < 4; ++b)
      data[4 * i + static_cast<std::size_t>(b)] = static_cast<unsigned char>(u >> (8 * b));
  }
  return bytes;
}

/// Writes `trace` to `path` as a safetensors file (trace_to_bytes). Throws
/// moekit::Error if the file cannot be written.
inline void save_trace(const std::string& path, const RoutingTrace& trace) {
  const std::vector<unsigned char> bytes = trace_to_bytes(trace);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) detail::fail("trace file '", path, "': cannot open for writing");
  out.write(reinterpret_cast<const char*>(bytes.data()),
            static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) detail::fail("trace file '", path, "': write failed");
}

/// Parses the bytes of a trace file (what trace_to_bytes gives, or any
/// safetensors image with an int32 [T, L, k] tensor `topk_ids` and metadata
/// "num_experts"); `origin` names them in messages. Throws moekit::Error naming
/// the origin and the problem for every malformed input; never reads outside
/// [data, data + size).
inline RoutingTrace load_trace_from_memory(const void* data_in, std::size_t size,
                                           const std::string& origin = "<memory>") {
  using detail::trace_file::JsonValue;
  const std::string where = "trace file '" + origin + "'";
  if (size < 8) detail::fail(where, ": expected at least 8 bytes, got ", size);
  const auto* bytes = static_cast<const unsigned char*>(data_in);
  const std::uint64_t n = detail::trace_file::read_u64_le(bytes);
  const auto avail = static_cast<std::uint64_t>(size) - 8;
  if (n > avail || n > detail::trace_file::kMaxHeaderBytes)
    detail::fail(where, ": header length ", n, " exceeds the file (", avail,
                 " bytes after the length) or the 100 MB limit");
  const char* hbegin = reinterpret_cast<const char*>(bytes + 8);
  const JsonValue root = detail::trace_file::JsonParser(hbegin, hbegin + n, where).parse_document();
  if (root.kind != JsonValue::Kind::object) detail::fail(where, ": header is not a JSON object");
  const std::uint64_t data_size = avail - n;
  const unsigned char* data = bytes + 8 + n;

  // Every tensor entry must be well-formed and inside the data section.
  const JsonValue* ids_entry = nullptr;
  std::vector<std::uint64_t> ids_shape;
  std::uint64_t ids_begin = 0;
  for (std::size_t i = 0; i < root.keys.size(); ++i) {
    const std::string& name = root.keys[i];
    const JsonValue& v = root.items[i];
    if (name == "__metadata__") continue;
    const std::string what = where + ": tensor '" + name + "'";
    if (v.kind != JsonValue::Kind::object) detail::fail(what, ": entry is not an object");
    const JsonValue* dtype = v.find("dtype");
    const JsonValue* shape = v.find("shape");
    const JsonValue* offsets = v.find("data_offsets");
    if (!dtype || dtype->kind != JsonValue::Kind::string)
      detail::fail(what, ": missing string \"dtype\"");
    if (!shape || shape->kind != JsonValue::Kind::array)
      detail::fail(what, ": missing array \"shape\"");
    if (!offsets || offsets->kind != JsonValue::Kind::array || offsets->items.size() != 2)
      detail::fail(what, ": expected \"data_offsets\" [begin, end]");
    const std::uint64_t esize = detail::trace_file::dtype_size(dtype->text);
    if (esize == 0) detail::fail(what, ": unknown dtype ", dtype->text);
    std::vector<std::uint64_t> dims;
    std::uint64_t numel = 1;
    for (const JsonValue& dim : shape->items) {
      const std::uint64_t s = detail::trace_file::to_u64(dim, what, "shape");
      if (s != 0 && numel > UINT64_MAX / s / esize) detail::fail(what, ": shape too large");
      numel *= s;
      dims.push_back(s);
    }
    const std::uint64_t b = detail::trace_file::to_u64(offsets->items[0], what, "data_offsets");
    const std::uint64_t e = detail::trace_file::to_u64(offsets->items[1], what, "data_offsets");
    if (b > e || e > data_size)
      detail::fail(what, ": data_offsets [", b, ", ", e, "] outside the data section of ",
                   data_size, " bytes");
    if (e - b != numel * esize)
      detail::fail(what, ": data_offsets cover ", e - b, " bytes, shape and dtype need ",
                   numel * esize);
    if (name == "topk_ids") {
      if (dtype->text != "I32") detail::fail(what, ": expected dtype I32, got ", dtype->text);
      if (dims.size() != 3)
        detail::fail(what, ": expected shape [tokens, layers, k] (rank 3), got rank ", dims.size());
      ids_entry = &v;
      ids_shape = dims;
      ids_begin = b;
    }
  }
  if (!ids_entry) detail::fail(where, ": no tensor 'topk_ids'");

  const JsonValue* meta = root.find("__metadata__");
  if (!meta || meta->kind != JsonValue::Kind::object)
    detail::fail(where, ": no \"__metadata__\" object (it must hold \"num_experts\")");
  for (const JsonValue& v : meta->items)
    if (v.kind != JsonValue::Kind::string)
      detail::fail(where, ": __metadata__ values must be strings");
  const JsonValue* ne = meta->find("num_experts");
  if (!ne) detail::fail(where, ": __metadata__ has no \"num_experts\"");
  JsonValue ne_number = *ne;
  ne_number.kind = JsonValue::Kind::number;
  const std::uint64_t E = detail::trace_file::to_u64(ne_number, where, "num_experts");
  if (E < 1 || E > static_cast<std::uint64_t>(INT32_MAX))
    detail::fail(where, ": num_experts: expected an integer in [1, 2^31), got ", ne->text);
  // With tokens = 0 the data bound nothing: layers and k are bounded here so
  // that index arithmetic on the trace cannot overflow.
  if (ids_shape[1] < 1 || ids_shape[2] < 1 || ids_shape[1] > INT32_MAX || ids_shape[2] > INT32_MAX)
    detail::fail(where, ": tensor 'topk_ids': expected layers and k in [1, 2^31), got shape [",
                 ids_shape[0], ", ", ids_shape[1], ", ", ids_shape[2], "]");

  const std::size_t count = static_cast<std::size_t>(ids_shape[0] * ids_shape[1] * ids_shape[2]);
  std::vector<std::int32_t> ids(count);
  const unsigned char* src = data + ids_begin;
  for (std::size_t i = 0; i < count; ++i) {
    std::uint32_t u = 0;
    for (int b = 3; b >= 0; --b) u = (u << 8) | src[4 * i + static_cast<std::size_t>(b)];
    std::int32_t s;
    std::memcpy(&s, &u, sizeof s);
    ids[i] = s;
  }
  try {
    return RoutingTrace(std::move(ids), static_cast<Index>(ids_shape[0]),
                        static_cast<Index>(ids_shape[1]), static_cast<Index>(ids_shape[2]),
                        static_cast<Index>(E));
  } catch (const Error& e) {
    detail::fail(where, ": ", e.what() + 8);  // drop the inner "moekit: "
  }
}

/// Reads a trace written by save_trace (or any safetensors file with an int32
/// [T, L, k] tensor `topk_ids` and metadata "num_experts"). Throws
/// moekit::Error naming the file and the problem for every malformed input.
inline RoutingTrace load_trace(const std::string& path) {
  const std::string where = "trace file '" + path + "'";
  std::ifstream in(path, std::ios::binary | std::ios::ate);
  if (!in) detail::fail(where, ": cannot open");
  const std::streamoff size = in.tellg();
  if (size < 0) detail::fail(where, ": cannot read its size");
  std::vector<unsigned char> bytes(static_cast<std::size_t>(size));
  in.seekg(0);
  if (size > 0) in.read(reinterpret_cast<char*>(bytes.data()), static_cast<std::streamsize>(size));
  if (!in) detail::fail(where, ": read failed");
  return load_trace_from_memory(bytes.data(), bytes.size(), path);
}

MOEKIT_NAMESPACE_END
