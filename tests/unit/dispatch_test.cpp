// SPDX-License-Identifier: MIT
// Dispatch (counting sort by expert), the weighted-sum combine and RoutingPlan validation.
#include "test_util.hpp"

namespace {

using moekit::ExpertGroups;
using moekit::Index;
using moekit::Matrix;
using moekit::RoutingPlan;
using moekit_test::error_message;

RoutingPlan make_plan(std::initializer_list<std::initializer_list<int>> rows, Index E) {
  const Index T = static_cast<Index>(rows.size()), k = static_cast<Index>(rows.begin()->size());
  RoutingPlan p(T, k, E);
  Index t = 0;
  for (const auto& r : rows) {
    Index j = 0;
    for (int e : r) {
      p.ids(t, j) = e;
      p.weights(t, j) = 0.1f * static_cast<float>(1 + t + j);
      ++j;
    }
    ++t;
  }
  return p;
}

TEST(Dispatch, CountsOffsetsAndStableTokenOrder) {
  //            token 0   1       2       3        4
  const RoutingPlan p = make_plan({{2, 0}, {0, 2}, {3, -1}, {2, 3}, {-1, -1}}, 5);
  const ExpertGroups g = moekit::dispatch(p);
  EXPECT_EQ(g.num_experts(), 5);
  EXPECT_EQ(g.num_rows(), 7);
  EXPECT_EQ(g.counts(), (std::vector<Index>{2, 0, 3, 2, 0}));
  EXPECT_EQ(g.offsets, (std::vector<Index>{0, 2, 2, 5, 7, 7}));
  EXPECT_EQ(g.tokens, (std::vector<std::int32_t>{0, 1, 0, 1, 3, 2, 3}));
  EXPECT_EQ(g.slots, (std::vector<std::int32_t>{1, 2, 0, 3, 6, 4, 7}));
  // position is the inverse of slots, -1 for empty slots.
  EXPECT_EQ(g.position, (std::vector<std::int32_t>{2, 0, 1, 3, 5, -1, 4, 6, -1, -1}));
  EXPECT_EQ(p.expert_counts(), g.counts());
}

TEST(Dispatch, AllTokensOnOneExpertAndEmptyPlan) {
  RoutingPlan p(9, 1, 4);
  p.ids.setConstant(3);
  const ExpertGroups g = moekit::dispatch(p);
  EXPECT_EQ(g.counts(), (std::vector<Index>{0, 0, 0, 9}));
  for (std::int32_t t = 0; t < 9; ++t) EXPECT_EQ(g.tokens[static_cast<std::size_t>(t)], t);
  const ExpertGroups e = moekit::dispatch(RoutingPlan(0, 2, 4));
  EXPECT_EQ(e.num_rows(), 0);
  EXPECT_EQ(e.counts(), (std::vector<Index>{0, 0, 0, 0}));
}

TEST(Dispatch, OutOfRangeIdThrowsInsteadOfWritingOutOfBounds) {
  const RoutingPlan p = make_plan({{0, 7}}, 4);
  EXPECT_NE(error_message([&] { moekit::dispatch(p); }).find("got 7"), std::string::npos);
  const RoutingPlan q = make_plan({{-2, 1}}, 4);
  EXPECT_NE(error_message([&] { moekit::dispatch(q); }).find("got -2"), std::string::npos);
}

TEST(RoutingPlan, ValidateNamesTheProblem) {
  EXPECT_NO_THROW(make_plan({{0, 1}, {-1, 3}}, 4).validate());
  EXPECT_NE(error_message([] { make_plan({{1, 1}}, 4).validate(); }).find("names expert 1 twice"), std::string::npos);
  EXPECT_NE(error_message([] { make_plan({{0, 4}}, 4).validate(); }).find("at [0, 1], got 4"), std::string::npos);
  RoutingPlan p = make_plan({{0, 1}}, 4);
  p.weights(0, 1) = NAN;
  EXPECT_NE(error_message([&] { p.validate(); }).find("routing plan weights: non-finite"), std::string::npos);
  p.weights.resize(2, 2);
  EXPECT_NE(error_message([&] { p.validate(); }).find("expected shape [1, 2], got [2, 2]"), std::string::npos);
  RoutingPlan z;
  EXPECT_NE(error_message([&] { z.validate(); }).find("num_experts"), std::string::npos);
}

TEST(WeightedSum, SumsSlotsInRankOrder) {
  const Index d = 3;
  const RoutingPlan p = make_plan({{1, 0}, {-1, 1}, {-1, -1}}, 2);
  const ExpertGroups g = moekit::dispatch(p);
  // Grouped rows: expert 0 -> token 0; expert 1 -> tokens 0, 1.
  Matrix grouped(3, d);
  grouped << 1, 2, 3,   // expert 0, token 0
      10, 20, 30,       // expert 1, token 0
      100, 200, 300;    // expert 1, token 1
  Matrix y(3, d);
  y.setConstant(-7);  // overwritten, never accumulated into
  moekit::WeightedSum().combine(p, g, grouped.data(), y);
  // token 0: 0.1 * expert1 + 0.2 * expert0; token 1: slot 1 (weight 0.3) * expert1; token 2: 0.
  EXPECT_FLOAT_EQ(y(0, 0), 0.1f * 10 + 0.2f * 1);
  EXPECT_FLOAT_EQ(y(0, 2), 0.1f * 30 + 0.2f * 3);
  EXPECT_FLOAT_EQ(y(1, 1), 0.3f * 200);
  EXPECT_EQ(y.row(2), Matrix::Zero(1, d));
}

}  // namespace
