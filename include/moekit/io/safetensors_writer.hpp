// SPDX-License-Identifier: MIT
// SafetensorsWriter: builds a standard safetensors file from matrices, id
// matrices and raw typed buffers, plus `__metadata__` strings; and
// write_sharded_checkpoint(), which writes a Hugging Face style sharded
// checkpoint (model-0000i-of-0000N.safetensors + model.safetensors.index.json).
//
// The layout written is the canonical one: the JSON header is padded with
// spaces to a multiple of 8 bytes (so the data section starts 8-byte aligned),
// tensors are stored sorted by name, and their data_offsets are contiguous from
// 0 with no gaps. The writer keeps a copy of every tensor's bytes until it is
// destroyed; it is meant for tests, converted weights and small checkpoints.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <fstream>
#include <filesystem>
#include <limits>
#include <map>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "safetensors.hpp"

MOEKIT_NAMESPACE_BEGIN

/// Collects tensors and metadata, then writes them as one safetensors file.
///
///   moekit::SafetensorsWriter w;
///   w.add("gate.weight", router_weight);                                  // F32 [E, d]
///   w.add("experts.w1", w1, moekit::SafetensorsDtype::bf16, {E, f, d});   // [E*f, d] stored as BF16 [E, f, d]
///   w.add("topk_ids", ids);                                               // I32
///   w.set_metadata("family", "mixtral");
///   w.write("model.safetensors");
class SafetensorsWriter {
 public:
  /// Adds a float matrix stored as `dtype` (F32, F64, F16 or BF16; F16 / BF16 round to nearest
  /// even). `shape` defaults to [rows, cols]; any shape with rows*cols elements may be given
  /// (e.g. [E, f, d] for a matrix [E*f, d], or [n] for a [1, n] row).
  SafetensorsWriter& add(const std::string& name, const MatrixRef& m,
                         SafetensorsDtype dtype = SafetensorsDtype::f32,
                         std::vector<std::int64_t> shape = {}) {
    if (dtype != SafetensorsDtype::f32 && dtype != SafetensorsDtype::f64 &&
        dtype != SafetensorsDtype::bf16 && dtype != SafetensorsDtype::f16)
      fail_tensor(name, "a float matrix can be stored as F32, F64, F16 or BF16, not ",
                  safetensors_dtype_name(dtype));
    if (shape.empty()) shape = {m.rows(), m.cols()};
    const Index n = check_shape(name, shape);
    if (n != m.size())
      fail_tensor(name, "shape ", shape_text(shape), " holds ", n, " elements, the matrix ",
                  detail::shape_string(m.rows(), m.cols()), " holds ", m.size());
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(n) * safetensors_dtype_size(dtype));
    std::size_t i = 0;
    for (Index r = 0; r < m.rows(); ++r)
      for (Index c = 0; c < m.cols(); ++c, ++i) {
        const float v = m(r, c);
        if (dtype == SafetensorsDtype::f32)
          store(bytes, i, v);
        else if (dtype == SafetensorsDtype::f64)
          store(bytes, i, static_cast<double>(v));
        else if (dtype == SafetensorsDtype::bf16)
          store(bytes, i, float_to_bf16_bits(v));
        else
          store(bytes, i, float_to_f16_bits(v));
      }
    return insert(name, dtype, std::move(shape), std::move(bytes));
  }

  /// Adds an int32 matrix as I32; `shape` defaults to [rows, cols].
  SafetensorsWriter& add(const std::string& name, const Eigen::Ref<const IdMatrix>& ids,
                         std::vector<std::int64_t> shape = {}) {
    if (shape.empty()) shape = {ids.rows(), ids.cols()};
    const Index n = check_shape(name, shape);
    if (n != ids.size())
      fail_tensor(name, "shape ", shape_text(shape), " holds ", n, " elements, the id matrix ",
                  detail::shape_string(ids.rows(), ids.cols()), " holds ", ids.size());
    std::vector<std::uint8_t> bytes(static_cast<std::size_t>(n) * sizeof(std::int32_t));
    std::size_t i = 0;
    for (Index r = 0; r < ids.rows(); ++r)
      for (Index c = 0; c < ids.cols(); ++c, ++i) store(bytes, i, ids(r, c));
    return insert(name, SafetensorsDtype::i32, std::move(shape), std::move(bytes));
  }

  /// Adds product(shape) elements of type T from `data` (row-major); the dtype is
  /// safetensors_dtype_of<T> (float -> F32, bf16 -> BF16, std::int64_t -> I64, ...).
  template <class T>
  SafetensorsWriter& add(const std::string& name, const T* data, std::vector<std::int64_t> shape) {
    const Index n = check_shape(name, shape);
    return add_raw(name, safetensors_dtype_of<T>::value, std::move(shape), data,
                   static_cast<std::size_t>(n) * sizeof(T));
  }

  /// Adds a vector of T with the given shape (default [v.size()]).
  template <class T>
  SafetensorsWriter& add(const std::string& name, const std::vector<T>& v,
                         std::vector<std::int64_t> shape = {}) {
    if (shape.empty()) shape = {static_cast<std::int64_t>(v.size())};
    const Index n = check_shape(name, shape);
    if (static_cast<std::size_t>(n) != v.size())
      fail_tensor(name, "shape ", shape_text(shape), " holds ", n, " elements, the vector holds ",
                  v.size());
    return add(name, v.data(), std::move(shape));
  }

  /// Adds `nbytes` raw little-endian bytes of any dtype; nbytes must equal
  /// product(shape) * safetensors_dtype_size(dtype).
  SafetensorsWriter& add_raw(const std::string& name, SafetensorsDtype dtype,
                             std::vector<std::int64_t> shape, const void* bytes, std::size_t nbytes) {
    const Index n = check_shape(name, shape);
    const std::size_t esize = safetensors_dtype_size(dtype);
    if (static_cast<std::uint64_t>(n) > std::numeric_limits<std::uint64_t>::max() / esize ||
        static_cast<std::uint64_t>(n) * esize != nbytes)
      fail_tensor(name, "dtype ", safetensors_dtype_name(dtype), " x shape ", shape_text(shape),
                  " needs ", static_cast<std::uint64_t>(n), " x ", esize, " bytes, got ", nbytes);
    const auto* p = static_cast<const std::uint8_t*>(bytes);
    return insert(name, dtype, std::move(shape),
                  nbytes ? std::vector<std::uint8_t>(p, p + nbytes) : std::vector<std::uint8_t>());
  }

  /// Sets a `__metadata__` entry (replacing any earlier value of the key).
  SafetensorsWriter& set_metadata(const std::string& key, const std::string& value) {
    metadata_[key] = value;
    return *this;
  }
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }

  std::size_t size() const noexcept { return tensors_.size(); }
  bool contains(const std::string& name) const { return tensors_.count(name) != 0; }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& kv : tensors_) out.push_back(kv.first);
    return out;
  }
  /// Total bytes of tensor data.
  std::size_t data_size() const noexcept {
    std::size_t total = 0;
    for (const auto& kv : tensors_) total += kv.second.bytes.size();
    return total;
  }

  /// A writer holding only the named tensors (and all the metadata). Unknown names throw.
  SafetensorsWriter select(const std::vector<std::string>& names) const {
    SafetensorsWriter out;
    out.metadata_ = metadata_;
    for (const std::string& name : names) {
      const auto it = tensors_.find(name);
      if (it == tensors_.end())
        detail::fail("safetensors writer: ", detail::missing_tensor_message(name, tensors_));
      out.tensors_.insert(*it);
    }
    return out;
  }

  /// The JSON header as written: compact, padded with spaces to a multiple of 8 bytes.
  std::string header() const {
    nlohmann::json h = nlohmann::json::object();
    if (!metadata_.empty()) {
      nlohmann::json meta = nlohmann::json::object();
      for (const auto& kv : metadata_) meta[kv.first] = kv.second;
      h["__metadata__"] = std::move(meta);
    }
    std::size_t offset = 0;
    for (const auto& kv : tensors_) {
      const Entry& e = kv.second;
      nlohmann::json t = nlohmann::json::object();
      t["dtype"] = safetensors_dtype_name(e.dtype);
      t["shape"] = e.shape;
      t["data_offsets"] = nlohmann::json::array({offset, offset + e.bytes.size()});
      h[kv.first] = std::move(t);
      offset += e.bytes.size();
    }
    std::string text;
    try {
      text = h.dump();
    } catch (const nlohmann::json::exception& e) {
      detail::fail("safetensors writer: cannot encode the header (tensor names and metadata must be "
                   "valid UTF-8): ", e.what());
    }
    text.append((8 - text.size() % 8) % 8, ' ');
    return text;
  }

  /// The whole file as bytes.
  std::vector<std::uint8_t> to_bytes() const {
    const std::string h = header();
    std::vector<std::uint8_t> out;
    out.reserve(8 + h.size() + data_size());
    append_length(out, h.size());
    out.insert(out.end(), h.begin(), h.end());
    for (const auto& kv : tensors_) out.insert(out.end(), kv.second.bytes.begin(), kv.second.bytes.end());
    return out;
  }

  /// Writes the file at `path` (replacing it). Throws moekit::Error naming the path on failure.
  void write(const std::string& path) const {
    const std::string h = header();
    std::vector<std::uint8_t> length;
    append_length(length, h.size());
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    if (!out) detail::fail("safetensors writer: cannot create '", path, "'");
    out.write(reinterpret_cast<const char*>(length.data()), 8);
    out.write(h.data(), static_cast<std::streamsize>(h.size()));
    for (const auto& kv : tensors_)
      if (!kv.second.bytes.empty())
        out.write(reinterpret_cast<const char*>(kv.second.bytes.data()),
                  static_cast<std::streamsize>(kv.second.bytes.size()));
    out.close();
    if (!out) detail::fail("safetensors writer: writing '", path, "' failed");
  }

 private:
  struct Entry {
    SafetensorsDtype dtype = SafetensorsDtype::f32;
    std::vector<std::int64_t> shape;
    std::vector<std::uint8_t> bytes;
  };

  template <class... Parts>
  [[noreturn]] static void fail_tensor(const std::string& name, Parts&&... parts) {
    detail::fail("safetensors writer: tensor '", name, "': ", std::forward<Parts>(parts)...);
  }

  static std::string shape_text(const std::vector<std::int64_t>& shape) {
    TensorInfo t;
    t.shape = shape;
    return t.shape_string();
  }

  /// Checks the shape (non-negative, element count fits an Index); returns the element count.
  static Index check_shape(const std::string& name, const std::vector<std::int64_t>& shape) {
    const auto index_max = static_cast<std::uint64_t>(std::numeric_limits<Index>::max());
    std::uint64_t nonzero = 1;
    bool has_zero = false;
    for (const std::int64_t s : shape) {
      if (s < 0) fail_tensor(name, "shape ", shape_text(shape), " has a negative dimension");
      const auto d = static_cast<std::uint64_t>(s);
      if (d == 0) {
        has_zero = true;
        continue;
      }
      if (nonzero > index_max / d)
        fail_tensor(name, "the element count of shape ", shape_text(shape), " overflows");
      nonzero *= d;
    }
    return has_zero ? 0 : static_cast<Index>(nonzero);
  }

  template <class T>
  static void store(std::vector<std::uint8_t>& bytes, std::size_t i, T v) noexcept {
    std::memcpy(bytes.data() + i * sizeof(T), &v, sizeof(T));
  }

  static void append_length(std::vector<std::uint8_t>& out, std::size_t n) {
    auto v = static_cast<std::uint64_t>(n);
    for (int i = 0; i < 8; ++i, v >>= 8) out.push_back(static_cast<std::uint8_t>(v & 0xffu));
  }

  SafetensorsWriter& insert(const std::string& name, SafetensorsDtype dtype,
                            std::vector<std::int64_t> shape, std::vector<std::uint8_t> bytes) {
    if (name == "__metadata__")
      fail_tensor(name, "the name is reserved for the metadata of the header");
    if (tensors_.count(name) != 0) fail_tensor(name, "added twice");
    Entry e;
    e.dtype = dtype;
    e.shape = std::move(shape);
    e.bytes = std::move(bytes);
    tensors_.emplace(name, std::move(e));
    return *this;
  }

  std::map<std::string, Entry> tensors_;
  std::map<std::string, std::string> metadata_;
};

/// Writes `tensors` as a sharded checkpoint in `dir` (created if missing):
/// `num_shards` files model-0000i-of-0000N.safetensors, each holding a contiguous run of
/// the tensors in name order (as even in count as possible) and all of the writer's
/// metadata, plus model.safetensors.index.json:
///   {"metadata": {"total_size": <bytes of tensor data>, <the writer's metadata>...},
///    "weight_map": {"<tensor>": "<shard file name>", ...}}
/// Returns the shard file names. num_shards must be in [1, number of tensors].
inline std::vector<std::string> write_sharded_checkpoint(const std::string& dir,
                                                         const SafetensorsWriter& tensors,
                                                         std::size_t num_shards) {
  const std::vector<std::string> names = tensors.names();
  if (num_shards == 0 || num_shards > names.size())
    detail::fail("write_sharded_checkpoint: num_shards: expected a value in [1, ", names.size(),
                 "] (the number of tensors), got ", num_shards);
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  if (ec) detail::fail("write_sharded_checkpoint: cannot create directory '", dir, "': ", ec.message());

  nlohmann::json weight_map = nlohmann::json::object();
  std::vector<std::string> shard_names;
  std::size_t first = 0;
  for (std::size_t s = 0; s < num_shards; ++s) {
    const std::size_t last = (s + 1) * names.size() / num_shards;
    char file_name[64];
    std::snprintf(file_name, sizeof file_name, "model-%05zu-of-%05zu.safetensors", s + 1, num_shards);
    const std::vector<std::string> part(names.begin() + static_cast<std::ptrdiff_t>(first),
                                        names.begin() + static_cast<std::ptrdiff_t>(last));
    tensors.select(part).write((std::filesystem::path(dir) / file_name).string());
    for (const std::string& name : part) weight_map[name] = file_name;
    shard_names.emplace_back(file_name);
    first = last;
  }
  nlohmann::json meta = nlohmann::json::object();
  meta["total_size"] = tensors.data_size();
  for (const auto& kv : tensors.metadata()) meta[kv.first] = kv.second;
  nlohmann::json index = nlohmann::json::object();
  index["metadata"] = std::move(meta);
  index["weight_map"] = std::move(weight_map);

  const std::string index_path =
      (std::filesystem::path(dir) / "model.safetensors.index.json").string();
  std::string text;
  try {
    text = index.dump(2) + "\n";
  } catch (const nlohmann::json::exception& e) {
    detail::fail("write_sharded_checkpoint: cannot encode the index: ", e.what());
  }
  std::ofstream out(index_path, std::ios::binary | std::ios::trunc);
  if (!out) detail::fail("write_sharded_checkpoint: cannot create '", index_path, "'");
  out.write(text.data(), static_cast<std::streamsize>(text.size()));
  out.close();
  if (!out) detail::fail("write_sharded_checkpoint: writing '", index_path, "' failed");
  return shard_names;
}

MOEKIT_NAMESPACE_END
