// SPDX-License-Identifier: MIT
// int8 / int4 expert weights with group-wise scales, in the packed panel
// layout (packing.hpp).
//
// NOTE: a packed weight with W values per k-row (W = 16 for a plain panel,
// 32 for a gate + up panel) stores, per panel, one f32 scale per group of
// kQuantGroup consecutive k and per column, and signed codes in k-pairs, as
// bf16 panels are stored (packing.hpp): value (k, j) is element
// e = 2j + (k & 1) of k-pair k / 2, which holds 2W elements (an odd K is
// padded with code 0). int8: one byte per element, e in order. int4: W bytes
// per k-pair, element e in the low nibble of byte e (e < W) or the high nibble
// of byte e - W, each stored as code + 8. So a gate + up k-pair is 32 bytes
// whose low nibbles are the gate pairs and high nibbles the up pairs, and a
// k-pair of a plain panel is 16 bytes: columns 0-7 in the low nibbles, 8-15 in
// the high ones. The pairs are what vdpbf16ps multiplies (codes are exact in
// bf16; the scale is applied per group in f32). Symmetric quantisation:
// scale = max|w| / qmax over the group (qmax 127 or 7), code = round(w / scale).
// Quantising also writes the dequantised values code · scale back into the f32
// master weights, so the reference and the kernels compute with exactly the
// same weights. AVX-512, AVX2 and NEON kernels decode the codes in registers
// as they stream them (avx512/gemm_f32.hpp, avx512/gemm_bf16_dot.hpp,
// avx2/quant_tiles.hpp: the AVX-512 f32 tiles (int8 and int4) and AVX2's
// int4 tiles sum a · code per group and apply the scale once per group,
// AVX2 int8 and neon/tiles.hpp code · scale per weight, as dequantised);
// scalar dequantises one panel into a per-thread f32 buffer and runs its f32
// panel kernel on it (dispatch.hpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>

#include "../core/scratch_arena.hpp"
#include "packing.hpp"

MOEKIT_NAMESPACE_BEGIN
namespace kernels {

constexpr Index kQuantGroup = 32;

inline Index quant_groups(Index K) noexcept { return (K + kQuantGroup - 1) / kQuantGroup; }
/// Bytes of codes of one k-pair (two rows) of a panel with W values per row.
constexpr Index quant_pair_bytes(Index W, int bits) noexcept { return bits == 8 ? 2 * W : W; }
/// Bytes of codes of one panel of K rows, W values per row, `bits` 8 or 4.
inline Index quant_panel_code_bytes(Index K, Index W, int bits) noexcept {
  return (K + 1) / 2 * quant_pair_bytes(W, bits);
}
/// Byte holding element e (0 <= e < 2W) of k-pair kp (int4: low nibble if e < W, else high).
inline Index quant_code_byte(Index kp, Index e, Index W, int bits) noexcept {
  return kp * quant_pair_bytes(W, bits) + (bits == 8 ? e : e % W);
}
/// Floats of scales of one panel.
inline Index quant_panel_scales(Index K, Index W) noexcept { return quant_groups(K) * W; }

namespace detail {
// Writes code q of (k, col) of a panel with W values per k-row.
inline void store_code(std::uint8_t* codes, Index k, Index col, Index W, int bits, int q) noexcept {
  const Index e = 2 * col + (k & 1);
  std::uint8_t& byte = codes[quant_code_byte(k >> 1, e, W, bits)];
  if (bits == 8) {
    byte = static_cast<std::uint8_t>(static_cast<std::int8_t>(q));
  } else {
    const auto nib = static_cast<std::uint8_t>(q + 8);
    byte = e < W ? static_cast<std::uint8_t>((byte & 0xf0u) | nib)
                 : static_cast<std::uint8_t>((byte & 0x0fu) | (nib << 4));
  }
}
}  // namespace detail

/// Quantises panel p of `nsrc` source matrices (each [N, K], row-major, src[s];
/// 16 columns of each per k-row: W = 16·nsrc) into codes and scales, writing
/// the dequantised values back into the sources.
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
          detail::store_code(codes, k, col, W, bits, static_cast<int>(q));
        }
        if (k1 == K && (K & 1)) detail::store_code(codes, K, col, W, bits, 0);  // pad
      }
  }
}

/// One int8 / int4 panel as stored: codes in k-pairs, one scale per group and column.
template <int Bits>
struct QuantPanel {
  const std::uint8_t* codes;
  const float* scales;
};
/// The panels of one int8 / int4 weight (W values per k-row), as PanelBank
/// (packing.hpp) for the AVX2 and NEON drivers.
template <int Bits>
struct QuantBank {
  const std::uint8_t* codes;
  const float* scales;
  Index K, W;
  QuantPanel<Bits> operator()(Index p) const noexcept {
    return {codes + p * quant_panel_code_bytes(K, W, Bits), scales + p * quant_panel_scales(K, W)};
  }
  const char* bytes_of(Index p) const noexcept {
    return reinterpret_cast<const char*>(codes + p * quant_panel_code_bytes(K, W, Bits));
  }
  Index size_of(Index) const noexcept { return quant_panel_code_bytes(K, W, Bits); }
};

/// int8 activations for the int8-activation kernels (avx512/gemm_int8_vnni.hpp,
/// avx2/gemm_int8_act.hpp): a group
/// of n <= kQuantGroup inputs of one row gets scale = max|a| / 127 and codes
/// round(a · (127 / max|a|)) (nearest even), so a ≈ code · scale, with an error
/// of at most scale / 2 per input. Writes the n codes and returns the scale: 0
/// (codes 0) for a group whose max|a| is below kActivationTiny (all zero, or
/// 127 / max|a| would overflow), NaN (codes 0) if an input is not finite, so
/// the output shows it. The kernels quantise with the same operations, so their
/// codes and scales are these, bit for bit.
constexpr float kActivationTiny = 0x1p-120f;
inline float quantize_activation_group(const float* a, Index n, std::int8_t* q) noexcept {
  float amax = 0.0f;
  bool finite = true;
  for (Index i = 0; i < n; ++i) {
    finite = finite && std::isfinite(a[i]);
    amax = std::max(amax, std::fabs(a[i]));
  }
  if (!finite) {
    for (Index i = 0; i < n; ++i) q[i] = 0;
    return std::numeric_limits<float>::quiet_NaN();
  }
  const bool tiny = !(amax >= kActivationTiny);
  const float inv = tiny ? 0.0f : 127.0f / amax;
  for (Index i = 0; i < n; ++i)
    q[i] =
        static_cast<std::int8_t>(std::max(-127.0f, std::min(127.0f, std::nearbyint(a[i] * inv))));
  return tiny ? 0.0f : amax / 127.0f;
}

namespace detail {

// A per-thread f32 buffer for one dequantised or decoded panel (scalar and NEON).
struct DequantPanelTag;
inline float* panel_scratch(Index floats) {
  return moekit::detail::thread_scratch<DequantPanelTag, float>(floats);
}

inline void dequant_panel_scalar(const std::uint8_t* codes, const float* scales, Index K, Index W,
                                 int bits, float* out) noexcept {
  for (Index k = 0; k < K; ++k) {
    const float* s = scales + (k / kQuantGroup) * W;
    for (Index j = 0; j < W; ++j) {
      const Index e = 2 * j + (k & 1);
      const std::uint8_t b = codes[quant_code_byte(k >> 1, e, W, bits)];
      const int q = bits == 8 ? static_cast<std::int8_t>(b)
                              : static_cast<int>(e < W ? (b & 0x0fu) : (b >> 4)) - 8;
      out[k * W + j] = static_cast<float>(q) * s[j];
    }
  }
}

}  // namespace detail

}  // namespace kernels
MOEKIT_NAMESPACE_END
