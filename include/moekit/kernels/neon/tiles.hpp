// SPDX-License-Identifier: MIT
// NEON (AArch64 Advanced SIMD) register tiles over packed f32 / bf16 / f16 /
// int8 / int4 panels (packing.hpp, quantized.hpp); the drivers that run them
// over a matrix are in gemm_f32.hpp.
//
// NOTE: 32 q registers of 4 floats. A tile holds MR rows x W columns of
// accumulators (W = 32 for gate + up, 16 for down): 3 x 32 and 6 x 16 are 24
// registers, leaving 8 for the weights of one k and the row values. Every
// weight type is turned into 4-float vectors by weights8 (two per 8 columns)
// and multiplied with one fused multiply-add per row, in k order, so a
// column's bytes do not depend on the tile shape, and a panel decoded once to
// f32 (prefill) gives the same bytes as one decoded in registers (decode).
#pragma once

#include "../target.hpp"

#ifdef MOEKIT_HAVE_NEON_KERNELS
#include <cstdint>
#include <type_traits>

#include "../../core/dtype.hpp"
#include "../packing.hpp"
#include "../quantized.hpp"

MOEKIT_NAMESPACE_BEGIN
namespace kernels {
namespace neon {

/// Columns [off, off + 8) of k-row k of a panel with W values per k-row, as
/// two f32 vectors (lo: off..off+3, hi: off+4..off+7). P = k & 1 (k-pair
/// layouts: bf16 and the quantised codes keep both k of a pair side by side).
template <Index W, int P>
inline void weights8(const float* B, Index k, Index off, float32x4_t& lo, float32x4_t& hi) {
  lo = vld1q_f32(B + k * W + off);
  hi = vld1q_f32(B + k * W + off + 4);
}
template <Index W, int P>
inline void weights8(const f16* B, Index k, Index off, float32x4_t& lo, float32x4_t& hi) {
  const uint16x8_t h = vld1q_u16(reinterpret_cast<const std::uint16_t*>(B + k * W + off));
  lo = vcvt_f32_f16(vreinterpret_f16_u16(vget_low_u16(h)));
  hi = vcvt_high_f32_f16(vreinterpretq_f16_u16(h));
}
// bf16 k-pairs: a 32-bit lane is (even k in its low half, odd k in its high
// half) of one column; the value is the half moved to the top, rest cleared.
template <int P>
inline float32x4_t bf16_half(uint32x4_t pairs) {
  if constexpr (P == 0) return vreinterpretq_f32_u32(vshlq_n_u32(pairs, 16));
  return vreinterpretq_f32_u32(vandq_u32(pairs, vdupq_n_u32(0xffff0000u)));
}
template <Index W, int P>
inline void weights8(const bf16* B, Index k, Index off, float32x4_t& lo, float32x4_t& hi) {
  const auto* p = reinterpret_cast<const std::uint32_t*>(B + pair_base<P>(k) * W + 2 * off);
  lo = bf16_half<P>(vld1q_u32(p));
  hi = bf16_half<P>(vld1q_u32(p + 4));
}

// 16-bit codes of one column's k-pair per 32-bit lane (even k low): the value
// for k is the half P, sign-extended, times the column's group scale, which
// rounds exactly as the dequantised master weight (code · scale) does.
template <int P>
inline float32x4_t scaled_half(int16x8_t pairs, float32x4_t scale) {
  const int32x4_t w = vreinterpretq_s32_s16(pairs);
  const int32x4_t q = P == 0 ? vshrq_n_s32(vshlq_n_s32(w, 16), 16) : vshrq_n_s32(w, 16);
  return vmulq_f32(vcvtq_f32_s32(q), scale);
}
template <Index W, int P>
inline void weights8(const QuantPanel<8>& B, Index k, Index off, float32x4_t& lo, float32x4_t& hi) {
  // k-pair k / 2 holds 2W bytes: byte 2j + P is column j's code for k.
  const Index k0 = pair_base<P>(k);  // both halves of a pair share its loads
  const int8x16_t c = vld1q_s8(reinterpret_cast<const std::int8_t*>(B.codes + k0 * W + 2 * off));
  const float* s = B.scales + (k0 / kQuantGroup) * W + off;
  lo = scaled_half<P>(vmovl_s8(vget_low_s8(c)), vld1q_f32(s));
  hi = scaled_half<P>(vmovl_high_s8(c), vld1q_f32(s + 4));
}
template <Index W, int P>
inline void weights8(const QuantPanel<4>& B, Index k, Index off, float32x4_t& lo, float32x4_t& hi) {
  // k-pair k / 2 holds W bytes; element e = 2j + P of column j sits in the low
  // nibble of byte e (e < W) or the high nibble of byte e - W, as code + 8.
  const Index e = 2 * off;
  const Index k0 = pair_base<P>(k);  // both halves of a pair share its loads
  const uint8x16_t b = vld1q_u8(B.codes + (k0 >> 1) * W + (e < W ? e : e - W));
  const uint8x16_t nib = e < W ? vandq_u8(b, vdupq_n_u8(0x0f)) : vshrq_n_u8(b, 4);
  const int16x8_t bias = vdupq_n_s16(8);
  const float* s = B.scales + (k0 / kQuantGroup) * W + off;
  lo = scaled_half<P>(vsubq_s16(vreinterpretq_s16_u16(vmovl_u8(vget_low_u8(nib))), bias),
                      vld1q_f32(s));
  hi = scaled_half<P>(vsubq_s16(vreinterpretq_s16_u16(vmovl_high_u8(nib)), bias), vld1q_f32(s + 4));
}

/// Rows of the full tiles (24 accumulators) and panels of the one-row tiles (16).
template <Index W>
inline constexpr int kTileRows = W == 32 ? 2 : 5;
template <Index W>
inline constexpr int kRowPanels = W == 32 ? 2 : 4;

// NOTE: left alone, GCC 12 hoists the weight loads and decodes of a whole k
// (or of every panel of a one-row tile) above the FMAs, which needs more than
// 32 registers: the 3- and 6-row tiles and the one-row int8 / int4 tiles
// spilled accumulators to the stack every k (up to 116 stack accesses per
// tile body). An empty asm with a memory clobber after each 8 columns keeps
// those loads after it; the accumulators live in registers, so nothing spills.
__attribute__((always_inline)) inline void step_barrier() { __asm__ volatile("" ::: "memory"); }

// One k of a tile (P = k & 1): per 8 columns, the weights, then MR rows of FMAs.
template <Index W, int MR, int P, class Src>
__attribute__((always_inline)) inline void tile_step(const float* A, Index lda, Index k,
                                                     const Src& B, float32x4_t (&acc)[MR][W / 4]) {
#pragma GCC unroll 4
  for (Index off = 0; off < W; off += 8) {
    float32x4_t lo, hi;
    weights8<W, P>(B, k, off, lo, hi);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const float a = A[r * lda + k];
      acc[r][off / 4] = vfmaq_n_f32(acc[r][off / 4], lo, a);
      acc[r][off / 4 + 1] = vfmaq_n_f32(acc[r][off / 4 + 1], hi, a);
    }
    step_barrier();
  }
}

/// MR rows against NP panels (output column block j at j * kPanel): for W =
/// 32 the first 16 columns go to O0 (gate), the next 16 to O1 (up); for W = 16
/// all go to O0.
template <Index W, int MR, int NP, class Src>
inline void tile(const float* A, Index lda, Index K, const Panels<NP, Src>& panels, float* O0,
                 float* O1, Index ldo) {
  const Panels<NP, Src> B = panels;  // a local copy stays in registers across the barriers
  float32x4_t acc[NP][MR][W / 4];
#pragma GCC unroll 4
  for (int j = 0; j < NP; ++j)
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
      for (Index q = 0; q < W / 4; ++q) acc[j][r][q] = vdupq_n_f32(0.0f);
  Index k = 0;
  for (; k + 1 < K; k += 2) {  // k-pair layouts take each half with its own shift
#pragma GCC unroll 4
    for (int j = 0; j < NP; ++j) tile_step<W, MR, 0>(A, lda, k, B[j], acc[j]);
#pragma GCC unroll 4
    for (int j = 0; j < NP; ++j) tile_step<W, MR, 1>(A, lda, k + 1, B[j], acc[j]);
  }
  if (k < K)
#pragma GCC unroll 4
    for (int j = 0; j < NP; ++j) tile_step<W, MR, 0>(A, lda, k, B[j], acc[j]);
#pragma GCC unroll 4
  for (int j = 0; j < NP; ++j)
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
      for (Index q = 0; q < W / 4; ++q) {
        float* out =
            q < 4 ? O0 + r * ldo + j * kPanel + 4 * q : O1 + r * ldo + j * kPanel + 4 * (q - 4);
        vst1q_f32(out, acc[j][r][q]);
      }
}

/// Calls tile(std::integral_constant<int, MR>{}) with MR = mr, 1 <= mr <=
/// MaxRows (<= 6): a row count known at run time picks a tile compiled for it.
template <int MaxRows, class Tile>
inline void with_rows(Index mr, const Tile& tile) {
  switch (mr) {
    case 6:
      if constexpr (MaxRows >= 6) return tile(std::integral_constant<int, 6>{});
      break;
    case 5:
      if constexpr (MaxRows >= 5) return tile(std::integral_constant<int, 5>{});
      break;
    case 4:
      if constexpr (MaxRows >= 4) return tile(std::integral_constant<int, 4>{});
      break;
    case 3:
      if constexpr (MaxRows >= 3) return tile(std::integral_constant<int, 3>{});
      break;
    case 2: return tile(std::integral_constant<int, 2>{});
    default: break;
  }
  tile(std::integral_constant<int, 1>{});
}

/// Row tiles of m rows, MR at a time, into the ncols columns of panel p of O0
/// (and of O1 for W = 32, ld ldo): rows(i, MR', o0, o1, ld) computes rows
/// i .. i + MR' - 1 (MR' an integral_constant, <= MR) into o0 / o1 at row
/// stride ld. A column tail (ncols < 16) goes through a stack tile, then is
/// copied, so nothing past column ncols is written.
template <Index W, int MR, class Rows>
inline void panel_row_tiles(Index m, Index p, Index ncols, float* O0, float* O1, Index ldo,
                            const Rows& rows) {
  const bool full = ncols == kPanel;
  alignas(16) float t0[MR * kPanel], t1[MR * kPanel];
  for (Index i = 0; i < m; i += MR) {
    const Index mr = (m - i) < MR ? (m - i) : MR;
    float* o0 = full ? O0 + i * ldo + p * kPanel : t0;
    float* o1 = full && W == 32 ? O1 + i * ldo + p * kPanel : t1;
    with_rows<MR>(mr, [&](auto r) { rows(i, r, o0, o1, full ? ldo : kPanel); });
    if (!full)
      for (Index r = 0; r < mr; ++r)
        for (Index j = 0; j < ncols; ++j) {
          O0[(i + r) * ldo + p * kPanel + j] = t0[r * kPanel + j];
          if (W == 32) O1[(i + r) * ldo + p * kPanel + j] = t1[r * kPanel + j];
        }
  }
}

}  // namespace neon
}  // namespace kernels
MOEKIT_NAMESPACE_END

#endif  // MOEKIT_HAVE_NEON_KERNELS
