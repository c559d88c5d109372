// SPDX-License-Identifier: MIT
// AVX2 kernels for int8 / int4 weights times int8 activations
// (Bf16Math::int8_dot where the CPU has no AVX-512 VNNI): the arithmetic of
// avx512/gemm_int8_vnni.hpp with AVX2's integer multiply-adds.
//
// NOTE: each call quantises its activation rows per group of kQuantGroup
// inputs as quantize_activation_group does (codes in [-127, 127]). A group's
// sum of code products is an exact integer; it is converted to f32 (exact:
// |sum| <= 32 · 127 · 127 < 2^24) and multiplied by weight scale · activation
// scale into the f32 total, group after group, with the operations of the
// VNNI kernels, so both give the same bytes.
// int8 weights: vpmaddwd on codes widened to 16 bits. A k-pair row holds each
// column's two codes side by side (quantized.hpp), so one multiply-add against
// the broadcast activation pair sums a column's k-pair into its 32-bit lane.
// int4 weights: vpmaddubsw multiplies the stored nibbles (code + 8, unsigned)
// by the signed activation bytes and sums each column's k-pair into 16 bits:
// at most 2 · 15 · 127 = 3810, so 8 k-pairs add up in 16 bits without
// saturating before they are widened into the group's 32-bit sums. The bias
// is taken out by adding -8 · (sum of the group's activation codes).
// Per 16 columns and k-pair: int8 two multiply-adds, int4 one; the f32 path
// spends a decode (2-7 instructions) and an FMA per 8 weights and row.
#pragma once

#include "../target.hpp"

#ifdef MOEKIT_HAVE_X86_KERNELS
#include <cfloat>
#include <cstdint>
#include <limits>

#include "../../core/scratch_arena.hpp"
#include "../packing.hpp"
#include "../quantized.hpp"
#include "../rows.hpp"

MOEKIT_SIMD_WARNINGS_PUSH

MOEKIT_NAMESPACE_BEGIN
namespace kernels {
namespace avx2_int8 {

// k-pairs per scale group.
constexpr Index kGroupPairs = kQuantGroup / 2;

// Quantised activation rows as the tiles read them: row i's k-pair kp as one
// 32-bit word at words[i * ld + kp] (int8 weights: the two codes as 16-bit
// halves; int4 weights: the two code bytes twice), its group scales at
// s[i * G + g] and its bias corrections (int4: -8 · sum of the group's codes;
// int8: 0) at c[i * G + g].
struct PairRows {
  const std::uint32_t* words;
  const float* s;
  const std::int32_t* c;
  Index ld, G;
  PairRows at(Index i) const noexcept { return {words + i * ld, s + i * G, c + i * G, ld, G}; }
};

// acc + t in 32-bit (B = 4) or 16-bit (B = 2) lanes, acc updated in place.
// NOTE: with a dozen integer accumulators live, GCC 12 gives each sum a new
// register and copies it back, spilling half of them to the stack (int8
// prefill ran slower than the f32 tiles); written out on GCC, the add keeps
// each accumulator in its register. Clang's intrinsics are fine.
template <int B>
MOEKIT_TARGET_AVX2 __attribute__((always_inline)) inline void accumulate(__m256i& acc, __m256i t) {
#if defined(__GNUC__) && !defined(__clang__)
  if constexpr (B == 4)
    asm("vpaddd %1, %0, %0" : "+x"(acc) : "x"(t));
  else
    asm("vpaddw %1, %0, %0" : "+x"(acc) : "x"(t));
#else
  acc = B == 4 ? _mm256_add_epi32(acc, t) : _mm256_add_epi16(acc, t);
#endif
}

// The first n (<= 8, may be <= 0) floats at p, zeros after them; reads nothing past them.
MOEKIT_TARGET_AVX2 inline __m256 load_first(const float* p, Index n) {
  if (n >= 8) return _mm256_loadu_ps(p);
  const __m256i lane = _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7);
  const __m256i mask = _mm256_cmpgt_epi32(_mm256_set1_epi32(static_cast<int>(n > 0 ? n : 0)), lane);
  return _mm256_maskload_ps(p, mask);
}

MOEKIT_TARGET_AVX2 inline float horizontal_max(__m256 v) {
  __m128 h = _mm_max_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
  h = _mm_max_ps(h, _mm_movehl_ps(h, h));
  return _mm_cvtss_f32(_mm_max_ss(h, _mm_movehdup_ps(h)));
}
MOEKIT_TARGET_AVX2 inline std::int32_t horizontal_sum(__m256i v) {
  __m128i h = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
  h = _mm_add_epi32(h, _mm_unpackhi_epi64(h, h));
  return _mm_cvtsi128_si32(_mm_add_epi32(h, _mm_shuffle_epi32(h, 1)));
}

// Quantises m rows of K activations (row stride lda) per group, as
// quantize_activation_group does, into k-pair words for Bits-bit weights (the
// last group's words padded with code 0 up to a whole group: ld >= 16 · G).
template <int Bits>
MOEKIT_TARGET_AVX2 inline void quantize_rows(const ActivationRows& X, Index m, Index K,
                                             std::uint32_t* words, Index ld, float* scales,
                                             std::int32_t* corr) {
  const __m256 magnitude = _mm256_castsi256_ps(_mm256_set1_epi32(0x7fffffff));
  const __m256 largest = _mm256_set1_ps(FLT_MAX);
  const Index G = quant_groups(K);
  for (Index r = 0; r < m; ++r) {
    const float* a = X.row(r);
    for (Index g = 0; g < G; ++g) {
      const Index k0 = g * kQuantGroup, n = K - k0 < kQuantGroup ? K - k0 : kQuantGroup;
      __m256 x[4], amax = _mm256_setzero_ps(), bad = _mm256_setzero_ps();
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        x[i] = load_first(a + k0 + 8 * i, n - 8 * i);
        const __m256 mag = _mm256_and_ps(x[i], magnitude);
        amax = _mm256_max_ps(amax, mag);
        bad = _mm256_or_ps(bad, _mm256_cmp_ps(mag, largest, _CMP_NLE_UQ));  // inf or NaN
      }
      const bool nonfinite = _mm256_movemask_ps(bad) != 0;
      const float top = horizontal_max(amax);
      const bool tiny = !(top >= kActivationTiny);  // all zero, or 127 / top would overflow
      const float inv = nonfinite || tiny ? 0.0f : 127.0f / top;
      scales[r * G + g] = nonfinite ? std::numeric_limits<float>::quiet_NaN()
                          : tiny    ? 0.0f
                                    : top / 127.0f;
      // Rounded to nearest even (the default MXCSR mode, as std::nearbyint);
      // |x · inv| <= 127 (+ rounding), so the saturating packs below are exact.
      __m256i q[4], sum = _mm256_setzero_si256();
#pragma GCC unroll 4
      for (int i = 0; i < 4; ++i) {
        q[i] = _mm256_cvtps_epi32(_mm256_mul_ps(x[i], _mm256_set1_ps(inv)));
        q[i] = _mm256_max_epi32(_mm256_set1_epi32(-127),
                                _mm256_min_epi32(_mm256_set1_epi32(127), q[i]));
        if (nonfinite) q[i] = _mm256_setzero_si256();  // its NaN scale carries the news
        sum = _mm256_add_epi32(sum, q[i]);
      }
      corr[r * G + g] = Bits == 4 ? -8 * horizontal_sum(sum) : 0;
      // 16-bit codes in k order: k0-15, k16-31.
      const __m256i lo = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[0], q[1]), 0xd8);
      const __m256i hi = _mm256_permute4x64_epi64(_mm256_packs_epi32(q[2], q[3]), 0xd8);
      auto* out = reinterpret_cast<__m256i*>(words + r * ld + g * kGroupPairs);
      if constexpr (Bits == 8) {  // a k-pair word: its two codes as 16-bit halves
        _mm256_storeu_si256(out, lo);
        _mm256_storeu_si256(out + 1, hi);
      } else {  // a k-pair word: its two code bytes, twice
        const __m256i b = _mm256_permute4x64_epi64(_mm256_packs_epi16(lo, hi), 0xd8);
        const __m256i p0 = _mm256_unpacklo_epi16(b, b), p1 = _mm256_unpackhi_epi16(b, b);
        _mm256_storeu_si256(out, _mm256_permute2x128_si256(p0, p1, 0x20));
        _mm256_storeu_si256(out + 1, _mm256_permute2x128_si256(p0, p1, 0x31));
      }
    }
  }
}

struct PairRowsTag;

// Quantises the call's rows into the per-thread buffer.
template <int Bits>
MOEKIT_TARGET_AVX2 inline PairRows pair_rows(const ActivationRows& X, Index m, Index K) {
  const Index G = quant_groups(K), ld = G * kGroupPairs;
  std::uint32_t* words = moekit::detail::thread_scratch<PairRowsTag, std::uint32_t>(m * ld);
  float* scales = moekit::detail::thread_scratch<PairRowsTag, float>(m * G);
  std::int32_t* corr = moekit::detail::thread_scratch<PairRowsTag, std::int32_t>(m * G);
  quantize_rows<Bits>(X, m, K, words, ld, scales, corr);
  return {words, scales, corr, ld, G};
}

// One group's 32-bit sums (NV blocks of 16 columns, two vectors of 8 each) of
// MR rows into the f32 totals: total += f32(sum + correction) · (ws · as),
// as the VNNI kernels' add_group.
template <int MR, int NV>
MOEKIT_TARGET_AVX2 __attribute__((always_inline)) inline void add_group(
    const PairRows& A, Index g, const __m256i (&sum)[NV][2][MR], const float* ws,
    float (&total)[MR][16 * NV]) {
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r) {
    const __m256 as = _mm256_set1_ps(A.s[r * A.G + g]);
    const __m256i c = _mm256_set1_epi32(A.c[r * A.G + g]);
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v)
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h) {
        float* t = total[r] + 16 * v + 8 * h;
        const __m256 s = _mm256_mul_ps(_mm256_loadu_ps(ws + 16 * v + 8 * h), as);
        const __m256 x = _mm256_cvtepi32_ps(_mm256_add_epi32(sum[v][h][r], c));
        _mm256_store_ps(t, _mm256_fmadd_ps(x, s, _mm256_load_ps(t)));
      }
  }
}

// The k-pair codes of int4 16-column block v, as unsigned bytes (code + 8) in
// column order, a column's two k side by side. W = 32 (gate + up): the 32
// bytes hold the gate block in the low nibbles and the up block in the high
// ones. W = 16: 16 bytes, columns 0-7 low, 8-15 high; both halves of the
// vector take the 16 bytes and shift by 0 and 4.
template <Index W>
MOEKIT_TARGET_AVX2 __attribute__((always_inline)) inline void int4_pair(const std::uint8_t* c,
                                                                        __m256i (&out)[W / 16]) {
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  if constexpr (W == 32) {
    const __m256i v = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(c));
    out[0] = _mm256_and_si256(v, nibble);
    out[1] = _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble);
  } else {
    const __m256i v =
        _mm256_broadcastsi128_si256(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)));
    out[0] =
        _mm256_and_si256(_mm256_srlv_epi32(v, _mm256_setr_epi32(0, 0, 0, 0, 4, 4, 4, 4)), nibble);
  }
}

// int8 codes of a panel as 16-bit vectors: the 8 column pairs at element e of
// the panel (e = k-pair · 2W + 32 · block + 16 · half), widened from the
// stored bytes (T = std::int8_t) or loaded from a panel widened once
// (T = std::int16_t, widen_panel).
template <class T>
MOEKIT_TARGET_AVX2 __attribute__((always_inline)) inline __m256i int8_pairs(const T* p, Index e) {
  if constexpr (sizeof(T) == 1)
    return _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(p + e)));
  else
    return _mm256_load_si256(reinterpret_cast<const __m256i*>(p + e));
}

// NOTE: widening int8 codes to 16 bits takes a shuffle per 16 codes, as many
// as the multiply-adds of a 2-row tile. With more rows than one tile, each
// panel is widened once into a per-thread buffer (128 KiB at K = 2048: L2)
// that every row tile reads, and the down tiles grow to 6 rows.
struct WidenedPanelTag;
template <Index W>
MOEKIT_TARGET_AVX2 inline const std::int16_t* widen_panel(const std::uint8_t* codes, Index K2) {
  std::int16_t* out = moekit::detail::thread_scratch<WidenedPanelTag, std::int16_t>(K2 * 2 * W);
  const auto* c = reinterpret_cast<const std::int8_t*>(codes);
  for (Index e = 0; e < K2 * 2 * W; e += 16)
    _mm256_store_si256(reinterpret_cast<__m256i*>(out + e), int8_pairs(c, e));
  return out;
}

// MR rows x one panel of NV blocks of 16 columns (gate + up: NV = 2, block 0
// to O0 and 1 to O1; plain: NV = 1, to O0), K2 k-pairs, group by group.
// int8: T is the code type (std::int8_t as stored, std::int16_t widened).
template <int Bits, int MR, int NV, class T = std::uint8_t>
MOEKIT_TARGET_AVX2 inline void tile(const PairRows& A, Index K2, const T* codes,
                                    const float* scales, float* O0, float* O1, Index ldo) {
  constexpr Index W = 16 * NV;
  constexpr Index kRowBytes = quant_pair_bytes(W, Bits);  // elements of one k-pair row
  alignas(32) float total[MR][W] = {};                    // the output tile in L1 (zero if K = 0)
  for (Index g = 0, kp0 = 0; kp0 < K2; ++g, kp0 += kGroupPairs) {
    const Index kp1 = K2 - kp0 < kGroupPairs ? K2 : kp0 + kGroupPairs;
    __m256i sum[NV][2][MR];
    if constexpr (Bits == 8) {
#pragma GCC unroll 2
      for (int v = 0; v < NV; ++v)
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) sum[v][0][r] = sum[v][1][r] = _mm256_setzero_si256();
      for (Index kp = kp0; kp < kp1; ++kp) {
        __m256i a[MR];
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r)
          a[r] = _mm256_set1_epi32(static_cast<int>(A.words[r * A.ld + kp]));
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v)
#pragma GCC unroll 2
          for (int h = 0; h < 2; ++h) {
            const __m256i w = int8_pairs(codes, kp * kRowBytes + 32 * v + 16 * h);
#pragma GCC unroll 8
            for (int r = 0; r < MR; ++r) accumulate<4>(sum[v][h][r], _mm256_madd_epi16(w, a[r]));
          }
      }
    } else {
      // Two halves of at most 8 k-pairs, each summed in 16 bits, then widened.
      for (int half = 0; half < 2; ++half) {
        const Index h0 = kp0 + 8 * half, h1 = kp1 - h0 < 8 ? kp1 : h0 + 8;
        __m256i acc[NV][MR];
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v)
#pragma GCC unroll 8
          for (int r = 0; r < MR; ++r) acc[v][r] = _mm256_setzero_si256();
#pragma GCC unroll 8
        for (Index kp = h0; kp < h1; ++kp) {
          __m256i w[NV];
          int4_pair<W>(codes + kp * kRowBytes, w);
#pragma GCC unroll 8
          for (int r = 0; r < MR; ++r) {
            const __m256i a = _mm256_set1_epi32(static_cast<int>(A.words[r * A.ld + kp]));
#pragma GCC unroll 2
            for (int v = 0; v < NV; ++v) accumulate<2>(acc[v][r], _mm256_maddubs_epi16(w[v], a));
          }
        }
#pragma GCC unroll 2
        for (int v = 0; v < NV; ++v)
#pragma GCC unroll 8
          for (int r = 0; r < MR; ++r) {
            const __m256i lo = _mm256_cvtepi16_epi32(_mm256_castsi256_si128(acc[v][r]));
            const __m256i hi = _mm256_cvtepi16_epi32(_mm256_extracti128_si256(acc[v][r], 1));
            sum[v][0][r] = half ? _mm256_add_epi32(sum[v][0][r], lo) : lo;
            sum[v][1][r] = half ? _mm256_add_epi32(sum[v][1][r], hi) : hi;
          }
      }
    }
    add_group<MR, NV>(A, g, sum, scales + g * W, total);
  }
#pragma GCC unroll 8
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 2
    for (int v = 0; v < NV; ++v)
#pragma GCC unroll 2
      for (int h = 0; h < 2; ++h)
        _mm256_storeu_ps((v == 0 ? O0 : O1) + r * ldo + 8 * h,
                         _mm256_load_ps(total[r] + 16 * v + 8 * h));
}

// Rows per tile: int8 keeps 4 (gate + up) or 2 32-bit sums per row in
// registers (and, from stored codes, the widened codes too); int4 2 or 1
// 16-bit sums (its 32-bit sums change once per half group). A widened gate +
// up tile of 3 rows (12 sums, 4 code vectors, 3 broadcasts) ran out of
// registers: 2 rows are 1.1-1.2x faster (olmoe / mixtral-s int8 prefill).
template <int Bits, int NV, class T>
inline constexpr int kTileRows = Bits == 4        ? (NV == 2 ? 4 : 6)
                                 : sizeof(T) == 1 ? (NV == 2 ? 2 : 4)
                                                  : (NV == 2 ? 2 : 6);

template <int Bits, int NV, class T, int MR = kTileRows<Bits, NV, T>>
MOEKIT_TARGET_AVX2 inline void rows_tile(Index mr, const PairRows& A, Index K2, const T* codes,
                                         const float* scales, float* O0, float* O1, Index ldo) {
  if constexpr (MR > 1)
    if (mr < MR) return rows_tile<Bits, NV, T, MR - 1>(mr, A, K2, codes, scales, O0, O1, ldo);
  tile<Bits, MR, NV>(A, K2, codes, scales, O0, O1, ldo);
}

// Columns [c0, c1) (c0 a multiple of kPanel) of m rows, panel by panel; each
// panel runs all its row tiles while it is in cache.
template <int Bits, int NV, class T>
MOEKIT_TARGET_AVX2 inline void panel_rows(const PairRows& A, Index m, Index K2, const T* pc,
                                          const float* ps, Index p, Index ncols, float* O0,
                                          float* O1, Index ldo) {
  constexpr int MR = kTileRows<Bits, NV, T>;
  alignas(32) float t0[MR * kPanel], t1[MR * kPanel];
  const bool full = ncols == kPanel;
  for (Index i = 0; i < m; i += MR) {
    const Index mr = m - i < MR ? m - i : MR;
    float* o0 = full ? O0 + i * ldo + p * kPanel : t0;
    float* o1 = NV == 1 ? nullptr : full ? O1 + i * ldo + p * kPanel : t1;
    rows_tile<Bits, NV>(mr, A.at(i), K2, pc, ps, o0, o1, full ? ldo : kPanel);
    if (!full)
      for (Index r = 0; r < mr; ++r)
        for (Index j = 0; j < ncols; ++j) {
          O0[(i + r) * ldo + p * kPanel + j] = t0[r * kPanel + j];
          if (NV == 2) O1[(i + r) * ldo + p * kPanel + j] = t1[r * kPanel + j];
        }
  }
}

template <int Bits, int NV>
MOEKIT_TARGET_AVX2 inline void panels(const PairRows& A, Index m, Index K,
                                      const std::uint8_t* codes, const float* scales, Index c0,
                                      Index c1, float* O0, float* O1, Index ldo) {
  constexpr Index W = NV * kPanel;
  const Index K2 = (K + 1) / 2;
  const bool widen = Bits == 8 && m > kTileRows<Bits, NV, std::int8_t>;
  for (Index p = c0 / kPanel; p * kPanel < c1; ++p) {
    const std::uint8_t* pc = codes + p * quant_panel_code_bytes(K, W, Bits);
    const float* ps = scales + p * quant_panel_scales(K, W);
    const Index ncols = c1 - p * kPanel < kPanel ? c1 - p * kPanel : kPanel;
    if constexpr (Bits == 8) {
      if (widen)
        panel_rows<8, NV>(A, m, K2, widen_panel<W>(pc, K2), ps, p, ncols, O0, O1, ldo);
      else
        panel_rows<8, NV>(A, m, K2, reinterpret_cast<const std::int8_t*>(pc), ps, p, ncols, O0, O1,
                          ldo);
    } else {
      panel_rows<4, NV>(A, m, K2, pc, ps, p, ncols, O0, O1, ldo);
    }
  }
}

/// int8 (Bits = 8) / int4 (Bits = 4) weights (quantized.hpp) times int8
/// activations quantised per group: hidden columns [c0, c1) of G = A·W_gateᵀ,
/// U = A·W_upᵀ.
template <int Bits>
MOEKIT_TARGET_AVX2 inline void gate_up_quant(ActivationRows A, Index m, Index K,
                                             const std::uint8_t* codes, const float* scales,
                                             Index f, Index c0, Index c1, float* G, float* U,
                                             Index ldo) {
  (void)f;
  panels<Bits, 2>(pair_rows<Bits>(A, m, K), m, K, codes, scales, c0, c1, G, U, ldo);
}
/// The same for output columns [c0, c1) of Y = A·Wᵀ.
template <int Bits>
MOEKIT_TARGET_AVX2 inline void matmul_quant(const float* A, Index lda, Index m, Index K,
                                            const std::uint8_t* codes, const float* scales, Index N,
                                            Index c0, Index c1, float* Y, Index ldy) {
  (void)N;
  panels<Bits, 1>(pair_rows<Bits>({A, lda}, m, K), m, K, codes, scales, c0, c1, Y, nullptr, ldy);
}

}  // namespace avx2_int8
}  // namespace kernels
MOEKIT_NAMESPACE_END

MOEKIT_SIMD_WARNINGS_POP

#endif  // MOEKIT_HAVE_X86_KERNELS
