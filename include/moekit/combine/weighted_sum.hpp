// SPDX-License-Identifier: MIT
// WeightedSum: the combine stage, y_t = Σ_j w_tj · expert_{id_tj}(x_t).
//
// Each token's sum runs over its slots in rank order j = 0..k-1, reading the
// expert outputs from their grouped rows. The order of additions is fixed by
// the plan alone, so the result is bit-identical however the experts were
// scheduled and however many threads ran them.
//
// WeightPlacement::input (Llama-4) moves the weight in front of the expert:
// the block scales each gathered row by its weight, expert_e(w · x), and the
// combine sums the outputs unweighted. Since an FFN is not linear,
// expert(w · x) differs from w · expert(x).
#pragma once

#include "../combine/dispatch.hpp"
#include "../core/tensor.hpp"
#include "../router/routing_plan.hpp"

MOEKIT_NAMESPACE_BEGIN

/// Where a routing weight multiplies.
enum class WeightPlacement {
  output,  ///< w · expert(x) (every family but Llama-4)
  input,   ///< expert(w · x) (Llama-4)
};

struct WeightedSum {
  WeightPlacement placement = WeightPlacement::output;

  WeightedSum() = default;
  explicit WeightedSum(WeightPlacement p) : placement(p) {}

  /// True when the block must scale expert inputs by the weights.
  bool scales_input() const noexcept { return placement == WeightPlacement::input; }

  /// expert_out: [groups.num_rows(), d] grouped expert outputs;
  /// out: [T, d], overwritten. Tokens with no used slot get 0.
  /// Calls are independent per token range: combine_rows(t0, t1) may run in parallel.
  void combine_rows(const RoutingPlan& plan, const ExpertGroups& groups, const float* expert_out,
                    Index d, MatrixOut& out, Index t0, Index t1) const {
    const Index k = plan.top_k();
    for (Index t = t0; t < t1; ++t) {
      float* y = out.row(t).data();
      for (Index c = 0; c < d; ++c) y[c] = 0.0f;
      for (Index j = 0; j < k; ++j) {
        const std::int32_t row = groups.position[static_cast<std::size_t>(t * k + j)];
        if (row < 0) continue;
        const float w = scales_input() ? 1.0f : plan.weights(t, j);
        const float* src = expert_out + static_cast<Index>(row) * d;
        for (Index c = 0; c < d; ++c) y[c] += w * src[c];
      }
    }
  }

  void combine(const RoutingPlan& plan, const ExpertGroups& groups, const float* expert_out,
               MatrixOut out) const {
    combine_rows(plan, groups, expert_out, out.cols(), out, 0, plan.num_tokens());
  }
};

MOEKIT_NAMESPACE_END
