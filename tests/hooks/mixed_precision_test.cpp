// SPDX-License-Identifier: MIT
// Group-wise quantisation by hand, storage bytes, the exact bit allocation
// (hand case and brute force), the per-expert errors against whole-block
// forwards, and the end-to-end mixed-precision compression.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include <moekit/hooks/group_quantization.hpp>
#include <moekit/hooks/mixed_precision.hpp>

#include "hooks_test_util.hpp"

namespace {

using moekit::Index;
using moekit::Matrix;
using moekit_test::error_message;
using moekit_test::random_matrix;

Matrix row(std::initializer_list<float> v) {
  Matrix m(1, static_cast<Index>(v.size()));
  Index i = 0;
  for (const float x : v) m(0, i++) = x;
  return m;
}

TEST(GroupQuantization, ByHand) {
  // 3 bits, one group: m = 4, s = 4 / -4 = -1; q = round(w / s) = (-1, 2, -1, -4)
  // (round(-0.5) = -1, half away from zero); dequantised q · s.
  EXPECT_EQ(moekit::quantize_dequantize(row({1, -2, 0.5f, 4}), 3, 4), row({1, -2, 1, 4}));
  // 2 bits (codes -2..1): m = -1, s = 0.5; q = round(0.6, -2, 1.2, 0) = (1, -2, 1, 0).
  EXPECT_EQ(moekit::quantize_dequantize(row({0.3f, -1, 0.6f, 0}), 2, 4), row({0.5f, -1, 0.5f, 0}));
  // Groups of 2 along the row, the last one short (5 columns): (3, -6 | 1, 0.25 | 7).
  // 4 bits (codes -8..7): s = -6/-8 = 0.75 -> q (4, -8) -> (3, -6);
  // s = 1/-8 = -0.125 -> q (-8, -2) -> (1, 0.25); s = 7/-8 = -0.875 -> q -8 -> 7.
  EXPECT_EQ(moekit::quantize_dequantize(row({3, -6, 1, 0.25f, 7}), 4, 2), row({3, -6, 1, 0.25f, 7}));
  // 8 bits: s = 1/-128 exactly; 0.3 / s = -38.4 -> -38 -> 0.296875.
  EXPECT_EQ(moekit::quantize_dequantize(row({0.3f, 1}), 8, 2), row({0.296875f, 1}));
  // The scale is stored as binary16: 0.1 / -8 = -0.0125 rounds to -0.0124969482421875, so
  // q = round(0.1 / s) = -8 and the value comes back as 8 · 0.0124969482421875.
  EXPECT_EQ(moekit::quantize_dequantize(row({0.1f}), 4, 32)(0, 0), 0.0999755859375f);
  // A zero group stays zero.
  EXPECT_EQ(moekit::quantize_dequantize(row({0, 0, 5}), 4, 2), row({0, 0, 5}));
}

TEST(GroupQuantization, ErrorShrinksWithBits) {
  const Matrix w = random_matrix(16, 256, 1);
  double prev = 1e9;
  for (const int b : {2, 3, 4, 5, 6, 8}) {
    const double err = static_cast<double>((moekit::quantize_dequantize(w, b, 32) - w).norm());
    EXPECT_LT(err, prev) << b;
    prev = err;
  }
  EXPECT_LT(prev / static_cast<double>(w.norm()), 0.01);
}

TEST(GroupQuantization, BytesByHand) {
  // 4 x 256 at 3 bits, groups of 128: 384 bytes of codes + 8 scales x 2 bytes.
  EXPECT_EQ(moekit::quantized_bytes(4, 256, 3, 128), 384 + 16);
  // 3 x 5 at 3 bits, groups of 4: ceil(45 / 8) = 6 bytes + 3 rows x 2 groups x 2 bytes.
  EXPECT_EQ(moekit::quantized_bytes(3, 5, 3, 4), 6 + 12);
  moekit::SwiGluExperts bank(2, 8, 4);  // d = 8, f = 4
  // gate, up [4, 8] and down [8, 4] at 4 bits, groups of 4: 16 + 16 + 16 code bytes, 8 + 8 + 8 scales.
  EXPECT_EQ(moekit::expert_bytes(bank, 4, 4), 3 * 16 + 3 * 16);
  EXPECT_EQ(moekit::expert_fp32_bytes(bank), 4 * 3 * 32);
}

TEST(GroupQuantization, Errors) {
  EXPECT_EQ(error_message([] { moekit::quantize_dequantize(row({1}), 9, 4); }),
            "moekit: quantization bits: expected 2 <= bits <= 8, got 9");
  EXPECT_EQ(error_message([] { moekit::quantize_dequantize(row({1}), 4, 0); }),
            "moekit: quantization group size: expected >= 1, got 0");
  EXPECT_NE(error_message([] { moekit::quantize_dequantize(row({1e9f}), 2, 4); }).find("overflows binary16"),
            std::string::npos);
  moekit::SwiGluExperts bank(2, 8, 4);
  EXPECT_EQ(error_message([&] { moekit::quantize_experts(bank, {4}, 4); }),
            "moekit: bits per expert: expected size 2, got 1");
}

TEST(BitAllocation, ByHand) {
  // Widths {2, 4}, budget 6 bits: (2,2) costs 13, (4,2) 4, (2,4) 12, (4,4) is over budget.
  const auto a = moekit::allocate_bits({{10, 1}, {3, 2}}, {2, 4}, 6);
  EXPECT_EQ(a.bits, (std::vector<int>{4, 2}));
  EXPECT_DOUBLE_EQ(a.cost, 4.0);
  EXPECT_EQ(a.bit_sum, 6);
  // Zero costs tie everywhere: the smallest bit sum wins.
  EXPECT_EQ(moekit::allocate_bits({{0, 0}, {0, 0}}, {2, 4}, 8).bits, (std::vector<int>{2, 2}));
  EXPECT_EQ(error_message([] { moekit::allocate_bits({{1, 1}, {1, 1}}, {2, 4}, 3); }),
            "moekit: bit budget: expected at least 4 bits (2 experts at 2 bits), got 3");
}

TEST(BitAllocation, MatchesBruteForce) {
  std::mt19937 gen(5);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  const std::vector<int> widths{2, 3, 4, 8};
  for (int trial = 0; trial < 300; ++trial) {
    const std::size_t E = 1 + gen() % 5;
    std::vector<std::vector<double>> cost(E);
    for (auto& c : cost) {
      double v = 1.0 + u(gen);  // decreasing in the width, as quantisation errors are
      for (std::size_t j = 0; j < widths.size(); ++j) c.push_back(v *= u(gen));
    }
    const std::int64_t budget = static_cast<std::int64_t>(2 * E + gen() % (6 * E + 1));
    double best = 1e300;
    std::function<void(std::size_t, std::int64_t, double)> rec = [&](std::size_t i, std::int64_t s, double acc) {
      if (s > budget) return;
      if (i == E) {
        best = std::min(best, acc);
        return;
      }
      for (std::size_t j = 0; j < widths.size(); ++j) rec(i + 1, s + widths[j], acc + cost[i][j]);
    };
    rec(0, 0, 0.0);
    const auto a = moekit::allocate_bits(cost, widths, budget);
    EXPECT_NEAR(a.cost, best, 1e-12) << "trial " << trial;
    EXPECT_LE(a.bit_sum, budget);
    double check = 0;
    std::int64_t sum = 0;
    for (std::size_t i = 0; i < E; ++i) {
      const auto j = static_cast<std::size_t>(std::find(widths.begin(), widths.end(), a.bits[i]) - widths.begin());
      check += cost[i][j];
      sum += a.bits[i];
    }
    EXPECT_DOUBLE_EQ(check, a.cost);
    EXPECT_EQ(sum, a.bit_sum);
  }
}

TEST(MixedPrecision, ExpertErrorsEqualWholeBlockForwards) {
  auto block = moekit_test::random_block(4, 16, 32, 2, 71);
  const Matrix x = random_matrix(40, 16, 72);
  const std::vector<int> widths{2, 4};
  const auto st = moekit::expert_quantization_stats(block, x, widths, 8);
  const Matrix y = block.forward(x);
  const auto counts = block.last_plan().expert_counts();
  double mass_total = static_cast<double>(block.last_plan().weights.sum());
  for (Index e = 0; e < 4; ++e) {
    EXPECT_NEAR(st.frequency[static_cast<std::size_t>(e)], static_cast<double>(counts[static_cast<std::size_t>(e)]) / 80.0, 1e-12);
    double mass = 0;
    for (Index t = 0; t < 40; ++t)
      for (Index j = 0; j < 2; ++j)
        if (block.last_plan().ids(t, j) == e) mass += static_cast<double>(block.last_plan().weights(t, j));
    EXPECT_NEAR(st.weight[static_cast<std::size_t>(e)], mass / mass_total, 1e-6);
    for (std::size_t b = 0; b < widths.size(); ++b) {
      // The whole block with expert e alone quantised.
      auto q = block;
      q.experts().gate(e) = moekit::quantize_dequantize(block.experts().gate(e), widths[b], 8);
      q.experts().up(e) = moekit::quantize_dequantize(block.experts().up(e), widths[b], 8);
      q.experts().down(e) = moekit::quantize_dequantize(block.experts().down(e), widths[b], 8);
      const double want = static_cast<double>((q.forward(x) - y).norm());
      EXPECT_NEAR(st.error[static_cast<std::size_t>(e)][b], want, 1e-4 * want + 1e-6) << e << ", " << widths[b];
    }
  }
}

TEST(MixedPrecision, CompressesUnderTheBudget) {
  auto block = moekit_test::random_block(8, 32, 64, 2, 81);
  const Matrix calib = random_matrix(96, 32, 82);
  const auto opt = moekit::MixedPrecisionOptions().with_average_bits(3.0).with_group_size(32);
  auto r = moekit::compress_mixed_precision(block, calib, opt);
  ASSERT_EQ(r.bits.size(), 8u);
  std::int64_t sum = 0, bytes = 0;
  for (const int b : r.bits) {
    sum += b;
    bytes += moekit::expert_bytes(block.experts(), b, 32);
  }
  EXPECT_LE(sum, 24);
  EXPECT_EQ(r.bit_budget, 24);
  EXPECT_DOUBLE_EQ(r.average_bits, static_cast<double>(sum) / 8.0);
  EXPECT_EQ(r.bytes, bytes);
  EXPECT_EQ(r.fp32_bytes, 8 * 4 * 3 * 32 * 64);
  // The compressed block is the bank quantised with those widths.
  auto by_hand = block;
  by_hand.experts() = moekit::quantize_experts(block.experts(), r.bits, 32);
  const Matrix yq = r.block.forward(calib), y = block.forward(calib);
  EXPECT_TRUE(moekit_test::bit_identical(yq, by_hand.forward(calib)));
  EXPECT_NEAR(r.output_error, static_cast<double>((yq - y).norm()) / static_cast<double>(y.norm()), 1e-12);
  // The objective at the chosen widths is no worse than uniform 3 bits.
  double uniform = 0;
  for (std::size_t i = 0; i < 8; ++i)
    uniform += r.stats.frequency[i] * std::pow(r.stats.weight[i], 1.5) * r.stats.error[i][1];
  EXPECT_LE(r.objective, uniform + 1e-15);
  // Exponents (0, 0, 2): the objective is Σ ε², no worse than uniform 3 bits either.
  const auto l2 = moekit::compress_mixed_precision(block, calib, moekit::MixedPrecisionOptions(opt).with_exponents(0, 0, 2));
  double uniform_l2 = 0, chosen_l2 = 0;
  for (std::size_t i = 0; i < 8; ++i) {
    uniform_l2 += l2.stats.error[i][1] * l2.stats.error[i][1];
    const auto j = static_cast<std::size_t>(std::find(l2.stats.bits.begin(), l2.stats.bits.end(), l2.bits[i]) - l2.stats.bits.begin());
    chosen_l2 += l2.stats.error[i][j] * l2.stats.error[i][j];
  }
  EXPECT_NEAR(l2.objective, chosen_l2, 1e-9 * chosen_l2);
  EXPECT_LE(l2.objective, uniform_l2);
  EXPECT_EQ(error_message([&] { moekit::compress_mixed_precision(block, calib, moekit::MixedPrecisionOptions().with_exponents(1, -1, 1)); }),
            "moekit: mixed precision exponents: expected finite values >= 0, got -1");
  EXPECT_EQ(error_message([&] { moekit::compress_mixed_precision(block, calib, moekit::MixedPrecisionOptions().with_average_bits(1)); }),
            "moekit: bit budget: expected at least 16 bits (8 experts at 2 bits), got 8");
  // All 8 bits: nearly lossless.
  const auto r8 = moekit::compress_mixed_precision(
      block, calib, moekit::MixedPrecisionOptions().with_allowed_bits({8}).with_average_bits(8).with_group_size(32));
  EXPECT_LT(r8.output_error, 0.01);
  EXPECT_LT(r8.output_error, r.output_error);
}

TEST(MixedPrecision, BusyExpertsGetMoreBits) {
  // Router rows pull almost every token to experts 2 and 5; the others are rarely used.
  const Index E = 6, d = 16;
  auto block = moekit_test::random_block(E, d, 32, 2, 91);
  Matrix r = random_matrix(E, d, 92, 0.05f);
  r.row(2).setConstant(0.5f);
  r.row(5).setConstant(0.45f);
  block.router() = moekit::Router<>(r, moekit::RouterOptions().with_top_k(2));
  const Matrix calib = random_matrix(64, d, 93, 0.3f).array().abs() + 0.2f;
  const auto res = moekit::compress_mixed_precision(
      block, calib, moekit::MixedPrecisionOptions().with_allowed_bits({2, 8}).with_average_bits(4).with_group_size(16));
  EXPECT_EQ(res.bits, (std::vector<int>{2, 2, 8, 2, 2, 8}));
}

}  // namespace
