// SPDX-License-Identifier: MIT
// NEON (AArch64 Advanced SIMD) kernels over packed weights (packing.hpp,
// quantized.hpp): the drivers that run the register tiles of tiles.hpp over a
// matrix, panel by panel, for f32 / bf16 / f16 / int8 / int4 weights, and
// SiLU. NEON is baseline on AArch64, so no target attribute is needed.
#pragma once

#include "../target.hpp"

#ifdef MOEKIT_HAVE_NEON_KERNELS
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "../rows.hpp"
#include "tiles.hpp"

MOEKIT_NAMESPACE_BEGIN
namespace kernels {
namespace neon {

// Panel B's weights as f32 [K, W] in out: exactly weights8's values, so a
// tile over the decoded panel computes the same bytes as one over the source.
template <Index W, class Src>
inline const float* decode_panel(const Src& B, Index K, float* out) {
  Index k = 0;
  for (; k + 1 < K; k += 2)
#pragma GCC unroll 4
    for (Index off = 0; off < W; off += 8) {
      float32x4_t lo, hi;
      weights8<W, 0>(B, k, off, lo, hi);
      vst1q_f32(out + k * W + off, lo);
      vst1q_f32(out + k * W + off + 4, hi);
      weights8<W, 1>(B, k + 1, off, lo, hi);
      vst1q_f32(out + (k + 1) * W + off, lo);
      vst1q_f32(out + (k + 1) * W + off + 4, hi);
    }
  if (k < K)
    for (Index off = 0; off < W; off += 8) {
      float32x4_t lo, hi;
      weights8<W, 0>(B, k, off, lo, hi);
      vst1q_f32(out + k * W + off, lo);
      vst1q_f32(out + k * W + off + 4, hi);
    }
  return out;
}

// Row tiles of m rows against one panel (source B, panel p) into its ncols columns.
template <Index W, class Src>
inline void panel_rows(const float* A, Index lda, Index m, Index K, const Src& B, Index p,
                       Index ncols, float* O0, float* O1, Index ldo) {
  const Panels<1, Src> b{B};
  panel_row_tiles<W, kTileRows<W>>(m, p, ncols, O0, O1, ldo,
                                   [&](Index i, auto mr, float* o0, float* o1, Index ld) {
                                     tile<W, mr, 1>(A + i * lda, lda, K, b, o0, o1, ld);
                                   });
}

// NOTE: bf16 / f16 / int8 / int4 weights cost 2-7 instructions per 4 to widen
// or decode beside the FMAs. With more rows than one tile, each panel is
// decoded once into an f32 buffer (K · W floats: L2) and every row tile runs
// over it; one row tile (decode) decodes in registers as it streams. One row
// runs kRowPanels panels at once: a single row against one panel would give
// each 4 columns one chain of dependent FMAs, waiting on their latency.
template <Index W, class Bank>
inline void run_panels(const float* A, Index lda, Index m, Index K, const Bank& bank, Index c0,
                       Index c1, float* O0, float* O1, Index ldo) {
  using Src = decltype(bank(0));
  constexpr bool kDecodeOnce = !std::is_same_v<Src, const float*>;
  const bool decode = kDecodeOnce && m > kTileRows<W>;
  float* dec = decode ? detail::panel_scratch(K * W) : nullptr;
  Index p = c0 / kPanel;
  constexpr int NP = kRowPanels<W>;
  if (m == 1)  // one row: NP full panels at a time while they last
    for (; (p + NP) * kPanel <= c1; p += NP)
      tile<W, 1, NP>(A, lda, K, panels_from<NP>(bank, p), O0 + p * kPanel,
                     W == 32 ? O1 + p * kPanel : nullptr, ldo);
  for (; p * kPanel < c1; ++p) {
    const Index ncols = (c1 - p * kPanel) < kPanel ? (c1 - p * kPanel) : kPanel;
    if constexpr (kDecodeOnce)
      if (decode) {
        panel_rows<W>(A, lda, m, K, decode_panel<W>(bank(p), K, dec), p, ncols, O0, O1, ldo);
        continue;
      }
    panel_rows<W>(A, lda, m, K, bank(p), p, ncols, O0, O1, ldo);
  }
}

template <class T = float>
inline void gate_up(ActivationRows rows, Index m, Index K, const T* packed, Index f, Index c0,
                    Index c1, float* G, float* U, Index ldo) {
  (void)f;
  Index lda = 0;
  const float* A = contiguous_rows(rows, m, K, lda);
  run_panels<2 * kPanel>(A, lda, m, K, PanelBank<T>{packed, K, 2 * kPanel}, c0, c1, G, U, ldo);
}
template <class T = float>
inline void matmul(const float* A, Index lda, Index m, Index K, const T* packed, Index N, Index c0,
                   Index c1, float* Y, Index ldy) {
  (void)N;
  run_panels<kPanel>(A, lda, m, K, PanelBank<T>{packed, K, kPanel}, c0, c1, Y, nullptr, ldy);
}

/// int8 (Bits = 8) / int4 (Bits = 4) kernels over quantized.hpp panels: each
/// weight is code · group scale (the dequantised master, bit for bit).
template <int Bits>
inline void gate_up_quant(ActivationRows rows, Index m, Index K, const std::uint8_t* codes,
                          const float* scales, Index f, Index c0, Index c1, float* G, float* U,
                          Index ldo) {
  (void)f;
  Index lda = 0;
  const float* A = contiguous_rows(rows, m, K, lda);
  run_panels<2 * kPanel>(A, lda, m, K, QuantBank<Bits>{codes, scales, K, 2 * kPanel}, c0, c1, G, U,
                         ldo);
}
template <int Bits>
inline void matmul_quant(const float* A, Index lda, Index m, Index K, const std::uint8_t* codes,
                         const float* scales, Index N, Index c0, Index c1, float* Y, Index ldy) {
  (void)N;
  run_panels<kPanel>(A, lda, m, K, QuantBank<Bits>{codes, scales, K, kPanel}, c0, c1, Y, nullptr,
                     ldy);
}

/// exp(x) for 4 lanes: x = n·ln2 + r (ln2 in two parts, |r| <= ln2 / 2), a
/// degree-6 polynomial for e^r, 2^n from the exponent bits (the AVX2 method).
inline float32x4_t exp_ps(float32x4_t x) {
  x = vminq_f32(vmaxq_f32(x, vdupq_n_f32(-88.0f)), vdupq_n_f32(89.0f));
  const float32x4_t n = vrndnq_f32(vmulq_f32(x, vdupq_n_f32(1.44269504088896341f)));
  float32x4_t r = vfmsq_f32(x, n, vdupq_n_f32(0.693145751953125f));
  r = vfmsq_f32(r, n, vdupq_n_f32(1.428606765330187045e-06f));
  float32x4_t p = vdupq_n_f32(1.0f / 720.0f);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 120.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 24.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f / 6.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(0.5f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
  p = vfmaq_f32(vdupq_n_f32(1.0f), p, r);
  // 2^n from the exponent bits: n in [-127, 128] after the clamp (128 gives +inf).
  const int32x4_t e = vshlq_n_s32(vaddq_s32(vcvtq_s32_f32(n), vdupq_n_s32(127)), 23);
  return vmulq_f32(p, vreinterpretq_f32_s32(e));
}

inline void silu_mul_f32(const float* g, const float* u, float* h, Index n) {
  Index i = 0;
  const float32x4_t one = vdupq_n_f32(1.0f);
  for (; i + 4 <= n; i += 4) {
    const float32x4_t gv = vld1q_f32(g + i);
    const float32x4_t e = exp_ps(vnegq_f32(gv));
    vst1q_f32(h + i, vmulq_f32(vdivq_f32(gv, vaddq_f32(one, e)), vld1q_f32(u + i)));
  }
  for (; i < n; ++i) h[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

}  // namespace neon
}  // namespace kernels
MOEKIT_NAMESPACE_END

#endif  // MOEKIT_HAVE_NEON_KERNELS
