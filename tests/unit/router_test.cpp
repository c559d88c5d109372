// SPDX-License-Identifier: MIT
// Router primitives: softmax scoring, top-k with the tie rule, weighting
// options, and the errors bad configurations raise.
#include <algorithm>
#include <numeric>
#include <vector>

#include "test_util.hpp"

namespace {

using moekit::Index;
using moekit::Matrix;
using moekit::Router;
using moekit::RouterOptions;
using moekit::RoutingPlan;
using moekit::TopKSelector;
using moekit::Vector;
using moekit_test::error_message;
using moekit_test::random_matrix;

std::vector<std::int32_t> topk_ids(const std::vector<float>& s, Index k) {
  std::vector<std::int32_t> ids(static_cast<std::size_t>(k));
  std::vector<float> vals(static_cast<std::size_t>(k));
  TopKSelector::top_k(s.data(), static_cast<Index>(s.size()), k, ids.data(), vals.data());
  return ids;
}

TEST(Softmax, SumsToOneAndIsShiftInvariant) {
  const float logits[5] = {1.0f, -2.0f, 0.5f, 3.0f, 3.0f};
  float p[5], q[5];
  moekit::SoftmaxScoring::apply(logits, p, 5);
  float shifted[5];
  for (int i = 0; i < 5; ++i) shifted[i] = logits[i] + 80.0f;  // would overflow exp without max-subtraction
  moekit::SoftmaxScoring::apply(shifted, q, 5);
  double sum = 0;
  for (int i = 0; i < 5; ++i) {
    sum += p[i];
    EXPECT_NEAR(p[i], q[i], 1e-7);
  }
  EXPECT_NEAR(sum, 1.0, 1e-6);
  EXPECT_EQ(p[3], p[4]);
  double denom = 0;
  for (float l : logits) denom += std::exp(static_cast<double>(l));
  EXPECT_NEAR(p[0], std::exp(1.0) / denom, 1e-7);
}

TEST(TopK, RankOrderAndTiesGoToLowerIndex) {
  // The example of SEMANTICS.md §T: torch gives [4, 7, 2]; our rule gives [1, 2, 4].
  EXPECT_EQ(topk_ids({.1f, .5f, .5f, .2f, .5f, 0.f, .3f, .5f}, 3), (std::vector<std::int32_t>{1, 2, 4}));
  // All equal: experts 0..k-1.
  EXPECT_EQ(topk_ids(std::vector<float>(16, 0.0f), 4), (std::vector<std::int32_t>{0, 1, 2, 3}));
  // Ties below the boundary must not displace a strictly larger later score.
  EXPECT_EQ(topk_ids({1.f, 1.f, 1.f, 2.f}, 2), (std::vector<std::int32_t>{3, 0}));
  // k = n returns everything in rank order.
  EXPECT_EQ(topk_ids({.3f, .1f, .3f, .9f}, 4), (std::vector<std::int32_t>{3, 0, 2, 1}));
  EXPECT_EQ(topk_ids({-1.f}, 1), (std::vector<std::int32_t>{0}));
  EXPECT_EQ(topk_ids({-std::numeric_limits<float>::infinity(), -5.f}, 1), (std::vector<std::int32_t>{1}));
}

TEST(TopK, MatchesStableSortOnRandomScoresWithManyTies) {
  std::mt19937 gen(5);
  for (int trial = 0; trial < 2000; ++trial) {
    const Index n = 1 + static_cast<Index>(gen() % 70);
    const Index k = 1 + static_cast<Index>(gen() % static_cast<std::uint32_t>(n));
    std::vector<float> s(static_cast<std::size_t>(n));
    for (auto& v : s) v = static_cast<float>(gen() % 7);  // small integers: ties everywhere
    std::vector<std::int32_t> order(static_cast<std::size_t>(n));
    std::iota(order.begin(), order.end(), 0);
    std::stable_sort(order.begin(), order.end(),
                     [&](std::int32_t a, std::int32_t b) { return s[static_cast<std::size_t>(a)] > s[static_cast<std::size_t>(b)]; });
    order.resize(static_cast<std::size_t>(k));
    ASSERT_EQ(topk_ids(s, k), order) << "n=" << n << " k=" << k;
  }
}

TEST(Router, MatchesReferenceForEveryOption) {
  const Index E = 13, d = 19, T = 41;
  const Matrix x = random_matrix(T, d, 1);
  for (Index k : {Index(1), Index(3), E})
    for (bool renorm : {false, true})
      for (float scale : {1.0f, 2.5f})
        for (bool with_bias : {false, true}) {
          Vector bias = with_bias ? Vector(random_matrix(E, 1, 9).col(0)) : Vector();
          const RouterOptions opt = RouterOptions().with_top_k(k).with_renormalize(renorm).with_scaling_factor(scale);
          Router<> r(random_matrix(E, d, 2, 0.3f), opt, bias);
          const RoutingPlan got = r.route(x);
          const RoutingPlan ref = moekit::reference::route(r, x);
          ASSERT_EQ(got.ids, ref.ids) << "k=" << k << " renorm=" << renorm;
          EXPECT_LE((got.weights - ref.weights).cwiseAbs().maxCoeff(), 1e-6f * scale);
          if (renorm) {
            for (Index t = 0; t < T; ++t) EXPECT_NEAR(got.weights.row(t).sum(), scale, 1e-5f * scale);
          }
        }
}

TEST(Router, LogitsAreLinearPlusBias) {
  const Index E = 4, d = 3;
  Matrix w(E, d);
  w << 1, 0, 0, 0, 1, 0, 0, 0, 1, 1, 1, 1;
  Vector b(E);
  b << 0.5f, 0, 0, -1;
  Router<> r(w, RouterOptions().with_top_k(2), b);
  Matrix x(1, d);
  x << 2, 3, 4;
  const Matrix l = r.logits(x);
  EXPECT_EQ(l(0, 0), 2.5f);
  EXPECT_EQ(l(0, 1), 3.0f);
  EXPECT_EQ(l(0, 2), 4.0f);
  EXPECT_EQ(l(0, 3), 8.0f);
  const RoutingPlan p = r.route(x);
  EXPECT_EQ(p.ids(0, 0), 3);
  EXPECT_EQ(p.ids(0, 1), 2);
}

TEST(Router, ZeroTokenAndTieToken) {
  const Index E = 8, d = 6;
  Router<> r(random_matrix(E, d, 3), RouterOptions().with_top_k(3));
  const RoutingPlan empty = r.route(Matrix(0, d));
  EXPECT_EQ(empty.num_tokens(), 0);
  EXPECT_EQ(empty.top_k(), 3);
  // An all-zero token: every logit is 0, so experts 0, 1, 2 with weight 1/3.
  const RoutingPlan p = r.route(Matrix::Zero(1, d));
  EXPECT_EQ(p.ids(0, 0), 0);
  EXPECT_EQ(p.ids(0, 1), 1);
  EXPECT_EQ(p.ids(0, 2), 2);
  for (int j = 0; j < 3; ++j) EXPECT_FLOAT_EQ(p.weights(0, j), 1.0f / 3.0f);
}

TEST(Router, DuplicatedRowsTieTowardLowerExpert) {
  const Index E = 6, d = 5, T = 50;
  Matrix w = random_matrix(E, d, 4);
  w.row(4) = w.row(1);  // experts 1 and 4 tie on every token
  Router<> r(w, RouterOptions().with_top_k(2));
  const RoutingPlan p = r.route(random_matrix(T, d, 5));
  for (Index t = 0; t < T; ++t)
    for (Index j = 0; j < 2; ++j) {
      if (p.ids(t, j) == 4) {
        // 4 may only be chosen if 1 was chosen in an earlier slot.
        ASSERT_TRUE(j == 1 && p.ids(t, 0) == 1) << "token " << t;
      }
    }
}

TEST(Router, BadConfigurationsThrowNamedErrors) {
  const Matrix w = random_matrix(4, 3, 1);
  EXPECT_NE(error_message([&] { Router<>(w, RouterOptions().with_top_k(5)); }).find("top_k"), std::string::npos);
  EXPECT_NE(error_message([&] { Router<>(w, RouterOptions().with_top_k(0)); }).find("got 0"), std::string::npos);
  EXPECT_NE(error_message([&] { Router<>(w, RouterOptions().with_top_k(-1)); }).find("top_k"), std::string::npos);
  EXPECT_NE(error_message([&] { Router<>(Matrix(0, 3), RouterOptions().with_top_k(1)); }).find("router weight"), std::string::npos);
  EXPECT_NE(error_message([&] { Router<>(w, RouterOptions(), Vector::Zero(3)); }).find("router bias: expected size 4, got 3"), std::string::npos);
  Matrix bad = w;
  bad(2, 1) = std::numeric_limits<float>::quiet_NaN();
  EXPECT_NE(error_message([&] { Router<>(bad, RouterOptions()); }).find("router weight: non-finite value nan at [2, 1]"), std::string::npos);
  EXPECT_NE(error_message([&] { Router<>(w, RouterOptions().with_scaling_factor(INFINITY)); }).find("scaling_factor"), std::string::npos);
  Router<> ok(w, RouterOptions().with_top_k(2));
  EXPECT_NE(error_message([&] { ok.route(Matrix::Zero(2, 5)); }).find("expected size 3, got 5"), std::string::npos);
  RoutingPlan plan;
  Matrix logits = Matrix::Zero(2, 4);
  logits(1, 3) = INFINITY;
  EXPECT_NE(error_message([&] { ok.route_logits(logits, plan); }).find("router logits: non-finite value inf at [1, 3]"), std::string::npos);
}

}  // namespace
