// SPDX-License-Identifier: MIT
// Dynamic-k selection: a variable number of experts per token.
//
// ThresholdSelector keeps, in rank order, every expert whose selection score
// is >= threshold (EvoMoE's DTS gate, MoE-X style sparsity); TopPSelector keeps
// the smallest rank-order prefix whose cumulative score reaches p (top-p /
// nucleus routing over softmax scores). Both then clamp the count to
// [min_k, max_k]: min_k experts are always taken (the best ones), and the
// router's top_k is max_k, the number of slots in the plan. Unused slots are
// empty (RoutingPlan::kNoExpert).
#pragma once

#include <cstdint>

#include "../core/error.hpp"
#include "topk.hpp"

MOEKIT_NAMESPACE_BEGIN

class ThresholdSelector {
 public:
  ThresholdSelector() = default;
  explicit ThresholdSelector(float threshold, Index min_k = 1) : threshold_(threshold), min_k_(min_k) {
    detail::require(min_k >= 0, "threshold selector min_k: expected >= 0, got ", min_k);
  }
  float threshold() const noexcept { return threshold_; }
  Index min_k() const noexcept { return min_k_; }
  void check(Index /*num_experts*/, Index k) const {
    detail::require(min_k_ <= k, "threshold selector: min_k (", min_k_, ") exceeds top_k (", k, ")");
  }

  Index select(const float* sel, Index n, Index k, std::int32_t* ids, float* values) const {
    const Index got = TopKSelector::top_k(sel, n, k, ids, values);
    Index keep = 0;
    while (keep < got && values[keep] >= threshold_) ++keep;
    return keep < min_k_ ? (got < min_k_ ? got : min_k_) : keep;
  }

 private:
  float threshold_ = 0.0f;
  Index min_k_ = 1;
};

class TopPSelector {
 public:
  TopPSelector() = default;
  explicit TopPSelector(float p, Index min_k = 1) : p_(p), min_k_(min_k) {
    detail::require(p > 0.0f && p <= 1.0f, "top-p selector p: expected 0 < p <= 1, got ", p);
    detail::require(min_k >= 0, "top-p selector min_k: expected >= 0, got ", min_k);
  }
  float p() const noexcept { return p_; }
  Index min_k() const noexcept { return min_k_; }
  void check(Index /*num_experts*/, Index k) const {
    detail::require(min_k_ <= k, "top-p selector: min_k (", min_k_, ") exceeds top_k (", k, ")");
  }

  Index select(const float* sel, Index n, Index k, std::int32_t* ids, float* values) const {
    const Index got = TopKSelector::top_k(sel, n, k, ids, values);
    float mass = 0.0f;
    Index keep = 0;
    while (keep < got && mass < p_) mass += values[keep++];
    return keep < min_k_ ? (got < min_k_ ? got : min_k_) : keep;
  }

 private:
  float p_ = 1.0f;
  Index min_k_ = 1;
};

MOEKIT_NAMESPACE_END
