// SPDX-License-Identifier: MIT
// Router: linear logits, steering, scoring, selection and weighting, composed
// from small policies.
//
//   logits  = x · Wᵀ (+ b)                       [T, E + N]   (N null experts, AdaMoE)
//   z       = Steering(logits)                   bias, per-token bias, promote, temperature, disable
//   scores  = Scoring(z)          per token, f32 softmax | sigmoid | logits
//   sel     = scores + correction_bias           selection only (DeepSeek-V3), then force
//   ids     = Selection(sel, k)                  top-k | grouped | threshold | top-p ...
//   w       = weight source                      scores[ids] | softmax(z[ids]) | sigmoid(z[ids])
//   w       : prune (w_j < ratio · w_0 dropped), normalize (sum / p-norm, over routed
//             experts only), · scaling_factor
//   plan    : capacity limit (Switch / NLLB), if set
//
// With the defaults this is the Mixtral / Qwen3-MoE / OLMoE router. See
// steering.hpp for the exact order of the run-time edits.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../kernels/packed_linear.hpp"
#include "capacity.hpp"
#include "routing_plan.hpp"
#include "scoring.hpp"
#include "steering.hpp"
#include "topk.hpp"

MOEKIT_NAMESPACE_BEGIN

/// Where the combine weight of a selected expert comes from.
enum class WeightSource {
  scores,               ///< its score (softmax probability, unbiased sigmoid ...)
  softmax_of_selected,  ///< softmax over the k selected logits (gpt-oss, Granite)
  sigmoid_of_selected,  ///< sigmoid of its logit (Llama-4)
};

/// How the selected weights are normalised.
enum class Normalization {
  none,    ///< as they are (OLMoE, Qwen2-MoE default, Jamba, DeepSeek-V2, Switch)
  sum,     ///< w / (Σw + epsilon) (Mixtral, norm_topk_prob, DeepSeek-V3 with epsilon 1e-20)
  p_norm,  ///< w / (‖w‖_p + epsilon) (DBRX moe_normalize_expert_weights = p)
};

/// Options of a router. Defaults are Mixtral's.
struct RouterOptions {
  /// Slots per token k (for dynamic-k selections: the maximum), 1 <= k <= E + N.
  Index top_k = 2;
  WeightSource weight_source = WeightSource::scores;
  Normalization normalization = Normalization::sum;
  /// p of Normalization::p_norm.
  float norm_p = 1.0f;
  /// Added to the normalisation denominator (DeepSeek-V3: 1e-20).
  float norm_epsilon = 0.0f;
  /// Multiply the final weights by this factor (HF `routed_scaling_factor`).
  float scaling_factor = 1.0f;
  /// MC-MoE online dynamic pruning: after weighting and before normalisation,
  /// slot j >= 1 is emptied when w_j < prune_ratio · w_0. 0 disables it.
  float prune_ratio = 0.0f;
  /// AdaMoE null experts: the last N rows of the router weight score N null
  /// experts (ids E .. E + N - 1) that cost nothing and output zero. With
  /// Normalization::sum the weights of the routed experts are normalised over
  /// the routed experts alone, as the paper does.
  Index num_null_experts = 0;
  /// Token dropping (Switch, NLLB); disabled by default.
  CapacityLimit capacity;

  RouterOptions& with_top_k(Index k) { top_k = k; return *this; }
  /// true: Normalization::sum; false: Normalization::none (HF `norm_topk_prob`).
  RouterOptions& with_renormalize(bool on) {
    normalization = on ? Normalization::sum : Normalization::none;
    return *this;
  }
  RouterOptions& with_normalization(Normalization n, float p = 1.0f, float epsilon = 0.0f) {
    normalization = n;
    norm_p = p;
    norm_epsilon = epsilon;
    return *this;
  }
  RouterOptions& with_weight_source(WeightSource s) { weight_source = s; return *this; }
  RouterOptions& with_scaling_factor(float s) { scaling_factor = s; return *this; }
  RouterOptions& with_prune_ratio(float r) { prune_ratio = r; return *this; }
  RouterOptions& with_null_experts(Index n) { num_null_experts = n; return *this; }
  RouterOptions& with_capacity(CapacityLimit c) { capacity = c; return *this; }

  bool renormalize() const noexcept { return normalization != Normalization::none; }
};

namespace detail {
template <class S, class = void>
struct has_check : std::false_type {};
template <class S>
struct has_check<S, std::void_t<decltype(std::declval<const S&>().check(Index(), Index()))>>
    : std::true_type {};
}  // namespace detail

template <class Scoring = SoftmaxScoring, class Selection = TopKSelector>
class Router {
 public:
  using ScoringPolicy = Scoring;
  using SelectionPolicy = Selection;

  Router() = default;

  /// weight: [E + N, d] router matrix (checkpoint layout `gate.weight`; the last
  /// N rows score null experts when options.num_null_experts = N);
  /// bias: [E + N] or empty. Throws moekit::Error on bad shapes, bad options or
  /// non-finite values.
  Router(Matrix weight, RouterOptions options, Vector bias = Vector(), Selection selection = Selection())
      : weight_(std::move(weight)),
        bias_(std::move(bias)),
        options_(std::move(options)),
        selection_(std::move(selection)) {
    const Index rows = weight_.rows(), N = options_.num_null_experts;
    detail::require(N >= 0, "router num_null_experts: expected >= 0, got ", N);
    detail::require(rows - N >= 1, "router weight: expected at least 1 routed expert (",
                    N, " null + at least 1 rows), got ", rows, " rows");
    detail::require(weight_.cols() >= 1, "router weight: expected hidden size >= 1, got ",
                    weight_.cols());
    if (bias_.size() != 0) detail::require_size("router bias", bias_.size(), rows);
    detail::require(options_.top_k >= 1 && options_.top_k <= rows,
                    "router top_k: expected 1 <= k <= num_experts (", rows, "), got ", options_.top_k);
    detail::require(std::isfinite(options_.scaling_factor),
                    "router scaling_factor: expected a finite value, got ", options_.scaling_factor);
    detail::require(std::isfinite(options_.norm_p) && options_.norm_p > 0.0f,
                    "router norm_p: expected a finite value > 0, got ", options_.norm_p);
    detail::require(std::isfinite(options_.norm_epsilon) && options_.norm_epsilon >= 0.0f,
                    "router norm_epsilon: expected a finite value >= 0, got ", options_.norm_epsilon);
    detail::require(options_.prune_ratio >= 0.0f && options_.prune_ratio <= 1.0f,
                    "router prune_ratio: expected 0 <= ratio <= 1, got ", options_.prune_ratio);
    options_.capacity.check();
    detail::require_finite("router weight", weight_);
    detail::require_finite("router bias", bias_);
    if constexpr (detail::has_check<Selection>::value) selection_.check(rows, options_.top_k);
    steering_ = Steering(rows - N);
    linear_ = kernels::PackedLinear(weight_);
  }

  /// Routed experts E (null experts not counted).
  Index num_experts() const noexcept { return weight_.rows() - options_.num_null_experts; }
  Index num_null_experts() const noexcept { return options_.num_null_experts; }
  Index hidden_size() const noexcept { return weight_.cols(); }
  Index top_k() const noexcept { return options_.top_k; }
  const RouterOptions& options() const noexcept { return options_; }
  /// [E + N, d]
  const Matrix& weight() const noexcept { return weight_; }
  /// [E + N] or empty.
  const Vector& bias() const noexcept { return bias_; }
  const Selection& selection() const noexcept { return selection_; }

  /// Run-time routing edits (see steering.hpp); take effect on the next route.
  Steering& steering() noexcept { return steering_; }
  const Steering& steering() const noexcept { return steering_; }

  /// Selection-only bias [E] (DeepSeek-V3 `e_score_correction_bias`, or the
  /// auxiliary-loss-free balancing bias): changes which experts are selected,
  /// never their weights. Empty clears it.
  void set_correction_bias(Vector b) {
    if (b.size() != 0) detail::require_size("router correction bias", b.size(), num_experts());
    detail::require_finite("router correction bias", b);
    correction_ = std::move(b);
  }
  const Vector& correction_bias() const noexcept { return correction_; }

  /// logits = x · Wᵀ (+ b): [T, d] -> [T, E + N].
  void logits(const MatrixRef& x, Matrix& out) const {
    detail::require_size("router input columns (hidden size)", x.cols(), hidden_size());
    linear_.apply(x, out);
    if (bias_.size() != 0 && x.rows() != 0) out.rowwise() += bias_.transpose();
  }
  Matrix logits(const MatrixRef& x) const {
    Matrix out;
    logits(x, out);
    return out;
  }

  /// Routes every token of x [T, d].
  RoutingPlan route(const MatrixRef& x) const {
    RoutingPlan plan;
    Matrix l;
    route(x, plan, l);
    return plan;
  }
  /// Routes x; `logits_out` receives the raw logits [T, E + N].
  void route(const MatrixRef& x, RoutingPlan& plan, Matrix& logits_out) const {
    logits(x, logits_out);
    route_logits(logits_out, plan);
  }

  /// Routes from raw logits [T, E + N] (before steering). `scores_out`, if
  /// given, receives the scores [T, E + N] after steering and scoring.
  /// Throws if a logit is not finite (its score would be NaN and the choice garbage).
  void route_logits(const MatrixRef& logits, RoutingPlan& plan, Matrix* scores_out = nullptr) const {
    const Index E = num_experts(), N = num_null_experts(), EN = E + N, T = logits.rows(),
                k = options_.top_k;
    detail::require_size("router logits columns (experts)", logits.cols(), EN);
    detail::require_finite("router logits", logits);
    const bool steer = steering_.active();
    if (steer) steering_.check_batch(T);
    plan.num_experts = E;
    plan.num_null_experts = N;
    plan.ids.resize(T, k);
    plan.weights.resize(T, k);
    plan.dropped.resize(0, 0);
    if (scores_out) scores_out->resize(T, EN);
    scratch_.resize(static_cast<std::size_t>(3 * EN));  // z, scores, sel; no reallocation once sized
    float* z = scratch_.data();
    float* s = z + EN;
    float* sel = s + EN;
    for (Index t = 0; t < T; ++t) {
      for (Index e = 0; e < EN; ++e) z[e] = logits(t, e);
      if (steer) steering_.apply_logits(t, z);
      Scoring::apply(z, s, EN);
      if (scores_out) for (Index e = 0; e < EN; ++e) (*scores_out)(t, e) = s[e];
      for (Index e = 0; e < EN; ++e) sel[e] = s[e];
      if (correction_.size() != 0)
        for (Index e = 0; e < E; ++e) sel[e] += correction_[e];
      if (steer) steering_.apply_selection(sel);
      std::int32_t* ids = plan.ids.row(t).data();
      float* w = plan.weights.row(t).data();
      const Index n = selection_.select(sel, EN, k, ids, w);
      for (Index j = n; j < k; ++j) {
        ids[j] = RoutingPlan::kNoExpert;
        w[j] = 0.0f;
      }
      weigh(z, s, n, ids, w);
    }
    if (options_.capacity.enabled()) apply_capacity(options_.capacity, plan);
  }

 private:
  // Combine weights of one token's n selected slots (ids, w [k]).
  void weigh(const float* z, const float* s, Index n, std::int32_t* ids, float* w) const {
    const Index E = num_experts();
    switch (options_.weight_source) {
      case WeightSource::scores:
        for (Index j = 0; j < n; ++j) w[j] = s[ids[j]];
        break;
      case WeightSource::softmax_of_selected: {
        float m = -std::numeric_limits<float>::infinity();
        for (Index j = 0; j < n; ++j) m = std::max(m, z[ids[j]]);
        float sum = 0.0f;
        for (Index j = 0; j < n; ++j) sum += (w[j] = std::exp(z[ids[j]] - m));
        for (Index j = 0; j < n; ++j) w[j] /= sum;
        break;
      }
      case WeightSource::sigmoid_of_selected:
        for (Index j = 0; j < n; ++j) w[j] = 1.0f / (1.0f + std::exp(-z[ids[j]]));
        break;
    }
    if (options_.prune_ratio > 0.0f && n > 1) {
      const float cut = options_.prune_ratio * w[0];
      for (Index j = 1; j < n; ++j)
        if (w[j] < cut) {
          ids[j] = RoutingPlan::kNoExpert;
          w[j] = 0.0f;
        }
    }
    const auto routed = [E](std::int32_t id) { return id >= 0 && id < E; };
    if (options_.normalization != Normalization::none) {
      float denom = 0.0f;
      if (options_.normalization == Normalization::sum) {
        for (Index j = 0; j < n; ++j)
          if (routed(ids[j])) denom += w[j];
      } else if (options_.norm_p == 1.0f) {
        for (Index j = 0; j < n; ++j)
          if (routed(ids[j])) denom += std::fabs(w[j]);
      } else {
        double acc = 0.0;
        for (Index j = 0; j < n; ++j)
          if (routed(ids[j])) acc += std::pow(std::fabs(static_cast<double>(w[j])), options_.norm_p);
        denom = static_cast<float>(std::pow(acc, 1.0 / options_.norm_p));
      }
      denom += options_.norm_epsilon;
      if (denom != 0.0f)
        for (Index j = 0; j < n; ++j)
          if (routed(ids[j])) w[j] /= denom;
    }
    if (options_.scaling_factor != 1.0f)
      for (Index j = 0; j < n; ++j) w[j] *= options_.scaling_factor;
  }

  Matrix weight_;      // [E + N, d]
  Vector bias_;        // [E + N] or empty
  RouterOptions options_;
  Selection selection_;
  kernels::PackedLinear linear_;  // weight_, packed for the kernels
  Steering steering_;
  // Per-token scratch [3 (E + N)], kept so a steady-state route allocates
  // nothing. Like a block, a router serves one thread at a time.
  mutable std::vector<float> scratch_;
  Vector correction_;  // [E] or empty
};

MOEKIT_NAMESPACE_END
