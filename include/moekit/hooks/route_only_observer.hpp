// SPDX-License-Identifier: MIT
// detail::RouteOnlyObserver: the base of the hooks observers that only read
// the routing (on_route) and never the expert outputs.
//
// NOTE: observer.hpp makes on_expert_output optional, but MoEBlock::run calls
// it inside a run-time `if (wants_expert_outputs())`, so an observer without
// the member does not compile. This base supplies the opt-out pair
// (wants_expert_outputs() = false and an empty on_expert_output); it can go
// once the block guards that call with `if constexpr` on the member's presence.
#pragma once

#include <cstdint>

#include "../config.hpp"

MOEKIT_NAMESPACE_BEGIN
namespace detail {

struct RouteOnlyObserver {
  static constexpr bool enabled = true;
  bool wants_expert_outputs() const noexcept { return false; }
  void on_expert_output(Index, const std::int32_t*, const std::int32_t*, Index, const float*) noexcept {}
};

}  // namespace detail
MOEKIT_NAMESPACE_END
