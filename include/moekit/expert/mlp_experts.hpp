// SPDX-License-Identifier: MIT
// MlpExperts<Act>: a bank of E plain (non-gated) two-layer experts.
//
//   expert_e(x) = s · (W_out,e · act(W_in,e · x + b_in,e) + b_out,e)
//
// Switch Transformers (wi / wo, ReLU, no biases), NLLB-MoE (fc1 / fc2, ReLU,
// biases, eval output scale 1 − moe_token_dropout) and ReLU-expert research
// models (MoE-X). W_in is [E, f, d] and W_out [E, d, f], stacked row-major,
// plus a packed copy for the SIMD kernels (see gated_experts.hpp).
#pragma once

#include <cmath>
#include <utility>

#include "../core/aligned_buffer.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../kernels/dispatch.hpp"
#include "../kernels/packing.hpp"
#include "activation.hpp"
#include "epilogue.hpp"

MOEKIT_NAMESPACE_BEGIN

template <class Act>
class MlpExperts {
 public:
  using ActivationPolicy = Act;

  MlpExperts() = default;

  /// From stacked weights: w_in [E·f, d], w_out [E·d, f].
  MlpExperts(Index num_experts, Matrix w_in, Matrix w_out, Act act = Act())
      : act_(act), in_(std::move(w_in)), out_(std::move(w_out)) {
    detail::require(num_experts >= 1, "experts: expected num_experts >= 1, got ", num_experts);
    E_ = num_experts;
    d_ = in_.cols();
    detail::require(d_ >= 1, "expert input weight: expected hidden size >= 1, got ", d_);
    detail::require(in_.rows() >= E_ && in_.rows() % E_ == 0,
                    "expert input weight: expected [E * f, d] rows divisible by E = ", E_,
                    ", got shape ", detail::shape_string(in_.rows(), in_.cols()));
    f_ = in_.rows() / E_;
    detail::require_shape("expert output weight", out_.rows(), out_.cols(), E_ * d_, f_);
    detail::require_finite("expert input weight", in_);
    detail::require_finite("expert output weight", out_);
    pack();
  }

  /// Optional biases: in [E, f], out [E, d]; empty means none.
  MlpExperts& set_biases(Matrix in_bias, Matrix out_bias) {
    if (in_bias.size()) detail::require_shape("expert input bias", in_bias.rows(), in_bias.cols(), E_, f_);
    if (out_bias.size()) detail::require_shape("expert output bias", out_bias.rows(), out_bias.cols(), E_, d_);
    detail::require_finite("expert input bias", in_bias);
    detail::require_finite("expert output bias", out_bias);
    in_bias_ = std::move(in_bias);
    out_bias_ = std::move(out_bias);
    return *this;
  }
  /// Multiplies every expert output (after the output bias): NLLB eval uses 1 − moe_token_dropout.
  MlpExperts& set_output_scale(float s) {
    detail::require(std::isfinite(s), "expert output scale: expected a finite value, got ", s);
    output_scale_ = s;
    return *this;
  }

  Index num_experts() const noexcept { return E_; }
  Index hidden_size() const noexcept { return d_; }
  Index ffn_size() const noexcept { return f_; }
  const Act& activation() const noexcept { return act_; }
  float output_scale() const noexcept { return output_scale_; }

  /// Per-expert views: w_in(e) [f, d], w_out(e) [d, f].
  ConstMatrixMap w_in(Index e) const { return ConstMatrixMap(in_.data() + checked(e) * f_ * d_, f_, d_); }
  ConstMatrixMap w_out(Index e) const { return ConstMatrixMap(out_.data() + checked(e) * d_ * f_, d_, f_); }
  /// Writable views mark the packed copy stale; the block repacks before its next forward.
  MatrixMap w_in(Index e) { packed_ = false; return MatrixMap(in_.data() + checked(e) * f_ * d_, f_, d_); }
  MatrixMap w_out(Index e) { packed_ = false; return MatrixMap(out_.data() + checked(e) * d_ * f_, d_, f_); }
  const Matrix& in_weights() const noexcept { return in_; }
  const Matrix& out_weights() const noexcept { return out_; }
  const Matrix& in_bias() const noexcept { return in_bias_; }
  const Matrix& out_bias() const noexcept { return out_bias_; }

  Index scratch_per_row() const noexcept { return f_; }
  Index hidden_width() const noexcept { return f_; }
  bool packed() const noexcept { return packed_; }
  void prepare() {
    if (!packed_) pack();
  }

  /// Phase 1: hidden columns [c0, c1) of H = act(x·W_inᵀ + b) into scratch [n, f].
  void forward_hidden(Index e, const float* x, Index n, float* scratch, Index c0, Index c1) const {
    if (n == 0 || c0 >= c1) return;
    if (packed_) {
      kernels::active().matmul_f32(x, d_, n, d_, packed_in_.data() + e * in_stride_, f_, c0, c1, scratch, f_);
    } else {
      Eigen::Map<Matrix, 0, Eigen::OuterStride<>> H(scratch + c0, n, c1 - c0, Eigen::OuterStride<>(f_));
      H.noalias() = ConstMatrixMap(x, n, d_) * in_.middleRows(e * f_ + c0, c1 - c0).transpose();
    }
    for (Index r = 0; r < n; ++r)
      for (Index c = c0; c < c1; ++c) {
        float v = scratch[r * f_ + c];
        if (in_bias_.size()) v += in_bias_(e, c);
        scratch[r * f_ + c] = act_(v);
      }
  }

  /// Phase 2: output columns [c0, c1) of out [n, d] = H·W_outᵀ (+ b) (· s).
  void forward_output(Index e, const float* scratch, Index n, float* out, Index c0, Index c1) const {
    if (n == 0 || c0 >= c1) return;
    if (packed_) {
      kernels::active().matmul_f32(scratch, f_, n, f_, packed_out_.data() + e * out_stride_, d_, c0, c1, out, d_);
    } else {
      Eigen::Map<Matrix, 0, Eigen::OuterStride<>> Y(out + c0, n, c1 - c0, Eigen::OuterStride<>(d_));
      Y.noalias() = ConstMatrixMap(scratch, n, f_) * out_.middleRows(e * d_ + c0, c1 - c0).transpose();
    }
    detail::apply_output_epilogue(out, n, d_, c0, c1, out_bias_, e, output_scale_);
  }

  /// Runs expert e on n rows: x [n, d] -> out [n, d]; scratch [n, f].
  void forward(Index e, const float* x, Index n, float* out, float* scratch) const {
    forward_hidden(e, x, n, scratch, 0, f_);
    forward_output(e, scratch, n, out, 0, d_);
  }

  Matrix forward(Index e, const MatrixRef& x) const {
    checked(e);
    detail::require_size("expert input columns (hidden size)", x.cols(), d_);
    const Matrix xc = x;
    Matrix out(x.rows(), d_), scratch(x.rows(), f_);
    forward(e, xc.data(), x.rows(), out.data(), scratch.data());
    return out;
  }

 private:
  Index checked(Index e) const {
    detail::require(e >= 0 && e < E_, "expert id: expected [0, ", E_, "), got ", e);
    return e;
  }

  void pack() {
    in_stride_ = kernels::packed_size(f_, d_);
    out_stride_ = kernels::packed_size(d_, f_);
    packed_in_.resize(static_cast<std::size_t>(E_ * in_stride_));
    packed_out_.resize(static_cast<std::size_t>(E_ * out_stride_));
    for (Index e = 0; e < E_; ++e) {
      kernels::pack_panels(in_.data() + e * f_ * d_, f_, d_, packed_in_.data() + e * in_stride_);
      kernels::pack_panels(out_.data() + e * d_ * f_, d_, f_, packed_out_.data() + e * out_stride_);
    }
    packed_ = true;
  }

  Index E_ = 0, d_ = 0, f_ = 0;
  Act act_;
  AlignedBuffer<float> packed_in_, packed_out_;  // [E][panels(f)][d][16], [E][panels(d)][f][16]
  Index in_stride_ = 0, out_stride_ = 0;
  bool packed_ = false;
  Matrix in_, out_;           // [E·f, d], [E·d, f]
  Matrix in_bias_, out_bias_; // [E, f], [E, d] or empty
  float output_scale_ = 1.0f;
};

using ReluExperts = MlpExperts<ReluActivation>;
using GeluExperts = MlpExperts<GeluActivation>;

MOEKIT_NAMESPACE_END
