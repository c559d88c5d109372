// SPDX-License-Identifier: MIT
// SharedExperts: experts every token goes through, beside the routed ones.
//
//   shared(x) = g(x) · Σ_s expert_s(x),   g(x) = sigmoid(x · w_gate) or 1
//
// Qwen2-MoE: one SwiGLU shared expert with a sigmoid gate (`shared_expert_gate`,
// [1, d]). DeepSeek-V2/V3: n_shared experts fused into one SwiGLU MLP of size
// f · n_shared, no gate. Llama-4: one SwiGLU shared expert, no gate. The bank
// may hold several shared experts; their outputs are summed in id order.
#pragma once

#include <cmath>
#include <utility>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "gated_experts.hpp"

MOEKIT_NAMESPACE_BEGIN

template <class Bank = SwiGluExperts>
class SharedExperts {
 public:
  using BankType = Bank;

  SharedExperts() = default;
  /// bank: the always-on experts; gate: [d] sigmoid gate weight, or empty for none.
  explicit SharedExperts(Bank bank, Vector gate = Vector())
      : bank_(std::move(bank)), gate_(std::move(gate)) {
    if (gate_.size())
      detail::require_size("shared expert gate weight", gate_.size(), bank_.hidden_size());
    detail::require_finite("shared expert gate weight", gate_);
  }

  const Bank& bank() const noexcept { return bank_; }
  Bank& bank() noexcept { return bank_; }
  /// [d] or empty.
  const Vector& gate() const noexcept { return gate_; }
  bool gated() const noexcept { return gate_.size() != 0; }
  Index num_experts() const noexcept { return bank_.num_experts(); }
  Index hidden_size() const noexcept { return bank_.hidden_size(); }

  /// Scratch floats per row that add_to needs.
  Index scratch_per_row() const noexcept {
    return 2 * bank_.hidden_size() + bank_.scratch_per_row();
  }

  /// y[r] += shared(x[r]) for n contiguous rows: x [n, d], y [n, d] (row stride y_stride).
  void add_to(const float* x, Index n, float* y, Index y_stride, float* scratch) const {
    const Index d = hidden_size();
    float* sum = scratch;          // [n, d]
    float* one = scratch + n * d;  // [n, d]
    float* work = one + n * d;     // [n, bank scratch]
    for (Index i = 0; i < n * d; ++i) sum[i] = 0.0f;
    for (Index s = 0; s < bank_.num_experts(); ++s) {
      bank_.forward(s, x, n, one, work);
      for (Index i = 0; i < n * d; ++i) sum[i] += one[i];
    }
    add_gated(x, n, sum, y, y_stride);
  }

  /// add_to for a caller that ran the bank itself (the block does, over
  /// column blocks on all threads): outs holds expert s's output rows [n, d]
  /// at outs + s · expert_stride; sum [n, d] is scratch. Same arithmetic as
  /// add_to: the outputs summed from 0 in id order, then add_gated.
  void add_outputs(const float* x, Index n, const float* outs, Index expert_stride, float* sum,
                   float* y, Index y_stride) const {
    const Index d = hidden_size();
    for (Index i = 0; i < n * d; ++i) sum[i] = 0.0f;
    for (Index s = 0; s < bank_.num_experts(); ++s)
      for (Index i = 0; i < n * d; ++i) sum[i] += outs[s * expert_stride + i];
    add_gated(x, n, sum, y, y_stride);
  }

  /// The last step of add_to: y[r] += g(x[r]) · sum[r] for n rows,
  /// sum [n, d] = Σ_s expert_s(x).
  void add_gated(const float* x, Index n, const float* sum, float* y, Index y_stride) const {
    const Index d = hidden_size();
    for (Index r = 0; r < n; ++r) {
      float g = 1.0f;
      if (gated()) {
        float z = 0.0f;
        for (Index c = 0; c < d; ++c) z += x[r * d + c] * gate_[c];
        g = 1.0f / (1.0f + std::exp(-z));
      }
      float* yr = y + r * y_stride;
      for (Index c = 0; c < d; ++c) yr[c] += g * sum[r * d + c];
    }
  }

 private:
  Bank bank_;
  Vector gate_;  // [d] or empty
};

MOEKIT_NAMESPACE_END
