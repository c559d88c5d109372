// SPDX-License-Identifier: MIT
// SafetensorsFile: a validating, zero-copy reader of one safetensors file.
//
// The file is memory-mapped (see mapped_file.hpp; read into memory where
// mapping fails) and its whole header is validated when it is opened, before
// any tensor can be touched: a file that opens is one whose every tensor lies
// inside the data section, has the byte size its dtype and shape require and
// overlaps no other tensor, so no accessor can read out of bounds. Every
// violation throws moekit::Error naming the file, the tensor, and what was
// expected and found. Tensors are then read as raw bytes (zero-copy), as a
// typed view (zero-copy when the bytes are aligned for the type, else a copy),
// or converted to a moekit::Matrix of f32 / a moekit::IdMatrix of int32.
//
// Format (https://github.com/huggingface/safetensors):
//   bytes [0, 8)        u64 little-endian N, the length of the JSON header
//   bytes [8, 8 + N)    UTF-8 JSON object: name -> {"dtype", "shape", "data_offsets": [b, e]},
//                       plus an optional "__metadata__": {string: string}
//   bytes [8 + N, end)  data section; data_offsets are relative to its start, [b, e) half-open
//
// NOTE: what the reader accepts. The header is at most 100 MB (the reference
// implementation's limit) and nests at most 16 levels; duplicate keys are
// rejected (JSON parsers disagree on which one wins). Unknown keys inside a
// tensor entry are ignored, as the reference reader does. Gaps between
// tensors and bytes after the last tensor are allowed (the reference reader
// rejects them; nothing is read from them). Only little-endian hosts are
// supported (the format is little-endian).
#pragma once

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <limits>
#include <map>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <type_traits>
#include <utility>
#include <vector>

#if defined(__has_include)
#if !__has_include(<nlohmann/json.hpp>)
#error "moekit/io/safetensors.hpp needs nlohmann/json 3 (Debian/Ubuntu: apt-get install nlohmann-json3-dev; CMake: find_package(nlohmann_json 3))"
#endif
#endif
#include <nlohmann/json.hpp>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "mapped_file.hpp"

MOEKIT_NAMESPACE_BEGIN

/// Largest JSON header accepted, in bytes (the reference implementation's limit).
constexpr std::uint64_t kSafetensorsMaxHeaderBytes = 100ull * 1000ull * 1000ull;
/// Deepest JSON nesting accepted in a header or an index (a valid header needs 3).
constexpr int kSafetensorsMaxJsonDepth = 16;

/// Element type of a safetensors tensor (the format's names: "F32", "BF16", ...).
enum class SafetensorsDtype : std::uint8_t {
  boolean,  ///< "BOOL": one byte, 0 or 1
  u8,       ///< "U8"
  i8,       ///< "I8"
  f8_e5m2,  ///< "F8_E5M2": 1 sign, 5 exponent (bias 15), 2 mantissa bits; inf and NaN
  f8_e4m3,  ///< "F8_E4M3": 1 sign, 4 exponent (bias 7), 3 mantissa bits; no inf, NaN = S.1111.111
  f8_e8m0,  ///< "F8_E8M0": unsigned power of two 2^(e - 127), 0xff = NaN (MX block scales)
  i16,      ///< "I16"
  u16,      ///< "U16"
  f16,      ///< "F16": IEEE binary16
  bf16,     ///< "BF16": the upper 16 bits of an IEEE binary32
  i32,      ///< "I32"
  u32,      ///< "U32"
  f32,      ///< "F32": IEEE binary32
  i64,      ///< "I64"
  u64,      ///< "U64"
  f64,      ///< "F64": IEEE binary64
};

namespace detail {

struct SafetensorsDtypeEntry {
  SafetensorsDtype dtype;
  const char* name;
  std::size_t size;
};

inline const SafetensorsDtypeEntry* safetensors_dtype_table() noexcept {
  static const SafetensorsDtypeEntry table[] = {
      {SafetensorsDtype::boolean, "BOOL", 1}, {SafetensorsDtype::u8, "U8", 1},
      {SafetensorsDtype::i8, "I8", 1},        {SafetensorsDtype::f8_e5m2, "F8_E5M2", 1},
      {SafetensorsDtype::f8_e4m3, "F8_E4M3", 1}, {SafetensorsDtype::f8_e8m0, "F8_E8M0", 1},
      {SafetensorsDtype::i16, "I16", 2},      {SafetensorsDtype::u16, "U16", 2},
      {SafetensorsDtype::f16, "F16", 2},      {SafetensorsDtype::bf16, "BF16", 2},
      {SafetensorsDtype::i32, "I32", 4},      {SafetensorsDtype::u32, "U32", 4},
      {SafetensorsDtype::f32, "F32", 4},      {SafetensorsDtype::i64, "I64", 8},
      {SafetensorsDtype::u64, "U64", 8},      {SafetensorsDtype::f64, "F64", 8},
  };
  return table;
}
constexpr std::size_t kSafetensorsDtypeCount = 16;

inline const SafetensorsDtypeEntry& safetensors_dtype_entry(SafetensorsDtype t) noexcept {
  const SafetensorsDtypeEntry* table = safetensors_dtype_table();
  for (std::size_t i = 0; i < kSafetensorsDtypeCount; ++i)
    if (table[i].dtype == t) return table[i];
  return table[0];  // unreachable for valid enumerators
}

inline std::string safetensors_dtype_list() {
  std::string out;
  const SafetensorsDtypeEntry* table = safetensors_dtype_table();
  for (std::size_t i = 0; i < kSafetensorsDtypeCount; ++i) {
    if (i) out += ", ";
    out += table[i].name;
  }
  return out;
}

}  // namespace detail

/// The format's name of a dtype: "F32", "BF16", "BOOL", ...
inline const char* safetensors_dtype_name(SafetensorsDtype t) noexcept {
  return detail::safetensors_dtype_entry(t).name;
}

/// Bytes per element.
inline std::size_t safetensors_dtype_size(SafetensorsDtype t) noexcept {
  return detail::safetensors_dtype_entry(t).size;
}

/// Looks a dtype up by its format name ("F32", ...); std::nullopt if unknown.
inline std::optional<SafetensorsDtype> find_safetensors_dtype(const std::string& name) noexcept {
  const detail::SafetensorsDtypeEntry* table = detail::safetensors_dtype_table();
  for (std::size_t i = 0; i < detail::kSafetensorsDtypeCount; ++i)
    if (name == table[i].name) return table[i].dtype;
  return std::nullopt;
}

/// Parses a dtype name; throws moekit::Error listing the known names.
inline SafetensorsDtype parse_safetensors_dtype(const std::string& name) {
  if (const auto t = find_safetensors_dtype(name)) return *t;
  detail::fail("safetensors dtype: expected one of ", detail::safetensors_dtype_list(), ", got \"",
               name, "\"");
}

/// The moekit::Dtype that stores the same values (F32, F16, BF16, I8, I32), if any.
inline std::optional<Dtype> as_moekit_dtype(SafetensorsDtype t) noexcept {
  switch (t) {
    case SafetensorsDtype::f32: return Dtype::f32;
    case SafetensorsDtype::f16: return Dtype::f16;
    case SafetensorsDtype::bf16: return Dtype::bf16;
    case SafetensorsDtype::i8: return Dtype::i8;
    case SafetensorsDtype::i32: return Dtype::i32;
    default: return std::nullopt;
  }
}

/// The safetensors dtype of a C++ element type: `safetensors_dtype_of<float>::value == f32`.
/// Defined for float, double, moekit::bf16, moekit::f16 and the fixed-width integers.
template <class T>
struct safetensors_dtype_of;
#define MOEKIT_SAFETENSORS_DTYPE_OF(T, D)                        \
  template <>                                                    \
  struct safetensors_dtype_of<T> {                               \
    static constexpr SafetensorsDtype value = SafetensorsDtype::D; \
  }
MOEKIT_SAFETENSORS_DTYPE_OF(double, f64);
MOEKIT_SAFETENSORS_DTYPE_OF(float, f32);
MOEKIT_SAFETENSORS_DTYPE_OF(bf16, bf16);
MOEKIT_SAFETENSORS_DTYPE_OF(f16, f16);
MOEKIT_SAFETENSORS_DTYPE_OF(std::int64_t, i64);
MOEKIT_SAFETENSORS_DTYPE_OF(std::int32_t, i32);
MOEKIT_SAFETENSORS_DTYPE_OF(std::int16_t, i16);
MOEKIT_SAFETENSORS_DTYPE_OF(std::int8_t, i8);
MOEKIT_SAFETENSORS_DTYPE_OF(std::uint64_t, u64);
MOEKIT_SAFETENSORS_DTYPE_OF(std::uint32_t, u32);
MOEKIT_SAFETENSORS_DTYPE_OF(std::uint16_t, u16);
MOEKIT_SAFETENSORS_DTYPE_OF(std::uint8_t, u8);
#undef MOEKIT_SAFETENSORS_DTYPE_OF

/// One validated tensor entry of a header.
struct TensorInfo {
  std::string name;
  SafetensorsDtype dtype = SafetensorsDtype::f32;
  /// The shape as stored, outermost first; empty for a scalar.
  std::vector<std::int64_t> shape;
  /// data_offsets [begin, end): byte range relative to the start of the data section.
  std::size_t begin = 0;
  std::size_t end = 0;
  /// Number of elements (product of the shape; 1 for a scalar).
  Index numel = 1;

  std::size_t nbytes() const noexcept { return end - begin; }
  std::size_t rank() const noexcept { return shape.size(); }
  /// Rows of the flattened matrix: product of all dimensions but the last (1 for rank 0 and 1).
  Index rows() const noexcept {
    Index r = 1;
    for (std::size_t i = 0; i + 1 < shape.size(); ++i) r *= static_cast<Index>(shape[i]);
    return r;
  }
  /// Columns of the flattened matrix: the last dimension (1 for a scalar).
  Index cols() const noexcept { return shape.empty() ? 1 : static_cast<Index>(shape.back()); }
  /// "[8, 96, 64]"
  std::string shape_string() const {
    std::ostringstream os;
    os << '[';
    for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
    os << ']';
    return os.str();
  }
};

/// Raw bytes of a tensor: little-endian, no alignment promised. Valid while its file lives.
struct ByteView {
  const std::uint8_t* data = nullptr;
  std::size_t size = 0;
};

/// A typed, read-only, contiguous view of a tensor's elements (row-major, numel of them).
/// Zero-copy when the bytes are suitably aligned for T in memory; otherwise (safetensors
/// does not promise alignment: a tensor may start at any byte) it holds an aligned copy,
/// and is_copy() is true. A zero-copy view is valid while its file lives.
template <class T>
class TensorData {
 public:
  TensorData() = default;

  const T* data() const noexcept { return copied_ ? copy_.data() : view_; }
  Index size() const noexcept { return size_; }
  bool empty() const noexcept { return size_ == 0; }
  /// True when the elements were copied (misaligned bytes), false for a zero-copy view.
  bool is_copy() const noexcept { return copied_; }
  const T& operator[](Index i) const noexcept { return data()[i]; }
  const T* begin() const noexcept { return data(); }
  const T* end() const noexcept { return size_ == 0 ? data() : data() + size_; }
  std::vector<T> to_vector() const { return std::vector<T>(begin(), end()); }

  /// Views `n` elements at `bytes`, copying them if `bytes` is misaligned for T.
  static TensorData view_or_copy(const std::uint8_t* bytes, Index n) {
    static_assert(std::is_trivially_copyable<T>::value, "TensorData needs a trivially copyable T");
    TensorData d;
    d.size_ = n;
    if (n == 0) return d;
    if (reinterpret_cast<std::uintptr_t>(bytes) % alignof(T) == 0) {
      d.view_ = static_cast<const T*>(static_cast<const void*>(bytes));
    } else {
      d.copy_.resize(static_cast<std::size_t>(n));
      std::memcpy(static_cast<void*>(d.copy_.data()), bytes, static_cast<std::size_t>(n) * sizeof(T));
      d.copied_ = true;
    }
    return d;
  }

 private:
  const T* view_ = nullptr;
  std::vector<T> copy_;
  Index size_ = 0;
  bool copied_ = false;
};

namespace detail {

inline bool host_is_little_endian() noexcept {
  const std::uint16_t probe = 1;
  std::uint8_t first = 0;
  std::memcpy(&first, &probe, 1);
  return first == 1;
}

template <class T>
T load_le(const std::uint8_t* p) noexcept {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

/// A short description of a JSON value for error messages: numbers, booleans and null as
/// written, strings quoted (cut at 40 characters), containers by kind.
inline std::string json_describe(const nlohmann::json& j) {
  if (j.is_string()) {
    const auto& s = j.get_ref<const std::string&>();
    return "the string \"" + (s.size() > 40 ? s.substr(0, 40) + "..." : s) + "\"";
  }
  if (j.is_object()) return "an object";
  if (j.is_array()) return "an array";
  return j.dump();  // number, boolean, null
}

/// Parses [first, last) as JSON for a file header or index: rejects nesting deeper than
/// kSafetensorsMaxJsonDepth and duplicate keys in an object. Errors start with `where`.
inline nlohmann::json parse_json_strict(const char* first, const char* last, const std::string& where) {
  using json = nlohmann::json;
  // nlohmann::json stops at a NUL byte as if the input ended there; JSON text never holds
  // one (control characters in strings must be escaped), so reject it outright.
  if (const void* nul = std::memchr(first, 0, static_cast<std::size_t>(last - first)))
    fail(where, ": not valid JSON: NUL byte at offset ",
         static_cast<const char*>(nul) - first);
  std::vector<std::set<std::string>> keys;  // keys seen in the open object at each depth
  auto check = [&](int depth, json::parse_event_t event, json& parsed) -> bool {
    const std::size_t d = depth < 0 ? 0 : static_cast<std::size_t>(depth);
    if (event == json::parse_event_t::object_start || event == json::parse_event_t::array_start) {
      if (depth >= kSafetensorsMaxJsonDepth)
        fail(where, ": JSON nests deeper than ", kSafetensorsMaxJsonDepth, " levels");
      if (event == json::parse_event_t::object_start) {
        if (keys.size() <= d + 1) keys.resize(d + 2);
        keys[d + 1].clear();
      }
    } else if (event == json::parse_event_t::key && parsed.is_string()) {
      if (keys.size() <= d) keys.resize(d + 1);
      if (!keys[d].insert(parsed.get_ref<const std::string&>()).second)
        fail(where, ": duplicate key \"", parsed.get_ref<const std::string&>(), "\"");
    }
    return true;
  };
  try {
    return json::parse(first, last, check);
  } catch (const json::exception& e) {
    fail(where, ": not valid JSON: ", e.what());
  }
}

/// Edit distance of the first 256 characters of two strings.
inline std::size_t edit_distance(const std::string& a, const std::string& b) {
  const std::size_t n = std::min<std::size_t>(a.size(), 256);
  const std::size_t m = std::min<std::size_t>(b.size(), 256);
  std::vector<std::size_t> row(m + 1);
  for (std::size_t j = 0; j <= m; ++j) row[j] = j;
  for (std::size_t i = 1; i <= n; ++i) {
    std::size_t diag = row[0];
    row[0] = i;
    for (std::size_t j = 1; j <= m; ++j) {
      const std::size_t up = row[j];
      row[j] = std::min({row[j] + 1, row[j - 1] + 1, diag + (a[i - 1] != b[j - 1] ? 1u : 0u)});
      diag = up;
    }
  }
  return row[m];
}

/// Up to `count` keys of `names` that look most like `name`: the 32 that share the longest
/// prefix + suffix with it, then ordered by edit distance. Linear in the total key length.
template <class Map>
std::vector<std::string> similar_names(const std::string& name, const Map& names,
                                       std::size_t count = 5) {
  std::vector<std::pair<std::size_t, const std::string*>> scored;  // (affix score, key)
  scored.reserve(names.size());
  for (const auto& kv : names) {
    const std::string& key = kv.first;
    const std::size_t limit = std::min(key.size(), name.size());
    std::size_t prefix = 0;
    while (prefix < limit && key[prefix] == name[prefix]) ++prefix;
    std::size_t suffix = 0;
    while (suffix < limit - prefix &&
           key[key.size() - 1 - suffix] == name[name.size() - 1 - suffix])
      ++suffix;
    scored.emplace_back(prefix + suffix, &key);
  }
  const std::size_t keep = std::min<std::size_t>(scored.size(), 32);
  std::partial_sort(scored.begin(), scored.begin() + static_cast<std::ptrdiff_t>(keep), scored.end(),
                    [](const auto& a, const auto& b) {
                      return a.first != b.first ? a.first > b.first : *a.second < *b.second;
                    });
  std::vector<std::pair<std::size_t, const std::string*>> ranked;  // (edit distance, key)
  for (std::size_t i = 0; i < keep; ++i)
    ranked.emplace_back(edit_distance(name, *scored[i].second), scored[i].second);
  std::sort(ranked.begin(), ranked.end(), [](const auto& a, const auto& b) {
    return a.first != b.first ? a.first < b.first : *a.second < *b.second;
  });
  std::vector<std::string> out;
  for (std::size_t i = 0; i < ranked.size() && i < count; ++i) out.push_back(*ranked[i].second);
  return out;
}

/// "no tensor named 'x' (it has 3 tensors; the nearest names are 'a', 'b', 'c')".
template <class Map>
std::string missing_tensor_message(const std::string& name, const Map& names) {
  std::string msg = "no tensor named '" + name + "'";
  if (names.empty()) return msg + " (it has no tensors)";
  msg += " (it has " + std::to_string(names.size()) + " tensor" + (names.size() == 1 ? "" : "s") +
         "; the nearest name" + (names.size() == 1 ? " is " : "s are ");
  const std::vector<std::string> near = similar_names(name, names);
  for (std::size_t i = 0; i < near.size(); ++i) msg += (i ? ", '" : "'") + near[i] + "'";
  return msg + ")";
}

/// Widens an 8-bit float (F8_E4M3, "fn": no infinities, S.1111.111 is NaN) exactly.
inline float f8_e4m3_to_float(std::uint8_t b) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(b & 0x80u) << 24;
  const std::uint32_t e = (b >> 3) & 0xfu;
  const std::uint32_t m = b & 0x7u;
  if (e == 15 && m == 7) return bits_float(sign | 0x7fc00000u);
  if (e == 0) {  // subnormal: m * 2^-9
    const float v = static_cast<float>(m) * (1.0f / 512.0f);
    return sign ? -v : v;
  }
  return bits_float(sign | ((e + 120u) << 23) | (m << 20));
}

/// Widens an 8-bit float (F8_E5M2, IEEE-like: infinities and NaN) exactly.
inline float f8_e5m2_to_float(std::uint8_t b) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(b & 0x80u) << 24;
  const std::uint32_t e = (b >> 2) & 0x1fu;
  const std::uint32_t m = b & 0x3u;
  if (e == 31) return bits_float(sign | 0x7f800000u | (m ? 0x00400000u | (m << 21) : 0u));
  if (e == 0) {  // subnormal: m * 2^-16
    const float v = static_cast<float>(m) * (1.0f / 65536.0f);
    return sign ? -v : v;
  }
  return bits_float(sign | ((e + 112u) << 23) | (m << 21));
}

/// Widens an F8_E8M0 scale, 2^(e - 127) (0xff is NaN), exactly.
inline float f8_e8m0_to_float(std::uint8_t b) noexcept {
  if (b == 0xffu) return bits_float(0x7fc00000u);
  if (b == 0) return bits_float(0x00400000u);  // 2^-127, a float subnormal
  return bits_float(static_cast<std::uint32_t>(b) << 23);
}

template <class T>
void widen_to_f32(const std::uint8_t* src, std::size_t n, float* dst) noexcept {
  for (std::size_t i = 0; i < n; ++i) dst[i] = static_cast<float>(load_le<T>(src + i * sizeof(T)));
}

/// Converts `n` little-endian elements of dtype `t` at `src` (any alignment) to f32.
/// Floats widen exactly (F64 rounds to nearest), integers round to the nearest float,
/// BOOL gives 0 or 1 (any non-zero byte is true).
inline void safetensors_to_f32(SafetensorsDtype t, const std::uint8_t* src, std::size_t n,
                               float* dst) noexcept {
  switch (t) {
    case SafetensorsDtype::f32:
      if (n) std::memcpy(dst, src, n * sizeof(float));
      return;
    case SafetensorsDtype::f64: return widen_to_f32<double>(src, n, dst);
    case SafetensorsDtype::bf16:
      for (std::size_t i = 0; i < n; ++i)
        dst[i] = bf16_bits_to_float(load_le<std::uint16_t>(src + 2 * i));
      return;
    case SafetensorsDtype::f16:
      for (std::size_t i = 0; i < n; ++i)
        dst[i] = f16_bits_to_float(load_le<std::uint16_t>(src + 2 * i));
      return;
    case SafetensorsDtype::f8_e4m3:
      for (std::size_t i = 0; i < n; ++i) dst[i] = f8_e4m3_to_float(src[i]);
      return;
    case SafetensorsDtype::f8_e5m2:
      for (std::size_t i = 0; i < n; ++i) dst[i] = f8_e5m2_to_float(src[i]);
      return;
    case SafetensorsDtype::f8_e8m0:
      for (std::size_t i = 0; i < n; ++i) dst[i] = f8_e8m0_to_float(src[i]);
      return;
    case SafetensorsDtype::boolean:
      for (std::size_t i = 0; i < n; ++i) dst[i] = src[i] ? 1.0f : 0.0f;
      return;
    case SafetensorsDtype::u8: return widen_to_f32<std::uint8_t>(src, n, dst);
    case SafetensorsDtype::i8: return widen_to_f32<std::int8_t>(src, n, dst);
    case SafetensorsDtype::i16: return widen_to_f32<std::int16_t>(src, n, dst);
    case SafetensorsDtype::u16: return widen_to_f32<std::uint16_t>(src, n, dst);
    case SafetensorsDtype::i32: return widen_to_f32<std::int32_t>(src, n, dst);
    case SafetensorsDtype::u32: return widen_to_f32<std::uint32_t>(src, n, dst);
    case SafetensorsDtype::i64: return widen_to_f32<std::int64_t>(src, n, dst);
    case SafetensorsDtype::u64: return widen_to_f32<std::uint64_t>(src, n, dst);
  }
}

inline bool is_integer_dtype(SafetensorsDtype t) noexcept {
  switch (t) {
    case SafetensorsDtype::boolean:
    case SafetensorsDtype::u8:
    case SafetensorsDtype::i8:
    case SafetensorsDtype::i16:
    case SafetensorsDtype::u16:
    case SafetensorsDtype::i32:
    case SafetensorsDtype::u32:
    case SafetensorsDtype::i64:
    case SafetensorsDtype::u64: return true;
    default: return false;
  }
}

/// Loads element i of an integer dtype as (value, negative) without overflow.
inline std::int64_t load_integer(SafetensorsDtype t, const std::uint8_t* src, std::size_t i,
                                 bool& too_large) noexcept {
  too_large = false;
  switch (t) {
    case SafetensorsDtype::boolean: return src[i] ? 1 : 0;
    case SafetensorsDtype::u8: return src[i];
    case SafetensorsDtype::i8: return load_le<std::int8_t>(src + i);
    case SafetensorsDtype::i16: return load_le<std::int16_t>(src + 2 * i);
    case SafetensorsDtype::u16: return load_le<std::uint16_t>(src + 2 * i);
    case SafetensorsDtype::i32: return load_le<std::int32_t>(src + 4 * i);
    case SafetensorsDtype::u32: return load_le<std::uint32_t>(src + 4 * i);
    case SafetensorsDtype::i64: return load_le<std::int64_t>(src + 8 * i);
    case SafetensorsDtype::u64: {
      const auto u = load_le<std::uint64_t>(src + 8 * i);
      if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
        too_large = true;
        return std::numeric_limits<std::int64_t>::max();
      }
      return static_cast<std::int64_t>(u);
    }
    default: return 0;
  }
}

}  // namespace detail

/// A validated safetensors file, memory-mapped (or read, or given as bytes).
///
///   moekit::SafetensorsFile f("model.safetensors");
///   for (const std::string& name : f.names()) std::cout << name << f.info(name).shape_string();
///   moekit::Matrix w = f.to_matrix("experts.0.w1.weight");   // [I, d], f32 from F32/BF16/F16/...
///   moekit::TensorData<moekit::bf16> raw = f.data<moekit::bf16>("experts.0.w1.weight");
///
/// Move-only. Every accessor is const and thread-safe; pointers and views it hands out
/// stay valid while the file object lives (and across moves of it).
class SafetensorsFile {
 public:
  /// Opens and validates `path` (mapped, or read when `access` says so or mapping fails).
  explicit SafetensorsFile(const std::string& path, FileAccess access = FileAccess::map)
      : SafetensorsFile(MappedFile::open(path, access)) {}

  /// Validates the bytes of `file`, which the SafetensorsFile then owns.
  explicit SafetensorsFile(MappedFile file) : file_(std::move(file)) { parse(); }

  /// Validates a copy of `size` bytes at `data`; `origin` names them in messages.
  static SafetensorsFile from_memory(const void* data, std::size_t size,
                                     std::string origin = "<memory>") {
    return SafetensorsFile(MappedFile::copy_of(data, size, std::move(origin)));
  }

  /// Validates `bytes`, which the SafetensorsFile then owns.
  static SafetensorsFile from_bytes(std::vector<std::uint8_t> bytes, std::string origin = "<memory>") {
    return SafetensorsFile(MappedFile::from_bytes(std::move(bytes), std::move(origin)));
  }

  SafetensorsFile(SafetensorsFile&&) noexcept = default;
  SafetensorsFile& operator=(SafetensorsFile&&) noexcept = default;
  SafetensorsFile(const SafetensorsFile&) = delete;
  SafetensorsFile& operator=(const SafetensorsFile&) = delete;

  /// The path (or the origin given to from_memory / from_bytes).
  const std::string& origin() const noexcept { return file_.path(); }
  bool is_mapped() const noexcept { return file_.is_mapped(); }
  std::size_t file_size() const noexcept { return file_.size(); }
  /// Length of the JSON header in bytes (N).
  std::size_t header_size() const noexcept { return header_size_; }
  /// Offset of the data section in the file (8 + N).
  std::size_t data_offset() const noexcept { return data_offset_; }

  /// Number of tensors.
  std::size_t size() const noexcept { return tensors_.size(); }
  /// Tensor names, sorted (byte-wise).
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(tensors_.size());
    for (const auto& kv : tensors_) out.push_back(kv.first);
    return out;
  }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }

  /// The tensor's entry. A missing name throws moekit::Error naming it and the nearest names.
  const TensorInfo& info(const std::string& name) const {
    const auto it = tensors_.find(name);
    if (it == tensors_.end()) fail_file(detail::missing_tensor_message(name, tensors_));
    return it->second;
  }
  /// All entries, by name.
  const std::map<std::string, TensorInfo>& tensors() const noexcept { return tensors_; }

  /// The `__metadata__` string map (empty when the header has none).
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  /// One metadata value; throws moekit::Error naming the key when it is absent.
  const std::string& metadata(const std::string& key) const {
    const auto it = metadata_.find(key);
    if (it == metadata_.end()) fail_file("no __metadata__ key '", key, "'");
    return it->second;
  }
  /// One metadata value, or `fallback` when absent.
  std::string metadata_or(const std::string& key, const std::string& fallback) const {
    const auto it = metadata_.find(key);
    return it == metadata_.end() ? fallback : it->second;
  }

  /// Zero-copy raw bytes of a tensor (little-endian, any alignment).
  ByteView bytes(const std::string& name) const {
    const TensorInfo& t = info(name);
    return ByteView{tensor_bytes(t), t.nbytes()};
  }

  /// The tensor's elements as T, which must match its dtype (float for F32, bf16 for BF16,
  /// std::int32_t for I32, ...; see safetensors_dtype_of). Zero-copy when aligned, else a copy.
  template <class T>
  TensorData<T> data(const std::string& name) const {
    const TensorInfo& t = info(name);
    constexpr SafetensorsDtype want = safetensors_dtype_of<T>::value;
    if (t.dtype != want)
      fail_tensor(name, "data<", safetensors_dtype_name(want), ">() needs dtype ",
                  safetensors_dtype_name(want), ", the tensor is ", safetensors_dtype_name(t.dtype),
                  " (to_matrix() converts any dtype to f32)");
    return TensorData<T>::view_or_copy(tensor_bytes(t), t.numel);
  }

  /// The tensor as a row-major f32 matrix. Leading dimensions are flattened into rows:
  /// [E, f, d] -> [E*f, d]; [n] -> [1, n]; a scalar -> [1, 1]. Every dtype converts: floats
  /// exactly (F64 rounds to nearest), integers to the nearest float, BOOL to 0 / 1.
  Matrix to_matrix(const std::string& name) const {
    const TensorInfo& t = info(name);
    Matrix m(t.rows(), t.cols());
    detail::safetensors_to_f32(t.dtype, tensor_bytes(t), static_cast<std::size_t>(t.numel),
                               m.data());
    return m;
  }

  /// The tensor as a row-major int32 matrix (same flattening as to_matrix). Integer and BOOL
  /// dtypes only; a value outside the int32 range throws naming the tensor and the element.
  IdMatrix to_ids(const std::string& name) const {
    const TensorInfo& t = info(name);
    if (!detail::is_integer_dtype(t.dtype))
      fail_tensor(name, "to_ids() needs an integer or BOOL dtype, the tensor is ",
                  safetensors_dtype_name(t.dtype));
    IdMatrix m(t.rows(), t.cols());
    const std::uint8_t* src = tensor_bytes(t);
    const auto n = static_cast<std::size_t>(t.numel);
    if (t.dtype == SafetensorsDtype::i32) {
      if (n) std::memcpy(m.data(), src, n * sizeof(std::int32_t));
      return m;
    }
    for (std::size_t i = 0; i < n; ++i) {
      bool too_large = false;
      const std::int64_t v = detail::load_integer(t.dtype, src, i, too_large);
      if (too_large || v < std::numeric_limits<std::int32_t>::min() ||
          v > std::numeric_limits<std::int32_t>::max())
        fail_tensor(name, "element ", i, " (", safetensors_dtype_name(t.dtype), ") is ",
                    too_large ? std::string("above 2^63") : std::to_string(v),
                    ", outside the int32 range of to_ids()");
      m.data()[i] = static_cast<std::int32_t>(v);
    }
    return m;
  }

 private:
  template <class... Parts>
  [[noreturn]] void fail_file(Parts&&... parts) const {
    detail::fail("safetensors file '", origin(), "': ", std::forward<Parts>(parts)...);
  }
  template <class... Parts>
  [[noreturn]] void fail_tensor(const std::string& name, Parts&&... parts) const {
    detail::fail("safetensors file '", origin(), "': tensor '", name, "': ",
                 std::forward<Parts>(parts)...);
  }

  const std::uint8_t* tensor_bytes(const TensorInfo& t) const noexcept {
    return file_.data() + data_offset_ + t.begin;
  }

  void parse() {
    if (!detail::host_is_little_endian())
      fail_file("big-endian hosts are not supported (safetensors data is little-endian)");
    const std::uint8_t* p = file_.data();
    const std::size_t size = file_.size();
    if (size < 8)
      fail_file("the file is ", size, " bytes long, expected at least 8 (the header length)");
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | p[i];
    const std::uint64_t available = size - 8;
    if (n > available)
      fail_file("header length ", n, " is larger than the ", available,
                " bytes that follow the length field (the file is truncated or not safetensors)");
    if (n > kSafetensorsMaxHeaderBytes)
      fail_file("header length ", n, " exceeds the limit of ", kSafetensorsMaxHeaderBytes, " bytes");
    header_size_ = static_cast<std::size_t>(n);
    data_offset_ = 8 + header_size_;
    const std::size_t data_size = size - data_offset_;

    const char* text = static_cast<const char*>(static_cast<const void*>(p + 8));
    const nlohmann::json header = detail::parse_json_strict(
        text, text + header_size_, detail::concat("safetensors file '", origin(), "': header"));
    if (!header.is_object())
      fail_file("header: expected a JSON object, found ", detail::json_describe(header));

    for (auto it = header.begin(); it != header.end(); ++it) {
      if (it.key() == "__metadata__") {
        parse_metadata(it.value());
        continue;
      }
      tensors_.emplace(it.key(), parse_entry(it.key(), it.value(), data_size));
    }
    check_overlaps();
  }

  void parse_metadata(const nlohmann::json& m) {
    if (!m.is_object())
      fail_file("__metadata__: expected a JSON object of strings, found ", detail::json_describe(m));
    for (auto it = m.begin(); it != m.end(); ++it) {
      if (!it.value().is_string())
        fail_file("__metadata__: the value of key '", it.key(), "' is ",
                  detail::json_describe(it.value()), ", expected a string");
      metadata_.emplace(it.key(), it.value().get<std::string>());
    }
  }

  TensorInfo parse_entry(const std::string& name, const nlohmann::json& v,
                         std::size_t data_size) const {
    using json = nlohmann::json;
    if (!v.is_object())
      fail_tensor(name, "expected an object {\"dtype\", \"shape\", \"data_offsets\"}, found ",
                  detail::json_describe(v));
    TensorInfo t;
    t.name = name;

    // dtype
    const auto dt = v.find("dtype");
    if (dt == v.end()) fail_tensor(name, "missing \"dtype\"");
    if (!dt->is_string())
      fail_tensor(name, "\"dtype\" is ", detail::json_describe(*dt), ", expected a string");
    const auto dtype = find_safetensors_dtype(dt->get_ref<const std::string&>());
    if (!dtype)
      fail_tensor(name, "unknown dtype \"", dt->get_ref<const std::string&>(), "\" (expected one of ",
                  detail::safetensors_dtype_list(), ")");
    t.dtype = *dtype;
    const std::size_t esize = safetensors_dtype_size(t.dtype);

    // shape
    const auto sh = v.find("shape");
    if (sh == v.end()) fail_tensor(name, "missing \"shape\"");
    if (!sh->is_array())
      fail_tensor(name, "\"shape\" is ", detail::json_describe(*sh),
                  ", expected an array of non-negative integers");
    const auto index_max = static_cast<std::uint64_t>(std::numeric_limits<Index>::max());
    for (std::size_t i = 0; i < sh->size(); ++i) {
      const json& d = (*sh)[i];
      if (d.is_number_unsigned()) {
        const auto u = d.get<std::uint64_t>();
        if (u > index_max)
          fail_tensor(name, "shape dimension ", i, " is ", u, ", larger than the largest index ",
                      index_max);
        t.shape.push_back(static_cast<std::int64_t>(u));
      } else if (d.is_number_integer()) {
        const auto s = d.get<std::int64_t>();
        if (s < 0)
          fail_tensor(name, "shape dimension ", i, " is negative (", s,
                      "), expected a non-negative integer");
        t.shape.push_back(s);
      } else {
        fail_tensor(name, "shape dimension ", i, " is ", detail::json_describe(d),
                    ", expected a non-negative integer");
      }
    }
    // The product of the non-zero dimensions must fit an Index: then so does every partial
    // product (rows(), cols(), numel) even when a zero dimension makes the tensor empty.
    std::uint64_t nonzero = 1;
    bool has_zero = false;
    for (const std::int64_t s : t.shape) {
      const auto d = static_cast<std::uint64_t>(s);
      if (d == 0) {
        has_zero = true;
        continue;
      }
      if (nonzero > index_max / d)
        fail_tensor(name, "the element count of shape ", t.shape_string(), " overflows (more than ",
                    index_max, ")");
      nonzero *= d;
    }
    const std::uint64_t numel = has_zero ? 0 : nonzero;
    if (numel > std::numeric_limits<std::uint64_t>::max() / esize)
      fail_tensor(name, "the byte size of shape ", t.shape_string(), " x ", esize, " bytes overflows");
    const std::uint64_t expected = numel * esize;
    t.numel = static_cast<Index>(numel);

    // data_offsets
    const auto off = v.find("data_offsets");
    if (off == v.end()) fail_tensor(name, "missing \"data_offsets\"");
    if (!off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned()) {
      std::string found = detail::json_describe(*off);
      if (off->is_array() && off->size() <= 4) {
        found = "[";
        for (std::size_t i = 0; i < off->size(); ++i)
          found += (i ? ", " : "") + detail::json_describe((*off)[i]);
        found += "]";
      }
      fail_tensor(name, "\"data_offsets\" is ", found,
                  ", expected [begin, end], two non-negative integers");
    }
    const auto begin = (*off)[0].get<std::uint64_t>();
    const auto end = (*off)[1].get<std::uint64_t>();
    if (begin > end)
      fail_tensor(name, "data_offsets [", begin, ", ", end, "]: begin is after end");
    if (end > data_size)
      fail_tensor(name, "data_offsets [", begin, ", ", end, "] end past the data section, which is ",
                  data_size, " bytes long");
    if (end - begin != expected)
      fail_tensor(name, "data_offsets [", begin, ", ", end, "] span ", end - begin,
                  " bytes, expected ", expected, " (dtype ", safetensors_dtype_name(t.dtype),
                  " x shape ", t.shape_string(), " = ", numel, " elements of ", esize, " bytes)");
    t.begin = static_cast<std::size_t>(begin);
    t.end = static_cast<std::size_t>(end);
    return t;
  }

  void check_overlaps() const {
    std::vector<const TensorInfo*> order;
    order.reserve(tensors_.size());
    for (const auto& kv : tensors_)
      if (kv.second.nbytes() > 0) order.push_back(&kv.second);
    std::sort(order.begin(), order.end(), [](const TensorInfo* a, const TensorInfo* b) {
      return a->begin != b->begin ? a->begin < b->begin : a->name < b->name;
    });
    for (std::size_t i = 1; i < order.size(); ++i) {
      const TensorInfo& a = *order[i - 1];
      const TensorInfo& b = *order[i];
      if (b.begin < a.end)
        fail_file("tensors '", a.name, "' (data_offsets [", a.begin, ", ", a.end, "]) and '",
                  b.name, "' (data_offsets [", b.begin, ", ", b.end, "]) overlap");
    }
  }

  MappedFile file_;
  std::size_t header_size_ = 0;
  std::size_t data_offset_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

MOEKIT_NAMESPACE_END
