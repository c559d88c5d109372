// SPDX-License-Identifier: MIT
// PackedLinear: y = x · Wᵀ through the dispatched kernels, with W packed once.
//
// Used for router logits. Unlike a general GEMM whose blocking depends on the
// matrix sizes, each output row is a fixed-order sum over its own input row,
// so a token's logits do not depend on the other tokens of the batch.
#pragma once

#include "../core/aligned_buffer.hpp"
#include "../core/tensor.hpp"
#include "dispatch.hpp"
#include "packing.hpp"

MOEKIT_NAMESPACE_BEGIN
namespace kernels {

class PackedLinear {
 public:
  PackedLinear() = default;
  /// w: [N, K] (checkpoint [out, in]).
  explicit PackedLinear(const Matrix& w) : N_(w.rows()), K_(w.cols()) {
    packed_.resize(static_cast<std::size_t>(packed_size(N_, K_)));
    if (N_ && K_) pack_panels(w.data(), N_, K_, packed_.data());
  }

  Index out_features() const noexcept { return N_; }
  Index in_features() const noexcept { return K_; }

  /// out [T, N] = x [T, K] · Wᵀ. x may have any row stride.
  void apply(const MatrixRef& x, Matrix& out) const {
    out.resize(x.rows(), N_);
    if (x.rows() == 0 || N_ == 0) return;
    active().matmul_f32(x.data(), x.outerStride(), x.rows(), K_, packed_.data(), N_, 0, N_, out.data(), N_);
  }

 private:
  Index N_ = 0, K_ = 0;
  AlignedBuffer<float> packed_;  // [panels(N)][K][16]
};

}  // namespace kernels
MOEKIT_NAMESPACE_END
