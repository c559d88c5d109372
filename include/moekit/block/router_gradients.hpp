// SPDX-License-Identifier: MIT
// Router gradients with the experts frozen: what "Rewiring experts on the fly"
// optimises online (an additive logit vector per layer).
//
// NOTE: for y_t = Σ_j w_tj · o_tj (WeightedSum combine, o = expert outputs),
// given dL/dy [T, d]:
//   dL/dw_tj = <dL/dy_t, o_tj>
//   back through the scaling factor, the sum normalisation (over the routed
//   experts of the token), the weight source (scores / softmax of the selected
//   logits / sigmoid of the selected logits), the scoring (softmax / sigmoid /
//   identity) and the temperature, to dL/dlogits [T, E + N].
// Selection is piecewise constant, so it has no gradient: these are the exact
// derivatives wherever a small change does not change which experts are
// selected (check them with finite differences away from ties).
// Then dL/d(logit bias δ) = Σ_t dL/dlogits_t, dL/d(token bias) = dL/dlogits,
// dL/dW = dL/dlogitsᵀ · x and dL/db = Σ_t dL/dlogits_t.
// Not supported (throws moekit::Error): p-norm normalisation, capacity
// renormalisation after dropping, promotion scaled by the logit std.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../router/router.hpp"
#include "../router/routing_plan.hpp"
#include "moe_block.hpp"

MOEKIT_NAMESPACE_BEGIN

struct RouterGradients {
  Matrix logits;      ///< [T, E + N] dL/d(raw router logits)
  Vector logit_bias;  ///< [E]        dL/d(steering logit bias δ)
  Matrix token_bias;  ///< [T, E]     dL/d(per-token steering bias)
  Matrix weight;      ///< [E + N, d] dL/d(router weight)
  Vector bias;        ///< [E + N]    dL/d(router bias)
};

/// Gradients of L with respect to the router of `block` at input x [T, d],
/// given dL/dy [T, d]. Routes x again (the block's steering as set now).
template <class Scoring, class Selection, class Experts>
RouterGradients router_gradients(const MoEBlock<Router<Scoring, Selection>, Experts, WeightedSum>& block,
                                 const MatrixRef& x, const MatrixRef& dy) {
  const auto& router = block.router();
  const RouterOptions& opt = router.options();
  const Steering& st = router.steering();
  const Index T = x.rows(), d = block.hidden_size(), E = router.num_experts(),
              EN = E + router.num_null_experts(), k = opt.top_k;
  detail::require_shape("router_gradients dL/dy", dy.rows(), dy.cols(), T, d);
  detail::require(opt.normalization != Normalization::p_norm,
                  "router_gradients: p-norm normalisation is not supported");
  detail::require(!(opt.capacity.enabled() && opt.capacity.renormalize_after_drop),
                  "router_gradients: renormalisation after capacity dropping is not supported");
  detail::require(st.promoted().empty() || st.promote_scale() == PromoteScale::absolute ||
                      st.promote_strength() == 0.0f,
                  "router_gradients: promotion scaled by the logit std is not supported");

  RoutingPlan plan;
  Matrix raw, scores;
  router.logits(x, raw);
  router.route_logits(raw, plan, &scores);

  RouterGradients g;
  g.logits = Matrix::Zero(T, EN);
  std::vector<float> z(static_cast<std::size_t>(EN)), dw(static_cast<std::size_t>(k)),
      dr(static_cast<std::size_t>(k)), ds(static_cast<std::size_t>(EN));
  for (Index t = 0; t < T; ++t) {
    for (Index e = 0; e < EN; ++e) z[static_cast<std::size_t>(e)] = raw(t, e);
    if (st.active()) st.apply_logits(t, z.data());
    // dL/dw for the routed slots (null / empty slots produce no output).
    bool any = false;
    for (Index j = 0; j < k; ++j) {
      const std::int32_t e = plan.ids(t, j);
      dw[static_cast<std::size_t>(j)] = 0.0f;
      if (!plan.is_routed(e)) continue;
      const Matrix o = block.experts().forward(e, x.row(t));
      dw[static_cast<std::size_t>(j)] = static_cast<float>((o.row(0).cast<double>().dot(dy.row(t).cast<double>())));
      any = true;
    }
    if (!any) continue;
    // Undo scaling and normalisation: r = raw weight (before normalisation).
    const float sf = opt.scaling_factor;
    std::vector<float> r(static_cast<std::size_t>(k), 0.0f);
    float S = 0.0f;
    for (Index j = 0; j < k; ++j) {
      const std::int32_t e = plan.ids(t, j);
      if (e == RoutingPlan::kNoExpert) continue;
      switch (opt.weight_source) {
        case WeightSource::scores: r[static_cast<std::size_t>(j)] = scores(t, e); break;
        case WeightSource::sigmoid_of_selected:
          r[static_cast<std::size_t>(j)] = 1.0f / (1.0f + std::exp(-z[static_cast<std::size_t>(e)]));
          break;
        case WeightSource::softmax_of_selected: break;  // filled below
      }
    }
    if (opt.weight_source == WeightSource::softmax_of_selected) {
      float m = -INFINITY, sum = 0.0f;
      for (Index j = 0; j < k; ++j)
        if (plan.ids(t, j) != RoutingPlan::kNoExpert) m = std::max(m, z[static_cast<std::size_t>(plan.ids(t, j))]);
      for (Index j = 0; j < k; ++j)
        if (plan.ids(t, j) != RoutingPlan::kNoExpert) sum += (r[static_cast<std::size_t>(j)] = std::exp(z[static_cast<std::size_t>(plan.ids(t, j))] - m));
      for (Index j = 0; j < k; ++j) r[static_cast<std::size_t>(j)] /= sum;
    }
    for (Index j = 0; j < k; ++j)
      if (plan.is_routed(plan.ids(t, j))) S += r[static_cast<std::size_t>(j)];
    S += opt.norm_epsilon;
    // dL/dr
    for (Index j = 0; j < k; ++j) dr[static_cast<std::size_t>(j)] = sf * dw[static_cast<std::size_t>(j)];
    if (opt.normalization == Normalization::sum && S != 0.0f) {
      float dot = 0.0f;  // Σ_j dL/dn_j · n_j over routed slots
      for (Index j = 0; j < k; ++j)
        if (plan.is_routed(plan.ids(t, j))) dot += dr[static_cast<std::size_t>(j)] * r[static_cast<std::size_t>(j)] / S;
      for (Index j = 0; j < k; ++j)
        if (plan.is_routed(plan.ids(t, j))) dr[static_cast<std::size_t>(j)] = (dr[static_cast<std::size_t>(j)] - dot) / S;
    }
    // Back through the weight source and the scoring to dL/dz.
    std::vector<float> dz(static_cast<std::size_t>(EN), 0.0f);
    if (opt.weight_source == WeightSource::scores) {
      std::fill(ds.begin(), ds.end(), 0.0f);
      for (Index j = 0; j < k; ++j)
        if (plan.ids(t, j) != RoutingPlan::kNoExpert) ds[static_cast<std::size_t>(plan.ids(t, j))] += dr[static_cast<std::size_t>(j)];
      if constexpr (std::is_same_v<Scoring, SoftmaxScoring>) {
        float dot = 0.0f;
        for (Index e = 0; e < EN; ++e) dot += ds[static_cast<std::size_t>(e)] * scores(t, e);
        for (Index e = 0; e < EN; ++e) dz[static_cast<std::size_t>(e)] = scores(t, e) * (ds[static_cast<std::size_t>(e)] - dot);
      } else if constexpr (std::is_same_v<Scoring, SigmoidScoring>) {
        for (Index e = 0; e < EN; ++e) dz[static_cast<std::size_t>(e)] = ds[static_cast<std::size_t>(e)] * scores(t, e) * (1.0f - scores(t, e));
      } else {
        static_assert(std::is_same_v<Scoring, LogitScoring>, "router_gradients: unknown scoring policy");
        for (Index e = 0; e < EN; ++e) dz[static_cast<std::size_t>(e)] = ds[static_cast<std::size_t>(e)];
      }
    } else if (opt.weight_source == WeightSource::sigmoid_of_selected) {
      for (Index j = 0; j < k; ++j)
        if (plan.ids(t, j) != RoutingPlan::kNoExpert) {
          const float rj = r[static_cast<std::size_t>(j)];
          dz[static_cast<std::size_t>(plan.ids(t, j))] += dr[static_cast<std::size_t>(j)] * rj * (1.0f - rj);
        }
    } else {  // softmax over the selected logits
      float dot = 0.0f;
      for (Index j = 0; j < k; ++j)
        if (plan.ids(t, j) != RoutingPlan::kNoExpert) dot += dr[static_cast<std::size_t>(j)] * r[static_cast<std::size_t>(j)];
      for (Index j = 0; j < k; ++j)
        if (plan.ids(t, j) != RoutingPlan::kNoExpert)
          dz[static_cast<std::size_t>(plan.ids(t, j))] += r[static_cast<std::size_t>(j)] * (dr[static_cast<std::size_t>(j)] - dot);
    }
    // z = (raw + δ + token bias + promote) / τ for the routed experts (disabled: constant).
    for (Index e = 0; e < EN; ++e) {
      float v = dz[static_cast<std::size_t>(e)];
      if (e < E) v /= st.temperature();
      if (std::isinf(z[static_cast<std::size_t>(e)])) v = 0.0f;  // disabled expert: constant -inf
      g.logits(t, e) = v;
    }
  }
  g.token_bias = g.logits.leftCols(E);
  g.logit_bias = g.token_bias.colwise().sum().transpose();
  g.bias = g.logits.colwise().sum().transpose();
  g.weight = g.logits.transpose() * x;
  return g;
}

MOEKIT_NAMESPACE_END
