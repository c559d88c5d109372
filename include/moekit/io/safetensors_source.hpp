// SPDX-License-Identifier: MIT
// SafetensorsTensorSource: a TensorSource (see tensor_source.hpp) that reads
// a safetensors checkpoint (a directory, an index or one file), so presets
// build layers straight from real checkpoints:
//   moekit::SafetensorsTensorSource ckpt("path/to/Mixtral-8x7B");
//   moekit::PrefixedTensorSource layer(ckpt, "model.layers.12.block_sparse_moe.");
// Every dtype converts to f32 (SafetensorsFile::to_matrix), leading dimensions
// flattened; a missing name throws moekit::Error listing the nearest names.
#pragma once

#include <cstdint>
#include <string>
#include <utility>
#include <vector>

#include "safetensors_checkpoint.hpp"
#include "tensor_source.hpp"

MOEKIT_NAMESPACE_BEGIN

/// A TensorSource that owns a SafetensorsCheckpoint.
class SafetensorsTensorSource : public TensorSource {
 public:
  /// Opens `path` (directory, index .json or .safetensors file) as a SafetensorsCheckpoint.
  explicit SafetensorsTensorSource(const std::string& path,
                                   CheckpointOptions options = CheckpointOptions())
      : checkpoint_(path, options) {}
  explicit SafetensorsTensorSource(SafetensorsCheckpoint checkpoint)
      : checkpoint_(std::move(checkpoint)) {}

  bool contains(const std::string& name) const override { return checkpoint_.contains(name); }
  std::vector<std::int64_t> shape(const std::string& name) const override {
    return checkpoint_.info(name).shape;
  }
  Matrix matrix(const std::string& name) const override { return checkpoint_.to_matrix(name); }
  using TensorSource::matrix;

  /// The checkpoint, for the accessors a TensorSource does not have (dtype, bytes, ids).
  const SafetensorsCheckpoint& checkpoint() const noexcept { return checkpoint_; }

 private:
  SafetensorsCheckpoint checkpoint_;
};

MOEKIT_NAMESPACE_END
