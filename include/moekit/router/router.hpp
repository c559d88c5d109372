// SPDX-License-Identifier: MIT
// Router: linear logits, scoring, top-k selection and weighting, composed from
// small policies.
//
//   logits  = x · Wᵀ (+ b)                        [T, E]
//   scores  = Scoring(logits)    per token, f32    [T, E]   (softmax by default)
//   ids, w  = Selection(scores, k)                 [T, k]   (top-k, ties -> lower id)
//   w       = w / Σw   if renormalize              (norm_topk_prob)
//   w       = w · scaling_factor                   (routed_scaling_factor)
//
// With the defaults this is the Mixtral / Qwen3-MoE / OLMoE router.
#pragma once

#include <cmath>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "routing_plan.hpp"
#include "scoring.hpp"
#include "topk.hpp"

MOEKIT_NAMESPACE_BEGIN

/// Options of a top-k router. Defaults are Mixtral's.
struct RouterOptions {
  /// Experts per token k, 1 <= k <= E.
  Index top_k = 2;
  /// Divide the k selected weights by their sum (HF `norm_topk_prob`).
  bool renormalize = true;
  /// Multiply the final weights by this factor (HF `routed_scaling_factor`).
  float scaling_factor = 1.0f;

  RouterOptions& with_top_k(Index k) { top_k = k; return *this; }
  RouterOptions& with_renormalize(bool on) { renormalize = on; return *this; }
  RouterOptions& with_scaling_factor(float s) { scaling_factor = s; return *this; }
};

template <class Scoring = SoftmaxScoring, class Selection = TopKSelector>
class Router {
 public:
  using ScoringPolicy = Scoring;
  using SelectionPolicy = Selection;

  Router() = default;

  /// weight: [E, d] router matrix (checkpoint layout `gate.weight`);
  /// bias: [E] or empty for none. Throws moekit::Error on bad shapes, bad
  /// options or non-finite values.
  Router(Matrix weight, RouterOptions options, Vector bias = Vector())
      : weight_(std::move(weight)), bias_(std::move(bias)), options_(options) {
    const Index E = weight_.rows();
    detail::require(E >= 1, "router weight: expected at least 1 expert (row), got ", E);
    detail::require(weight_.cols() >= 1, "router weight: expected hidden size >= 1, got ",
                    weight_.cols());
    if (bias_.size() != 0) detail::require_size("router bias", bias_.size(), E);
    detail::require(options_.top_k >= 1 && options_.top_k <= E,
                    "router top_k: expected 1 <= k <= num_experts (", E, "), got ",
                    options_.top_k);
    detail::require(std::isfinite(options_.scaling_factor),
                    "router scaling_factor: expected a finite value, got ",
                    options_.scaling_factor);
    detail::require_finite("router weight", weight_);
    detail::require_finite("router bias", bias_);
  }

  Index num_experts() const noexcept { return weight_.rows(); }
  Index hidden_size() const noexcept { return weight_.cols(); }
  Index top_k() const noexcept { return options_.top_k; }
  const RouterOptions& options() const noexcept { return options_; }
  /// [E, d]
  const Matrix& weight() const noexcept { return weight_; }
  /// [E] or empty.
  const Vector& bias() const noexcept { return bias_; }

  /// logits = x · Wᵀ (+ b): [T, d] -> [T, E].
  void logits(const MatrixRef& x, Matrix& out) const {
    detail::require_size("router input columns (hidden size)", x.cols(), hidden_size());
    out.resize(x.rows(), num_experts());
    if (x.rows() == 0) return;
    out.noalias() = x * weight_.transpose();
    if (bias_.size() != 0) out.rowwise() += bias_.transpose();
  }
  Matrix logits(const MatrixRef& x) const {
    Matrix out;
    logits(x, out);
    return out;
  }

  /// Routes every token of x [T, d]. `logits_out`, if given, receives [T, E].
  RoutingPlan route(const MatrixRef& x) const {
    RoutingPlan plan;
    Matrix l;
    route(x, plan, l);
    return plan;
  }
  void route(const MatrixRef& x, RoutingPlan& plan, Matrix& logits_out) const {
    logits(x, logits_out);
    route_logits(logits_out, plan);
  }

  /// Routes from precomputed logits [T, E] (what a steering hook or a user edits).
  /// Throws if a logit is not finite (the scores would be NaN and the choice garbage).
  void route_logits(const MatrixRef& logits, RoutingPlan& plan) const {
    const Index E = num_experts(), T = logits.rows(), k = options_.top_k;
    detail::require_size("router logits columns (experts)", logits.cols(), E);
    detail::require_finite("router logits", logits);
    plan.num_experts = E;
    plan.ids.resize(T, k);
    plan.weights.resize(T, k);
    std::vector<float> scores(static_cast<std::size_t>(E));  // [E] one token's scores
    for (Index t = 0; t < T; ++t) {
      Scoring::apply(logits.row(t).data(), scores.data(), E);
      std::int32_t* ids = plan.ids.row(t).data();
      float* w = plan.weights.row(t).data();
      Selection::select(scores.data(), E, k, ids, w);
      apply_weighting(w, k);
    }
  }

 private:
  void apply_weighting(float* w, Index k) const noexcept {
    if (options_.renormalize) {
      float sum = 0.0f;
      for (Index j = 0; j < k; ++j) sum += w[j];
      if (sum > 0.0f)
        for (Index j = 0; j < k; ++j) w[j] /= sum;
    }
    if (options_.scaling_factor != 1.0f)
      for (Index j = 0; j < k; ++j) w[j] *= options_.scaling_factor;
  }

  Matrix weight_;  // [E, d]
  Vector bias_;    // [E] or empty
  RouterOptions options_;
};

MOEKIT_NAMESPACE_END
