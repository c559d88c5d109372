// SPDX-License-Identifier: MIT
// Machine limits measured by small kernels: FP32 FMA peak, BF16 dot-product
// peak, INT8 dot-product (VNNI, SDOT) peak, AMX BF16 tile peak and memory read
// bandwidth, so benchmark results can be stated as a fraction of what this
// machine can do (moekit roofline). x86 and NEON.
//
// The vector loops keep 24 independent accumulators in registers (enough to
// cover FMA latency x throughput on current cores), the tile loop six
// accumulator tiles; none touches memory. The bandwidth loop sums a buffer
// far larger than the caches.
#pragma once

#include <chrono>
#include <cstdint>
#include <vector>

#include "../core/aligned_buffer.hpp"
#include "dispatch.hpp"
#include "target.hpp"

MOEKIT_SIMD_WARNINGS_PUSH
MOEKIT_NAMESPACE_BEGIN
namespace kernels {
namespace detail {

#ifdef MOEKIT_HAVE_X86_KERNELS
MOEKIT_TARGET_AVX512 inline float fma_loop_avx512(std::int64_t iters) {
  __m512 acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = _mm512_set1_ps(0.001f * static_cast<float>(i));
  const __m512 a = _mm512_set1_ps(0.999999f), b = _mm512_set1_ps(1e-7f);
  for (std::int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_fmadd_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < 24; ++i) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}
MOEKIT_TARGET_AVX2 inline float fma_loop_avx2(std::int64_t iters) {
  __m256 acc[12];
  for (int i = 0; i < 12; ++i) acc[i] = _mm256_set1_ps(0.001f * static_cast<float>(i));
  const __m256 a = _mm256_set1_ps(0.999999f), b = _mm256_set1_ps(1e-7f);
  for (std::int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 12
    for (int i = 0; i < 12; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  }
  alignas(32) float out[8];
  __m256 s = acc[0];
  for (int i = 1; i < 12; ++i) s = _mm256_add_ps(s, acc[i]);
  _mm256_store_ps(out, s);
  return out[0] + out[7];
}
MOEKIT_TARGET_AVX512_BF16 inline float bf16_dot_loop(std::int64_t iters) {
  __m512 acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = _mm512_setzero_ps();
  const __m512bh a = (__m512bh)_mm512_set1_epi16(0x3f80), b = (__m512bh)_mm512_set1_epi16(0x3380);
  for (std::int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) acc[i] = _mm512_dpbf16_ps(acc[i], a, b);
  }
  __m512 s = acc[0];
  for (int i = 1; i < 24; ++i) s = _mm512_add_ps(s, acc[i]);
  return _mm512_reduce_add_ps(s);
}
MOEKIT_TARGET_AVX512_BF16 inline float int8_dot_loop(std::int64_t iters) {
  __m512i acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = _mm512_setzero_si512();
  const __m512i a = _mm512_set1_epi8(3), b = _mm512_set1_epi8(-2);
  for (std::int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) acc[i] = avx512_vnni::dpbusd(acc[i], a, b);
  }
  // Checksum in f32: the lanes wrap around (defined for vpdpbusd), and a
  // signed integer reduction of them could overflow.
  __m512 s = _mm512_cvtepi32_ps(acc[0]);
  for (int i = 1; i < 24; ++i) s = _mm512_add_ps(s, _mm512_cvtepi32_ps(acc[i]));
  return _mm512_reduce_add_ps(s);
}
MOEKIT_TARGET_AVX512 inline float read_sum_avx512(const float* p, std::size_t n) {
  __m512 a0 = _mm512_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  std::size_t i = 0;
  for (; i + 64 <= n; i += 64) {
    a0 = _mm512_add_ps(a0, _mm512_load_ps(p + i));
    a1 = _mm512_add_ps(a1, _mm512_load_ps(p + i + 16));
    a2 = _mm512_add_ps(a2, _mm512_load_ps(p + i + 32));
    a3 = _mm512_add_ps(a3, _mm512_load_ps(p + i + 48));
  }
  return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(a0, a1), _mm512_add_ps(a2, a3)));
}
MOEKIT_TARGET_AVX2 inline float read_sum_avx2(const float* p, std::size_t n) {
  __m256 a0 = _mm256_setzero_ps(), a1 = a0, a2 = a0, a3 = a0;
  std::size_t i = 0;
  for (; i + 32 <= n; i += 32) {
    a0 = _mm256_add_ps(a0, _mm256_load_ps(p + i));
    a1 = _mm256_add_ps(a1, _mm256_load_ps(p + i + 8));
    a2 = _mm256_add_ps(a2, _mm256_load_ps(p + i + 16));
    a3 = _mm256_add_ps(a3, _mm256_load_ps(p + i + 24));
  }
  alignas(32) float out[8];
  _mm256_store_ps(out, _mm256_add_ps(_mm256_add_ps(a0, a1), _mm256_add_ps(a2, a3)));
  return out[0] + out[1] + out[2] + out[3] + out[4] + out[5] + out[6] + out[7];
}
#endif

#ifdef MOEKIT_HAVE_NEON_KERNELS
inline float fma_loop_neon(std::int64_t iters) {
  float32x4_t acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = vdupq_n_f32(0.001f * static_cast<float>(i));
  const float32x4_t a = vdupq_n_f32(0.999999f), b = vdupq_n_f32(1e-7f);
  for (std::int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) acc[i] = vfmaq_f32(b, acc[i], a);
  }
  float32x4_t s = acc[0];
  for (int i = 1; i < 24; ++i) s = vaddq_f32(s, acc[i]);
  return vaddvq_f32(s);
}
#ifdef MOEKIT_HAVE_NEON_BF16
MOEKIT_TARGET_NEON_BF16 inline float bf16_dot_loop_neon(std::int64_t iters) {
  float32x4_t acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = vdupq_n_f32(0.0f);
  // The bit patterns (1.0, 2^-24) go through a general register: GCC 12 would
  // build the constant with an fp16 FMOV, which this target does not enable.
  volatile std::uint16_t one = 0x3f80, tiny = 0x3380;
  const bfloat16x8_t a = vreinterpretq_bf16_u16(vdupq_n_u16(one)),
                     b = vreinterpretq_bf16_u16(vdupq_n_u16(tiny));
  for (std::int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) acc[i] = vbfdotq_f32(acc[i], a, b);
  }
  float32x4_t s = acc[0];
  for (int i = 1; i < 24; ++i) s = vaddq_f32(s, acc[i]);
  return vaddvq_f32(s);
}
#endif
#ifdef MOEKIT_HAVE_NEON_DOTPROD
MOEKIT_TARGET_NEON_DOTPROD inline float int8_dot_loop_neon(std::int64_t iters) {
  int32x4_t acc[24];
  for (int i = 0; i < 24; ++i) acc[i] = vdupq_n_s32(0);
  const int8x16_t a = vdupq_n_s8(3), b = vdupq_n_s8(-2);
  for (std::int64_t it = 0; it < iters; ++it) {
#pragma GCC unroll 24
    for (int i = 0; i < 24; ++i) acc[i] = vdotq_s32(acc[i], a, b);
  }
  // Checksum in f32 (see int8_dot_loop).
  float32x4_t s = vcvtq_f32_s32(acc[0]);
  for (int i = 1; i < 24; ++i) s = vaddq_f32(s, vcvtq_f32_s32(acc[i]));
  return vaddvq_f32(s);
}
#endif
inline float read_sum_neon(const float* p, std::size_t n) {
  float32x4_t a0 = vdupq_n_f32(0.0f), a1 = a0, a2 = a0, a3 = a0;
  for (std::size_t i = 0; i + 16 <= n; i += 16) {
    a0 = vaddq_f32(a0, vld1q_f32(p + i));
    a1 = vaddq_f32(a1, vld1q_f32(p + i + 4));
    a2 = vaddq_f32(a2, vld1q_f32(p + i + 8));
    a3 = vaddq_f32(a3, vld1q_f32(p + i + 12));
  }
  return vaddvq_f32(vaddq_f32(vaddq_f32(a0, a1), vaddq_f32(a2, a3)));
}
#endif

}  // namespace detail

/// Sums n floats (64-byte aligned, n a multiple of 64) as fast as loads allow: the bandwidth probe.
inline float read_sum(Isa isa, const float* p, std::size_t n) {
#ifdef MOEKIT_HAVE_X86_KERNELS
  if (isa == Isa::avx512 || isa == Isa::avx512_bf16 || isa == Isa::avx512_amx)
    return detail::read_sum_avx512(p, n);
  if (isa == Isa::avx2) return detail::read_sum_avx2(p, n);
#endif
#ifdef MOEKIT_HAVE_NEON_KERNELS
  if (isa == Isa::neon) return detail::read_sum_neon(p, n);
#endif
  (void)isa;
  float s0 = 0, s1 = 0, s2 = 0, s3 = 0;
  for (std::size_t j = 0; j + 4 <= n; j += 4) {
    s0 += p[j];
    s1 += p[j + 1];
    s2 += p[j + 2];
    s3 += p[j + 3];
  }
  return s0 + s1 + s2 + s3;
}

/// The compute-peak loops: 24 independent accumulators, no loads.
enum class PeakLoop {
  fp32_fma,  ///< FMA: 2 flops per f32 lane (AVX2, AVX-512, NEON)
  bf16_dot,  ///< vdpbf16ps / BFDOT: 4 flops per f32 lane (AVX-512 BF16, NEON with BF16)
  int8_dot,  ///< vpdpbusd / SDOT: 8 integer ops per i32 lane (AVX-512 VNNI, NEON with DotProd)
  amx_bf16,  ///< tdpbf16ps: 16 x 16 x 32 multiply-adds per tile product (AMX)
};

/// Operations (FLOPs, or integer ops for int8_dot) of one iteration of a
/// peak loop on `isa`; 0 where the ISA lacks its instruction.
inline double peak_ops_per_iter(PeakLoop loop, Isa isa) noexcept {
  const bool avx512 = isa == Isa::avx512 || isa == Isa::avx512_bf16 || isa == Isa::avx512_amx;
  const bool avx512_bf16 = isa == Isa::avx512_bf16 || isa == Isa::avx512_amx;
  // NEON: 24 accumulators of 4 lanes; the dot loops where the CPU has them
  // (and this build has their kernels).
  const bool neon = isa == Isa::neon;
  const bool neon_bf16 = neon && table_for(isa).has_dot();
  const bool neon_int8 = neon && table_for(isa).has_int8_activations();
  switch (loop) {
    case PeakLoop::fp32_fma:
      return avx512 ? 24.0 * 16 * 2 : isa == Isa::avx2 ? 12.0 * 8 * 2 : neon ? 24.0 * 4 * 2 : 0.0;
    case PeakLoop::bf16_dot: return avx512_bf16 ? 24.0 * 16 * 4 : neon_bf16 ? 24.0 * 4 * 4 : 0.0;
    case PeakLoop::int8_dot: return avx512_bf16 ? 24.0 * 16 * 8 : neon_int8 ? 24.0 * 4 * 8 : 0.0;
    case PeakLoop::amx_bf16: return isa == Isa::avx512_amx ? 6.0 * 16 * 16 * 32 * 2 : 0.0;
  }
  return 0.0;
}

/// Runs a peak loop for `iters` iterations on the calling thread; returns a
/// checksum (keeps the work alive), 0 where peak_ops_per_iter is 0.
inline float run_peak_loop(PeakLoop loop, Isa isa, std::int64_t iters) {
#ifdef MOEKIT_HAVE_X86_KERNELS
  if (peak_ops_per_iter(loop, isa) > 0) {
    if (loop == PeakLoop::bf16_dot) return detail::bf16_dot_loop(iters);
    if (loop == PeakLoop::int8_dot) return detail::int8_dot_loop(iters);
    if (loop == PeakLoop::amx_bf16) return avx512_amx::peak_loop(iters);
    return isa == Isa::avx2 ? detail::fma_loop_avx2(iters) : detail::fma_loop_avx512(iters);
  }
#endif
#ifdef MOEKIT_HAVE_NEON_KERNELS
  if (peak_ops_per_iter(loop, isa) > 0) {
#ifdef MOEKIT_HAVE_NEON_BF16
    if (loop == PeakLoop::bf16_dot) return detail::bf16_dot_loop_neon(iters);
#endif
#ifdef MOEKIT_HAVE_NEON_DOTPROD
    if (loop == PeakLoop::int8_dot) return detail::int8_dot_loop_neon(iters);
#endif
    if (loop == PeakLoop::fp32_fma) return detail::fma_loop_neon(iters);
  }
#endif
  (void)loop;
  (void)isa;
  (void)iters;
  return 0.0f;
}

}  // namespace kernels
MOEKIT_NAMESPACE_END
MOEKIT_SIMD_WARNINGS_POP
