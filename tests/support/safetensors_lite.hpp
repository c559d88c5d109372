// SPDX-License-Identifier: MIT
// safetensors_lite: a small, test-only reader of the safetensors format.
//
// It reads the whole file into memory, validates the header and every tensor
// entry, and hands out tensors by name (dtype string, shape, raw bytes) plus
// the `__metadata__` string map. F32 / BF16 tensors convert to moekit::Matrix,
// I32 tensors to moekit::IdMatrix. It is deliberately strict: every malformed
// input throws std::runtime_error with a message naming the file, the tensor
// and what is wrong; it never reads outside the buffer.
//
// Format (https://github.com/huggingface/safetensors):
//   bytes [0, 8)        u64 little-endian N, the JSON header length
//   bytes [8, 8 + N)    UTF-8 JSON object: name -> {"dtype", "shape", "data_offsets": [b, e]}
//                       plus an optional "__metadata__": {string: string}
//   bytes [8 + N, end)  data section; offsets are relative to its start
//
// This is test infrastructure; the library's real loader comes later.
#pragma once

#include <algorithm>
#include <cstdint>
#include <cstring>
#include <fstream>
#include <limits>
#include <map>
#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "moekit/core/tensor.hpp"

namespace moekit_test {
namespace safetensors {

/// Largest header accepted (the reference implementation's limit is 100 MB).
constexpr std::uint64_t kMaxHeaderBytes = 100ull * 1024ull * 1024ull;

/// Size in bytes of one element of a safetensors dtype, or 0 if unknown.
inline std::size_t dtype_size(const std::string& dtype) noexcept {
  if (dtype == "F64" || dtype == "I64" || dtype == "U64") return 8;
  if (dtype == "F32" || dtype == "I32" || dtype == "U32") return 4;
  if (dtype == "F16" || dtype == "BF16" || dtype == "I16" || dtype == "U16") return 2;
  if (dtype == "I8" || dtype == "U8" || dtype == "BOOL" || dtype == "F8_E4M3" ||
      dtype == "F8_E5M2")
    return 1;
  return 0;
}

/// One tensor entry of the header, already validated against the file.
struct TensorInfo {
  std::string name;
  std::string dtype;
  std::vector<std::int64_t> shape;
  /// Byte range [begin, end) relative to the data section.
  std::uint64_t begin = 0, end = 0;
  std::uint64_t numel = 1;

  std::uint64_t nbytes() const noexcept { return end - begin; }
  std::size_t rank() const noexcept { return shape.size(); }

  std::string shape_string() const {
    std::ostringstream os;
    os << '[';
    for (std::size_t i = 0; i < shape.size(); ++i) os << (i ? ", " : "") << shape[i];
    os << ']';
    return os.str();
  }
};

class File {
 public:
  /// Reads and validates the whole file. Throws std::runtime_error.
  static File load(const std::string& path) {
    std::ifstream in(path, std::ios::binary | std::ios::ate);
    if (!in) throw std::runtime_error("safetensors: cannot open '" + path + "'");
    const std::streamoff size = in.tellg();
    if (size < 0) throw std::runtime_error("safetensors: cannot determine the size of '" + path + "'");
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(size));
    in.seekg(0, std::ios::beg);
    if (size > 0 && !in.read(reinterpret_cast<char*>(bytes.data()), size))
      throw std::runtime_error("safetensors: failed to read " + std::to_string(size) +
                               " bytes from '" + path + "'");
    return parse(std::move(bytes), path);
  }

  /// Validates an in-memory file image; `origin` names it in error messages.
  static File parse(std::vector<std::uint8_t> bytes, std::string origin = "<memory>") {
    File f;
    f.origin_ = std::move(origin);
    f.bytes_ = std::move(bytes);
    f.parse_header();
    return f;
  }

  const std::string& origin() const noexcept { return origin_; }
  /// Total file size in bytes.
  std::size_t file_size() const noexcept { return bytes_.size(); }
  /// Offset of the data section in the file (8 + header length).
  std::size_t data_offset() const noexcept { return data_offset_; }

  /// Tensor names, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(tensors_.size());
    for (const auto& kv : tensors_) out.push_back(kv.first);
    return out;
  }
  bool has(const std::string& name) const { return tensors_.count(name) != 0; }
  const TensorInfo& info(const std::string& name) const {
    const auto it = tensors_.find(name);
    if (it == tensors_.end()) fail("no tensor named '" + name + "'");
    return it->second;
  }
  /// Raw little-endian bytes of a tensor (info(name).nbytes() of them; not aligned).
  const std::uint8_t* raw(const std::string& name) const {
    return bytes_.data() + data_offset_ + info(name).begin;
  }

  /// The `__metadata__` map (empty if the header has none).
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }
  bool has_meta(const std::string& key) const { return metadata_.count(key) != 0; }
  /// Metadata value; throws if the key is absent.
  const std::string& meta(const std::string& key) const {
    const auto it = metadata_.find(key);
    if (it == metadata_.end()) fail("no __metadata__ key '" + key + "'");
    return it->second;
  }
  /// Metadata value, or `fallback` if absent.
  std::string meta_or(const std::string& key, const std::string& fallback) const {
    const auto it = metadata_.find(key);
    return it == metadata_.end() ? fallback : it->second;
  }

  /// F32 or BF16 tensor as a float matrix. Rank >= 2 flattens the leading
  /// dimensions into rows ([E, f, d] -> [E*f, d]); rank 1 gives [1, n] and
  /// rank 0 gives [1, 1]. BF16 is upcast exactly (the value is the top 16 bits
  /// of an IEEE binary32).
  moekit::Matrix to_float_matrix(const std::string& name) const {
    const TensorInfo& t = info(name);
    std::int64_t rows = 0, cols = 0;
    matrix_dims(t, rows, cols);
    moekit::Matrix m(rows, cols);
    const std::uint8_t* src = raw(name);
    const std::size_t n = static_cast<std::size_t>(t.numel);
    float* dst = m.data();
    if (t.dtype == "F32") {
      if (n) std::memcpy(dst, src, n * sizeof(float));
    } else if (t.dtype == "BF16") {
      for (std::size_t i = 0; i < n; ++i) {
        const std::uint32_t bits = static_cast<std::uint32_t>(src[2 * i]) |
                                   (static_cast<std::uint32_t>(src[2 * i + 1]) << 8);
        const std::uint32_t f32 = bits << 16;
        std::memcpy(dst + i, &f32, sizeof(float));
      }
    } else {
      fail("tensor '" + name + "': cannot convert dtype " + t.dtype +
           " to float (supported: F32, BF16)");
    }
    return m;
  }

  /// F32 or BF16 tensor of any rank as a flat vector of numel floats.
  moekit::Vector to_float_vector(const std::string& name) const {
    const moekit::Matrix m = to_float_matrix(name);
    return moekit::Vector(Eigen::Map<const moekit::Vector>(m.data(), m.size()));
  }

  /// I32 tensor as an int32 matrix (same flattening rule as to_float_matrix).
  moekit::IdMatrix to_int_matrix(const std::string& name) const {
    const TensorInfo& t = info(name);
    if (t.dtype != "I32")
      fail("tensor '" + name + "': cannot convert dtype " + t.dtype + " to int32 (supported: I32)");
    std::int64_t rows = 0, cols = 0;
    matrix_dims(t, rows, cols);
    moekit::IdMatrix m(rows, cols);
    if (t.numel) std::memcpy(m.data(), raw(name), static_cast<std::size_t>(t.numel) * 4u);
    return m;
  }

 private:
  File() = default;

  [[noreturn]] void fail(const std::string& what) const {
    throw std::runtime_error("safetensors: '" + origin_ + "': " + what);
  }

  static void matrix_dims(const TensorInfo& t, std::int64_t& rows, std::int64_t& cols) {
    if (t.shape.empty()) {
      rows = cols = 1;
      return;
    }
    cols = t.shape.back();
    rows = 1;
    for (std::size_t i = 0; i + 1 < t.shape.size(); ++i) rows *= t.shape[i];
  }

  void parse_header() {
    static_assert(sizeof(float) == 4, "float must be IEEE binary32");
    const std::uint32_t probe = 1;
    std::uint8_t first = 0;
    std::memcpy(&first, &probe, 1);
    if (first != 1) fail("this reader supports little-endian hosts only");
    const std::size_t size = bytes_.size();
    if (size < 8)
      fail("truncated file: " + std::to_string(size) +
           " bytes, need at least 8 for the header length");
    std::uint64_t n = 0;
    for (int i = 7; i >= 0; --i) n = (n << 8) | bytes_[static_cast<std::size_t>(i)];
    if (n > size - 8)
      fail("header length " + std::to_string(n) + " runs past the end of the file (" +
           std::to_string(size) + " bytes, at most " + std::to_string(size - 8) +
           " available after the length field)");
    if (n > kMaxHeaderBytes)
      fail("header length " + std::to_string(n) + " exceeds the limit of " +
           std::to_string(kMaxHeaderBytes) + " bytes");
    if (n < 2) fail("header length " + std::to_string(n) + " is too small for a JSON object");
    data_offset_ = 8 + static_cast<std::size_t>(n);
    const std::uint64_t data_size = size - data_offset_;

    const char* begin = reinterpret_cast<const char*>(bytes_.data() + 8);
    nlohmann::json header;
    try {
      header = nlohmann::json::parse(begin, begin + n);
    } catch (const nlohmann::json::exception& e) {
      fail(std::string("header is not valid JSON: ") + e.what());
    }
    if (!header.is_object()) fail("header is not a JSON object");

    for (auto it = header.begin(); it != header.end(); ++it) {
      const std::string& key = it.key();
      const nlohmann::json& v = it.value();
      if (key == "__metadata__") {
        if (!v.is_object()) fail("__metadata__ is not a JSON object");
        for (auto m = v.begin(); m != v.end(); ++m) {
          if (!m.value().is_string())
            fail("__metadata__ value of '" + m.key() + "' is not a string (" +
                 m.value().type_name() + ")");
          metadata_[m.key()] = m.value().get<std::string>();
        }
        continue;
      }
      tensors_[key] = parse_entry(key, v, data_size);
    }

    // No two tensors may share bytes.
    std::vector<const TensorInfo*> order;
    for (const auto& kv : tensors_)
      if (kv.second.nbytes() > 0) order.push_back(&kv.second);
    std::sort(order.begin(), order.end(),
              [](const TensorInfo* a, const TensorInfo* b) { return a->begin < b->begin; });
    for (std::size_t i = 1; i < order.size(); ++i)
      if (order[i]->begin < order[i - 1]->end)
        fail("tensors '" + order[i - 1]->name + "' [" + std::to_string(order[i - 1]->begin) +
             ", " + std::to_string(order[i - 1]->end) + ") and '" + order[i]->name + "' [" +
             std::to_string(order[i]->begin) + ", " + std::to_string(order[i]->end) +
             ") overlap");
  }

  TensorInfo parse_entry(const std::string& name, const nlohmann::json& v,
                         std::uint64_t data_size) const {
    const std::string where = "tensor '" + name + "': ";
    if (!v.is_object()) fail(where + "entry is not a JSON object");
    TensorInfo t;
    t.name = name;

    const auto dt = v.find("dtype");
    if (dt == v.end() || !dt->is_string()) fail(where + "missing or non-string \"dtype\"");
    t.dtype = dt->get<std::string>();
    const std::size_t esize = dtype_size(t.dtype);
    if (esize == 0) fail(where + "unknown dtype '" + t.dtype + "'");

    const auto sh = v.find("shape");
    if (sh == v.end() || !sh->is_array()) fail(where + "missing or non-array \"shape\"");
    t.numel = 1;
    std::uint64_t nonzero = 1;  // product of the non-zero dims: bounds every row count
    for (const auto& dim : *sh) {
      if (!dim.is_number_integer()) fail(where + "shape has a non-integer dimension");
      if (dim.is_number_unsigned()) {
        const auto u = dim.get<std::uint64_t>();
        if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
          fail(where + "shape dimension " + std::to_string(u) + " is too large");
        t.shape.push_back(static_cast<std::int64_t>(u));
      } else {
        const auto s = dim.get<std::int64_t>();
        if (s < 0) fail(where + "shape has a negative dimension " + std::to_string(s));
        t.shape.push_back(s);
      }
      const auto d = static_cast<std::uint64_t>(t.shape.back());
      if (d != 0) {
        if (nonzero > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()) / d)
          fail(where + "shape " + t.shape_string() + " is too large");
        nonzero *= d;
      }
      if (d != 0 && t.numel > std::numeric_limits<std::uint64_t>::max() / d)
        fail(where + "element count of shape " + t.shape_string() + " overflows");
      t.numel *= d;
    }
    if (t.numel > std::numeric_limits<std::uint64_t>::max() / esize)
      fail(where + "byte size of shape " + t.shape_string() + " overflows");
    const std::uint64_t expected = t.numel * esize;

    const auto off = v.find("data_offsets");
    if (off == v.end() || !off->is_array() || off->size() != 2 || !(*off)[0].is_number_unsigned() ||
        !(*off)[1].is_number_unsigned())
      fail(where + "\"data_offsets\" must be an array of two non-negative integers");
    t.begin = (*off)[0].get<std::uint64_t>();
    t.end = (*off)[1].get<std::uint64_t>();
    if (t.begin > t.end)
      fail(where + "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
           "] begin after end");
    if (t.end > data_size)
      fail(where + "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
           "] lie outside the data section of " + std::to_string(data_size) + " bytes");
    if (t.end - t.begin != expected)
      fail(where + "data_offsets [" + std::to_string(t.begin) + ", " + std::to_string(t.end) +
           "] hold " + std::to_string(t.end - t.begin) + " bytes, but dtype " + t.dtype +
           " x shape " + t.shape_string() + " needs " + std::to_string(expected));
    // Matrices index with std::ptrdiff_t: keep every product representable.
    if (t.numel > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max()))
      fail(where + "too many elements");
    return t;
  }

  std::string origin_;
  std::vector<std::uint8_t> bytes_;
  std::size_t data_offset_ = 0;
  std::map<std::string, TensorInfo> tensors_;
  std::map<std::string, std::string> metadata_;
};

}  // namespace safetensors
}  // namespace moekit_test
