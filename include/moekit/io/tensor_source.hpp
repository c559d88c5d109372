// SPDX-License-Identifier: MIT
// TensorSource: where a preset reads named weights from.
//
// A source maps checkpoint tensor names to float32 matrices. Tensors of rank
// > 2 come back with their leading dimensions flattened ([E, f, d] -> [E·f, d])
// and 1-D tensors as one row ([n] -> [1, n]). The safetensors reader and the
// checkpoint loader provide sources; MapTensorSource holds matrices in memory
// (tests, weights made by hand); PrefixedTensorSource prepends a prefix such as
// "model.layers.12.mlp." so that presets can use names relative to the block.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"

MOEKIT_NAMESPACE_BEGIN

class TensorSource {
 public:
  virtual ~TensorSource() = default;
  virtual bool contains(const std::string& name) const = 0;
  /// The tensor's shape as stored (before flattening).
  virtual std::vector<std::int64_t> shape(const std::string& name) const = 0;
  /// The tensor converted to f32, leading dimensions flattened.
  virtual Matrix matrix(const std::string& name) const = 0;

  /// matrix(name) checked against an expected flattened shape.
  Matrix matrix(const std::string& name, Index rows, Index cols) const {
    Matrix m = matrix(name);
    detail::require_shape(name.c_str(), m.rows(), m.cols(), rows, cols);
    return m;
  }
  /// A 1-D tensor (or [1, n]) as a vector, checked against n.
  Vector vector(const std::string& name, Index n) const {
    const Matrix m = matrix(name);
    detail::require(m.size() == n, name, ": expected ", n, " values, got shape ",
                    detail::shape_string(m.rows(), m.cols()));
    return Eigen::Map<const Vector>(m.data(), n);
  }
};

/// Tensors held in memory by name.
class MapTensorSource : public TensorSource {
 public:
  MapTensorSource& add(const std::string& name, Matrix m, std::vector<std::int64_t> shape = {}) {
    if (shape.empty()) shape = {m.rows(), m.cols()};
    tensors_[name] = {std::move(m), std::move(shape)};
    return *this;
  }
  bool contains(const std::string& name) const override { return tensors_.count(name) != 0; }
  std::vector<std::int64_t> shape(const std::string& name) const override { return get(name).second; }
  Matrix matrix(const std::string& name) const override { return get(name).first; }
  using TensorSource::matrix;

 private:
  const std::pair<Matrix, std::vector<std::int64_t>>& get(const std::string& name) const {
    const auto it = tensors_.find(name);
    if (it == tensors_.end()) detail::fail("tensor source: no tensor named \"", name, "\"");
    return it->second;
  }
  std::map<std::string, std::pair<Matrix, std::vector<std::int64_t>>> tensors_;
};

/// Another source seen through a name prefix (not owned: it must outlive this).
class PrefixedTensorSource : public TensorSource {
 public:
  PrefixedTensorSource(const TensorSource& base, std::string prefix) : base_(base), prefix_(std::move(prefix)) {}
  bool contains(const std::string& name) const override { return base_.contains(prefix_ + name); }
  std::vector<std::int64_t> shape(const std::string& name) const override { return base_.shape(prefix_ + name); }
  Matrix matrix(const std::string& name) const override { return base_.matrix(prefix_ + name); }
  using TensorSource::matrix;

 private:
  const TensorSource& base_;
  std::string prefix_;
};

MOEKIT_NAMESPACE_END
