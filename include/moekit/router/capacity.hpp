// SPDX-License-Identifier: MIT
// Capacity limits: token dropping as Switch Transformers and NLLB-MoE (GShard
// top-2) do it.
//
// NOTE: every expert accepts at most C (token, slot) pairs. Priority is
// slot-major: all slot-0 choices in token order, then all slot-1 choices in
// token order, and so on. For top-1 this is Switch's first-come-first-served
// cumsum; for top-2 it is GShard / NLLB, where second choices queue after all
// first choices of that expert. A dropped choice leaves its slot empty
// (kNoExpert) and is recorded in RoutingPlan::dropped.
//
// C is, per batch of T tokens: `capacity` when > 0 (Switch `expert_capacity`);
// else ceil(token_fraction · T) when > 0 (NLLB eval
// `moe_eval_capacity_token_fraction`); else ceil(capacity_factor · T · k / E)
// when > 0; otherwise no limit.
//
// renormalize_after_drop (NLLB, `normalize_router_prob_before_dropping` false):
// each token's surviving weights are divided by max(their sum, FLT_EPSILON)
// and dropped slots get weight 0. Otherwise weights are left as they are
// (Switch keeps p_max in the plan even for a dropped token, whose output is 0).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "../core/error.hpp"
#include "routing_plan.hpp"

MOEKIT_NAMESPACE_BEGIN

struct CapacityLimit {
  Index capacity = 0;
  float token_fraction = 0.0f;
  float capacity_factor = 0.0f;
  bool renormalize_after_drop = false;

  static CapacityLimit absolute(Index c) { CapacityLimit l; l.capacity = c; return l; }
  static CapacityLimit of_tokens(float fraction) { CapacityLimit l; l.token_fraction = fraction; return l; }
  static CapacityLimit factor(float cf) { CapacityLimit l; l.capacity_factor = cf; return l; }
  CapacityLimit& with_renormalize_after_drop(bool on) { renormalize_after_drop = on; return *this; }

  bool enabled() const noexcept { return capacity > 0 || token_fraction > 0.0f || capacity_factor > 0.0f; }

  void check() const {
    detail::require(capacity >= 0, "capacity: expected >= 0, got ", capacity);
    detail::require(std::isfinite(token_fraction) && token_fraction >= 0.0f,
                    "capacity token_fraction: expected a finite value >= 0, got ", token_fraction);
    detail::require(std::isfinite(capacity_factor) && capacity_factor >= 0.0f,
                    "capacity factor: expected a finite value >= 0, got ", capacity_factor);
  }

  /// C for a batch of T tokens, k slots and E experts (0 = unlimited).
  Index capacity_for(Index T, Index k, Index E) const noexcept {
    if (capacity > 0) return capacity;
    if (token_fraction > 0.0f)
      return static_cast<Index>(std::ceil(static_cast<double>(token_fraction) * static_cast<double>(T)));
    if (capacity_factor > 0.0f)
      return static_cast<Index>(std::ceil(static_cast<double>(capacity_factor) *
                                          static_cast<double>(T * k) / static_cast<double>(E)));
    return 0;
  }
};

/// Applies `limit` to `plan` in place (see the note above).
inline void apply_capacity(const CapacityLimit& limit, RoutingPlan& plan) {
  const Index T = plan.num_tokens(), k = plan.top_k(), E = plan.num_experts;
  plan.dropped = IdMatrix::Constant(T, k, RoutingPlan::kNoExpert);
  const Index C = limit.capacity_for(T, k, E);
  if (C <= 0) return;
  std::vector<Index> used(static_cast<std::size_t>(E), 0);
  for (Index j = 0; j < k; ++j)
    for (Index t = 0; t < T; ++t) {
      const std::int32_t e = plan.ids(t, j);
      if (!plan.is_routed(e)) continue;
      if (used[static_cast<std::size_t>(e)] < C) {
        ++used[static_cast<std::size_t>(e)];
      } else {
        plan.dropped(t, j) = e;
        plan.ids(t, j) = RoutingPlan::kNoExpert;
      }
    }
  if (!limit.renormalize_after_drop) return;
  for (Index t = 0; t < T; ++t) {
    float sum = 0.0f;
    for (Index j = 0; j < k; ++j)
      if (plan.is_routed(plan.ids(t, j))) sum += plan.weights(t, j);
    const float denom = std::max(sum, std::numeric_limits<float>::epsilon());
    for (Index j = 0; j < k; ++j)
      plan.weights(t, j) = plan.is_routed(plan.ids(t, j)) ? plan.weights(t, j) / denom : 0.0f;
  }
}

MOEKIT_NAMESPACE_END
