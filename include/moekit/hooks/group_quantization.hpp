// SPDX-License-Identifier: MIT
// Symmetric group-wise weight quantisation to b bits (2 <= b <= 8), per
// expert: the dequantised weights go back into an ordinary f32 expert bank
// (fake quantisation: the integer kernels are another issue), and
// quantized_bytes() reports what the compressed storage really takes.
//
// NOTE: the scheme (ggml Q4_0-style, generalised to b bits). A weight [out, in]
// is cut along its input dimension into groups of G consecutive columns per
// row (the last group of a row may be shorter). For each group, m is the
// element of largest magnitude (the first one on ties), the scale is
//     s = f16( m / qmin ),  qmin = −2^(b−1), qmax = 2^(b−1) − 1,
// rounded to binary16 because that is how it is stored, and every element w
// becomes q = clamp(round(w / s), qmin, qmax) (round half away from zero),
// dequantised to q · s. The extreme element maps to qmin exactly, so all 2^b
// codes are used (s may be negative). A group of zeros stays zero; a scale
// that underflows binary16 gives zeros; one that overflows it throws.
// Storage: the codes bit-packed densely (ceil(out · in · b / 8) bytes) plus
// one f16 scale (2 bytes) per group. Biases stay f32.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../expert/gated_experts.hpp"
#include "../expert/mlp_experts.hpp"

MOEKIT_NAMESPACE_BEGIN

namespace detail {
inline void check_quantization(int bits, Index group_size) {
  require(bits >= 2 && bits <= 8, "quantization bits: expected 2 <= bits <= 8, got ", bits);
  require(group_size >= 1, "quantization group size: expected >= 1, got ", group_size);
}
}  // namespace detail

/// w [out, in] quantised to `bits` with groups of `group_size` along `in`, and
/// dequantised back to f32 (see the NOTE).
inline Matrix quantize_dequantize(const MatrixRef& w, int bits, Index group_size) {
  detail::check_quantization(bits, group_size);
  const int qmin = -(1 << (bits - 1)), qmax = (1 << (bits - 1)) - 1;
  Matrix out(w.rows(), w.cols());
  for (Index r = 0; r < w.rows(); ++r)
    for (Index g0 = 0; g0 < w.cols(); g0 += group_size) {
      const Index g1 = std::min(w.cols(), g0 + group_size);
      float amax = 0.0f, m = 0.0f;
      for (Index c = g0; c < g1; ++c)
        if (std::fabs(w(r, c)) > amax) {
          amax = std::fabs(w(r, c));
          m = w(r, c);
        }
      const float s = f16_bits_to_float(float_to_f16_bits(m / static_cast<float>(qmin)));
      if (!std::isfinite(s))
        detail::fail("quantization: group scale ", m / static_cast<float>(qmin), " at row ", r,
                     ", columns [", g0, ", ", g1, ") overflows binary16");
      if (s == 0.0f) {
        for (Index c = g0; c < g1; ++c) out(r, c) = 0.0f;
        continue;
      }
      for (Index c = g0; c < g1; ++c) {
        const float q = std::min(static_cast<float>(qmax), std::max(static_cast<float>(qmin), std::round(w(r, c) / s)));
        out(r, c) = q * s;
      }
    }
  return out;
}

/// Bytes of a [rows, cols] weight stored with `bits`-bit codes and one f16
/// scale per group of `group_size` along cols.
inline std::int64_t quantized_bytes(Index rows, Index cols, int bits, Index group_size) {
  detail::check_quantization(bits, group_size);
  const std::int64_t codes = (static_cast<std::int64_t>(rows) * cols * bits + 7) / 8;
  const std::int64_t groups = static_cast<std::int64_t>(rows) * ((cols + group_size - 1) / group_size);
  return codes + 2 * groups;
}

/// Bytes of one expert of a gated bank at `bits` (gate, up, down quantised; biases f32).
template <class Gate>
std::int64_t expert_bytes(const GatedExperts<Gate>& bank, int bits, Index group_size) {
  const Index f = bank.ffn_size(), d = bank.hidden_size();
  const std::int64_t biases = (bank.gate_bias().size() ? f : 0) + (bank.up_bias().size() ? f : 0) +
                              (bank.down_bias().size() ? d : 0);
  return 2 * quantized_bytes(f, d, bits, group_size) + quantized_bytes(d, f, bits, group_size) + 4 * biases;
}
/// Bytes of one expert of an MLP bank at `bits` (w_in, w_out quantised; biases f32).
template <class Act>
std::int64_t expert_bytes(const MlpExperts<Act>& bank, int bits, Index group_size) {
  const Index f = bank.ffn_size(), d = bank.hidden_size();
  const std::int64_t biases = (bank.in_bias().size() ? f : 0) + (bank.out_bias().size() ? d : 0);
  return quantized_bytes(f, d, bits, group_size) + quantized_bytes(d, f, bits, group_size) + 4 * biases;
}

/// f32 bytes of one expert of a gated bank (weights and biases).
template <class Gate>
std::int64_t expert_fp32_bytes(const GatedExperts<Gate>& bank) {
  const Index f = bank.ffn_size(), d = bank.hidden_size();
  return 4 * (3 * f * d + (bank.gate_bias().size() ? f : 0) + (bank.up_bias().size() ? f : 0) +
              (bank.down_bias().size() ? d : 0));
}
/// f32 bytes of one expert of an MLP bank (weights and biases).
template <class Act>
std::int64_t expert_fp32_bytes(const MlpExperts<Act>& bank) {
  const Index f = bank.ffn_size(), d = bank.hidden_size();
  return 4 * (2 * f * d + (bank.in_bias().size() ? f : 0) + (bank.out_bias().size() ? d : 0));
}

/// The gated bank with expert e's weights quantised to bits[e] and dequantised
/// (a new bank; biases, gate policy and output scale unchanged).
template <class Gate>
GatedExperts<Gate> quantize_experts(const GatedExperts<Gate>& bank, const std::vector<int>& bits, Index group_size) {
  const Index E = bank.num_experts(), f = bank.ffn_size(), d = bank.hidden_size();
  detail::require_size("bits per expert", static_cast<Index>(bits.size()), E);
  Matrix gate(E * f, d), up(E * f, d), down(E * d, f);
  for (Index e = 0; e < E; ++e) {
    const int b = bits[static_cast<std::size_t>(e)];
    gate.middleRows(e * f, f) = quantize_dequantize(bank.gate(e), b, group_size);
    up.middleRows(e * f, f) = quantize_dequantize(bank.up(e), b, group_size);
    down.middleRows(e * d, d) = quantize_dequantize(bank.down(e), b, group_size);
  }
  GatedExperts<Gate> out(E, std::move(gate), std::move(up), std::move(down), bank.gate_fn());
  out.set_biases(bank.gate_bias(), bank.up_bias(), bank.down_bias());
  out.set_output_scale(bank.output_scale());
  if (!bank.uses_packed_kernels()) out.use_packed_kernels(false);
  return out;
}

/// The MLP bank with expert e's weights quantised to bits[e] and dequantised.
template <class Act>
MlpExperts<Act> quantize_experts(const MlpExperts<Act>& bank, const std::vector<int>& bits, Index group_size) {
  const Index E = bank.num_experts(), f = bank.ffn_size(), d = bank.hidden_size();
  detail::require_size("bits per expert", static_cast<Index>(bits.size()), E);
  Matrix w_in(E * f, d), w_out(E * d, f);
  for (Index e = 0; e < E; ++e) {
    const int b = bits[static_cast<std::size_t>(e)];
    w_in.middleRows(e * f, f) = quantize_dequantize(bank.w_in(e), b, group_size);
    w_out.middleRows(e * d, d) = quantize_dequantize(bank.w_out(e), b, group_size);
  }
  MlpExperts<Act> out(E, std::move(w_in), std::move(w_out), bank.activation());
  out.set_biases(bank.in_bias(), bank.out_bias());
  out.set_output_scale(bank.output_scale());
  return out;
}

MOEKIT_NAMESPACE_END
