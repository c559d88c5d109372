// SPDX-License-Identifier: MIT
// AVX2 + FMA kernels over packed weights (packing.hpp, quantized.hpp): the
// drivers that run the register tiles of tiles.hpp (f32 / bf16 / f16) and
// quant_tiles.hpp (int8 / int4) over a matrix, panel by panel, and SiLU.
#pragma once

#include "../target.hpp"

#ifdef MOEKIT_HAVE_X86_KERNELS
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "../../core/scratch_arena.hpp"
#include "../rows.hpp"
#include "quant_tiles.hpp"
#include "tiles.hpp"

MOEKIT_NAMESPACE_BEGIN
namespace kernels {
namespace avx2 {

// Per-thread buffer of one panel decoded to f32 (prefill).
struct DecodedPanelTag;

// Panel p's weights as f32 [K, W] in out (the values weights8 gives, so a tile
// over the decoded panel computes the same bytes as one over the source).
template <Index W, class Src>
MOEKIT_TARGET_AVX2 inline const float* decode_panel(const Src& B, Index K, float* out) {
  Index k = 0;
  for (; k + 1 < K; k += 2)
#pragma GCC unroll 4
    for (Index off = 0; off < W; off += 8) {
      _mm256_store_ps(out + k * W + off, weights8<W, 0>(B, k, off));
      _mm256_store_ps(out + (k + 1) * W + off, weights8<W, 1>(B, k + 1, off));
    }
  if (k < K)
    for (Index off = 0; off < W; off += 8)
      _mm256_store_ps(out + k * W + off, weights8<W, 0>(B, k, off));
  return out;
}

// NOTE: bf16 / f16 / int8 / int4 panels cost 2-8 extra instructions per 8
// weights to widen or decode, which the FMAs of a 3- or 6-row tile cannot
// hide (bf16 prefill ran at ~45 % of the FMA peak against f32's ~70 %). With
// more rows than one tile, each panel is decoded once into an f32 buffer
// (256 KiB at K = 2048: L2) and every row tile runs the f32 tile over it. The
// decoded values are exactly weights8's (int4: code_vector's, for the same
// group-scaled tile), so the bytes do not change.
template <class Src>
inline constexpr bool kDecodeOnce = !std::is_same_v<Src, const float*>;

// The tile for a source: group-scaled for int4, plain otherwise.
template <int MR, int NP, class Src>
MOEKIT_TARGET_AVX2 inline void gate_up_tile_for(const float* A, Index lda, Index K,
                                                const Panels<NP, Src>& B, float* G, float* U,
                                                Index ldo, Ahead ahead, GroupCorrections corr) {
  if constexpr (kGroupScaled<Src>)
    group_scaled_tile<MR, 4, NP>(A, lda, K, B, G, U, ldo, ahead, corr);
  else
    gate_up_tile<MR, NP>(A, lda, K, B, G, U, ldo, ahead);
}
template <int MR, int NP, class Src>
MOEKIT_TARGET_AVX2 inline void down_tile_for(const float* A, Index lda, Index K,
                                             const Panels<NP, Src>& B, float* Y, Index ldy,
                                             Ahead ahead, GroupCorrections corr) {
  if constexpr (kGroupScaled<Src>)
    group_scaled_tile<MR, 2, NP>(A, lda, K, B, Y, nullptr, ldy, ahead, corr);
  else
    down_tile<MR, NP>(A, lda, K, B, Y, ldy, ahead);
}

// One row tile of mr (<= kGateUpRows / kDownRows) rows.
template <class Src>
MOEKIT_TARGET_AVX2 inline void gate_up_rows(Index mr, const float* a, Index lda, Index K,
                                            const Src& B, float* g, float* u, Index ld,
                                            const Ahead& ahead, GroupCorrections c) {
  const Panels<1, Src> b{B};
  switch (mr) {
    case 3: return gate_up_tile_for<3, 1>(a, lda, K, b, g, u, ld, ahead, c);
    case 2: return gate_up_tile_for<2, 1>(a, lda, K, b, g, u, ld, ahead, c);
    default: return gate_up_tile_for<1, 1>(a, lda, K, b, g, u, ld, ahead, c);
  }
}
template <class Src>
MOEKIT_TARGET_AVX2 inline void down_rows(Index mr, const float* a, Index lda, Index K, const Src& B,
                                         float* y, Index ld, const Ahead& ahead,
                                         GroupCorrections c) {
  const Panels<1, Src> b{B};
  switch (mr) {
    case 6: return down_tile_for<6, 1>(a, lda, K, b, y, ld, ahead, c);
    case 5: return down_tile_for<5, 1>(a, lda, K, b, y, ld, ahead, c);
    case 4: return down_tile_for<4, 1>(a, lda, K, b, y, ld, ahead, c);
    case 3: return down_tile_for<3, 1>(a, lda, K, b, y, ld, ahead, c);
    case 2: return down_tile_for<2, 1>(a, lda, K, b, y, ld, ahead, c);
    default: return down_tile_for<1, 1>(a, lda, K, b, y, ld, ahead, c);
  }
}

// Row tiles of m rows against one panel (source B, panel p) into its ncols
// columns; next / next_bytes: the next panel's bytes, for the tiles to ask for.
// NOTE: not inlined, so that the tiles get the registers to themselves: inlined
// into a driver that also decodes bf16 panels, GCC 12 kept the decode's mask in
// a ymm register across the whole function, and the 3-row gate + up tile over
// the decoded panel, one register short, spilled an accumulator every k
// (bf16 prefill ~0.65x of f16's over the same f32 tiles).
template <class Src>
MOEKIT_TARGET_AVX2 __attribute__((noinline)) void gate_up_panel_rows(
    const float* A, Index lda, Index m, Index K, const Src& B, Index p, Index ncols,
    const char* next, Index next_bytes, float* G, float* U, Index ldo, GroupCorrections corr) {
  const Index nt = (m + kGateUpRows - 1) / kGateUpRows;
  const bool full = ncols == kPanel;
  alignas(32) float tg[kGateUpRows * kPanel], tu[kGateUpRows * kPanel];
  for (Index i = 0; i < m; i += kGateUpRows) {
    const Index mr = (m - i) < kGateUpRows ? (m - i) : kGateUpRows;
    float* g = full ? G + i * ldo + p * kPanel : tg;
    float* u = full ? U + i * ldo + p * kPanel : tu;
    const Index ld = full ? ldo : kPanel;
    gate_up_rows(mr, A + i * lda, lda, K, B, g, u, ld,
                 ahead_share(next, next_bytes, i / kGateUpRows, nt, K), corr.rows_from(i));
    if (!full)
      for (Index r = 0; r < mr; ++r)
        for (Index j = 0; j < ncols; ++j) {
          G[(i + r) * ldo + p * kPanel + j] = tg[r * kPanel + j];
          U[(i + r) * ldo + p * kPanel + j] = tu[r * kPanel + j];
        }
  }
}
template <class Src>
MOEKIT_TARGET_AVX2 __attribute__((noinline)) void down_panel_rows(
    const float* A, Index lda, Index m, Index K, const Src& B, Index p, Index ncols,
    const char* next, Index next_bytes, float* Y, Index ldy, GroupCorrections corr) {
  const Index nt = (m + kDownRows - 1) / kDownRows;
  const bool full = ncols == kPanel;
  alignas(32) float ty[kDownRows * kPanel];
  for (Index i = 0; i < m; i += kDownRows) {
    const Index mr = (m - i) < kDownRows ? (m - i) : kDownRows;
    float* y = full ? Y + i * ldy + p * kPanel : ty;
    const Index ld = full ? ldy : kPanel;
    down_rows(mr, A + i * lda, lda, K, B, y, ld,
              ahead_share(next, next_bytes, i / kDownRows, nt, K), corr.rows_from(i));
    if (!full)
      for (Index r = 0; r < mr; ++r)
        for (Index j = 0; j < ncols; ++j) Y[(i + r) * ldy + p * kPanel + j] = ty[r * kPanel + j];
  }
}

// Hidden columns [c0, c1) panel by panel; bank(p) is panel p's weight source.
template <class Bank>
MOEKIT_TARGET_AVX2 inline void gate_up_panels(const float* A, Index lda, Index m, Index K,
                                              const Bank& bank, Index c0, Index c1, float* G,
                                              float* U, Index ldo) {
  using Src = decltype(bank(0));
  constexpr Index W = 2 * kPanel;
  const Index nt = (m + kGateUpRows - 1) / kGateUpRows;  // row tiles per panel
  const bool decode = kDecodeOnce<Src> && nt > 1;
  float* dec = decode ? moekit::detail::thread_scratch<DecodedPanelTag, float>(K * W) : nullptr;
  const GroupCorrections corr = group_corrections<Src>(A, lda, m, K);
  Index p = c0 / kPanel;
  constexpr int NP = kGateUpRowPanels;
  if (m == 1)  // one row: NP full panels at a time while they last
    for (; (p + NP) * kPanel <= c1; p += NP)
      gate_up_tile_for<1, NP>(A, lda, K, panels_from<NP>(bank, p), G + p * kPanel, U + p * kPanel,
                              ldo, Ahead{}, corr);
  for (; p * kPanel < c1; ++p) {
    const Src B = bank(p);
    const Index ncols = (c1 - p * kPanel) < kPanel ? (c1 - p * kPanel) : kPanel;
    const bool last = (p + 1) * kPanel >= c1;
    const char* const next = last || nt == 1 ? nullptr : bank.bytes_of(p + 1);
    const Index next_bytes = next ? bank.size_of(p + 1) : 0;
    if constexpr (kDecodeOnce<Src>)
      if (decode) {
        gate_up_panel_rows(A, lda, m, K, decode_panel<W>(B, K, dec), p, ncols, next, next_bytes, G,
                           U, ldo, corr);
        continue;
      }
    gate_up_panel_rows(A, lda, m, K, B, p, ncols, next, next_bytes, G, U, ldo, corr);
  }
}

// Output columns [c0, c1) panel by panel; bank(p) is panel p's weight source.
template <class Bank>
MOEKIT_TARGET_AVX2 inline void matmul_panels(const float* A, Index lda, Index m, Index K,
                                             const Bank& bank, Index c0, Index c1, float* Y,
                                             Index ldy) {
  using Src = decltype(bank(0));
  constexpr Index W = kPanel;
  const Index nt = (m + kDownRows - 1) / kDownRows;  // row tiles per panel
  const bool decode = kDecodeOnce<Src> && nt > 1;
  float* dec = decode ? moekit::detail::thread_scratch<DecodedPanelTag, float>(K * W) : nullptr;
  const GroupCorrections corr = group_corrections<Src>(A, lda, m, K);
  Index p = c0 / kPanel;
  constexpr int NP = kDownRowPanels;
  if (m == 1)  // one row: NP full panels at a time while they last
    for (; (p + NP) * kPanel <= c1; p += NP)
      down_tile_for<1, NP>(A, lda, K, panels_from<NP>(bank, p), Y + p * kPanel, ldy, Ahead{}, corr);
  for (; p * kPanel < c1; ++p) {
    const Src B = bank(p);
    const Index ncols = (c1 - p * kPanel) < kPanel ? (c1 - p * kPanel) : kPanel;
    const bool last = (p + 1) * kPanel >= c1;
    const char* const next = last || nt == 1 ? nullptr : bank.bytes_of(p + 1);
    const Index next_bytes = next ? bank.size_of(p + 1) : 0;
    if constexpr (kDecodeOnce<Src>)
      if (decode) {
        down_panel_rows(A, lda, m, K, decode_panel<W>(B, K, dec), p, ncols, next, next_bytes, Y,
                        ldy, corr);
        continue;
      }
    down_panel_rows(A, lda, m, K, B, p, ncols, next, next_bytes, Y, ldy, corr);
  }
}

template <class T = float>
MOEKIT_TARGET_AVX2 inline void gate_up(ActivationRows rows, Index m, Index K, const T* packed,
                                       Index f, Index c0, Index c1, float* G, float* U, Index ldo) {
  (void)f;
  Index lda = 0;
  const float* A = contiguous_rows(rows, m, K, lda);
  gate_up_panels(A, lda, m, K, PanelBank<T>{packed, K, 2 * kPanel}, c0, c1, G, U, ldo);
}
template <class T = float>
MOEKIT_TARGET_AVX2 inline void matmul(const float* A, Index lda, Index m, Index K, const T* packed,
                                      Index N, Index c0, Index c1, float* Y, Index ldy) {
  (void)N;
  matmul_panels(A, lda, m, K, PanelBank<T>{packed, K, kPanel}, c0, c1, Y, ldy);
}

/// Fused int8 (Bits = 8) / int4 (Bits = 4) kernels over quantized.hpp panels.
template <int Bits>
MOEKIT_TARGET_AVX2 inline void gate_up_quant(ActivationRows rows, Index m, Index K,
                                             const std::uint8_t* codes, const float* scales,
                                             Index f, Index c0, Index c1, float* G, float* U,
                                             Index ldo) {
  (void)f;
  Index lda = 0;
  const float* A = contiguous_rows(rows, m, K, lda);
  gate_up_panels(A, lda, m, K, QuantBank<Bits>{codes, scales, K, 2 * kPanel}, c0, c1, G, U, ldo);
}
template <int Bits>
MOEKIT_TARGET_AVX2 inline void matmul_quant(const float* A, Index lda, Index m, Index K,
                                            const std::uint8_t* codes, const float* scales, Index N,
                                            Index c0, Index c1, float* Y, Index ldy) {
  (void)N;
  matmul_panels(A, lda, m, K, QuantBank<Bits>{codes, scales, K, kPanel}, c0, c1, Y, ldy);
}

/// exp(x) for 8 lanes (see the AVX-512 version).
MOEKIT_TARGET_AVX2 inline __m256 exp_ps(__m256 x) {
  x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-88.0f)), _mm256_set1_ps(89.0f));
  const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                   _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693145751953125f), x);
  r = _mm256_fnmadd_ps(n, _mm256_set1_ps(1.428606765330187045e-06f), r);
  __m256 p = _mm256_set1_ps(1.0f / 720.0f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 120.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 24.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f / 6.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(0.5f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.0f));
  // 2^n from the exponent bits: n in [-127, 128] after the clamp (128 gives +inf).
  const __m256i e =
      _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
  return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

MOEKIT_TARGET_AVX2 inline void silu_mul_f32(const float* g, const float* u, float* h, Index n) {
  Index i = 0;
  const __m256 one = _mm256_set1_ps(1.0f);
  for (; i + 8 <= n; i += 8) {
    const __m256 gv = _mm256_loadu_ps(g + i);
    const __m256 e = exp_ps(_mm256_sub_ps(_mm256_setzero_ps(), gv));
    _mm256_storeu_ps(
        h + i, _mm256_mul_ps(_mm256_div_ps(gv, _mm256_add_ps(one, e)), _mm256_loadu_ps(u + i)));
  }
  for (; i < n; ++i) h[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

}  // namespace avx2
}  // namespace kernels
MOEKIT_NAMESPACE_END

#endif  // MOEKIT_HAVE_X86_KERNELS
