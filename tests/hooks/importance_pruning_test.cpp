// SPDX-License-Identifier: MIT
// EASY-EP importance (by hand on a tiny ReLU block), keep sets, pruning
// (equal to the block built by hand from the remaining weights) and the
// run-time mask (equal to the pruned block, bit for bit).
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include <moekit/hooks/expert_importance.hpp>
#include <moekit/hooks/expert_pruning.hpp>
#include <moekit/hooks/observer_tee.hpp>
#include <moekit/hooks/routing_stats.hpp>

#include "hooks_test_util.hpp"

namespace {

using moekit::Index;
using moekit::Matrix;
using moekit_test::bit_identical;
using moekit_test::error_message;
using moekit_test::random_matrix;

// Two ReLU experts on d = f = 2 with w_in = I and w_out = c_e · I, so
// e_e(x) = c_e · relu(x); router rows 0 and (ln 3 / 3, 0): for x = (3, 4)
// the logits are (0, ln 3) and the softmax weights (1/4, 3/4). Top-2, no renormalisation.
moekit::MoEBlock<moekit::Router<>, moekit::ReluExperts, moekit::WeightedSum> tiny_relu_block() {
  Matrix router(2, 2);
  router << 0, 0, std::log(3.0f) / 3.0f, 0;
  Matrix w_in(4, 2), w_out(4, 2);
  w_in << 1, 0, 0, 1, 1, 0, 0, 1;
  w_out << 1, 0, 0, 1, 2, 0, 0, 2;  // c_0 = 1, c_1 = 2
  return {moekit::Router<>(router, moekit::RouterOptions().with_top_k(2).with_renormalize(false)),
          moekit::ReluExperts(2, w_in, w_out)};
}

TEST(EasyEpImportance, ByHandWithoutResidual) {
  auto block = tiny_relu_block();
  Matrix x(2, 2);
  x << 3, 4,   // e_0 = (3, 4), ‖·‖ = 5; e_1 = (6, 8), ‖·‖ = 10; g = (1/4, 3/4)
      -3, 4;   // relu: (0, 4); logits (0, -ln 3): g = (3/4, 1/4); ‖e_0‖ = 4, ‖e_1‖ = 8
  moekit::EasyEpImportance imp;
  block.forward(x, imp);
  const std::vector<double>& s = imp.scores();
  EXPECT_NEAR(s[0], 0.25 * 5 + 0.75 * 4, 1e-6);
  EXPECT_NEAR(s[1], 0.75 * 10 + 0.25 * 8, 1e-6);
  EXPECT_EQ(imp.pairs(), (std::vector<Index>{2, 2}));
  // A second forward adds.
  block.forward(x, imp);
  EXPECT_NEAR(imp.scores()[0], 2 * (0.25 * 5 + 0.75 * 4), 1e-6);
  EXPECT_EQ(imp.tokens(), 4);
}

TEST(EasyEpImportance, ByHandWithResidualTokenWeights) {
  auto block = tiny_relu_block();
  Matrix x(2, 2);
  x << 3, 4, -3, 4;
  Matrix h(2, 2);
  h << 1, 0,   // r_0 = 1/4 (3,4) + 3/4 (6,8) = (5.25, 7): h + r = (6.25, 7)
      0, -1;   // r_1 = 3/4 (0,4) + 1/4 (0,8) = (0, 5):    h + r = (0, 4): cos = -1 -> w = 2
  const double w0 = 1.0 - 6.25 / std::sqrt(6.25 * 6.25 + 49.0), w1 = 2.0;
  moekit::EasyEpImportance imp;
  imp.set_residual(h);
  block.forward(x, imp);
  EXPECT_NEAR(imp.scores()[0], w0 * 0.25 * 5 + w1 * 0.75 * 4, 1e-6);
  EXPECT_NEAR(imp.scores()[1], w0 * 0.75 * 10 + w1 * 0.25 * 8, 1e-6);
  // The residual applies to one forward only.
  block.forward(x, imp);
  EXPECT_NEAR(imp.scores()[0], w0 * 0.25 * 5 + w1 * 0.75 * 4 + 0.25 * 5 + 0.75 * 4, 1e-6);

  moekit::EasyEpImportance bad;
  bad.set_residual(Matrix::Zero(3, 2));
  EXPECT_EQ(error_message([&] { block.forward(x, bad); }),
            "moekit: EASY-EP residual h: expected shape [2, 2], got [3, 2]");
}

TEST(EasyEpImportance, MatchesADirectComputationOnARandomBlock) {
  auto block = moekit_test::random_block(8, 16, 24, 2, 31);
  const Matrix x = random_matrix(20, 16, 32);
  moekit::EasyEpImportance imp;
  block.forward(x, imp);
  const moekit::RoutingPlan& plan = block.last_plan();
  std::vector<double> expect(8, 0.0);
  for (Index t = 0; t < 20; ++t)
    for (Index j = 0; j < 2; ++j) {
      const std::int32_t e = plan.ids(t, j);
      const Matrix out = block.experts().forward(e, x.row(t));
      expect[static_cast<std::size_t>(e)] += static_cast<double>(plan.weights(t, j)) * out.cast<double>().norm();
    }
  for (std::size_t e = 0; e < 8; ++e) EXPECT_NEAR(imp.scores()[e], expect[e], 1e-5 * (1 + expect[e])) << e;
}

TEST(Importance, FrequencyMassAndTopExperts) {
  moekit::LoadObserver load;
  load.add(hooks_test::make_plan(4, {{2, 0}, {2, 3}, {1, 2}}, {{.6f, .4f}, {.9f, .1f}, {.7f, .3f}}));
  EXPECT_EQ(moekit::frequency_importance(load), (std::vector<double>{1, 1, 3, 1}));
  const auto mass = moekit::weight_mass_importance(load);
  EXPECT_NEAR(mass[1], 0.7, 1e-7);
  EXPECT_EQ(moekit::top_experts(mass, 2), (std::vector<std::int32_t>{1, 2}));
  // Ties go to the lower id: frequencies 1, 1, 3, 1 -> keep 2 and then 0.
  EXPECT_EQ(moekit::top_experts(moekit::frequency_importance(load), 2), (std::vector<std::int32_t>{0, 2}));
  EXPECT_EQ(error_message([&] { moekit::top_experts(mass, 5); }), "moekit: top experts n: expected 1 <= n <= 4, got 5");
}

// ------------------------------------------------------------------ pruning

TEST(Prune, EqualsTheBlockBuiltByHandFromTheRemainingWeights) {
  auto block = moekit_test::random_block(6, 16, 24, 2, 41);
  const std::vector<std::int32_t> keep{4, 1, 3};  // any order: new ids follow the old order 1, 3, 4
  auto pruned = moekit::prune(block, keep);
  ASSERT_EQ(pruned.num_experts(), 3);

  // By hand: router rows 1, 3, 4; expert weights of 1, 3, 4 through the per-expert views.
  const std::int32_t ids[] = {1, 3, 4};
  Matrix r(3, 16), gate(3 * 24, 16), up(3 * 24, 16), down(3 * 16, 24);
  for (Index i = 0; i < 3; ++i) {
    r.row(i) = block.router().weight().row(ids[i]);
    gate.middleRows(i * 24, 24) = block.experts().gate(ids[i]);
    up.middleRows(i * 24, 24) = block.experts().up(ids[i]);
    down.middleRows(i * 16, 16) = block.experts().down(ids[i]);
  }
  moekit::SwiGluMoEBlock by_hand(moekit::Router<>(r, block.router().options()),
                                 moekit::SwiGluExperts(3, gate, up, down));
  const Matrix x = random_matrix(40, 16, 42);
  EXPECT_TRUE(bit_identical(pruned.forward(x), by_hand.forward(x)));
  EXPECT_LE(moekit_test::max_abs_diff(pruned.forward(x), moekit::reference::forward(by_hand, x)), 1e-5);
}

TEST(Prune, MlpExpertsWithBiasesSharedExpertsAndOptions) {
  using Block = moekit::MoEBlock<moekit::Router<>, moekit::ReluExperts, moekit::WeightedSum,
                                 moekit::SharedExperts<moekit::ReluExperts>>;
  const Index E = 5, d = 8, f = 12;
  moekit::RouterOptions opt = moekit::RouterOptions().with_top_k(2).with_renormalize(false).with_scaling_factor(2.5f);
  Block block(moekit::Router<>(random_matrix(E, d, 1, 0.3f), opt, random_matrix(E, 1, 2, 0.1f).col(0)),
              moekit::ReluExperts(E, random_matrix(E * f, d, 3, 0.3f), random_matrix(E * d, f, 4, 0.3f)));
  block.experts().set_biases(random_matrix(E, f, 5, 0.1f), random_matrix(E, d, 6, 0.1f));
  block.experts().set_output_scale(0.75f);
  block.set_shared_experts(moekit::SharedExperts<moekit::ReluExperts>(
      moekit::ReluExperts(1, random_matrix(f, d, 7, 0.3f), random_matrix(d, f, 8, 0.3f)), random_matrix(d, 1, 9).col(0)));

  const std::vector<std::int32_t> keep{0, 2, 3};
  Block pruned = moekit::prune(block, keep);
  EXPECT_EQ(pruned.router().options().scaling_factor, 2.5f);
  EXPECT_EQ(pruned.router().options().normalization, moekit::Normalization::none);
  EXPECT_EQ(pruned.router().bias()[2], block.router().bias()[3]);
  EXPECT_EQ(pruned.experts().out_bias().row(1), block.experts().out_bias().row(2));
  EXPECT_EQ(pruned.experts().output_scale(), 0.75f);
  ASSERT_NE(pruned.shared_experts(), nullptr);

  // By hand from the remaining weights.
  Matrix r(3, d), w_in(3 * f, d), w_out(3 * d, f), b_in(3, f), b_out(3, d);
  moekit::Vector rb(3);
  for (Index i = 0; i < 3; ++i) {
    const std::int32_t e = keep[static_cast<std::size_t>(i)];
    r.row(i) = block.router().weight().row(e);
    rb[i] = block.router().bias()[e];
    w_in.middleRows(i * f, f) = block.experts().w_in(e);
    w_out.middleRows(i * d, d) = block.experts().w_out(e);
    b_in.row(i) = block.experts().in_bias().row(e);
    b_out.row(i) = block.experts().out_bias().row(e);
  }
  Block by_hand(moekit::Router<>(r, opt, rb), moekit::ReluExperts(3, w_in, w_out));
  by_hand.experts().set_biases(b_in, b_out);
  by_hand.experts().set_output_scale(0.75f);
  by_hand.set_shared_experts(*block.shared_experts());
  const Matrix x = random_matrix(33, d, 10);
  EXPECT_TRUE(bit_identical(pruned.forward(x), by_hand.forward(x)));

  // The mask gives the same outputs without copying.
  moekit::mask_experts(block, keep);
  EXPECT_TRUE(bit_identical(block.forward(x), pruned.forward(x)));
}

// Masked and pruned blocks agree bit for bit; their plans agree through the id map.
template <class Block>
void expect_masked_equals_pruned(Block block, const std::vector<std::int32_t>& keep, const Matrix& x) {
  Block pruned = moekit::prune(block, keep);
  moekit::mask_experts(block, keep);
  const Matrix ym = block.forward(x), yp = pruned.forward(x);
  EXPECT_TRUE(bit_identical(ym, yp)) << "max diff " << moekit_test::max_abs_diff(ym, yp);
  const auto map = moekit::pruned_id_map(block.num_experts(), keep);
  const moekit::RoutingPlan& pm = block.last_plan();
  const moekit::RoutingPlan& pp = pruned.last_plan();
  for (Index t = 0; t < x.rows(); ++t)
    for (Index j = 0; j < pm.top_k(); ++j) {
      const std::int32_t e = pm.ids(t, j);
      EXPECT_EQ(e < 0 ? -1 : map[static_cast<std::size_t>(e)], pp.ids(t, j)) << t << ", " << j;
      EXPECT_EQ(pm.weights(t, j), pp.weights(t, j));
    }
  moekit::clear_expert_mask(block);
  EXPECT_TRUE(block.router().steering().disabled().empty());
}

TEST(Prune, MaskedEqualsPrunedForSoftmaxSigmoidAndDynamicK) {
  const Matrix x = random_matrix(64, 16, 50);
  const std::vector<std::int32_t> keep{0, 2, 3, 5, 6};
  for (const bool renorm : {true, false})
    expect_masked_equals_pruned(moekit_test::random_block(8, 16, 20, 3, 51, renorm, 1.5f), keep, x);

  const float sd = 0.25f;
  {  // sigmoid scores (no correction bias), renormalised
    using R = moekit::Router<moekit::SigmoidScoring>;
    moekit::MoEBlock<R, moekit::SwiGluExperts, moekit::WeightedSum> b(
        R(random_matrix(8, 16, 52, sd), moekit::RouterOptions().with_top_k(2)),
        moekit::SwiGluExperts(8, random_matrix(8 * 20, 16, 53, sd), random_matrix(8 * 20, 16, 54, sd),
                              random_matrix(8 * 16, 20, 55, sd)));
    expect_masked_equals_pruned(b, keep, x);
  }
  {  // top-p dynamic k
    using R = moekit::Router<moekit::SoftmaxScoring, moekit::TopPSelector>;
    moekit::MoEBlock<R, moekit::SwiGluExperts, moekit::WeightedSum> b(
        R(random_matrix(8, 16, 56, 1.0f), moekit::RouterOptions().with_top_k(4), moekit::Vector(),
          moekit::TopPSelector(0.6f)),
        moekit::SwiGluExperts(8, random_matrix(8 * 20, 16, 57, sd), random_matrix(8 * 20, 16, 58, sd),
                              random_matrix(8 * 16, 20, 59, sd)));
    expect_masked_equals_pruned(b, keep, x);
  }
}

TEST(Prune, RouterStateIsRenumbered) {
  auto block = moekit_test::random_block(6, 8, 12, 2, 61);
  moekit::Vector corr(6), delta(6);
  corr << 0, .1f, .2f, .3f, .4f, .5f;
  delta << 1, 2, 3, 4, 5, 6;
  block.router().set_correction_bias(corr);
  block.router().steering().set_logit_bias(delta).disable({1, 4}).force({5}).promote({0, 3}, 0.5f).set_temperature(2.0f);
  const auto pruned = moekit::prune(block, {0, 1, 3, 5});  // new ids 0, 1, 2, 3
  const auto& r = pruned.router();
  EXPECT_EQ(r.correction_bias(), (moekit::Vector(4) << 0, .1f, .3f, .5f).finished());
  EXPECT_EQ(r.steering().logit_bias(), (moekit::Vector(4) << 1, 2, 4, 6).finished());
  EXPECT_EQ(r.steering().disabled(), (std::vector<std::int32_t>{1}));  // 4 is gone
  EXPECT_EQ(r.steering().forced(), (std::vector<std::int32_t>{3}));
  EXPECT_EQ(r.steering().promoted(), (std::vector<std::int32_t>{0, 2}));
  EXPECT_EQ(r.steering().promote_strength(), 0.5f);
  EXPECT_EQ(r.steering().temperature(), 2.0f);
}

TEST(Prune, NullExpertRowsStayLast) {
  Matrix w = random_matrix(6, 8, 71);  // 4 routed + 2 null
  moekit::Router<> router(w, moekit::RouterOptions().with_top_k(2).with_null_experts(2));
  const auto pruned = moekit::prune_router(router, {1, 3});
  ASSERT_EQ(pruned.num_experts(), 2);
  ASSERT_EQ(pruned.num_null_experts(), 2);
  EXPECT_EQ(pruned.weight().row(0), w.row(1));
  EXPECT_EQ(pruned.weight().row(1), w.row(3));
  EXPECT_EQ(pruned.weight().row(2), w.row(4));
  EXPECT_EQ(pruned.weight().row(3), w.row(5));
}

TEST(Prune, Errors) {
  auto block = moekit_test::random_block(4, 8, 12, 2, 81);
  EXPECT_EQ(error_message([&] { moekit::prune(block, {}); }), "moekit: keep set: expected at least 1 expert, got none");
  EXPECT_EQ(error_message([&] { moekit::prune(block, {1, 4}); }), "moekit: keep set: expected expert ids in [0, 4), got 4");
  EXPECT_EQ(error_message([&] { moekit::prune(block, {1, 1}); }), "moekit: keep set: expert 1 named twice");
  EXPECT_EQ(error_message([&] { moekit::prune(block, {2}); }),
            "moekit: keep set: expected at least top_k = 2 experts (with 0 null experts), got 1");
  EXPECT_EQ(error_message([&] { moekit::mask_experts(block, {-1}); }),
            "moekit: keep set: expected expert ids in [0, 4), got -1");
}

TEST(Prune, EasyEpEndToEndKeepsTheImportantExperts) {
  // Calibration tokens that only ever reach experts {1, 5} (their router rows
  // point along x; the rest point away): EASY-EP keeps exactly those.
  const Index E = 6, d = 8;
  Matrix r = Matrix::Constant(E, d, -1.0f);
  r.row(1).setConstant(1.0f);
  r.row(5).setConstant(0.9f);
  auto block = moekit_test::random_block(E, d, 12, 2, 91);
  block.router() = moekit::Router<>(r, moekit::RouterOptions().with_top_k(2));
  const Matrix x = random_matrix(30, d, 92).cwiseAbs();
  moekit::EasyEpImportance imp;
  moekit::LoadObserver load;
  auto both = moekit::tee(imp, load);
  block.forward(x, both);
  EXPECT_EQ(moekit::top_experts(imp.scores(), 2), (std::vector<std::int32_t>{1, 5}));
  EXPECT_EQ(load.counts()[1], 30);
  auto pruned = moekit::prune(block, moekit::top_experts(imp.scores(), 2));
  // Nothing else was used; renormalised weights round differently (softmax over 2 vs 6).
  EXPECT_LE(moekit_test::max_abs_diff(pruned.forward(x), block.forward(x)), 1e-6);
}

}  // namespace
