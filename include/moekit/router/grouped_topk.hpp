// SPDX-License-Identifier: MIT
// GroupedTopKSelector: group-limited top-k (DeepSeek-V2 and DeepSeek-V3).
//
// NOTE: the E experts form n_group contiguous groups of E / n_group. Each
// group gets a score from its members' selection scores; the topk_group best
// groups (ties -> lower group index) stay, the experts of the other groups are
// masked, and top-k runs on what is left.
//   GroupScore::max          DeepSeek-V2 `group_limited_greedy`: the best member.
//   GroupScore::sum_of_top2  DeepSeek-V3: the sum of the two best members.
// The mask value: MaskFill::neg_inf (DeepSeek's reference code, the default)
// can never select a masked expert; MaskFill::zero is what Hugging Face does
// (fills 0.0), which can pick a masked expert when fewer than k kept experts
// score above 0 (V3 with negative correction biases). For softmax scores (V2)
// both give the same result.
#pragma once

#include <algorithm>
#include <cstdint>
#include <limits>
#include <vector>

#include "../core/error.hpp"
#include "topk.hpp"

MOEKIT_NAMESPACE_BEGIN

enum class GroupScore { max, sum_of_top2 };
enum class MaskFill { neg_inf, zero };

class GroupedTopKSelector {
 public:
  GroupedTopKSelector() = default;
  GroupedTopKSelector(Index n_group, Index topk_group, GroupScore score = GroupScore::sum_of_top2,
                      MaskFill fill = MaskFill::neg_inf)
      : n_group_(n_group), topk_group_(topk_group), score_(score), fill_(fill) {
    detail::require(n_group >= 1, "grouped top-k n_group: expected >= 1, got ", n_group);
    detail::require(topk_group >= 1 && topk_group <= n_group,
                    "grouped top-k topk_group: expected 1 <= topk_group <= n_group (", n_group,
                    "), got ", topk_group);
  }

  Index n_group() const noexcept { return n_group_; }
  Index topk_group() const noexcept { return topk_group_; }
  GroupScore group_score() const noexcept { return score_; }
  MaskFill mask_fill() const noexcept { return fill_; }

  /// Throws unless E splits into n_group equal groups and k fits (called by the router).
  void check(Index num_experts, Index k) const {
    detail::require(num_experts % n_group_ == 0, "grouped top-k: num_experts (", num_experts,
                    ") must be divisible by n_group (", n_group_, ")");
    const Index per = num_experts / n_group_;
    if (score_ == GroupScore::sum_of_top2)
      detail::require(per >= 2, "grouped top-k: sum_of_top2 needs >= 2 experts per group, got ", per);
    if (fill_ == MaskFill::neg_inf)
      detail::require(k <= per * topk_group_, "grouped top-k: top_k (", k,
                      ") exceeds the experts in the kept groups (", per * topk_group_, ")");
  }

  Index select(const float* sel, Index n, Index k, std::int32_t* ids, float* values) const {
    const Index per = n / n_group_;
    group_scores_.resize(static_cast<std::size_t>(n_group_));
    masked_.assign(sel, sel + n);
    for (Index g = 0; g < n_group_; ++g) {
      const float* s = sel + g * per;
      float best = -std::numeric_limits<float>::infinity(), second = best;
      for (Index i = 0; i < per; ++i) {
        if (s[i] > best) {
          second = best;
          best = s[i];
        } else if (s[i] > second) {
          second = s[i];
        }
      }
      group_scores_[static_cast<std::size_t>(g)] =
          score_ == GroupScore::max ? best : best + second;
    }
    group_ids_.resize(static_cast<std::size_t>(topk_group_));
    group_vals_.resize(static_cast<std::size_t>(topk_group_));
    const Index kept = TopKSelector::top_k(group_scores_.data(), n_group_, topk_group_,
                                           group_ids_.data(), group_vals_.data());
    keep_.assign(static_cast<std::size_t>(n_group_), 0);
    for (Index i = 0; i < kept; ++i) keep_[static_cast<std::size_t>(group_ids_[static_cast<std::size_t>(i)])] = 1;
    const float fill = fill_ == MaskFill::zero ? 0.0f : -std::numeric_limits<float>::infinity();
    for (Index g = 0; g < n_group_; ++g)
      if (!keep_[static_cast<std::size_t>(g)])
        std::fill(masked_.begin() + g * per, masked_.begin() + (g + 1) * per, fill);
    return TopKSelector::top_k(masked_.data(), n, k, ids, values);
  }

 private:
  Index n_group_ = 1, topk_group_ = 1;
  GroupScore score_ = GroupScore::sum_of_top2;
  MaskFill fill_ = MaskFill::neg_inf;
  // Per-token scratch (a router is used by one thread at a time, like a block).
  mutable std::vector<float> group_scores_, group_vals_, masked_;
  mutable std::vector<std::int32_t> group_ids_;
  mutable std::vector<char> keep_;
};

MOEKIT_NAMESPACE_END
