// SPDX-License-Identifier: MIT
// int8 / int4 expert weights with group-wise scales, in the packed panel
// layout (packing.hpp).
//
// NOTE: a packed weight with W values per k-row (W = 16 for a plain panel,
// 32 for a gate + up panel) stores, per panel, K rows of W signed codes
// (int8: one byte each; int4: W/2 bytes, byte j holding column j in its low
// nibble and column j + W/2 in its high nibble, each stored as code + 8) and,
// per group of kQuantGroup consecutive k and per column, one f32 scale. (The
// int4 split puts the gate half of a gate + up row in the low nibbles and the
// up half in the high ones, so a kernel unpacks a row with one shift.) Symmetric quantisation: scale = max|w| / qmax over
// the group (qmax 127 or 7), code = round(w / scale). Quantising also writes
// the dequantised values code · scale back into the f32 master weights, so the
// reference and the kernels compute with exactly the same weights. AVX-512 and
// AVX2 kernels decode the codes in registers as they stream them
// (avx512/gemm_f32.hpp, avx2/gemm_f32.hpp); scalar and NEON dequantise one
// panel into a per-thread f32 buffer and run their f32 panel kernel on it
// (dispatch.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "packing.hpp"

MOEKIT_NAMESPACE_BEGIN
namespace kernels {

constexpr Index kQuantGroup = 32;

inline Index quant_groups(Index K) noexcept { return (K + kQuantGroup - 1) / kQuantGroup; }
/// Bytes of codes of one panel of K rows, W values per row, `bits` 8 or 4.
inline Index quant_panel_code_bytes(Index K, Index W, int bits) noexcept {
  return bits == 8 ? K * W : K * W / 2;
}
/// Floats of scales of one panel.
inline Index quant_panel_scales(Index K, Index W) noexcept { return quant_groups(K) * W; }

/// Quantises the panel columns of `rows` source matrices (each [N, K], row
/// pointers src[s]), `per` = values per source per k-row (16), into codes and
/// scales of panel p, writing dequantised values back into the sources.
inline void quantize_panel(float* const* src, int nsrc, Index N, Index K, Index p, int bits,
                           std::uint8_t* codes, float* scales) {
  const Index W = nsrc * kPanel;
  const float qmax = bits == 8 ? 127.0f : 7.0f;
  for (Index g = 0; g < quant_groups(K); ++g) {
    const Index k0 = g * kQuantGroup, k1 = std::min(K, k0 + kQuantGroup);
    for (int s = 0; s < nsrc; ++s)
      for (Index j = 0; j < kPanel; ++j) {
        const Index n = p * kPanel + j, col = s * kPanel + j;
        float amax = 0.0f;
        if (n < N)
          for (Index k = k0; k < k1; ++k) amax = std::max(amax, std::fabs(src[s][n * K + k]));
        const float scale = amax > 0.0f ? amax / qmax : 0.0f;
        scales[g * W + col] = scale;
        for (Index k = k0; k < k1; ++k) {
          float q = 0.0f;
          if (n < N && scale > 0.0f) {
            q = std::nearbyint(src[s][n * K + k] / scale);
            q = std::max(-qmax, std::min(qmax, q));
            src[s][n * K + k] = q * scale;  // dequantised master
          } else if (n < N) {
            src[s][n * K + k] = 0.0f;
          }
          const auto code = static_cast<std::int8_t>(q);
          if (bits == 8) {
            codes[k * W + col] = static_cast<std::uint8_t>(code);
          } else {
            std::uint8_t& byte = codes[k * (W / 2) + col % (W / 2)];
            const auto nib = static_cast<std::uint8_t>(code + 8);
            byte = (col < W / 2) ? static_cast<std::uint8_t>((byte & 0xf0u) | nib)
                                 : static_cast<std::uint8_t>((byte & 0x0fu) | (nib << 4));
          }
        }
      }
  }
}

namespace detail {

inline void dequant_panel_scalar(const std::uint8_t* codes, const float* scales, Index K, Index W,
                                 int bits, float* out) noexcept {
  for (Index k = 0; k < K; ++k) {
    const float* s = scales + (k / kQuantGroup) * W;
    for (Index j = 0; j < W; ++j) {
      int q;
      if (bits == 8) {
        q = static_cast<std::int8_t>(codes[k * W + j]);
      } else {
        const std::uint8_t b = codes[k * (W / 2) + j % (W / 2)];
        q = static_cast<int>(j < W / 2 ? (b & 0x0fu) : (b >> 4)) - 8;
      }
      out[k * W + j] = static_cast<float>(q) * s[j];
    }
  }
}

}  // namespace detail

}  // namespace kernels
MOEKIT_NAMESPACE_END
