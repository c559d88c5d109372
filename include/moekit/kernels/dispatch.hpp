// SPDX-License-Identifier: MIT
// Runtime ISA dispatch: which kernels run, chosen once from the CPU and capped
// by the environment (MOEKIT_MAX_ISA) or the API (set_max_isa).
//
//   Isa::scalar       plain C++, every target
//   Isa::avx2         AVX2 + FMA + F16C
//   Isa::avx512       AVX-512 F/BW/VL/DQ
//   Isa::avx512_bf16  AVX-512 with BF16 and VNNI
//   Isa::avx512_amx   the above and AMX-BF16 tiles (bf16 / int8 / int4 experts on the tile unit)
//   Isa::neon         AArch64 Advanced SIMD
// The active ISA is min(best the CPU and OS support, MOEKIT_MAX_ISA,
// set_max_isa()). Tests run every available ISA by capping it
// (available_isas()); benchmarks report active_isa().
#pragma once

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <vector>

#include "../core/error.hpp"
#include "../core/scratch_arena.hpp"
#include "avx2/gemm_f32.hpp"
#include "avx2/gemm_int8_act.hpp"
#include "avx512/gemm_bf16_amx.hpp"
#include "avx512/gemm_bf16_dot.hpp"
#include "avx512/gemm_f32.hpp"
#include "avx512/gemm_int8_vnni.hpp"
#include "cpu_features.hpp"
#include "neon/gemm_bf16_dot.hpp"
#include "neon/gemm_f32.hpp"
#include "neon/gemm_int8_dot.hpp"
#include "quantized.hpp"
#include "rows.hpp"
#include "scalar/gemm_f32.hpp"

MOEKIT_NAMESPACE_BEGIN

enum class Isa : int {
  scalar = 0,
  avx2 = 1,
  avx512 = 2,
  avx512_bf16 = 3,
  avx512_amx = 4,
  neon = 5
};

inline const char* isa_name(Isa isa) noexcept {
  switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    case Isa::avx512_bf16: return "avx512_bf16";
    case Isa::avx512_amx: return "avx512_amx";
    case Isa::neon: return "neon";
  }
  return "?";
}

/// Parses an ISA name (as isa_name prints it); throws moekit::Error otherwise.
inline Isa parse_isa(const std::string& s) {
  for (Isa i : {Isa::scalar, Isa::avx2, Isa::avx512, Isa::avx512_bf16, Isa::avx512_amx, Isa::neon})
    if (s == isa_name(i)) return i;
  detail::fail("isa: expected one of scalar, avx2, avx512, avx512_bf16, avx512_amx, neon, got \"",
               s, "\"");
}

namespace detail {

// Capability rank within an architecture (neon and the x86 tiers never mix).
inline int isa_rank(Isa isa) noexcept { return isa == Isa::neon ? 1 : static_cast<int>(isa); }

inline Isa best_supported_isa() noexcept {
  const CpuFeatures& f = cpu_features();
#if defined(MOEKIT_HAVE_X86_KERNELS)
  const bool avx512 = f.avx512f && f.avx512bw && f.avx512vl && f.avx512dq && f.avx2 && f.fma;
  if (avx512 && f.avx512bf16 && f.avx512vnni)
    return f.amx_bf16 ? Isa::avx512_amx : Isa::avx512_bf16;
  if (avx512) return Isa::avx512;
  if (f.avx2 && f.fma && f.f16c) return Isa::avx2;
#elif defined(MOEKIT_HAVE_NEON_KERNELS)
  if (f.neon) return Isa::neon;
#endif
  (void)f;
  return Isa::scalar;
}

// The MOEKIT_MAX_ISA cap, read once (-1: none). An unknown name is ignored
// with a warning rather than aborting the user's program.
inline int env_cap() noexcept {
  static const int cap = [] {
    const char* s = std::getenv("MOEKIT_MAX_ISA");
    if (!s || !*s) return -1;
    for (Isa i :
         {Isa::scalar, Isa::avx2, Isa::avx512, Isa::avx512_bf16, Isa::avx512_amx, Isa::neon})
      if (std::string(s) == isa_name(i)) return isa_rank(i);
    std::fprintf(stderr,
                 "moekit: ignoring MOEKIT_MAX_ISA=%s (expected scalar, avx2, avx512, avx512_bf16, "
                 "avx512_amx, neon)\n",
                 s);
    return -1;
  }();
  return cap;
}

inline std::atomic<int>& api_cap() noexcept {
  static std::atomic<int> cap{-1};
  return cap;
}

}  // namespace detail

/// The best ISA this CPU and OS support (ignoring any cap).
inline Isa detected_isa() noexcept {
  static const Isa isa = detail::best_supported_isa();
  return isa;
}

/// Caps the ISA for every later kernel call (Isa::scalar forces plain C++).
/// Affects the whole process; safe to call between forwards, not during one.
inline void set_max_isa(Isa isa) noexcept { detail::api_cap().store(detail::isa_rank(isa)); }
/// Removes the API cap (MOEKIT_MAX_ISA still applies).
inline void clear_max_isa() noexcept { detail::api_cap().store(-1); }

/// Whether bf16 dot products (vdpbf16ps, BFDOT, AMX tiles) run where the ISA
/// has them and Bf16Math asks for them (see Bf16Math::dot). automatic: yes on
/// AMX, and elsewhere unless the CPU runs vdpbf16ps at half the FP32 FMA rate
/// (CpuFeatures::bf16_dot_half_rate: Intel), where the widening f32 kernels
/// are faster (olmoe bf16 T = 512 on a 16-core Xeon: 1.68x on one thread,
/// 1.37x on 16).
/// on / off: always / never (off computes bf16 experts as Bf16Math::widen).
enum class Bf16Dot : int { automatic = 0, on = 1, off = 2 };

namespace detail {

// MOEKIT_BF16_DOT (auto, on, off), read once (-1: unset). An unknown value
// is ignored with a warning, as MOEKIT_MAX_ISA.
inline int env_bf16_dot() noexcept {
  static const int policy = [] {
    const char* s = std::getenv("MOEKIT_BF16_DOT");
    if (!s || !*s) return -1;
    const std::string name(s);
    if (name == "auto") return static_cast<int>(Bf16Dot::automatic);
    if (name == "on") return static_cast<int>(Bf16Dot::on);
    if (name == "off") return static_cast<int>(Bf16Dot::off);
    std::fprintf(stderr, "moekit: ignoring MOEKIT_BF16_DOT=%s (expected auto, on, off)\n", s);
    return -1;
  }();
  return policy;
}

inline std::atomic<int>& api_bf16_dot() noexcept {
  static std::atomic<int> v{-1};
  return v;
}

}  // namespace detail

/// Sets the bf16 dot policy for every later forward, over MOEKIT_BF16_DOT
/// (Bf16Dot::automatic returns to the CPU's choice, not to the environment's).
/// Affects the whole process; safe to call between forwards, not during one.
inline void set_bf16_dot(Bf16Dot p) noexcept { detail::api_bf16_dot().store(static_cast<int>(p)); }
/// Removes the API setting (MOEKIT_BF16_DOT applies again).
inline void clear_bf16_dot() noexcept { detail::api_bf16_dot().store(-1); }

/// The ISA the kernels use now.
inline Isa active_isa() noexcept {
  const Isa best = detected_isa();
  int rank = detail::isa_rank(best);
  const int env = detail::env_cap(), api = detail::api_cap().load(std::memory_order_relaxed);
  if (env >= 0 && env < rank) rank = env;
  if (api >= 0 && api < rank) rank = api;
  if (best == Isa::neon) return rank >= 1 ? Isa::neon : Isa::scalar;
  return static_cast<Isa>(rank);
}

/// True when bf16 dot products may run on `isa`: the API setting, else
/// MOEKIT_BF16_DOT, else automatic: always on the tile unit
/// (Isa::avx512_amx), elsewhere not on CPUs with
/// CpuFeatures::bf16_dot_half_rate.
inline bool bf16_dot_enabled(Isa isa) noexcept {
  int p = detail::api_bf16_dot().load(std::memory_order_relaxed);
  if (p < 0) p = detail::env_bf16_dot();
  if (p == static_cast<int>(Bf16Dot::on)) return true;
  if (p == static_cast<int>(Bf16Dot::off)) return false;
  return isa == Isa::avx512_amx || !cpu_features().bf16_dot_half_rate;
}
/// bf16_dot_enabled for the ISA in use now.
inline bool bf16_dot_enabled() noexcept { return bf16_dot_enabled(active_isa()); }

/// Every ISA this machine can run within the MOEKIT_MAX_ISA cap, lowest
/// first (what tests iterate over).
inline std::vector<Isa> available_isas() {
  std::vector<Isa> out{Isa::scalar};
  const Isa best = detected_isa();
  int top = detail::isa_rank(best);
  if (detail::env_cap() >= 0 && detail::env_cap() < top) top = detail::env_cap();
  if (best == Isa::neon) {
    if (top >= 1) out.push_back(Isa::neon);
  } else {
    for (int r = 1; r <= top; ++r) out.push_back(static_cast<Isa>(r));
  }
  return out;
}

namespace kernels {

namespace detail {

// Quantised kernels of the scalar ISA: dequantise one panel into the
// per-thread buffer, run that ISA's f32 kernel on it, next panel.
template <void (*GateUpF32)(ActivationRows, Index, Index, const float*, Index, Index, Index, float*,
                            float*, Index),
          int Bits>
inline void gate_up_dequant(ActivationRows rows, Index m, Index K, const std::uint8_t* codes,
                            const float* scales, Index f, Index c0, Index c1, float* G, float* U,
                            Index ldo) {
  (void)f;
  Index lda = 0;
  const float* A = contiguous_rows(rows, m, K, lda);  // once, not per panel
  float* buf = panel_scratch(K * 2 * kPanel);
  for (Index p = c0 / kPanel; p * kPanel < c1; ++p) {
    dequant_panel_scalar(codes + p * quant_panel_code_bytes(K, 2 * kPanel, Bits),
                         scales + p * quant_panel_scales(K, 2 * kPanel), K, 2 * kPanel, Bits, buf);
    const Index ncols = std::min(kPanel, c1 - p * kPanel);
    GateUpF32({A, lda}, m, K, buf, kPanel, 0, ncols, G + p * kPanel, U + p * kPanel, ldo);
  }
}
template <void (*MatmulF32)(const float*, Index, Index, Index, const float*, Index, Index, Index,
                            float*, Index),
          int Bits>
inline void matmul_dequant(const float* A, Index lda, Index m, Index K, const std::uint8_t* codes,
                           const float* scales, Index N, Index c0, Index c1, float* Y, Index ldy) {
  (void)N;
  float* buf = panel_scratch(K * kPanel);
  for (Index p = c0 / kPanel; p * kPanel < c1; ++p) {
    dequant_panel_scalar(codes + p * quant_panel_code_bytes(K, kPanel, Bits),
                         scales + p * quant_panel_scales(K, kPanel), K, kPanel, Bits, buf);
    const Index ncols = std::min(kPanel, c1 - p * kPanel);
    MatmulF32(A, lda, m, K, buf, kPanel, 0, ncols, Y + p * kPanel, ldy);
  }
}

}  // namespace detail

/// Entry points of one ISA. Weights are packed panels (packing.hpp) of f32,
/// bf16 or f16, or int8 / int4 codes with group scales (quantized.hpp);
/// activations and accumulation are always f32.
struct KernelTable {
  // gate + up read the block's input rows (A may gather them by index,
  // rows.hpp); the down projection reads the expert's own hidden rows.
  template <class T>
  using GateUpFn = void (*)(ActivationRows A, Index m, Index K, const T* packed, Index f, Index c0,
                            Index c1, float* G, float* U, Index ldo);
  template <class T>
  using MatmulFn = void (*)(const float* A, Index lda, Index m, Index K, const T* packed, Index N,
                            Index c0, Index c1, float* Y, Index ldy);

  Isa isa;
  GateUpFn<float> gate_up_f32;
  MatmulFn<float> matmul_f32;
  GateUpFn<bf16> gate_up_bf16;
  MatmulFn<bf16> matmul_bf16;
  GateUpFn<f16> gate_up_f16;
  MatmulFn<f16> matmul_f16;
  void (*silu_mul_f32)(const float* g, const float* u, float* h, Index n);
  using QGateUpFn = void (*)(ActivationRows A, Index m, Index K, const std::uint8_t* codes,
                             const float* scales, Index f, Index c0, Index c1, float* G, float* U,
                             Index ldo);
  using QMatmulFn = void (*)(const float* A, Index lda, Index m, Index K, const std::uint8_t* codes,
                             const float* scales, Index N, Index c0, Index c1, float* Y, Index ldy);
  QGateUpFn gate_up_q8, gate_up_q4;
  QMatmulFn matmul_q8, matmul_q4;
  /// bf16 weights times bf16-rounded activations (vdpbf16ps on AVX-512 BF16,
  /// BFDOT on NEON with BF16); null where the ISA lacks it.
  GateUpFn<bf16> gate_up_bf16_dot = nullptr;
  MatmulFn<bf16> matmul_bf16_dot = nullptr;
  /// int8 / int4 codes (exact in bf16) times bf16-rounded activations
  /// (vdpbf16ps), group scales applied in f32; null where the ISA lacks it
  /// (NEON too: there Bf16Math::dot runs int8 / int4 on the f32 kernels).
  QGateUpFn gate_up_q8_dot = nullptr, gate_up_q4_dot = nullptr;
  QMatmulFn matmul_q8_dot = nullptr, matmul_q4_dot = nullptr;
  /// int8 / int4 codes times int8 activations quantised per group of 32
  /// (quantize_activation_group), group sums exact in integers: vpdpbusd with
  /// AVX-512 VNNI, vpmaddwd / vpmaddubsw with AVX2, SDOT with NEON where the
  /// CPU has DotProd; null on scalar and on NEON without DotProd.
  QGateUpFn gate_up_q8_a8 = nullptr, gate_up_q4_a8 = nullptr;
  QMatmulFn matmul_q8_a8 = nullptr, matmul_q4_a8 = nullptr;

  QGateUpFn gate_up_quant(int bits) const noexcept { return bits == 8 ? gate_up_q8 : gate_up_q4; }
  QMatmulFn matmul_quant(int bits) const noexcept { return bits == 8 ? matmul_q8 : matmul_q4; }
  QGateUpFn gate_up_quant_dot(int bits) const noexcept {
    return bits == 8 ? gate_up_q8_dot : gate_up_q4_dot;
  }
  QMatmulFn matmul_quant_dot(int bits) const noexcept {
    return bits == 8 ? matmul_q8_dot : matmul_q4_dot;
  }
  QGateUpFn gate_up_quant_a8(int bits) const noexcept {
    return bits == 8 ? gate_up_q8_a8 : gate_up_q4_a8;
  }
  QMatmulFn matmul_quant_a8(int bits) const noexcept {
    return bits == 8 ? matmul_q8_a8 : matmul_q4_a8;
  }
  /// True when this ISA has bf16 dot-product kernels (Bf16Math::dot runs them).
  bool has_dot() const noexcept { return gate_up_bf16_dot != nullptr; }
  /// True when this ISA has int8-activation kernels (Bf16Math::int8_dot runs them).
  bool has_int8_activations() const noexcept { return gate_up_q8_a8 != nullptr; }

  GateUpFn<float> gate_up(const float*) const noexcept { return gate_up_f32; }
  GateUpFn<bf16> gate_up(const bf16*) const noexcept { return gate_up_bf16; }
  GateUpFn<f16> gate_up(const f16*) const noexcept { return gate_up_f16; }
  MatmulFn<float> matmul(const float*) const noexcept { return matmul_f32; }
  MatmulFn<bf16> matmul(const bf16*) const noexcept { return matmul_bf16; }
  MatmulFn<f16> matmul(const f16*) const noexcept { return matmul_f16; }
};

// NOTE: this table names every kernel of every ISA, so each translation unit
// that runs a forward compiles all of them: most of its compile time. A program
// of many translation units can compile them once instead (as stb-style
// libraries do): define MOEKIT_SEPARATE_KERNELS in every translation unit and,
// in exactly one of them, MOEKIT_KERNELS_IMPLEMENTATION as well, before the
// first moekit include. CMake: link moekit::kernels (see CMakeLists.txt), which
// does both. Mixing translation units with and without the macro in one program
// is not allowed (two definitions of table_for).
#if defined(MOEKIT_SEPARATE_KERNELS) && !defined(MOEKIT_KERNELS_IMPLEMENTATION)
/// The table for `isa`; defined where MOEKIT_KERNELS_IMPLEMENTATION is.
const KernelTable& table_for(Isa isa) noexcept;
#else
#if defined(MOEKIT_SEPARATE_KERNELS)
#define MOEKIT_DETAIL_TABLE_LINKAGE  // the one out-of-line definition
#else
#define MOEKIT_DETAIL_TABLE_LINKAGE inline
#endif
/// The table for `isa` (which must be available on this machine).
MOEKIT_DETAIL_TABLE_LINKAGE const KernelTable& table_for(Isa isa) noexcept {
  static const KernelTable scalar_table{Isa::scalar,
                                        &scalar::gate_up<float>,
                                        &scalar::matmul<float>,
                                        &scalar::gate_up<bf16>,
                                        &scalar::matmul<bf16>,
                                        &scalar::gate_up<f16>,
                                        &scalar::matmul<f16>,
                                        &scalar::silu_mul_f32,
                                        &detail::gate_up_dequant<&scalar::gate_up<float>, 8>,
                                        &detail::gate_up_dequant<&scalar::gate_up<float>, 4>,
                                        &detail::matmul_dequant<&scalar::matmul<float>, 8>,
                                        &detail::matmul_dequant<&scalar::matmul<float>, 4>};
#if defined(MOEKIT_HAVE_X86_KERNELS)
  // int8 activations without VNNI: the AVX2 integer kernels (avx2/gemm_int8_act.hpp).
  const auto with_avx2_int8 = [](KernelTable t) {
    t.gate_up_q8_a8 = &avx2_int8::gate_up_quant<8>;
    t.gate_up_q4_a8 = &avx2_int8::gate_up_quant<4>;
    t.matmul_q8_a8 = &avx2_int8::matmul_quant<8>;
    t.matmul_q4_a8 = &avx2_int8::matmul_quant<4>;
    return t;
  };
  static const KernelTable avx2_table =
      with_avx2_int8({Isa::avx2, &avx2::gate_up<float>, &avx2::matmul<float>, &avx2::gate_up<bf16>,
                      &avx2::matmul<bf16>, &avx2::gate_up<f16>, &avx2::matmul<f16>,
                      &avx2::silu_mul_f32, &avx2::gate_up_quant<8>, &avx2::gate_up_quant<4>,
                      &avx2::matmul_quant<8>, &avx2::matmul_quant<4>});
  static const KernelTable avx512_table = with_avx2_int8(
      {Isa::avx512, &avx512::gate_up<float>, &avx512::matmul<float>, &avx512::gate_up<bf16>,
       &avx512::matmul<bf16>, &avx512::gate_up<f16>, &avx512::matmul<f16>, &avx512::silu_mul_f32,
       &avx512::gate_up_quant<8>, &avx512::gate_up_quant<4>, &avx512::matmul_quant<8>,
       &avx512::matmul_quant<4>});
  static const KernelTable avx512_bf16_table = [] {
    KernelTable t = avx512_table;
    t.isa = Isa::avx512_bf16;
    t.gate_up_bf16_dot = &avx512_bf16::gate_up;
    t.matmul_bf16_dot = &avx512_bf16::matmul;
    t.gate_up_q8_dot = &avx512_bf16::gate_up_quant<8>;
    t.gate_up_q4_dot = &avx512_bf16::gate_up_quant<4>;
    t.matmul_q8_dot = &avx512_bf16::matmul_quant<8>;
    t.matmul_q4_dot = &avx512_bf16::matmul_quant<4>;
    t.gate_up_q8_a8 = &avx512_vnni::gate_up_quant<8>;
    t.gate_up_q4_a8 = &avx512_vnni::gate_up_quant<4>;
    t.matmul_q8_a8 = &avx512_vnni::matmul_quant<8>;
    t.matmul_q4_a8 = &avx512_vnni::matmul_quant<4>;
    return t;
  }();
  // AMX: bf16, int8 and int4 experts under Bf16Math::dot on the tile unit
  // (codes decoded to bf16 a 32-input chunk at a time); int8_dot keeps the VNNI
  // kernels.
  static const KernelTable avx512_amx_table = [] {
    KernelTable t = avx512_bf16_table;
    t.isa = Isa::avx512_amx;
    t.gate_up_bf16_dot = &avx512_amx::gate_up;
    t.matmul_bf16_dot = &avx512_amx::matmul;
    t.gate_up_q8_dot = &avx512_amx::gate_up_quant<8>;
    t.gate_up_q4_dot = &avx512_amx::gate_up_quant<4>;
    t.matmul_q8_dot = &avx512_amx::matmul_quant<8>;
    t.matmul_q4_dot = &avx512_amx::matmul_quant<4>;
    return t;
  }();
  switch (isa) {
    case Isa::avx2: return avx2_table;
    case Isa::avx512: return avx512_table;
    case Isa::avx512_bf16: return avx512_bf16_table;
    case Isa::avx512_amx: return avx512_amx_table;
    default: break;
  }
#elif defined(MOEKIT_HAVE_NEON_KERNELS)
  static const KernelTable neon_table = [] {
    KernelTable t{Isa::neon,
                  &neon::gate_up<float>,
                  &neon::matmul<float>,
                  &neon::gate_up<bf16>,
                  &neon::matmul<bf16>,
                  &neon::gate_up<f16>,
                  &neon::matmul<f16>,
                  &neon::silu_mul_f32,
                  &neon::gate_up_quant<8>,
                  &neon::gate_up_quant<4>,
                  &neon::matmul_quant<8>,
                  &neon::matmul_quant<4>};
#if defined(MOEKIT_HAVE_NEON_DOTPROD)
    if (cpu_features().neon_dotprod) {  // int8 activations through SDOT
      t.gate_up_q8_a8 = &neon_dotprod::gate_up_quant<8>;
      t.gate_up_q4_a8 = &neon_dotprod::gate_up_quant<4>;
      t.matmul_q8_a8 = &neon_dotprod::matmul_quant<8>;
      t.matmul_q4_a8 = &neon_dotprod::matmul_quant<4>;
    }
#endif
#if defined(MOEKIT_HAVE_NEON_BF16)
    if (cpu_features().neon_bf16) {  // bf16 experts through BFDOT (int8 / int4: f32 kernels)
      t.gate_up_bf16_dot = &neon_bf16::gate_up;
      t.matmul_bf16_dot = &neon_bf16::matmul;
    }
#endif
    return t;
  }();
  if (isa == Isa::neon) return neon_table;
#endif
  (void)isa;
  return scalar_table;
}
#undef MOEKIT_DETAIL_TABLE_LINKAGE
#endif  // MOEKIT_SEPARATE_KERNELS && !MOEKIT_KERNELS_IMPLEMENTATION

/// The kernels of the active ISA.
inline const KernelTable& active() noexcept { return table_for(active_isa()); }

}  // namespace kernels

MOEKIT_NAMESPACE_END
