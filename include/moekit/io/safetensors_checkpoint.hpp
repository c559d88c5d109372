// SPDX-License-Identifier: MIT
// SafetensorsCheckpoint: the tensors of a Hugging Face checkpoint directory,
// whether it holds one `model.safetensors` or is sharded with a
// `model.safetensors.index.json`:
//   {"metadata": {"total_size": ...}, "weight_map": {"tensor.name": "model-00001-of-00002.safetensors", ...}}
// It offers the accessors of SafetensorsFile (info, bytes, data<T>, to_matrix,
// to_ids) over the union of the shards, and says which shard holds a tensor.
//
// NOTE: what is checked, and when. The index is parsed and validated when the
// checkpoint is opened: it must be a JSON object with an object "weight_map"
// of string values, each a plain file name in the checkpoint directory (no
// '/', '\\', "." or "..": a weight map cannot point outside the directory),
// and every shard it names must exist. By default every shard is then opened
// (headers are parsed and validated, data stays mapped, not read) and every
// weight_map entry is checked to be in its shard; with `lazy` a shard is opened,
// and its entries checked, the first time one of its tensors is asked for.
// Tensors present in a shard but absent from the weight map are not listed,
// as in transformers. A directory holding both a `model.safetensors` and an
// index is read from `model.safetensors`, as transformers does.
#pragma once

#include <cstddef>
#include <cstdint>
#include <filesystem>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <system_error>
#include <utility>
#include <vector>

#include "safetensors.hpp"

MOEKIT_NAMESPACE_BEGIN

/// How a SafetensorsCheckpoint opens its files.
struct CheckpointOptions {
  /// Map the shards (default) or read them into memory.
  FileAccess access = FileAccess::map;
  /// Open each shard on first use instead of all of them up front.
  bool lazy = false;
};

/// A single-file or sharded safetensors checkpoint.
///
///   moekit::SafetensorsCheckpoint ckpt("path/to/Qwen3-30B-A3B");   // directory
///   moekit::Matrix wg = ckpt.to_matrix("model.layers.12.mlp.gate.weight");
///   std::string shard = ckpt.shard_of("model.layers.12.mlp.gate.weight");
///
/// Move-only; accessors are const and thread-safe (lazy opening is serialised).
class SafetensorsCheckpoint {
 public:
  /// `path` is a checkpoint directory, a `.safetensors` file, or an index `.json` file.
  explicit SafetensorsCheckpoint(const std::string& path, CheckpointOptions options = CheckpointOptions())
      : options_(options), mutex_(std::make_unique<std::mutex>()) {
    namespace fs = std::filesystem;
    std::error_code ec;
    const fs::path p(path);
    if (fs::is_directory(p, ec)) {
      dir_ = p;
      if (fs::is_regular_file(p / "model.safetensors", ec))
        open_single((p / "model.safetensors").string());
      else if (fs::is_regular_file(p / "model.safetensors.index.json", ec))
        open_index((p / "model.safetensors.index.json").string());
      else
        detail::fail("safetensors checkpoint '", path,
                     "': the directory holds neither model.safetensors nor "
                     "model.safetensors.index.json");
    } else if (fs::is_regular_file(p, ec)) {
      dir_ = p.parent_path();
      if (p.extension() == ".json")
        open_index(path);
      else
        open_single(path);
    } else {
      detail::fail("safetensors checkpoint '", path, "': no such file or directory");
    }
  }

  SafetensorsCheckpoint(SafetensorsCheckpoint&&) noexcept = default;
  SafetensorsCheckpoint& operator=(SafetensorsCheckpoint&&) noexcept = default;
  SafetensorsCheckpoint(const SafetensorsCheckpoint&) = delete;
  SafetensorsCheckpoint& operator=(const SafetensorsCheckpoint&) = delete;

  /// The index file of a sharded checkpoint, or the single file.
  const std::string& origin() const noexcept { return origin_; }
  /// The directory holding the files.
  std::string directory() const { return dir_.string(); }
  /// True when the checkpoint came from an index.
  bool is_sharded() const noexcept { return sharded_; }
  /// Shard file names, sorted (one for a single-file checkpoint).
  std::vector<std::string> shard_names() const {
    std::vector<std::string> out;
    for (const Shard& s : shards_) out.push_back(s.file_name);
    return out;
  }

  /// Number of tensors.
  std::size_t size() const noexcept { return where_.size(); }
  /// Tensor names, sorted.
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    out.reserve(where_.size());
    for (const auto& kv : where_) out.push_back(kv.first);
    return out;
  }
  bool contains(const std::string& name) const { return where_.count(name) != 0; }

  /// The index's "metadata" (string values as they are, others as compact JSON, e.g.
  /// "total_size" -> "123456"); for a single file, its `__metadata__`.
  const std::map<std::string, std::string>& metadata() const noexcept { return metadata_; }

  /// File name of the shard holding `name`.
  const std::string& shard_of(const std::string& name) const { return shards_[shard_index(name)].file_name; }
  /// The opened file holding `name` (opening it now when lazy).
  const SafetensorsFile& file_of(const std::string& name) const { return open_shard(shard_index(name)); }

  const TensorInfo& info(const std::string& name) const { return file_of(name).info(name); }
  ByteView bytes(const std::string& name) const { return file_of(name).bytes(name); }
  template <class T>
  TensorData<T> data(const std::string& name) const {
    return file_of(name).template data<T>(name);
  }
  Matrix to_matrix(const std::string& name) const { return file_of(name).to_matrix(name); }
  IdMatrix to_ids(const std::string& name) const { return file_of(name).to_ids(name); }

  /// Opens every shard not opened yet and checks its weight_map entries (the eager check).
  void open_all() const {
    for (std::size_t i = 0; i < shards_.size(); ++i) open_shard(i);
  }

 private:
  struct Shard {
    std::string file_name;
    std::string path;
    std::unique_ptr<SafetensorsFile> file;  // null until opened; guarded by *mutex_
  };

  template <class... Parts>
  [[noreturn]] void fail_here(Parts&&... parts) const {
    detail::fail(sharded_ ? "safetensors checkpoint index '" : "safetensors checkpoint '", origin_,
                 "': ", std::forward<Parts>(parts)...);
  }

  std::size_t shard_index(const std::string& name) const {
    const auto it = where_.find(name);
    if (it == where_.end()) fail_here(detail::missing_tensor_message(name, where_));
    return it->second;
  }

  void open_single(const std::string& path) {
    origin_ = path;
    sharded_ = false;
    Shard s;
    s.file_name = std::filesystem::path(path).filename().string();
    s.path = path;
    s.file = std::make_unique<SafetensorsFile>(path, options_.access);
    for (const auto& kv : s.file->tensors()) where_.emplace(kv.first, 0);
    metadata_ = s.file->metadata();
    shards_.push_back(std::move(s));
  }

  static bool is_plain_file_name(const std::string& s) {
    if (s.empty() || s == "." || s == "..") return false;
    for (const char c : s)
      if (c == '/' || c == '\\' || c == '\0') return false;
    return true;
  }

  void open_index(const std::string& path) {
    origin_ = path;
    sharded_ = true;
    const MappedFile bytes = MappedFile::open(path, FileAccess::read);
    if (bytes.size() > kSafetensorsMaxHeaderBytes)
      fail_here("the index is ", bytes.size(), " bytes, more than the limit of ",
                kSafetensorsMaxHeaderBytes);
    const char* text = static_cast<const char*>(static_cast<const void*>(bytes.data()));
    const nlohmann::json index =
        bytes.size() == 0 ? nlohmann::json()
                          : detail::parse_json_strict(text, text + bytes.size(),
                                                      detail::concat("safetensors checkpoint index '",
                                                                     path, "'"));
    if (!index.is_object()) fail_here("expected a JSON object, found ", detail::json_describe(index));

    const auto meta = index.find("metadata");
    if (meta != index.end() && !meta->is_null()) {
      if (!meta->is_object())
        fail_here("\"metadata\" is ", detail::json_describe(*meta), ", expected an object");
      for (auto it = meta->begin(); it != meta->end(); ++it)
        metadata_.emplace(it.key(), it.value().is_string() ? it.value().get<std::string>()
                                                           : it.value().dump());
    }

    const auto map = index.find("weight_map");
    if (map == index.end()) fail_here("missing \"weight_map\"");
    if (!map->is_object())
      fail_here("\"weight_map\" is ", detail::json_describe(*map),
                ", expected an object of tensor name -> shard file name");
    std::map<std::string, std::size_t> shard_ids;  // file name -> index in shards_
    for (auto it = map->begin(); it != map->end(); ++it) {
      if (!it.value().is_string())
        fail_here("weight_map entry '", it.key(), "' is ", detail::json_describe(it.value()),
                  ", expected a shard file name");
      const std::string& file_name = it.value().get_ref<const std::string&>();
      if (!is_plain_file_name(file_name))
        fail_here("weight_map entry '", it.key(), "' names shard '", file_name,
                  "', which is not a plain file name in the checkpoint directory "
                  "(no '/', '\\', '.' or '..' allowed)");
      shard_ids.emplace(file_name, 0);
    }
    std::size_t i = 0;
    for (auto& kv : shard_ids) {
      kv.second = i++;
      Shard s;
      s.file_name = kv.first;
      s.path = (dir_ / kv.first).string();
      shards_.push_back(std::move(s));
    }
    for (auto it = map->begin(); it != map->end(); ++it)
      where_.emplace(it.key(), shard_ids.at(it.value().get_ref<const std::string&>()));

    for (const Shard& s : shards_) {
      std::error_code ec;
      if (!std::filesystem::is_regular_file(s.path, ec)) {
        std::string example;
        std::size_t count = 0;
        for (const auto& kv : where_)
          if (shards_[kv.second].file_name == s.file_name) {
            if (count == 0) example = kv.first;
            ++count;
          }
        fail_here("shard '", s.file_name, "' (listed for '", example, "'",
                  count > 1 ? detail::concat(" and ", count - 1, " more tensors") : std::string(),
                  ") is missing: no file '", s.path, "'");
      }
    }
    if (!options_.lazy) open_all();
  }

  const SafetensorsFile& open_shard(std::size_t i) const {
    std::lock_guard<std::mutex> lock(*mutex_);
    Shard& s = shards_[i];
    if (!s.file) {
      auto file = std::make_unique<SafetensorsFile>(s.path, options_.access);
      for (const auto& kv : where_) {
        if (kv.second != i || file->contains(kv.first)) continue;
        fail_here("weight_map puts tensor '", kv.first, "' in shard '", s.file_name,
                  "', which has ", detail::missing_tensor_message(kv.first, file->tensors()));
      }
      s.file = std::move(file);
    }
    return *s.file;
  }

  CheckpointOptions options_;
  std::unique_ptr<std::mutex> mutex_;
  std::string origin_;
  std::filesystem::path dir_;
  bool sharded_ = false;
  mutable std::vector<Shard> shards_;
  std::map<std::string, std::size_t> where_;  // tensor name -> index in shards_
  std::map<std::string, std::string> metadata_;
};

MOEKIT_NAMESPACE_END
