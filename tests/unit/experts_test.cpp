// SPDX-License-Identifier: MIT
// SwiGLU expert bank: layouts, the per-expert forward against the reference
// row, and construction errors.
#include "test_util.hpp"

namespace {

using moekit::Index;
using moekit::Matrix;
using moekit::SwiGluExperts;
using moekit_test::error_message;
using moekit_test::random_matrix;

TEST(SwiGluExperts, ForwardMatchesReferenceRows) {
  const Index E = 3, d = 17, f = 33, n = 11;
  SwiGluExperts ex(E, random_matrix(E * f, d, 1, 0.3f), random_matrix(E * f, d, 2, 0.3f),
                   random_matrix(E * d, f, 3, 0.2f));
  const Matrix x = random_matrix(n, d, 4);
  for (Index e = 0; e < E; ++e) {
    const Matrix y = ex.forward(e, x);
    std::vector<double> ref(static_cast<std::size_t>(d));
    for (Index r = 0; r < n; ++r) {
      moekit::reference::swiglu_expert_row(ex, e, x.row(r).data(), ref.data());
      for (Index c = 0; c < d; ++c) EXPECT_NEAR(y(r, c), ref[static_cast<std::size_t>(c)], 1e-5 * std::max(1.0, std::fabs(ref[static_cast<std::size_t>(c)])));
    }
  }
  EXPECT_EQ(ex.forward(1, Matrix(0, d)).rows(), 0);
}

TEST(SwiGluExperts, ZeroWeightsGiveZeroAndViewsWriteThrough) {
  SwiGluExperts ex(2, 4, 3);
  EXPECT_EQ(ex.forward(0, Matrix::Ones(2, 4)), Matrix::Zero(2, 4));
  ex.gate(1).setConstant(1.0f);
  ex.up(1).setConstant(1.0f);
  ex.down(1).setConstant(1.0f);
  const Matrix y = ex.forward(1, Matrix::Ones(1, 4));
  // gate = up = 4 per feature; h = silu(4) * 4; out = 3 * h.
  EXPECT_NEAR(y(0, 0), 3.0 * 4.0 * 4.0 / (1.0 + std::exp(-4.0)), 1e-5);
  EXPECT_EQ(ex.forward(0, Matrix::Ones(1, 4)), Matrix::Zero(1, 4));  // expert 0 untouched
}

TEST(SwiGluExperts, FusedGateUpLayoutSplitsGateFirst) {
  const Index E = 3, d = 5, f = 4;
  const Matrix gate_up = random_matrix(E * 2 * f, d, 5), down = random_matrix(E * d, f, 6);
  const SwiGluExperts ex = SwiGluExperts::from_gate_up(E, gate_up, down);
  for (Index e = 0; e < E; ++e) {
    EXPECT_EQ(Matrix(ex.gate(e)), gate_up.middleRows(2 * e * f, f));
    EXPECT_EQ(Matrix(ex.up(e)), gate_up.middleRows(2 * e * f + f, f));
    EXPECT_EQ(Matrix(ex.down(e)), down.middleRows(e * d, d));
  }
  const Matrix g = random_matrix(E * f, d, 7), u = random_matrix(E * f, d, 8);
  const SwiGluExperts st = SwiGluExperts::from_stacked(E, d, f, g.data(), u.data(), down.data());
  EXPECT_EQ(st.gate_weights(), g);
  EXPECT_EQ(st.up_weights(), u);
  EXPECT_EQ(st.ffn_size(), f);
}

TEST(SwiGluExperts, ConstructionErrorsNameTheTensor) {
  const Index E = 2, d = 3, f = 4;
  const Matrix g = Matrix::Zero(E * f, d), u = Matrix::Zero(E * f, d), dn = Matrix::Zero(E * d, f);
  EXPECT_NE(error_message([&] { SwiGluExperts(E, g, Matrix::Zero(E * f, d + 1), dn); }).find("expert up weight: expected shape [8, 3], got [8, 4]"), std::string::npos);
  EXPECT_NE(error_message([&] { SwiGluExperts(E, g, u, Matrix::Zero(E * d, f - 1)); }).find("expert down weight: expected shape [6, 4], got [6, 3]"), std::string::npos);
  EXPECT_NE(error_message([&] { SwiGluExperts(3, g, u, dn); }).find("divisible by E = 3"), std::string::npos);
  EXPECT_NE(error_message([&] { SwiGluExperts(0, g, u, dn); }).find("num_experts"), std::string::npos);
  EXPECT_NE(error_message([&] { SwiGluExperts(2, 0, 4); }).find("d = 0"), std::string::npos);
  Matrix bad = u;
  bad(5, 2) = -INFINITY;
  EXPECT_NE(error_message([&] { SwiGluExperts(E, g, bad, dn); }).find("expert up weight: non-finite value -inf at [5, 2]"), std::string::npos);
  EXPECT_NE(error_message([&] { SwiGluExperts::from_gate_up(3, Matrix::Zero(8, d), dn); }).find("gate_up"), std::string::npos);
  SwiGluExperts ok(E, g, u, dn);
  EXPECT_NE(error_message([&] { ok.gate(2); }).find("expert id: expected [0, 2), got 2"), std::string::npos);
  EXPECT_NE(error_message([&] { ok.forward(0, Matrix::Zero(1, d + 2)); }).find("expected size 3, got 5"), std::string::npos);
}

}  // namespace
