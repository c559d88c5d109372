// SPDX-License-Identifier: MIT
// ObserverTee: several observers behind one, so a single forward can feed a
// trace recorder, load counters and an importance accumulator at once.
//
//   moekit::LoadObserver load;  moekit::EasyEpImportance imp;
//   auto both = moekit::tee(load, imp);       // holds references
//   block.forward(x, both);
//
// on_route goes to every member that has it, in argument order;
// on_expert_output to every member whose wants_expert_outputs() is true.
#pragma once

#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>

#include "../core/tensor.hpp"
#include "../router/routing_plan.hpp"
#include "observer.hpp"

MOEKIT_NAMESPACE_BEGIN

template <class... Observers>
class ObserverTee {
 public:
  static constexpr bool enabled = (detail::observer_enabled<Observers>() || ...);

  explicit ObserverTee(Observers&... observers) : members_(observers...) {}

  void on_route(const MatrixRef& x, const Matrix& logits, const RoutingPlan& plan) {
    std::apply([&](auto&... o) { (route_one(o, x, logits, plan), ...); }, members_);
  }

  bool wants_expert_outputs() const {
    return std::apply(
        [](const auto&... o) {
          return (detail::observer_wants_outputs<std::decay_t<decltype(o)>>::get(o) || ...);
        },
        members_);
  }

  void on_expert_output(Index expert, const std::int32_t* tokens, const std::int32_t* slots,
                        Index n, const float* out) {
    std::apply([&](auto&... o) { (output_one(o, expert, tokens, slots, n, out), ...); }, members_);
  }

 private:
  template <class O>
  static void route_one(O& o, const MatrixRef& x, const Matrix& logits, const RoutingPlan& plan) {
    if constexpr (detail::observer_enabled<O>() && detail::observer_has_route<O>::value)
      o.on_route(x, logits, plan);
  }
  template <class O>
  static void output_one(O& o, Index expert, const std::int32_t* tokens, const std::int32_t* slots,
                         Index n, const float* out) {
    if constexpr (detail::observer_enabled<O>()) {
      if (detail::observer_wants_outputs<O>::get(o)) call_output(o, expert, tokens, slots, n, out, 0);
    }
  }
  // Calls o.on_expert_output when O has it (overload resolution on the int/long tag).
  template <class O>
  static auto call_output(O& o, Index expert, const std::int32_t* tokens, const std::int32_t* slots,
                          Index n, const float* out, int)
      -> decltype(o.on_expert_output(expert, tokens, slots, n, out), void()) {
    o.on_expert_output(expert, tokens, slots, n, out);
  }
  template <class O>
  static void call_output(O&, Index, const std::int32_t*, const std::int32_t*, Index, const float*,
                          long) {}

  std::tuple<Observers&...> members_;
};

/// An observer that forwards to every argument (held by reference).
template <class... Observers>
ObserverTee<Observers...> tee(Observers&... observers) {
  return ObserverTee<Observers...>(observers...);
}

MOEKIT_NAMESPACE_END
