// SPDX-License-Identifier: MIT
// Routing statistics observers: per-expert load and weight mass, routing
// entropy, and expert co-activation counts, accumulated over every forward
// they observe (pass one to MoEBlock::forward(x, observer)).
//
//   LoadObserver          counts[e]   = (token, slot) pairs routed to expert e
//                         mass[e]     = Σ of their combine weights
//   EntropyObserver       mean over tokens of H(softmax(logits_t)), in nats
//   CoActivationObserver  C[i][j]     = tokens that selected both i and j (i != j);
//                         C[e][e]     = tokens that selected e
//
// Only routed experts count: empty slots and null experts (ids >= E) are
// skipped. Each observer takes E from the first plan it sees; a later plan
// with another E throws moekit::Error.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../router/routing_plan.hpp"
#include "route_only_observer.hpp"

MOEKIT_NAMESPACE_BEGIN

/// Dense row-major int64 matrix of counts, e.g. co-activations [E, E].
using CountMatrix = Eigen::Matrix<std::int64_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

namespace detail {
/// Fixes E on the first plan, then checks every later plan against it.
inline void adopt_num_experts(Index& E, const RoutingPlan& plan, const char* who) {
  if (E == 0) {
    require(plan.num_experts >= 1, who, ": plan num_experts: expected >= 1, got ", plan.num_experts);
    E = plan.num_experts;
    return;
  }
  require(plan.num_experts == E, who, ": plan num_experts: expected ", E,
          " (as the first plan observed), got ", plan.num_experts);
}
}  // namespace detail

/// Per-expert load (routed pairs) and routing-weight mass.
class LoadObserver : public detail::RouteOnlyObserver {
 public:
  static constexpr bool enabled = true;

  void on_route(const MatrixRef&, const Matrix&, const RoutingPlan& plan) { add(plan); }

  /// Accumulates one plan.
  void add(const RoutingPlan& plan) {
    const bool first = E_ == 0;
    detail::adopt_num_experts(E_, plan, "load observer");
    if (first) {
      counts_.assign(static_cast<std::size_t>(E_), 0);
      mass_.assign(static_cast<std::size_t>(E_), 0.0);
    }
    for (Index t = 0; t < plan.num_tokens(); ++t)
      for (Index j = 0; j < plan.top_k(); ++j) {
        const std::int32_t e = plan.ids(t, j);
        if (!plan.is_routed(e)) continue;
        ++counts_[static_cast<std::size_t>(e)];
        mass_[static_cast<std::size_t>(e)] += static_cast<double>(plan.weights(t, j));
      }
    tokens_ += plan.num_tokens();
  }

  Index num_experts() const noexcept { return E_; }
  /// Tokens observed.
  Index tokens() const noexcept { return tokens_; }
  /// [E] routed (token, slot) pairs per expert.
  const std::vector<Index>& counts() const noexcept { return counts_; }
  /// [E] sum of the combine weights of those pairs.
  const std::vector<double>& weight_mass() const noexcept { return mass_; }
  /// [E] counts / Σ counts (all zero when nothing was routed).
  std::vector<double> frequency() const { return normalized(counts_); }
  /// [E] mass / Σ mass (all zero when the total is zero).
  std::vector<double> mass_fraction() const { return normalized(mass_); }

  void reset() { *this = LoadObserver(); }

 private:
  template <class T>
  static std::vector<double> normalized(const std::vector<T>& v) {
    double sum = 0.0;
    for (const T& x : v) sum += static_cast<double>(x);
    std::vector<double> out(v.size(), 0.0);
    if (sum != 0.0)
      for (std::size_t i = 0; i < v.size(); ++i) out[i] = static_cast<double>(v[i]) / sum;
    return out;
  }

  Index E_ = 0, tokens_ = 0;
  std::vector<Index> counts_;  // [E]
  std::vector<double> mass_;   // [E]
};

/// Mean per-token entropy of the softmax of the raw router logits.
///
/// For token t with logits z [E'] (all the columns the router produced: E
/// routed experts, plus N null experts if any; before steering), p = softmax(z)
/// and H_t = −Σ p_e ln p_e (0 · ln 0 = 0), computed in double. mean_entropy()
/// is Σ_t H_t / T over every token observed; ln(E') is the maximum (uniform).
class EntropyObserver : public detail::RouteOnlyObserver {
 public:
  static constexpr bool enabled = true;

  void on_route(const MatrixRef&, const Matrix& logits, const RoutingPlan&) { add(logits); }

  /// Accumulates the logits [T, E'] of one forward.
  void add(const MatrixRef& logits) {
    const Index n = logits.cols();
    std::vector<double> p(static_cast<std::size_t>(n));
    for (Index t = 0; t < logits.rows(); ++t) {
      double m = -HUGE_VAL;
      for (Index e = 0; e < n; ++e) m = std::max(m, static_cast<double>(logits(t, e)));
      double sum = 0.0;
      for (Index e = 0; e < n; ++e)
        sum += (p[static_cast<std::size_t>(e)] = std::exp(static_cast<double>(logits(t, e)) - m));
      double h = 0.0;
      for (Index e = 0; e < n; ++e) {
        const double q = p[static_cast<std::size_t>(e)] / sum;
        if (q > 0.0) h -= q * std::log(q);
      }
      sum_ += h;
    }
    tokens_ += logits.rows();
  }

  Index tokens() const noexcept { return tokens_; }
  /// Σ_t H_t over every token observed (nats).
  double total_entropy() const noexcept { return sum_; }
  /// Σ_t H_t / T (nats); 0 before the first token.
  double mean_entropy() const noexcept {
    return tokens_ ? sum_ / static_cast<double>(tokens_) : 0.0;
  }

  void reset() { *this = EntropyObserver(); }

 private:
  double sum_ = 0.0;
  Index tokens_ = 0;
};

/// Expert co-activation counts [E, E].
class CoActivationObserver : public detail::RouteOnlyObserver {
 public:
  static constexpr bool enabled = true;

  void on_route(const MatrixRef&, const Matrix&, const RoutingPlan& plan) { add(plan); }

  /// Accumulates one plan: for every token, +1 at [i, j] for each ordered pair
  /// of distinct routed experts it selected, and +1 at [e, e] for each.
  void add(const RoutingPlan& plan) {
    const bool first = E_ == 0;
    detail::adopt_num_experts(E_, plan, "co-activation observer");
    if (first) counts_ = CountMatrix::Zero(E_, E_);
    for (Index t = 0; t < plan.num_tokens(); ++t)
      for (Index a = 0; a < plan.top_k(); ++a) {
        const std::int32_t i = plan.ids(t, a);
        if (!plan.is_routed(i)) continue;
        for (Index b = 0; b < plan.top_k(); ++b) {
          const std::int32_t j = plan.ids(t, b);
          if (plan.is_routed(j)) ++counts_(i, j);
        }
      }
  }

  Index num_experts() const noexcept { return E_; }
  /// [E, E] symmetric; the diagonal is each expert's token count.
  const CountMatrix& counts() const noexcept { return counts_; }

  void reset() { *this = CoActivationObserver(); }

 private:
  Index E_ = 0;
  CountMatrix counts_;  // [E, E]
};

MOEKIT_NAMESPACE_END
