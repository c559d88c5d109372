// SPDX-License-Identifier: MIT
// int8 / int4 expert weights with group-wise scales, in the packed panel
// layout (packing.hpp).
//
// NOTE: a packed weight with W values per k-row (W = 16 for a plain panel,
// 32 for a gate + up panel) stores, per panel, K rows of W signed codes
// (int8: one byte each; int4: two per byte, even column in the low nibble,
// stored as code + 8) and, per group of kQuantGroup consecutive k and per
// column, one f32 scale. Symmetric quantisation: scale = max|w| / qmax over
// the group (qmax 127 or 7), code = round(w / scale). Quantising also writes
// the dequantised values code · scale back into the f32 master weights, so the
// reference and the kernels compute with exactly the same weights. The kernels
// dequantise one panel into an f32 buffer and run the f32 panel kernel on it.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "dispatch.hpp"
#include "packing.hpp"
#include "target.hpp"

MOEKIT_NAMESPACE_BEGIN
namespace kernels {

constexpr Index kQuantGroup = 32;

inline Index quant_groups(Index K) noexcept { return (K + kQuantGroup - 1) / kQuantGroup; }
/// Bytes of codes of one panel of K rows, W values per row, `bits` 8 or 4.
inline Index quant_panel_code_bytes(Index K, Index W, int bits) noexcept { return bits == 8 ? K * W : K * W / 2; }
/// Floats of scales of one panel.
inline Index quant_panel_scales(Index K, Index W) noexcept { return quant_groups(K) * W; }

/// Quantises the panel columns of `rows` source matrices (each [N, K], row
/// pointers src[s]), `per` = values per source per k-row (16), into codes and
/// scales of panel p, writing dequantised values back into the sources.
inline void quantize_panel(float* const* src, int nsrc, Index N, Index K, Index p, int bits, std::uint8_t* codes,
                           float* scales) {
  const Index W = nsrc * kPanel;
  const float qmax = bits == 8 ? 127.0f : 7.0f;
  for (Index g = 0; g < quant_groups(K); ++g) {
    const Index k0 = g * kQuantGroup, k1 = std::min(K, k0 + kQuantGroup);
    for (int s = 0; s < nsrc; ++s)
      for (Index j = 0; j < kPanel; ++j) {
        const Index n = p * kPanel + j, col = s * kPanel + j;
        float amax = 0.0f;
        if (n < N)
          for (Index k = k0; k < k1; ++k) amax = std::max(amax, std::fabs(src[s][n * K + k]));
        const float scale = amax > 0.0f ? amax / qmax : 0.0f;
        scales[g * W + col] = scale;
        for (Index k = k0; k < k1; ++k) {
          float q = 0.0f;
          if (n < N && scale > 0.0f) {
            q = std::nearbyint(src[s][n * K + k] / scale);
            q = std::max(-qmax, std::min(qmax, q));
            src[s][n * K + k] = q * scale;  // dequantised master
          } else if (n < N) {
            src[s][n * K + k] = 0.0f;
          }
          const auto code = static_cast<std::int8_t>(q);
          if (bits == 8) {
            codes[k * W + col] = static_cast<std::uint8_t>(code);
          } else {
            std::uint8_t& byte = codes[(k * W + col) / 2];
            const auto nib = static_cast<std::uint8_t>(code + 8);
            byte = (col % 2 == 0) ? static_cast<std::uint8_t>((byte & 0xf0u) | nib)
                                  : static_cast<std::uint8_t>((byte & 0x0fu) | (nib << 4));
          }
        }
      }
  }
}

namespace detail {

inline void dequant_panel_scalar(const std::uint8_t* codes, const float* scales, Index K, Index W, int bits,
                                 float* out) noexcept {
  for (Index k = 0; k < K; ++k) {
    const float* s = scales + (k / kQuantGroup) * W;
    for (Index j = 0; j < W; ++j) {
      int q;
      if (bits == 8) {
        q = static_cast<std::int8_t>(codes[k * W + j]);
      } else {
        const std::uint8_t b = codes[(k * W + j) / 2];
        q = static_cast<int>(j % 2 == 0 ? (b & 0x0fu) : (b >> 4)) - 8;
      }
      out[k * W + j] = static_cast<float>(q) * s[j];
    }
  }
}

#ifdef MOEKIT_HAVE_X86_KERNELS
MOEKIT_SIMD_WARNINGS_PUSH
MOEKIT_TARGET_AVX512 inline void dequant_panel_avx512(const std::uint8_t* codes, const float* scales, Index K,
                                                      Index W, int bits, float* out) {
  const __m128i low = _mm_set1_epi8(0x0f);
  for (Index k = 0; k < K; ++k) {
    const float* s = scales + (k / kQuantGroup) * W;
    for (Index j = 0; j < W; j += 16) {
      __m512i v;
      if (bits == 8) {
        v = _mm512_cvtepi8_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + k * W + j)));
      } else {
        const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + (k * W + j) / 2));
        const __m128i lo = _mm_and_si128(b, low), hi = _mm_and_si128(_mm_srli_epi16(b, 4), low);
        v = _mm512_sub_epi32(_mm512_cvtepu8_epi32(_mm_unpacklo_epi8(lo, hi)), _mm512_set1_epi32(8));
      }
      _mm512_storeu_ps(out + k * W + j, _mm512_mul_ps(_mm512_cvtepi32_ps(v), _mm512_loadu_ps(s + j)));
    }
  }
}
MOEKIT_TARGET_AVX2 inline void dequant_panel_avx2(const std::uint8_t* codes, const float* scales, Index K, Index W,
                                                  int bits, float* out) {
  const __m128i low = _mm_set1_epi8(0x0f);
  for (Index k = 0; k < K; ++k) {
    const float* s = scales + (k / kQuantGroup) * W;
    for (Index j = 0; j < W; j += 16) {
      __m128i bytes;  // 16 codes as signed bytes
      if (bits == 8) {
        bytes = _mm_loadu_si128(reinterpret_cast<const __m128i*>(codes + k * W + j));
      } else {
        const __m128i b = _mm_loadl_epi64(reinterpret_cast<const __m128i*>(codes + (k * W + j) / 2));
        const __m128i lo = _mm_and_si128(b, low), hi = _mm_and_si128(_mm_srli_epi16(b, 4), low);
        bytes = _mm_sub_epi8(_mm_unpacklo_epi8(lo, hi), _mm_set1_epi8(8));
      }
      const __m256 a = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(bytes));
      const __m256 b = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_srli_si128(bytes, 8)));
      _mm256_storeu_ps(out + k * W + j, _mm256_mul_ps(a, _mm256_loadu_ps(s + j)));
      _mm256_storeu_ps(out + k * W + j + 8, _mm256_mul_ps(b, _mm256_loadu_ps(s + j + 8)));
    }
  }
}
MOEKIT_SIMD_WARNINGS_POP
#endif

}  // namespace detail

/// Dequantises one panel (K rows of W values) into `out` [K * W] f32 with the active ISA.
inline void dequant_panel(Isa isa, const std::uint8_t* codes, const float* scales, Index K, Index W, int bits,
                          float* out) {
#ifdef MOEKIT_HAVE_X86_KERNELS
  if (isa == Isa::avx512 || isa == Isa::avx512_bf16) return detail::dequant_panel_avx512(codes, scales, K, W, bits, out);
  if (isa == Isa::avx2) return detail::dequant_panel_avx2(codes, scales, K, W, bits, out);
#endif
  (void)isa;
  detail::dequant_panel_scalar(codes, scales, K, W, bits, out);
}

}  // namespace kernels
MOEKIT_NAMESPACE_END
