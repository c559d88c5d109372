// SPDX-License-Identifier: MIT
// Scalar f32 kernels over packed weights (packing.hpp). Plain C++, compiled
// for every target; the SIMD kernels must agree with these.
//
// Column ranges [c0, c1) start on a panel boundary (c0 % 16 == 0) and end on
// one or at N. Outputs are written only in that range, so tasks that split the
// columns of one expert write disjoint memory.
#pragma once

#include <cmath>

#include "../../core/dtype.hpp"
#include "../packing.hpp"
#include "../rows.hpp"

MOEKIT_NAMESPACE_BEGIN
namespace kernels {
namespace scalar {

constexpr Index kRows = 4;  // rows per tile

inline float widen(float v) noexcept { return v; }
inline float widen(bf16 v) noexcept { return static_cast<float>(v); }
inline float widen(f16 v) noexcept { return static_cast<float>(v); }

/// G, U [m, ldo] columns [c0, c1) = A [m, K] (row stride lda) times the packed gate / up.
template <class T = float>
inline void gate_up(ActivationRows rows, Index m, Index K, const T* packed, Index f, Index c0,
                    Index c1, float* G, float* U, Index ldo) {
  (void)f;
  Index lda = 0;
  const float* A = contiguous_rows(rows, m, K, lda);
  for (Index p = c0 / kPanel; p * kPanel < c1; ++p) {
    const T* B = packed + p * packed_k<T>(K) * 2 * kPanel;
    const Index ncols = (c1 - p * kPanel) < kPanel ? (c1 - p * kPanel) : kPanel;
    for (Index i = 0; i < m; i += kRows) {
      const Index mr = (m - i) < kRows ? (m - i) : kRows;
      float g[kRows][kPanel] = {}, u[kRows][kPanel] = {};
      for (Index k = 0; k < K; ++k) {
        for (Index r = 0; r < mr; ++r) {
          const float a = A[(i + r) * lda + k];
          for (Index j = 0; j < kPanel; ++j) {
            g[r][j] += a * widen(B[packed_offset<T>(k, j, 2 * kPanel)]);
            u[r][j] += a * widen(B[packed_offset<T>(k, kPanel + j, 2 * kPanel)]);
          }
        }
      }
      for (Index r = 0; r < mr; ++r)
        for (Index j = 0; j < ncols; ++j) {
          G[(i + r) * ldo + p * kPanel + j] = g[r][j];
          U[(i + r) * ldo + p * kPanel + j] = u[r][j];
        }
    }
  }
}

/// Y [m, ldy] columns [c0, c1) = A [m, K] times the packed [N, K] weight.
template <class T = float>
inline void matmul(const float* A, Index lda, Index m, Index K, const T* packed, Index N, Index c0,
                   Index c1, float* Y, Index ldy) {
  (void)N;
  for (Index p = c0 / kPanel; p * kPanel < c1; ++p) {
    const T* B = packed + p * packed_k<T>(K) * kPanel;
    const Index ncols = (c1 - p * kPanel) < kPanel ? (c1 - p * kPanel) : kPanel;
    for (Index i = 0; i < m; i += kRows) {
      const Index mr = (m - i) < kRows ? (m - i) : kRows;
      float y[kRows][kPanel] = {};
      for (Index k = 0; k < K; ++k) {
        for (Index r = 0; r < mr; ++r) {
          const float a = A[(i + r) * lda + k];
          for (Index j = 0; j < kPanel; ++j)
            y[r][j] += a * widen(B[packed_offset<T>(k, j, kPanel)]);
        }
      }
      for (Index r = 0; r < mr; ++r)
        for (Index j = 0; j < ncols; ++j) Y[(i + r) * ldy + p * kPanel + j] = y[r][j];
    }
  }
}

/// h = silu(g) · u, element-wise over n values (h may alias g).
inline void silu_mul_f32(const float* g, const float* u, float* h, Index n) {
  for (Index i = 0; i < n; ++i) h[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

}  // namespace scalar
}  // namespace kernels
MOEKIT_NAMESPACE_END
