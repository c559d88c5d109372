// SPDX-License-Identifier: MIT
// AVX2 + FMA register tiles over packed f32 / bf16 / f16 panels (packing.hpp);
// the drivers that run them over a matrix are in gemm_f32.hpp.
//
// NOTE: 16 ymm registers. Gate/up tiles are 3 rows x (16 gate + 16 up)
// columns: 12 accumulators, the panel values taken as memory operands of the
// FMAs. Down tiles are 6 rows x 16 columns: 12 accumulators. Column tails
// (< 16) go through a small stack tile, then are copied.
#pragma once

#include "../target.hpp"

#ifdef MOEKIT_HAVE_X86_KERNELS

#include "../../core/dtype.hpp"
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
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(B + pair_base<P>(k) * W + 2 * off));
    if constexpr (P == 0) return _mm256_castsi256_ps(_mm256_slli_epi32(pairs, 16));
    return _mm256_castsi256_ps(
        _mm256_and_si256(pairs, _mm256_set1_epi32(static_cast<int>(0xffff0000u))));
  } else {
    return load8(B + k * W + off);
  }
}

// int8 codes as f32 weights: the 8 codes at (k, off..off+7) times their group
// scale, which rounds exactly as the dequantised master weight does. Codes sit
// in k-pairs (quantized.hpp): 16-bit word j holds column off + j's pair;
// P = k & 1 picks its half.
template <Index W, int P>
MOEKIT_TARGET_AVX2 inline __m256 weights8(const QuantPanel<8>& B, Index k, Index off) {
  const Index k0 = pair_base<P>(k);  // both halves of a pair share its loads
  const __m256i w = _mm256_cvtepi16_epi32(
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(B.codes + k0 * W + 2 * off)));
  const __m256i q =
      P == 0 ? _mm256_srai_epi32(_mm256_slli_epi32(w, 24), 24) : _mm256_srai_epi32(w, 8);
  return _mm256_mul_ps(_mm256_cvtepi32_ps(q),
                       _mm256_loadu_ps(B.scales + (k0 / kQuantGroup) * W + off));
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
  // n k-pair steps: after `steps` of them, every line has been asked for.
  __attribute__((always_inline)) void step(Index n = 1) {  // prefetch is SSE: any x86-64
    for (err += n * lines; err >= steps; err -= steps, line += 64) _mm_prefetch(line, _MM_HINT_T1);
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
// chain of dependent FMAs, so the tile waits on the FMA latency (f32, bf16,
// int8 one-row decode: 1.21-1.29x from the change, RESULTS K18). So a tile
// runs its MR rows against NP panels
// at once (the one-row driver uses NP > 1: NP times the independent chains),
// with output column block j at j * kPanel. Each column sums its k in order
// whatever MR and NP are, so the bytes do not depend on them (Panels:
// packing.hpp).
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
constexpr int kGateUpRowPanels = 2;  // one row: 8 accumulators
constexpr int kDownRowPanels = 4;    // one row: 8 accumulators

}  // namespace avx2
}  // namespace kernels
MOEKIT_NAMESPACE_END

#endif  // MOEKIT_HAVE_X86_KERNELS
