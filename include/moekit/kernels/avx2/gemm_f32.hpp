// SPDX-License-Identifier: MIT
// AVX2 + FMA f32 kernels over packed weights (packing.hpp).
//
// NOTE: 16 ymm registers. Gate/up tiles are 3 rows x (16 gate + 16 up)
// columns: 12 accumulators, the panel values taken as memory operands of the
// FMAs. Down tiles are 6 rows x 16 columns: 12 accumulators. Column tails
// (< 16) go through a small stack tile, then are copied.
#pragma once

#include "../target.hpp"

#ifdef MOEKIT_HAVE_X86_KERNELS
#include <array>
#include <cmath>

#include <cstdint>

#include <type_traits>

#include "../../core/dtype.hpp"
#include "../../core/scratch_arena.hpp"
#include "../packing.hpp"
#include "../quantized.hpp"

MOEKIT_NAMESPACE_BEGIN
namespace kernels {
namespace avx2 {

// Loads 8 weights as f32: float as is, bf16 by a 16-bit shift, f16 by F16C.
MOEKIT_TARGET_AVX2 inline __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
MOEKIT_TARGET_AVX2 inline __m256 load8(const bf16* p) {
  const __m128i h = _mm_loadu_si128(reinterpret_cast<const __m128i*>(p));
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(h), 16));
}
MOEKIT_TARGET_AVX2 inline __m256 load8(const f16* p) {
  return _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p)));
}

// The 8 weights at (k, columns off..off+7) of a panel with W values per
// k-row. bf16 panels hold k-pairs (packing.hpp): a 32-bit lane carries the
// even k in its low half and the odd k in its high half, so the value for k is
// the lane shifted left by 16 (even) or 0 (odd), low half cleared.
template <Index W, int P, class T>
MOEKIT_TARGET_AVX2 inline __m256 weights8(const T* B, Index k, Index off) {
  if constexpr (kPairedK<T>) {  // P = k & 1 picks the half of each pair
    const __m256i pairs =
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(B + (k >> 1) * 2 * W + 2 * off));
    if constexpr (P == 0) return _mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16));
    return _mm256_castsi256_ps(
        _mm256_and_si256(pairs, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
  } else {
    return load8(B + k * W + off);
  }
}

// int8 / int4 panels (quantized.hpp) as weight sources: the 8 codes at
// (k, off..off+7) decoded in registers and multiplied by their group scale,
// which rounds exactly as the dequantised master weight does.
template <int Bits>
struct QuantPanel {
  const std::uint8_t* codes;
  const float* scales;
};
template <Index W, int P, int Bits>
MOEKIT_TARGET_AVX2 inline __m256 weights8(const QuantPanel<Bits>& B, Index k, Index off) {
  // Codes sit in k-pairs (quantized.hpp): 16-bit word j holds column off + j's
  // pair; P = k & 1 picks its half.
  __m256i q;
  if constexpr (Bits == 8) {
    const __m256i w = _mm256_cvtepi16_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(B.codes + (k >> 1) * 2 * W + 2 * off)));
    q = P == 0 ? _mm256_srai_epi32(_mm256_slli_epi32(w, 24), 24) : _mm256_srai_epi32(w, 8);
  } else {
    // Pair elements [0, W) sit in the low nibbles of the W bytes, [W, 2W) in the high ones.
    const Index half = off / (W / 2), col = off % (W / 2);
    __m256i n = _mm256_cvtepu16_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(B.codes + (k >> 1) * W + 2 * col)));
    const unsigned shift = 8u * P + (half ? 4u : 0u);
    if (shift) n = _mm256_srli_epi32(n, static_cast<int>(shift));
    q = _mm256_sub_epi32(_mm256_and_si256(n, _mm256_set1_epi32(0x0f)), _mm256_set1_epi32(8));
  }
  return _mm256_mul_ps(_mm256_cvtepi32_ps(q),
                       _mm256_loadu_ps(B.scales + (k / kQuantGroup) * W + off));
}

// NOTE: a panel is read from memory by its first row tile and from L2 by the
// others; left alone, memory sits idle while those run. So each row tile of a
// panel asks for its share of the next panel's bytes (into L2), spread evenly
// over its k-steps: with nt tiles, tile t fetches the t-th nt-th. With one
// tile (decode) the hardware prefetcher keeps up alone (asking as well made
// int4 decode ~25 % slower: olmoe T = 1).
struct Ahead {
  const char* line = nullptr;  // next line of this tile's share of the next panel
  Index lines = 0, steps = 1;  // lines of the share, spread over this many k-pair steps
  Index err = 0;               // Bresenham: no division in the k loop
  // One k-pair step: after all `steps` calls, every line has been asked for.
  __attribute__((always_inline)) void step() {  // prefetch is SSE: any x86-64
    for (err += lines; err >= steps; err -= steps, line += 64) _mm_prefetch(line, _MM_HINT_T1);
  }
};

// Tile t of nt's share of panel bytes [p, p + bytes), over K k-steps (none
// for a null p).
inline Ahead ahead_share(const char* p, Index bytes, Index t, Index nt, Index K) {
  if (p == nullptr) return {};
  const Index lines = (bytes + 63) / 64, l0 = t * lines / nt, l1 = (t + 1) * lines / nt;
  return {p + l0 * 64, l1 - l0, (K + 1) / 2, 0};
}

constexpr int kGateUpRows = 3;
constexpr int kDownRows = 6;

// One k of a tile (P = k & 1): the weights of the panel, then MR rows of FMAs.
template <int MR, int P, class Src>
MOEKIT_TARGET_AVX2 __attribute__((always_inline)) inline void gate_up_step(
    const float* A, Index lda, Index k, const Src& B, __m256 (&g0)[MR], __m256 (&g1)[MR],
    __m256 (&u0)[MR], __m256 (&u1)[MR]) {
  const __m256 bg0 = weights8<32, P>(B, k, 0), bg1 = weights8<32, P>(B, k, 8);
  const __m256 bu0 = weights8<32, P>(B, k, 16), bu1 = weights8<32, P>(B, k, 24);
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    const __m256 a = _mm256_broadcast_ss(A + r * lda + k);
    g0[r] = _mm256_fmadd_ps(a, bg0, g0[r]);
    g1[r] = _mm256_fmadd_ps(a, bg1, g1[r]);
    u0[r] = _mm256_fmadd_ps(a, bu0, u0[r]);
    u1[r] = _mm256_fmadd_ps(a, bu1, u1[r]);
  }
}
template <int MR, int P, class Src>
MOEKIT_TARGET_AVX2 __attribute__((always_inline)) inline void down_step(const float* A, Index lda,
                                                                        Index k, const Src& B,
                                                                        __m256 (&y0)[MR],
                                                                        __m256 (&y1)[MR]) {
  const __m256 b0 = weights8<16, P>(B, k, 0), b1 = weights8<16, P>(B, k, 8);
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    const __m256 a = _mm256_broadcast_ss(A + r * lda + k);
    y0[r] = _mm256_fmadd_ps(a, b0, y0[r]);
    y1[r] = _mm256_fmadd_ps(a, b1, y1[r]);
  }
}

// NOTE: one row (decode) against one panel gives each 8 columns a single
// chain of dependent FMAs, so the tile waits on the FMA latency: ~2 bytes of
// int4 codes per cycle, short of the memory's ~3 per core (olmoe int4 T = 1
// streamed 13.7 GB/s of 22.5). So a tile runs its MR rows against NP panels
// at once (the one-row driver uses NP > 1: NP times the independent chains),
// with output column block j at j * kPanel. Each column sums its k in order
// whatever MR and NP are, so the bytes do not depend on them.
template <int NP, class Src>
using Panels = std::array<Src, NP>;

template <int MR, int NP, class Src>
MOEKIT_TARGET_AVX2 inline void gate_up_tile(const float* A, Index lda, Index K,
                                            const Panels<NP, Src>& B, float* G, float* U, Index ldo,
                                            Ahead ahead) {
  __m256 g0[NP][MR], g1[NP][MR], u0[NP][MR], u1[NP][MR];
#pragma GCC unroll 4
  for (int j = 0; j < NP; ++j)
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) g0[j][r] = g1[j][r] = u0[j][r] = u1[j][r] = _mm256_setzero_ps();
  Index k = 0;
  for (; k + 1 < K; k += 2) {  // k-pair layouts decode each half with its own shift
    if (ahead.lines) ahead.step();
#pragma GCC unroll 4
    for (int j = 0; j < NP; ++j) gate_up_step<MR, 0>(A, lda, k, B[j], g0[j], g1[j], u0[j], u1[j]);
#pragma GCC unroll 4
    for (int j = 0; j < NP; ++j)
      gate_up_step<MR, 1>(A, lda, k + 1, B[j], g0[j], g1[j], u0[j], u1[j]);
  }
  if (k < K)
#pragma GCC unroll 4
    for (int j = 0; j < NP; ++j) gate_up_step<MR, 0>(A, lda, k, B[j], g0[j], g1[j], u0[j], u1[j]);
#pragma GCC unroll 4
  for (int j = 0; j < NP; ++j)
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      _mm256_storeu_ps(G + r * ldo + j * kPanel, g0[j][r]);
      _mm256_storeu_ps(G + r * ldo + j * kPanel + 8, g1[j][r]);
      _mm256_storeu_ps(U + r * ldo + j * kPanel, u0[j][r]);
      _mm256_storeu_ps(U + r * ldo + j * kPanel + 8, u1[j][r]);
    }
}

template <int MR, int NP, class Src>
MOEKIT_TARGET_AVX2 inline void down_tile(const float* A, Index lda, Index K,
                                         const Panels<NP, Src>& B, float* Y, Index ldy,
                                         Ahead ahead) {
  __m256 y0[NP][MR], y1[NP][MR];
#pragma GCC unroll 4
  for (int j = 0; j < NP; ++j)
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) y0[j][r] = y1[j][r] = _mm256_setzero_ps();
  Index k = 0;
  for (; k + 1 < K; k += 2) {
    if (ahead.lines) ahead.step();
#pragma GCC unroll 4
    for (int j = 0; j < NP; ++j) down_step<MR, 0>(A, lda, k, B[j], y0[j], y1[j]);
#pragma GCC unroll 4
    for (int j = 0; j < NP; ++j) down_step<MR, 1>(A, lda, k + 1, B[j], y0[j], y1[j]);
  }
  if (k < K)
#pragma GCC unroll 4
    for (int j = 0; j < NP; ++j) down_step<MR, 0>(A, lda, k, B[j], y0[j], y1[j]);
#pragma GCC unroll 4
  for (int j = 0; j < NP; ++j)
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      _mm256_storeu_ps(Y + r * ldy + j * kPanel, y0[j][r]);
      _mm256_storeu_ps(Y + r * ldy + j * kPanel + 8, y1[j][r]);
    }
}

// Panels p .. p + NP - 1 of a bank as one tile's sources.
template <int NP, class Bank>
inline auto panels_from(const Bank& bank, Index p) {
  Panels<NP, decltype(bank(0))> b{};
  for (int j = 0; j < NP; ++j) b[static_cast<std::size_t>(j)] = bank(p + j);
  return b;
}
constexpr int kGateUpRowPanels = 2;  // one row: 8 accumulators
constexpr int kDownRowPanels = 4;    // one row: 8 accumulators

// Per-thread buffer of one panel decoded to f32 (prefill).
struct DecodedPanelTag;

// Panel p's weights as f32 [K, W] in out (the values weights8 gives, so a tile
// over the decoded panel computes the same bytes as one over the source).
template <Index W, class Src>
MOEKIT_TARGET_AVX2 inline void decode_panel(const Src& B, Index K, float* out) {
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
}

// NOTE: bf16 / f16 / int8 / int4 panels cost 2-8 extra instructions per 8
// weights to widen or decode, which the FMAs of a 3- or 6-row tile cannot
// hide (bf16 prefill ran at ~45 % of the FMA peak against f32's ~70 %). With
// more rows than one tile, each panel is decoded once into an f32 buffer
// (256 KiB at K = 2048: L2) and every row tile runs the f32 tile over it. The
// decoded values are exactly weights8's, so the bytes do not change.
template <class Src>
inline constexpr bool kDecodeOnce = !std::is_same_v<Src, const float*>;

// One row tile of mr (<= kGateUpRows / kDownRows) rows.
template <class Src>
MOEKIT_TARGET_AVX2 inline void gate_up_rows(Index mr, const float* a, Index lda, Index K,
                                            const Src& B, float* g, float* u, Index ld,
                                            const Ahead& ahead) {
  switch (mr) {
    case 3: return gate_up_tile<3, 1>(a, lda, K, Panels<1, Src>{B}, g, u, ld, ahead);
    case 2: return gate_up_tile<2, 1>(a, lda, K, Panels<1, Src>{B}, g, u, ld, ahead);
    default: return gate_up_tile<1, 1>(a, lda, K, Panels<1, Src>{B}, g, u, ld, ahead);
  }
}
template <class Src>
MOEKIT_TARGET_AVX2 inline void down_rows(Index mr, const float* a, Index lda, Index K, const Src& B,
                                         float* y, Index ld, const Ahead& ahead) {
  switch (mr) {
    case 6: return down_tile<6, 1>(a, lda, K, Panels<1, Src>{B}, y, ld, ahead);
    case 5: return down_tile<5, 1>(a, lda, K, Panels<1, Src>{B}, y, ld, ahead);
    case 4: return down_tile<4, 1>(a, lda, K, Panels<1, Src>{B}, y, ld, ahead);
    case 3: return down_tile<3, 1>(a, lda, K, Panels<1, Src>{B}, y, ld, ahead);
    case 2: return down_tile<2, 1>(a, lda, K, Panels<1, Src>{B}, y, ld, ahead);
    default: return down_tile<1, 1>(a, lda, K, Panels<1, Src>{B}, y, ld, ahead);
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
  alignas(32) float tg[kGateUpRows * kPanel], tu[kGateUpRows * kPanel];
  Index p = c0 / kPanel;
  constexpr int NP = kGateUpRowPanels;
  if (m == 1)  // one row: NP full panels at a time while they last
    for (; (p + NP) * kPanel <= c1; p += NP)
      gate_up_tile<1, NP>(A, lda, K, panels_from<NP>(bank, p), G + p * kPanel, U + p * kPanel, ldo,
                          Ahead{});
  for (; p * kPanel < c1; ++p) {
    const Src B = bank(p);
    if (decode) decode_panel<W>(B, K, dec);
    const Index ncols = (c1 - p * kPanel) < kPanel ? (c1 - p * kPanel) : kPanel;
    const bool last = (p + 1) * kPanel >= c1;
    const char* const next = last || nt == 1 ? nullptr : bank.bytes_of(p + 1);
    const Index next_bytes = next ? bank.size_of(p + 1) : 0;
    for (Index i = 0; i < m; i += kGateUpRows) {
      const Index mr = (m - i) < kGateUpRows ? (m - i) : kGateUpRows;
      const float* a = A + i * lda;
      const bool full = ncols == kPanel;
      float* g = full ? G + i * ldo + p * kPanel : tg;
      float* u = full ? U + i * ldo + p * kPanel : tu;
      const Index ld = full ? ldo : kPanel;
      const Ahead ahead = ahead_share(next, next_bytes, i / kGateUpRows, nt, K);
      if (decode)
        gate_up_rows(mr, a, lda, K, static_cast<const float*>(dec), g, u, ld, ahead);
      else
        gate_up_rows(mr, a, lda, K, B, g, u, ld, ahead);
      if (!full)
        for (Index r = 0; r < mr; ++r)
          for (Index j = 0; j < ncols; ++j) {
            G[(i + r) * ldo + p * kPanel + j] = tg[r * kPanel + j];
            U[(i + r) * ldo + p * kPanel + j] = tu[r * kPanel + j];
          }
    }
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
  alignas(32) float ty[kDownRows * kPanel];
  Index p = c0 / kPanel;
  constexpr int NP = kDownRowPanels;
  if (m == 1)  // one row: NP full panels at a time while they last
    for (; (p + NP) * kPanel <= c1; p += NP)
      down_tile<1, NP>(A, lda, K, panels_from<NP>(bank, p), Y + p * kPanel, ldy, Ahead{});
  for (; p * kPanel < c1; ++p) {
    const Src B = bank(p);
    if (decode) decode_panel<W>(B, K, dec);
    const Index ncols = (c1 - p * kPanel) < kPanel ? (c1 - p * kPanel) : kPanel;
    const bool last = (p + 1) * kPanel >= c1;
    const char* const next = last || nt == 1 ? nullptr : bank.bytes_of(p + 1);
    const Index next_bytes = next ? bank.size_of(p + 1) : 0;
    for (Index i = 0; i < m; i += kDownRows) {
      const Index mr = (m - i) < kDownRows ? (m - i) : kDownRows;
      const float* a = A + i * lda;
      const bool full = ncols == kPanel;
      float* y = full ? Y + i * ldy + p * kPanel : ty;
      const Index ld = full ? ldy : kPanel;
      const Ahead ahead = ahead_share(next, next_bytes, i / kDownRows, nt, K);
      if (decode)
        down_rows(mr, a, lda, K, static_cast<const float*>(dec), y, ld, ahead);
      else
        down_rows(mr, a, lda, K, B, y, ld, ahead);
      if (!full)
        for (Index r = 0; r < mr; ++r)
          for (Index j = 0; j < ncols; ++j) Y[(i + r) * ldy + p * kPanel + j] = ty[r * kPanel + j];
    }
  }
}

template <class T>
struct PanelBank {  // f32 / bf16 / f16 packed panels of W values per k-row
  const T* packed;
  Index K, W;
  const T* operator()(Index p) const noexcept { return packed + p * packed_k<T>(K) * W; }
  const char* bytes_of(Index p) const noexcept { return reinterpret_cast<const char*>((*this)(p)); }
  Index size_of(Index) const noexcept { return packed_k<T>(K) * W * Index(sizeof(T)); }
};
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

template <class T = float>
MOEKIT_TARGET_AVX2 inline void gate_up(const float* A, Index lda, Index m, Index K, const T* packed,
                                       Index f, Index c0, Index c1, float* G, float* U, Index ldo) {
  (void)f;
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
MOEKIT_TARGET_AVX2 inline void gate_up_quant(const float* A, Index lda, Index m, Index K,
                                             const std::uint8_t* codes, const float* scales,
                                             Index f, Index c0, Index c1, float* G, float* U,
                                             Index ldo) {
  (void)f;
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
