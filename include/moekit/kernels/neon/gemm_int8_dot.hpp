// SPDX-License-Identifier: MIT
// NEON DotProd kernels: int8 / int4 weights times int8 activations with SDOT
// (four byte products per 32-bit lane and instruction). Opt-in
// (Bf16Math::int8_dot), as on x86, because quantising the activations costs
// accuracy; run where cpu_features().neon_dotprod.
//
// NOTE: each call quantises its activation rows per group of kQuantGroup
// inputs with quantize_activation_group itself (so the codes and scales are
// the x86 kernels', bit for bit) into a per-thread buffer, each group padded
// to 32 codes. SDOT multiplies signed by signed bytes, so int8 codes are used
// as stored and int4 nibbles (code + 8) have 8 subtracted: no correction term.
// SDOT wants a column's 4 consecutive k in one 32-bit lane; the packed
// weights hold k-pairs (quantized.hpp), so two k-pair rows are interleaved
// 16 bits at a time (ZIP1 / ZIP2) into k-quads: in registers for up to one
// row tile, once per panel into a per-thread buffer for more rows (prefill).
// A group's exact integer sum is converted to f32 and added to the f32 total
// as total + f32(sum) · (weight scale · activation scale) with one fused
// multiply-add, the operations of the x86 kernels, so the bytes are the same
// on every ISA (tests: Int8Activations.*).
#pragma once

#include "../target.hpp"

#if defined(MOEKIT_HAVE_NEON_KERNELS) && defined(MOEKIT_HAVE_NEON_DOTPROD)
#include <cstdint>

#include "../../core/scratch_arena.hpp"
#include "../packing.hpp"
#include "../quantized.hpp"
#include "../rows.hpp"
#include "tiles.hpp"

MOEKIT_NAMESPACE_BEGIN
namespace kernels {
namespace neon_dotprod {

using neon::panel_row_tiles;
using neon::step_barrier;

// Quantised activation rows: row i's codes at q + i·ld (G groups of 32 bytes,
// zero-padded), its group scales at s + i·G.
struct QuadRows {
  const std::int8_t* q;
  const float* s;
  Index ld, G;
};

struct QuadRowsTag;

// Quantises m rows of K activations (gathered, if X is indexed) into the
// per-thread buffer.
MOEKIT_TARGET_NEON_DOTPROD inline QuadRows quantize_rows(const ActivationRows& X, Index m,
                                                         Index K) {
  const Index G = quant_groups(K), ld = G * kQuantGroup;
  // One buffer: m·G scales, then m·ld codes (ld is a multiple of 32 bytes).
  float* buf = moekit::detail::thread_scratch<QuadRowsTag, float>(m * G + m * ld / 4);
  auto* codes = reinterpret_cast<std::int8_t*>(buf + m * G);
  for (Index r = 0; r < m; ++r)
    for (Index g = 0; g < G; ++g) {
      const Index k0 = g * kQuantGroup, n = K - k0 < kQuantGroup ? K - k0 : kQuantGroup;
      std::int8_t* q = codes + r * ld + k0;
      buf[r * G + g] = quantize_activation_group(X.row(r) + k0, n, q);
      for (Index i = n; i < kQuantGroup; ++i) q[i] = 0;
    }
  return {codes, buf, ld, G};
}

// A panel's codes as signed k-quads, decoded once: quad q of column j at
// quads + (q · W + j) · 4, 4 codes in k order.
struct QuadPanel {
  const std::int8_t* quads;
  const float* scales;
};

// Quads of columns off..off+3 (lo) and off+4..off+7 (hi) for k-quad q, i.e.
// k-pairs 2q and 2q + 1 (the second absent past the last pair: codes 0).
template <Index W>
MOEKIT_TARGET_NEON_DOTPROD inline void quads8(const QuantPanel<8>& B, Index q, bool second,
                                              Index off, int8x16_t& lo, int8x16_t& hi) {
  // k-pair row: byte 2j + (k & 1) is column j's code; 16 bytes = 8 columns.
  const std::uint8_t* p = B.codes + 2 * q * 2 * W + 2 * off;
  const uint16x8_t a = vreinterpretq_u16_u8(vld1q_u8(p));
  const uint16x8_t b = second ? vreinterpretq_u16_u8(vld1q_u8(p + 2 * W)) : vdupq_n_u16(0);
  lo = vreinterpretq_s8_u16(vzip1q_u16(a, b));
  hi = vreinterpretq_s8_u16(vzip2q_u16(a, b));
}
template <Index W>
MOEKIT_TARGET_NEON_DOTPROD inline void quads8(const QuantPanel<4>& B, Index q, bool second,
                                              Index off, int8x16_t& lo, int8x16_t& hi) {
  // k-pair row of W bytes: element e = 2j + (k & 1) in the low nibble of byte
  // e (e < W) or the high nibble of byte e - W, as code + 8.
  const Index e = 2 * off;
  const std::uint8_t* p = B.codes + 2 * q * W + (e < W ? e : e - W);
  const auto codes = [&](const std::uint8_t* row) {
    const uint8x16_t b = vld1q_u8(row);
    const uint8x16_t nib = e < W ? vandq_u8(b, vdupq_n_u8(0x0f)) : vshrq_n_u8(b, 4);
    return vreinterpretq_u16_s8(vsubq_s8(vreinterpretq_s8_u8(nib), vdupq_n_s8(8)));
  };
  const uint16x8_t a = codes(p), b = second ? codes(p + W) : vdupq_n_u16(0);
  lo = vreinterpretq_s8_u16(vzip1q_u16(a, b));
  hi = vreinterpretq_s8_u16(vzip2q_u16(a, b));
}
template <Index W>
MOEKIT_TARGET_NEON_DOTPROD inline void quads8(const QuadPanel& B, Index q, bool, Index off,
                                              int8x16_t& lo, int8x16_t& hi) {
  lo = vld1q_s8(B.quads + (q * W + off) * 4);
  hi = vld1q_s8(B.quads + (q * W + off) * 4 + 16);
}

// Panel B's quads into out ([quads, W, 4] bytes): exactly quads8's values.
template <Index W, class Src>
MOEKIT_TARGET_NEON_DOTPROD inline QuadPanel decode_panel(const Src& B, Index K, std::int8_t* out) {
  const Index pairs = (K + 1) / 2, nq = (pairs + 1) / 2;
  for (Index q = 0; q < nq; ++q)
    for (Index off = 0; off < W; off += 8) {
      int8x16_t lo, hi;
      quads8<W>(B, q, 2 * q + 1 < pairs, off, lo, hi);
      vst1q_s8(out + (q * W + off) * 4, lo);
      vst1q_s8(out + (q * W + off) * 4 + 16, hi);
    }
  return {out, B.scales};
}

// One k-quad q of a tile: per 8 columns, the weight quads, then MR rows of
// SDOT with quad L of each row's 16 codes (a).
template <Index W, int MR, int L, class Src>
MOEKIT_TARGET_NEON_DOTPROD __attribute__((always_inline)) inline void quad_step(
    const Src& B, Index q, bool second, const int8x16_t (&a)[MR], int32x4_t (&acc)[MR][W / 4]) {
#pragma GCC unroll 4
  for (Index off = 0; off < W; off += 8) {
    int8x16_t lo, hi;
    quads8<W>(B, q, second, off, lo, hi);
#pragma GCC unroll 8
    for (int r = 0; r < MR; ++r) {
      acc[r][off / 4] = vdotq_laneq_s32(acc[r][off / 4], lo, a[r], L);
      acc[r][off / 4 + 1] = vdotq_laneq_s32(acc[r][off / 4 + 1], hi, a[r], L);
    }
    step_barrier();
  }
}

/// MR rows of quantised activations against NP panels (output column block j
/// at j · kPanel); W = 32: columns 0-15 to O0 (gate), 16-31 to O1 (up).
template <Index W, int MR, int NP, class Src>
MOEKIT_TARGET_NEON_DOTPROD inline void tile(const QuadRows& A, Index K,
                                            const Panels<NP, Src>& panels, float* O0, float* O1,
                                            Index ldo) {
  const Panels<NP, Src> B = panels;  // a local copy stays in registers across the barriers
  const Index pairs = (K + 1) / 2, nq = (pairs + 1) / 2;
  alignas(16) float total[NP][MR][W] = {};
  for (Index g = 0; g < A.G; ++g) {
    int32x4_t acc[NP][MR][W / 4];
#pragma GCC unroll 4
    for (int j = 0; j < NP; ++j)
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r)
#pragma GCC unroll 8
        for (Index c = 0; c < W / 4; ++c) acc[j][r][c] = vdupq_n_s32(0);
    const Index q0 = g * (kQuantGroup / 4),
                q1 = q0 + kQuantGroup / 4 < nq ? q0 + kQuantGroup / 4 : nq;
    for (Index q = q0; q < q1; q += 4) {  // 16 codes of each row at a time
      int8x16_t a[MR];
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) a[r] = vld1q_s8(A.q + r * A.ld + 4 * q);
#pragma GCC unroll 4
      for (int j = 0; j < NP; ++j) quad_step<W, MR, 0>(B[j], q, 2 * q + 1 < pairs, a, acc[j]);
      if (q + 1 < q1)
#pragma GCC unroll 4
        for (int j = 0; j < NP; ++j) quad_step<W, MR, 1>(B[j], q + 1, 2 * q + 3 < pairs, a, acc[j]);
      if (q + 2 < q1)
#pragma GCC unroll 4
        for (int j = 0; j < NP; ++j) quad_step<W, MR, 2>(B[j], q + 2, 2 * q + 5 < pairs, a, acc[j]);
      if (q + 3 < q1)
#pragma GCC unroll 4
        for (int j = 0; j < NP; ++j) quad_step<W, MR, 3>(B[j], q + 3, 2 * q + 7 < pairs, a, acc[j]);
    }
    // total += f32(sum) · (ws · as): the x86 kernels' operations, in their order.
#pragma GCC unroll 4
    for (int j = 0; j < NP; ++j) {
      const float* ws = B[j].scales + g * W;
#pragma GCC unroll 8
      for (int r = 0; r < MR; ++r) {
        const float32x4_t as = vdupq_n_f32(A.s[r * A.G + g]);
#pragma GCC unroll 8
        for (Index c = 0; c < W / 4; ++c) {
          const float32x4_t s = vmulq_f32(vld1q_f32(ws + 4 * c), as);
          float* t = total[j][r] + 4 * c;
          vst1q_f32(t, vfmaq_f32(vld1q_f32(t), vcvtq_f32_s32(acc[j][r][c]), s));
        }
      }
    }
  }
  for (int j = 0; j < NP; ++j)
    for (int r = 0; r < MR; ++r)
      for (Index c = 0; c < W; c += 4) {
        float* out =
            c < kPanel ? O0 + r * ldo + j * kPanel + c : O1 + r * ldo + j * kPanel + c - kPanel;
        vst1q_f32(out, vld1q_f32(total[j][r] + c));
      }
}

/// Rows of the full tiles and panels of the one-row tiles (16 or 24 sums).
template <Index W>
inline constexpr int kTileRows = W == 32 ? 3 : 5;
template <Index W>
inline constexpr int kRowPanels = W == 32 ? 2 : 4;

inline QuadRows rows_from(const QuadRows& A, Index i) {
  return {A.q + i * A.ld, A.s + i * A.G, A.ld, A.G};
}

struct QuadPanelTag;

// Hidden or output columns [c0, c1) panel by panel (the structure of
// neon::run_panels): rows quantised once per call, panels decoded to quads
// once when more than one row tile runs over them.
template <Index W, int Bits>
MOEKIT_TARGET_NEON_DOTPROD inline void run_panels(const ActivationRows& X, Index m, Index K,
                                                  const std::uint8_t* codes, const float* scales,
                                                  Index c0, Index c1, float* O0, float* O1,
                                                  Index ldo) {
  const QuadRows A = quantize_rows(X, m, K);
  constexpr int MR = kTileRows<W>, NP = kRowPanels<W>;
  const QuantBank<Bits> bank{codes, scales, K, W};
  const bool decode = m > MR;
  const Index pairs = (K + 1) / 2, nq = (pairs + 1) / 2;
  std::int8_t* dec =
      decode ? moekit::detail::thread_scratch<QuadPanelTag, std::int8_t>(nq * W * 4) : nullptr;
  Index p = c0 / kPanel;
  if (m == 1)  // one row: NP full panels at a time while they last
    for (; (p + NP) * kPanel <= c1; p += NP)
      tile<W, 1, NP>(A, K, panels_from<NP>(bank, p), O0 + p * kPanel,
                     W == 32 ? O1 + p * kPanel : nullptr, ldo);
  for (; p * kPanel < c1; ++p) {
    const Index ncols = (c1 - p * kPanel) < kPanel ? (c1 - p * kPanel) : kPanel;
    const auto rows = [&](const auto& b) {  // b: this panel as one tile's source
      panel_row_tiles<W, MR>(m, p, ncols, O0, O1, ldo,
                             [&](Index i, auto mr, float* o0, float* o1, Index ld) {
                               tile<W, mr, 1>(rows_from(A, i), K, b, o0, o1, ld);
                             });
    };
    if (decode)
      rows(Panels<1, QuadPanel>{decode_panel<W>(bank(p), K, dec)});
    else
      rows(Panels<1, QuantPanel<Bits>>{bank(p)});
  }
}

/// Entry points (KernelTable::*_a8): int8 (Bits = 8) / int4 (Bits = 4) codes
/// times int8 activations, group sums exact in integers.
template <int Bits>
MOEKIT_TARGET_NEON_DOTPROD inline void gate_up_quant(ActivationRows A, Index m, Index K,
                                                     const std::uint8_t* codes, const float* scales,
                                                     Index f, Index c0, Index c1, float* G,
                                                     float* U, Index ldo) {
  (void)f;
  run_panels<2 * kPanel, Bits>(A, m, K, codes, scales, c0, c1, G, U, ldo);
}
template <int Bits>
MOEKIT_TARGET_NEON_DOTPROD inline void matmul_quant(const float* A, Index lda, Index m, Index K,
                                                    const std::uint8_t* codes, const float* scales,
                                                    Index N, Index c0, Index c1, float* Y,
                                                    Index ldy) {
  (void)N;
  run_panels<kPanel, Bits>({A, lda}, m, K, codes, scales, c0, c1, Y, nullptr, ldy);
}

}  // namespace neon_dotprod
}  // namespace kernels
MOEKIT_NAMESPACE_END

#endif  // MOEKIT_HAVE_NEON_KERNELS && MOEKIT_HAVE_NEON_DOTPROD
