// SPDX-License-Identifier: MIT
// SparseMixerRouter: Phi-MoE's sparsemixer routing, evaluation path.
//
// NOTE: for choice c = 1..k on logits l (already chosen experts set to -inf):
//   m = max, i = argmax (ties -> lower id);
//   candidates = { j : (m - l_j) / max(|l_j|, m) <= 2ε } (ratio on the original logits);
//   w_c = softmax over the candidates' logits, at i = 1 / Σ_cand exp(l_j - m).
// The weights are not renormalised across choices (each is often exactly 1).
// ε is Phi-MoE's `router_jitter_noise` (0.01), which is a threshold at
// inference. The Gumbel sampling of training is not modelled.
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "linear_gate.hpp"
#include "routing_plan.hpp"

MOEKIT_NAMESPACE_BEGIN

class SparseMixerRouter {
 public:
  SparseMixerRouter() = default;
  SparseMixerRouter(Matrix weight, Index top_k = 2, float epsilon = 0.01f)
      : gate_(std::move(weight), "sparsemixer router weight"), k_(top_k), eps_(epsilon) {
    detail::require(top_k >= 1 && top_k <= gate_.num_experts(), "sparsemixer top_k: expected 1 <= k <= ",
                    gate_.num_experts(), ", got ", top_k);
    detail::require(std::isfinite(epsilon) && epsilon >= 0.0f,
                    "sparsemixer epsilon: expected a finite value >= 0, got ", epsilon);
  }

  Index num_experts() const noexcept { return gate_.num_experts(); }
  Index hidden_size() const noexcept { return gate_.hidden_size(); }
  Index top_k() const noexcept { return k_; }
  float epsilon() const noexcept { return eps_; }
  const Matrix& weight() const noexcept { return gate_.weight(); }

  void logits(const MatrixRef& x, Matrix& out) const { gate_.logits(x, out); }

  RoutingPlan route(const MatrixRef& x) const {
    RoutingPlan plan;
    Matrix l;
    route(x, plan, l);
    return plan;
  }

  void route(const MatrixRef& x, RoutingPlan& plan, Matrix& logits_out) const {
    logits(x, logits_out);
    const Index T = x.rows(), E = num_experts();
    plan = RoutingPlan(T, k_, E);
    const float ninf = -std::numeric_limits<float>::infinity();
    std::vector<float> live(static_cast<std::size_t>(E));
    for (Index t = 0; t < T; ++t) {
      const float* l = logits_out.row(t).data();
      for (Index e = 0; e < E; ++e) live[static_cast<std::size_t>(e)] = l[e];
      for (Index c = 0; c < k_; ++c) {
        Index best = 0;
        for (Index e = 1; e < E; ++e)
          if (live[static_cast<std::size_t>(e)] > live[static_cast<std::size_t>(best)]) best = e;
        const float m = live[static_cast<std::size_t>(best)];
        float denom = 0.0f;
        for (Index e = 0; e < E; ++e) {
          const float le = live[static_cast<std::size_t>(e)];
          if (le == ninf) continue;
          const float ratio = (m - l[e]) / std::max(std::fabs(l[e]), m);
          if (ratio > 2.0f * eps_) continue;
          denom += std::exp(le - m);
        }
        plan.ids(t, c) = static_cast<std::int32_t>(best);
        plan.weights(t, c) = 1.0f / denom;
        live[static_cast<std::size_t>(best)] = ninf;
      }
    }
  }

 private:
  LinearGate gate_;  // [E, d]
  Index k_ = 2;
  float eps_ = 0.01f;
};

MOEKIT_NAMESPACE_END
