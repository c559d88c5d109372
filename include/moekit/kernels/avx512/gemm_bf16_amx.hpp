// SPDX-License-Identifier: MIT
// AMX-BF16 kernels (Isa::avx512_amx): bf16 weights, or int8 / int4 codes
// decoded to bf16, times bf16-rounded activations on the tile unit. One
// tdpbf16ps multiplies a 16 x 32 tile of activations by a 32 x 16 tile of
// weights into a 16 x 16 f32 tile: 16 times the multiply-adds of a
// vdpbf16ps, and on the Intel cores that have AMX the dot products run at
// several times their FP32 FMA rate.
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
#include "../quantized.hpp"
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

// Every tile used has rows of 64 bytes: tmm0..3 f32 accumulators (rows x 16),
// tmm4..5 activations (rows x 16 k-pairs), tmm6..7 weights (16 k-pairs x 16
// column couples). `rows` (1..16) is the number of activation rows a tile
// holds: a call of fewer than 16 rows configures that many, since the unit's
// time per product grows with the rows (decode: one row, not sixteen, per
// product and per tile store). Each output row is the same sum whatever the
// row count (the dot kernel tests compare one-row calls with many-row ones).
inline void configure_tiles(Index rows = 16) noexcept {
  (void)cpu_features();  // detection asks Linux for the tile state (else: SIGILL)
  TileConfig c;
  for (int t = 0; t < 8; ++t) {
    c.colsb[t] = 64;
    c.rows[t] = static_cast<std::uint8_t>(t < 6 ? rows : 16);
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

// total[r] += c[r] · s for the first `rows` rows of 16 x 16 tile images (s:
// one scale per column).
MOEKIT_TARGET_AVX512 inline void add_scaled(const float* c, const float* s, float* total,
                                            Index rows) {
  const __m512 sv = _mm512_loadu_ps(s);
  for (Index r = 0; r < rows; ++r)
    _mm512_store_ps(total + r * kTileRows, _mm512_fmadd_ps(_mm512_load_ps(c + r * kTileRows), sv,
                                                           _mm512_load_ps(total + r * kTileRows)));
}

// How the k-chunks of a product are summed. Whole: one tile sum over all of
// them (bf16 weights). Scaled: each chunk is one scale group of int8 / int4
// codes (kQuantGroup = 32 k = 16 k-pairs), so its tile sum is stored and
// added times the group's column scales in f32, as the vdpbf16ps kernels do
// (gemm_bf16_dot.hpp): scale_0(g) / scale_1(g) are the 16 column scales of
// group g of the two column tiles.
struct WholeSum {
  static constexpr bool kScaled = false;
};
struct GroupScales {
  static constexpr bool kScaled = true;
  const float *s0, *s1;
  Index stride;  // floats from one group's scales to the next
  const float* scale_0(Index g) const noexcept { return s0 + g * stride; }
  const float* scale_1(Index g) const noexcept { return s1 + g * stride; }
};
static_assert(kQuantGroup == 2 * kChunkPairs, "a tile chunk must be one scale group");

// The call's rows times two weight column tiles: b0(kp) / b1(kp) give the 16
// k-pair rows (stride b_stride) of chunk kp, written to Y0 / Y1 under mask0 /
// mask1 (mask1 == 0: Y1 not written). Two row tiles x two column tiles per
// k-chunk: four tile products for four tile loads. prepare(kp) runs before
// chunk kp is first read (the first row block), to decode it.
template <class Sum, class B0, class B1, class Prepare>
MOEKIT_TARGET_AVX512_BF16 inline void two_column_tiles(const TileRows& rows, Index m, const B0& b0,
                                                       const B1& b1, long b_stride, const Sum& sum,
                                                       const Prepare& prepare, float* Y0,
                                                       __mmask16 mask0, float* Y1, __mmask16 mask1,
                                                       Index ldy) {
  const long a_stride = static_cast<long>(rows.K2p * 4), c_stride = kTileRows * 4;
  alignas(64) float c[4][kTileRows * kTileRows];
  alignas(64) float total[Sum::kScaled ? 4 : 1][kTileRows * kTileRows];
  for (Index r0 = 0; r0 < m; r0 += 2 * kTileRows) {
    const bool two = r0 + kTileRows < m;
    const Index n0 = std::min(kTileRows, m - r0);
    const Index n1 = two ? std::min(kTileRows, m - r0 - kTileRows) : 0;
    if constexpr (Sum::kScaled) {
      for (auto& t : total) std::fill(t, t + kTileRows * kTileRows, 0.0f);
    } else {
      MOEKIT_AMX_ZERO(0);
      MOEKIT_AMX_ZERO(1);
      MOEKIT_AMX_ZERO(2);
      MOEKIT_AMX_ZERO(3);
    }
    for (Index kp = 0; kp < rows.K2; kp += kChunkPairs) {
      if (r0 == 0) prepare(kp);
      if constexpr (Sum::kScaled) {
        MOEKIT_AMX_ZERO(0);
        MOEKIT_AMX_ZERO(1);
        if (two) {
          MOEKIT_AMX_ZERO(2);
          MOEKIT_AMX_ZERO(3);
        }
      }
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
      if constexpr (Sum::kScaled) {
        const Index g = kp / kChunkPairs;
        MOEKIT_AMX_STORE(0, c[0], c_stride);
        MOEKIT_AMX_STORE(1, c[1], c_stride);
        add_scaled(c[0], sum.scale_0(g), total[0], n0);
        if (mask1) add_scaled(c[1], sum.scale_1(g), total[1], n0);
        if (two) {
          MOEKIT_AMX_STORE(2, c[2], c_stride);
          MOEKIT_AMX_STORE(3, c[3], c_stride);
          add_scaled(c[2], sum.scale_0(g), total[2], n1);
          if (mask1) add_scaled(c[3], sum.scale_1(g), total[3], n1);
        }
      }
    }
    float(*out)[kTileRows * kTileRows] = c;
    if constexpr (Sum::kScaled) {
      out = total;
    } else {
      MOEKIT_AMX_STORE(0, c[0], c_stride);
      MOEKIT_AMX_STORE(1, c[1], c_stride);
      if (two) {
        MOEKIT_AMX_STORE(2, c[2], c_stride);
        MOEKIT_AMX_STORE(3, c[3], c_stride);
      }
    }
    put_tile(out[0], n0, mask0, Y0 + r0 * ldy, ldy);
    if (mask1) put_tile(out[1], n0, mask1, Y1 + r0 * ldy, ldy);
    if (two) {
      put_tile(out[2], n1, mask0, Y0 + (r0 + kTileRows) * ldy, ldy);
      if (mask1) put_tile(out[3], n1, mask1, Y1 + (r0 + kTileRows) * ldy, ldy);
    }
  }
}

// bf16 panels as stored: nothing to do before a chunk is read.
struct NoPrepare {
  void operator()(Index) const noexcept {}
};

// Decodes k-pairs [kp, kp + 16) of the quantised panels p .. p + n - 1 to
// bf16 pairs of their codes at `out` (the panels one after another, K2
// k-pairs of 2W values each: the layout of bf16 panels). One chunk at a time,
// just before the first row block's tiles read it, so the decoding overlaps
// the tile unit's work on the chunk before. The codes kAheadChunks chunks on
// are asked into cache first (past a panel's end: the next panel's, which
// follow it in memory; a prefetch past the weights' end is harmless): without
// it the decoder waits on memory (olmoe int8 T = 1, 2 threads: 5.0-5.4 ms
// without, 3.2 with; T = 512: 129 against 117 ms).
template <int Bits, Index W>
struct ChunkDecoder {
  static constexpr Index kAheadChunks = 4;
  static constexpr Index kCodeBytes = (Bits == 8 ? 2 : 1) * W;  // per k-pair
  avx512_bf16::QuantPairBank<Bits, W> bank;
  Index p, n, K2;
  bf16* out;
  MOEKIT_TARGET_AVX512_BF16 void operator()(Index kp) const {
    const Index kp1 = std::min(K2, kp + kChunkPairs);
    for (Index q = 0; q < n; ++q) {
      const avx512_bf16::QuantPairs<Bits, W> src = bank(p + q);
      // (integer arithmetic: the address may lie past the weights)
      const char* ahead = reinterpret_cast<const char*>(
          reinterpret_cast<std::uintptr_t>(src.codes) +
          static_cast<std::uintptr_t>((kp + kAheadChunks * kChunkPairs) * kCodeBytes));
      for (Index b = 0; b < kChunkPairs * kCodeBytes; b += 64) _mm_prefetch(ahead + b, _MM_HINT_T0);
      avx512_bf16::decode_pairs(src, kp, kp1, out + q * K2 * 2 * W);
    }
  }
};

// What the tile loops read for one panel (or two consecutive ones, matmul):
// bf16 k-pair panels at `data`, summed as `sum`, chunk kp made ready by
// prepare(kp).
template <class Sum, class Prepare>
struct PanelWork {
  const bf16* data;
  Sum sum;
  Prepare prepare;
};

// Gate + up columns [c0, c1) (c0 a multiple of 16) of the gate + up panels
// work(p) gives. The up tile of a chunk follows the gate tile (tail
// included) by 64 bytes.
template <class WorkOf>
MOEKIT_TARGET_AVX512_BF16 inline void gate_up_panels(const TileRows& rows, Index m,
                                                     const WorkOf& work_of, Index c0, Index c1,
                                                     float* G, float* U, Index ldo) {
  constexpr Index kRowBytes = 2 * 2 * kPanel * Index(sizeof(bf16));  // gate + up couples
  alignas(64) char tail[kChunkPairs * kRowBytes];
  detail::configure_tiles(std::min(m, kTileRows));
  for (Index p = c0 / kPanel; p * kPanel < c1; ++p) {
    const auto work = work_of(p);
    const __mmask16 mask = avx512::column_mask(c1 - p * kPanel);
    const char* chunk = nullptr;
    const auto gate = [&](Index kp) {
      return chunk = weight_chunk(work.data, rows.K2, kp, kRowBytes, tail);
    };
    const auto up = [&](Index) { return chunk + 64; };
    two_column_tiles(rows, m, gate, up, long{kRowBytes}, work.sum, work.prepare, G + p * kPanel,
                     mask, U + p * kPanel, mask, ldo);
  }
  detail::release_tiles();
}

// Output columns [c0, c1) (c0 a multiple of 16), two panels at a time:
// work(p, n) for the n (1 or 2) panels from p, the second panel_elems after
// the first.
template <class WorkOf>
MOEKIT_TARGET_AVX512_BF16 inline void matmul_panels(const TileRows& rows, Index m, Index K,
                                                    const WorkOf& work_of, Index c0, Index c1,
                                                    float* Y, Index ldy) {
  constexpr Index kRowBytes = 2 * kPanel * Index(sizeof(bf16));
  const Index panel_elems = packed_k<bf16>(K) * kPanel;
  alignas(64) char tail[2][kChunkPairs * kRowBytes];
  detail::configure_tiles(std::min(m, kTileRows));
  for (Index p = c0 / kPanel; p * kPanel < c1; p += 2) {
    const bool pair = (p + 1) * kPanel < c1;
    const auto work = work_of(p, pair ? 2 : 1);
    const bf16* panel0 = work.data;
    const bf16* panel1 = pair ? panel0 + panel_elems : panel0;
    const auto b0 = [&](Index kp) { return weight_chunk(panel0, rows.K2, kp, kRowBytes, tail[0]); };
    const auto b1 = [&](Index kp) { return weight_chunk(panel1, rows.K2, kp, kRowBytes, tail[1]); };
    two_column_tiles(rows, m, b0, b1, long{kRowBytes}, work.sum, work.prepare, Y + p * kPanel,
                     avx512::column_mask(c1 - p * kPanel), pair ? Y + (p + 1) * kPanel : Y,
                     pair ? avx512::column_mask(c1 - (p + 1) * kPanel) : __mmask16(0), ldy);
  }
  detail::release_tiles();
}

/// Hidden columns [c0, c1) of G = A·W_gateᵀ, U = A·W_upᵀ from k-pair bf16
/// gate + up panels (c0 a multiple of 16): the gate and up tiles of a panel
/// are the same rows at offsets 0 and 64 bytes.
MOEKIT_TARGET_AVX512_BF16 inline void gate_up(ActivationRows A, Index m, Index K,
                                              const bf16* packed, Index f, Index c0, Index c1,
                                              float* G, float* U, Index ldo) {
  (void)f;
  if (m <= 0 || c0 >= c1) return;
  const Index panel_elems = packed_k<bf16>(K) * 2 * kPanel;
  gate_up_panels(
      tile_rows(A, m, K), m,
      [&](Index p) {
        return PanelWork<WholeSum, NoPrepare>{packed + p * panel_elems, {}, {}};
      },
      c0, c1, G, U, ldo);
}

/// Output columns [c0, c1) of Y = A·Wᵀ from k-pair bf16 panels (c0 a
/// multiple of 16), two panels at a time.
MOEKIT_TARGET_AVX512_BF16 inline void matmul(const float* A, Index lda, Index m, Index K,
                                             const bf16* packed, Index N, Index c0, Index c1,
                                             float* Y, Index ldy) {
  (void)N;
  if (m <= 0 || c0 >= c1) return;
  const Index panel_elems = packed_k<bf16>(K) * kPanel;
  matmul_panels(
      tile_rows({A, lda}, m, K), m, K,
      [&](Index p, Index) {
        return PanelWork<WholeSum, NoPrepare>{packed + p * panel_elems, {}, {}};
      },
      c0, c1, Y, ldy);
}

/// int8 (Bits = 8) / int4 (Bits = 4) weights (quantized.hpp) times
/// bf16-rounded activations on the tile unit: each panel is decoded to bf16
/// k-pairs of its codes (exact: |code| <= 128) in a per-thread buffer, a chunk
/// at a time as the first row block reaches it (ChunkDecoder), and each 32-k
/// chunk's tile sum is one scale group, added times the group's scales in f32
/// (the arithmetic of avx512_bf16::gate_up_quant, with the tile unit's sum
/// within a group).
template <int Bits>
MOEKIT_TARGET_AVX512_BF16 inline void gate_up_quant(ActivationRows A, Index m, Index K,
                                                    const std::uint8_t* codes, const float* scales,
                                                    Index f, Index c0, Index c1, float* G, float* U,
                                                    Index ldo) {
  (void)f;
  if (m <= 0 || c0 >= c1) return;
  constexpr Index W = 2 * kPanel;
  const TileRows rows = tile_rows(A, m, K);
  const avx512_bf16::QuantPairBank<Bits, W> bank{codes, scales, K};
  bf16* buf = avx512_bf16::PairDecoder::scratch(K);  // one gate + up panel
  gate_up_panels(
      rows, m,
      [&](Index p) {
        const float* s = scales + p * quant_panel_scales(K, W);
        return PanelWork<GroupScales, ChunkDecoder<Bits, W>>{
            buf, {s, s + kPanel, W}, {bank, p, 1, rows.K2, buf}};
      },
      c0, c1, G, U, ldo);
}
template <int Bits>
MOEKIT_TARGET_AVX512_BF16 inline void matmul_quant(const float* A, Index lda, Index m, Index K,
                                                   const std::uint8_t* codes, const float* scales,
                                                   Index N, Index c0, Index c1, float* Y,
                                                   Index ldy) {
  (void)N;
  if (m <= 0 || c0 >= c1) return;
  constexpr Index W = kPanel;
  const TileRows rows = tile_rows({A, lda}, m, K);
  const avx512_bf16::QuantPairBank<Bits, W> bank{codes, scales, K};
  bf16* buf = avx512_bf16::PairDecoder::scratch(K);  // two plain panels
  matmul_panels(
      rows, m, K,
      [&](Index p, Index n) {
        const float* s = scales + p * quant_panel_scales(K, W);
        return PanelWork<GroupScales, ChunkDecoder<Bits, W>>{
            buf, {s, n == 2 ? s + quant_panel_scales(K, W) : s, W}, {bank, p, n, rows.K2, buf}};
      },
      c0, c1, Y, ldy);
}

/// The tile unit's peak for `moekit roofline` (kernels/roofline.hpp): iters x
/// 6 tile products (16 x 16 x 32 multiply-adds each) into six independent
/// accumulator tiles from two constant operand tiles, no memory traffic in the
/// loop. Returns a checksum (keeps the work alive).
MOEKIT_TARGET_AVX512_BF16 inline float peak_loop(std::int64_t iters) {
  alignas(64) std::uint16_t a[kTileRows * 2 * kChunkPairs], b[kTileRows * 2 * kChunkPairs];
  std::fill(a, a + kTileRows * 2 * kChunkPairs, std::uint16_t{0x3f80});  // 1.0
  std::fill(b, b + kTileRows * 2 * kChunkPairs, std::uint16_t{0x3380});  // 2^-24
  const long stride = 64;
  detail::configure_tiles();
  MOEKIT_AMX_ZERO(0);
  MOEKIT_AMX_ZERO(1);
  MOEKIT_AMX_ZERO(2);
  MOEKIT_AMX_ZERO(3);
  MOEKIT_AMX_ZERO(4);
  MOEKIT_AMX_ZERO(5);
  MOEKIT_AMX_LOAD(6, a, stride);
  MOEKIT_AMX_LOAD(7, b, stride);
  for (std::int64_t it = 0; it < iters; ++it) {
    MOEKIT_AMX_DOT(0, 6, 7);
    MOEKIT_AMX_DOT(1, 6, 7);
    MOEKIT_AMX_DOT(2, 6, 7);
    MOEKIT_AMX_DOT(3, 6, 7);
    MOEKIT_AMX_DOT(4, 6, 7);
    MOEKIT_AMX_DOT(5, 6, 7);
  }
  alignas(64) float c[6][kTileRows * kTileRows];
  const long c_stride = kTileRows * 4;
  MOEKIT_AMX_STORE(0, c[0], c_stride);
  MOEKIT_AMX_STORE(1, c[1], c_stride);
  MOEKIT_AMX_STORE(2, c[2], c_stride);
  MOEKIT_AMX_STORE(3, c[3], c_stride);
  MOEKIT_AMX_STORE(4, c[4], c_stride);
  MOEKIT_AMX_STORE(5, c[5], c_stride);
  detail::release_tiles();
  float sum = 0.0f;
  for (const auto& t : c) sum += t[0] + t[kTileRows * kTileRows - 1];
  return sum;
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
