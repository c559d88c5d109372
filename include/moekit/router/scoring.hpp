// SPDX-License-Identifier: MIT
// Scoring policies: turn one token's router logits into scores.
//
// A scoring policy is a type with
//     static void apply(const float* logits, float* scores, Index n);   // [n] -> [n]
//     static constexpr const char* name;
// Scores are always computed in float32, whatever the weight type (every HF
// family upcasts its router softmax to fp32). A logit of -inf (a disabled
// expert) scores 0 under softmax and sigmoid.
#pragma once

#include <cmath>
#include <limits>

#include "../config.hpp"

MOEKIT_NAMESPACE_BEGIN

/// softmax over all experts, max-subtracted for range safety (Mixtral, Qwen,
/// OLMoE, DeepSeek-V2, DBRX, Jamba, Switch, NLLB, expert choice).
struct SoftmaxScoring {
  static constexpr const char* name = "softmax";
  static void apply(const float* logits, float* scores, Index n) noexcept {
    if (n <= 0) return;
    float m = -std::numeric_limits<float>::infinity();
    for (Index i = 0; i < n; ++i) m = logits[i] > m ? logits[i] : m;
    if (m == -std::numeric_limits<float>::infinity()) {  // every expert disabled
      for (Index i = 0; i < n; ++i) scores[i] = 0.0f;
      return;
    }
    float sum = 0.0f;
    for (Index i = 0; i < n; ++i) {
      scores[i] = std::exp(logits[i] - m);
      sum += scores[i];
    }
    const float inv = 1.0f / sum;
    for (Index i = 0; i < n; ++i) scores[i] *= inv;
  }
};

/// Element-wise logistic sigmoid (DeepSeek-V3 and relatives).
struct SigmoidScoring {
  static constexpr const char* name = "sigmoid";
  static void apply(const float* logits, float* scores, Index n) noexcept {
    for (Index i = 0; i < n; ++i) scores[i] = 1.0f / (1.0f + std::exp(-logits[i]));
  }
};

/// The logits themselves: selection on raw logits (gpt-oss, Granite, Llama-4),
/// usually with WeightSource::softmax_of_selected or sigmoid_of_selected.
struct LogitScoring {
  static constexpr const char* name = "logits";
  static void apply(const float* logits, float* scores, Index n) noexcept {
    for (Index i = 0; i < n; ++i) scores[i] = logits[i];
  }
};

MOEKIT_NAMESPACE_END
