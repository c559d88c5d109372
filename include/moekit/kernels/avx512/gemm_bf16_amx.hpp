// SPDX-License-Identifier: MIT
// AMX-BF16 kernels (Isa::avx512_amx): bf16 weights times bf16-rounded
// activations on the tile unit. One tdpbf16ps multiplies a 16 x 32 tile of
// activations by a 32 x 16 tile of weights into a 16 x 16 f32 tile: 16 times
// the multiply-adds of a vdpbf16ps, and on the Intel cores that have AMX the
// dot products run at several times their FP32 FMA rate.
//
// NOTE: no repacking. A k-pair bf16 panel of packing.hpp is already the
// operand layout of a weight tile: each k-pair is one 64-byte tile row of 16
// column couples (gate + up panels: a 128-byte row, gate couples then up
// couples, so the gate and up tiles are the same rows at offsets 0 and 64).
// The activation rows are rounded to bf16 as for vdpbf16ps
// (avx512_bf16::to_bf16_pairs) into a per-thread buffer whose rows are padded
// to a whole number of tiles with +0, and the last, partial k-chunk of a panel
// is copied into a zeroed block, so no tile load reads past a buffer and every
// padded product is 0 · finite. Each output is the tile unit's f32 sum over
// its row's k-chunks in order, independent of the other rows of the call and
// of the tile blocking, so a row's bytes do not depend on the thread count;
// they do differ from the vdpbf16ps path (the unit's own rounding of each
// chunk's sum), by the same order of error.
//
// The tile instructions are written as inline assembly with explicit memory
// clobbers: GCC 12's AMX intrinsics are asm statements that do not tell the
// compiler they read or write memory. Linux hands out the tile state only on
// request (CpuFeatures::amx_bf16 is true once that request succeeded).
#pragma once

#include "../target.hpp"

#ifdef MOEKIT_HAVE_X86_KERNELS
#include <algorithm>
#include <cstdint>
#include <cstring>

#include "../../core/scratch_arena.hpp"
#include "../packing.hpp"
#include "../rows.hpp"
#include "gemm_bf16_dot.hpp"

MOEKIT_SIMD_WARNINGS_PUSH

MOEKIT_NAMESPACE_BEGIN
namespace kernels {
namespace avx512_amx {

// Tile rows (activation rows, and k-pairs of a weight tile) and k-pairs per chunk.
constexpr Index kTileRows = 16;
constexpr Index kChunkPairs = 16;

namespace detail {

// Palette 1 tile configuration (64 bytes, as ldtilecfg reads it).
struct alignas(64) TileConfig {
  std::uint8_t palette = 1, start_row = 0;
  std::uint8_t reserved[14] = {};
  std::uint16_t colsb[16] = {};
  std::uint8_t rows[16] = {};
};

// Every tile used is 16 rows of 64 bytes: tmm0..3 f32 accumulators (16 x 16),
// tmm4..5 activations (16 rows x 16 k-pairs), tmm6..7 weights (16 k-pairs x
// 16 column couples).
inline void configure_tiles() noexcept {
  (void)cpu_features();  // detection asks Linux for the tile state (else: SIGILL)
  TileConfig c;
  for (int t = 0; t < 8; ++t) {
    c.colsb[t] = 64;
    c.rows[t] = 16;
  }
  __asm__ volatile("ldtilecfg %0" ::"m"(c));
}
inline void release_tiles() noexcept { __asm__ volatile("tilerelease" ::: "memory"); }

}  // namespace detail

#define MOEKIT_AMX_ZERO(t) __asm__ volatile("tilezero %%tmm" #t ::)
#define MOEKIT_AMX_LOAD(t, base, stride) \
  __asm__ volatile("tileloadd (%0,%1,1), %%tmm" #t ::"r"(base), "r"(stride) : "memory")
#define MOEKIT_AMX_STORE(t, base, stride) \
  __asm__ volatile("tilestored %%tmm" #t ", (%0,%1,1)" ::"r"(base), "r"(stride) : "memory")
// dst += a · b (AT&T order: b, a, dst).
#define MOEKIT_AMX_DOT(dst, a, b) \
  __asm__ volatile("tdpbf16ps %%tmm" #b ", %%tmm" #a ", %%tmm" #dst ::)

// Activation rows as tiles read them: [rows rounded up to 16][K2p] words, K2p
// = k-pairs rounded up to 16, padding +0.
struct TileRows {
  const std::uint32_t* A;
  Index K2, K2p;  // k-pairs of data, of the padded row
  Index mp;       // rows, rounded up to 16
  const std::uint32_t* row(Index r) const noexcept { return A + r * K2p; }
};

struct TileRowsTag;

MOEKIT_TARGET_AVX512_BF16 inline TileRows tile_rows(const ActivationRows& A, Index m, Index K) {
  const Index K2 = (K + 1) / 2, K2p = (K2 + kChunkPairs - 1) / kChunkPairs * kChunkPairs;
  const Index mp = (m + kTileRows - 1) / kTileRows * kTileRows;
  std::uint32_t* buf = moekit::detail::thread_scratch<TileRowsTag, std::uint32_t>(mp * K2p);
  avx512_bf16::to_bf16_pairs(A, m, K, buf, K2p);
  for (Index r = 0; r < m; ++r)
    std::fill(buf + r * K2p + K2, buf + (r + 1) * K2p, std::uint32_t{0});
  std::fill(buf + m * K2p, buf + mp * K2p, std::uint32_t{0});
  return {buf, K2, K2p, mp};
}

// The weight rows (k-pairs kp .. kp + 15) of one panel: in place when the
// chunk is whole, else copied into `tail` (16 rows of `row_bytes`, zeroed past
// the panel's last k-pair).
inline const char* weight_chunk(const bf16* panel, Index K2, Index kp, Index row_bytes,
                                char* tail) noexcept {
  const char* src = reinterpret_cast<const char*>(panel) + kp * row_bytes;
  if (kp + kChunkPairs <= K2) return src;
  const Index n = K2 - kp;
  std::memcpy(tail, src, static_cast<std::size_t>(n * row_bytes));
  std::memset(tail + n * row_bytes, 0, static_cast<std::size_t>((kChunkPairs - n) * row_bytes));
  return tail;
}

// Copies the valid rows / columns of a 16 x 16 f32 tile image to Y.
MOEKIT_TARGET_AVX512 inline void put_tile(const float* c, Index rows, __mmask16 mask, float* Y,
                                          Index ldy) {
  for (Index r = 0; r < rows; ++r)
    _mm512_mask_storeu_ps(Y + r * ldy, mask, _mm512_load_ps(c + r * kTileRows));
}

// The call's rows times two weight column tiles: b0(kp) / b1(kp) give the 16
// k-pair rows (stride b_stride) of chunk kp, written to Y0 / Y1 under mask0 /
// mask1 (mask1 == 0: Y1 not written). Two row tiles x two column tiles per
// k-chunk: four tile products for four tile loads.
template <class B0, class B1>
MOEKIT_TARGET_AVX512_BF16 inline void two_column_tiles(const TileRows& rows, Index m, const B0& b0,
                                                       const B1& b1, long b_stride, float* Y0,
                                                       __mmask16 mask0, float* Y1, __mmask16 mask1,
                                                       Index ldy) {
  const long a_stride = static_cast<long>(rows.K2p * 4), c_stride = kTileRows * 4;
  alignas(64) float c[4][kTileRows * kTileRows];
  for (Index r0 = 0; r0 < m; r0 += 2 * kTileRows) {
    const bool two = r0 + kTileRows < m;
    MOEKIT_AMX_ZERO(0);
    MOEKIT_AMX_ZERO(1);
    MOEKIT_AMX_ZERO(2);
    MOEKIT_AMX_ZERO(3);
    for (Index kp = 0; kp < rows.K2; kp += kChunkPairs) {
      MOEKIT_AMX_LOAD(6, b0(kp), b_stride);
      MOEKIT_AMX_LOAD(7, b1(kp), b_stride);
      MOEKIT_AMX_LOAD(4, rows.row(r0) + kp, a_stride);
      MOEKIT_AMX_DOT(0, 4, 6);
      MOEKIT_AMX_DOT(1, 4, 7);
      if (two) {
        MOEKIT_AMX_LOAD(5, rows.row(r0 + kTileRows) + kp, a_stride);
        MOEKIT_AMX_DOT(2, 5, 6);
        MOEKIT_AMX_DOT(3, 5, 7);
      }
    }
    MOEKIT_AMX_STORE(0, c[0], c_stride);
    MOEKIT_AMX_STORE(1, c[1], c_stride);
    if (two) {
      MOEKIT_AMX_STORE(2, c[2], c_stride);
      MOEKIT_AMX_STORE(3, c[3], c_stride);
    }
    const Index n0 = std::min(kTileRows, m - r0);
    put_tile(c[0], n0, mask0, Y0 + r0 * ldy, ldy);
    if (mask1) put_tile(c[1], n0, mask1, Y1 + r0 * ldy, ldy);
    if (two) {
      const Index n1 = std::min(kTileRows, m - r0 - kTileRows);
      put_tile(c[2], n1, mask0, Y0 + (r0 + kTileRows) * ldy, ldy);
      if (mask1) put_tile(c[3], n1, mask1, Y1 + (r0 + kTileRows) * ldy, ldy);
    }
  }
}

/// Hidden columns [c0, c1) of G = A·W_gateᵀ, U = A·W_upᵀ from k-pair bf16
/// gate + up panels (c0 a multiple of 16): the gate and up tiles of a panel
/// are the same rows at offsets 0 and 64 bytes.
MOEKIT_TARGET_AVX512_BF16 inline void gate_up(ActivationRows A, Index m, Index K,
                                              const bf16* packed, Index f, Index c0, Index c1,
                                              float* G, float* U, Index ldo) {
  (void)f;
  if (m <= 0 || c0 >= c1) return;
  const TileRows rows = tile_rows(A, m, K);
  constexpr Index kRowBytes = 2 * 2 * kPanel * Index(sizeof(bf16));  // gate + up couples
  alignas(64) char tail[kChunkPairs * kRowBytes];
  detail::configure_tiles();
  for (Index p = c0 / kPanel; p * kPanel < c1; ++p) {
    const bf16* panel = packed + p * packed_k<bf16>(K) * 2 * kPanel;
    const __mmask16 mask = avx512::column_mask(c1 - p * kPanel);
    // The up tile follows the gate tile's chunk (tail included) by 64 bytes.
    const char* chunk = nullptr;
    const auto gate = [&](Index kp) {
      return chunk = weight_chunk(panel, rows.K2, kp, kRowBytes, tail);
    };
    const auto up = [&](Index) { return chunk + 64; };
    two_column_tiles(rows, m, gate, up, long{kRowBytes}, G + p * kPanel, mask, U + p * kPanel, mask,
                     ldo);
  }
  detail::release_tiles();
}

/// Output columns [c0, c1) of Y = A·Wᵀ from k-pair bf16 panels (c0 a
/// multiple of 16), two panels at a time.
MOEKIT_TARGET_AVX512_BF16 inline void matmul(const float* A, Index lda, Index m, Index K,
                                             const bf16* packed, Index N, Index c0, Index c1,
                                             float* Y, Index ldy) {
  (void)N;
  if (m <= 0 || c0 >= c1) return;
  const TileRows rows = tile_rows({A, lda}, m, K);
  constexpr Index kRowBytes = 2 * kPanel * Index(sizeof(bf16));
  const Index panel_elems = packed_k<bf16>(K) * kPanel;
  alignas(64) char tail[2][kChunkPairs * kRowBytes];
  detail::configure_tiles();
  for (Index p = c0 / kPanel; p * kPanel < c1; p += 2) {
    const bool pair = (p + 1) * kPanel < c1;
    const bf16* panel0 = packed + p * panel_elems;
    const bf16* panel1 = pair ? panel0 + panel_elems : panel0;
    const auto b0 = [&](Index kp) { return weight_chunk(panel0, rows.K2, kp, kRowBytes, tail[0]); };
    const auto b1 = [&](Index kp) { return weight_chunk(panel1, rows.K2, kp, kRowBytes, tail[1]); };
    two_column_tiles(rows, m, b0, b1, long{kRowBytes}, Y + p * kPanel,
                     avx512::column_mask(c1 - p * kPanel), pair ? Y + (p + 1) * kPanel : Y,
                     pair ? avx512::column_mask(c1 - (p + 1) * kPanel) : __mmask16(0), ldy);
  }
  detail::release_tiles();
}

#undef MOEKIT_AMX_ZERO
#undef MOEKIT_AMX_LOAD
#undef MOEKIT_AMX_STORE
#undef MOEKIT_AMX_DOT

}  // namespace avx512_amx
}  // namespace kernels
MOEKIT_NAMESPACE_END

MOEKIT_SIMD_WARNINGS_POP

#endif  // MOEKIT_HAVE_X86_KERNELS
