// SPDX-License-Identifier: MIT
// The output epilogue shared by the expert banks: add the per-expert output
// bias and apply the output scale on the columns [c0, c1) a task computed.
#pragma once

#include "../core/tensor.hpp"

MOEKIT_NAMESPACE_BEGIN
namespace detail {

/// out [n, d] columns [c0, c1): (out + bias[e]) · scale. `bias` is [E, d] or empty.
inline void apply_output_epilogue(float* out, Index n, Index d, Index c0, Index c1, const Matrix& bias, Index e,
                                  float scale) {
  if (bias.size() == 0 && scale == 1.0f) return;
  for (Index r = 0; r < n; ++r)
    for (Index c = c0; c < c1; ++c) {
      float v = out[r * d + c];
      if (bias.size()) v += bias(e, c);
      out[r * d + c] = v * scale;
    }
}

}  // namespace detail
MOEKIT_NAMESPACE_END
