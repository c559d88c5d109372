// SPDX-License-Identifier: MIT
// AVX-512 f32 kernels over packed weights (packing.hpp).
//
// NOTE: gate/up tiles are 12 rows x (16 gate + 16 up) columns: 24 zmm
// accumulators, two panel loads and one broadcast per k. Down tiles are 12
// rows x 32 columns (two panels at once), 24 accumulators. Each output is one
// sequential sum over k, so a row's result does not depend on the other rows
// of the tile or on how columns were split across tasks.
#pragma once

#include "../target.hpp"

#ifdef MOEKIT_HAVE_X86_KERNELS
#include <cmath>

#include <cstdint>
#include <type_traits>

#include "../packing.hpp"
#include "../quantized.hpp"
#include "../rows.hpp"

MOEKIT_SIMD_WARNINGS_PUSH

MOEKIT_NAMESPACE_BEGIN
namespace kernels {
namespace avx512 {

constexpr int kRows = 12;

// Loads 16 weights as f32: float as is, bf16 by a 16-bit shift, f16 by F16C.
MOEKIT_TARGET_AVX512 inline __m512 load16(const float* p) { return _mm512_loadu_ps(p); }
MOEKIT_TARGET_AVX512 inline __m512 load16(const bf16* p) {
  const __m256i h = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(p));
  return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(h), 16));
}
MOEKIT_TARGET_AVX512 inline __m512 load16(const f16* p) {
  return _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(p)));
}

inline __mmask16 column_mask(Index ncols) noexcept {
  return ncols >= 16 ? static_cast<__mmask16>(0xffff) : static_cast<__mmask16>((1u << ncols) - 1u);
}

// Asks for k-row k of a panel whose rows are N bytes (8 to 128) to be
// brought into cache ahead of use: once per cache line, not once per row;
// or, with `lead`, the bytes that far past that row (integer arithmetic:
// such an address may lie past the panel's end, harmless to prefetch).
// NOTE: prefetcht0 (every level), not prefetcht1: in a one-core harness
// streaming 16 experts' gate/up panels from memory (64 rows, bf16 dot) the
// tiles ran ~10 % faster with t0 (about 440 against 375-410 GFLOP/s).
template <std::size_t N>
inline void prefetch_row(const void* base, Index k, std::uintptr_t lead = 0) noexcept {
  const std::uintptr_t a =
      reinterpret_cast<std::uintptr_t>(base) + static_cast<std::size_t>(k) * N + lead;
  const auto line = [](std::uintptr_t x) { return reinterpret_cast<const char*>(x); };
  if constexpr (N >= 64) {
    _mm_prefetch(line(a), _MM_HINT_T0);
    if constexpr (N > 64) _mm_prefetch(line(a + 64), _MM_HINT_T0);
  } else {
    if (k % static_cast<Index>(64 / N) == 0) _mm_prefetch(line(a), _MM_HINT_T0);
  }
}

// The parity of k where the caller knows it at compile time: k-pair layouts
// (bf16, int8, int4) then pick their half with an immediate shift.
template <int P>
using Parity = std::integral_constant<int, P>;

// Weight sources: where a tile gets the 16 weights at (k, columns off..off+15)
// of one panel, as f32 (P = k & 1). A tile is written once over a source, so f32, bf16,
// f16, int8 and int4 panels share the same FMA schedule and summation order.
template <class T, Index W>
struct PanelSource {  // f32 / f16 values, W per k-row
  const T* p;
  template <int P>
  MOEKIT_TARGET_AVX512 __m512 operator()(Index k, Index off, Parity<P>) const {
    return load16(p + k * W + off);
  }
  static constexpr bool kPrefetch = true;
  void prefetch(Index k) const noexcept { prefetch_row<W * sizeof(T)>(p, k); }
};
// bf16 panels hold k-pairs (packing.hpp): the value for k is the 32-bit lane
// shifted left by 16 (even k) or 0 (odd k), low half cleared.
template <Index W>
struct PanelSource<bf16, W> {
  const bf16* p;
  static constexpr bool kPrefetch = true;
  void prefetch(Index k) const noexcept {
    prefetch_row<W * sizeof(bf16)>(p, k);
  }  // k-pairs: same bytes per k
  template <int P>
  MOEKIT_TARGET_AVX512 __m512 operator()(Index k, Index off, Parity<P>) const {
    const __m512i pairs = _mm512_loadu_si512(p + pair_base<P>(k) * W + 2 * off);
    if constexpr (P == 0) return _mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16));
    return _mm512_castsi512_ps(
        _mm512_and_si512(pairs, _mm512_set1_epi32(static_cast<int>(0xffff0000u))));
  }
};
// int8 / int4 codes (quantized.hpp) as f32, without their scale
// (kGroupScaled): the tiles sum a · code over each group of kQuantGroup k and
// add that sum times the group's scales (scale()) to their totals after the
// group.
// NOTE: one-row decode is bound by its vector instructions (widen, shift or
// lookup, convert, multiply by the scale, FMA, on the two ports that also run
// the FMAs); the group scale drops the multiply from every weight (olmoe
// m = 1, one thread, codes in cache: int4 1.2-1.35x, int8 1.15-1.4x).
// Codes are stored in k-pairs; a 16-bit word per column holds the pair, so k
// selects a shift. int4 codes go through a lookup of the 16 code values
// (-8..7 as f32) indexed by the nibble (vpermps reads only the low 4 bits of
// each lane).
template <int Bits, Index W>
struct QuantSource {
  const std::uint8_t* codes;
  const float* scales;
  // Row tiles ask for the next panel's codes as for f32 panels (k-row k: W or
  // W / 2 bytes). Left to the hardware prefetcher, calls of ~8 rows (olmoe
  // T = 64) read their codes at about half the memory's speed (int8 1.37x,
  // int4 1.10x with the asking).
  static constexpr Index kPairBytes = quant_pair_bytes(W, Bits);
  static constexpr bool kPrefetch = true;
  void prefetch(Index k) const noexcept { prefetch_row<kPairBytes / 2>(codes, k); }
  // How far ahead of the k-pair being decoded its own panel is asked into
  // L1. A decoding tile is bound by its vector instructions, and with one row
  // (decode, no Ahead) the hardware prefetcher alone left it waiting on
  // memory besides: olmoe m = 1, one thread, codes from memory: int8 1.25x,
  // int4 1.10x faster with 2 KiB asked ahead (512 B to 4 KiB all gained;
  // 2 KiB best for int8).
  static constexpr std::uintptr_t kLeadBytes = 2048;
  static constexpr bool kGroupScaled = true;
  // The scales of group g, columns off..off+15.
  MOEKIT_TARGET_AVX512 __m512 scale(Index g, Index off) const {
    return _mm512_loadu_ps(scales + g * W + off);
  }
  template <int P>
  MOEKIT_TARGET_AVX512 __m512 operator()(Index k, Index off, Parity<P>) const {
    const Index k0 = pair_base<P>(k);  // both halves of a pair share its loads
    if constexpr (P == 0)
      if (off == 0) prefetch_row<kPairBytes>(codes, k0 >> 1, kLeadBytes);  // once per line
    if constexpr (Bits == 8) {
      // Bytes 2j, 2j + 1 = codes k even, k odd of column off + j, widened to
      // 16-bit halves of lane j: the odd code is the high half shifted down,
      // the even one a multiply-add by (1, 0). (The lane's word widened and
      // shifted twice for the even code cost one more instruction on the
      // port the conversion needs: m = 1 with codes in cache 1.13x slower.)
      const __m512i w = _mm512_cvtepi8_epi16(_mm256_loadu_si256(
          reinterpret_cast<const __m256i*>(codes + (k0 >> 1) * kPairBytes + 2 * off)));
      const __m512i q =
          P == 0 ? _mm512_madd_epi16(w, _mm512_set1_epi32(1)) : _mm512_srai_epi32(w, 16);
      return _mm512_cvtepi32_ps(q);
    } else {
      const __m512 values = _mm512_setr_ps(-8, -7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7);
      const std::uint8_t* pair = codes + (k0 >> 1) * kPairBytes;
      __m512i lanes;
      if constexpr (W == 32) {  // 32 bytes: gate pairs in the low nibbles, up in the high ones
        lanes = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(pair)));
        const unsigned shift = (off != 0 ? 4u : 0u) + 8u * P;  // up half, odd k's byte
        if (shift) lanes = _mm512_srli_epi32(lanes, shift);
      } else {  // 16 bytes: columns 0..7 in the low nibbles, 8..15 in the high ones
        const __m256i b =
            _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(pair)));
        lanes = _mm512_inserti64x4(_mm512_castsi256_si512(b), _mm256_srli_epi32(b, 4), 1);
        if constexpr (P == 1) lanes = _mm512_srli_epi32(lanes, 8);  // the odd k's byte
      }
      return _mm512_permutexvar_ps(lanes, values);
    }
  }
};

// Whether a source's weights come without their group's scale (quantised
// codes, see QuantSource; float, bf16 and f16 panels are the weights).
template <class Src, class = void>
inline constexpr bool kGroupScaledSource = false;
template <class Src>
inline constexpr bool kGroupScaledSource<Src, std::enable_if_t<Src::kGroupScaled>> = true;

// Panel p of a packed weight as a source (W = 32 for gate + up, 16 otherwise).
// Src is the source type over a panel's start: this file's, or the dot
// kernels' (avx512_bf16::Bf16Pairs, QuantPairs), which share the panel layout.
template <class T, Index W, class Src = PanelSource<T, W>>
struct PanelBank {
  const T* packed;
  Index K;
  Src operator()(Index p) const noexcept { return {packed + p * packed_k<T>(K) * W}; }
};
template <int Bits, Index W, template <int, Index> class Src = QuantSource>
struct QuantBank {
  using Source = Src<Bits, W>;
  const std::uint8_t* codes;
  const float* scales;
  Index K;
  Source operator()(Index p) const noexcept {
    return {codes + p * quant_panel_code_bytes(K, W, Bits), scales + p * quant_panel_scales(K, W)};
  }
};

// What a row tile asks into L2 while it runs: share `part` of `parts` of the
// k-rows of `next` (the NP panels the call reads after this group; null:
// nothing). The row tiles of one panel group split the next group's rows and
// each spreads its share evenly over its k-steps. (When the first tile asked
// for the whole next panel, it asked faster than memory delivers; with 2-3
// row tiles per panel (qwen3-30b-a3b: ~32 rows per expert at T = 512) the
// second and third tiles then had nothing to hide the rest behind.)
template <class Src>
struct Ahead {
  const Src* next = nullptr;
  Index part = 0, parts = 1;
};

// The running state of an Ahead over a tile of `steps` k-steps (k for f32
// tiles, k-pairs for dot tiles: one panel k-row each).
template <int NP, class Src>
class AheadStream {
 public:
  AheadStream(const Ahead<Src>& a, Index steps) noexcept
      : next_(Src::kPrefetch ? a.next : nullptr) {
    if (!next_) return;
    const Index share = (steps + a.parts - 1) / a.parts;
    row_ = a.part * share;
    end_ = row_ + share < steps ? row_ + share : steps;
    every_ = share > 0 && steps / share > 1 ? steps / share : 1;
  }
  // Called once per k-step.
  __attribute__((always_inline)) void step() noexcept {
    if constexpr (Src::kPrefetch) {
      if (!next_ || --due_ > 0) return;
      due_ = every_;
      if (row_ >= end_) return;
#pragma GCC unroll 16
      for (int q = 0; q < NP; ++q) next_[q].prefetch(row_);
      ++row_;
    }
  }

 private:
  const Src* next_;
  Index row_ = 0, end_ = 0, every_ = 1, due_ = 1;
};

// One k of a tile (P = k & 1): the panels' weights, then MR rows of FMAs.
template <int MR, int NP, int P, class Src>
MOEKIT_TARGET_AVX512 __attribute__((always_inline)) inline void gate_up_step(
    const float* A, Index lda, Index k, const Src* B, __m512 (&g)[NP][MR], __m512 (&u)[NP][MR],
    AheadStream<NP, Src>& ahead) {
  ahead.step();
  __m512 bg[NP], bu[NP];
#pragma GCC unroll 16
  for (int q = 0; q < NP; ++q) bg[q] = B[q](k, 0, Parity<P>{}), bu[q] = B[q](k, 16, Parity<P>{});
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    const __m512 a = _mm512_set1_ps(A[r * lda + k]);
#pragma GCC unroll 16
    for (int q = 0; q < NP; ++q) {
      g[q][r] = _mm512_fmadd_ps(a, bg[q], g[q][r]);
      u[q][r] = _mm512_fmadd_ps(a, bu[q], u[q][r]);
    }
  }
}
template <int MR, int NP, int P, class Src>
MOEKIT_TARGET_AVX512 __attribute__((always_inline)) inline void down_step(
    const float* A, Index lda, Index k, const Src* B, __m512 (&y)[NP][MR],
    AheadStream<NP, Src>& ahead) {
  ahead.step();
  __m512 b[NP];
#pragma GCC unroll 16
  for (int q = 0; q < NP; ++q) b[q] = B[q](k, 0, Parity<P>{});
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    const __m512 a = _mm512_set1_ps(A[r * lda + k]);
#pragma GCC unroll 16
    for (int q = 0; q < NP; ++q) y[q][r] = _mm512_fmadd_ps(a, b[q], y[q][r]);
  }
}

// k in [k0, k1) of a tile into its accumulators, in order (k0 even).
template <int MR, int NP, class Src>
MOEKIT_TARGET_AVX512 __attribute__((always_inline)) inline void gate_up_span(
    const float* A, Index lda, Index k0, Index k1, const Src* B, __m512 (&g)[NP][MR],
    __m512 (&u)[NP][MR], AheadStream<NP, Src>& ahead) {
  Index k = k0;
  for (; k + 1 < k1; k += 2) {  // k-pair layouts decode each half with its own shift
    gate_up_step<MR, NP, 0>(A, lda, k, B, g, u, ahead);
    gate_up_step<MR, NP, 1>(A, lda, k + 1, B, g, u, ahead);
  }
  if (k < k1) gate_up_step<MR, NP, 0>(A, lda, k, B, g, u, ahead);
}
template <int MR, int NP, class Src>
MOEKIT_TARGET_AVX512 __attribute__((always_inline)) inline void down_span(
    const float* A, Index lda, Index k0, Index k1, const Src* B, __m512 (&y)[NP][MR],
    AheadStream<NP, Src>& ahead) {
  Index k = k0;
  for (; k + 1 < k1; k += 2) {
    down_step<MR, NP, 0>(A, lda, k, B, y, ahead);
    down_step<MR, NP, 1>(A, lda, k + 1, B, y, ahead);
  }
  if (k < k1) down_step<MR, NP, 0>(A, lda, k, B, y, ahead);
}

template <int MR, int NP>
MOEKIT_TARGET_AVX512 __attribute__((always_inline)) inline void zero(__m512 (&acc)[NP][MR]) {
#pragma GCC unroll 16
  for (int q = 0; q < NP; ++q)
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) acc[q][r] = _mm512_setzero_ps();
}

// The running totals of a group-scaled tile: NP x MR vectors of 16, zero
// (K = 0 has no group to store them). GCC keeps them in registers where they
// fit beside the accumulators (few rows) and in L1 otherwise. (Forcing them
// to memory measured no faster at m = 64 and slower at m = 1-8; in the
// tile's output rows, 4 KiB apart, int4 at m = 64 ran 0.64-0.82x as fast.)
template <int MR, int NP>
struct GroupTotals {
  alignas(64) float v[NP][MR][kPanel] = {};
};

// Group g's sums times its scales (columns off..off+15 of each panel) into
// the totals t (the first group stores).
template <int MR, int NP, class Src>
MOEKIT_TARGET_AVX512 __attribute__((always_inline)) inline void add_group(
    const __m512 (&acc)[NP][MR], const Src* B, Index g, Index off, GroupTotals<MR, NP>& t) {
#pragma GCC unroll 16
  for (int q = 0; q < NP; ++q) {
    const __m512 s = B[q].scale(g, off);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      float* o = t.v[q][r];
      _mm512_store_ps(o, g == 0 ? _mm512_mul_ps(acc[q][r], s)
                                : _mm512_fmadd_ps(acc[q][r], s, _mm512_load_ps(o)));
    }
  }
}
// The totals t to a tile's output rows.
template <int MR, int NP>
MOEKIT_TARGET_AVX512 __attribute__((always_inline)) inline void store_totals(
    const GroupTotals<MR, NP>& t, float* O, Index ldo, const __mmask16* mask) {
#pragma GCC unroll 16
  for (int q = 0; q < NP; ++q)
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r)
      _mm512_mask_storeu_ps(O + r * ldo + q * kPanel, mask[q], _mm512_load_ps(t.v[q][r]));
}

// MR rows x NP panels of gate and up: 2·MR·NP accumulators. Every output is
// one sequential sum over k whatever MR and NP are (for group-scaled sources:
// over each group's k, then over the groups), so a row's bytes do not depend
// on the tile shape (the batch-composition promise).
// Meanwhile it asks its share of the panels the call uses next into L2
// (Ahead), so they arrive while this group is being multiplied.
template <int MR, int NP, class Src>
MOEKIT_TARGET_AVX512 inline void gate_up_tile(const float* A, Index lda, Index K, const Src* B,
                                              float* G, float* U, Index ldo, const __mmask16* mask,
                                              const Ahead<Src>& next = {}) {
  AheadStream<NP, Src> ahead(next, K);
  __m512 g[NP][MR], u[NP][MR];
  if constexpr (kGroupScaledSource<Src>) {
    GroupTotals<MR, NP> tg, tu;
    for (Index k0 = 0, grp = 0; k0 < K; k0 += kQuantGroup, ++grp) {
      zero(g), zero(u);
      gate_up_span<MR, NP>(A, lda, k0, K - k0 < kQuantGroup ? K : k0 + kQuantGroup, B, g, u, ahead);
      add_group<MR, NP>(g, B, grp, 0, tg);
      add_group<MR, NP>(u, B, grp, kPanel, tu);
    }
    store_totals<MR, NP>(tg, G, ldo, mask);
    store_totals<MR, NP>(tu, U, ldo, mask);
    return;
  }
  zero(g), zero(u);
  gate_up_span<MR, NP>(A, lda, 0, K, B, g, u, ahead);
#pragma GCC unroll 16
  for (int q = 0; q < NP; ++q)
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      _mm512_mask_storeu_ps(G + r * ldo + q * kPanel, mask[q], g[q][r]);
      _mm512_mask_storeu_ps(U + r * ldo + q * kPanel, mask[q], u[q][r]);
    }
}

// MR rows x NP panels of Y = A·Wᵀ: MR·NP accumulators.
template <int MR, int NP, class Src>
MOEKIT_TARGET_AVX512 inline void down_tile(const float* A, Index lda, Index K, const Src* B,
                                           float* Y, Index ldy, const __mmask16* mask,
                                           const Ahead<Src>& next = {}) {
  AheadStream<NP, Src> ahead(next, K);
  __m512 y[NP][MR];
  if constexpr (kGroupScaledSource<Src>) {
    GroupTotals<MR, NP> ty;
    for (Index k0 = 0, grp = 0; k0 < K; k0 += kQuantGroup, ++grp) {
      zero(y);
      down_span<MR, NP>(A, lda, k0, K - k0 < kQuantGroup ? K : k0 + kQuantGroup, B, y, ahead);
      add_group<MR, NP>(y, B, grp, 0, ty);
    }
    store_totals<MR, NP>(ty, Y, ldy, mask);
    return;
  }
  zero(y);
  down_span<MR, NP>(A, lda, 0, K, B, y, ahead);
#pragma GCC unroll 16
  for (int q = 0; q < NP; ++q)
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) _mm512_mask_storeu_ps(Y + r * ldy + q * kPanel, mask[q], y[q][r]);
}

// Calls CALL(mr) for a row count 1..6 (ROWS6) or 1..kRows known only at run time.
#define MOEKIT_AVX512_ROWS6(mr, CALL) \
  switch (mr) {                       \
    case 6: CALL(6); break;           \
    case 5: CALL(5); break;           \
    case 4: CALL(4); break;           \
    case 3: CALL(3); break;           \
    case 2: CALL(2); break;           \
    default: CALL(1); break;          \
  }
#define MOEKIT_AVX512_ROWS(mr, CALL)       \
  switch (mr) {                            \
    case 12: CALL(12); break;              \
    case 11: CALL(11); break;              \
    case 10: CALL(10); break;              \
    case 9: CALL(9); break;                \
    case 8: CALL(8); break;                \
    case 7: CALL(7); break;                \
    default: MOEKIT_AVX512_ROWS6(mr, CALL) \
  }

// Row tiles of a call: as few as kRows allows, their sizes within one of each
// other (64 rows: 11, 11, 11, 11, 10, 10 rather than 5 x 12 + 4), because a
// thin tile reads as many weights per k as a full one for fewer FMAs. (Blocking
// k for L1 was tried and lost 5-30%: the loads stream well from L2.)
inline Index row_tiles(Index m) noexcept { return (m + kRows - 1) / kRows; }
inline Index tile_rows(Index m, Index tiles, Index t) noexcept {
  return m / tiles + (t < m % tiles ? 1 : 0);
}

// NOTE: with few rows (decode) each accumulator is a chain of dependent FMAs,
// so a one-panel tile waits on FMA latency rather than on memory; up to 6
// rows the tiles therefore span 2 (gate + up) or 4 (down) panels, giving the
// core 4 to 24 independent chains while it streams the weights.
constexpr int kWideRows = 6;
// Those tiles ask for the next panel group (Ahead) from this many rows: with
// 2-6 rows the hardware prefetcher alone read int4 codes too slowly (olmoe,
// qwen3-30b-a3b, deepseek-v2-lite T = 64: 1.10-1.23x with the asking), while
// for one row (decode) it streamed faster than with it (bf16 / f32 T = 1: 0.91x).
constexpr int kWideAheadRows = 2;

// f32 activation rows as a tile reads them: row i of a call starts at A + i·lda.
struct F32Rows {
  const float* A;
  Index lda, K;
  F32Rows at(Index i) const noexcept { return {A + i * lda, lda, K}; }
};

// The tiles of this file as a policy of the drivers below (gemm_bf16_dot.hpp
// has the vdpbf16ps one: the drivers are shared, the tiles differ).
struct F32Tiles {
  template <int MR, int NP, class Src>
  MOEKIT_TARGET_AVX512 static void gate_up(const F32Rows& a, const Src* B, float* G, float* U,
                                           Index ldo, const __mmask16* mask,
                                           const Ahead<Src>& next) {
    gate_up_tile<MR, NP>(a.A, a.lda, a.K, B, G, U, ldo, mask, next);
  }
  template <int MR, int NP, class Src>
  MOEKIT_TARGET_AVX512 static void down(const F32Rows& a, const Src* B, float* Y, Index ldy,
                                        const __mmask16* mask, const Ahead<Src>& next) {
    down_tile<MR, NP>(a.A, a.lda, a.K, B, Y, ldy, mask, next);
  }
};

// Runs TILE<mr, NP> over row tiles of one group of NP panels starting at panel p.
template <int NP, class Bank, class Tile>
MOEKIT_TARGET_AVX512 inline void panel_group(const Bank& bank, Index p, Index c1, Tile&& tile) {
  using Src = decltype(bank(p));
  Src B[NP];
  __mmask16 mask[NP];
  for (int q = 0; q < NP; ++q) {
    B[q] = bank(p + q);
    mask[q] = column_mask(c1 - (p + q) * kPanel);
  }
  tile(B, mask);
}

// Hidden columns [c0, c1) of G = A·W_gateᵀ and U = A·W_upᵀ, panel by panel,
// for m rows of A, with the tiles of policy Tiles.
template <class Tiles, class Rows, class Bank>
MOEKIT_TARGET_AVX512 inline void gate_up_panels(const Rows& A, Index m, const Bank& bank, Index c0,
                                                Index c1, float* G, float* U, Index ldo) {
  using Src = decltype(bank(0));
  Index p = c0 / kPanel;
  const Index p_end = (c1 + kPanel - 1) / kPanel;
  if (m <= kWideRows)
    for (; p + 2 <= p_end; p += 2)
      panel_group<2>(bank, p, c1, [&](const Src* B, const __mmask16* mask) {
        const Src after[2] = {bank(p + 2), bank(p + 3)};
        const Ahead<Src> nx{m >= kWideAheadRows && p + 4 <= p_end ? after : nullptr, 0, 1};
#define MOEKIT_CALL(R) \
  Tiles::template gate_up<R, 2>(A, B, G + p * kPanel, U + p * kPanel, ldo, mask, nx)
        MOEKIT_AVX512_ROWS6(m, MOEKIT_CALL)
#undef MOEKIT_CALL
      });
  for (; p < p_end; ++p)
    panel_group<1>(bank, p, c1, [&](const Src* B, const __mmask16* mask) {
      const Src after = bank(p + 1);  // the row tiles share prefetching the next panel
      for (Index t = 0, i = 0, mr = 0, tiles = row_tiles(m); t < tiles; ++t, i += mr) {
        mr = tile_rows(m, tiles, t);
        const Rows a = A.at(i);
        float* g = G + i * ldo + p * kPanel;
        float* u = U + i * ldo + p * kPanel;
        const Ahead<Src> nx{p + 1 < p_end ? &after : nullptr, t, tiles};
#define MOEKIT_CALL(R) Tiles::template gate_up<R, 1>(a, B, g, u, ldo, mask, nx)
        MOEKIT_AVX512_ROWS(mr, MOEKIT_CALL)
#undef MOEKIT_CALL
      }
    });
}

// Output columns [c0, c1) of Y = A·Wᵀ: four panels at a time for few rows,
// else two (12 rows x 32 columns), then what is left.
template <class Tiles, class Rows, class Bank>
MOEKIT_TARGET_AVX512 inline void matmul_panels(const Rows& A, Index m, const Bank& bank, Index c0,
                                               Index c1, float* Y, Index ldy) {
  using Src = decltype(bank(0));
  const Ahead<Src> no_next{};
  Index p = c0 / kPanel;
  const Index p_end = (c1 + kPanel - 1) / kPanel;
  if (m <= kWideRows)
    for (; p + 4 <= p_end; p += 4)
      panel_group<4>(bank, p, c1, [&](const Src* B, const __mmask16* mask) {
        const Src after[4] = {bank(p + 4), bank(p + 5), bank(p + 6), bank(p + 7)};
        const Ahead<Src> nx{m >= kWideAheadRows && p + 8 <= p_end ? after : nullptr, 0, 1};
#define MOEKIT_CALL(R) Tiles::template down<R, 4>(A, B, Y + p * kPanel, ldy, mask, nx)
        MOEKIT_AVX512_ROWS6(m, MOEKIT_CALL)
#undef MOEKIT_CALL
      });
  for (; p + 2 <= p_end; p += 2)
    panel_group<2>(bank, p, c1, [&](const Src* B, const __mmask16* mask) {
      const Src after[2] = {bank(p + 2), bank(p + 3)};
      for (Index t = 0, i = 0, mr = 0, tiles = row_tiles(m); t < tiles; ++t, i += mr) {
        mr = tile_rows(m, tiles, t);
        const Rows a = A.at(i);
        float* y = Y + i * ldy + p * kPanel;
        const Ahead<Src> nx{p + 4 <= p_end ? after : nullptr, t, tiles};
#define MOEKIT_CALL(R) Tiles::template down<R, 2>(a, B, y, ldy, mask, nx)
        MOEKIT_AVX512_ROWS(mr, MOEKIT_CALL)
#undef MOEKIT_CALL
      }
    });
  if (p < p_end)
    panel_group<1>(bank, p, c1, [&](const Src* B, const __mmask16* mask) {
      for (Index t = 0, i = 0, mr = 0, tiles = row_tiles(m); t < tiles; ++t, i += mr) {
        mr = tile_rows(m, tiles, t);
        const Rows a = A.at(i);
        float* y = Y + i * ldy + p * kPanel;
#define MOEKIT_CALL(R) Tiles::template down<R, 1>(a, B, y, ldy, mask, no_next)
        MOEKIT_AVX512_ROWS(mr, MOEKIT_CALL)
#undef MOEKIT_CALL
      }
    });
}

// The codes a decoding kernel decodes after the panels it is reading, asked
// into L2 one step (a k-pair or k-quad: step_bytes of codes) at a time as the
// tiles read a decoded panel, so decoding then finds them there instead of
// waiting on memory. Null codes: nothing to ask for.
struct NextCodes {
  const std::uint8_t* codes = nullptr;
  Index step_bytes = 0;
  // Panel q of consecutive panels of panel_bytes bytes each from `codes` on.
  NextCodes panel(Index q, Index panel_bytes) const noexcept {
    return {codes ? codes + q * panel_bytes : nullptr, step_bytes};
  }
  void ask(Index step) const noexcept {
    if (codes) _mm_prefetch(reinterpret_cast<const char*>(codes + step * step_bytes), _MM_HINT_T1);
  }
};

// NOTE: decoding quantised codes costs about as many instructions as the
// products of a few rows, so with more rows than one tile holds the
// quantised kernels (f32, bf16-dot and VNNI tiles) decode each panel (gate +
// up) or pair of panels (down, whose tiles span two) once into a per-call
// buffer and run every row tile over it; with one row tile or fewer there is
// nothing to share and the tiles decode in registers (bank as it is).
// Decoder is their policy: scratch(K) gives the buffer, decode(bank, p, n, buf)
// fills it with panels [p, p + n), view(bank, buf, ahead, p) reads it as a
// bank whose tiles ask for `ahead` (the next codes to decode, NextCodes). The
// decoded values are those the register path uses, so are the results.
template <class Tiles, class Decoder, class Rows, class Bank>
MOEKIT_TARGET_AVX512 inline void gate_up_quant_panels(const Rows& A, Index m, const Bank& bank,
                                                      Index c0, Index c1, float* G, float* U,
                                                      Index ldo) {
  if (m <= kRows) return gate_up_panels<Tiles>(A, m, bank, c0, c1, G, U, ldo);
  auto* buf = Decoder::scratch(bank.K);
  for (Index p = c0 / kPanel; p * kPanel < c1; ++p) {
    Decoder::decode(bank, p, 1, buf);
    const Index e = (p + 1) * kPanel < c1 ? (p + 1) * kPanel : c1;
    const std::uint8_t* ahead = e < c1 ? bank(p + 1).codes : nullptr;
    gate_up_panels<Tiles>(A, m, Decoder::view(bank, buf, ahead, p), p * kPanel, e, G, U, ldo);
  }
}
template <class Tiles, class Decoder, class Rows, class Bank>
MOEKIT_TARGET_AVX512 inline void matmul_quant_panels(const Rows& A, Index m, const Bank& bank,
                                                     Index c0, Index c1, float* Y, Index ldy) {
  if (m <= kRows) return matmul_panels<Tiles>(A, m, bank, c0, c1, Y, ldy);
  auto* buf = Decoder::scratch(bank.K);
  for (Index p = c0 / kPanel; p * kPanel < c1; p += 2) {
    const Index n = (p + 1) * kPanel < c1 ? 2 : 1;
    Decoder::decode(bank, p, n, buf);
    const Index e = (p + n) * kPanel < c1 ? (p + n) * kPanel : c1;
    // The next pair of panels, where both exist (else the hardware prefetcher's).
    const std::uint8_t* ahead = (p + 3) * kPanel < c1 ? bank(p + 2).codes : nullptr;
    matmul_panels<Tiles>(A, m, Decoder::view(bank, buf, ahead, p), p * kPanel, e, Y, ldy);
  }
}

// Decoded int8 / int4 panels for the f32 tiles: each code as f32, as the
// register path gives it (the tiles apply the scales per group), so a call
// gives the same bytes decoded or not. Decoding in registers costs about 40 % as
// many vector instructions as the FMAs of a 12-row tile, on the same two
// ports; a panel read by several row tiles is therefore decoded once (olmoe,
// one thread, m = 64: 1.3-1.5x; m = 24: 1.1-1.2x; m = 13: even).
template <Index W>
struct DecodedF32Source {
  const float* p;
  const float* scales;  // the panel's
  NextCodes next = {};  // per k-pair
  // The decoded panel was just written, so sits in L2; asking its rows into
  // L1 ahead of the tiles gained nothing (olmoe m = 64, 8 or 16 rows ahead).
  static constexpr bool kPrefetch = false;
  static constexpr bool kGroupScaled = true;
  void prefetch(Index) const noexcept {}
  MOEKIT_TARGET_AVX512 __m512 scale(Index g, Index off) const {
    return _mm512_loadu_ps(scales + g * W + off);
  }
  template <int P>
  MOEKIT_TARGET_AVX512 __m512 operator()(Index k, Index off, Parity<P>) const {
    if constexpr (P == 0)
      if (off == 0) next.ask(k >> 1);
    return _mm512_loadu_ps(p + k * W + off);
  }
};
// Panels p0, p0 + 1, ... decoded to f32 one after another in `values`.
template <Index W, int Bits>
struct DecodedF32Bank {
  const float* values;
  const float* scales;  // the weight's, as in QuantBank
  NextCodes ahead;
  Index K, p0;
  DecodedF32Source<W> operator()(Index p) const noexcept {
    return {values + (p - p0) * K * W, scales + p * quant_panel_scales(K, W),
            ahead.panel(p - p0, quant_panel_code_bytes(K, W, Bits))};
  }
};
// The decoder policy of gate_up_quant_panels / matmul_quant_panels for the f32 tiles.
struct F32Decoder {
  static float* scratch(Index K) { return detail::panel_scratch(K * 2 * kPanel); }
  template <int Bits, Index W>
  MOEKIT_TARGET_AVX512 static void decode(const QuantBank<Bits, W>& bank, Index p, Index n,
                                          float* out) {
    const Index K = bank.K;
    for (Index q = 0; q < n; ++q) {
      const QuantSource<Bits, W> src = bank(p + q);
      float* o = out + q * K * W;
      Index k = 0;
      for (; k + 1 < K; k += 2)
#pragma GCC unroll 2
        for (Index off = 0; off < W; off += kPanel) {
          _mm512_storeu_ps(o + k * W + off, src(k, off, Parity<0>{}));
          _mm512_storeu_ps(o + (k + 1) * W + off, src(k + 1, off, Parity<1>{}));
        }
      if (k < K)
        for (Index off = 0; off < W; off += kPanel)
          _mm512_storeu_ps(o + k * W + off, src(k, off, Parity<0>{}));
    }
  }
  template <int Bits, Index W>
  static DecodedF32Bank<W, Bits> view(const QuantBank<Bits, W>& bank, const float* buf,
                                      const std::uint8_t* ahead, Index p) {
    return {buf, bank.scales, {ahead, quant_pair_bytes(W, Bits)}, bank.K, p};
  }
};

template <class T = float>
MOEKIT_TARGET_AVX512 inline void gate_up(ActivationRows rows, Index m, Index K, const T* packed,
                                         Index f, Index c0, Index c1, float* G, float* U,
                                         Index ldo) {
  (void)f;
  Index lda = 0;
  const float* A = contiguous_rows(rows, m, K, lda);
  gate_up_panels<F32Tiles>(F32Rows{A, lda, K}, m, PanelBank<T, 2 * kPanel>{packed, K}, c0, c1, G, U,
                           ldo);
}

template <class T = float>
MOEKIT_TARGET_AVX512 inline void matmul(const float* A, Index lda, Index m, Index K,
                                        const T* packed, Index N, Index c0, Index c1, float* Y,
                                        Index ldy) {
  (void)N;
  matmul_panels<F32Tiles>(F32Rows{A, lda, K}, m, PanelBank<T, kPanel>{packed, K}, c0, c1, Y, ldy);
}

/// Fused int8 (Bits = 8) / int4 (Bits = 4) kernels: codes and scales in the
/// layout of quantized.hpp, decoded in registers as they stream, or, with
/// more rows than one tile holds, a panel at a time into a per-call buffer.
template <int Bits>
MOEKIT_TARGET_AVX512 inline void gate_up_quant(ActivationRows rows, Index m, Index K,
                                               const std::uint8_t* codes, const float* scales,
                                               Index f, Index c0, Index c1, float* G, float* U,
                                               Index ldo) {
  (void)f;
  Index lda = 0;
  const float* A = contiguous_rows(rows, m, K, lda);
  gate_up_quant_panels<F32Tiles, F32Decoder>(
      F32Rows{A, lda, K}, m, QuantBank<Bits, 2 * kPanel>{codes, scales, K}, c0, c1, G, U, ldo);
}
template <int Bits>
MOEKIT_TARGET_AVX512 inline void matmul_quant(const float* A, Index lda, Index m, Index K,
                                              const std::uint8_t* codes, const float* scales,
                                              Index N, Index c0, Index c1, float* Y, Index ldy) {
  (void)N;
  matmul_quant_panels<F32Tiles, F32Decoder>(
      F32Rows{A, lda, K}, m, QuantBank<Bits, kPanel>{codes, scales, K}, c0, c1, Y, ldy);
}

/// exp(x) for 16 lanes: range reduction by ln 2 and a degree-6 polynomial
/// (relative error ~2e-7); inputs clamped to [-88, 89]: above 88.7 the result is +inf, as exp overflows.
MOEKIT_TARGET_AVX512 inline __m512 exp_ps(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-88.0f)), _mm512_set1_ps(89.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693145751953125f), x);
  r = _mm512_fnmadd_ps(n, _mm512_set1_ps(1.428606765330187045e-06f), r);
  __m512 p = _mm512_set1_ps(1.0f / 720.0f);
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 120.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 24.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f / 6.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(0.5f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

MOEKIT_TARGET_AVX512 inline void silu_mul_f32(const float* g, const float* u, float* h, Index n) {
  Index i = 0;
  const __m512 one = _mm512_set1_ps(1.0f);
  for (; i + 16 <= n; i += 16) {
    const __m512 gv = _mm512_loadu_ps(g + i);
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), gv));
    _mm512_storeu_ps(
        h + i, _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(one, e)), _mm512_loadu_ps(u + i)));
  }
  if (i < n) {
    const __mmask16 m = column_mask(n - i);
    const __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), gv));
    _mm512_mask_storeu_ps(
        h + i, m,
        _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(m, u + i)));
  }
}

}  // namespace avx512
}  // namespace kernels
MOEKIT_NAMESPACE_END

MOEKIT_SIMD_WARNINGS_POP

#endif  // MOEKIT_HAVE_X86_KERNELS
