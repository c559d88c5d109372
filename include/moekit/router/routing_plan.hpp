// SPDX-License-Identifier: MIT
// RoutingPlan: the plain data a router hands to the rest of the block.
//
// For T tokens and k slots per token it holds, in rank order (larger score
// first, ties toward the lower expert id), the expert id of every slot and
// the weight the combine multiplies that expert's output by. A user may read
// it, edit it or build one by hand and pass it to MoEBlock::forward_with_plan.
//
// Ids in [0, E) are routed experts. Ids in [E, E + N) are null experts
// (AdaMoE): selected like any other, they run nothing and add nothing.
// kNoExpert marks an empty slot (dynamic-k padding, a pruned choice, a
// capacity drop). When a capacity limit dropped a choice, `dropped` (same
// shape as ids, or empty when no limit ran) holds the expert id that was
// dropped from that slot.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"

MOEKIT_NAMESPACE_BEGIN

struct RoutingPlan {
  /// Id of an empty slot: no expert runs and the slot adds nothing
  /// (a token dropped by capacity, a null expert, a pruned choice).
  static constexpr std::int32_t kNoExpert = -1;

  /// Number of routed experts E; ids [0, E) run.
  Index num_experts = 0;
  /// Number of null experts N; ids [E, E + N) are null (zero output, zero FLOPs).
  Index num_null_experts = 0;
  /// [tokens, k] expert id of each slot, or kNoExpert.
  IdMatrix ids;
  /// [tokens, k] combine weight of each slot (ignored for empty slots).
  Matrix weights;
  /// [tokens, k] expert id dropped by a capacity limit in each slot, else
  /// kNoExpert; empty (0 x 0) when no capacity limit ran.
  IdMatrix dropped;

  RoutingPlan() = default;
  /// An empty plan of the given shape: every slot kNoExpert, every weight 0.
  RoutingPlan(Index tokens, Index top_k, Index experts)
      : num_experts(experts),
        ids(IdMatrix::Constant(tokens, top_k, kNoExpert)),
        weights(Matrix::Zero(tokens, top_k)) {}

  Index num_tokens() const noexcept { return ids.rows(); }
  Index top_k() const noexcept { return ids.cols(); }

  /// True when id names a routed expert that runs.
  bool is_routed(std::int32_t id) const noexcept { return id >= 0 && id < num_experts; }
  /// True when id names a null expert.
  bool is_null(std::int32_t id) const noexcept {
    return id >= num_experts && id < num_experts + num_null_experts;
  }

  /// Routed (non-null, non-empty) experts token t uses.
  Index routed_count(Index t) const noexcept {
    Index n = 0;
    for (Index j = 0; j < ids.cols(); ++j) n += is_routed(ids(t, j)) ? 1 : 0;
    return n;
  }
  /// Total (token, routed expert) pairs: the expert work of this plan.
  Index routed_pairs() const noexcept {
    Index n = 0;
    for (Index t = 0; t < ids.rows(); ++t) n += routed_count(t);
    return n;
  }
  /// Number of slots whose choice a capacity limit dropped.
  Index dropped_count() const noexcept {
    Index n = 0;
    for (Index i = 0; i < dropped.size(); ++i) n += dropped.data()[i] != kNoExpert ? 1 : 0;
    return n;
  }

  /// [E] number of (token, slot) pairs routed to each expert.
  std::vector<Index> expert_counts() const {
    std::vector<Index> counts(static_cast<std::size_t>(num_experts), 0);
    for (Index t = 0; t < ids.rows(); ++t)
      for (Index j = 0; j < ids.cols(); ++j) {
        const std::int32_t e = ids(t, j);
        if (e >= 0 && e < num_experts) ++counts[static_cast<std::size_t>(e)];
      }
    return counts;
  }

  /// Throws moekit::Error unless ids and weights (and dropped, if present) have
  /// the same shape, every id is in [0, E + N) or kNoExpert, no token names one
  /// expert twice, and every weight of a used slot is finite.
  void validate() const {
    detail::require(num_experts >= 1, "routing plan: num_experts must be >= 1, got ", num_experts);
    detail::require(num_null_experts >= 0, "routing plan: num_null_experts must be >= 0, got ",
                    num_null_experts);
    detail::require_shape("routing plan weights", weights.rows(), weights.cols(), ids.rows(),
                          ids.cols());
    if (dropped.size() != 0)
      detail::require_shape("routing plan dropped", dropped.rows(), dropped.cols(), ids.rows(),
                            ids.cols());
    const Index limit = num_experts + num_null_experts;
    for (Index t = 0; t < ids.rows(); ++t)
      for (Index j = 0; j < ids.cols(); ++j) {
        const std::int32_t e = ids(t, j);
        if (e == kNoExpert) continue;
        if (e < 0 || e >= limit)
          detail::fail("routing plan ids: expected an expert id in [0, ", limit,
                       ") or -1 at [", t, ", ", j, "], got ", e);
        for (Index i = 0; i < j; ++i)
          if (ids(t, i) == e)
            detail::fail("routing plan ids: token ", t, " names expert ", e,
                         " twice (slots ", i, " and ", j, ")");
        if (!std::isfinite(weights(t, j)))
          detail::fail("routing plan weights: non-finite value ", weights(t, j), " at [", t,
                       ", ", j, "]");
      }
  }
};

MOEKIT_NAMESPACE_END
