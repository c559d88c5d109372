// SPDX-License-Identifier: MIT
// AVX-512 BF16 kernels: bf16 weights times bf16-rounded activations with
// vdpbf16ps (two products per f32 lane and instruction, f32 accumulation).
//
// NOTE: the weights are the k-pair panels of packing.hpp. Each call first
// rounds its activation rows to bf16 (round to nearest even, the same as
// moekit::bf16) into a per-thread buffer of k-pairs, one 32-bit word per pair,
// so a broadcast of one word feeds a vdpbf16ps against a panel row of 16
// column pairs. Rounding the activations is what makes this faster than
// widening (twice the multiply-adds per instruction) and is also what bf16
// inference in PyTorch or ggml does; the price is a relative error of about
// 2^-9 per product (GatedExperts::set_bf16_math(Bf16Math::widen) keeps f32
// activations). Every output is one sequential chain over k-pairs whatever the
// tile shape, so a row's bytes do not depend on the other rows of the call.
#pragma once

#include "../target.hpp"

#ifdef MOEKIT_HAVE_X86_KERNELS
#include <cstdint>

#include "../../core/aligned_buffer.hpp"
#include "../packing.hpp"
#include "gemm_f32.hpp"

MOEKIT_SIMD_WARNINGS_PUSH

MOEKIT_NAMESPACE_BEGIN
namespace kernels {
namespace avx512_bf16 {

using avx512::column_mask;

// Rounds m rows of K activations (row stride lda) to bf16 k-pairs: out is
// [m, K2] 32-bit words, K2 = ceil(K / 2), an odd K padded with +0.
MOEKIT_TARGET_AVX512_BF16 inline void to_bf16_pairs(const float* A, Index lda, Index m, Index K,
                                                    std::uint32_t* out) {
  const Index K2 = (K + 1) / 2;
  for (Index r = 0; r < m; ++r) {
    const float* a = A + r * lda;
    auto* dst = reinterpret_cast<std::uint16_t*>(out + r * K2);
    Index k = 0;
    for (; k + 16 <= K; k += 16)
      _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + k),
                          (__m256i)_mm512_cvtneps_pbh(_mm512_loadu_ps(a + k)));
    if (k < K) {
      const __mmask16 mk = column_mask(K - k);
      _mm256_mask_storeu_epi16(dst + k, mk,
                               (__m256i)_mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mk, a + k)));
    }
    if (K & 1) dst[K] = 0;
  }
}

// The per-thread k-pair buffer (grows, never shrinks).
inline std::uint32_t* pair_scratch(Index words) {
  thread_local AlignedBuffer<std::uint32_t> buf;
  if (buf.size() < static_cast<std::size_t>(words)) buf.resize(static_cast<std::size_t>(words));
  return buf.data();
}

// MR rows x NP gate + up panels (W = 32 values, 64 bf16 per k-pair).
// `next` (or null): the panels the call uses next, prefetched one k-pair row
// per step (see avx512::gate_up_tile).
template <int MR, int NP>
MOEKIT_TARGET_AVX512_BF16 inline void gate_up_tile(const std::uint32_t* A, Index K2,
                                                   const bf16* const* B, float* G, float* U,
                                                   Index ldo, const __mmask16* mask,
                                                   const bf16* const* next = nullptr) {
  __m512 g[NP][MR], u[NP][MR];
#pragma GCC unroll 16
  for (int q = 0; q < NP; ++q)
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) g[q][r] = u[q][r] = _mm512_setzero_ps();
  for (Index kp = 0; kp < K2; ++kp) {
    if (next)
#pragma GCC unroll 16
      for (int q = 0; q < NP; ++q) avx512::prefetch_row<128>(next[q], kp);
    __m512bh bg[NP], bu[NP];
#pragma GCC unroll 16
    for (int q = 0; q < NP; ++q) {
      bg[q] = (__m512bh)_mm512_loadu_si512(B[q] + kp * 64);
      bu[q] = (__m512bh)_mm512_loadu_si512(B[q] + kp * 64 + 32);
    }
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(A[r * K2 + kp]));
#pragma GCC unroll 16
      for (int q = 0; q < NP; ++q) {
        g[q][r] = _mm512_dpbf16_ps(g[q][r], a, bg[q]);
        u[q][r] = _mm512_dpbf16_ps(u[q][r], a, bu[q]);
      }
    }
  }
#pragma GCC unroll 16
  for (int q = 0; q < NP; ++q)
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      _mm512_mask_storeu_ps(G + r * ldo + q * kPanel, mask[q], g[q][r]);
      _mm512_mask_storeu_ps(U + r * ldo + q * kPanel, mask[q], u[q][r]);
    }
}

// MR rows x NP panels of Y = A·Wᵀ (W = 16 values, 32 bf16 per k-pair).
template <int MR, int NP>
MOEKIT_TARGET_AVX512_BF16 inline void down_tile(const std::uint32_t* A, Index K2,
                                                const bf16* const* B, float* Y, Index ldy,
                                                const __mmask16* mask,
                                                const bf16* const* next = nullptr) {
  __m512 y[NP][MR];
#pragma GCC unroll 16
  for (int q = 0; q < NP; ++q)
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) y[q][r] = _mm512_setzero_ps();
  for (Index kp = 0; kp < K2; ++kp) {
    if (next)
#pragma GCC unroll 16
      for (int q = 0; q < NP; ++q) avx512::prefetch_row<64>(next[q], kp);
    __m512bh b[NP];
#pragma GCC unroll 16
    for (int q = 0; q < NP; ++q) b[q] = (__m512bh)_mm512_loadu_si512(B[q] + kp * 32);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(A[r * K2 + kp]));
#pragma GCC unroll 16
      for (int q = 0; q < NP; ++q) y[q][r] = _mm512_dpbf16_ps(y[q][r], a, b[q]);
    }
  }
#pragma GCC unroll 16
  for (int q = 0; q < NP; ++q)
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) _mm512_mask_storeu_ps(Y + r * ldy + q * kPanel, mask[q], y[q][r]);
}

// Gathers the NP panel pointers and column masks of the panel group at p.
template <int NP>
struct PanelGroup {
  const bf16* B[NP];
  __mmask16 mask[NP];
  PanelGroup(const bf16* packed, Index panel_elems, Index p, Index c1) noexcept {
    for (int q = 0; q < NP; ++q) {
      B[q] = packed + (p + q) * panel_elems;
      mask[q] = column_mask(c1 - (p + q) * kPanel);
    }
  }
};

/// Hidden columns [c0, c1) of G = A·W_gateᵀ, U = A·W_upᵀ from k-pair bf16 panels.
MOEKIT_TARGET_AVX512_BF16 inline void gate_up(const float* A, Index lda, Index m, Index K,
                                              const bf16* packed, Index f, Index c0, Index c1,
                                              float* G, float* U, Index ldo) {
  (void)f;
  const Index K2 = (K + 1) / 2, panel_elems = K2 * 4 * kPanel;
  std::uint32_t* Ap = pair_scratch(m * K2);
  to_bf16_pairs(A, lda, m, K, Ap);
  Index p = c0 / kPanel;
  const Index p_end = (c1 + kPanel - 1) / kPanel;
  if (m <= avx512::kWideRows)
    for (; p + 2 <= p_end; p += 2) {
      const PanelGroup<2> pg(packed, panel_elems, p, c1);
#define MOEKIT_CALL(R) \
  gate_up_tile<R, 2>(Ap, K2, pg.B, G + p * kPanel, U + p * kPanel, ldo, pg.mask)
      MOEKIT_AVX512_ROWS6(m, MOEKIT_CALL)
#undef MOEKIT_CALL
    }
  for (; p < p_end; ++p) {
    const PanelGroup<1> pg(packed, panel_elems, p, c1);
    const bf16* after[1] = {packed + (p + 1) * panel_elems};  // prefetched by the first row tile
    for (Index t = 0, i = 0, mr = 0, tiles = avx512::row_tiles(m); t < tiles; ++t, i += mr) {
      mr = avx512::tile_rows(m, tiles, t);
      const std::uint32_t* a = Ap + i * K2;
      float* g = G + i * ldo + p * kPanel;
      float* u = U + i * ldo + p * kPanel;
      const bf16* const* nx = t == 0 && p + 1 < p_end ? after : nullptr;
#define MOEKIT_CALL(R) gate_up_tile<R, 1>(a, K2, pg.B, g, u, ldo, pg.mask, nx)
      MOEKIT_AVX512_ROWS(mr, MOEKIT_CALL)
#undef MOEKIT_CALL
    }
  }
}

/// Output columns [c0, c1) of Y = A·Wᵀ from k-pair bf16 panels.
MOEKIT_TARGET_AVX512_BF16 inline void matmul(const float* A, Index lda, Index m, Index K,
                                             const bf16* packed, Index N, Index c0, Index c1,
                                             float* Y, Index ldy) {
  (void)N;
  const Index K2 = (K + 1) / 2, panel_elems = K2 * 2 * kPanel;
  std::uint32_t* Ap = pair_scratch(m * K2);
  to_bf16_pairs(A, lda, m, K, Ap);
  Index p = c0 / kPanel;
  const Index p_end = (c1 + kPanel - 1) / kPanel;
  if (m <= avx512::kWideRows)
    for (; p + 4 <= p_end; p += 4) {
      const PanelGroup<4> pg(packed, panel_elems, p, c1);
#define MOEKIT_CALL(R) down_tile<R, 4>(Ap, K2, pg.B, Y + p * kPanel, ldy, pg.mask)
      MOEKIT_AVX512_ROWS6(m, MOEKIT_CALL)
#undef MOEKIT_CALL
    }
  for (; p + 2 <= p_end; p += 2) {
    const PanelGroup<2> pg(packed, panel_elems, p, c1);
    const bf16* after[2] = {packed + (p + 2) * panel_elems, packed + (p + 3) * panel_elems};
    for (Index t = 0, i = 0, mr = 0, tiles = avx512::row_tiles(m); t < tiles; ++t, i += mr) {
      mr = avx512::tile_rows(m, tiles, t);
      const bf16* const* nx = t == 0 && p + 4 <= p_end ? after : nullptr;
#define MOEKIT_CALL(R) \
  down_tile<R, 2>(Ap + i * K2, K2, pg.B, Y + i * ldy + p * kPanel, ldy, pg.mask, nx)
      MOEKIT_AVX512_ROWS(mr, MOEKIT_CALL)
#undef MOEKIT_CALL
    }
  }
  if (p < p_end) {
    const PanelGroup<1> pg(packed, panel_elems, p, c1);
    for (Index t = 0, i = 0, mr = 0, tiles = avx512::row_tiles(m); t < tiles; ++t, i += mr) {
      mr = avx512::tile_rows(m, tiles, t);
#define MOEKIT_CALL(R) \
  down_tile<R, 1>(Ap + i * K2, K2, pg.B, Y + i * ldy + p * kPanel, ldy, pg.mask)
      MOEKIT_AVX512_ROWS(mr, MOEKIT_CALL)
#undef MOEKIT_CALL
    }
  }
}

}  // namespace avx512_bf16
}  // namespace kernels
MOEKIT_NAMESPACE_END

MOEKIT_SIMD_WARNINGS_POP

#endif  // MOEKIT_HAVE_X86_KERNELS
