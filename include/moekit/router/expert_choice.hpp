// SPDX-License-Identifier: MIT
// ExpertChoiceRouter: each expert picks its top-C tokens (Zhou et al. 2022,
// "Mixture-of-Experts with Expert Choice Routing").
//
// NOTE: S = softmax(x · Wᵀ) [T, E] (f32). Expert e takes the C tokens with the
// largest S[:, e] (ties -> lower token index) with gate G = S[t, e]; a token
// is processed by 0 or more experts and its weights are not renormalised.
// C = floor(T · capacity_factor / E), clamped to [1, T], unless an explicit
// capacity is given. Routing depends on the whole batch (non-causal).
//
// The RoutingPlan has as many slots as the busiest token needs; each token's
// experts are in rank order (larger gate first, ties -> lower expert id) and
// the rest of its slots are empty. selection() keeps the expert-major view
// [E, C] (token ids and gates in each expert's rank order).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "linear_gate.hpp"
#include "routing_plan.hpp"
#include "scoring.hpp"
#include "topk.hpp"

MOEKIT_NAMESPACE_BEGIN

class ExpertChoiceRouter {
 public:
  /// Expert-major result of the latest route(): [E, C] each.
  struct Selection {
    IdMatrix token_ids;
    Matrix weights;
  };

  ExpertChoiceRouter() = default;
  /// weight [E, d]; capacity = 0 derives C from capacity_factor and the batch.
  ExpertChoiceRouter(Matrix weight, float capacity_factor, Index capacity = 0)
      : gate_(std::move(weight), "expert-choice router weight"),
        capacity_factor_(capacity_factor),
        capacity_(capacity) {
    detail::require(std::isfinite(capacity_factor) && capacity_factor > 0.0f,
                    "expert-choice capacity_factor: expected a finite value > 0, got ", capacity_factor);
    detail::require(capacity >= 0, "expert-choice capacity: expected >= 0, got ", capacity);
  }

  Index num_experts() const noexcept { return gate_.num_experts(); }
  Index hidden_size() const noexcept { return gate_.hidden_size(); }
  float capacity_factor() const noexcept { return capacity_factor_; }
  const Matrix& weight() const noexcept { return gate_.weight(); }

  /// Tokens per expert for a batch of T tokens.
  Index capacity_for(Index T) const noexcept {
    if (T == 0) return 0;
    Index c = capacity_ > 0 ? capacity_
                            : static_cast<Index>(std::floor(static_cast<double>(T) * capacity_factor_ /
                                                            static_cast<double>(num_experts())));
    return std::min(T, std::max<Index>(1, c));
  }

  void logits(const MatrixRef& x, Matrix& out) const { gate_.logits(x, out); }

  RoutingPlan route(const MatrixRef& x) const {
    RoutingPlan plan;
    Matrix l;
    route(x, plan, l);
    return plan;
  }

  void route(const MatrixRef& x, RoutingPlan& plan, Matrix& logits_out) const {
    logits(x, logits_out);
    const Index T = x.rows(), E = num_experts(), C = capacity_for(T);
    Matrix S(T, E);
    for (Index t = 0; t < T; ++t) SoftmaxScoring::apply(logits_out.row(t).data(), S.row(t).data(), E);
    selection_.token_ids.resize(E, C);
    selection_.weights.resize(E, C);
    std::vector<float> column(static_cast<std::size_t>(T));
    std::vector<Index> per_token(static_cast<std::size_t>(T), 0);
    for (Index e = 0; e < E; ++e) {
      for (Index t = 0; t < T; ++t) column[static_cast<std::size_t>(t)] = S(t, e);
      TopKSelector::top_k(column.data(), T, C, selection_.token_ids.row(e).data(),
                          selection_.weights.row(e).data());
      for (Index c = 0; c < C; ++c) ++per_token[static_cast<std::size_t>(selection_.token_ids(e, c))];
    }
    const Index k = std::max<Index>(1, T ? *std::max_element(per_token.begin(), per_token.end()) : 1);
    plan = RoutingPlan(T, k, E);
    std::fill(per_token.begin(), per_token.end(), 0);
    for (Index e = 0; e < E; ++e)  // expert order: ids per token ascend
      for (Index c = 0; c < C; ++c) {
        const Index t = selection_.token_ids(e, c);
        const Index j = per_token[static_cast<std::size_t>(t)]++;
        plan.ids(t, j) = static_cast<std::int32_t>(e);
        plan.weights(t, j) = selection_.weights(e, c);
      }
    // Rank order within each token: larger gate first, ties -> lower id (stable on ascending ids).
    std::vector<std::pair<float, std::int32_t>> row;
    for (Index t = 0; t < T; ++t) {
      const Index n = per_token[static_cast<std::size_t>(t)];
      row.clear();
      for (Index j = 0; j < n; ++j) row.emplace_back(plan.weights(t, j), plan.ids(t, j));
      std::stable_sort(row.begin(), row.end(), [](const auto& a, const auto& b) { return a.first > b.first; });
      for (Index j = 0; j < n; ++j) {
        plan.weights(t, j) = row[static_cast<std::size_t>(j)].first;
        plan.ids(t, j) = row[static_cast<std::size_t>(j)].second;
      }
    }
  }

  /// Expert-major view of the latest route(): token_ids / weights [E, C].
  const Selection& selection() const noexcept { return selection_; }

 private:
  LinearGate gate_;  // [E, d]
  float capacity_factor_ = 2.0f;
  Index capacity_ = 0;
  mutable Selection selection_;
};

MOEKIT_NAMESPACE_END
