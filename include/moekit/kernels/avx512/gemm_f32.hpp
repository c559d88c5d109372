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

#include "../packing.hpp"

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

template <int MR, class T>
MOEKIT_TARGET_AVX512 inline void gate_up_tile(const float* A, Index lda, Index K, const T* B, float* G,
                                              float* U, Index ldo, __mmask16 mask) {
  __m512 g[MR], u[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) g[r] = u[r] = _mm512_setzero_ps();
  for (Index k = 0; k < K; ++k) {
    const __m512 bg = load16(B + k * 32), bu = load16(B + k * 32 + 16);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512 a = _mm512_set1_ps(A[r * lda + k]);
      g[r] = _mm512_fmadd_ps(a, bg, g[r]);
      u[r] = _mm512_fmadd_ps(a, bu, u[r]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    _mm512_mask_storeu_ps(G + r * ldo, mask, g[r]);
    _mm512_mask_storeu_ps(U + r * ldo, mask, u[r]);
  }
}

template <int MR, class T>
MOEKIT_TARGET_AVX512 inline void down_tile2(const float* A, Index lda, Index K, const T* B0, const T* B1,
                                            float* Y, Index ldy, __mmask16 mask1) {
  __m512 y0[MR], y1[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) y0[r] = y1[r] = _mm512_setzero_ps();
  for (Index k = 0; k < K; ++k) {
    const __m512 b0 = load16(B0 + k * 16), b1 = load16(B1 + k * 16);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      const __m512 a = _mm512_set1_ps(A[r * lda + k]);
      y0[r] = _mm512_fmadd_ps(a, b0, y0[r]);
      y1[r] = _mm512_fmadd_ps(a, b1, y1[r]);
    }
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) {
    _mm512_storeu_ps(Y + r * ldy, y0[r]);
    _mm512_mask_storeu_ps(Y + r * ldy + 16, mask1, y1[r]);
  }
}

template <int MR, class T>
MOEKIT_TARGET_AVX512 inline void down_tile1(const float* A, Index lda, Index K, const T* B0, float* Y,
                                            Index ldy, __mmask16 mask) {
  __m512 y0[MR];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) y0[r] = _mm512_setzero_ps();
  for (Index k = 0; k < K; ++k) {
    const __m512 b0 = load16(B0 + k * 16);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) y0[r] = _mm512_fmadd_ps(_mm512_set1_ps(A[r * lda + k]), b0, y0[r]);
  }
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r) _mm512_mask_storeu_ps(Y + r * ldy, mask, y0[r]);
}

// Calls F<mr> for a row count 1..kRows known only at run time.
#define MOEKIT_AVX512_ROWS(mr, CALL)       \
  switch (mr) {                            \
    case 12: CALL(12); break;              \
    case 11: CALL(11); break;              \
    case 10: CALL(10); break;              \
    case 9: CALL(9); break;                \
    case 8: CALL(8); break;                \
    case 7: CALL(7); break;                \
    case 6: CALL(6); break;                \
    case 5: CALL(5); break;                \
    case 4: CALL(4); break;                \
    case 3: CALL(3); break;                \
    case 2: CALL(2); break;                \
    default: CALL(1); break;               \
  }

template <class T = float>
MOEKIT_TARGET_AVX512 inline void gate_up(const float* A, Index lda, Index m, Index K, const T* packed,
                                         Index f, Index c0, Index c1, float* G, float* U, Index ldo) {
  (void)f;
  for (Index p = c0 / kPanel; p * kPanel < c1; ++p) {
    const T* B = packed + p * K * 2 * kPanel;
    const __mmask16 mask = column_mask(c1 - p * kPanel);
    for (Index i = 0; i < m; i += kRows) {
      const Index mr = (m - i) < kRows ? (m - i) : kRows;
      const float* a = A + i * lda;
      float* g = G + i * ldo + p * kPanel;
      float* u = U + i * ldo + p * kPanel;
#define MOEKIT_CALL(R) gate_up_tile<R>(a, lda, K, B, g, u, ldo, mask)
      MOEKIT_AVX512_ROWS(mr, MOEKIT_CALL)
#undef MOEKIT_CALL
    }
  }
}

template <class T = float>
MOEKIT_TARGET_AVX512 inline void matmul(const float* A, Index lda, Index m, Index K, const T* packed,
                                        Index N, Index c0, Index c1, float* Y, Index ldy) {
  (void)N;
  Index p = c0 / kPanel;
  const Index p_end = (c1 + kPanel - 1) / kPanel;
  for (; p + 2 <= p_end; p += 2) {  // two panels: 32 columns
    const T* B0 = packed + p * K * kPanel;
    const T* B1 = B0 + K * kPanel;
    const __mmask16 mask1 = column_mask(c1 - (p + 1) * kPanel);
    for (Index i = 0; i < m; i += kRows) {
      const Index mr = (m - i) < kRows ? (m - i) : kRows;
      const float* a = A + i * lda;
      float* y = Y + i * ldy + p * kPanel;
#define MOEKIT_CALL(R) down_tile2<R>(a, lda, K, B0, B1, y, ldy, mask1)
      MOEKIT_AVX512_ROWS(mr, MOEKIT_CALL)
#undef MOEKIT_CALL
    }
  }
  if (p < p_end) {
    const T* B0 = packed + p * K * kPanel;
    const __mmask16 mask = column_mask(c1 - p * kPanel);
    for (Index i = 0; i < m; i += kRows) {
      const Index mr = (m - i) < kRows ? (m - i) : kRows;
      const float* a = A + i * lda;
      float* y = Y + i * ldy + p * kPanel;
#define MOEKIT_CALL(R) down_tile1<R>(a, lda, K, B0, y, ldy, mask)
      MOEKIT_AVX512_ROWS(mr, MOEKIT_CALL)
#undef MOEKIT_CALL
    }
  }
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
    _mm512_storeu_ps(h + i, _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(one, e)), _mm512_loadu_ps(u + i)));
  }
  if (i < n) {
    const __mmask16 m = column_mask(n - i);
    const __m512 gv = _mm512_maskz_loadu_ps(m, g + i);
    const __m512 e = exp_ps(_mm512_sub_ps(_mm512_setzero_ps(), gv));
    _mm512_mask_storeu_ps(h + i, m, _mm512_mul_ps(_mm512_div_ps(gv, _mm512_add_ps(one, e)), _mm512_maskz_loadu_ps(m, u + i)));
  }
}

}  // namespace avx512
}  // namespace kernels
MOEKIT_NAMESPACE_END

MOEKIT_SIMD_WARNINGS_POP

#endif  // MOEKIT_HAVE_X86_KERNELS
