// SPDX-License-Identifier: MIT
// LinearGate: the router matrix of the batch-level and special routers
// (expert choice, sparsemixer): weight [E, d], checked once, packed for the
// kernels, logits = x · Wᵀ.
#pragma once

#include <string>
#include <utility>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../kernels/packed_linear.hpp"

MOEKIT_NAMESPACE_BEGIN

class LinearGate {
 public:
  LinearGate() = default;
  /// `what` names the router in error messages ("expert-choice router weight").
  LinearGate(Matrix weight, const char* what) : weight_(std::move(weight)) {
    detail::require(weight_.rows() >= 1 && weight_.cols() >= 1, what, ": expected shape [E >= 1, d >= 1], got ",
                    detail::shape_string(weight_.rows(), weight_.cols()));
    detail::require_finite(what, weight_);
    linear_ = kernels::PackedLinear(weight_);
  }

  Index num_experts() const noexcept { return weight_.rows(); }
  Index hidden_size() const noexcept { return weight_.cols(); }
  const Matrix& weight() const noexcept { return weight_; }

  /// out [T, E] = x [T, d] · Wᵀ; throws on a wrong hidden size or a non-finite logit.
  void logits(const MatrixRef& x, Matrix& out) const {
    detail::require_size("router input columns (hidden size)", x.cols(), hidden_size());
    linear_.apply(x, out);
    detail::require_finite("router logits", out);
  }

 private:
  Matrix weight_;  // [E, d]
  kernels::PackedLinear linear_;
};

MOEKIT_NAMESPACE_END
