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
// The same layout holds bf16 or f16 weights (half the bytes); kernels widen
// them to f32 as they load, so results equal f32 arithmetic on the rounded
// weights.
#pragma once

#include <cstddef>
#include <cstdint>

#include "../core/dtype.hpp"

MOEKIT_NAMESPACE_BEGIN
namespace kernels {

constexpr Index kPanel = 16;

inline Index panels(Index n) noexcept { return (n + kPanel - 1) / kPanel; }

/// Floats of a packed [N, K] weight.
inline Index packed_size(Index N, Index K) noexcept { return panels(N) * K * kPanel; }
/// Floats of a packed gate + up pair, each [f, K].
inline Index packed_gate_up_size(Index f, Index K) noexcept { return panels(f) * K * 2 * kPanel; }

/// Storage conversion of one weight: float as is; bf16 / f16 bits (round to nearest even).
template <class T>
inline T to_storage(float v) noexcept;
template <>
inline float to_storage<float>(float v) noexcept { return v; }
template <>
inline bf16 to_storage<bf16>(float v) noexcept { return bf16(v); }
template <>
inline f16 to_storage<f16>(float v) noexcept { return f16(v); }

/// Packs w [N, K] (row-major) into `out` (packed_size(N, K) elements), converting to T.
template <class T>
inline void pack_panels(const float* w, Index N, Index K, T* out) noexcept {
  for (Index p = 0; p < panels(N); ++p) {
    T* dst = out + p * K * kPanel;
    for (Index k = 0; k < K; ++k)
      for (Index j = 0; j < kPanel; ++j) {
        const Index n = p * kPanel + j;
        dst[k * kPanel + j] = to_storage<T>(n < N ? w[n * K + k] : 0.0f);
      }
  }
}

/// Packs gate and up [f, K] into `out` (packed_gate_up_size(f, K) elements), converting to T.
template <class T>
inline void pack_gate_up(const float* gate, const float* up, Index f, Index K, T* out) noexcept {
  for (Index p = 0; p < panels(f); ++p) {
    T* dst = out + p * K * 2 * kPanel;
    for (Index k = 0; k < K; ++k)
      for (Index j = 0; j < kPanel; ++j) {
        const Index n = p * kPanel + j;
        dst[k * 2 * kPanel + j] = to_storage<T>(n < f ? gate[n * K + k] : 0.0f);
        dst[k * 2 * kPanel + kPanel + j] = to_storage<T>(n < f ? up[n * K + k] : 0.0f);
      }
  }
}

}  // namespace kernels
MOEKIT_NAMESPACE_END
