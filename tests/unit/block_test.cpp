// SPDX-License-Identifier: MIT
// The fp32 block against the double-precision reference over a sweep of
// shapes, plus determinism, hand-made plans, the NaN policy and bad inputs.
#include <tuple>

#include "test_util.hpp"

namespace {

using moekit::Index;
using moekit::Matrix;
using moekit::RoutingPlan;
using moekit::SwiGluMoEBlock;
using moekit_test::bit_identical;
using moekit_test::error_message;
using moekit_test::kBlockTolerance;
using moekit_test::max_abs_diff;
using moekit_test::random_block;
using moekit_test::random_matrix;
using moekit_test::scale_of;

// (T, E, k, d, f): d and f deliberately not multiples of 16 (or of any vector width).
using Shape = std::tuple<Index, Index, Index, Index, Index>;

class BlockVsReference : public ::testing::TestWithParam<Shape> {};

TEST_P(BlockVsReference, MatchesReference) {
  const auto [T, E, k, d, f] = GetParam();
  for (bool renorm : {true, false}) {
    SwiGluMoEBlock block = random_block(E, d, f, k, static_cast<std::uint32_t>(T * 131 + E * 7 + k), renorm, renorm ? 1.0f : 2.5f);
    const Matrix x = random_matrix(T, d, static_cast<std::uint32_t>(T + 17));
    const Matrix y = block.forward(x);
    RoutingPlan ref_plan;
    const Matrix ref = moekit::reference::forward(block, x, &ref_plan);
    ASSERT_EQ(y.rows(), T);
    ASSERT_EQ(y.cols(), d);
    ASSERT_EQ(block.last_plan().ids, ref_plan.ids);
    if (T > 0) {
      EXPECT_LE((block.last_plan().weights - ref_plan.weights).cwiseAbs().maxCoeff(), 1e-6f * 2.5f);
      EXPECT_LE(max_abs_diff(y, ref), kBlockTolerance * scale_of(ref)) << "renorm=" << renorm;
    }
    // Every token gets exactly k experts, and the per-expert counts add up.
    Index total = 0;
    for (Index c : block.last_groups().counts()) total += c;
    EXPECT_EQ(total, T * k);
  }
}

INSTANTIATE_TEST_SUITE_P(
    Shapes, BlockVsReference,
    ::testing::Values(Shape{0, 8, 2, 24, 40}, Shape{1, 8, 2, 24, 40}, Shape{7, 8, 2, 33, 45},
                      Shape{64, 8, 2, 33, 45}, Shape{333, 8, 2, 33, 45}, Shape{7, 1, 1, 17, 23},
                      Shape{64, 1, 1, 17, 23}, Shape{7, 8, 1, 31, 47}, Shape{64, 8, 8, 31, 47},
                      Shape{1, 64, 2, 40, 20}, Shape{7, 64, 1, 40, 20}, Shape{64, 64, 2, 40, 20},
                      Shape{333, 64, 2, 40, 20}, Shape{64, 64, 64, 15, 9}, Shape{333, 8, 8, 15, 9},
                      Shape{1, 64, 64, 15, 9}),
    [](const ::testing::TestParamInfo<Shape>& info) {
      return "T" + std::to_string(std::get<0>(info.param)) + "_E" + std::to_string(std::get<1>(info.param)) +
             "_k" + std::to_string(std::get<2>(info.param)) + "_d" + std::to_string(std::get<3>(info.param)) +
             "_f" + std::to_string(std::get<4>(info.param));
    });

TEST(Block, AllTokensOnOneExpertAndEmptyExperts) {
  const Index E = 8, d = 21, f = 13, T = 50;
  SwiGluMoEBlock block = random_block(E, d, f, 1, 99);
  // Make expert 5 win every token: a huge router row aligned with a shared input direction.
  block = SwiGluMoEBlock(moekit::Router<>([&] {
                           Matrix w = Matrix::Zero(E, d);
                           w(5, 0) = 10.0f;
                           return w;
                         }(), moekit::RouterOptions().with_top_k(1)),
                         block.experts());
  Matrix x = random_matrix(T, d, 3);
  x.col(0).setConstant(2.0f);
  const Matrix y = block.forward(x);
  EXPECT_EQ(block.last_groups().counts(), (std::vector<Index>{0, 0, 0, 0, 0, T, 0, 0}));
  const Matrix ref = moekit::reference::forward(block, x);
  EXPECT_LE(max_abs_diff(y, ref), kBlockTolerance * scale_of(ref));
  // With k = 1 and renormalisation the weight is exactly 1: y is expert 5 itself.
  EXPECT_LE(max_abs_diff(y, block.experts().forward(5, x)), 0.0);
}

TEST(Block, BitIdenticalForAnyThreadCountAndRepeatedCalls) {
  SwiGluMoEBlock block = random_block(16, 37, 29, 3, 5);
  const Matrix x = random_matrix(97, 37, 6);
  const Matrix y1 = block.forward(x);
  for (int threads : {1, 2, 3, 8, 16}) {
    moekit::ThreadPoolExecutor pool(threads);
    Matrix y(97, 37);
    block.forward(x, y, pool);
    EXPECT_TRUE(bit_identical(y, y1)) << threads << " threads";
    block.forward(x, y, pool);  // workspace reuse
    EXPECT_TRUE(bit_identical(y, y1)) << threads << " threads, second call";
  }
  // A smaller batch after a larger one reuses the buffers correctly.
  const Matrix y_small = block.forward(x.topRows(5));
  EXPECT_LE(max_abs_diff(y_small, moekit::reference::forward(block, x.topRows(5))), kBlockTolerance * scale_of(y_small));
}

TEST(Block, ForwardWithHandMadePlan) {
  const Index E = 4, d = 10, f = 6, T = 3;
  SwiGluMoEBlock block = random_block(E, d, f, 2, 8);
  const Matrix x = random_matrix(T, d, 9);
  RoutingPlan plan(T, 2, E);
  plan.ids << 3, 1,   //
      2, -1,          // one slot left empty
      -1, -1;         // token 2 routed nowhere: output 0
  plan.weights << 0.25f, 0.5f, 2.0f, 123.0f, 9.0f, 9.0f;
  Matrix y(T, d);
  block.forward_with_plan(x, plan, y);
  const Matrix ref = moekit::reference::forward_with_plan(block.experts(), x, plan);
  EXPECT_LE(max_abs_diff(y, ref), kBlockTolerance * scale_of(ref));
  EXPECT_EQ(y.row(2), Matrix::Zero(1, d));
  const Matrix e2 = block.experts().forward(2, x.row(1));
  EXPECT_LE((y.row(1) - 2.0f * e2).cwiseAbs().maxCoeff(), 1e-5f * scale_of(e2));

  RoutingPlan bad = plan;
  bad.ids(0, 1) = 3;
  EXPECT_NE(error_message([&] { block.forward_with_plan(x, bad, y); }).find("twice"), std::string::npos);
  RoutingPlan wrong_tokens(T + 1, 2, E);
  EXPECT_NE(error_message([&] { block.forward_with_plan(x, wrong_tokens, y); }).find("tokens"), std::string::npos);
  RoutingPlan wrong_experts(T, 2, E + 1);
  EXPECT_NE(error_message([&] { block.forward_with_plan(x, wrong_experts, y); }).find("num_experts"), std::string::npos);
}

TEST(Block, OutputMayAliasInput) {
  SwiGluMoEBlock block = random_block(8, 12, 20, 2, 10);
  Matrix x = random_matrix(9, 12, 11);
  const Matrix expect = block.forward(x);
  block.forward(x, x);
  EXPECT_TRUE(bit_identical(x, expect));
}

TEST(Block, NonFiniteInputPolicy) {
  SwiGluMoEBlock block = random_block(8, 12, 20, 2, 12);
  Matrix x = random_matrix(5, 12, 13);
  x(3, 7) = std::numeric_limits<float>::quiet_NaN();
  // Default policy: reject, naming the tensor and the position.
  EXPECT_NE(error_message([&] { block.forward(x); }).find("input x: non-finite value nan at [3, 7]"), std::string::npos);
  EXPECT_NE(error_message([&] { block.route(x); }).find("input x"), std::string::npos);
  x(3, 7) = std::numeric_limits<float>::infinity();
  EXPECT_NE(error_message([&] { block.forward(x); }).find("inf at [3, 7]"), std::string::npos);
  // propagate: the input check is skipped, but a NaN router logit is still refused
  // (there is no meaningful top-k of NaN scores).
  block.options().with_non_finite_input(moekit::NonFinitePolicy::propagate);
  x(3, 7) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(error_message([&] { block.forward(x); }).find("router logits: non-finite"), std::string::npos);
  // ... while a NaN that only reaches the experts through a forced plan propagates.
  RoutingPlan plan(5, 1, 8);
  plan.ids.setZero();
  plan.weights.setOnes();
  Matrix y(5, 12);
  block.forward_with_plan(x, plan, y);
  EXPECT_TRUE(y.row(3).hasNaN());
  EXPECT_FALSE(y.topRows(3).hasNaN());
}

TEST(Block, BadShapesAndConfigsThrow) {
  SwiGluMoEBlock block = random_block(8, 12, 20, 2, 14);
  EXPECT_NE(error_message([&] { block.forward(Matrix::Zero(3, 11)); }).find("input x: expected shape [3, 12] (hidden size 12), got [3, 11]"), std::string::npos);
  Matrix y(4, 12);
  EXPECT_NE(error_message([&] { block.forward(Matrix::Zero(3, 12), y); }).find("output y: expected shape [3, 12], got [4, 12]"), std::string::npos);
  // Router and experts that do not fit together.
  moekit::Router<> r8(random_matrix(8, 12, 1), moekit::RouterOptions());
  EXPECT_NE(error_message([&] { SwiGluMoEBlock(r8, moekit::SwiGluExperts(7, 12, 20)); }).find("router has 8 experts but the expert bank has 7"), std::string::npos);
  EXPECT_NE(error_message([&] { SwiGluMoEBlock(r8, moekit::SwiGluExperts(8, 13, 20)); }).find("hidden size"), std::string::npos);
}

}  // namespace
