// SPDX-License-Identifier: MIT
// Steering: run-time edits of routing, set on a live router without rebuilding
// the block. Research methods it serves: Rewiring experts on the fly (an
// additive logit vector, learnable), multilingual routing steering (promote a
// set by a strength, optionally times the logits' standard deviation), MoTE
// (switch experts off / force them on), EvoMoE (gate temperature).
//
// NOTE: order of operations for one token (z = router logits incl. router bias):
//   1. z += logit_bias                      [E]     additive vector (Rewiring δ)
//   2. z += token_bias[t]                   [T, E]  optional per-token matrix
//   3. z[e] += strength (· std(z))          promoted set; std over all E logits
//                                           after steps 1-2 (population std)
//   4. z /= temperature                     dense-to-sparse schedules
//   5. z[e] = -inf for disabled experts     never selected, and out of the softmax
//   -- scoring (softmax / sigmoid / logits) on z --
//   -- selection score = score + correction bias (DeepSeek-V3; selection only) --
//   6. selection score = -inf for disabled experts (never selected, whatever
//      the correction bias) and +inf for forced experts: always selected (ranked
//      first, ties -> lower id; if more than k are forced, the lower ids win);
//      their weight is still their own score, not infinity.
// Steps 1-5 change the weights too (they act on the logits); step 6 and the
// correction bias change only which experts are selected.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"

MOEKIT_NAMESPACE_BEGIN

/// How a promotion strength is applied.
enum class PromoteScale {
  absolute,   ///< z[e] += strength
  logit_std,  ///< z[e] += strength · std(z) over the token's E logits (multilingual steering)
};

class Steering {
 public:
  Steering() = default;
  explicit Steering(Index num_experts) : E_(num_experts) {}

  Index num_experts() const noexcept { return E_; }

  /// Additive logit vector δ [E] applied to every token (replaces the previous one).
  Steering& set_logit_bias(Vector delta) {
    detail::require_size("steering logit bias", delta.size(), E_);
    detail::require_finite("steering logit bias", delta);
    logit_bias_ = std::move(delta);
    return *this;
  }
  /// Adds to the current logit vector (starting from zero).
  Steering& add_logit_bias(const Vector& delta) {
    detail::require_size("steering logit bias", delta.size(), E_);
    detail::require_finite("steering logit bias", delta);
    if (logit_bias_.size() == 0) logit_bias_ = Vector::Zero(E_);
    logit_bias_ += delta;
    return *this;
  }
  /// [E] or empty.
  const Vector& logit_bias() const noexcept { return logit_bias_; }

  /// Per-token additive matrix [T, E]; must have as many rows as the batch routed next.
  Steering& set_token_bias(Matrix bias) {
    detail::require(bias.cols() == E_, "steering token bias: expected shape [T, ", E_, "], got ",
                    detail::shape_string(bias.rows(), bias.cols()));
    detail::require_finite("steering token bias", bias);
    token_bias_ = std::move(bias);
    return *this;
  }
  const Matrix& token_bias() const noexcept { return token_bias_; }

  /// Experts that are never selected (logit -inf). Replaces the previous set.
  Steering& disable(std::vector<std::int32_t> experts) {
    check_ids("steering disable", experts);
    check_disjoint(experts, forced_);
    disabled_ = std::move(experts);
    return *this;
  }
  /// Experts that are always selected. Replaces the previous set.
  Steering& force(std::vector<std::int32_t> experts) {
    check_ids("steering force", experts);
    check_disjoint(disabled_, experts);
    forced_ = std::move(experts);
    return *this;
  }
  /// Adds `strength` (absolute, or times the token's logit std) to the logits of `experts`.
  Steering& promote(std::vector<std::int32_t> experts, float strength,
                    PromoteScale scale = PromoteScale::absolute) {
    check_ids("steering promote", experts);
    detail::require(std::isfinite(strength), "steering promote strength: expected a finite value, got ",
                    strength);
    promoted_ = std::move(experts);
    strength_ = strength;
    promote_scale_ = scale;
    return *this;
  }
  /// Softmax / sigmoid temperature τ > 0 (logits are divided by τ).
  Steering& set_temperature(float tau) {
    detail::require(std::isfinite(tau) && tau > 0.0f,
                    "steering temperature: expected a finite value > 0, got ", tau);
    temperature_ = tau;
    return *this;
  }

  const std::vector<std::int32_t>& disabled() const noexcept { return disabled_; }
  const std::vector<std::int32_t>& forced() const noexcept { return forced_; }
  const std::vector<std::int32_t>& promoted() const noexcept { return promoted_; }
  float promote_strength() const noexcept { return strength_; }
  PromoteScale promote_scale() const noexcept { return promote_scale_; }
  float temperature() const noexcept { return temperature_; }

  /// Removes every edit.
  void clear() {
    logit_bias_.resize(0);
    token_bias_.resize(0, 0);
    disabled_.clear();
    forced_.clear();
    promoted_.clear();
    strength_ = 0.0f;
    temperature_ = 1.0f;
  }
  /// True when any edit is set (the router skips steering entirely otherwise).
  bool active() const noexcept {
    return logit_bias_.size() != 0 || token_bias_.size() != 0 || !disabled_.empty() ||
           !forced_.empty() || (!promoted_.empty() && strength_ != 0.0f) || temperature_ != 1.0f;
  }

  /// Throws unless the per-token matrix (if any) has T rows.
  void check_batch(Index T) const {
    if (token_bias_.size() != 0)
      detail::require(token_bias_.rows() == T, "steering token bias: expected ", T,
                      " rows (tokens in the batch), got ", token_bias_.rows());
  }

  /// Steps 1-5 on token t's logits z [E] (only the first E entries; null
  /// experts after them are left alone).
  void apply_logits(Index t, float* z) const {
    if (logit_bias_.size() != 0)
      for (Index e = 0; e < E_; ++e) z[e] += logit_bias_[e];
    if (token_bias_.size() != 0)
      for (Index e = 0; e < E_; ++e) z[e] += token_bias_(t, e);
    if (!promoted_.empty() && strength_ != 0.0f) {
      float add = strength_;
      if (promote_scale_ == PromoteScale::logit_std) {
        double mean = 0, var = 0;
        for (Index e = 0; e < E_; ++e) mean += z[e];
        mean /= static_cast<double>(E_);
        for (Index e = 0; e < E_; ++e) var += (z[e] - mean) * (z[e] - mean);
        add = static_cast<float>(strength_ * std::sqrt(var / static_cast<double>(E_)));
      }
      for (std::int32_t e : promoted_) z[e] += add;
    }
    if (temperature_ != 1.0f)
      for (Index e = 0; e < E_; ++e) z[e] /= temperature_;
    for (std::int32_t e : disabled_) z[e] = -std::numeric_limits<float>::infinity();
  }

  /// Step 6 on a token's selection scores; disabled experts are also set to
  /// -inf here, since a selection-only bias (correction bias) could otherwise
  /// lift a disabled expert's 0 score back into the top-k.
  void apply_selection(float* sel) const {
    for (std::int32_t e : disabled_) sel[e] = -std::numeric_limits<float>::infinity();
    for (std::int32_t e : forced_) sel[e] = std::numeric_limits<float>::infinity();
  }

 private:
  // An expert both disabled and forced has no meaning: refuse it.
  static void check_disjoint(const std::vector<std::int32_t>& disabled, const std::vector<std::int32_t>& forced) {
    for (std::int32_t e : disabled)
      for (std::int32_t f : forced)
        detail::require(e != f, "steering: expert ", e, " cannot be both disabled and forced");
  }
  void check_ids(const char* what, const std::vector<std::int32_t>& ids) const {
    for (std::int32_t e : ids)
      detail::require(e >= 0 && e < E_, what, ": expected expert ids in [0, ", E_, "), got ", e);
  }

  Index E_ = 0;
  Vector logit_bias_;    // [E] or empty
  Matrix token_bias_;    // [T, E] or empty
  std::vector<std::int32_t> disabled_, forced_, promoted_;
  float strength_ = 0.0f;
  PromoteScale promote_scale_ = PromoteScale::absolute;
  float temperature_ = 1.0f;
};

MOEKIT_NAMESPACE_END
