// SPDX-License-Identifier: MIT
// Weight packing for the f32 GEMM kernels: done once when an expert bank is
// built, never per call.
//
// NOTE: a weight W [N, K] (checkpoint [out, in]) computes Y = X · Wᵀ. It is
// packed into panels of kPanel = 16 output columns: panel p holds, for each
// k in [0, K), the 16 values W[16p .. 16p+15, k] contiguously, so a kernel
// streams one panel from start to end while it accumulates a tile of Y. The
// last panel is zero-padded. Gate and up weights of a gated FFN are packed
// together: panel p holds, per k, 16 gate values then 16 up values, so one
// pass over the input produces both projections. 16 columns are one AVX-512
// vector, two AVX2 vectors, four NEON vectors: one layout serves every ISA.
// f16 weights use the same layout (half the bytes). bf16 weights are stored
// in k-pairs: for each pair (2i, 2i + 1) of k, the W values of the row come
// as W (k = 2i, k = 2i + 1) couples, which is the operand layout of AVX-512
// BF16's vdpbf16ps (one 32-bit lane = two k of one column); an odd K is padded
// with a zero row. Kernels without vdpbf16ps widen bf16 / f16 to f32 as they
// load, so their results equal f32 arithmetic on the rounded weights.
#pragma once

#include <array>
#include <cstddef>
#include <cstdint>
#include <type_traits>

#include "../core/dtype.hpp"

MOEKIT_NAMESPACE_BEGIN
namespace kernels {

constexpr Index kPanel = 16;

inline Index panels(Index n) noexcept { return (n + kPanel - 1) / kPanel; }

/// True for storage types packed in k-pairs (bf16).
template <class T>
constexpr bool kPairedK = std::is_same_v<T, bf16>;
/// k-rows a packed panel of T holds for K inputs (K, rounded up to even for bf16).
template <class T>
constexpr Index packed_k(Index K) noexcept {
  return kPairedK<T> ? K + (K & 1) : K;
}
/// Position of weight (k, column j) within a packed panel of W values per k-row.
template <class T>
constexpr Index packed_offset(Index k, Index j, Index W) noexcept {
  return kPairedK<T> ? (k >> 1) * 2 * W + 2 * j + (k & 1) : k * W + j;
}

/// The even k of the k-pair holding k, for a kernel that knows k's parity P
/// at compile time. Indexing pair data through it makes both halves of a pair
/// spell one address, so the compiler loads and widens the pair once (the
/// AVX-512 int4 down tile with one row: 1.21-1.32x in bench_kernels).
template <int P>
constexpr Index pair_base(Index k) noexcept {
  return k - P;
}

/// Elements of a packed [N, K] weight of T.
template <class T = float>
inline Index packed_size(Index N, Index K) noexcept {
  return panels(N) * packed_k<T>(K) * kPanel;
}
/// Elements of a packed gate + up pair of T, each [f, K].
template <class T = float>
inline Index packed_gate_up_size(Index f, Index K) noexcept {
  return panels(f) * packed_k<T>(K) * 2 * kPanel;
}

/// The packed panels of one weight (W values per k-row: 32 gate + up, 16
/// otherwise) as the AVX2 and NEON drivers walk them: bank(p) is panel p's
/// start; bytes_of / size_of say what to prefetch.
template <class T>
struct PanelBank {
  const T* packed;
  Index K, W;
  const T* operator()(Index p) const noexcept { return packed + p * packed_k<T>(K) * W; }
  const char* bytes_of(Index p) const noexcept { return reinterpret_cast<const char*>((*this)(p)); }
  Index size_of(Index) const noexcept { return packed_k<T>(K) * W * Index(sizeof(T)); }
};

/// The sources of a tile that runs over NP panels at once (one-row decode:
/// NP independent chains of FMAs), and panels p .. p + NP - 1 of a bank as
/// such (AVX2, NEON).
template <int NP, class Src>
using Panels = std::array<Src, NP>;
template <int NP, class Bank>
inline auto panels_from(const Bank& bank, Index p) {
  Panels<NP, decltype(bank(0))> b{};
  for (int j = 0; j < NP; ++j) b[static_cast<std::size_t>(j)] = bank(p + j);
  return b;
}

/// Storage conversion of one weight: float as is; bf16 / f16 bits (round to nearest even).
template <class T>
inline T to_storage(float v) noexcept;
template <>
inline float to_storage<float>(float v) noexcept {
  return v;
}
template <>
inline bf16 to_storage<bf16>(float v) noexcept {
  return bf16(v);
}
template <>
inline f16 to_storage<f16>(float v) noexcept {
  return f16(v);
}

/// Packs w [N, K] (row-major) into `out` (packed_size(N, K) elements), converting to T.
template <class T>
inline void pack_panels(const float* w, Index N, Index K, T* out) noexcept {
  const Index Kp = packed_k<T>(K);
  for (Index p = 0; p < panels(N); ++p) {
    T* dst = out + p * Kp * kPanel;
    for (Index k = 0; k < Kp; ++k)
      for (Index j = 0; j < kPanel; ++j) {
        const Index n = p * kPanel + j;
        dst[packed_offset<T>(k, j, kPanel)] = to_storage<T>(n < N && k < K ? w[n * K + k] : 0.0f);
      }
  }
}

/// Packs gate and up [f, K] into `out` (packed_gate_up_size(f, K) elements), converting to T.
template <class T>
inline void pack_gate_up(const float* gate, const float* up, Index f, Index K, T* out) noexcept {
  const Index Kp = packed_k<T>(K);
  for (Index p = 0; p < panels(f); ++p) {
    T* dst = out + p * Kp * 2 * kPanel;
    for (Index k = 0; k < Kp; ++k)
      for (Index j = 0; j < kPanel; ++j) {
        const Index n = p * kPanel + j;
        const bool in = n < f && k < K;
        dst[packed_offset<T>(k, j, 2 * kPanel)] = to_storage<T>(in ? gate[n * K + k] : 0.0f);
        dst[packed_offset<T>(k, kPanel + j, 2 * kPanel)] = to_storage<T>(in ? up[n * K + k] : 0.0f);
      }
  }
}

}  // namespace kernels
MOEKIT_NAMESPACE_END
