// SPDX-License-Identifier: MIT
// CPU feature detection, done once per process.
//
// x86-64: CPUID for the instruction sets and XGETBV for whether the OS saves
// the YMM / ZMM state (an AVX-512 CPU under an OS that does not enable it must
// not run AVX-512 code). AArch64: NEON (Advanced SIMD) is architectural; the
// int8 dot product (SDOT, Armv8.2 DotProd) and BF16 (BFDOT, Armv8.6) are
// asked of the OS (Linux: the HWCAP_ASIMDDP and HWCAP2_BF16 bits of the
// auxiliary vector) unless the compiler targets them.
// AMX (Intel's tile unit) needs one more step on Linux: the kernel enables
// its 8 KiB of tile state per process only when asked (arch_prctl
// ARCH_REQ_XCOMP_PERM), which detection does once; elsewhere AMX is not used.
// Other targets: nothing, the scalar kernels run.
#pragma once

#include <cstdint>

#include "../config.hpp"

#if defined(__x86_64__) || defined(_M_X64) || defined(__i386__)
#define MOEKIT_ARCH_X86 1
#if defined(__GNUC__) || defined(__clang__)
#include <cpuid.h>
#endif
#if defined(__linux__) && defined(__x86_64__)
#include <sys/syscall.h>
#include <unistd.h>
#endif
#elif defined(__aarch64__) || defined(_M_ARM64)
#define MOEKIT_ARCH_ARM64 1
#if defined(__linux__)
#include <sys/auxv.h>
#endif
#endif

MOEKIT_NAMESPACE_BEGIN

struct CpuFeatures {
  bool avx2 = false, fma = false, f16c = false;
  bool avx512f = false, avx512bw = false, avx512vl = false, avx512dq = false;
  bool avx512bf16 = false, avx512vnni = false;
  /// vdpbf16ps retires at half the FP32 FMA rate: Intel's AVX-512 BF16 cores
  /// to date (a Sapphire-Rapids-class Xeon measured 86 against 173 GFLOP/s per
  /// core), where AMD's run it at twice. Widening bf16 to f32 FMAs is then
  /// the faster bf16 path (see bf16_dot_enabled).
  bool bf16_dot_half_rate = false;
  /// AMX-TILE and AMX-BF16, with the OS's permission to use the tile data
  /// (Linux: granted to this process at detection).
  bool amx_bf16 = false;
  /// AMX-INT8 (tdpbusd and kin) as well, under the same permission. moekit's
  /// kernels do not use it (a product over one 32-input scale group costs as
  /// much as a bf16 one); bench_kernels times it.
  bool amx_int8 = false;
  bool neon = false;
  bool neon_dotprod = false;  ///< SDOT / UDOT (Armv8.2 DotProd)
  bool neon_bf16 = false;     ///< BFDOT and the other Armv8.6 BF16 instructions
};

namespace detail {

#if defined(MOEKIT_ARCH_X86) && (defined(__GNUC__) || defined(__clang__))
inline std::uint64_t xgetbv0() noexcept {
  std::uint32_t eax = 0, edx = 0;
  __asm__ volatile("xgetbv" : "=a"(eax), "=d"(edx) : "c"(0));
  return (static_cast<std::uint64_t>(edx) << 32) | eax;
}

// Asks Linux for the AMX tile data state (granted once per process, to every
// thread); false where the kernel refuses or is too old (before 5.16).
inline bool request_amx_permission() noexcept {
#if defined(__linux__) && defined(__x86_64__) && defined(SYS_arch_prctl)
  constexpr long kReqXcompPerm = 0x1023, kXfeatureTileData = 18;
  return syscall(SYS_arch_prctl, kReqXcompPerm, kXfeatureTileData) == 0;
#else
  return false;
#endif
}

inline CpuFeatures detect_cpu_features() noexcept {
  CpuFeatures f;
  unsigned a = 0, b = 0, c = 0, d = 0;
  if (!__get_cpuid(1, &a, &b, &c, &d)) return f;
  const bool osxsave = (c >> 27) & 1u, avx = (c >> 28) & 1u;
  const bool fma = (c >> 12) & 1u, f16c = (c >> 29) & 1u;
  if (!osxsave || !avx) return f;
  const std::uint64_t xcr0 = xgetbv0();
  const bool os_ymm = (xcr0 & 0x6u) == 0x6u;    // SSE + AVX state
  const bool os_zmm = (xcr0 & 0xe6u) == 0xe6u;  // + opmask, ZMM_Hi256, Hi16_ZMM
  if (!os_ymm) return f;
  unsigned max_leaf = __get_cpuid_max(0, nullptr);
  if (max_leaf < 7) return f;
  __cpuid_count(7, 0, a, b, c, d);
  const unsigned d7 = d;
  f.avx2 = (b >> 5) & 1u;
  f.fma = fma;
  f.f16c = f16c;
  if (os_zmm) {
    f.avx512f = (b >> 16) & 1u;
    f.avx512dq = (b >> 17) & 1u;
    f.avx512bw = (b >> 30) & 1u;
    f.avx512vl = (b >> 31) & 1u;
    f.avx512vnni = (c >> 11) & 1u;
    unsigned a1 = 0, b1 = 0, c1 = 0, d1 = 0;
    __cpuid_count(7, 1, a1, b1, c1, d1);
    f.avx512bf16 = (a1 >> 5) & 1u;
  }
  // Vendor string of leaf 0, in EBX, EDX, ECX: "Genu" "ineI" "ntel".
  __cpuid(0, a, b, c, d);
  const bool intel = b == 0x756e6547u && d == 0x49656e69u && c == 0x6c65746eu;
  f.bf16_dot_half_rate = f.avx512bf16 && intel;
  // AMX: CPUID.7.0 EDX bits 22 (AMX-BF16) and 24 (AMX-TILE); XCR0 bits 17 and
  // 18 (tile configuration and data state) enabled by the OS.
  const bool amx_cpu = os_zmm && ((d7 >> 22) & 1u) && ((d7 >> 24) & 1u);
  const bool os_tiles = (xcr0 & 0x60000u) == 0x60000u;
  f.amx_bf16 = amx_cpu && os_tiles && request_amx_permission();
  f.amx_int8 = f.amx_bf16 && ((d7 >> 25) & 1u);  // CPUID.7.0 EDX bit 25
  return f;
}
#elif defined(MOEKIT_ARCH_ARM64)
inline CpuFeatures detect_cpu_features() noexcept {
  CpuFeatures f;
  f.neon = true;
#if defined(__ARM_FEATURE_DOTPROD)
  f.neon_dotprod = true;  // every CPU this build runs on has it
#elif defined(__linux__) && defined(AT_HWCAP)
  f.neon_dotprod = (getauxval(AT_HWCAP) >> 20) & 1u;  // HWCAP_ASIMDDP
#endif
#if defined(__ARM_FEATURE_BF16_VECTOR_ARITHMETIC)
  f.neon_bf16 = true;
#elif defined(__linux__) && defined(AT_HWCAP2)
  f.neon_bf16 = (getauxval(AT_HWCAP2) >> 14) & 1u;    // HWCAP2_BF16
#endif
  return f;
}
#else
inline CpuFeatures detect_cpu_features() noexcept { return CpuFeatures(); }
#endif

}  // namespace detail

/// The features of this CPU (and OS), detected on first call.
inline const CpuFeatures& cpu_features() noexcept {
  static const CpuFeatures f = detail::detect_cpu_features();
  return f;
}

MOEKIT_NAMESPACE_END
