// SPDX-License-Identifier: MIT
// Expert kinds (SwiGLU, GeGLU, clamped SwiGLU, ReLU / GELU MLPs), biases,
// output scales, checkpoint layouts, shared experts and input-side weights:
// each in a block against the double-precision reference.
#include "test_util.hpp"

namespace {

using moekit::GateUpLayout;
using moekit::Index;
using moekit::Matrix;
using moekit::MoEBlock;
using moekit::Router;
using moekit::RouterOptions;
using moekit::WeightedSum;
using moekit_test::bit_identical;
using moekit_test::error_message;
using moekit_test::kBlockTolerance;
using moekit_test::max_abs_diff;
using moekit_test::random_matrix;
using moekit_test::scale_of;

template <class Bank>
void expect_block_matches_reference(const Bank& bank, const std::string& what, WeightedSum combine = WeightedSum()) {
  const Index E = bank.num_experts(), d = bank.hidden_size();
  for (Index T : {Index(1), Index(7), Index(45)}) {
    MoEBlock<Router<>, Bank> block(Router<>(random_matrix(E, d, 40, 0.5f), RouterOptions().with_top_k(std::min<Index>(2, E))), bank, combine);
    const Matrix x = random_matrix(T, d, static_cast<std::uint32_t>(41 + T), 2.0f);  // large enough to hit clamps
    const Matrix y = block.forward(x);
    const Matrix ref = moekit::reference::forward(block, x);
    EXPECT_LE(max_abs_diff(y, ref), kBlockTolerance * scale_of(ref)) << what << " T=" << T;
    moekit::ThreadPoolExecutor pool(3);
    Matrix y3(T, d);
    block.forward(x, y3, pool);
    EXPECT_TRUE(bit_identical(y, y3)) << what;
  }
}

template <class Gate>
moekit::GatedExperts<Gate> random_gated(Index E, Index d, Index f, std::uint32_t seed, Gate g = Gate()) {
  return moekit::GatedExperts<Gate>(E, random_matrix(E * f, d, seed, 0.4f), random_matrix(E * f, d, seed + 1, 0.4f),
                                    random_matrix(E * d, f, seed + 2, 0.3f), g);
}

TEST(ExpertKinds, GatedVariantsWithBiasesAndScale) {
  const Index E = 5, d = 19, f = 23;
  expect_block_matches_reference(random_gated<moekit::SiluGate>(E, d, f, 1), "swiglu");
  expect_block_matches_reference(random_gated<moekit::GeluGate>(E, d, f, 2), "geglu");
  expect_block_matches_reference(random_gated<moekit::GeluTanhGate>(E, d, f, 3), "geglu tanh");
  moekit::ClampedSwiGluGate clamp;
  clamp.alpha = 1.702f;
  clamp.limit = 1.5f;  // low, so many values are clamped
  auto oss = random_gated(E, d, f, 4, clamp);
  oss.set_biases(random_matrix(E, f, 5), random_matrix(E, f, 6), random_matrix(E, d, 7));
  expect_block_matches_reference(oss, "clamped swiglu + biases");
  oss.set_output_scale(0.8f);
  expect_block_matches_reference(oss, "clamped swiglu + output scale");
}

TEST(ExpertKinds, ClampedGateFormula) {
  moekit::ClampedSwiGluGate g;  // alpha 1.702, limit 7 (alpha held as a float)
  const double a = static_cast<double>(1.702f);
  EXPECT_NEAR(g(10.0, 0.5), (0.5 + 1) * 7.0 / (1 + std::exp(-a * 7.0)), 1e-12);  // gate clamped from above only
  EXPECT_NEAR(g(-10.0, 0.0), -10.0 / (1 + std::exp(10.0 * a)), 1e-12);           // no lower clamp on the gate
  EXPECT_NEAR(g(1.0, -9.0), (-7.0 + 1) * 1.0 / (1 + std::exp(-a)), 1e-12);        // up clamped both sides
}

TEST(ExpertKinds, MlpExperts) {
  const Index E = 4, d = 13, f = 29;
  moekit::ReluExperts relu(E, random_matrix(E * f, d, 8, 0.4f), random_matrix(E * d, f, 9, 0.3f));
  expect_block_matches_reference(relu, "relu");
  relu.set_biases(random_matrix(E, f, 10), random_matrix(E, d, 11)).set_output_scale(0.8f);
  expect_block_matches_reference(relu, "relu + biases + scale");
  moekit::GeluExperts gelu(E, random_matrix(E * f, d, 12, 0.4f), random_matrix(E * d, f, 13, 0.3f));
  expect_block_matches_reference(gelu, "gelu mlp");
  // ReLU really zeroes: an input whose pre-activations are all negative gives the output bias.
  moekit::ReluExperts neg(1, Matrix::Constant(3, 2, -1.0f), Matrix::Ones(2, 3));
  neg.set_biases(Matrix(), (Matrix(1, 2) << 0.5f, -0.25f).finished());
  const Matrix out = neg.forward(0, Matrix::Ones(1, 2));
  EXPECT_EQ(out(0, 0), 0.5f);
  EXPECT_EQ(out(0, 1), -0.25f);
  EXPECT_NE(error_message([&] { relu.set_biases(Matrix::Zero(E, f + 1), Matrix()); }).find("expert input bias: expected shape [4, 29], got [4, 30]"), std::string::npos);
}

TEST(ExpertKinds, TransposedLayouts) {
  const Index E = 2, d = 3, f = 2;
  // gate_up [E·d, 2f] used as x @ W. Column j of expert e's block holds values 100e + 10j + row.
  Matrix gu(E * d, 2 * f), down_t(E * f, d);
  for (Index e = 0; e < E; ++e)
    for (Index r = 0; r < d; ++r)
      for (Index j = 0; j < 2 * f; ++j) gu(e * d + r, j) = static_cast<float>(100 * e + 10 * j + r);
  for (Index i = 0; i < down_t.size(); ++i) down_t.data()[i] = static_cast<float>(i);
  const auto halves = moekit::SwiGluExperts::from_transposed_gate_up(E, gu, down_t, GateUpLayout::halves);
  const auto inter = moekit::SwiGluExperts::from_transposed_gate_up(E, gu, down_t, GateUpLayout::interleaved);
  // halves: gate feature i = column i, up feature i = column f + i.
  EXPECT_EQ(halves.gate(1)(1, 2), 100 + 10 * 1 + 2);
  EXPECT_EQ(halves.up(1)(1, 2), 100 + 10 * 3 + 2);
  // interleaved: gate feature i = column 2i, up = column 2i + 1.
  EXPECT_EQ(inter.gate(0)(1, 0), 10 * 2 + 0);
  EXPECT_EQ(inter.up(0)(1, 0), 10 * 3 + 0);
  // down [E·f, d] transposed into [E·d, f].
  EXPECT_EQ(inter.down(1), down_t.middleRows(f, f).transpose());
  // Fused interleaved bias [E, 2f].
  auto b = inter;
  b.set_fused_biases((Matrix(E, 2 * f) << 0, 1, 2, 3, 4, 5, 6, 7).finished(), Matrix(), GateUpLayout::interleaved);
  EXPECT_EQ(b.gate_bias(), (Matrix(E, f) << 0, 2, 4, 6).finished());
  EXPECT_EQ(b.up_bias(), (Matrix(E, f) << 1, 3, 5, 7).finished());
  // Same function either way: x @ W_gu then split == per-expert rows.
  const Matrix x = random_matrix(4, d, 14);
  const Matrix h = x * gu.middleRows(d, d);  // expert 1, [4, 2f]
  for (Index i = 0; i < f; ++i) {
    EXPECT_NEAR((x * halves.gate(1).row(i).transpose())(0), h(0, i), 1e-4);
    EXPECT_NEAR((x * inter.up(1).row(i).transpose())(0), h(0, 2 * i + 1), 1e-4);
  }
  EXPECT_NE(error_message([&] { moekit::SwiGluExperts::from_transposed_gate_up(E, gu, Matrix::Zero(3, d), GateUpLayout::halves); }).find("expected shape [4, 3], got [3, 3]"), std::string::npos);
}

TEST(SharedExperts, GatedAndUngatedAgainstReference) {
  const Index E = 6, d = 17, f = 11, fs = 21, T = 70;
  for (bool gated : {false, true})
    for (Index S : {Index(1), Index(2)}) {
      moekit::SwiGluMoEBlock block(Router<>(random_matrix(E, d, 15, 0.5f), RouterOptions().with_top_k(2).with_renormalize(false)),
                                   random_gated<moekit::SiluGate>(E, d, f, 16));
      moekit::SharedExperts<> shared(random_gated<moekit::SiluGate>(S, d, fs, 17), gated ? moekit::Vector(random_matrix(d, 1, 18).col(0)) : moekit::Vector());
      block.set_shared_experts(shared);
      const Matrix x = random_matrix(T, d, 19);
      const Matrix y = block.forward(x);
      const Matrix ref = moekit::reference::forward(block, x);
      EXPECT_LE(max_abs_diff(y, ref), kBlockTolerance * scale_of(ref)) << "gated=" << gated << " S=" << S;
      // The shared part is really there: removing it changes the output by the shared contribution.
      const Eigen::MatrixXd s = moekit::reference::shared_experts(shared, x);
      block.clear_shared_experts();
      const Matrix routed = block.forward(x);
      EXPECT_LE(((y - routed).cast<double>() - s).cwiseAbs().maxCoeff(), 1e-5 * std::max(1.0, s.cwiseAbs().maxCoeff()));
      block.set_shared_experts(shared);
      moekit::ThreadPoolExecutor pool(2);
      Matrix y2 = x;  // aliasing: y written over x
      block.forward(y2, y2, pool);
      EXPECT_TRUE(bit_identical(y2, y));
    }
  moekit::SwiGluMoEBlock block(Router<>(random_matrix(E, d, 1), RouterOptions()), random_gated<moekit::SiluGate>(E, d, f, 2));
  EXPECT_NE(error_message([&] { block.set_shared_experts(moekit::SharedExperts<>(random_gated<moekit::SiluGate>(1, d + 1, f, 3))); }).find("shared experts hidden size 18"), std::string::npos);
  EXPECT_NE(error_message([&] { moekit::SharedExperts<>(random_gated<moekit::SiluGate>(1, d, f, 3), moekit::Vector::Zero(d - 1)); }).find("shared expert gate weight: expected size 17, got 16"), std::string::npos);
}

TEST(WeightPlacement, InputScalingIsNotOutputScaling) {
  const Index E = 4, d = 9, f = 14, T = 20;
  // Llama-4: top-1 on logits, sigmoid weight, applied to the expert input.
  using LogitRouter = Router<moekit::LogitScoring>;
  LogitRouter r(random_matrix(E, d, 20, 0.5f), RouterOptions().with_top_k(1).with_weight_source(moekit::WeightSource::sigmoid_of_selected).with_renormalize(false));
  const auto bank = random_gated<moekit::SiluGate>(E, d, f, 21);
  MoEBlock<LogitRouter> input(r, bank, WeightedSum(moekit::WeightPlacement::input));
  MoEBlock<LogitRouter> output(r, bank, WeightedSum(moekit::WeightPlacement::output));
  const Matrix x = random_matrix(T, d, 22);
  const Matrix yi = input.forward(x), yo = output.forward(x);
  const Matrix ref = moekit::reference::forward(input, x);
  EXPECT_LE(max_abs_diff(yi, ref), kBlockTolerance * scale_of(ref));
  EXPECT_GT(max_abs_diff(yi, yo), 1e-3);  // expert(w·x) != w·expert(x)
  // By hand for token 0.
  const auto& p = input.last_plan();
  const Matrix manual = bank.forward(p.ids(0, 0), p.weights(0, 0) * x.row(0));
  EXPECT_LE((yi.row(0) - manual).cwiseAbs().maxCoeff(), 1e-5f * scale_of(manual));
}

}  // namespace
