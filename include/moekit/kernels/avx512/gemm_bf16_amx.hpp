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
// is copied into a zeroed block (decoded int8 / int4 chunks are zeroed past
// the panel's end), so no tile load reads past a buffer and every padded
// product is 0 · finite. Each output is the tile unit's f32 sum over
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
// = k-pairs rounded up to 16 (and one chunk more, see tile_rows), padding +0.
struct TileRows {
  const std::uint32_t* A;
  Index K2, K2p;  // k-pairs of data, of the padded row
  Index mp;       // rows, rounded up to 16
  const std::uint32_t* row(Index r) const noexcept { return A + r * K2p; }
};

struct TileRowsTag;

MOEKIT_TARGET_AVX512_BF16 inline TileRows tile_rows(const ActivationRows& A, Index m, Index K) {
  const Index K2 = (K + 1) / 2;
  Index K2p = (K2 + kChunkPairs - 1) / kChunkPairs * kChunkPairs;
  // A tile's 16 rows are K2p·4 bytes apart: a multiple of 512 puts them in
  // a few L1 sets (K = 2048: all in one), so such rows get one more chunk.
  if ((K2p * 4) % 512 == 0) K2p += kChunkPairs;
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

// The column scales of a panel pair's int8 / int4 groups (kQuantGroup = 32 k
// = 16 k-pairs, so one tile chunk is one scale group): scale_0(g) /
// scale_1(g) are the 16 column scales of group g of the two column tiles.
struct GroupScales {
  const float *s0, *s1;
  Index stride;  // floats from one group's scales to the next
  const float* scale_0(Index g) const noexcept { return s0 + g * stride; }
  const float* scale_1(Index g) const noexcept { return s1 + g * stride; }
};
static_assert(kQuantGroup == 2 * kChunkPairs, "a tile chunk must be one scale group");

// The call's rows times two weight column tiles: b0(kp) / b1(kp) give the 16
// k-pair rows (stride b_stride) of chunk kp, written to Y0 / Y1 under mask0 /
// mask1 (mask1 == 0: Y1 not written). Two row tiles x two column tiles per
// k-chunk: four tile products for four tile loads, one sum over all chunks.
template <class B0, class B1>
MOEKIT_TARGET_AVX512_BF16 inline void whole_sum_tiles(const TileRows& rows, Index m, const B0& b0,
                                                      const B1& b1, long b_stride, float* Y0,
                                                      __mmask16 mask0, float* Y1, __mmask16 mask1,
                                                      Index ldy) {
  const long a_stride = static_cast<long>(rows.K2p * 4), c_stride = kTileRows * 4;
  alignas(64) float c[4][kTileRows * kTileRows];
  for (Index r0 = 0; r0 < m; r0 += 2 * kTileRows) {
    const bool two = r0 + kTileRows < m;
    const Index n0 = std::min(kTileRows, m - r0);
    const Index n1 = two ? std::min(kTileRows, m - r0 - kTileRows) : 0;
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
    put_tile(c[0], n0, mask0, Y0 + r0 * ldy, ldy);
    if (mask1) put_tile(c[1], n0, mask1, Y1 + r0 * ldy, ldy);
    if (two) {
      put_tile(c[2], n1, mask0, Y0 + (r0 + kTileRows) * ldy, ldy);
      if (mask1) put_tile(c[3], n1, mask1, Y1 + (r0 + kTileRows) * ldy, ldy);
    }
  }
}

// The same product when each chunk is one scale group (int8 / int4 codes):
// every tile sum of a chunk is stored and added times the group's column
// scales into f32 totals, so the tiles need not hold sums across chunks and
// the chunk is the outer loop: its weight tiles are loaded once for all the
// row tiles of a pass (up to kPassTiles). A stored tile waits for its
// product, so the sums go through two accumulator pairs, tmm0/1 and tmm2/3,
// in turn (activation tiles tmm4 / tmm5 with them), and a pair is stored
// while the other one's products run. prepare(kp) makes chunk kp ready; it is
// called kDecodeAhead chunks before the chunk is read, after the products of
// the first row tile are issued, so decoding overlaps the tile unit.
constexpr Index kPassTiles = 8;
constexpr Index kDecodeAhead = 2;

template <class B0, class B1, class Prepare>
MOEKIT_TARGET_AVX512_BF16 inline void group_sum_tiles(const TileRows& rows, Index m, const B0& b0,
                                                      const B1& b1, long b_stride,
                                                      const GroupScales& sum,
                                                      const Prepare& prepare, float* Y0,
                                                      __mmask16 mask0, float* Y1, __mmask16 mask1,
                                                      Index ldy) {
  const long a_stride = static_cast<long>(rows.K2p * 4), c_stride = kTileRows * 4;
  alignas(64) float c[2][2][kTileRows * kTileRows];               // [pair][column tile]
  alignas(64) float total[kPassTiles][2][kTileRows * kTileRows];  // [row tile][column tile]
  for (Index r0 = 0; r0 < m; r0 += kPassTiles * kTileRows) {
    const Index nt = std::min(kPassTiles, (m - r0 + kTileRows - 1) / kTileRows);
    const auto tile_rows_of = [&](Index t) { return std::min(kTileRows, m - r0 - t * kTileRows); };
    for (Index t = 0; t < nt; ++t)
      for (auto& u : total[t]) std::fill(u, u + kTileRows * kTileRows, 0.0f);
    // The sums in accumulator pair `pair` (group g, row tile t) into the totals.
    const auto add = [&](int pair, Index g, Index t) {
      if (pair == 0) {
        MOEKIT_AMX_STORE(0, c[0][0], c_stride);
        MOEKIT_AMX_STORE(1, c[0][1], c_stride);
      } else {
        MOEKIT_AMX_STORE(2, c[1][0], c_stride);
        MOEKIT_AMX_STORE(3, c[1][1], c_stride);
      }
      add_scaled(c[pair][0], sum.scale_0(g), total[t][0], tile_rows_of(t));
      if (mask1) add_scaled(c[pair][1], sum.scale_1(g), total[t][1], tile_rows_of(t));
    };
    for (Index q = 0; q < kDecodeAhead && q * kChunkPairs < rows.K2; ++q) prepare(q * kChunkPairs);
    // Row tile t of group g uses pair (g·nt + t) mod 2; after it is issued,
    // the tile before it (the other pair) is added.
    int pair = 1;
    for (Index kp = 0; kp < rows.K2; kp += kChunkPairs) {
      const Index g = kp / kChunkPairs;
      MOEKIT_AMX_LOAD(6, b0(kp), b_stride);
      MOEKIT_AMX_LOAD(7, b1(kp), b_stride);
      for (Index t = 0; t < nt; ++t) {
        const std::uint32_t* a = rows.row(r0 + t * kTileRows) + kp;
        pair ^= 1;
        if (pair == 0) {
          MOEKIT_AMX_ZERO(0);
          MOEKIT_AMX_ZERO(1);
          MOEKIT_AMX_LOAD(4, a, a_stride);
          MOEKIT_AMX_DOT(0, 4, 6);
          MOEKIT_AMX_DOT(1, 4, 7);
        } else {
          MOEKIT_AMX_ZERO(2);
          MOEKIT_AMX_ZERO(3);
          MOEKIT_AMX_LOAD(5, a, a_stride);
          MOEKIT_AMX_DOT(2, 5, 6);
          MOEKIT_AMX_DOT(3, 5, 7);
        }
        if (t == 0 && kp + kDecodeAhead * kChunkPairs < rows.K2)
          prepare(kp + kDecodeAhead * kChunkPairs);
        if (t > 0)
          add(pair ^ 1, g, t - 1);
        else if (g > 0)
          add(pair ^ 1, g - 1, nt - 1);
      }
    }
    add(pair, (rows.K2 - 1) / kChunkPairs, nt - 1);
    for (Index t = 0; t < nt; ++t) {
      put_tile(total[t][0], tile_rows_of(t), mask0, Y0 + (r0 + t * kTileRows) * ldy, ldy);
      if (mask1)
        put_tile(total[t][1], tile_rows_of(t), mask1, Y1 + (r0 + t * kTileRows) * ldy, ldy);
    }
  }
}

// A ring of decoded chunks: slot kp / 16 mod kRingSlots holds k-pairs
// [kp, kp + 16) of n panels (one after another, 16 rows of 2W bf16 values
// each, zeroed past the panels' last k-pair): the weight tiles of the chunk.
// Small enough to stay in L1 while the tile unit reads it, and every slot is
// read kDecodeAhead chunks after it is written.
constexpr Index kRingSlots = 4;
constexpr Index kSlotBytes = 2 * kChunkPairs * 2 * kPanel * Index(sizeof(bf16));
static_assert(kRingSlots > kDecodeAhead, "a slot is rewritten only after its chunk is read");
struct alignas(64) ChunkRing {
  char bytes[kRingSlots][kSlotBytes];
  char* slot(Index kp) noexcept { return bytes[kp / kChunkPairs % kRingSlots]; }
};

// Decodes k-pairs [kp, kp + 16) of the quantised panels p .. p + n - 1 to
// bf16 pairs of their codes in the ring slot of kp. The codes kAheadChunks
// chunks on are asked into cache first (past a panel's end: the next
// panel's, which follow it in memory; a prefetch past the weights' end is
// harmless): without it the decoder waits on memory (olmoe int8 T = 1, 2
// threads: 5.0-5.4 ms without, 3.2 with; T = 512: 129 against 117 ms).
template <int Bits, Index W>
struct ChunkDecoder {
  static constexpr Index kAheadChunks = 4;
  static constexpr Index kCodeBytes = quant_pair_bytes(W, Bits);  // per k-pair
  static constexpr Index kRowBytes = 2 * W * Index(sizeof(bf16));
  static_assert((W == kPanel ? 2 : 1) * kChunkPairs * kRowBytes <= kSlotBytes,
                "a slot holds a chunk of one gate + up panel or of two plain ones");
  avx512_bf16::QuantPairBank<Bits, W> bank;
  Index p, n, K2;
  ChunkRing* ring;
  // Where panel q's rows of chunk kp are (after operator()(kp)).
  char* chunk(Index kp, Index q) const noexcept {
    return ring->slot(kp) + q * kChunkPairs * kRowBytes;
  }
  MOEKIT_TARGET_AVX512_BF16 void operator()(Index kp) const {
    const Index kp1 = std::min(K2, kp + kChunkPairs);
    for (Index q = 0; q < n; ++q) {
      const avx512_bf16::QuantPairs<Bits, W> src = bank(p + q);
      // (integer arithmetic: the address may lie past the weights)
      const char* ahead = reinterpret_cast<const char*>(
          reinterpret_cast<std::uintptr_t>(src.codes) +
          static_cast<std::uintptr_t>((kp + kAheadChunks * kChunkPairs) * kCodeBytes));
      for (Index b = 0; b < kChunkPairs * kCodeBytes; b += 64) _mm_prefetch(ahead + b, _MM_HINT_T0);
      char* out = chunk(kp, q);
      avx512_bf16::decode_pairs(src, kp, kp1, reinterpret_cast<bf16*>(out));
      if (kp1 - kp < kChunkPairs)
        std::memset(out + (kp1 - kp) * kRowBytes, 0,
                    static_cast<std::size_t>((kChunkPairs - (kp1 - kp)) * kRowBytes));
    }
  }
};

// Gate + up columns [c0, c1) (c0 a multiple of 16) of k-pair bf16 gate + up
// panels: the up tile of a chunk follows the gate tile (tail included) by 64
// bytes. panel_of(p) is panel p's data.
template <class PanelOf>
MOEKIT_TARGET_AVX512_BF16 inline void gate_up_panels(const TileRows& rows, Index m,
                                                     const PanelOf& panel_of, Index c0, Index c1,
                                                     float* G, float* U, Index ldo) {
  constexpr Index kRowBytes = 2 * 2 * kPanel * Index(sizeof(bf16));  // gate + up couples
  alignas(64) char tail[kChunkPairs * kRowBytes];
  detail::configure_tiles(std::min(m, kTileRows));
  for (Index p = c0 / kPanel; p * kPanel < c1; ++p) {
    const bf16* data = panel_of(p);
    const __mmask16 mask = avx512::column_mask(c1 - p * kPanel);
    const char* chunk = nullptr;
    const auto gate = [&](Index kp) {
      return chunk = weight_chunk(data, rows.K2, kp, kRowBytes, tail);
    };
    const auto up = [&](Index) { return chunk + 64; };
    whole_sum_tiles(rows, m, gate, up, long{kRowBytes}, G + p * kPanel, mask, U + p * kPanel, mask,
                    ldo);
  }
  detail::release_tiles();
}

// The same for int8 / int4 gate + up panels, decoded a chunk at a time.
template <int Bits>
MOEKIT_TARGET_AVX512_BF16 inline void gate_up_quant_panels(
    const TileRows& rows, Index m, const avx512_bf16::QuantPairBank<Bits, 2 * kPanel>& bank,
    Index c0, Index c1, float* G, float* U, Index ldo) {
  constexpr Index W = 2 * kPanel;
  ChunkRing ring;
  detail::configure_tiles(std::min(m, kTileRows));
  for (Index p = c0 / kPanel; p * kPanel < c1; ++p) {
    const float* s = bank.scales + p * quant_panel_scales(bank.K, W);
    const ChunkDecoder<Bits, W> decode{bank, p, 1, rows.K2, &ring};
    const __mmask16 mask = avx512::column_mask(c1 - p * kPanel);
    const auto gate = [&](Index kp) { return decode.chunk(kp, 0); };
    const auto up = [&](Index kp) { return decode.chunk(kp, 0) + 64; };
    group_sum_tiles(rows, m, gate, up, long{decode.kRowBytes}, GroupScales{s, s + kPanel, W},
                    decode, G + p * kPanel, mask, U + p * kPanel, mask, ldo);
  }
  detail::release_tiles();
}

// Output columns [c0, c1) (c0 a multiple of 16) of k-pair bf16 panels, two at
// a time: panel_of(p) is panel p's data.
template <class PanelOf>
MOEKIT_TARGET_AVX512_BF16 inline void matmul_panels(const TileRows& rows, Index m,
                                                    const PanelOf& panel_of, Index c0, Index c1,
                                                    float* Y, Index ldy) {
  constexpr Index kRowBytes = 2 * kPanel * Index(sizeof(bf16));
  alignas(64) char tail[2][kChunkPairs * kRowBytes];
  detail::configure_tiles(std::min(m, kTileRows));
  for (Index p = c0 / kPanel; p * kPanel < c1; p += 2) {
    const bool pair = (p + 1) * kPanel < c1;
    const bf16* panel0 = panel_of(p);
    const bf16* panel1 = pair ? panel_of(p + 1) : panel0;
    const auto b0 = [&](Index kp) { return weight_chunk(panel0, rows.K2, kp, kRowBytes, tail[0]); };
    const auto b1 = [&](Index kp) { return weight_chunk(panel1, rows.K2, kp, kRowBytes, tail[1]); };
    whole_sum_tiles(rows, m, b0, b1, long{kRowBytes}, Y + p * kPanel,
                    avx512::column_mask(c1 - p * kPanel), pair ? Y + (p + 1) * kPanel : Y,
                    pair ? avx512::column_mask(c1 - (p + 1) * kPanel) : __mmask16(0), ldy);
  }
  detail::release_tiles();
}

// The same for int8 / int4 panels, two decoded a chunk at a time.
template <int Bits>
MOEKIT_TARGET_AVX512_BF16 inline void matmul_quant_panels(
    const TileRows& rows, Index m, const avx512_bf16::QuantPairBank<Bits, kPanel>& bank, Index c0,
    Index c1, float* Y, Index ldy) {
  constexpr Index W = kPanel;
  const Index panel_scales = quant_panel_scales(bank.K, W);
  ChunkRing ring;
  detail::configure_tiles(std::min(m, kTileRows));
  for (Index p = c0 / kPanel; p * kPanel < c1; p += 2) {
    const bool pair = (p + 1) * kPanel < c1;
    const float* s = bank.scales + p * panel_scales;
    const ChunkDecoder<Bits, W> decode{bank, p, pair ? 2 : 1, rows.K2, &ring};
    const auto b0 = [&](Index kp) { return decode.chunk(kp, 0); };
    const auto b1 = [&](Index kp) { return decode.chunk(kp, pair ? 1 : 0); };
    group_sum_tiles(rows, m, b0, b1, long{decode.kRowBytes},
                    GroupScales{s, pair ? s + panel_scales : s, W}, decode, Y + p * kPanel,
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
      tile_rows(A, m, K), m, [&](Index p) { return packed + p * panel_elems; }, c0, c1, G, U, ldo);
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
      tile_rows({A, lda}, m, K), m, [&](Index p) { return packed + p * panel_elems; }, c0, c1, Y,
      ldy);
}

/// int8 (Bits = 8) / int4 (Bits = 4) weights (quantized.hpp) times
/// bf16-rounded activations on the tile unit: the codes are decoded to bf16
/// (exact: |code| <= 128) a 32-input chunk at a time into a small ring the
/// tiles read (ChunkDecoder), and each chunk's tile sum is one scale group,
/// added times the group's scales in f32 (the arithmetic of
/// avx512_bf16::gate_up_quant, with the tile unit's sum within a group).
template <int Bits>
MOEKIT_TARGET_AVX512_BF16 inline void gate_up_quant(ActivationRows A, Index m, Index K,
                                                    const std::uint8_t* codes, const float* scales,
                                                    Index f, Index c0, Index c1, float* G, float* U,
                                                    Index ldo) {
  (void)f;
  if (m <= 0 || c0 >= c1) return;
  gate_up_quant_panels<Bits>(tile_rows(A, m, K), m, {codes, scales, K}, c0, c1, G, U, ldo);
}
template <int Bits>
MOEKIT_TARGET_AVX512_BF16 inline void matmul_quant(const float* A, Index lda, Index m, Index K,
                                                   const std::uint8_t* codes, const float* scales,
                                                   Index N, Index c0, Index c1, float* Y,
                                                   Index ldy) {
  (void)N;
  if (m <= 0 || c0 >= c1) return;
  matmul_quant_panels<Bits>(tile_rows({A, lda}, m, K), m, {codes, scales, K}, c0, c1, Y, ldy);
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
