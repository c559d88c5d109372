// SPDX-License-Identifier: MIT
// AVX-512 BF16 kernels: bf16 weights, or int8 / int4 codes decoded to bf16,
// times bf16-rounded activations with vdpbf16ps (two products per f32 lane
// and instruction, f32 accumulation; for codes, one sum per scale group, then
// times the group's scale in f32). The panel / row-tile loops are the shared
// drivers of gemm_f32.hpp with the tiles of this file (DotTiles).
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

#include "../../core/scratch_arena.hpp"
#include "../packing.hpp"
#include "../quantized.hpp"
#include "../rows.hpp"
#include "gemm_f32.hpp"

MOEKIT_SIMD_WARNINGS_PUSH

MOEKIT_NAMESPACE_BEGIN
namespace kernels {
namespace avx512_bf16 {

using avx512::column_mask;

// Rounds m rows of K activations (gathered, if A is indexed) to bf16 k-pairs:
// out is [m, K2] 32-bit words, K2 = ceil(K / 2), an odd K padded with +0.
MOEKIT_TARGET_AVX512_BF16 inline void to_bf16_pairs(const ActivationRows& A, Index m, Index K,
                                                    std::uint32_t* out, Index ldo) {
  for (Index r = 0; r < m; ++r) {
    const float* a = A.row(r);
    auto* dst = reinterpret_cast<std::uint16_t*>(out + r * ldo);
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

// Per-thread buffers of the rounded activation rows and of decoded panels
// (both in use during one call).
struct PairRowsTag;
struct DecodedPanelsTag;

// k-pair activation rows as the dot tiles read them: K2 k-pairs per row, row
// i at A + i·ld words.
struct PairRows {
  const std::uint32_t* A;
  Index K2, ld;
  PairRows at(Index i) const noexcept { return {A + i * ld, K2, ld}; }
};

// Weight sources of the dot tiles: the 16 column pairs (k-pair kp, columns
// off..off+15) of one panel as a bf16 vector. bf16 panels are read as stored;
// int8 / int4 codes are decoded in registers to bf16 (exact: |code| <= 128)
// and their group's scale is applied in f32 when a group of k ends (kScaled).
// Scaled = true: bf16 pairs of decoded int8 / int4 codes (prefill decodes
// a panel once for all its row tiles) with the codes' group scales.
// `next`: codes of the panel to be decoded after this one, whose k-pair kp is
// asked into L2 as k-pair kp is read here (avx512::NextCodes).
template <Index W, bool Scaled = false>
struct Bf16Pairs {
  const bf16* p;
  const float* scales = nullptr;
  avx512::NextCodes next = {};  // per k-pair
  static constexpr bool kScaled = Scaled;
  static constexpr bool kPrefetch = !Scaled;  // a decoded panel is already in cache
  void prefetch(Index kp) const noexcept { avx512::prefetch_row<2 * W * sizeof(bf16)>(p, kp); }
  MOEKIT_TARGET_AVX512_BF16 __m512bh operator()(Index kp, Index off) const {
    if constexpr (Scaled)
      if (off == 0) next.ask(kp);
    return (__m512bh)_mm512_loadu_si512(p + kp * 2 * W + 2 * off);
  }
  MOEKIT_TARGET_AVX512_BF16 __m512 scale(Index g, Index off) const {
    return _mm512_loadu_ps(scales + g * W + off);
  }
};

template <int Bits, Index W>
struct QuantPairs {
  const std::uint8_t* codes;
  const float* scales;
  static constexpr bool kScaled = true;
  // As avx512::QuantSource (olmoe T = 64: int8 1.42x, int4 1.35x with it).
  static constexpr bool kPrefetch = true;
  void prefetch(Index kp) const noexcept {
    avx512::prefetch_row<quant_pair_bytes(W, Bits)>(codes, kp);
  }
  MOEKIT_TARGET_AVX512_BF16 __m512bh operator()(Index kp, Index off) const {
    if constexpr (Bits == 8) {  // 32 bytes: the pairs of 16 columns, in order
      const std::uint8_t* c = codes + kp * 2 * W + 2 * off;
      const __m512 lo = _mm512_cvtepi32_ps(
          _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c))));
      const __m512 hi = _mm512_cvtepi32_ps(
          _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 16))));
      return _mm512_cvtne2ps_pbh(hi, lo);
    } else {
      // bf16 of code - 8 for each nibble value; vpermw reads the low 5 bits of
      // an index, so the table repeats for a high nibble's stray bit 4.
      alignas(64) static constexpr std::uint16_t kValues[32] = {
          0xc100, 0xc0e0, 0xc0c0, 0xc0a0, 0xc080, 0xc040, 0xc000, 0xbf80,  // -8 .. -1
          0x0000, 0x3f80, 0x4000, 0x4040, 0x4080, 0x40a0, 0x40c0, 0x40e0,  // 0 .. 7
          0xc100, 0xc0e0, 0xc0c0, 0xc0a0, 0xc080, 0xc040, 0xc000, 0xbf80,
          0x0000, 0x3f80, 0x4000, 0x4040, 0x4080, 0x40a0, 0x40c0, 0x40e0};
      const __m512i values = _mm512_load_si512(kValues);
      __m512i idx;
      if constexpr (W == 32) {  // 32 bytes: gate pairs in the low nibbles, up pairs in the high
        idx = _mm512_cvtepu8_epi16(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(codes + kp * W)));
        if (off != 0) idx = _mm512_srli_epi16(idx, 4);
      } else {  // 16 bytes: pairs of columns 0..7 in the low nibbles, 8..15 in the high
        const __m256i b =
            _mm256_cvtepu8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + kp * W)));
        idx = _mm512_inserti64x4(_mm512_castsi256_si512(b), _mm256_srli_epi16(b, 4), 1);
      }
      return (__m512bh)_mm512_permutexvar_epi16(idx, values);
    }
  }
  MOEKIT_TARGET_AVX512_BF16 __m512 scale(Index g, Index off) const {
    return _mm512_loadu_ps(scales + g * W + off);
  }
};

// k-pairs per scale group (kQuantGroup k).
constexpr Index kGroupPairs = kQuantGroup / 2;

// MR rows x NP gate + up panels (W = 32 values, 64 per k-pair): 2·MR·NP
// accumulators. With a scaled source they hold one group's sum, which is then
// multiplied by the group's scale and added to the output total (kept in
// memory: it changes once per group). Every output is the same sequence of
// operations whatever MR and NP are, so a row's bytes do not depend on the
// tile shape. `next`: this tile's share of the panels to prefetch (avx512::Ahead).
template <int MR, int NP, class Src>
MOEKIT_TARGET_AVX512_BF16 inline void gate_up_tile(const PairRows& A, const Src* B, float* G,
                                                   float* U, Index ldo, const __mmask16* mask,
                                                   const avx512::Ahead<Src>& next) {
  avx512::AheadStream<NP, Src> ahead(next, A.K2);
  __m512 g[NP][MR], u[NP][MR];
  alignas(64) float total[Src::kScaled ? 2 * NP * MR * 16 : 1];
  if constexpr (Src::kScaled)
    for (auto& t : total) t = 0.0f;
  for (Index grp = 0, kp0 = 0; kp0 < A.K2; ++grp) {
    // Unscaled sources run all k-pairs as one group.
    const Index kp1 = Src::kScaled && kp0 + kGroupPairs < A.K2 ? kp0 + kGroupPairs : A.K2;
#pragma GCC unroll 16
    for (int q = 0; q < NP; ++q)
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) g[q][r] = u[q][r] = _mm512_setzero_ps();
    for (Index kp = kp0; kp < kp1; ++kp) {
      ahead.step();
      __m512bh bg[NP], bu[NP];
#pragma GCC unroll 16
      for (int q = 0; q < NP; ++q) bg[q] = B[q](kp, 0), bu[q] = B[q](kp, 16);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(A.A[r * A.ld + kp]));
#pragma GCC unroll 16
        for (int q = 0; q < NP; ++q) {
          g[q][r] = _mm512_dpbf16_ps(g[q][r], a, bg[q]);
          u[q][r] = _mm512_dpbf16_ps(u[q][r], a, bu[q]);
        }
      }
    }
    if constexpr (Src::kScaled) {
#pragma GCC unroll 16
      for (int q = 0; q < NP; ++q) {
        const __m512 sg = B[q].scale(grp, 0), su = B[q].scale(grp, 16);
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) {
          float* tg = total + ((q * MR + r) * 2) * 16;
          _mm512_store_ps(tg, _mm512_fmadd_ps(g[q][r], sg, _mm512_load_ps(tg)));
          _mm512_store_ps(tg + 16, _mm512_fmadd_ps(u[q][r], su, _mm512_load_ps(tg + 16)));
        }
      }
    }
    kp0 = kp1;
  }
#pragma GCC unroll 16
  for (int q = 0; q < NP; ++q)
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      if constexpr (Src::kScaled) {
        const float* tg = total + ((q * MR + r) * 2) * 16;
        g[q][r] = _mm512_load_ps(tg);
        u[q][r] = _mm512_load_ps(tg + 16);
      }
      _mm512_mask_storeu_ps(G + r * ldo + q * kPanel, mask[q], g[q][r]);
      _mm512_mask_storeu_ps(U + r * ldo + q * kPanel, mask[q], u[q][r]);
    }
}

// MR rows x NP panels of Y = A·Wᵀ (W = 16 values, 32 per k-pair).
template <int MR, int NP, class Src>
MOEKIT_TARGET_AVX512_BF16 inline void down_tile(const PairRows& A, const Src* B, float* Y,
                                                Index ldy, const __mmask16* mask,
                                                const avx512::Ahead<Src>& next) {
  avx512::AheadStream<NP, Src> ahead(next, A.K2);
  __m512 y[NP][MR];
  alignas(64) float total[Src::kScaled ? NP * MR * 16 : 1];
  if constexpr (Src::kScaled)
    for (auto& t : total) t = 0.0f;
  for (Index grp = 0, kp0 = 0; kp0 < A.K2; ++grp) {
    const Index kp1 = Src::kScaled && kp0 + kGroupPairs < A.K2 ? kp0 + kGroupPairs : A.K2;
#pragma GCC unroll 16
    for (int q = 0; q < NP; ++q)
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) y[q][r] = _mm512_setzero_ps();
    for (Index kp = kp0; kp < kp1; ++kp) {
      ahead.step();
      __m512bh b[NP];
#pragma GCC unroll 16
      for (int q = 0; q < NP; ++q) b[q] = B[q](kp, 0);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512bh a = (__m512bh)_mm512_set1_epi32(static_cast<int>(A.A[r * A.ld + kp]));
#pragma GCC unroll 16
        for (int q = 0; q < NP; ++q) y[q][r] = _mm512_dpbf16_ps(y[q][r], a, b[q]);
      }
    }
    if constexpr (Src::kScaled) {
#pragma GCC unroll 16
      for (int q = 0; q < NP; ++q) {
        const __m512 s = B[q].scale(grp, 0);
#pragma GCC unroll 16
        for (int r = 0; r < MR; ++r) {
          float* t = total + (q * MR + r) * 16;
          _mm512_store_ps(t, _mm512_fmadd_ps(y[q][r], s, _mm512_load_ps(t)));
        }
      }
    }
    kp0 = kp1;
  }
#pragma GCC unroll 16
  for (int q = 0; q < NP; ++q)
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      if constexpr (Src::kScaled) y[q][r] = _mm512_load_ps(total + (q * MR + r) * 16);
      _mm512_mask_storeu_ps(Y + r * ldy + q * kPanel, mask[q], y[q][r]);
    }
}

// The tiles above as a policy of the shared drivers (avx512::gate_up_panels).
struct DotTiles {
  template <int MR, int NP, class Src>
  MOEKIT_TARGET_AVX512_BF16 static void gate_up(const PairRows& a, const Src* B, float* G, float* U,
                                                Index ldo, const __mmask16* mask,
                                                const avx512::Ahead<Src>& next) {
    gate_up_tile<MR, NP>(a, B, G, U, ldo, mask, next);
  }
  template <int MR, int NP, class Src>
  MOEKIT_TARGET_AVX512_BF16 static void down(const PairRows& a, const Src* B, float* Y, Index ldy,
                                             const __mmask16* mask,
                                             const avx512::Ahead<Src>& next) {
    down_tile<MR, NP>(a, B, Y, ldy, mask, next);
  }
};

template <Index W>
using Bf16PairBank = avx512::PanelBank<bf16, W, Bf16Pairs<W>>;
template <int Bits, Index W>
using QuantPairBank = avx512::QuantBank<Bits, W, QuantPairs>;
// Panels p0, p0 + 1, ... decoded to bf16 pairs one after another in `pairs`.
// `ahead`: the codes of panel p0 + chunk (the next to decode), or null.
template <Index W, int Bits>
struct DecodedBank {
  const bf16* pairs;
  const float* scales;
  avx512::NextCodes ahead;
  Index K, p0;
  Bf16Pairs<W, true> operator()(Index p) const noexcept {
    return {pairs + (p - p0) * ((K + 1) / 2) * 2 * W, scales + p * quant_panel_scales(K, W),
            ahead.panel(p - p0, quant_panel_code_bytes(K, W, Bits))};
  }
};

// Decodes k-pairs [kp0, kp1) of one quantised panel into bf16 pairs from out
// on (k-pair kp at out + (kp - kp0)·2W, the layout of a bf16 panel).
template <int Bits, Index W>
MOEKIT_TARGET_AVX512_BF16 inline void decode_pairs(const QuantPairs<Bits, W>& src, Index kp0,
                                                   Index kp1, bf16* out) {
  for (Index kp = kp0; kp < kp1; ++kp)
#pragma GCC unroll 2
    for (Index off = 0; off < W; off += kPanel)
      _mm512_storeu_si512(out + (kp - kp0) * 2 * W + 2 * off, (__m512i)src(kp, off));
}

// Decodes panels [p, p + n) of a quantised weight into bf16 pairs at out.
template <int Bits, Index W>
MOEKIT_TARGET_AVX512_BF16 inline void decode_panels(const QuantPairBank<Bits, W>& bank, Index p,
                                                    Index n, bf16* out) {
  const Index K2 = (bank.K + 1) / 2;
  for (Index q = 0; q < n; ++q) decode_pairs(bank(p + q), 0, K2, out + q * K2 * 2 * W);
}

// The decoder policy of avx512::gate_up_quant_panels / matmul_quant_panels:
// codes to bf16 pairs.
struct PairDecoder {
  static bf16* scratch(Index K) {
    return moekit::detail::thread_scratch<DecodedPanelsTag, bf16>((K + 1) / 2 * 4 * kPanel);
  }
  template <int Bits, Index W>
  MOEKIT_TARGET_AVX512_BF16 static void decode(const QuantPairBank<Bits, W>& bank, Index p, Index n,
                                               bf16* out) {
    decode_panels(bank, p, n, out);
  }
  template <int Bits, Index W>
  static DecodedBank<W, Bits> view(const QuantPairBank<Bits, W>& bank, const bf16* buf,
                                   const std::uint8_t* ahead, Index p) {
    return {buf, bank.scales, {ahead, quant_pair_bytes(W, Bits)}, bank.K, p};
  }
};

// Rounds the call's rows to bf16 k-pairs in the per-thread buffer.
MOEKIT_TARGET_AVX512_BF16 inline PairRows pair_rows(const ActivationRows& A, Index m, Index K) {
  const Index K2 = (K + 1) / 2, ld = K2;
  std::uint32_t* Ap = moekit::detail::thread_scratch<PairRowsTag, std::uint32_t>(m * ld);
  to_bf16_pairs(A, m, K, Ap, ld);
  return {Ap, K2, ld};
}

/// Hidden columns [c0, c1) of G = A·W_gateᵀ, U = A·W_upᵀ from k-pair bf16 panels.
MOEKIT_TARGET_AVX512_BF16 inline void gate_up(ActivationRows A, Index m, Index K,
                                              const bf16* packed, Index f, Index c0, Index c1,
                                              float* G, float* U, Index ldo) {
  (void)f;
  avx512::gate_up_panels<DotTiles>(pair_rows(A, m, K), m, Bf16PairBank<2 * kPanel>{packed, K}, c0,
                                   c1, G, U, ldo);
}

/// Output columns [c0, c1) of Y = A·Wᵀ from k-pair bf16 panels.
MOEKIT_TARGET_AVX512_BF16 inline void matmul(const float* A, Index lda, Index m, Index K,
                                             const bf16* packed, Index N, Index c0, Index c1,
                                             float* Y, Index ldy) {
  (void)N;
  avx512::matmul_panels<DotTiles>(pair_rows({A, lda}, m, K), m, Bf16PairBank<kPanel>{packed, K}, c0,
                                  c1, Y, ldy);
}

/// int8 (Bits = 8) / int4 (Bits = 4) weights (quantized.hpp) times
/// bf16-rounded activations: codes decoded to bf16 in registers, products
/// summed per scale group by vdpbf16ps, each group's sum times its scale
/// added in f32.
template <int Bits>
MOEKIT_TARGET_AVX512_BF16 inline void gate_up_quant(ActivationRows A, Index m, Index K,
                                                    const std::uint8_t* codes, const float* scales,
                                                    Index f, Index c0, Index c1, float* G, float* U,
                                                    Index ldo) {
  (void)f;
  avx512::gate_up_quant_panels<DotTiles, PairDecoder>(
      pair_rows(A, m, K), m, QuantPairBank<Bits, 2 * kPanel>{codes, scales, K}, c0, c1, G, U, ldo);
}
template <int Bits>
MOEKIT_TARGET_AVX512_BF16 inline void matmul_quant(const float* A, Index lda, Index m, Index K,
                                                   const std::uint8_t* codes, const float* scales,
                                                   Index N, Index c0, Index c1, float* Y,
                                                   Index ldy) {
  (void)N;
  avx512::matmul_quant_panels<DotTiles, PairDecoder>(
      pair_rows({A, lda}, m, K), m, QuantPairBank<Bits, kPanel>{codes, scales, K}, c0, c1, Y, ldy);
}

}  // namespace avx512_bf16
}  // namespace kernels
MOEKIT_NAMESPACE_END

MOEKIT_SIMD_WARNINGS_POP

#endif  // MOEKIT_HAVE_X86_KERNELS
