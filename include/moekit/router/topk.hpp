// SPDX-License-Identifier: MIT
// TopKSelector: the k largest selection scores of one token, in rank order.
//
// Rank order is larger score first; equal scores go to the lower expert id.
// This tie rule is moekit's contract everywhere (torch.topk leaves it
// unspecified), so a tie such as an all-zero token or two duplicated router
// rows always selects the same experts. An expert whose selection score is
// -inf (disabled, or masked out) is never selected: the slot stays empty.
//
// A selection policy is a type with
//     Index select(const float* sel, Index n, Index k, std::int32_t* ids, float* values) const;
// that writes up to k (id, value) pairs in rank order and returns how many.
#pragma once

#include <cstdint>
#include <limits>

#include "../config.hpp"

MOEKIT_NAMESPACE_BEGIN

struct TopKSelector {
  /// True when expert a (score sa) ranks before expert b (score sb).
  static bool ranks_before(float sa, std::int32_t a, float sb, std::int32_t b) noexcept {
    return sa > sb || (sa == sb && a < b);
  }

  /// Writes the best min(k, #finite-or-+inf) of scores[0..n) to ids / values in
  /// rank order and returns their number. Requires k >= 1, no NaN.
  /// Insertion into a sorted list of k: O(n·k), fastest for the small k of MoE.
  static Index top_k(const float* scores, Index n, Index k, std::int32_t* ids,
                     float* values) noexcept {
    Index filled = 0;
    for (Index e = 0; e < n; ++e) {
      const float s = scores[e];
      if (s == -std::numeric_limits<float>::infinity()) continue;
      const auto id = static_cast<std::int32_t>(e);
      // Scanning e in increasing order means an equal score never displaces an
      // earlier (lower) id: only strictly larger scores move ahead.
      if (filled == k && !(s > values[k - 1])) continue;
      Index pos = filled < k ? filled++ : k - 1;
      while (pos > 0 && ranks_before(s, id, values[pos - 1], ids[pos - 1])) {
        values[pos] = values[pos - 1];
        ids[pos] = ids[pos - 1];
        --pos;
      }
      values[pos] = s;
      ids[pos] = id;
    }
    return filled;
  }

  /// Kept for the policy interface: selects top_k(sel, n, k).
  Index select(const float* sel, Index n, Index k, std::int32_t* ids, float* values) const noexcept {
    return top_k(sel, n, k, ids, values);
  }
};

MOEKIT_NAMESPACE_END
