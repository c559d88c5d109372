// SPDX-License-Identifier: MIT
// AVX2 + FMA register tiles over int8 / int4 panels (quantized.hpp): int8
// codes decoded to code · scale per weight (for the tiles of tiles.hpp), int4
// tiles that apply each group's scale once per group of kQuantGroup k.
//
// NOTE: decoding every int4 weight to code · scale cost ~7 instructions per 8
// weights (widen, shift, mask, subtract, convert, load and multiply by the
// scale) beside one FMA per row, which held one-row int4 decode to ~13.7 GB/s
// of this kind of machine's 22.5 (AMD Zen 3). Here a k-pair's codes are loaded
// once and split into nibbles for all its columns; each vector of 8 codes is
// then one byte shuffle and one convert. A tile sums a · code over a group in
// f32 and adds sum · scale to its output after the group. Codes stay biased as
// stored (code + 8, 0..15), so the group sum is corrected by 8 · (sum of the
// group's activations), computed once per row and call. Every tile shape does
// exactly these operations per output column, so a row's bytes do not depend
// on the row count. int8 keeps the per-weight decode: its prefill tiles, over
// a panel decoded once to code · scale, are plain f32 tiles, which ran 15-30 %
// faster than group-scaled ones, and its one-row decode did not gain from the
// group scale (olmoe T = 1, interleaved: 0.96x).
#pragma once

#include "tiles.hpp"

#ifdef MOEKIT_HAVE_X86_KERNELS
#include <cstdint>

#include "../../core/scratch_arena.hpp"
#include "../quantized.hpp"

MOEKIT_NAMESPACE_BEGIN
namespace kernels {
namespace avx2 {

/// What an int4 tile subtracts from each stored code to get the signed code.
inline constexpr int kInt4Bias = 8;

/// An int4 panel decoded once to f32 codes (biased as stored), for many row tiles.
struct DecodedInt4Panel {
  const float* codes;  // [K, W]
  const float* scales;
};
/// Sources of the group-scaled tiles (int4); the others run the tiles of tiles.hpp.
template <class Src>
inline constexpr bool kGroupScaled = false;
template <>
inline constexpr bool kGroupScaled<QuantPanel<4>> = true;
template <>
inline constexpr bool kGroupScaled<DecodedInt4Panel> = true;

// Byte-shuffle controls: 32-bit lane i of each 128-bit half takes byte
// base + 2i + P of that half into its lowest byte; every other byte is zeroed.
struct alignas(32) ShuffleControl {
  std::int8_t b[32];
};
constexpr ShuffleControl shuffle_control(int base0, int base1, int P) {
  ShuffleControl c{};
  for (int half = 0; half < 2; ++half)
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j)
        c.b[16 * half + 4 * i + j] =
            static_cast<std::int8_t>(j == 0 ? (half ? base1 : base0) + 2 * i + P : -128);
  return c;
}
// A 16-column k-pair block (32 nibbles: column c's two k at 2c and 2c + 1)
// with its 64-bit quarters reordered [0, 2, 1, 3] holds columns 0-3 and 8-11
// in its low half, 4-7 and 12-15 in its high half: [P][h] picks parity P of
// columns 8h .. 8h + 7, in order.
inline constexpr ShuffleControl kPairLow[2][2] = {
    {shuffle_control(0, 0, 0), shuffle_control(8, 8, 0)},
    {shuffle_control(0, 0, 1), shuffle_control(8, 8, 1)}};
// An 8-column k-pair block (16 nibbles) repeated in both halves: [P] picks
// parity P of its 8 columns, in order.
inline constexpr ShuffleControl kHalfLow[2] = {shuffle_control(0, 8, 0), shuffle_control(0, 8, 1)};

MOEKIT_TARGET_AVX2 __attribute__((always_inline)) inline __m256i shuffle(__m256i v,
                                                                         const ShuffleControl& c) {
  return _mm256_shuffle_epi8(v, _mm256_load_si256(reinterpret_cast<const __m256i*>(c.b)));
}
MOEKIT_TARGET_AVX2 __attribute__((always_inline)) inline __m256i load_quarters_0213(
    const std::uint8_t* p) {
  return _mm256_permute4x64_epi64(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)), 0xd8);
}

// The nibbles of one int4 k-pair of a panel with W values per k-row (W bytes:
// columns [0, W/2) in the low nibbles, [W/2, W) in the high ones).
template <Index W>
struct CodePair {
  __m256i r[2];
};
template <Index W>
MOEKIT_TARGET_AVX2 __attribute__((always_inline)) inline CodePair<W> load_code_pair(
    const std::uint8_t* codes, Index kp) {
  const __m256i nibble = _mm256_set1_epi8(0x0f);
  __m256i v;
  if constexpr (W == 32)
    v = load_quarters_0213(codes + kp * W);
  else
    v = _mm256_broadcastsi128_si256(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + kp * W)));
  return {{_mm256_and_si256(v, nibble), _mm256_and_si256(_mm256_srli_epi16(v, 4), nibble)}};
}
// Columns 8v .. 8v + 7 of parity P of a k-pair, as f32 codes (biased as stored).
template <int P, Index W>
MOEKIT_TARGET_AVX2 __attribute__((always_inline)) inline __m256 code_vector(const CodePair<W>& q,
                                                                            int v) {
  if constexpr (W == 32)
    return _mm256_cvtepi32_ps(shuffle(q.r[v >> 1], kPairLow[P][v & 1]));
  else
    return _mm256_cvtepi32_ps(shuffle(q.r[v], kHalfLow[P]));
}

// One k (NK = 1) or k-pair (NK = 2) at k of MR rows into acc[v][r] (NV
// vectors of 8 columns): each accumulator takes k, then k + 1.
template <int MR, int NV, int NK>
MOEKIT_TARGET_AVX2 __attribute__((always_inline)) inline void group_step(const float* A, Index lda,
                                                                         Index k,
                                                                         const QuantPanel<4>& B,
                                                                         __m256 (&acc)[NV][MR]) {
  constexpr Index W = 8 * NV;
  const CodePair<W> q = load_code_pair<W>(B.codes, k >> 1);
#pragma GCC unroll 2
  for (int P = 0; P < NK; ++P) {
    __m256 a[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) a[r] = _mm256_broadcast_ss(A + r * lda + k + P);
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const __m256 w = P == 0 ? code_vector<0>(q, v) : code_vector<1>(q, v);
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) acc[v][r] = _mm256_fmadd_ps(a[r], w, acc[v][r]);
    }
  }
}
// The decoded panel is an f32 panel: the f32 steps of tiles.hpp (down only:
// a decoded gate + up group runs gate_up_tile whole, see group_scaled_tile).
template <int MR, int NV, int NK>
MOEKIT_TARGET_AVX2 __attribute__((always_inline)) inline void group_step(const float* A, Index lda,
                                                                         Index k,
                                                                         const DecodedInt4Panel& B,
                                                                         __m256 (&acc)[NV][MR]) {
  static_assert(NV == 2, "down panels");
  down_step<MR, 0>(A, lda, k, B.codes, acc[0], acc[1]);
  if constexpr (NK == 2) down_step<MR, 1>(A, lda, k + 1, B.codes, acc[0], acc[1]);
}

/// kInt4Bias · (sum of each group's activations) of m rows: row r's group g at
/// p[r * ld + g]; null for sources that need none.
struct GroupCorrections {
  const float* p = nullptr;
  Index ld = 0;
  GroupCorrections rows_from(Index i) const noexcept { return {p ? p + i * ld : nullptr, ld}; }
};
struct GroupCorrectionsTag;

MOEKIT_TARGET_AVX2 inline float sum_of_group(const float* a, Index n) {
  if (n == kQuantGroup) {  // a fixed tree: the same for every call on this row
    const __m256 s = _mm256_add_ps(_mm256_add_ps(_mm256_loadu_ps(a), _mm256_loadu_ps(a + 8)),
                                   _mm256_add_ps(_mm256_loadu_ps(a + 16), _mm256_loadu_ps(a + 24)));
    __m128 h = _mm_add_ps(_mm256_castps256_ps128(s), _mm256_extractf128_ps(s, 1));
    h = _mm_add_ps(h, _mm_movehl_ps(h, h));
    return _mm_cvtss_f32(_mm_add_ss(h, _mm_movehdup_ps(h)));
  }
  float s = 0.0f;  // the last, partial group
  for (Index i = 0; i < n; ++i) s += a[i];
  return s;
}

template <class Src>
MOEKIT_TARGET_AVX2 inline GroupCorrections group_corrections(const float* A, Index lda, Index m,
                                                             Index K) {
  if constexpr (!kGroupScaled<Src>) {
    return {};
  } else {
    const Index groups = quant_groups(K);
    float* c = moekit::detail::thread_scratch<GroupCorrectionsTag, float>(m * groups);
    for (Index r = 0; r < m; ++r)
      for (Index g = 0; g < groups; ++g) {
        const Index k0 = g * kQuantGroup;
        const Index n = K - k0 < kQuantGroup ? K - k0 : kQuantGroup;
        c[r * groups + g] = float(kInt4Bias) * sum_of_group(A + r * lda + k0, n);
      }
    return {c, groups};
  }
}

// total[j] (+)= (acc[j] - the group's correction) · the group's scales, for
// group g of NP panels (the first group stores).
template <int MR, int NV, int NP, class Src>
MOEKIT_TARGET_AVX2 __attribute__((always_inline)) inline void add_group(
    const __m256 (&acc)[NP][NV][MR], const Panels<NP, Src>& B, Index g, GroupCorrections corr,
    float (&total)[NP][MR][8 * NV]) {
  constexpr Index W = 8 * NV;
#pragma GCC unroll 4
  for (int j = 0; j < NP; ++j)
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      const __m256 c = _mm256_broadcast_ss(corr.p + r * corr.ld + g);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const __m256 t = _mm256_sub_ps(acc[j][v][r], c);
        const __m256 s = _mm256_loadu_ps(B[j].scales + g * W + 8 * v);
        float* o = total[j][r] + 8 * v;
        _mm256_store_ps(o, g == 0 ? _mm256_mul_ps(t, s) : _mm256_fmadd_ps(t, s, _mm256_load_ps(o)));
      }
    }
}

// MR rows against NP int4 panels of NV vectors of 8 columns (gate + up: NV = 4,
// vectors 0-1 to O0 and 2-3 to O1; down: NV = 2, to O0), group by group:
// each group's f32 sum of a · code, less its correction, times the group's
// scales, added to the output (the first group stores). Column block j of the
// output at j * kPanel.
template <int MR, int NV, int NP, class Src>
MOEKIT_TARGET_AVX2 inline void group_scaled_tile(const float* A, Index lda, Index K,
                                                 const Panels<NP, Src>& B, float* O0, float* O1,
                                                 Index ldo, Ahead ahead, GroupCorrections corr) {
  constexpr Index W = 8 * NV;
  const Index groups = quant_groups(K);
  alignas(32) float total[NP][MR][W] = {};  // the output tile in L1 (zero if K = 0)
  for (Index g = 0; g < groups; ++g) {
    const Index k0 = g * kQuantGroup, k1 = K - k0 < kQuantGroup ? K : k0 + kQuantGroup;
    __m256 acc[NP][NV][MR];
    if constexpr (std::is_same_v<Src, DecodedInt4Panel> && NV == 4) {
      // NOTE: a decoded panel is an f32 panel: each group runs the f32 tile of
      // tiles.hpp into a partial tile (the same sums: zero, then k in order).
      // Through group_step below instead, GCC 12 spilled an accumulator every
      // k-pair of the 3-row gate + up tile (int4 prefill ~0.75x of int8's).
      static_assert(NP == 1, "a decoded panel is one panel");
      alignas(32) float part[MR][W];
      if (ahead.lines) ahead.step((k1 - k0 + 1) / 2);
      const Panels<1, const float*> b{B[0].codes + k0 * W};
      gate_up_tile<MR, 1>(A + k0, lda, k1 - k0, b, part[0], part[0] + kPanel, W, Ahead{});
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
#pragma GCC unroll 8
        for (int r = 0; r < MR; ++r) acc[0][v][r] = _mm256_load_ps(part[r] + 8 * v);
    } else {
#pragma GCC unroll 4
      for (int j = 0; j < NP; ++j)
#pragma GCC unroll 4
        for (int v = 0; v < NV; ++v)
#pragma GCC unroll 8
          for (int r = 0; r < MR; ++r) acc[j][v][r] = _mm256_setzero_ps();
      Index k = k0;
      for (; k + 1 < k1; k += 2) {
        if (ahead.lines) ahead.step();
#pragma GCC unroll 4
        for (int j = 0; j < NP; ++j) group_step<MR, NV, 2>(A, lda, k, B[j], acc[j]);
      }
      if (k < k1) {  // an odd K's last k
        if (ahead.lines) ahead.step();
#pragma GCC unroll 4
        for (int j = 0; j < NP; ++j) group_step<MR, NV, 1>(A, lda, k, B[j], acc[j]);
      }
    }
    add_group<MR, NV, NP>(acc, B, g, corr, total);
  }
#pragma GCC unroll 4
  for (int j = 0; j < NP; ++j)
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        _mm256_storeu_ps((v < 2 ? O0 : O1) + r * ldo + j * kPanel + 8 * (v & 1),
                         _mm256_load_ps(total[j][r] + 8 * v));
}

// Panel B's codes as f32 [K, W] in out (the values code_vector gives), for
// the row tiles of a prefill to share.
template <Index W>
MOEKIT_TARGET_AVX2 inline DecodedInt4Panel decode_panel(const QuantPanel<4>& B, Index K,
                                                        float* out) {
  for (Index k = 0; k < K; k += 2) {
    const CodePair<W> q = load_code_pair<W>(B.codes, k >> 1);
#pragma GCC unroll 4
    for (int v = 0; v < int(W / 8); ++v) {
      _mm256_store_ps(out + k * W + 8 * v, code_vector<0>(q, v));
      if (k + 1 < K) _mm256_store_ps(out + (k + 1) * W + 8 * v, code_vector<1>(q, v));
    }
  }
  return {out, B.scales};
}

}  // namespace avx2
}  // namespace kernels
MOEKIT_NAMESPACE_END

#endif  // MOEKIT_HAVE_X86_KERNELS
