// SPDX-License-Identifier: MIT
// NEON (AArch64 Advanced SIMD) f32 kernels over packed weights (packing.hpp).
//
// NOTE: 32 q registers of 4 floats. Gate/up tiles are 2 rows x (16 + 16)
// columns, down tiles 4 rows x 16 columns: 16 accumulators each. NEON is
// baseline on AArch64, so no target attribute is needed.
#pragma once

#include "../target.hpp"

#ifdef MOEKIT_HAVE_NEON_KERNELS
#include <cmath>

#include "../packing.hpp"

MOEKIT_NAMESPACE_BEGIN
namespace kernels {
namespace neon {

template <int MR>
inline void gate_up_tile(const float* A, Index lda, Index K, const float* B, float* G, float* U, Index ldo) {
  float32x4_t g[MR][4], u[MR][4];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < 4; ++q) g[r][q] = u[r][q] = vdupq_n_f32(0.0f);
  for (Index k = 0; k < K; ++k) {
    const float* b = B + k * 32;
    float32x4_t bg[4], bu[4];
    for (int q = 0; q < 4; ++q) {
      bg[q] = vld1q_f32(b + 4 * q);
      bu[q] = vld1q_f32(b + 16 + 4 * q);
    }
    for (int r = 0; r < MR; ++r) {
      const float a = A[r * lda + k];
      for (int q = 0; q < 4; ++q) {
        g[r][q] = vfmaq_n_f32(g[r][q], bg[q], a);
        u[r][q] = vfmaq_n_f32(u[r][q], bu[q], a);
      }
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < 4; ++q) {
      vst1q_f32(G + r * ldo + 4 * q, g[r][q]);
      vst1q_f32(U + r * ldo + 4 * q, u[r][q]);
    }
}

template <int MR>
inline void down_tile(const float* A, Index lda, Index K, const float* B, float* Y, Index ldy) {
  float32x4_t y[MR][4];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < 4; ++q) y[r][q] = vdupq_n_f32(0.0f);
  for (Index k = 0; k < K; ++k) {
    float32x4_t b[4];
    for (int q = 0; q < 4; ++q) b[q] = vld1q_f32(B + k * 16 + 4 * q);
    for (int r = 0; r < MR; ++r) {
      const float a = A[r * lda + k];
      for (int q = 0; q < 4; ++q) y[r][q] = vfmaq_n_f32(y[r][q], b[q], a);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < 4; ++q) vst1q_f32(Y + r * ldy + 4 * q, y[r][q]);
}

inline void gate_up(const float* A, Index lda, Index m, Index K, const float* packed, Index f, Index c0, Index c1,
                        float* G, float* U, Index ldo) {
  (void)f;
  float tg[2 * kPanel], tu[2 * kPanel];
  for (Index p = c0 / kPanel; p * kPanel < c1; ++p) {
    const float* B = packed + p * K * 2 * kPanel;
    const Index ncols = (c1 - p * kPanel) < kPanel ? (c1 - p * kPanel) : kPanel;
    const bool full = ncols == kPanel;
    for (Index i = 0; i < m; i += 2) {
      const Index mr = (m - i) < 2 ? (m - i) : 2;
      float* g = full ? G + i * ldo + p * kPanel : tg;
      float* u = full ? U + i * ldo + p * kPanel : tu;
      const Index ld = full ? ldo : kPanel;
      if (mr == 2) gate_up_tile<2>(A + i * lda, lda, K, B, g, u, ld);
      else gate_up_tile<1>(A + i * lda, lda, K, B, g, u, ld);
      if (!full)
        for (Index r = 0; r < mr; ++r)
          for (Index j = 0; j < ncols; ++j) {
            G[(i + r) * ldo + p * kPanel + j] = tg[r * kPanel + j];
            U[(i + r) * ldo + p * kPanel + j] = tu[r * kPanel + j];
          }
    }
  }
}

inline void matmul(const float* A, Index lda, Index m, Index K, const float* packed, Index N, Index c0, Index c1,
                       float* Y, Index ldy) {
  (void)N;
  float ty[4 * kPanel];
  for (Index p = c0 / kPanel; p * kPanel < c1; ++p) {
    const float* B = packed + p * K * kPanel;
    const Index ncols = (c1 - p * kPanel) < kPanel ? (c1 - p * kPanel) : kPanel;
    const bool full = ncols == kPanel;
    for (Index i = 0; i < m; i += 4) {
      const Index mr = (m - i) < 4 ? (m - i) : 4;
      float* y = full ? Y + i * ldy + p * kPanel : ty;
      const Index ld = full ? ldy : kPanel;
      switch (mr) {
        case 4: down_tile<4>(A + i * lda, lda, K, B, y, ld); break;
        case 3: down_tile<3>(A + i * lda, lda, K, B, y, ld); break;
        case 2: down_tile<2>(A + i * lda, lda, K, B, y, ld); break;
        default: down_tile<1>(A + i * lda, lda, K, B, y, ld); break;
      }
      if (!full)
        for (Index r = 0; r < mr; ++r)
          for (Index j = 0; j < ncols; ++j) Y[(i + r) * ldy + p * kPanel + j] = ty[r * kPanel + j];
    }
  }
}

inline void silu_mul_f32(const float* g, const float* u, float* h, Index n) {
  for (Index i = 0; i < n; ++i) h[i] = g[i] / (1.0f + std::exp(-g[i])) * u[i];
}

}  // namespace neon
}  // namespace kernels
MOEKIT_NAMESPACE_END

#endif  // MOEKIT_HAVE_NEON_KERNELS
