// SPDX-License-Identifier: MIT
// Per-function target attributes: each SIMD kernel carries the instruction
// sets it needs, so the headers compile with no -march flag and the runtime
// dispatch (dispatch.hpp) decides what runs.
#pragma once

#include "cpu_features.hpp"

#if defined(MOEKIT_ARCH_X86) && (defined(__GNUC__) || defined(__clang__)) && \
    !defined(MOEKIT_STATIC_DISPATCH)
#define MOEKIT_HAVE_X86_KERNELS 1
#define MOEKIT_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))
#define MOEKIT_TARGET_AVX512 \
  __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx2,fma,f16c")))
#define MOEKIT_TARGET_AVX512_BF16                                                 \
  __attribute__((                                                                 \
      target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,avx512vnni,avx2,fma," \
             "f16c")))
#include <immintrin.h>
#endif

// GCC 12's own AVX-512 intrinsics read an intentionally undefined vector,
// which -W(maybe-)uninitialized reports once inlined into our kernels; the
// warning is about the system header, so kernel files silence it locally.
#if defined(__GNUC__) && !defined(__clang__)
#define MOEKIT_SIMD_WARNINGS_PUSH                                                            \
  _Pragma("GCC diagnostic push") _Pragma("GCC diagnostic ignored \"-Wmaybe-uninitialized\"") \
      _Pragma("GCC diagnostic ignored \"-Wuninitialized\"")
#define MOEKIT_SIMD_WARNINGS_POP _Pragma("GCC diagnostic pop")
#else
#define MOEKIT_SIMD_WARNINGS_PUSH
#define MOEKIT_SIMD_WARNINGS_POP
#endif

#if defined(MOEKIT_ARCH_ARM64) && defined(__ARM_NEON)
#define MOEKIT_HAVE_NEON_KERNELS 1
#include <arm_neon.h>
// The int8 dot-product kernels (neon/gemm_int8_dot.hpp): built as they are
// where the compiler targets DotProd, with a target attribute on GCC
// otherwise (run only where cpu_features() finds SDOT); clang 14 cannot use
// the intrinsics under a target attribute, so there they need -march with
// +dotprod (Apple's arm64 targets include it).
#if defined(__ARM_FEATURE_DOTPROD)
#define MOEKIT_HAVE_NEON_DOTPROD 1
#define MOEKIT_TARGET_NEON_DOTPROD
#elif defined(__GNUC__) && !defined(__clang__) && !defined(MOEKIT_STATIC_DISPATCH)
#define MOEKIT_HAVE_NEON_DOTPROD 1
#define MOEKIT_TARGET_NEON_DOTPROD __attribute__((target("arch=armv8.2-a+dotprod")))
#endif
// The same for the BF16 kernels (neon/gemm_bf16_dot.hpp, BFDOT).
#if defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC)
#define MOEKIT_HAVE_NEON_BF16 1
#define MOEKIT_TARGET_NEON_BF16
#elif defined(__GNUC__) && !defined(__clang__) && !defined(MOEKIT_STATIC_DISPATCH)
#define MOEKIT_HAVE_NEON_BF16 1
#define MOEKIT_TARGET_NEON_BF16 __attribute__((target("arch=armv8.2-a+bf16")))
#endif
#endif
