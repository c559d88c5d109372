// SPDX-License-Identifier: MIT
// NEON BF16 kernels: bf16 weights times bf16-rounded activations with BFDOT
// (two products per f32 lane and instruction, twice the multiply-adds of an
// f32 FMA; Armv8.6 BF16, e.g. Neoverse V1 / N2, Graviton 3, Apple M2), the
// NEON side of Bf16Math::dot; run where cpu_features().neon_bf16.
//
// NOTE: each call rounds its activation rows to bf16 (round to nearest even,
// as moekit::bf16 and the AVX-512 kernels do) into a per-thread buffer, rows
// padded with zeros to a multiple of 8 values. A bf16 panel is stored in
// k-pairs (packing.hpp), one column's pair per 32-bit lane: that is BFDOT's
// operand as it is, so the weights need no decoding; a row's 16 bytes hold 4
// k-pairs, and BFDOT by element takes one of them for every column. BFDOT
// adds the two products to the accumulator with its own rounding (round to
// odd, subnormals flushed, unless FEAT_EBF16 is enabled), so the bytes differ
// from the AVX-512 ones; the error stays within the f32 summation bound
// (tests: Bf16DotKernelsAgainstRoundedProducts). int8 / int4 experts under
// Bf16Math::dot keep the f32 kernels on NEON.
#pragma once

#include "../target.hpp"

#if defined(MOEKIT_HAVE_NEON_KERNELS) && defined(MOEKIT_HAVE_NEON_BF16)
#include <cstdint>

#include "../../core/dtype.hpp"
#include "../../core/scratch_arena.hpp"
#include "../packing.hpp"
#include "../rows.hpp"
#include "tiles.hpp"

MOEKIT_NAMESPACE_BEGIN
namespace kernels {
namespace neon_bf16 {

using neon::panel_row_tiles;
using neon::step_barrier;

// Activation rows rounded to bf16: row i at a + i·ld (ld a multiple of 8).
struct Bf16Rows {
  const std::uint16_t* a;
  Index ld;
};

struct Bf16RowsTag;

inline Bf16Rows round_rows(const ActivationRows& X, Index m, Index K) {
  const Index ld = (K + 7) / 8 * 8;
  std::uint16_t* out = moekit::detail::thread_scratch<Bf16RowsTag, std::uint16_t>(m * ld);
  for (Index r = 0; r < m; ++r) {
    const float* x = X.row(r);
    for (Index k = 0; k < K; ++k) out[r * ld + k] = float_to_bf16_bits(x[k]);
    for (Index k = K; k < ld; ++k) out[r * ld + k] = 0;
  }
  return {out, ld};
}

// One k-pair kp of a tile: per 8 columns, the two weight vectors (4 columns'
// pairs each), then MR rows of BFDOT with pair L of each row's 4 (a).
template <Index W, int MR, int L>
MOEKIT_TARGET_NEON_BF16 __attribute__((always_inline)) inline void pair_step(
    const bf16* B, Index kp, const bfloat16x8_t (&a)[MR], float32x4_t (&acc)[MR][W / 4]) {
#pragma GCC unroll 4
  for (Index off = 0; off < W; off += 8) {
    const auto* p = reinterpret_cast<const bfloat16_t*>(B + kp * 2 * W + 2 * off);
    const bfloat16x8_t lo = vld1q_bf16(p), hi = vld1q_bf16(p + 8);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      acc[r][off / 4] = vbfdotq_laneq_f32(acc[r][off / 4], lo, a[r], L);
      acc[r][off / 4 + 1] = vbfdotq_laneq_f32(acc[r][off / 4 + 1], hi, a[r], L);
    }
    step_barrier();
  }
}

/// MR rounded rows against NP bf16 panels (output column block j at
/// j · kPanel); W = 32: columns 0-15 to O0 (gate), 16-31 to O1 (up).
template <Index W, int MR, int NP>
MOEKIT_TARGET_NEON_BF16 inline void tile(const Bf16Rows& A, Index K,
                                         const Panels<NP, const bf16*>& panels, float* O0,
                                         float* O1, Index ldo) {
  const Panels<NP, const bf16*> B = panels;  // a local copy stays in registers across the barriers
  const Index pairs = (K + 1) / 2;
  float32x4_t acc[NP][MR][W / 4];
#pragma GCC unroll 4
  for (int j = 0; j < NP; ++j)
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
      for (Index c = 0; c < W / 4; ++c) acc[j][r][c] = vdupq_n_f32(0.0f);
  for (Index kp = 0; kp < pairs; kp += 4) {  // 8 values (4 pairs) of each row at a time
    bfloat16x8_t a[MR];
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
      a[r] = vld1q_bf16(reinterpret_cast<const bfloat16_t*>(A.a + r * A.ld + 2 * kp));
#pragma GCC unroll 4
    for (int j = 0; j < NP; ++j) pair_step<W, MR, 0>(B[j], kp, a, acc[j]);
    if (kp + 1 < pairs)
#pragma GCC unroll 4
      for (int j = 0; j < NP; ++j) pair_step<W, MR, 1>(B[j], kp + 1, a, acc[j]);
    if (kp + 2 < pairs)
#pragma GCC unroll 4
      for (int j = 0; j < NP; ++j) pair_step<W, MR, 2>(B[j], kp + 2, a, acc[j]);
    if (kp + 3 < pairs)
#pragma GCC unroll 4
      for (int j = 0; j < NP; ++j) pair_step<W, MR, 3>(B[j], kp + 3, a, acc[j]);
  }
  // Fully unrolled: an accumulator indexed at run time would live in memory.
#pragma GCC unroll 4
  for (int j = 0; j < NP; ++j)
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
      for (Index c = 0; c < W / 4; ++c) {
        float* out = 4 * c < kPanel ? O0 + r * ldo + j * kPanel + 4 * c
                                    : O1 + r * ldo + j * kPanel + 4 * c - kPanel;
        vst1q_f32(out, acc[j][r][c]);
      }
}

/// Rows of the full tiles (24 / 20 sums) and panels of the one-row tiles (16).
template <Index W>
inline constexpr int kTileRows = W == 32 ? 3 : 5;
template <Index W>
inline constexpr int kRowPanels = W == 32 ? 2 : 4;

// Columns [c0, c1) panel by panel (the structure of neon::run_panels).
template <Index W>
MOEKIT_TARGET_NEON_BF16 inline void run_panels(const ActivationRows& X, Index m, Index K,
                                               const bf16* packed, Index c0, Index c1, float* O0,
                                               float* O1, Index ldo) {
  const Bf16Rows A = round_rows(X, m, K);
  constexpr int MR = kTileRows<W>, NP = kRowPanels<W>;
  const PanelBank<bf16> bank{packed, K, W};
  Index p = c0 / kPanel;
  if (m == 1)  // one row: NP full panels at a time while they last
    for (; (p + NP) * kPanel <= c1; p += NP)
      tile<W, 1, NP>(A, K, panels_from<NP>(bank, p), O0 + p * kPanel,
                     W == 32 ? O1 + p * kPanel : nullptr, ldo);
  for (; p * kPanel < c1; ++p) {
    const Panels<1, const bf16*> b{bank(p)};
    const Index ncols = (c1 - p * kPanel) < kPanel ? (c1 - p * kPanel) : kPanel;
    panel_row_tiles<W, MR>(m, p, ncols, O0, O1, ldo,
                           [&](Index i, auto mr, float* o0, float* o1, Index ld) {
                             tile<W, mr, 1>(Bf16Rows{A.a + i * A.ld, A.ld}, K, b, o0, o1, ld);
                           });
  }
}

/// Entry points (KernelTable::*_bf16_dot).
MOEKIT_TARGET_NEON_BF16 inline void gate_up(ActivationRows A, Index m, Index K, const bf16* packed,
                                            Index f, Index c0, Index c1, float* G, float* U,
                                            Index ldo) {
  (void)f;
  run_panels<2 * kPanel>(A, m, K, packed, c0, c1, G, U, ldo);
}
MOEKIT_TARGET_NEON_BF16 inline void matmul(const float* A, Index lda, Index m, Index K,
                                           const bf16* packed, Index N, Index c0, Index c1,
                                           float* Y, Index ldy) {
  (void)N;
  run_panels<kPanel>({A, lda}, m, K, packed, c0, c1, Y, nullptr, ldy);
}

}  // namespace neon_bf16
}  // namespace kernels
MOEKIT_NAMESPACE_END

#endif  // MOEKIT_HAVE_NEON_KERNELS && MOEKIT_HAVE_NEON_BF16
