// SPDX-License-Identifier: MIT
// Routing statistics observers, layer transitions and the observer tee,
// checked by hand on tiny plans and against the block's own plans.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include <moekit/hooks/layer_transitions.hpp>
#include <moekit/hooks/observer_tee.hpp>
#include <moekit/hooks/routing_stats.hpp>
#include <moekit/hooks/routing_trace.hpp>

#include "hooks_test_util.hpp"

namespace {

using hooks_test::make_plan;
using moekit::CountMatrix;
using moekit::Index;
using moekit::Matrix;
using moekit_test::error_message;

TEST(LoadObserver, CountsAndMassByHand) {
  moekit::LoadObserver load;
  // Token 0 -> experts 2 (0.75), 0 (0.25); token 1 -> 2 (0.5), empty; token 2 -> 1 (0.6), 2 (0.4).
  load.add(make_plan(3, {{2, 0}, {2, -1}, {1, 2}}, {{.75f, .25f}, {.5f, 0}, {.6f, .4f}}));
  EXPECT_EQ(load.tokens(), 3);
  EXPECT_EQ(load.counts(), (std::vector<Index>{1, 1, 3}));
  EXPECT_NEAR(load.weight_mass()[0], 0.25, 1e-7);
  EXPECT_NEAR(load.weight_mass()[1], 0.6, 1e-7);
  EXPECT_NEAR(load.weight_mass()[2], 1.65, 1e-7);
  EXPECT_NEAR(load.frequency()[2], 0.6, 1e-12);  // 3 of 5 pairs
  EXPECT_NEAR(load.mass_fraction()[1], 0.6 / 2.5, 1e-7);
  EXPECT_EQ(error_message([&] { load.add(make_plan(4, {{0}}, {{1}})); }),
            "moekit: load observer: plan num_experts: expected 3 (as the first plan observed), got 4");
}

TEST(LoadObserver, NullExpertsDoNotCount) {
  moekit::RoutingPlan p = make_plan(2, {{0, 2}, {3, 1}}, {{.5f, .5f}, {.5f, .5f}});
  p.num_null_experts = 2;
  moekit::LoadObserver load;
  load.add(p);
  EXPECT_EQ(load.counts(), (std::vector<Index>{1, 1}));
}

TEST(LoadObserver, MatchesTheBlocksPlansOverForwards) {
  auto block = moekit_test::random_block(8, 16, 32, 2, 3);
  moekit::LoadObserver load;
  std::vector<Index> expect(8, 0);
  double mass = 0;
  for (std::uint32_t s = 0; s < 3; ++s) {
    const Matrix x = moekit_test::random_matrix(9, 16, 40 + s);
    block.forward(x, load);
    const auto c = block.last_plan().expert_counts();
    for (std::size_t e = 0; e < 8; ++e) expect[e] += c[e];
    mass += static_cast<double>(block.last_plan().weights.sum());
  }
  EXPECT_EQ(load.counts(), expect);
  double got = 0;
  for (const double m : load.weight_mass()) got += m;
  EXPECT_NEAR(got, mass, 1e-5);
  EXPECT_NEAR(got, 27.0, 1e-5);  // renormalised top-2: each token's weights sum to 1
}

TEST(EntropyObserver, ByHand) {
  moekit::EntropyObserver ent;
  Matrix logits(3, 2);
  logits << 0, 0,                                  // uniform: ln 2
      0, std::log(3.0f),                           // p = (1/4, 3/4)
      -1000, 1000;                                 // one-hot: 0 (0 · ln 0 = 0)
  ent.add(logits);
  const double h1 = std::log(2.0);
  const double h2 = -(0.25 * std::log(0.25) + 0.75 * std::log(0.75));
  EXPECT_EQ(ent.tokens(), 3);
  EXPECT_NEAR(ent.total_entropy(), h1 + h2, 1e-7);
  EXPECT_NEAR(ent.mean_entropy(), (h1 + h2) / 3.0, 1e-7);
}

TEST(EntropyObserver, SeesTheBlocksLogits) {
  auto block = moekit_test::random_block(6, 8, 16, 2, 9);
  moekit::EntropyObserver ent;
  const Matrix x = moekit_test::random_matrix(4, 8, 10);
  block.forward(x, ent);
  const Matrix& z = block.last_logits();
  double sum = 0;
  for (Index t = 0; t < 4; ++t) {
    const Eigen::VectorXd p = (z.row(t).cast<double>().array() - z.row(t).maxCoeff()).exp().matrix().transpose();
    const Eigen::VectorXd q = p / p.sum();
    sum += -(q.array() * q.array().log()).sum();
  }
  EXPECT_NEAR(ent.mean_entropy(), sum / 4, 1e-9);
  EXPECT_LE(ent.mean_entropy(), std::log(6.0));
}

TEST(CoActivationObserver, ByHand) {
  moekit::CoActivationObserver co;
  co.add(make_plan(4, {{0, 1, 2}, {1, 0, -1}, {3, 1, 0}}, {{1, 1, 1}, {1, 1, 0}, {1, 1, 1}}));
  CountMatrix expect(4, 4);
  expect << 3, 3, 1, 1,  //
      3, 3, 1, 1,        //
      1, 1, 1, 0,        //
      1, 1, 0, 1;
  EXPECT_EQ(co.counts(), expect);
}

TEST(TransitionRecorder, ByHandAndEqualToTheOfflineCounts) {
  moekit::TransitionRecorder rec(3);
  moekit::TraceRecorder trace_rec(3);
  const auto p0 = make_plan(3, {{0, 1}, {2, 0}}, {{1, 1}, {1, 1}});
  const auto p1 = make_plan(3, {{1, 2}, {1, -1}}, {{1, 1}, {1, 0}});
  const auto p2 = make_plan(3, {{0, 2}, {2, 1}}, {{1, 1}, {1, 1}});
  const Matrix none;
  for (const auto* p : {&p0, &p1, &p2}) {
    const Index l = p == &p0 ? 0 : p == &p1 ? 1 : 2;
    auto obs = rec.layer(l);
    obs.on_route(none, none, *p);
    trace_rec.record(l, *p);
  }
  // Layer 0 -> 1: token 0 {0,1} x {1,2}; token 1 {2,0} x {1}.
  CountMatrix c01(3, 3);
  c01 << 0, 2, 1,  //
      0, 1, 1,     //
      0, 1, 0;
  EXPECT_EQ(rec.counts(0), c01);
  // Layer 1 -> 2: token 0 {1,2} x {0,2}; token 1 {1} x {2,1}.
  CountMatrix c12(3, 3);
  c12 << 0, 0, 0,  //
      1, 1, 2,     //
      1, 0, 1;
  EXPECT_EQ(rec.counts(1), c12);
  const moekit::RoutingTrace tr = trace_rec.trace();
  EXPECT_EQ(moekit::transition_counts(tr, 0), c01);
  EXPECT_EQ(moekit::transition_counts(tr, 1), c12);

  // A batch of another size at layer 1 than layer 0's latest is an error.
  EXPECT_EQ(error_message([&] { rec.record(1, make_plan(3, {{0, 1}}, {{1, 1}})); }),
            "moekit: transition recorder: layer 1 saw 1 tokens, expected 2 (the latest batch of layer 0)");
  moekit::TransitionRecorder fresh(2);
  EXPECT_EQ(error_message([&] { fresh.record(1, p0); }),
            "moekit: transition recorder: layer 1 reported before layer 0 saw any batch");
}

TEST(TransitionRecorder, BlocksAsLayers) {
  std::vector<moekit::SwiGluMoEBlock> blocks;
  for (std::uint32_t l = 0; l < 4; ++l) blocks.push_back(moekit_test::random_block(5, 8, 16, 2, 60 + l));
  moekit::TransitionRecorder trans(4);
  moekit::TraceRecorder traces(4);
  for (std::uint32_t batch = 0; batch < 3; ++batch) {
    Matrix h = moekit_test::random_matrix(6, 8, 70 + batch);
    for (Index l = 0; l < 4; ++l) {
      auto a = trans.layer(l);
      auto b = traces.layer(l);
      auto both = moekit::tee(a, b);
      h = blocks[static_cast<std::size_t>(l)].forward(h, both);
    }
  }
  const moekit::RoutingTrace tr = traces.trace();
  for (Index l = 0; l < 3; ++l) {
    EXPECT_EQ(trans.counts(l), moekit::transition_counts(tr, l)) << "layer " << l;
    EXPECT_EQ(trans.counts(l).sum(), 18 * 4);  // 18 tokens x 2 x 2 pairs
  }
}

// An observer that wants expert outputs, to check the tee forwards them.
struct OutputCounter {
  static constexpr bool enabled = true;
  bool want = true;
  Index rows = 0, calls = 0;
  bool wants_expert_outputs() const { return want; }
  void on_expert_output(Index, const std::int32_t*, const std::int32_t*, Index n, const float*) {
    rows += n;
    ++calls;
  }
};

TEST(ObserverTee, ForwardsToEveryMember) {
  auto block = moekit_test::random_block(6, 8, 16, 2, 21);
  const Matrix x = moekit_test::random_matrix(7, 8, 22);
  moekit::LoadObserver alone;
  block.forward(x, alone);

  moekit::LoadObserver load;
  moekit::CoActivationObserver co;
  OutputCounter out, quiet;
  quiet.want = false;
  auto all = moekit::tee(load, co, out, quiet);
  EXPECT_TRUE(all.wants_expert_outputs());
  const Matrix y = block.forward(x, all);
  EXPECT_TRUE(moekit_test::bit_identical(y, block.forward(x)));
  EXPECT_EQ(load.counts(), alone.counts());
  EXPECT_EQ(co.counts().diagonal().sum(), 14);
  EXPECT_EQ(out.rows, 14);  // every routed pair
  EXPECT_EQ(quiet.calls, 0);
}

}  // namespace
