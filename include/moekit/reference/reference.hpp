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
#include <functional>
#include <limits>
#include <numeric>
#include <type_traits>
#include <vector>

#include "../block/moe_block.hpp"
#include "../core/tensor.hpp"
#include "../expert/gated_experts.hpp"
#include "../expert/mlp_experts.hpp"
#include "../expert/shared_experts.hpp"
#include "../router/dynamic_k.hpp"
#include "../router/grouped_topk.hpp"
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

namespace detail {

template <class R>
struct is_router_family : std::false_type {};
template <class S, class L>
struct is_router_family<Router<S, L>> : std::true_type {};

// Rank order: larger value first, ties -> lower index; -inf never selected.
inline std::vector<std::int32_t> ranked(const std::vector<double>& v, Index k) {
  std::vector<std::int32_t> order;
  for (Index i = 0; i < static_cast<Index>(v.size()); ++i)
    if (v[static_cast<std::size_t>(i)] != -std::numeric_limits<double>::infinity())
      order.push_back(static_cast<std::int32_t>(i));
  std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
    return v[static_cast<std::size_t>(a)] > v[static_cast<std::size_t>(b)];
  });
  if (static_cast<Index>(order.size()) > k) order.resize(static_cast<std::size_t>(k));
  return order;
}

template <class Selection>
std::vector<std::int32_t> select(const Selection& selection, const std::vector<double>& sel, Index k) {
  if constexpr (std::is_same_v<Selection, GroupedTopKSelector>) {
    const Index G = selection.n_group(), per = static_cast<Index>(sel.size()) / G;
    std::vector<double> group(static_cast<std::size_t>(G));
    for (Index g = 0; g < G; ++g) {
      std::vector<double> members(sel.begin() + g * per, sel.begin() + (g + 1) * per);
      std::sort(members.begin(), members.end(), std::greater<double>());
      group[static_cast<std::size_t>(g)] =
          selection.group_score() == GroupScore::max ? members[0] : members[0] + members[1];
    }
    const std::vector<std::int32_t> kept = ranked(group, selection.topk_group());
    std::vector<double> masked(sel.size(), selection.mask_fill() == MaskFill::zero
                                               ? 0.0
                                               : -std::numeric_limits<double>::infinity());
    for (std::int32_t g : kept)
      for (Index i = 0; i < per; ++i)
        masked[static_cast<std::size_t>(g * per + i)] = sel[static_cast<std::size_t>(g * per + i)];
    return ranked(masked, k);
  } else if constexpr (std::is_same_v<Selection, ThresholdSelector>) {
    std::vector<std::int32_t> top = ranked(sel, k);
    std::size_t keep = 0;
    while (keep < top.size() && sel[static_cast<std::size_t>(top[keep])] >= selection.threshold()) ++keep;
    keep = std::max(keep, std::min(top.size(), static_cast<std::size_t>(selection.min_k())));
    top.resize(keep);
    return top;
  } else if constexpr (std::is_same_v<Selection, TopPSelector>) {
    std::vector<std::int32_t> top = ranked(sel, k);
    std::size_t keep = 0;
    double mass = 0;
    while (keep < top.size() && mass < selection.p()) mass += sel[static_cast<std::size_t>(top[keep++])];
    keep = std::max(keep, std::min(top.size(), static_cast<std::size_t>(selection.min_k())));
    top.resize(keep);
    return top;
  } else {
    static_assert(std::is_same_v<Selection, TopKSelector>, "the reference knows no such selection policy");
    (void)selection;
    return ranked(sel, k);
  }
}

}  // namespace detail

/// The whole routing of `router` (any scoring, selection, steering, weighting,
/// null experts and capacity it supports), in double, rounded to f32 at the end.
template <class Scoring, class Selection>
RoutingPlan route(const Router<Scoring, Selection>& router, const MatrixRef& x) {
  const RouterOptions& opt = router.options();
  const Steering& st = router.steering();
  const Index T = x.rows(), E = router.num_experts(), N = router.num_null_experts(), EN = E + N,
              k = opt.top_k;
  const Eigen::MatrixXd logits = router_logits(x, router.weight(), router.bias());
  RoutingPlan plan(T, k, E);
  plan.num_null_experts = N;
  const double inf = std::numeric_limits<double>::infinity();
  for (Index t = 0; t < T; ++t) {
    std::vector<double> z(static_cast<std::size_t>(EN));
    for (Index e = 0; e < EN; ++e) z[static_cast<std::size_t>(e)] = logits(t, e);
    // Steering, in the documented order.
    if (st.logit_bias().size())
      for (Index e = 0; e < E; ++e) z[static_cast<std::size_t>(e)] += st.logit_bias()[e];
    if (st.token_bias().size())
      for (Index e = 0; e < E; ++e) z[static_cast<std::size_t>(e)] += st.token_bias()(t, e);
    if (!st.promoted().empty()) {
      double add = st.promote_strength();
      if (st.promote_scale() == PromoteScale::logit_std) {
        double mean = 0, var = 0;
        for (Index e = 0; e < E; ++e) mean += z[static_cast<std::size_t>(e)] / static_cast<double>(E);
        for (Index e = 0; e < E; ++e) var += std::pow(z[static_cast<std::size_t>(e)] - mean, 2) / static_cast<double>(E);
        add *= std::sqrt(var);
      }
      for (std::int32_t e : st.promoted()) z[static_cast<std::size_t>(e)] += add;
    }
    for (Index e = 0; e < E; ++e) z[static_cast<std::size_t>(e)] /= st.temperature();
    for (std::int32_t e : st.disabled()) z[static_cast<std::size_t>(e)] = -inf;
    // Scores.
    std::vector<double> s(z.size());
    if constexpr (std::is_same_v<Scoring, SoftmaxScoring>) {
      const double m = *std::max_element(z.begin(), z.end());
      double sum = 0;
      for (std::size_t e = 0; e < z.size(); ++e) sum += (s[e] = m == -inf ? 0.0 : std::exp(z[e] - m));
      for (auto& v : s) v = sum > 0 ? v / sum : 0.0;
    } else if constexpr (std::is_same_v<Scoring, SigmoidScoring>) {
      for (std::size_t e = 0; e < z.size(); ++e) s[e] = 1.0 / (1.0 + std::exp(-z[e]));
    } else {
      static_assert(std::is_same_v<Scoring, LogitScoring>, "the reference knows no such scoring policy");
      s = z;
    }
    // Selection scores: correction bias, then forced experts.
    std::vector<double> sel = s;
    if (router.correction_bias().size())
      for (Index e = 0; e < E; ++e) sel[static_cast<std::size_t>(e)] += router.correction_bias()[e];
    for (std::int32_t e : st.disabled()) sel[static_cast<std::size_t>(e)] = -inf;
    for (std::int32_t e : st.forced()) sel[static_cast<std::size_t>(e)] = inf;
    const std::vector<std::int32_t> ids = detail::select(router.selection(), sel, k);
    const Index n = static_cast<Index>(ids.size());
    // Weights.
    std::vector<double> w(static_cast<std::size_t>(n));
    for (Index j = 0; j < n; ++j) {
      const double zj = z[static_cast<std::size_t>(ids[static_cast<std::size_t>(j)])];
      switch (opt.weight_source) {
        case WeightSource::scores: w[static_cast<std::size_t>(j)] = s[static_cast<std::size_t>(ids[static_cast<std::size_t>(j)])]; break;
        case WeightSource::sigmoid_of_selected: w[static_cast<std::size_t>(j)] = 1.0 / (1.0 + std::exp(-zj)); break;
        case WeightSource::softmax_of_selected: {
          double sum = 0;
          for (Index i = 0; i < n; ++i) sum += std::exp(z[static_cast<std::size_t>(ids[static_cast<std::size_t>(i)])] - zj);
          w[static_cast<std::size_t>(j)] = 1.0 / sum;
          break;
        }
      }
    }
    std::vector<bool> live(static_cast<std::size_t>(n), true);
    for (Index j = 1; j < n; ++j)
      if (opt.prune_ratio > 0 && w[static_cast<std::size_t>(j)] < opt.prune_ratio * w[0]) live[static_cast<std::size_t>(j)] = false;
    if (opt.normalization != Normalization::none) {
      double denom = 0;
      for (Index j = 0; j < n; ++j) {
        if (!live[static_cast<std::size_t>(j)] || ids[static_cast<std::size_t>(j)] >= E) continue;
        const double v = w[static_cast<std::size_t>(j)];
        denom += opt.normalization == Normalization::sum ? v : std::pow(std::fabs(v), opt.norm_p);
      }
      if (opt.normalization == Normalization::p_norm) denom = std::pow(denom, 1.0 / opt.norm_p);
      denom += opt.norm_epsilon;
      if (denom != 0)
        for (Index j = 0; j < n; ++j)
          if (ids[static_cast<std::size_t>(j)] < E) w[static_cast<std::size_t>(j)] /= denom;
    }
    for (Index j = 0; j < n; ++j) {
      if (!live[static_cast<std::size_t>(j)]) continue;
      plan.ids(t, j) = ids[static_cast<std::size_t>(j)];
      plan.weights(t, j) = static_cast<float>(w[static_cast<std::size_t>(j)] * opt.scaling_factor);
    }
  }
  // Capacity: slot-major priority, per-expert counters.
  if (opt.capacity.enabled()) {
    plan.dropped = IdMatrix::Constant(T, k, RoutingPlan::kNoExpert);
    const Index C = opt.capacity.capacity_for(T, k, E);
    std::vector<Index> taken(static_cast<std::size_t>(E), 0);
    for (Index j = 0; j < k; ++j)
      for (Index t = 0; t < T; ++t) {
        const std::int32_t e = plan.ids(t, j);
        if (e < 0 || e >= E) continue;
        if (taken[static_cast<std::size_t>(e)]++ >= C) {
          plan.dropped(t, j) = e;
          plan.ids(t, j) = RoutingPlan::kNoExpert;
        }
      }
    if (opt.capacity.renormalize_after_drop)
      for (Index t = 0; t < T; ++t) {
        double sum = 0;
        for (Index j = 0; j < k; ++j)
          if (plan.ids(t, j) >= 0 && plan.ids(t, j) < E) sum += plan.weights(t, j);
        sum = std::max(sum, static_cast<double>(std::numeric_limits<float>::epsilon()));
        for (Index j = 0; j < k; ++j)
          plan.weights(t, j) = (plan.ids(t, j) >= 0 && plan.ids(t, j) < E)
                                   ? static_cast<float>(plan.weights(t, j) / sum)
                                   : 0.0f;
      }
  }
  return plan;
}

/// One gated expert on one row, in double: x [d] -> out [d].
template <class Gate>
void expert_row(const GatedExperts<Gate>& ex, Index e, const float* x, double* out) {
  const Index d = ex.hidden_size(), f = ex.ffn_size();
  const auto G = ex.gate(e), U = ex.up(e), D = ex.down(e);
  std::vector<double> h(static_cast<std::size_t>(f));
  for (Index i = 0; i < f; ++i) {
    double g = ex.gate_bias().size() ? static_cast<double>(ex.gate_bias()(e, i)) : 0.0;
    double u = ex.up_bias().size() ? static_cast<double>(ex.up_bias()(e, i)) : 0.0;
    for (Index c = 0; c < d; ++c) {
      g += static_cast<double>(G(i, c)) * x[c];
      u += static_cast<double>(U(i, c)) * x[c];
    }
    h[static_cast<std::size_t>(i)] = ex.gate_fn()(g, u);
  }
  for (Index c = 0; c < d; ++c) {
    double acc = ex.down_bias().size() ? static_cast<double>(ex.down_bias()(e, c)) : 0.0;
    for (Index i = 0; i < f; ++i) acc += static_cast<double>(D(c, i)) * h[static_cast<std::size_t>(i)];
    out[c] = acc * ex.output_scale();
  }
}

/// One plain MLP expert on one row, in double.
template <class Act>
void expert_row(const MlpExperts<Act>& ex, Index e, const float* x, double* out) {
  const Index d = ex.hidden_size(), f = ex.ffn_size();
  const auto W = ex.w_in(e), O = ex.w_out(e);
  std::vector<double> h(static_cast<std::size_t>(f));
  for (Index i = 0; i < f; ++i) {
    double a = ex.in_bias().size() ? static_cast<double>(ex.in_bias()(e, i)) : 0.0;
    for (Index c = 0; c < d; ++c) a += static_cast<double>(W(i, c)) * x[c];
    h[static_cast<std::size_t>(i)] = ex.activation()(a);
  }
  for (Index c = 0; c < d; ++c) {
    double acc = ex.out_bias().size() ? static_cast<double>(ex.out_bias()(e, c)) : 0.0;
    for (Index i = 0; i < f; ++i) acc += static_cast<double>(O(c, i)) * h[static_cast<std::size_t>(i)];
    out[c] = acc * ex.output_scale();
  }
}

/// Kept for existing callers: a SwiGLU expert row.
inline void swiglu_expert_row(const SwiGluExperts& ex, Index e, const float* x, double* out) {
  expert_row(ex, e, x, out);
}

/// y_t = Σ_j w_tj · expert_{id_tj}(x_t) in double, for any valid plan;
/// with input placement (Llama-4) y_t = Σ_j expert_{id_tj}(w_tj · x_t).
/// Empty slots and null experts contribute nothing.
template <class Bank>
Matrix forward_with_plan(const Bank& ex, const MatrixRef& x, const RoutingPlan& plan,
                         WeightPlacement placement = WeightPlacement::output) {
  const Index T = x.rows(), d = ex.hidden_size();
  Matrix y(T, d);
  std::vector<double> acc(static_cast<std::size_t>(d)), o(static_cast<std::size_t>(d));
  std::vector<float> xs(static_cast<std::size_t>(d));
  const Matrix xc = x;
  for (Index t = 0; t < T; ++t) {
    std::fill(acc.begin(), acc.end(), 0.0);
    for (Index j = 0; j < plan.top_k(); ++j) {
      const std::int32_t e = plan.ids(t, j);
      if (e < 0 || e >= plan.num_experts) continue;  // empty slot or null expert
      const double w = plan.weights(t, j);
      if (placement == WeightPlacement::input) {
        for (Index c = 0; c < d; ++c) xs[static_cast<std::size_t>(c)] = static_cast<float>(w * xc(t, c));
        expert_row(ex, e, xs.data(), o.data());
        for (Index c = 0; c < d; ++c) acc[static_cast<std::size_t>(c)] += o[static_cast<std::size_t>(c)];
      } else {
        expert_row(ex, e, xc.row(t).data(), o.data());
        for (Index c = 0; c < d; ++c) acc[static_cast<std::size_t>(c)] += w * o[static_cast<std::size_t>(c)];
      }
    }
    for (Index c = 0; c < d; ++c) y(t, c) = static_cast<float>(acc[static_cast<std::size_t>(c)]);
  }
  return y;
}

/// The shared experts' contribution g(x_t) · Σ_s shared_s(x_t), in double.
template <class Bank>
Eigen::MatrixXd shared_experts(const SharedExperts<Bank>& sh, const MatrixRef& x) {
  const Index T = x.rows(), d = sh.hidden_size();
  Eigen::MatrixXd out = Eigen::MatrixXd::Zero(T, d);
  std::vector<double> o(static_cast<std::size_t>(d));
  const Matrix xc = x;
  for (Index t = 0; t < T; ++t) {
    double g = 1.0;
    if (sh.gated()) {
      double z = 0;
      for (Index c = 0; c < d; ++c) z += static_cast<double>(xc(t, c)) * sh.gate()[c];
      g = 1.0 / (1.0 + std::exp(-z));
    }
    for (Index s = 0; s < sh.num_experts(); ++s) {
      expert_row(sh.bank(), s, xc.row(t).data(), o.data());
      for (Index c = 0; c < d; ++c) out(t, c) += g * o[static_cast<std::size_t>(c)];
    }
  }
  return out;
}

/// A block's forward for a given plan, in double: routed experts (with the
/// block's weight placement) plus its shared experts.
template <class R, class X, class C, class S>
Matrix forward_with_plan(const MoEBlock<R, X, C, S>& block, const MatrixRef& x, const RoutingPlan& plan) {
  const WeightPlacement placement =
      moekit::detail::combine_scales_input<C>::get(block.combine()) ? WeightPlacement::input : WeightPlacement::output;
  Matrix y = forward_with_plan(block.experts(), x, plan, placement);
  if (const auto* sh = block.shared_experts()) {
    // Recombine in double: routed part (already rounded) + shared part.
    const Eigen::MatrixXd s = shared_experts(*sh, x);
    for (Index t = 0; t < y.rows(); ++t)
      for (Index c = 0; c < y.cols(); ++c) y(t, c) = static_cast<float>(static_cast<double>(y(t, c)) + s(t, c));
  }
  return y;
}

/// The whole forward of a block, in double. Routers of the Router<> family are
/// routed by the reference router; other routers (expert choice, sparsemixer)
/// by their own route(). `plan_out` receives the plan.
template <class R, class X, class C, class S>
Matrix forward(const MoEBlock<R, X, C, S>& block, const MatrixRef& x, RoutingPlan* plan_out = nullptr) {
  RoutingPlan plan;
  if constexpr (detail::is_router_family<R>::value) {
    plan = route(block.router(), x);
  } else {
    plan = block.router().route(x);
  }
  if (plan_out) *plan_out = plan;
  return forward_with_plan(block, x, plan);
}

}  // namespace reference
MOEKIT_NAMESPACE_END
