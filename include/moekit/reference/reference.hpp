// SPDX-License-Identifier: MIT
// The reference implementation: the whole MoE forward as plain loops in double
// precision, written for clarity, never for speed. It is the oracle every test
// compares the block (and, later, every kernel) against.
//
// It shares no code with the block beyond the data types: logits, softmax,
// top-k (a full sort with the same tie rule), weighting, SwiGLU and the
// weighted sum are all written out again here.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <vector>

#include "../block/moe_block.hpp"
#include "../core/tensor.hpp"
#include "../expert/swiglu_experts.hpp"
#include "../router/router.hpp"
#include "../router/routing_plan.hpp"

MOEKIT_NAMESPACE_BEGIN
namespace reference {

/// Router logits x · Wᵀ (+ b) accumulated in double: [T, d] -> [T, E].
inline Eigen::MatrixXd router_logits(const MatrixRef& x, const Matrix& w, const Vector& bias) {
  const Index T = x.rows(), E = w.rows(), d = w.cols();
  Eigen::MatrixXd out(T, E);
  for (Index t = 0; t < T; ++t)
    for (Index e = 0; e < E; ++e) {
      double acc = bias.size() ? static_cast<double>(bias[e]) : 0.0;
      for (Index c = 0; c < d; ++c) acc += static_cast<double>(x(t, c)) * w(e, c);
      out(t, e) = acc;
    }
  return out;
}

/// Softmax top-k routing (Mixtral / Qwen / OLMoE form) in double, rounded to f32 at the end.
inline RoutingPlan route(const MatrixRef& x, const Matrix& w, const Vector& bias,
                         const RouterOptions& opt) {
  const Index T = x.rows(), E = w.rows(), k = opt.top_k;
  const Eigen::MatrixXd logits = router_logits(x, w, bias);
  RoutingPlan plan(T, k, E);
  std::vector<double> p(static_cast<std::size_t>(E));
  std::vector<std::int32_t> order(static_cast<std::size_t>(E));
  for (Index t = 0; t < T; ++t) {
    const double m = logits.row(t).maxCoeff();
    double sum = 0;
    for (Index e = 0; e < E; ++e) sum += (p[static_cast<std::size_t>(e)] = std::exp(logits(t, e) - m));
    for (auto& v : p) v /= sum;
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
      return p[static_cast<std::size_t>(a)] > p[static_cast<std::size_t>(b)];  // stable: ties keep lower id first
    });
    double sel = 0;
    for (Index j = 0; j < k; ++j) sel += p[static_cast<std::size_t>(order[static_cast<std::size_t>(j)])];
    for (Index j = 0; j < k; ++j) {
      const std::int32_t e = order[static_cast<std::size_t>(j)];
      double wj = p[static_cast<std::size_t>(e)];
      if (opt.renormalize) wj /= sel;
      wj *= opt.scaling_factor;
      plan.ids(t, j) = e;
      plan.weights(t, j) = static_cast<float>(wj);
    }
  }
  return plan;
}

template <class Scoring, class Selection>
RoutingPlan route(const Router<Scoring, Selection>& router, const MatrixRef& x) {
  return route(x, router.weight(), router.bias(), router.options());
}

/// One SwiGLU expert on one row, in double: x [d] -> out [d].
inline void swiglu_expert_row(const SwiGluExperts& ex, Index e, const float* x, double* out) {
  const Index d = ex.hidden_size(), f = ex.ffn_size();
  const auto G = ex.gate(e), U = ex.up(e), D = ex.down(e);
  std::vector<double> h(static_cast<std::size_t>(f));
  for (Index i = 0; i < f; ++i) {
    double g = 0, u = 0;
    for (Index c = 0; c < d; ++c) {
      g += static_cast<double>(G(i, c)) * x[c];
      u += static_cast<double>(U(i, c)) * x[c];
    }
    h[static_cast<std::size_t>(i)] = g / (1.0 + std::exp(-g)) * u;
  }
  for (Index c = 0; c < d; ++c) {
    double acc = 0;
    for (Index i = 0; i < f; ++i) acc += static_cast<double>(D(c, i)) * h[static_cast<std::size_t>(i)];
    out[c] = acc;
  }
}

/// y_t = Σ_j w_tj · expert_{id_tj}(x_t) in double, for any valid plan.
inline Matrix forward_with_plan(const SwiGluExperts& ex, const MatrixRef& x, const RoutingPlan& plan) {
  const Index T = x.rows(), d = ex.hidden_size();
  Matrix y(T, d);
  std::vector<double> acc(static_cast<std::size_t>(d)), o(static_cast<std::size_t>(d));
  const Matrix xc = x;
  for (Index t = 0; t < T; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (Index j = 0; j < plan.top_k(); ++j) {
      const std::int32_t e = plan.ids(t, j);
      if (e == RoutingPlan::kNoExpert) continue;
      swiglu_expert_row(ex, e, xc.row(t).data(), o.data());
      for (Index c = 0; c < d; ++c) acc[static_cast<std::size_t>(c)] += plan.weights(t, j) * o[static_cast<std::size_t>(c)];
    }
    for (Index c = 0; c < d; ++c) y(t, c) = static_cast<float>(acc[static_cast<std::size_t>(c)]);
  }
  return y;
}

/// The whole forward of a softmax-top-k SwiGLU block; `plan_out` receives the routing.
inline Matrix forward(const SwiGluMoEBlock& block, const MatrixRef& x, RoutingPlan* plan_out = nullptr) {
  const RoutingPlan plan = route(block.router(), x);
  if (plan_out) *plan_out = plan;
  return forward_with_plan(block.experts(), x, plan);
}

}  // namespace reference
MOEKIT_NAMESPACE_END
