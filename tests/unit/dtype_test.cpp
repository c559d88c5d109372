// SPDX-License-Identifier: MIT
// bf16 / f16 conversions: exact widening, round-to-nearest-even narrowing,
// NaN / infinity / subnormal handling, checked exhaustively where the space
// is 2^16 and against the F16C instructions where the CPU has them.
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "test_util.hpp"

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#define MOEKIT_TEST_X86 1
#endif

namespace {

using moekit::bf16_bits_to_float;
using moekit::f16_bits_to_float;
using moekit::float_to_bf16_bits;
using moekit::float_to_f16_bits;

float from_bits(std::uint32_t u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

bool is_nan_bits_f16(std::uint16_t h) { return (h & 0x7c00u) == 0x7c00u && (h & 0x3ffu); }

// Nearest-even rounding decided in double from the two neighbouring
// representable values: an independent statement of what RNE means.
template <class Widen>
std::uint16_t round_by_neighbours(float x, std::uint16_t lo, Widen widen) {
  const std::uint16_t hi = static_cast<std::uint16_t>(lo + 1);
  const double dlo = std::fabs(static_cast<double>(widen(lo)) - x);
  const double dhi = std::fabs(static_cast<double>(widen(hi)) - x);
  if (dlo < dhi) return lo;
  if (dhi < dlo) return hi;
  return (lo & 1u) ? hi : lo;
}

TEST(Dtype, Bf16WidenIsExactAndRoundTrips) {
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const auto b = static_cast<std::uint16_t>(h);
    const float f = bf16_bits_to_float(b);
    std::uint32_t u;
    std::memcpy(&u, &f, 4);
    ASSERT_EQ(u, h << 16);
    if (std::isnan(f)) {
      EXPECT_TRUE(std::isnan(bf16_bits_to_float(float_to_bf16_bits(f))));
    } else {
      ASSERT_EQ(float_to_bf16_bits(f), b) << "bits " << h;
    }
  }
}

TEST(Dtype, Bf16RoundsToNearestEven) {
  // Halfway cases: 1 + 2^-8 lies between bf16 1.0 (even) and 1 + 2^-7.
  EXPECT_EQ(float_to_bf16_bits(from_bits(0x3f808000u)), 0x3f80u);
  // 1 + 3·2^-8 lies between 1 + 2^-7 (odd) and 1 + 2^-6: ties up to even.
  EXPECT_EQ(float_to_bf16_bits(from_bits(0x3f818000u)), 0x3f82u);
  // Just above halfway rounds up.
  EXPECT_EQ(float_to_bf16_bits(from_bits(0x3f808001u)), 0x3f81u);
  // Largest finite float overflows to +inf; negative likewise.
  EXPECT_EQ(float_to_bf16_bits(std::numeric_limits<float>::max()), 0x7f80u);
  EXPECT_EQ(float_to_bf16_bits(-std::numeric_limits<float>::max()), 0xff80u);
  EXPECT_EQ(float_to_bf16_bits(std::numeric_limits<float>::infinity()), 0x7f80u);
  EXPECT_EQ(float_to_bf16_bits(-0.0f), 0x8000u);
  // NaN stays NaN (quiet), also a signalling NaN whose payload is in the low bits.
  EXPECT_TRUE(std::isnan(bf16_bits_to_float(float_to_bf16_bits(from_bits(0x7f800001u)))));
  EXPECT_TRUE(std::isnan(bf16_bits_to_float(float_to_bf16_bits(std::nanf("")))));

  std::mt19937 gen(7);
  for (int i = 0; i < 200000; ++i) {
    const float x = from_bits(gen());
    if (!std::isfinite(x)) continue;
    const std::uint16_t got = float_to_bf16_bits(x);
    std::uint32_t u;
    std::memcpy(&u, &x, 4);
    const auto lo = static_cast<std::uint16_t>(u >> 16);  // truncation toward zero
    if ((lo & 0x7fffu) == 0x7f7fu) continue;              // next value up is inf: checked above
    ASSERT_EQ(got, round_by_neighbours(x, lo, bf16_bits_to_float)) << "x = " << x;
  }
}

TEST(Dtype, F16RoundTripsEveryValue) {
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const auto b = static_cast<std::uint16_t>(h);
    const float f = f16_bits_to_float(b);
    if (is_nan_bits_f16(b)) {
      ASSERT_TRUE(std::isnan(f));
      ASSERT_TRUE(is_nan_bits_f16(float_to_f16_bits(f)));
    } else {
      ASSERT_EQ(float_to_f16_bits(f), b) << "bits " << h;
    }
  }
}

TEST(Dtype, F16KnownValues) {
  EXPECT_EQ(float_to_f16_bits(1.0f), 0x3c00u);
  EXPECT_EQ(float_to_f16_bits(-2.0f), 0xc000u);
  EXPECT_EQ(float_to_f16_bits(65504.0f), 0x7bffu);           // largest finite
  EXPECT_EQ(float_to_f16_bits(65519.99f), 0x7bffu);          // below the halfway to 65536
  EXPECT_EQ(float_to_f16_bits(65520.0f), 0x7c00u);           // halfway: ties to even = inf
  EXPECT_EQ(float_to_f16_bits(std::ldexp(1.0f, -24)), 0x0001u);  // smallest subnormal
  EXPECT_EQ(float_to_f16_bits(std::ldexp(1.0f, -25)), 0x0000u);  // halfway to it: even = 0
  EXPECT_EQ(float_to_f16_bits(std::ldexp(1.5f, -25)), 0x0001u);
  EXPECT_EQ(float_to_f16_bits(std::ldexp(1.0f, -14)), 0x0400u);  // smallest normal
  EXPECT_FLOAT_EQ(f16_bits_to_float(0x0001u), std::ldexp(1.0f, -24));
  EXPECT_FLOAT_EQ(f16_bits_to_float(0x03ffu), std::ldexp(1023.0f, -24));
  EXPECT_TRUE(std::isinf(f16_bits_to_float(0xfc00u)));
}

TEST(Dtype, F16RoundsToNearestEvenOnRandomFloats) {
  std::mt19937 gen(11);
  std::uniform_real_distribution<float> expo(-30.0f, 17.0f);
  for (int i = 0; i < 200000; ++i) {
    const float x = std::ldexp(static_cast<float>(gen() % 100000) / 50000.0f - 1.0f,
                               static_cast<int>(expo(gen)));
    if (!std::isfinite(x) || std::fabs(x) >= 65504.0f) continue;
    const std::uint16_t got = float_to_f16_bits(x);
    // Truncation: the largest-magnitude f16 not above |x|, found by bisection on
    // the monotone positive encodings, then the sign.
    const float ax = std::fabs(x);
    std::uint16_t lo = 0, hi = 0x7bff;
    while (lo < hi) {
      const auto mid = static_cast<std::uint16_t>((lo + hi + 1) / 2);
      if (f16_bits_to_float(mid) <= ax) lo = mid; else hi = static_cast<std::uint16_t>(mid - 1);
    }
    const std::uint16_t mag = round_by_neighbours(ax, lo, f16_bits_to_float);
    const auto expect = static_cast<std::uint16_t>(mag | (std::signbit(x) ? 0x8000u : 0u));
    ASSERT_EQ(got, expect) << "x = " << x;
  }
}

#ifdef MOEKIT_TEST_X86
__attribute__((target("f16c"))) std::uint16_t hw_f32_to_f16(float x) {
  return static_cast<std::uint16_t>(_cvtss_sh(x, _MM_FROUND_TO_NEAREST_INT));
}
__attribute__((target("f16c"))) float hw_f16_to_f32(std::uint16_t h) { return _cvtsh_ss(h); }

TEST(Dtype, F16MatchesF16cInstructions) {
  if (!moekit::cpu_features().f16c) GTEST_SKIP() << "CPU has no F16C";
  for (std::uint32_t h = 0; h < 0x10000u; ++h) {
    const auto b = static_cast<std::uint16_t>(h);
    if (is_nan_bits_f16(b)) continue;
    ASSERT_EQ(f16_bits_to_float(b), hw_f16_to_f32(b)) << h;
  }
  std::mt19937 gen(3);
  for (int i = 0; i < 1000000; ++i) {
    const float x = from_bits(gen());
    if (std::isnan(x)) continue;
    ASSERT_EQ(float_to_f16_bits(x), hw_f32_to_f16(x)) << "x = " << x;
  }
}
#endif

TEST(Dtype, ValueTypesAndBulkConversion) {
  const float src[5] = {0.1f, -3.5f, 1e-8f, 7e4f, 2.0f};
  moekit::bf16 b[5];
  moekit::f16 h[5];
  float back[5];
  moekit::convert_to_bf16(src, b, 5);
  moekit::convert_to_f16(src, h, 5);
  moekit::convert_to_f32(b, back, 5);
  for (int i = 0; i < 5; ++i) EXPECT_EQ(back[i], static_cast<float>(moekit::bf16(src[i])));
  moekit::convert_to_f32(h, back, 5);
  EXPECT_TRUE(std::isinf(back[3]));  // 7e4 overflows f16
  EXPECT_EQ(back[1], -3.5f);
  EXPECT_EQ(moekit::bf16::from_bits(0x3f80).bits, 0x3f80);
}

TEST(Dtype, NamesAndParsing) {
  using moekit::Dtype;
  for (Dtype t : {Dtype::f32, Dtype::f16, Dtype::bf16, Dtype::i8, Dtype::i4, Dtype::i32})
    EXPECT_EQ(moekit::parse_dtype(moekit::dtype_name(t)), t);
  EXPECT_EQ(moekit::parse_dtype("bfloat16"), Dtype::bf16);
  EXPECT_EQ(moekit::dtype_bits(Dtype::i4), 4);
  EXPECT_EQ(moekit::dtype_bits(Dtype::bf16), 16);
  const std::string msg = moekit_test::error_message([] { moekit::parse_dtype("fp8"); });
  EXPECT_NE(msg.find("dtype"), std::string::npos) << msg;
  EXPECT_NE(msg.find("\"fp8\""), std::string::npos) << msg;
}

}  // namespace
