// SPDX-License-Identifier: MIT
// AVX-512 VNNI kernels: int8 / int4 weights times int8 activations with
// vpdpbusd (four byte products per i32 lane and instruction: twice the
// multiply-adds of vdpbf16ps, four times those of an f32 FMA). Opt-in
// (Bf16Math::int8_dot), because quantising the activations costs accuracy.
//
// NOTE: each call quantises its activation rows per group of kQuantGroup
// inputs (quantize_activation_group: scale max|a| / 127, codes in [-127, 127])
// into a per-thread buffer of k-quads, one 32-bit word per 4 inputs, so a
// broadcast word feeds a vpdpbusd against 16 column quads. vpdpbusd multiplies
// unsigned by signed bytes: the weights are the unsigned side, as code + 128
// (int8, a flip of the top bit) or as stored (int4 nibbles hold code + 8), and
// the offset's contribution, offset · Σ activation codes of the group, is
// computed with the activations and preloaded, negated, into the group's
// integer accumulators. A group's exact integer sum is then converted to f32
// and multiplied by weight scale · activation scale into the f32 total.
// Weights stay in their k-pair layout (quantized.hpp): two k-pair rows are
// interleaved into quads with one permute (in registers for a few rows; for
// more, once per panel into a per-thread buffer), so the same packed weights
// serve the bf16 and f32 kernels too. Every output is the same
// sequence of operations whatever the tile shape, so a row's bytes do not
// depend on the other rows of the call.
#pragma once

#include "../target.hpp"

#ifdef MOEKIT_HAVE_X86_KERNELS
#include <cstdint>
#include <limits>

#include "../../core/scratch_arena.hpp"
#include "../packing.hpp"
#include "../quantized.hpp"
#include "../rows.hpp"
#include "gemm_f32.hpp"

MOEKIT_SIMD_WARNINGS_PUSH

MOEKIT_NAMESPACE_BEGIN
namespace kernels {
namespace avx512_vnni {

// acc + the four byte products of each 32-bit lane (w unsigned, a signed).
// NOTE: GCC 12 allocates registers for _mm512_dpbusd_epi32 badly once a loop
// keeps more than ~16 accumulators live (it copies them around and chains the
// copies: 2.5x slower with 24), so on GCC the instruction is written out with
// the accumulator as an in/out operand; clang's intrinsic is fine.
MOEKIT_TARGET_AVX512_BF16 __attribute__((always_inline)) inline __m512i dpbusd(__m512i acc,
                                                                               __m512i w,
                                                                               __m512i a) {
#if defined(__GNUC__) && !defined(__clang__)
  asm("vpdpbusd %2, %1, %0" : "+v"(acc) : "v"(w), "v"(a));
  return acc;
#else
  return _mm512_dpbusd_epi32(acc, w, a);
#endif
}

// k-quads (4 inputs) per scale group.
constexpr Index kGroupQuads = kQuantGroup / 4;

// Quantised activation rows as the tiles read them: row i's codes at
// A + i·K4 words, its group scales at s + i·G and its offset corrections
// (-offset · Σ codes of the group) at c + i·G.
struct QuadRows {
  const std::uint32_t* A;
  const float* s;
  const std::int32_t* c;
  Index K4, G;
  QuadRows at(Index i) const noexcept { return {A + i * K4, s + i * G, c + i * G, K4, G}; }
};

// Quantises m rows of K activations (row stride lda) per group, as
// quantize_activation_group does, into k-quads (the last quad padded with
// code 0), scales and the corrections for weights stored with `offset`.
// codes: [m, K4] words, scales and corr: [m, G].
MOEKIT_TARGET_AVX512_BF16 inline void quantize_rows(const ActivationRows& X, Index m, Index K,
                                                    std::int32_t offset, std::uint32_t* codes,
                                                    float* scales, std::int32_t* corr) {
  const __m512 sign = _mm512_castsi512_ps(_mm512_set1_epi32(0x7fffffff));
  const Index K4 = (K + 3) / 4, G = quant_groups(K);
  for (Index r = 0; r < m; ++r) {
    const float* a = X.row(r);
    auto* q = reinterpret_cast<std::int8_t*>(codes + r * K4);
    float* s = scales + r * G;
    std::int32_t* c = corr + r * G;
    for (Index g = 0; g < G; ++g) {
      const Index k = g * kQuantGroup, n = K - k < kQuantGroup ? K - k : kQuantGroup;
      const __mmask16 m0 = avx512::column_mask(n), m1 = avx512::column_mask(n > 16 ? n - 16 : 0);
      const __m512 x0 = _mm512_maskz_loadu_ps(m0, a + k);
      const __m512 x1 = n > 16 ? _mm512_maskz_loadu_ps(m1, a + k + 16) : _mm512_setzero_ps();
      // NaN or infinity (fpclass: QNaN | SNaN | +Inf | -Inf).
      const bool bad = (_mm512_fpclass_ps_mask(x0, 0x99) | _mm512_fpclass_ps_mask(x1, 0x99)) != 0;
      const float amax =
          _mm512_reduce_max_ps(_mm512_max_ps(_mm512_and_ps(x0, sign), _mm512_and_ps(x1, sign)));
      const bool tiny = !(amax >= kActivationTiny);  // all zero, or 127 / amax would overflow
      const float inv = bad || tiny ? 0.0f : 127.0f / amax;
      s[g] = bad ? std::numeric_limits<float>::quiet_NaN() : tiny ? 0.0f : amax / 127.0f;
      // Rounded to nearest even (the default MXCSR mode, as std::nearbyint);
      // |x · inv| <= 127 (+ rounding), so the saturating narrowing is exact.
      const __m512i q0 = _mm512_cvtps_epi32(_mm512_mul_ps(x0, _mm512_set1_ps(inv)));
      const __m512i q1 = _mm512_cvtps_epi32(_mm512_mul_ps(x1, _mm512_set1_ps(inv)));
      // A non-finite input: codes 0 (its NaN scale carries the news).
      const __mmask16 keep = bad ? 0 : 0xffff;
      const __m512i lo = _mm512_maskz_max_epi32(keep, _mm512_set1_epi32(-127), q0);
      const __m512i hi = _mm512_maskz_max_epi32(keep, _mm512_set1_epi32(-127), q1);
      c[g] = -offset * _mm512_reduce_add_epi32(_mm512_add_epi32(lo, hi));
      // Codes up to the padded end of the row (a multiple of 4 bytes).
      const Index bytes = (n + 3) / 4 * 4;
      _mm_mask_storeu_epi8(q + k, static_cast<__mmask16>(avx512::column_mask(bytes)),
                           _mm512_cvtsepi32_epi8(lo));
      if (bytes > 16)
        _mm_mask_storeu_epi8(q + k + 16, static_cast<__mmask16>(avx512::column_mask(bytes - 16)),
                             _mm512_cvtsepi32_epi8(hi));
    }
  }
}

struct QuadRowsTag;

// Quantises the call's rows into the per-thread buffer.
MOEKIT_TARGET_AVX512_BF16 inline QuadRows quad_rows(const ActivationRows& X, Index m, Index K,
                                                    std::int32_t offset) {
  const Index K4 = (K + 3) / 4, G = quant_groups(K);
  std::uint32_t* codes = moekit::detail::thread_scratch<QuadRowsTag, std::uint32_t>(m * K4);
  float* scales = moekit::detail::thread_scratch<QuadRowsTag, float>(m * G);
  std::int32_t* corr = moekit::detail::thread_scratch<QuadRowsTag, std::int32_t>(m * G);
  quantize_rows(X, m, K, offset, codes, scales, corr);
  return {codes, scales, corr, K4, G};
}

// Word permutations that interleave two k-pair rows into k-quads: lane j takes
// word j of the first row, then the matching word of the second.
alignas(64) constexpr std::uint16_t kQuads16[32] = {  // rows as words 0-15 and 16-31
    0, 16, 1, 17, 2,  18, 3,  19, 4,  20, 5,  21, 6,  22, 7,  23,
    8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31};
alignas(64) constexpr std::uint16_t kQuadsGate[32] = {  // two 64-byte rows, words 0-15 / 32-47
    0, 32, 1, 33, 2,  34, 3,  35, 4,  36, 5,  37, 6,  38, 7,  39,
    8, 40, 9, 41, 10, 42, 11, 43, 12, 44, 13, 45, 14, 46, 15, 47};
alignas(64) constexpr std::uint16_t kQuadsUp[32] = {  // words 16-31 / 48-63
    16, 48, 17, 49, 18, 50, 19, 51, 20, 52, 21, 53, 22, 54, 23, 55,
    24, 56, 25, 57, 26, 58, 27, 59, 28, 60, 29, 61, 30, 62, 31, 63};
// int4 plain panel: a k-pair row is 16 bytes (columns 0-7 in the low nibbles,
// 8-15 in the high ones); lanes 0-7 and 8-15 take the same words.
alignas(64) constexpr std::uint16_t kQuads8[32] = {0,  8,  1,  9,  2,  10, 3, 11, 4, 12, 5,
                                                   13, 6,  14, 7,  15, 0,  8, 1,  9, 2,  10,
                                                   3,  11, 4,  12, 5,  13, 6, 14, 7, 15};
alignas(64) constexpr std::uint16_t kNibbleShift[32] = {
    0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4, 4};

// The 16 column quads (k-quad kq, columns off..off+15) of one panel as
// unsigned bytes code + offset, read from the k-pair codes. The last quad of
// an odd number of k-pairs has no second row: it reads zeros there (their
// activations are code 0, so the value does not matter, only the bounds).
template <int Bits, Index W>
struct QuantQuads {
  const std::uint8_t* codes;
  const float* scales;
  Index K2;  // k-pairs of the panel
  static constexpr Index kRowBytes = quant_pair_bytes(W, Bits);
  // Unlike QuantPairs / QuantSource, asking for the next panel's codes gained
  // nothing here (olmoe T = 64, int8_dot: 0.98x int8, 1.03x int4).
  static constexpr bool kPrefetch = false;
  void prefetch(Index) const noexcept {}
  MOEKIT_TARGET_AVX512_BF16 __m512i operator()(Index kq, Index off) const {
    const std::uint8_t* c = codes + 2 * kq * kRowBytes;
    const bool both = 2 * kq + 1 < K2;
    if constexpr (Bits == 8 && W == 32) {
      const __m512i r0 = _mm512_loadu_si512(c);
      const __m512i r1 = both ? _mm512_loadu_si512(c + 64) : _mm512_setzero_si512();
      const __m512i v =
          _mm512_permutex2var_epi16(r0, _mm512_load_si512(off == 0 ? kQuadsGate : kQuadsUp), r1);
      return _mm512_xor_si512(v, _mm512_set1_epi8(static_cast<char>(0x80)));
    } else if constexpr (Bits == 8) {  // W = 16: two 32-byte rows
      const __m512i v = both ? _mm512_loadu_si512(c) : _mm512_maskz_loadu_epi8(0xffffffffu, c);
      return _mm512_xor_si512(_mm512_permutexvar_epi16(_mm512_load_si512(kQuads16), v),
                              _mm512_set1_epi8(static_cast<char>(0x80)));
    } else if constexpr (W == 32) {  // int4 gate + up: low nibbles gate, high up
      const __m512i v = both ? _mm512_loadu_si512(c) : _mm512_maskz_loadu_epi8(0xffffffffu, c);
      __m512i x = _mm512_permutexvar_epi16(_mm512_load_si512(kQuads16), v);
      if (off != 0) x = _mm512_srli_epi16(x, 4);
      return _mm512_and_si512(x, _mm512_set1_epi8(0x0f));
    } else {  // int4 plain: two 16-byte rows
      const __m256i h = both ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c))
                             : _mm256_maskz_loadu_epi8(0xffffu, c);
      const __m512i x =
          _mm512_permutexvar_epi16(_mm512_load_si512(kQuads8), _mm512_castsi256_si512(h));
      return _mm512_and_si512(_mm512_srlv_epi16(x, _mm512_load_si512(kNibbleShift)),
                              _mm512_set1_epi8(0x0f));
    }
  }
  MOEKIT_TARGET_AVX512_BF16 __m512 scale(Index g, Index off) const {
    return _mm512_loadu_ps(scales + g * W + off);
  }
};

template <int Bits, Index W>
struct QuadBank {
  const std::uint8_t* codes;
  const float* scales;
  Index K;
  QuantQuads<Bits, W> operator()(Index p) const noexcept {
    return {codes + p * quant_panel_code_bytes(K, W, Bits), scales + p * quant_panel_scales(K, W),
            (K + 1) / 2};
  }
};

// Quads already decoded (code + offset, 4·W bytes per k-quad) by decode_panels,
// with the codes' group scales. `next`: codes of the panel to be decoded
// after this one, asked into L2 as quads are read here (avx512::NextCodes).
template <Index W>
struct DecodedQuads {
  const std::uint8_t* p;
  const float* scales;
  avx512::NextCodes next = {};  // per k-quad
  static constexpr bool kPrefetch = false;
  void prefetch(Index) const noexcept {}
  MOEKIT_TARGET_AVX512_BF16 __m512i operator()(Index kq, Index off) const {
    if (off == 0) next.ask(kq);
    return _mm512_loadu_si512(p + kq * 4 * W + 4 * off);
  }
  MOEKIT_TARGET_AVX512_BF16 __m512 scale(Index g, Index off) const {
    return _mm512_loadu_ps(scales + g * W + off);
  }
};

// Panels p0, p0 + 1, ... decoded one after another in `quads`; `ahead`: the
// codes of the first panel to decode after them, or null.
template <int Bits, Index W>
struct DecodedQuadBank {
  const std::uint8_t* quads;
  const float* scales;
  avx512::NextCodes ahead;
  Index K, p0;
  DecodedQuads<W> operator()(Index p) const noexcept {
    const Index K4 = (K + 3) / 4;
    return {quads + (p - p0) * K4 * 4 * W, scales + p * quant_panel_scales(K, W),
            ahead.panel(p - p0, quant_panel_code_bytes(K, W, Bits))};
  }
};

// Decodes panels [p, p + n) of a quantised weight into quads at out.
template <int Bits, Index W>
MOEKIT_TARGET_AVX512_BF16 inline void decode_panels(const QuadBank<Bits, W>& bank, Index p, Index n,
                                                    std::uint8_t* out) {
  const Index K4 = (bank.K + 3) / 4;
  for (Index q = 0; q < n; ++q) {
    const QuantQuads<Bits, W> src = bank(p + q);
    std::uint8_t* o = out + q * K4 * 4 * W;
    for (Index kq = 0; kq < K4; ++kq)
#pragma GCC unroll 2
      for (Index off = 0; off < W; off += kPanel)
        _mm512_storeu_si512(o + kq * 4 * W + 4 * off, src(kq, off));
  }
}

// Adds one group's integer sums to the f32 totals: total += f32(sum) · (ws · as).
template <int MR>
MOEKIT_TARGET_AVX512_BF16 __attribute__((always_inline)) inline void add_group(
    const QuadRows& A, Index grp, const __m512i (&acc)[MR], __m512 ws, float* total) {
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    float* t = total + r * 16;
    const __m512 s = _mm512_mul_ps(ws, _mm512_set1_ps(A.s[r * A.G + grp]));
    _mm512_store_ps(t, _mm512_fmadd_ps(_mm512_cvtepi32_ps(acc[r]), s, _mm512_load_ps(t)));
  }
}

// MR rows x NP gate + up panels: 2·MR·NP integer accumulators per group, f32
// totals in memory (they change once per group).
template <int MR, int NP, class Src>
MOEKIT_TARGET_AVX512_BF16 inline void gate_up_tile(const QuadRows& A, const Src* B, float* G,
                                                   float* U, Index ldo, const __mmask16* mask) {
  __m512i g[NP][MR], u[NP][MR];
  alignas(64) float total[2 * NP][MR * 16];
  for (auto& t : total)
    for (float& v : t) v = 0.0f;
  for (Index grp = 0, kq0 = 0; kq0 < A.K4; ++grp) {
    const Index kq1 = kq0 + kGroupQuads < A.K4 ? kq0 + kGroupQuads : A.K4;
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512i c = _mm512_set1_epi32(A.c[r * A.G + grp]);
#pragma GCC unroll 16
      for (int q = 0; q < NP; ++q) g[q][r] = u[q][r] = c;
    }
    for (Index kq = kq0; kq < kq1; ++kq) {
      __m512i bg[NP], bu[NP];
#pragma GCC unroll 16
      for (int q = 0; q < NP; ++q) bg[q] = B[q](kq, 0), bu[q] = B[q](kq, 16);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512i a = _mm512_set1_epi32(static_cast<int>(A.A[r * A.K4 + kq]));
#pragma GCC unroll 16
        for (int q = 0; q < NP; ++q) {
          g[q][r] = dpbusd(g[q][r], bg[q], a);
          u[q][r] = dpbusd(u[q][r], bu[q], a);
        }
      }
    }
#pragma GCC unroll 16
    for (int q = 0; q < NP; ++q) {
      add_group<MR>(A, grp, g[q], B[q].scale(grp, 0), total[2 * q]);
      add_group<MR>(A, grp, u[q], B[q].scale(grp, 16), total[2 * q + 1]);
    }
    kq0 = kq1;
  }
#pragma GCC unroll 16
  for (int q = 0; q < NP; ++q)
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      _mm512_mask_storeu_ps(G + r * ldo + q * kPanel, mask[q],
                            _mm512_load_ps(total[2 * q] + r * 16));
      _mm512_mask_storeu_ps(U + r * ldo + q * kPanel, mask[q],
                            _mm512_load_ps(total[2 * q + 1] + r * 16));
    }
}

// MR rows x NP panels of Y = A·Wᵀ.
template <int MR, int NP, class Src>
MOEKIT_TARGET_AVX512_BF16 inline void down_tile(const QuadRows& A, const Src* B, float* Y,
                                                Index ldy, const __mmask16* mask) {
  __m512i y[NP][MR];
  alignas(64) float total[NP][MR * 16];
  for (auto& t : total)
    for (float& v : t) v = 0.0f;
  for (Index grp = 0, kq0 = 0; kq0 < A.K4; ++grp) {
    const Index kq1 = kq0 + kGroupQuads < A.K4 ? kq0 + kGroupQuads : A.K4;
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512i c = _mm512_set1_epi32(A.c[r * A.G + grp]);
#pragma GCC unroll 16
      for (int q = 0; q < NP; ++q) y[q][r] = c;
    }
    for (Index kq = kq0; kq < kq1; ++kq) {
      __m512i b[NP];
#pragma GCC unroll 16
      for (int q = 0; q < NP; ++q) b[q] = B[q](kq, 0);
#pragma GCC unroll 16
      for (int r = 0; r < MR; ++r) {
        const __m512i a = _mm512_set1_epi32(static_cast<int>(A.A[r * A.K4 + kq]));
#pragma GCC unroll 16
        for (int q = 0; q < NP; ++q) y[q][r] = dpbusd(y[q][r], b[q], a);
      }
    }
#pragma GCC unroll 16
    for (int q = 0; q < NP; ++q) add_group<MR>(A, grp, y[q], B[q].scale(grp, 0), total[q]);
    kq0 = kq1;
  }
#pragma GCC unroll 16
  for (int q = 0; q < NP; ++q)
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
      _mm512_mask_storeu_ps(Y + r * ldy + q * kPanel, mask[q], _mm512_load_ps(total[q] + r * 16));
}

// The tiles above as a policy of the shared drivers (avx512::gate_up_panels).
struct VnniTiles {
  template <int MR, int NP, class Src>
  MOEKIT_TARGET_AVX512_BF16 static void gate_up(const QuadRows& a, const Src* B, float* G, float* U,
                                                Index ldo, const __mmask16* mask,
                                                const avx512::Ahead<Src>&) {
    gate_up_tile<MR, NP>(a, B, G, U, ldo, mask);
  }
  template <int MR, int NP, class Src>
  MOEKIT_TARGET_AVX512_BF16 static void down(const QuadRows& a, const Src* B, float* Y, Index ldy,
                                             const __mmask16* mask, const avx512::Ahead<Src>&) {
    down_tile<MR, NP>(a, B, Y, ldy, mask);
  }
};

struct DecodedQuadsTag;

// The decoder policy of avx512::gate_up_quant_panels / matmul_quant_panels:
// k-pair codes to offset quads. Interleaving costs a permute (and a bias or nibble mask) per
// 16 columns, and with 24 accumulators live the registers run out for the
// permute tables, so prefill decodes each panel once.
struct QuadDecoder {
  static std::uint8_t* scratch(Index K) {
    return moekit::detail::thread_scratch<DecodedQuadsTag, std::uint8_t>((K + 3) / 4 * 4 * 2 *
                                                                         kPanel);
  }
  template <int Bits, Index W>
  MOEKIT_TARGET_AVX512_BF16 static void decode(const QuadBank<Bits, W>& bank, Index p, Index n,
                                               std::uint8_t* out) {
    decode_panels(bank, p, n, out);
  }
  template <int Bits, Index W>
  static DecodedQuadBank<Bits, W> view(const QuadBank<Bits, W>& bank, const std::uint8_t* buf,
                                       const std::uint8_t* ahead, Index p) {
    // The next codes are asked for a k-quad (two k-pair rows) at a time.
    return {buf, bank.scales, {ahead, 2 * QuantQuads<Bits, W>::kRowBytes}, bank.K, p};
  }
};

/// int8 (Bits = 8) / int4 (Bits = 4) weights (quantized.hpp) times int8
/// activations quantised per group: hidden columns [c0, c1) of G = A·W_gateᵀ,
/// U = A·W_upᵀ.
template <int Bits>
MOEKIT_TARGET_AVX512_BF16 inline void gate_up_quant(ActivationRows A, Index m, Index K,
                                                    const std::uint8_t* codes, const float* scales,
                                                    Index f, Index c0, Index c1, float* G, float* U,
                                                    Index ldo) {
  (void)f;
  const QuadRows rows = quad_rows(A, m, K, Bits == 8 ? 128 : 8);
  avx512::gate_up_quant_panels<VnniTiles, QuadDecoder>(
      rows, m, QuadBank<Bits, 2 * kPanel>{codes, scales, K}, c0, c1, G, U, ldo);
}
/// The same for output columns [c0, c1) of Y = A·Wᵀ.
template <int Bits>
MOEKIT_TARGET_AVX512_BF16 inline void matmul_quant(const float* A, Index lda, Index m, Index K,
                                                   const std::uint8_t* codes, const float* scales,
                                                   Index N, Index c0, Index c1, float* Y,
                                                   Index ldy) {
  (void)N;
  const QuadRows rows = quad_rows({A, lda}, m, K, Bits == 8 ? 128 : 8);
  avx512::matmul_quant_panels<VnniTiles, QuadDecoder>(
      rows, m, QuadBank<Bits, kPanel>{codes, scales, K}, c0, c1, Y, ldy);
}

}  // namespace avx512_vnni
}  // namespace kernels
MOEKIT_NAMESPACE_END

MOEKIT_SIMD_WARNINGS_POP

#endif  // MOEKIT_HAVE_X86_KERNELS
