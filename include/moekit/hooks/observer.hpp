// SPDX-License-Identifier: MIT
// Observers: read-only hooks a block calls during a forward.
//
// An observer is any type with these members (all optional except `enabled`):
//
//   static constexpr bool enabled = true;
//   void on_route(const MatrixRef& x,          // [T, d] block input
//                 const Matrix& logits,        // [T, E(+N)] raw router logits
//                 const RoutingPlan& plan);    // ids / weights [T, k]
//   bool wants_expert_outputs() const;         // opt in to on_expert_output
//   void on_expert_output(Index expert,
//                         const std::int32_t* tokens,  // [n] token of each row
//                         const std::int32_t* slots,   // [n] slot t·k + j of each row
//                         Index n,
//                         const float* out);           // [n, d] expert output, before weighting
//
// The block calls on_route once per forward, after routing and before the
// experts; then, if wanted, on_expert_output once per expert with rows, in
// increasing expert id, on the calling thread, after the experts have run
// (so observers need no locking and see the same sequence at any thread
// count). NoObserver has enabled = false: every call site is removed at
// compile time (`if constexpr`), so a block without an observer pays nothing.
#pragma once

#include <cstdint>
#include <type_traits>
#include <utility>

#include "../core/tensor.hpp"
#include "../router/routing_plan.hpp"

MOEKIT_NAMESPACE_BEGIN

/// The observer that observes nothing and costs nothing.
struct NoObserver {
  static constexpr bool enabled = false;
};

namespace detail {

template <class O, class = void>
struct observer_has_route : std::false_type {};
template <class O>
struct observer_has_route<O, std::void_t<decltype(std::declval<O&>().on_route(
                                 std::declval<const MatrixRef&>(), std::declval<const Matrix&>(),
                                 std::declval<const RoutingPlan&>()))>> : std::true_type {};

template <class O, class = void>
struct observer_has_expert_output : std::false_type {};
template <class O>
struct observer_has_expert_output<
    O, std::void_t<decltype(std::declval<O&>().on_expert_output(Index(), std::declval<const std::int32_t*>(),
                                                                std::declval<const std::int32_t*>(), Index(),
                                                                std::declval<const float*>()))>> : std::true_type {};

template <class O, class = void>
struct observer_wants_outputs {
  static bool get(const O&) noexcept { return false; }
};
template <class O>
struct observer_wants_outputs<O, std::void_t<decltype(std::declval<const O&>().wants_expert_outputs())>> {
  static bool get(const O& o) { return o.wants_expert_outputs(); }
};

template <class O>
constexpr bool observer_enabled() {
  if constexpr (std::is_same_v<std::decay_t<O>, NoObserver>) {
    return false;
  } else {
    return std::decay_t<O>::enabled;
  }
}

}  // namespace detail

MOEKIT_NAMESPACE_END
