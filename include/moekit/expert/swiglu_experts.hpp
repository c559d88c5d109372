// SPDX-License-Identifier: MIT
// SwiGluExperts: a bank of E SwiGLU feed-forward experts in checkpoint layout.
//
//   expert_e(x) = W_down,e · (silu(W_gate,e · x) ⊙ (W_up,e · x))
//
// Weights are stacked as the checkpoints store them: gate and up [E, f, d],
// down [E, d, f] (each held row-major as [E·f, d] and [E·d, f]). Mixtral calls
// them w1 (gate), w3 (up), w2 (down); Qwen/OLMoE/DeepSeek gate_proj, up_proj,
// down_proj. The fused v5 `gate_up_proj` [E, 2f, d] splits into gate (rows
// [0, f)) and up (rows [f, 2f)) of each expert: see from_gate_up().
#pragma once

#include <utility>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "activation.hpp"

MOEKIT_NAMESPACE_BEGIN

class SwiGluExperts {
 public:
  SwiGluExperts() = default;

  /// E experts of hidden size d and FFN size f, all weights zero (fill them
  /// through gate(e), up(e), down(e)).
  SwiGluExperts(Index num_experts, Index hidden, Index ffn) { init(num_experts, hidden, ffn); }

  /// From stacked weights: gate and up [E·f, d], down [E·d, f].
  /// Throws moekit::Error on mismatched shapes or non-finite weights.
  SwiGluExperts(Index num_experts, Matrix gate, Matrix up, Matrix down)
      : gate_(std::move(gate)), up_(std::move(up)), down_(std::move(down)) {
    detail::require(num_experts >= 1, "experts: expected num_experts >= 1, got ", num_experts);
    E_ = num_experts;
    d_ = gate_.cols();
    detail::require(d_ >= 1, "expert gate weight: expected hidden size >= 1, got ", d_);
    detail::require(gate_.rows() >= E_ && gate_.rows() % E_ == 0,
                    "expert gate weight: expected [E * f, d] rows divisible by E = ", E_,
                    ", got shape ", detail::shape_string(gate_.rows(), gate_.cols()));
    f_ = gate_.rows() / E_;
    detail::require_shape("expert up weight", up_.rows(), up_.cols(), E_ * f_, d_);
    detail::require_shape("expert down weight", down_.rows(), down_.cols(), E_ * d_, f_);
    detail::require_finite("expert gate weight", gate_);
    detail::require_finite("expert up weight", up_);
    detail::require_finite("expert down weight", down_);
  }

  /// From raw stacked buffers (copied): gate, up [E, f, d]; down [E, d, f].
  static SwiGluExperts from_stacked(Index E, Index d, Index f, const float* gate, const float* up,
                                    const float* down) {
    detail::require(E >= 1 && d >= 1 && f >= 1, "experts: expected E, d, f >= 1, got E = ", E,
                    ", d = ", d, ", f = ", f);
    return SwiGluExperts(E, ConstMatrixMap(gate, E * f, d), ConstMatrixMap(up, E * f, d),
                         ConstMatrixMap(down, E * d, f));
  }

  /// From a fused gate_up [E, 2f, d] (gate rows first, then up rows, per expert:
  /// the transformers v5 layout) and down [E, d, f].
  static SwiGluExperts from_gate_up(Index E, const MatrixRef& gate_up, const MatrixRef& down) {
    detail::require(E >= 1, "experts: expected num_experts >= 1, got ", E);
    detail::require(gate_up.rows() % (2 * E) == 0,
                    "expert gate_up weight: expected [E * 2f, d] rows divisible by 2E = ", 2 * E,
                    ", got shape ", detail::shape_string(gate_up.rows(), gate_up.cols()));
    const Index f = gate_up.rows() / (2 * E), d = gate_up.cols();
    Matrix gate(E * f, d), up(E * f, d);
    for (Index e = 0; e < E; ++e) {
      gate.middleRows(e * f, f) = gate_up.middleRows(2 * e * f, f);
      up.middleRows(e * f, f) = gate_up.middleRows(2 * e * f + f, f);
    }
    return SwiGluExperts(E, std::move(gate), std::move(up), Matrix(down));
  }

  Index num_experts() const noexcept { return E_; }
  Index hidden_size() const noexcept { return d_; }
  Index ffn_size() const noexcept { return f_; }

  /// Per-expert weight views: gate(e), up(e) [f, d]; down(e) [d, f].
  MatrixMap gate(Index e) { return MatrixMap(gate_.data() + checked(e) * f_ * d_, f_, d_); }
  MatrixMap up(Index e) { return MatrixMap(up_.data() + checked(e) * f_ * d_, f_, d_); }
  MatrixMap down(Index e) { return MatrixMap(down_.data() + checked(e) * d_ * f_, d_, f_); }
  ConstMatrixMap gate(Index e) const {
    return ConstMatrixMap(gate_.data() + checked(e) * f_ * d_, f_, d_);
  }
  ConstMatrixMap up(Index e) const {
    return ConstMatrixMap(up_.data() + checked(e) * f_ * d_, f_, d_);
  }
  ConstMatrixMap down(Index e) const {
    return ConstMatrixMap(down_.data() + checked(e) * d_ * f_, d_, f_);
  }

  /// Stacked weights: gate, up [E·f, d]; down [E·d, f].
  const Matrix& gate_weights() const noexcept { return gate_; }
  const Matrix& up_weights() const noexcept { return up_; }
  const Matrix& down_weights() const noexcept { return down_; }

  /// Scratch floats forward() needs per input row.
  Index scratch_per_row() const noexcept { return 2 * f_; }

  /// Runs expert e on n rows: x [n, d] -> out [n, d]; scratch [n, 2f].
  /// The kernel entry point of the block: no checks, no allocation.
  void forward(Index e, const float* x, Index n, float* out, float* scratch) const {
    if (n == 0) return;
    ConstMatrixMap X(x, n, d_);
    MatrixMap G(scratch, n, f_), U(scratch + n * f_, n, f_), Y(out, n, d_);
    G.noalias() = X * gate_.middleRows(e * f_, f_).transpose();  // [n, f]
    U.noalias() = X * up_.middleRows(e * f_, f_).transpose();    // [n, f]
    for (Index i = 0; i < n * f_; ++i) scratch[i] = silu(scratch[i]) * scratch[n * f_ + i];
    Y.noalias() = G * down_.middleRows(e * d_, d_).transpose();  // [n, d]
  }

  /// Convenience: expert e on x [n, d], returns [n, d]. Checks its arguments.
  Matrix forward(Index e, const MatrixRef& x) const {
    checked(e);
    detail::require_size("expert input columns (hidden size)", x.cols(), d_);
    const Matrix xc = x;  // contiguous copy
    Matrix out(x.rows(), d_);
    Matrix scratch(x.rows(), 2 * f_);
    forward(e, xc.data(), x.rows(), out.data(), scratch.data());
    return out;
  }

 private:
  void init(Index E, Index d, Index f) {
    detail::require(E >= 1 && d >= 1 && f >= 1, "experts: expected E, d, f >= 1, got E = ", E,
                    ", d = ", d, ", f = ", f);
    E_ = E;
    d_ = d;
    f_ = f;
    gate_ = Matrix::Zero(E * f, d);
    up_ = Matrix::Zero(E * f, d);
    down_ = Matrix::Zero(E * d, f);
  }
  Index checked(Index e) const {
    detail::require(e >= 0 && e < E_, "expert id: expected [0, ", E_, "), got ", e);
    return e;
  }

  Index E_ = 0, d_ = 0, f_ = 0;
  Matrix gate_;  // [E·f, d]
  Matrix up_;    // [E·f, d]
  Matrix down_;  // [E·d, f]
};

MOEKIT_NAMESPACE_END
