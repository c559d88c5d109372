// SPDX-License-Identifier: MIT
// Every scoring, selection, steering, weighting and capacity form of the
// router against the double-precision reference (odd shapes, deliberate
// ties), plus hand-checked cases of the exact semantics.
#include <algorithm>
#include <limits>
#include <set>

#include "test_util.hpp"

namespace {

using moekit::CapacityLimit;
using moekit::GroupedTopKSelector;
using moekit::GroupScore;
using moekit::Index;
using moekit::LogitScoring;
using moekit::MaskFill;
using moekit::Matrix;
using moekit::Normalization;
using moekit::PromoteScale;
using moekit::Router;
using moekit::RouterOptions;
using moekit::RoutingPlan;
using moekit::SigmoidScoring;
using moekit::SoftmaxScoring;
using moekit::ThresholdSelector;
using moekit::TopKSelector;
using moekit::TopPSelector;
using moekit::Vector;
using moekit::WeightSource;
using moekit_test::error_message;
using moekit_test::random_matrix;

// Inputs whose logits are small integers: ties everywhere.
Matrix integer_matrix(Index rows, Index cols, std::uint32_t seed, int range = 3) {
  std::mt19937 gen(seed);
  Matrix m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(static_cast<int>(gen() % static_cast<unsigned>(2 * range + 1)) - range);
  return m;
}

template <class R>
void expect_matches_reference(const R& router, const Matrix& x, const std::string& what) {
  const RoutingPlan got = router.route(x);
  const RoutingPlan ref = moekit::reference::route(router, x);
  ASSERT_EQ(got.ids, ref.ids) << what;
  ASSERT_EQ(got.dropped, ref.dropped) << what;
  EXPECT_EQ(got.num_null_experts, ref.num_null_experts);
  if (got.weights.size()) {
    EXPECT_LE((got.weights - ref.weights).cwiseAbs().maxCoeff(),
              1e-5f * std::max(1.0f, ref.weights.cwiseAbs().maxCoeff()))
        << what;
  }
}

// Random and integer (tie-heavy) inputs over odd shapes.
template <class Make>
void sweep(const std::string& name, Make make) {
  for (Index E : {Index(4), Index(12), Index(36)})
    for (Index T : {Index(0), Index(1), Index(7), Index(33)})
      for (int ties = 0; ties < 2; ++ties) {
        const Index d = 5 + E % 7;
        const Matrix x = ties ? integer_matrix(T, d, static_cast<std::uint32_t>(E * 100 + T)) : random_matrix(T, d, static_cast<std::uint32_t>(E + T));
        const Matrix w = ties ? integer_matrix(E, d, static_cast<std::uint32_t>(E), 1) : random_matrix(E, d, static_cast<std::uint32_t>(E * 3), 0.5f);
        const auto router = make(w, E);
        expect_matches_reference(router, x, name + " E=" + std::to_string(E) + " T=" + std::to_string(T) + (ties ? " ties" : ""));
      }
}

TEST(RoutingForms, SoftmaxTopKVariants) {
  for (Index k : {1, 3})
    for (bool renorm : {false, true})
      sweep("softmax top-k", [&](const Matrix& w, Index E) {
        return Router<>(w, RouterOptions().with_top_k(std::min(k, E)).with_renormalize(renorm).with_scaling_factor(1.5f));
      });
}

TEST(RoutingForms, SigmoidAndLogitScoring) {
  sweep("sigmoid", [](const Matrix& w, Index) {
    return Router<SigmoidScoring>(w, RouterOptions().with_top_k(2).with_normalization(Normalization::sum, 1.0f, 1e-20f).with_scaling_factor(2.5f));
  });
  // gpt-oss / Granite: top-k on logits, softmax over the selected.
  sweep("logits+softmax_of_selected", [](const Matrix& w, Index E) {
    return Router<LogitScoring>(w, RouterOptions().with_top_k(2).with_weight_source(WeightSource::softmax_of_selected).with_renormalize(false),
                                Vector::LinSpaced(E, -0.5f, 0.5f));
  });
  // Llama-4: top-k on logits, sigmoid of the selected, no normalisation.
  sweep("logits+sigmoid_of_selected", [](const Matrix& w, Index) {
    return Router<LogitScoring>(w, RouterOptions().with_top_k(1).with_weight_source(WeightSource::sigmoid_of_selected).with_renormalize(false));
  });
}

TEST(RoutingForms, PNormAndPruning) {
  sweep("p-norm 2", [](const Matrix& w, Index) {
    return Router<>(w, RouterOptions().with_top_k(3).with_normalization(Normalization::p_norm, 2.0f));
  });
  sweep("prune", [](const Matrix& w, Index) {
    return Router<>(w, RouterOptions().with_top_k(3).with_prune_ratio(0.6f));
  });
}

TEST(RoutingForms, GroupedTopK) {
  for (GroupScore gs : {GroupScore::max, GroupScore::sum_of_top2})
    for (MaskFill fill : {MaskFill::neg_inf, MaskFill::zero}) {
      sweep("grouped softmax", [&](const Matrix& w, Index E) {
        return Router<SoftmaxScoring, GroupedTopKSelector>(w, RouterOptions().with_top_k(2).with_renormalize(false).with_scaling_factor(16.0f), Vector(),
                                                           GroupedTopKSelector(E / 2, 1, gs, fill));
      });
      sweep("grouped sigmoid + correction", [&](const Matrix& w, Index E) {
        Router<SigmoidScoring, GroupedTopKSelector> r(w, RouterOptions().with_top_k(3).with_normalization(Normalization::sum, 1.0f, 1e-20f).with_scaling_factor(2.5f),
                                                      Vector(), GroupedTopKSelector(E / 4, std::max<Index>(1, E / 8), gs, fill));
        r.set_correction_bias(Vector::LinSpaced(E, 0.2f, -0.2f));
        return r;
      });
    }
}

TEST(RoutingForms, DynamicK) {
  sweep("threshold", [](const Matrix& w, Index E) {
    return Router<SoftmaxScoring, ThresholdSelector>(w, RouterOptions().with_top_k(std::min<Index>(4, E)), Vector(), ThresholdSelector(0.15f, 1));
  });
  sweep("top-p", [](const Matrix& w, Index E) {
    return Router<SoftmaxScoring, TopPSelector>(w, RouterOptions().with_top_k(std::min<Index>(4, E)).with_renormalize(false), Vector(), TopPSelector(0.5f, 2));
  });
}

TEST(RoutingForms, SteeringAndCapacityAndNullExperts) {
  sweep("steering", [](const Matrix& w, Index E) {
    Router<> r(w, RouterOptions().with_top_k(2).with_renormalize(false));
    r.steering().set_logit_bias(Vector::LinSpaced(E, -1.0f, 1.0f)).promote({1}, 0.7f, PromoteScale::logit_std).set_temperature(1.7f).disable({0}).force({static_cast<std::int32_t>(E - 1)});
    return r;
  });
  sweep("switch capacity", [](const Matrix& w, Index) {
    return Router<>(w, RouterOptions().with_top_k(1).with_renormalize(false).with_capacity(CapacityLimit::absolute(2)));
  });
  sweep("nllb capacity", [](const Matrix& w, Index) {
    return Router<>(w, RouterOptions().with_top_k(2).with_renormalize(false).with_capacity(CapacityLimit::of_tokens(0.25f).with_renormalize_after_drop(true)));
  });
  sweep("null experts", [](const Matrix& w, Index E) {
    return Router<>(w, RouterOptions().with_top_k(std::min<Index>(3, E)).with_null_experts(E / 4));
  });
}

// ---- Hand-checked semantics ------------------------------------------------

Router<LogitScoring> identity_router(Index E, RouterOptions opt) {
  // Logits equal the input: W = I.
  return Router<LogitScoring>(Matrix::Identity(E, E), opt.with_weight_source(WeightSource::scores).with_renormalize(false));
}

Matrix row(std::initializer_list<float> v) {
  Matrix m(1, static_cast<Index>(v.size()));
  Index i = 0;
  for (float f : v) m(0, i++) = f;
  return m;
}

TEST(Steering, OrderAndEffectOnThePlan) {
  auto r = identity_router(5, RouterOptions().with_top_k(2));
  const Matrix x = row({1.0f, 4.0f, 3.0f, 2.0f, 0.0f});
  EXPECT_EQ(r.route(x).ids, (moekit::IdMatrix(1, 2) << 1, 2).finished());
  // Additive bias changes ids and the (logit) weights.
  Vector delta = Vector::Zero(5);
  delta[4] = 10.0f;
  r.steering().set_logit_bias(delta);
  RoutingPlan p = r.route(x);
  EXPECT_EQ(p.ids(0, 0), 4);
  EXPECT_FLOAT_EQ(p.weights(0, 0), 10.0f);
  // Disabling the biased expert: never selected.
  r.steering().disable({4, 1});
  p = r.route(x);
  EXPECT_EQ(p.ids, (moekit::IdMatrix(1, 2) << 2, 3).finished());
  // Forcing: selected first even with a low logit; its weight is its own score.
  r.steering().force({0});
  p = r.route(x);
  EXPECT_EQ(p.ids, (moekit::IdMatrix(1, 2) << 0, 2).finished());
  EXPECT_FLOAT_EQ(p.weights(0, 0), 1.0f);
  // Temperature divides the steered logits.
  r.steering().clear();
  r.steering().set_temperature(2.0f);
  EXPECT_FLOAT_EQ(r.route(x).weights(0, 0), 2.0f);
  // Promotion by strength x std: std of {1,4,3,2,0} = sqrt(2).
  r.steering().clear();
  r.steering().promote({4}, 3.0f, PromoteScale::logit_std);
  p = r.route(x);
  EXPECT_EQ(p.ids(0, 0), 4);
  EXPECT_NEAR(p.weights(0, 0), 3.0f * std::sqrt(2.0f), 1e-5f);
  // Per-token matrix must match the batch.
  r.steering().clear();
  r.steering().set_token_bias(Matrix::Zero(2, 5));
  EXPECT_NE(error_message([&] { r.route(x); }).find("expected 1 rows"), std::string::npos);
  r.steering().clear();
  EXPECT_FALSE(r.steering().active());
  EXPECT_NE(error_message([&] { r.steering().disable({5}); }).find("steering disable: expected expert ids in [0, 5), got 5"), std::string::npos);
  r.steering().disable({2});
  EXPECT_NE(error_message([&] { r.steering().force({3, 2}); }).find("expert 2 cannot be both disabled and forced"), std::string::npos);
  r.steering().clear();
  EXPECT_NE(error_message([&] { r.steering().set_temperature(0.0f); }).find("temperature"), std::string::npos);
  EXPECT_NE(error_message([&] { r.steering().set_logit_bias(Vector::Zero(4)); }).find("expected size 5, got 4"), std::string::npos);
}

TEST(Steering, CorrectionBiasSelectsButDoesNotWeigh) {
  Router<SigmoidScoring> r(Matrix::Identity(4, 4), RouterOptions().with_top_k(1).with_renormalize(false));
  Vector b = Vector::Zero(4);
  b[3] = 5.0f;
  r.set_correction_bias(b);
  const RoutingPlan p = r.route(row({2.0f, 0.0f, 0.0f, -1.0f}));
  EXPECT_EQ(p.ids(0, 0), 3);
  EXPECT_FLOAT_EQ(p.weights(0, 0), 1.0f / (1.0f + std::exp(1.0f)));
}

TEST(Steering, DisabledExpertStaysOutDespiteCorrectionBias) {
  Router<SigmoidScoring> r(Matrix::Identity(4, 4), RouterOptions().with_top_k(2).with_renormalize(false));
  Vector b = Vector::Zero(4);
  b[3] = 5.0f;
  r.set_correction_bias(b);
  r.steering().disable({3});
  const RoutingPlan p = r.route(row({0.5f, 0.2f, 0.1f, 3.0f}));
  EXPECT_EQ(p.ids, (moekit::IdMatrix(1, 2) << 0, 1).finished());
  EXPECT_EQ(moekit::reference::route(r, row({0.5f, 0.2f, 0.1f, 3.0f})).ids, p.ids);
}

TEST(GroupedTopK, HandCase) {
  // 8 experts in 4 groups of 2; sigmoid-free (logit scoring) to read values off.
  const Matrix x = row({0.9f, 0.1f, 0.5f, 0.45f, 0.8f, 0.0f, 0.3f, 0.2f});
  // V2 (max): group maxima 0.9, 0.5, 0.8, 0.3 -> keep groups 0 and 2 -> top-2 {0, 4}.
  Router<LogitScoring, GroupedTopKSelector> v2(Matrix::Identity(8, 8), RouterOptions().with_top_k(2).with_renormalize(false), Vector(),
                                               GroupedTopKSelector(4, 2, GroupScore::max));
  EXPECT_EQ(v2.route(x).ids, (moekit::IdMatrix(1, 2) << 0, 4).finished());
  // V3 (sum of top-2): 1.0, 0.95, 0.8, 0.5 -> keep groups 0 and 1 -> top-2 {0, 2}.
  Router<LogitScoring, GroupedTopKSelector> v3(Matrix::Identity(8, 8), RouterOptions().with_top_k(2).with_renormalize(false), Vector(),
                                               GroupedTopKSelector(4, 2, GroupScore::sum_of_top2));
  EXPECT_EQ(v3.route(x).ids, (moekit::IdMatrix(1, 2) << 0, 2).finished());
  // Negative selection scores: HF's zero fill picks a masked expert, -inf does not.
  const Matrix neg = row({-0.1f, -0.2f, -0.3f, -0.4f, -5.0f, -6.0f, -7.0f, -8.0f});
  Router<LogitScoring, GroupedTopKSelector> hf(Matrix::Identity(8, 8), RouterOptions().with_top_k(3).with_renormalize(false), Vector(),
                                               GroupedTopKSelector(4, 1, GroupScore::sum_of_top2, MaskFill::zero));
  Router<LogitScoring, GroupedTopKSelector> ds(Matrix::Identity(8, 8), RouterOptions().with_top_k(2).with_renormalize(false), Vector(),
                                               GroupedTopKSelector(4, 1, GroupScore::sum_of_top2, MaskFill::neg_inf));
  const RoutingPlan php = hf.route(neg);
  EXPECT_EQ(php.ids(0, 0), 2);  // masked expert (value 0) outranks the kept -0.1
  EXPECT_EQ(ds.route(neg).ids, (moekit::IdMatrix(1, 2) << 0, 1).finished());
  EXPECT_NE(error_message([] { Router<SoftmaxScoring, GroupedTopKSelector>(Matrix::Zero(6, 3), RouterOptions().with_top_k(2), Vector(), GroupedTopKSelector(4, 2)); }).find("divisible"), std::string::npos);
  EXPECT_NE(error_message([] { Router<SoftmaxScoring, GroupedTopKSelector>(Matrix::Zero(8, 3), RouterOptions().with_top_k(5), Vector(), GroupedTopKSelector(4, 2)); }).find("exceeds"), std::string::npos);
  EXPECT_NE(error_message([] { GroupedTopKSelector(4, 5); }).find("topk_group"), std::string::npos);
}

TEST(DynamicK, ThresholdAndTopPCounts) {
  const Matrix x = row({0.5f, 0.3f, 0.15f, 0.05f});
  Router<LogitScoring, ThresholdSelector> th(Matrix::Identity(4, 4), RouterOptions().with_top_k(4).with_renormalize(false), Vector(), ThresholdSelector(0.2f, 1));
  RoutingPlan p = th.route(x);
  EXPECT_EQ(p.ids, (moekit::IdMatrix(1, 4) << 0, 1, -1, -1).finished());
  EXPECT_EQ(p.routed_count(0), 2);
  Router<LogitScoring, ThresholdSelector> th_min(Matrix::Identity(4, 4), RouterOptions().with_top_k(4).with_renormalize(false), Vector(), ThresholdSelector(0.9f, 3));
  EXPECT_EQ(th_min.route(x).routed_count(0), 3);
  Router<LogitScoring, TopPSelector> tp(Matrix::Identity(4, 4), RouterOptions().with_top_k(3).with_renormalize(false), Vector(), TopPSelector(0.79f, 1));
  EXPECT_EQ(tp.route(x).ids, (moekit::IdMatrix(1, 3) << 0, 1, -1).finished());  // 0.5 + 0.3 >= 0.79
  Router<LogitScoring, TopPSelector> tp2(Matrix::Identity(4, 4), RouterOptions().with_top_k(3).with_renormalize(false), Vector(), TopPSelector(0.81f, 1));
  EXPECT_EQ(tp2.route(x).routed_count(0), 3);  // max_k = top_k caps it
}

TEST(Capacity, SwitchAndNllbSemantics) {
  // 5 tokens, all prefer expert 1 (identity logits): Switch keeps the first C in token order.
  Matrix x = Matrix::Zero(5, 3);
  x.col(1).setConstant(2.0f);
  x(3, 2) = 3.0f;  // token 3 prefers expert 2
  Router<> sw(Matrix::Identity(3, 3), RouterOptions().with_top_k(1).with_renormalize(false).with_capacity(CapacityLimit::absolute(2)));
  RoutingPlan p = sw.route(x);
  // Tokens 0, 1, 2 and 4 prefer expert 1, token 3 expert 2: tokens 2 and 4 are dropped.
  EXPECT_EQ(p.ids.col(0).transpose(), (moekit::IdMatrix(1, 5) << 1, 1, -1, 2, -1).finished());
  EXPECT_EQ(p.dropped.col(0).transpose(), (moekit::IdMatrix(1, 5) << -1, -1, 1, -1, 1).finished());
  EXPECT_EQ(p.dropped_count(), 2);
  EXPECT_GT(p.weights(4, 0), 0.0f);  // Switch keeps p_max in the plan
  // NLLB top-2: second choices queue after every first choice of that expert.
  Matrix y(3, 3);
  y << 3, 2, 0,   // token 0: first 0, second 1
      2, 3, 0,    // token 1: first 1, second 0
      3, 0, 2;    // token 2: first 0, second 2
  Router<> nl(Matrix::Identity(3, 3), RouterOptions().with_top_k(2).with_renormalize(false).with_capacity(CapacityLimit::absolute(2).with_renormalize_after_drop(true)));
  p = nl.route(y);
  // Expert 0: first choices of tokens 0 and 2 fill it; token 1's second choice (0) is dropped.
  EXPECT_EQ(p.ids, (moekit::IdMatrix(3, 2) << 0, 1, 1, -1, 0, 2).finished());
  EXPECT_EQ(p.dropped(1, 1), 0);
  EXPECT_FLOAT_EQ(p.weights(1, 0), 1.0f);  // the survivor takes all the weight
  EXPECT_FLOAT_EQ(p.weights(1, 1), 0.0f);
  EXPECT_NEAR(p.weights(0, 0) + p.weights(0, 1), 1.0f, 1e-6f);
  EXPECT_EQ(CapacityLimit::of_tokens(1.0f).capacity_for(7, 2, 8), 7);
  EXPECT_EQ(CapacityLimit::factor(1.25f).capacity_for(64, 2, 8), 20);
}

TEST(NullExperts, PlanAndZeroCost) {
  // 4 routed + 4 null experts, k = 3.
  const Index E = 4, N = 4, d = 9, f = 7, T = 40;
  Router<> r(random_matrix(E + N, d, 3), RouterOptions().with_top_k(3).with_null_experts(N));
  EXPECT_EQ(r.num_experts(), E);
  moekit::SwiGluExperts ex(E, random_matrix(E * f, d, 4), random_matrix(E * f, d, 5), random_matrix(E * d, f, 6));
  moekit::SwiGluMoEBlock block(r, ex);
  const Matrix x = random_matrix(T, d, 7);
  const Matrix y = block.forward(x);
  const RoutingPlan& p = block.last_plan();
  Index nulls = 0;
  for (Index t = 0; t < T; ++t) {
    float routed_sum = 0;
    for (Index j = 0; j < 3; ++j) {
      if (p.is_null(p.ids(t, j))) ++nulls;
      if (p.is_routed(p.ids(t, j))) routed_sum += p.weights(t, j);
    }
    if (p.routed_count(t) > 0) {
      EXPECT_NEAR(routed_sum, 1.0f, 1e-5f);  // renormalised over routed experts only
    }
  }
  EXPECT_GT(nulls, 0);
  // The experts ran exactly the routed pairs: null experts cost no rows (FLOPs).
  EXPECT_EQ(block.last_groups().num_rows(), p.routed_pairs());
  EXPECT_EQ(block.last_groups().num_rows() + nulls, T * 3);
  const Matrix ref = moekit::reference::forward_with_plan(block.experts(), x, moekit::reference::route(block.router(), x));
  EXPECT_LE(moekit_test::max_abs_diff(y, ref), moekit_test::kBlockTolerance * moekit_test::scale_of(ref));
  // A token routed only to null experts outputs exactly zero.
  RoutingPlan all_null(1, 3, E);
  all_null.num_null_experts = N;
  all_null.ids << 4, 5, 7;
  all_null.weights << 0.5f, 0.3f, 0.2f;
  Matrix y1(1, d);
  block.forward_with_plan(x.topRows(1), all_null, y1);
  EXPECT_EQ(y1, Matrix::Zero(1, d));
}

TEST(ExpertChoice, EachExpertTakesItsTopTokens) {
  const Index E = 4, d = 6, T = 10;
  const Matrix w = random_matrix(E, d, 8);
  moekit::ExpertChoiceRouter r(w, 2.0f);
  EXPECT_EQ(r.capacity_for(T), 5);
  const Matrix x = random_matrix(T, d, 9);
  const RoutingPlan p = r.route(x);
  const auto& sel = r.selection();
  ASSERT_EQ(sel.token_ids.rows(), E);
  ASSERT_EQ(sel.token_ids.cols(), 5);
  const Matrix logits = x * w.transpose();
  for (Index e = 0; e < E; ++e) {
    // Brute force: sort tokens by softmax score for expert e.
    std::vector<std::pair<double, Index>> col;
    for (Index t = 0; t < T; ++t) {
      const double m = logits.row(t).maxCoeff();
      const double s = std::exp(logits(t, e) - m) / (logits.row(t).array() - static_cast<float>(m)).exp().sum();
      col.emplace_back(-s, t);
    }
    std::stable_sort(col.begin(), col.end(), [](auto& a, auto& b) { return a.first < b.first; });
    for (Index c = 0; c < 5; ++c) {
      EXPECT_EQ(sel.token_ids(e, c), col[static_cast<std::size_t>(c)].second);
      EXPECT_NEAR(sel.weights(e, c), -col[static_cast<std::size_t>(c)].first, 1e-6);
    }
  }
  // The plan holds the same pairs, per token in rank order.
  EXPECT_EQ(p.routed_pairs(), E * 5);
  for (Index t = 0; t < T; ++t)
    for (Index j = 1; j < p.top_k(); ++j) {
      if (p.is_routed(p.ids(t, j))) {
        EXPECT_GE(p.weights(t, j - 1), p.weights(t, j));
      }
    }
  // It drives a block like any router.
  moekit::MoEBlock<moekit::ExpertChoiceRouter> block(r, moekit::SwiGluExperts(E, random_matrix(E * 5, d, 1), random_matrix(E * 5, d, 2), random_matrix(E * d, 5, 3)));
  const Matrix y = block.forward(x);
  const Matrix ref = moekit::reference::forward_with_plan(block.experts(), x, block.last_plan());
  EXPECT_LE(moekit_test::max_abs_diff(y, ref), moekit_test::kBlockTolerance * moekit_test::scale_of(ref));
}

TEST(SparseMixer, ThresholdedSoftmaxPerChoice) {
  moekit::SparseMixerRouter r(Matrix::Identity(4, 4), 2, 0.01f);
  // Logits 1.0, 0.99, 0.5, -1: first choice 0, candidates within ratio 0.02 -> {0, 1}:
  // w1 = 1 / (1 + e^-0.01). Second choice 1 among {1, 2, 3} (0 masked): (0.99 - 0.5)/0.99 > 0.02
  // so only itself -> w2 = 1.
  const RoutingPlan p = r.route(row({1.0f, 0.99f, 0.5f, -1.0f}));
  EXPECT_EQ(p.ids, (moekit::IdMatrix(1, 2) << 0, 1).finished());
  EXPECT_NEAR(p.weights(0, 0), 1.0 / (1.0 + std::exp(-0.01)), 1e-6);
  EXPECT_FLOAT_EQ(p.weights(0, 1), 1.0f);
  // Ties go to the lower id.
  const RoutingPlan q = r.route(row({2.0f, 2.0f, 2.0f, 0.0f}));
  EXPECT_EQ(q.ids, (moekit::IdMatrix(1, 2) << 0, 1).finished());
  EXPECT_NEAR(q.weights(0, 0), 1.0f / 3.0f, 1e-6f);
  EXPECT_NEAR(q.weights(0, 1), 0.5f, 1e-6f);
}

TEST(Losses, HandComputed) {
  // Two tokens, two experts, k = 1. Logits (0, 0) and (ln 3, 0): p = (.5, .5), (.75, .25).
  Matrix l(2, 2);
  l << 0, 0, std::log(3.0f), 0;
  // Selections: token 0 -> expert 0 (tie -> lower), token 1 -> expert 0. count = (2, 0).
  // loss = 2 * [(2/2) * (1.25/2) + 0] = 1.25
  EXPECT_NEAR(moekit::load_balancing_loss(l, 1), 1.25, 1e-6);
  // k = 2: every expert selected by every token: 2 * [1 * .625 + 1 * .375] = 2
  EXPECT_NEAR(moekit::load_balancing_loss(l, 2), 2.0, 1e-6);
  // z-loss: lse = ln 2, ln 4 -> (ln2² + ln4²) / 2
  EXPECT_NEAR(moekit::router_z_loss(l), (std::pow(std::log(2.0), 2) + std::pow(std::log(4.0), 2)) / 2, 1e-6);
  // Switch form: frac = (1, 0) -> E² · mean_e(frac·P) = 4 · (1 · 0.625) / 2 = 1.25
  RoutingPlan p(2, 1, 2);
  p.ids << 0, 0;
  EXPECT_NEAR(moekit::switch_load_balancing_loss(l, p), 1.25, 1e-6);
  // A dropped token counts as expert 0 (HF quirk): same result when token 1 is dropped.
  p.ids(1, 0) = RoutingPlan::kNoExpert;
  EXPECT_NEAR(moekit::switch_load_balancing_loss(l, p), 1.25, 1e-6);
  // Aux-free bias update: loads (2, 0), mean 1 -> expert 0 down, expert 1 up.
  RoutingPlan q(2, 1, 2);
  q.ids << 0, 0;
  const Vector b = moekit::correction_bias_update(Vector(), q, 0.001f);
  EXPECT_FLOAT_EQ(b[0], -0.001f);
  EXPECT_FLOAT_EQ(b[1], 0.001f);
  // AdaMoE pooled loss: E = 1 routed, N = 2 null, k = 1, two tokens.
  RoutingPlan n(2, 1, 1);
  n.num_null_experts = 2;
  n.ids << 0, 1;  // one routed, one null (expert 1)
  Matrix s(2, 3);
  s << 0.5f, 0.25f, 0.25f, 0.2f, 0.6f, 0.2f;
  // f = (.5, .5, 0) -> null pool mean .25 each; P = (.35, .425, .225)
  // loss = 3 · (.5·.35 + .25·.425 + .25·.225) = 3 · .3375
  EXPECT_NEAR(moekit::null_pooled_balancing_loss(s, n), 3 * 0.3375, 1e-6);
}

// ---- Router gradients vs finite differences --------------------------------

template <class Block>
double loss_of(Block& block, const Matrix& x, const Matrix& target) {
  const Matrix y = block.forward(x);
  return 0.5 * (y - target).cast<double>().squaredNorm();
}

template <class Scoring>
void check_gradients(RouterOptions opt, bool with_temperature) {
  // Small output scale (L = O(1)); the f32 forward still leaves ~1e-7 of
  // rounding noise in L, so the steps are large (h = 4e-2 and 2e-2) and
  // Richardson extrapolation removes the O(h²) truncation: noise ~5e-6 and
  // truncation O(h⁴) stay under the tolerance of 1e-3 relative, floored at an
  // absolute 2e-5 (AArch64, where FMA contraction changes the rounding, shows
  // 1e-5 of noise on the smallest derivatives). A wrong formula (a missed normalisation or temperature
  // term) is off by far more.
  const Index E = 6, d = 8, f = 5, T = 9;
  Router<Scoring> r(random_matrix(E + opt.num_null_experts, d, 21, 0.7f), opt);
  moekit::SwiGluExperts ex(E, random_matrix(E * f, d, 22, 0.5f), random_matrix(E * f, d, 23, 0.5f), random_matrix(E * d, f, 24, 0.05f));
  moekit::MoEBlock<Router<Scoring>> block(r, ex);
  const Matrix x = random_matrix(T, d, 25), target = random_matrix(T, d, 26, 0.1f);
  Vector delta = random_matrix(E, 1, 27, 0.3f).col(0);
  block.router().steering().set_logit_bias(delta);
  if (with_temperature) block.router().steering().set_temperature(1.3f);
  const Matrix dy = block.forward(x) - target;  // dL/dy of 0.5·|y - target|²
  const moekit::RouterGradients g = moekit::router_gradients(block, x, dy);
  const double h = 4e-2;
  const RoutingPlan base = block.route(x);
  int checked = 0;
  // Central differences at h and h/2 combined by Richardson extrapolation
  // (error O(h^4)); skipped where the selection changes inside [-h, h].
  const auto derivative = [&](auto&& loss_at) -> std::pair<bool, double> {
    double fd[2];
    for (int i = 0; i < 2; ++i) {
      const double step = h / (1 << i);
      const auto [ok_p, lp] = loss_at(step);
      const auto [ok_m, lm] = loss_at(-step);
      if (!ok_p || !ok_m) return {false, 0.0};
      fd[i] = (lp - lm) / (2 * step);
    }
    return {true, (4 * fd[1] - fd[0]) / 3};
  };
  for (Index e = 0; e < E; ++e) {
    const auto [ok, fd] = derivative([&](double step) {
      Vector dp = delta;
      dp[e] += static_cast<float>(step);
      block.router().steering().set_logit_bias(dp);
      const bool same = block.route(x).ids == base.ids;
      const double l = loss_of(block, x, target);
      block.router().steering().set_logit_bias(delta);
      return std::make_pair(same, l);
    });
    if (!ok) continue;
    EXPECT_NEAR(g.logit_bias[e], fd, 1e-3 * std::max(2e-2, std::fabs(fd))) << Scoring::name << " expert " << e;
    ++checked;
  }
  // dL/dW[e, c] on a few entries.
  for (Index e = 0; e < E; e += 2)
    for (Index c = 0; c < d; c += 3) {
      const auto [ok, fd] = derivative([&](double step) {
        Matrix wp = block.router().weight();
        wp(e, c) += static_cast<float>(step);
        moekit::MoEBlock<Router<Scoring>> bp(Router<Scoring>(wp, opt), ex);
        bp.router().steering() = block.router().steering();
        return std::make_pair(bp.route(x).ids == base.ids, loss_of(bp, x, target));
      });
      if (!ok) continue;
      EXPECT_NEAR(g.weight(e, c), fd, 1e-3 * std::max(2e-2, std::fabs(fd))) << Scoring::name << " W[" << e << "," << c << "]";
      ++checked;
    }
  EXPECT_LE((g.logit_bias - g.token_bias.colwise().sum().transpose()).cwiseAbs().maxCoeff(), 1e-5f);
  EXPECT_GE(checked, 8) << "too few derivatives away from selection flips";
}

TEST(RouterGradients, MatchFiniteDifferences) {
  check_gradients<SoftmaxScoring>(RouterOptions().with_top_k(2), false);
  check_gradients<SoftmaxScoring>(RouterOptions().with_top_k(3).with_renormalize(false).with_scaling_factor(1.7f), true);
  check_gradients<SigmoidScoring>(RouterOptions().with_top_k(2).with_normalization(Normalization::sum, 1.0f, 1e-20f).with_scaling_factor(2.5f), false);
  check_gradients<LogitScoring>(RouterOptions().with_top_k(2).with_weight_source(WeightSource::softmax_of_selected).with_renormalize(false), false);
  check_gradients<LogitScoring>(RouterOptions().with_top_k(1).with_weight_source(WeightSource::sigmoid_of_selected).with_renormalize(false), true);
  check_gradients<SoftmaxScoring>(RouterOptions().with_top_k(3).with_null_experts(2), false);
}

}  // namespace
