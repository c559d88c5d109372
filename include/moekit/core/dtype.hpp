// SPDX-License-Identifier: MIT
// Element types of weights and the exact conversions between them.
//
// Activations are always f32. Weights may be stored as f32, bf16 or f16 (and,
// once the kernels support them, int8 / int4 with group-wise scales). The
// conversions here are the reference: round to nearest, ties to even, NaN kept
// NaN (quiet), overflow to infinity, f16 subnormals exact.
#pragma once

#include <cstdint>
#include <cstring>
#include <string>

#include "error.hpp"

MOEKIT_NAMESPACE_BEGIN

/// Storage type of a tensor.
enum class Dtype : std::uint8_t {
  f32,   ///< IEEE binary32
  f16,   ///< IEEE binary16
  bf16,  ///< bfloat16: the upper 16 bits of a binary32
  i8,    ///< signed 8-bit integers (quantized weights; scales stored apart)
  i4,    ///< signed 4-bit integers, two per byte, low nibble first
  i32,   ///< signed 32-bit integers (expert ids)
};

/// Lower-case name: "f32", "bf16", ...
inline const char* dtype_name(Dtype t) noexcept {
  switch (t) {
    case Dtype::f32: return "f32";
    case Dtype::f16: return "f16";
    case Dtype::bf16: return "bf16";
    case Dtype::i8: return "i8";
    case Dtype::i4: return "i4";
    case Dtype::i32: return "i32";
  }
  return "?";
}

/// Bits per element (4 for i4).
inline int dtype_bits(Dtype t) noexcept {
  switch (t) {
    case Dtype::f32: return 32;
    case Dtype::f16: return 16;
    case Dtype::bf16: return 16;
    case Dtype::i8: return 8;
    case Dtype::i4: return 4;
    case Dtype::i32: return 32;
  }
  return 0;
}

/// Parses "f32" / "float32", "f16" / "float16", "bf16" / "bfloat16", "i8" / "int8",
/// "i4" / "int4", "i32" / "int32". Throws moekit::Error for anything else.
inline Dtype parse_dtype(const std::string& name) {
  if (name == "f32" || name == "float32") return Dtype::f32;
  if (name == "f16" || name == "float16") return Dtype::f16;
  if (name == "bf16" || name == "bfloat16") return Dtype::bf16;
  if (name == "i8" || name == "int8") return Dtype::i8;
  if (name == "i4" || name == "int4") return Dtype::i4;
  if (name == "i32" || name == "int32") return Dtype::i32;
  detail::fail("dtype: expected one of f32, f16, bf16, i8, i4, i32, got \"", name, "\"");
}

namespace detail {

inline std::uint32_t float_bits(float f) noexcept {
  std::uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
}

inline float bits_float(std::uint32_t u) noexcept {
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
}

}  // namespace detail

/// Rounds a float to bfloat16 bits (round to nearest, ties to even; NaN stays a quiet NaN).
inline std::uint16_t float_to_bf16_bits(float f) noexcept {
  const std::uint32_t u = detail::float_bits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)  // NaN: keep sign and payload top, force quiet
    return static_cast<std::uint16_t>((u >> 16) | 0x0040u);
  const std::uint32_t bias = 0x7fffu + ((u >> 16) & 1u);
  return static_cast<std::uint16_t>((u + bias) >> 16);
}

/// Exact widening of bfloat16 bits to float.
inline float bf16_bits_to_float(std::uint16_t h) noexcept {
  return detail::bits_float(static_cast<std::uint32_t>(h) << 16);
}

/// Rounds a float to IEEE half bits (round to nearest, ties to even, subnormals exact,
/// overflow to infinity, NaN stays a quiet NaN).
inline std::uint16_t float_to_f16_bits(float f) noexcept {
  std::uint32_t x = detail::float_bits(f);
  const std::uint32_t sign = (x >> 16) & 0x8000u;
  x &= 0x7fffffffu;
  if (x >= 0x7f800000u) {  // inf or NaN
    if (x == 0x7f800000u) return static_cast<std::uint16_t>(sign | 0x7c00u);
    return static_cast<std::uint16_t>(sign | 0x7e00u | ((x >> 13) & 0x3ffu));
  }
  if (x >= 0x477ff000u)  // >= 65520: rounds to infinity
    return static_cast<std::uint16_t>(sign | 0x7c00u);
  if (x < 0x38800000u) {  // below 2^-14: half subnormal or zero
    const int e = static_cast<int>(x >> 23);
    if (e < 102) return static_cast<std::uint16_t>(sign);  // < 2^-25: rounds to zero
    const std::uint32_t m = (x & 0x7fffffu) | 0x800000u;
    const int shift = 126 - e;  // in [14, 24]
    std::uint32_t r = m >> shift;
    const std::uint32_t rem = m & ((1u << shift) - 1u);
    const std::uint32_t half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) ++r;
    return static_cast<std::uint16_t>(sign | r);
  }
  std::uint32_t r = (x - 0x38000000u) >> 13;  // rebias exponent 127 -> 15
  const std::uint32_t rem = x & 0x1fffu;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;  // may carry into inf: correct
  return static_cast<std::uint16_t>(sign | r);
}

/// Exact widening of IEEE half bits to float.
inline float f16_bits_to_float(std::uint16_t h) noexcept {
  const std::uint32_t sign = static_cast<std::uint32_t>(h & 0x8000u) << 16;
  const std::uint32_t exp = (h >> 10) & 0x1fu;
  std::uint32_t mant = h & 0x3ffu;
  if (exp == 0) {
    if (mant == 0) return detail::bits_float(sign);
    std::uint32_t e = 113;  // normalise the subnormal
    while (!(mant & 0x400u)) {
      mant <<= 1;
      --e;
    }
    mant &= 0x3ffu;
    return detail::bits_float(sign | (e << 23) | (mant << 13));
  }
  if (exp == 31) return detail::bits_float(sign | 0x7f800000u | (mant << 13));
  return detail::bits_float(sign | ((exp + 112u) << 23) | (mant << 13));
}

/// bfloat16 value type: 16 bits of storage with explicit conversions.
struct bf16 {
  std::uint16_t bits = 0;
  bf16() = default;
  explicit bf16(float f) noexcept : bits(float_to_bf16_bits(f)) {}
  static bf16 from_bits(std::uint16_t b) noexcept {
    bf16 v;
    v.bits = b;
    return v;
  }
  explicit operator float() const noexcept { return bf16_bits_to_float(bits); }
};

/// IEEE half value type: 16 bits of storage with explicit conversions.
struct f16 {
  std::uint16_t bits = 0;
  f16() = default;
  explicit f16(float f) noexcept : bits(float_to_f16_bits(f)) {}
  static f16 from_bits(std::uint16_t b) noexcept {
    f16 v;
    v.bits = b;
    return v;
  }
  explicit operator float() const noexcept { return f16_bits_to_float(bits); }
};

static_assert(sizeof(bf16) == 2 && sizeof(f16) == 2, "16-bit storage types must be 2 bytes");

/// Converts `n` floats to bf16 / f16 and back (reference loops; the kernels
/// layer brings vectorised versions).
inline void convert_to_bf16(const float* src, bf16* dst, Index n) noexcept {
  for (Index i = 0; i < n; ++i) dst[i] = bf16(src[i]);
}
inline void convert_to_f16(const float* src, f16* dst, Index n) noexcept {
  for (Index i = 0; i < n; ++i) dst[i] = f16(src[i]);
}
inline void convert_to_f32(const bf16* src, float* dst, Index n) noexcept {
  for (Index i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}
inline void convert_to_f32(const f16* src, float* dst, Index n) noexcept {
  for (Index i = 0; i < n; ++i) dst[i] = static_cast<float>(src[i]);
}

MOEKIT_NAMESPACE_END
