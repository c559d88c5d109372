// SPDX-License-Identifier: MIT
// Dispatch: group the (token, slot) pairs of a RoutingPlan by expert.
//
// NOTE: a stable counting sort. Pass 1 counts the pairs of each expert, an
// exclusive prefix sum turns counts into offsets, pass 2 scatters the pairs
// in token order. So expert e owns grouped rows [offsets[e], offsets[e+1]),
// its tokens in increasing order, and `position` maps every slot back to its
// grouped row for the combine. Empty slots (kNoExpert) and null experts
// (ids in [E, E + N)) take no row: they cost nothing.
#pragma once

#include <cstdint>
#include <vector>

#include "../core/error.hpp"
#include "../router/routing_plan.hpp"

MOEKIT_NAMESPACE_BEGIN

struct ExpertGroups {
  /// [E + 1] grouped rows of expert e are [offsets[e], offsets[e + 1]).
  std::vector<Index> offsets;
  /// [rows] token index of each grouped row.
  std::vector<std::int32_t> tokens;
  /// [rows] slot (t * k + j) of each grouped row.
  std::vector<std::int32_t> slots;
  /// [T * k] grouped row of slot t * k + j, or -1 for an empty slot.
  std::vector<std::int32_t> position;
  /// [E] scratch of dispatch() (kept so that a steady-state dispatch allocates nothing).
  std::vector<Index> cursor;

  Index num_experts() const noexcept {
    return offsets.empty() ? 0 : static_cast<Index>(offsets.size()) - 1;
  }
  /// Total grouped rows (used slots).
  Index num_rows() const noexcept { return offsets.empty() ? 0 : offsets.back(); }
  /// Rows routed to expert e.
  Index count(Index e) const noexcept {
    return offsets[static_cast<std::size_t>(e) + 1] - offsets[static_cast<std::size_t>(e)];
  }
  /// [E] rows per expert.
  std::vector<Index> counts() const {
    std::vector<Index> c(static_cast<std::size_t>(num_experts()));
    for (Index e = 0; e < num_experts(); ++e) c[static_cast<std::size_t>(e)] = count(e);
    return c;
  }
};

/// Groups the pairs of `plan` by expert into `groups` (buffers reused).
/// Ids outside [0, E + N) other than kNoExpert throw moekit::Error rather
/// than index out of bounds.
inline void dispatch(const RoutingPlan& plan, ExpertGroups& groups) {
  const Index T = plan.num_tokens(), k = plan.top_k(), E = plan.num_experts;
  groups.offsets.assign(static_cast<std::size_t>(E) + 1, 0);
  groups.position.assign(static_cast<std::size_t>(T * k), -1);
  for (Index t = 0; t < T; ++t)
    for (Index j = 0; j < k; ++j) {
      const std::int32_t e = plan.ids(t, j);
      if (e == RoutingPlan::kNoExpert || plan.is_null(e)) continue;
      if (e < 0 || e >= E)
        detail::fail("routing plan ids: expected an expert id in [0, ", E + plan.num_null_experts,
                     ") or -1 at [", t, ", ", j, "], got ", e);
      ++groups.offsets[static_cast<std::size_t>(e) + 1];
    }
  for (Index e = 0; e < E; ++e)
    groups.offsets[static_cast<std::size_t>(e) + 1] += groups.offsets[static_cast<std::size_t>(e)];
  const Index rows = groups.offsets.back();
  groups.tokens.resize(static_cast<std::size_t>(rows));
  groups.slots.resize(static_cast<std::size_t>(rows));
  std::vector<Index>& cursor = groups.cursor;  // [E] next free row of each expert
  cursor.assign(groups.offsets.begin(), groups.offsets.end() - 1);
  for (Index t = 0; t < T; ++t)
    for (Index j = 0; j < k; ++j) {
      const std::int32_t e = plan.ids(t, j);
      if (!plan.is_routed(e)) continue;
      const Index row = cursor[static_cast<std::size_t>(e)]++;
      const Index slot = t * k + j;
      groups.tokens[static_cast<std::size_t>(row)] = static_cast<std::int32_t>(t);
      groups.slots[static_cast<std::size_t>(row)] = static_cast<std::int32_t>(slot);
      groups.position[static_cast<std::size_t>(slot)] = static_cast<std::int32_t>(row);
    }
}

inline ExpertGroups dispatch(const RoutingPlan& plan) {
  ExpertGroups g;
  dispatch(plan, g);
  return g;
}

MOEKIT_NAMESPACE_END
