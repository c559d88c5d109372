// SPDX-License-Identifier: MIT
// Router losses and load balancing, as functions over router logits and RoutingPlans.
//
//   load_balancing_loss        Hugging Face `load_balancing_loss_func` (Mixtral form, copied by
//                              Qwen2/3-MoE, OLMoE, Granite, DBRX, Jamba, Phi-MoE): softmax of the
//                              logits, top-k recomputed (ties -> lower id),
//                              E · Σ_e (selections of e / T) · mean_t p[t, e]. No division by k:
//                              perfect balance gives about k.
//   switch_load_balancing_loss Switch / NLLB form: E² · mean_e(frac_e · mean_t p[t, e]) where
//                              frac_e is the fraction of tokens whose expert index is e.
//   router_z_loss              mean_t logsumexp(logits_t)².
//   null_pooled_balancing_loss AdaMoE: (E+N) · Σ_i f_i · P_i over routed and null experts, the
//                              null experts' load replaced by their pool mean.
//   correction_bias_update     DeepSeek-V3 auxiliary-loss-free balancing: each expert's
//                              selection bias moves by `step` against the sign of its load
//                              deviation from the mean.
// Losses are accumulated in double and returned as double.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "routing_plan.hpp"
#include "scoring.hpp"
#include "topk.hpp"

MOEKIT_NAMESPACE_BEGIN

/// HF Mixtral-form balance loss of one layer's raw logits [T, E] with top-k.
/// For several layers, stack their logits vertically (HF concatenates them).
inline double load_balancing_loss(const MatrixRef& logits, Index top_k) {
  const Index T = logits.rows(), E = logits.cols();
  detail::require(top_k >= 1 && top_k <= E, "load_balancing_loss top_k: expected 1 <= k <= ", E,
                  ", got ", top_k);
  if (T == 0) return 0.0;
  detail::require_finite("load_balancing_loss logits", logits);
  std::vector<float> p(static_cast<std::size_t>(E)), vals(static_cast<std::size_t>(top_k));
  std::vector<std::int32_t> ids(static_cast<std::size_t>(top_k));
  std::vector<double> count(static_cast<std::size_t>(E), 0.0), prob(static_cast<std::size_t>(E), 0.0);
  for (Index t = 0; t < T; ++t) {
    SoftmaxScoring::apply(logits.row(t).data(), p.data(), E);
    const Index n = TopKSelector::top_k(p.data(), E, top_k, ids.data(), vals.data());
    for (Index j = 0; j < n; ++j) count[static_cast<std::size_t>(ids[static_cast<std::size_t>(j)])] += 1.0;
    for (Index e = 0; e < E; ++e) prob[static_cast<std::size_t>(e)] += p[static_cast<std::size_t>(e)];
  }
  double loss = 0.0;
  for (Index e = 0; e < E; ++e)
    loss += (count[static_cast<std::size_t>(e)] / static_cast<double>(T)) *
            (prob[static_cast<std::size_t>(e)] / static_cast<double>(T));
  return loss * static_cast<double>(E);
}

/// Switch-form balance loss: router_probs [T, E], expert_index [T] (one expert per token).
inline double switch_load_balancing_loss(const MatrixRef& router_probs,
                                         const std::vector<std::int32_t>& expert_index) {
  const Index T = router_probs.rows(), E = router_probs.cols();
  detail::require_size("switch_load_balancing_loss expert_index", static_cast<Index>(expert_index.size()), T);
  if (T == 0) return 0.0;
  std::vector<double> frac(static_cast<std::size_t>(E), 0.0), prob(static_cast<std::size_t>(E), 0.0);
  for (Index t = 0; t < T; ++t) {
    const std::int32_t e = expert_index[static_cast<std::size_t>(t)];
    detail::require(e >= 0 && e < E, "switch_load_balancing_loss expert_index: expected [0, ", E,
                    ") at token ", t, ", got ", e);
    frac[static_cast<std::size_t>(e)] += 1.0 / static_cast<double>(T);
    for (Index i = 0; i < E; ++i) prob[static_cast<std::size_t>(i)] += router_probs(t, i) / static_cast<double>(T);
  }
  double acc = 0.0;
  for (Index e = 0; e < E; ++e) acc += frac[static_cast<std::size_t>(e)] * prob[static_cast<std::size_t>(e)];
  return acc * static_cast<double>(E);  // mean over E, times E²
}

/// Switch-form balance loss from raw logits [T, E] and a top-1 plan, as HF
/// Switch Transformers computes it: a token whose choice was dropped by
/// capacity counts as expert 0.
inline double switch_load_balancing_loss(const MatrixRef& logits, const RoutingPlan& plan) {
  const Index T = logits.rows(), E = logits.cols();
  detail::require_size("switch_load_balancing_loss plan tokens", plan.num_tokens(), T);
  Matrix probs(T, E);
  std::vector<std::int32_t> index(static_cast<std::size_t>(T), 0);
  for (Index t = 0; t < T; ++t) {
    SoftmaxScoring::apply(logits.row(t).data(), probs.row(t).data(), E);
    const std::int32_t e = plan.top_k() > 0 ? plan.ids(t, 0) : RoutingPlan::kNoExpert;
    index[static_cast<std::size_t>(t)] = plan.is_routed(e) ? e : 0;
  }
  return switch_load_balancing_loss(probs, index);
}

/// Router z-loss: mean over tokens of logsumexp(logits_t)².
inline double router_z_loss(const MatrixRef& logits) {
  const Index T = logits.rows(), E = logits.cols();
  if (T == 0) return 0.0;
  double acc = 0.0;
  for (Index t = 0; t < T; ++t) {
    double m = logits(t, 0);
    for (Index e = 1; e < E; ++e) m = std::max(m, static_cast<double>(logits(t, e)));
    double s = 0.0;
    for (Index e = 0; e < E; ++e) s += std::exp(static_cast<double>(logits(t, e)) - m);
    const double lse = m + std::log(s);
    acc += lse * lse;
  }
  return acc / static_cast<double>(T);
}

/// AdaMoE balance loss over routed and null experts. scores [T, E + N] are the
/// router's softmax scores (Router::route_logits(..., &scores)), plan its plan.
/// f_i = selections of i / (T · k); P_i = mean_t scores[t, i]; the f of every
/// null expert is replaced by the mean f of the null pool.
inline double null_pooled_balancing_loss(const MatrixRef& scores, const RoutingPlan& plan) {
  const Index T = scores.rows(), E = plan.num_experts, N = plan.num_null_experts, EN = E + N;
  detail::require_size("null_pooled_balancing_loss scores columns", scores.cols(), EN);
  detail::require_size("null_pooled_balancing_loss plan tokens", plan.num_tokens(), T);
  if (T == 0) return 0.0;
  std::vector<double> f(static_cast<std::size_t>(EN), 0.0), P(static_cast<std::size_t>(EN), 0.0);
  const double slots = static_cast<double>(T * plan.top_k());
  for (Index t = 0; t < T; ++t) {
    for (Index j = 0; j < plan.top_k(); ++j) {
      const std::int32_t e = plan.ids(t, j);
      if (e >= 0 && e < EN) f[static_cast<std::size_t>(e)] += 1.0 / slots;
    }
    for (Index i = 0; i < EN; ++i) P[static_cast<std::size_t>(i)] += scores(t, i) / static_cast<double>(T);
  }
  if (N > 0) {
    double pool = 0.0;
    for (Index i = E; i < EN; ++i) pool += f[static_cast<std::size_t>(i)];
    for (Index i = E; i < EN; ++i) f[static_cast<std::size_t>(i)] = pool / static_cast<double>(N);
  }
  double acc = 0.0;
  for (Index i = 0; i < EN; ++i) acc += f[static_cast<std::size_t>(i)] * P[static_cast<std::size_t>(i)];
  return acc * static_cast<double>(EN);
}

/// DeepSeek-V3 auxiliary-loss-free update: returns bias [E] moved by `step`
/// against each expert's load deviation: b_e += step · sign(mean_load - load_e),
/// where load_e counts e's (token, slot) pairs in `plan`. An empty bias starts at 0.
inline Vector correction_bias_update(const Vector& bias, const RoutingPlan& plan, float step) {
  const Index E = plan.num_experts;
  detail::require(bias.size() == 0 || bias.size() == E, "correction_bias_update bias: expected size ", E,
                  " (or empty), got ", bias.size());
  detail::require(std::isfinite(step), "correction_bias_update step: expected a finite value, got ", step);
  Vector out = bias.size() ? bias : Vector::Zero(E);
  const std::vector<Index> load = plan.expert_counts();
  double mean = 0.0;
  for (Index c : load) mean += static_cast<double>(c) / static_cast<double>(E);
  for (Index e = 0; e < E; ++e) {
    const double dev = mean - static_cast<double>(load[static_cast<std::size_t>(e)]);
    out[e] += dev > 0 ? step : (dev < 0 ? -step : 0.0f);
  }
  return out;
}

MOEKIT_NAMESPACE_END
