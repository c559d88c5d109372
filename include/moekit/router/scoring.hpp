// SPDX-License-Identifier: MIT
// Scoring policies: turn one token's router logits into selection scores.
//
// A scoring policy is a type with
//     static void apply(const float* logits, float* scores, Index n);   // [n] -> [n]
// Scores are always computed in float32, whatever the weight type (every HF
// family upcasts its softmax to fp32).
#pragma once

#include <cmath>

#include "../config.hpp"

MOEKIT_NAMESPACE_BEGIN

/// softmax over all experts, max-subtracted for range safety.
struct SoftmaxScoring {
  static void apply(const float* logits, float* scores, Index n) noexcept {
    if (n <= 0) return;
    float m = logits[0];
    for (Index i = 1; i < n; ++i) m = logits[i] > m ? logits[i] : m;
    float sum = 0.0f;
    for (Index i = 0; i < n; ++i) {
      scores[i] = std::exp(logits[i] - m);
      sum += scores[i];
    }
    const float inv = 1.0f / sum;
    for (Index i = 0; i < n; ++i) scores[i] *= inv;
  }
};

MOEKIT_NAMESPACE_END
