// SPDX-License-Identifier: MIT
// Expert clustering (hand-placed points) and merging: the merged block equals
// the block built by hand from the merged weights; the Sub-MoE subspace merge
// by hand on 2 x 2 weights and against its closed form U_r U_rᵀ · average.
#include <gtest/gtest.h>

#include <cmath>
#include <vector>

#include <Eigen/SVD>

#include <moekit/hooks/expert_clustering.hpp>
#include <moekit/hooks/expert_merging.hpp>

#include "hooks_test_util.hpp"

namespace {

using moekit::Index;
using moekit::Matrix;
using moekit_test::error_message;
using moekit_test::random_matrix;

Eigen::MatrixXd rows(std::initializer_list<std::initializer_list<double>> r) {
  Eigen::MatrixXd m(static_cast<Index>(r.size()), static_cast<Index>(r.begin()->size()));
  Index i = 0;
  for (const auto& row : r) {
    Index j = 0;
    for (const double v : row) m(i, j++) = v;
    ++i;
  }
  return m;
}

TEST(ClusterExperts, EuclideanPointsOnALine) {
  const Eigen::MatrixXd x = rows({{0}, {10}, {0.1}, {5}, {5.2}});
  const std::vector<std::int32_t> expect{0, 1, 0, 2, 2};
  for (const auto method : {moekit::ClusterMethod::kmeans, moekit::ClusterMethod::agglomerative}) {
    const auto opt = moekit::ClusterOptions().with_method(method).with_distance(moekit::ClusterDistance::euclidean);
    EXPECT_EQ(moekit::cluster_experts(x, 3, opt), expect);
    EXPECT_EQ(moekit::cluster_experts(x, 5, opt), (std::vector<std::int32_t>{0, 1, 2, 3, 4}));
    EXPECT_EQ(moekit::cluster_experts(x, 1, opt), (std::vector<std::int32_t>{0, 0, 0, 0, 0}));
  }
}

TEST(ClusterExperts, CosineIgnoresScale) {
  // Two directions; lengths differ wildly (euclidean would split them by length).
  const Eigen::MatrixXd x = rows({{1, 0}, {0, 0.1}, {100, 5}, {0.2, 30}, {3, 0.1}});
  for (const auto method : {moekit::ClusterMethod::kmeans, moekit::ClusterMethod::agglomerative})
    EXPECT_EQ(moekit::cluster_experts(x, 2, moekit::ClusterOptions().with_method(method)),
              (std::vector<std::int32_t>{0, 1, 0, 1, 0}));
}

TEST(ClusterExperts, DuplicatedRouterRowsClusterTogether) {
  Matrix r = random_matrix(6, 8, 1);
  r.row(4) = r.row(1) * 2.0f;  // same direction
  r.row(5) = r.row(0);
  moekit::Router<> router(r, moekit::RouterOptions().with_top_k(2));
  const auto a = moekit::cluster_experts(moekit::router_features(router), 4,
                                         moekit::ClusterOptions().with_method(moekit::ClusterMethod::agglomerative));
  EXPECT_EQ(a[5], a[0]);
  EXPECT_EQ(a[4], a[1]);
  EXPECT_NE(a[0], a[1]);
}

TEST(ClusterExperts, FeaturesAndErrors) {
  auto block = moekit_test::random_block(3, 4, 5, 2, 2);
  const Eigen::MatrixXd w = moekit::weight_features(block.experts());
  ASSERT_EQ(w.rows(), 3);
  ASSERT_EQ(w.cols(), 3 * 20);
  EXPECT_EQ(w(1, 20 + 7), static_cast<double>(block.experts().up(1)(1, 3)));  // up[1] row 1 col 3
  const Matrix x = random_matrix(2, 4, 3);
  const Eigen::MatrixXd o = moekit::output_features(block.experts(), x);
  ASSERT_EQ(o.cols(), 8);
  EXPECT_NEAR(o(2, 5), static_cast<double>(block.experts().forward(2, x)(1, 1)), 0);
  EXPECT_EQ(error_message([&] { moekit::cluster_experts(w, 4); }),
            "moekit: number of clusters K: expected 1 <= K <= 3, got 4");
}

// ----------------------------------------------------------------- merging

TEST(MergeExperts, FrequencyAverageEqualsTheBlockBuiltByHand) {
  auto block = moekit_test::random_block(4, 8, 12, 2, 11);
  const std::vector<std::int32_t> groups{0, 1, 0, 2};  // {0, 2}, {1}, {3}
  const std::vector<double> freq{3, 5, 1, 7};           // α = 3/4, 1/4 in cluster 0
  auto merged = moekit::merge_experts(block, groups, freq);
  ASSERT_EQ(merged.num_experts(), 3);

  // By hand, in double as the header says, then rounded to float.
  const auto& ex = block.experts();
  const auto avg = [](const auto& a, const auto& b) {
    return Matrix((0.75 * a.template cast<double>() + 0.25 * b.template cast<double>()).template cast<float>());
  };
  const Index f = 12, d = 8;
  Matrix gate(3 * f, d), up(3 * f, d), down(3 * d, f), r(3, d);
  gate.middleRows(0, f) = avg(ex.gate(0), ex.gate(2));
  up.middleRows(0, f) = avg(ex.up(0), ex.up(2));
  down.middleRows(0, d) = avg(ex.down(0), ex.down(2));
  gate.middleRows(f, f) = ex.gate(1);
  up.middleRows(f, f) = ex.up(1);
  down.middleRows(d, d) = ex.down(1);
  gate.middleRows(2 * f, f) = ex.gate(3);
  up.middleRows(2 * f, f) = ex.up(3);
  down.middleRows(2 * d, d) = ex.down(3);
  const Matrix& w = block.router().weight();
  r.row(0) = ((0.5 * w.row(0).cast<double>() + 0.5 * w.row(2).cast<double>())).cast<float>();  // plain mean
  r.row(1) = w.row(1);
  r.row(2) = w.row(3);
  moekit::SwiGluMoEBlock by_hand(moekit::Router<>(r, block.router().options()),
                                 moekit::SwiGluExperts(3, gate, up, down));
  const Matrix x = random_matrix(30, d, 12);
  EXPECT_LE(moekit_test::max_abs_diff(merged.forward(x), by_hand.forward(x)), 1e-6);
  EXPECT_TRUE(moekit_test::bit_identical(merged.forward(x), by_hand.forward(x)));
  EXPECT_TRUE(merged.router().weight().isApprox(r, 1e-7f));
}

TEST(MergeExperts, RouterRowsFrequencyWeightedBiasesAndNullExperts) {
  Matrix w = random_matrix(5, 4, 21);  // 4 routed + 1 null
  moekit::Vector b(5);
  b << 1, 2, 3, 4, 5;
  moekit::Router<> router(w, moekit::RouterOptions().with_top_k(2).with_null_experts(1), b);
  const auto merged = moekit::merge_router(router, {0, 0, 1, 1}, {1, 3, 0, 0},
                                           moekit::MergeOptions().with_router_rows(moekit::RouterRowMerge::frequency_weighted));
  ASSERT_EQ(merged.num_experts(), 2);
  ASSERT_EQ(merged.num_null_experts(), 1);
  EXPECT_NEAR(merged.bias()[0], 0.25 * 1 + 0.75 * 2, 1e-6);
  EXPECT_NEAR(merged.bias()[1], 3.5, 1e-6);  // zero frequencies: uniform
  EXPECT_EQ(merged.bias()[2], 5.0f);         // the null expert stays last
  EXPECT_EQ(merged.weight().row(2), w.row(4));
  EXPECT_TRUE(merged.weight().row(0).isApprox(0.25f * w.row(0) + 0.75f * w.row(1), 1e-6f));
}

TEST(MergeExperts, MlpBankWithBiases) {
  moekit::ReluExperts bank(3, random_matrix(3 * 6, 4, 31), random_matrix(3 * 4, 6, 32));
  bank.set_biases(random_matrix(3, 6, 33), random_matrix(3, 4, 34));
  const auto m = moekit::merge_expert_weights(bank, {0, 1, 0}, {1, 1, 1});
  ASSERT_EQ(m.num_experts(), 2);
  EXPECT_TRUE(Matrix(m.w_in(0)).isApprox(0.5f * (bank.w_in(0) + bank.w_in(2)), 1e-6f));
  EXPECT_EQ(Matrix(m.w_out(1)), Matrix(bank.w_out(1)));
  EXPECT_TRUE(m.out_bias().row(0).isApprox(0.5f * (bank.out_bias().row(0) + bank.out_bias().row(2)), 1e-6f));
}

TEST(SubspaceMerge, ByHandOnTwoByTwoWeights) {
  // W1 = [[2, 0], [0, 1]], W2 = [[2, 0], [0, 0]]: A = [W1 W2] = [[2, 0, 2, 0], [0, 1, 0, 0]],
  // A Aᵀ = diag(8, 1): U = I, Σ = (√8, 1). Average (α = ½, ½) = [[2, 0], [0, ½]].
  // Rank 1 keeps the first output direction: [[2, 0], [0, 0]]; rank 2 (all) the average.
  Matrix w1(2, 2), w2(2, 2);
  w1 << 2, 0, 0, 1;
  w2 << 2, 0, 0, 0;
  const auto r1 = moekit::subspace_merge({w1, w2}, {0.5, 0.5}, 1);
  Matrix expect1(2, 2);
  expect1 << 2, 0, 0, 0;
  EXPECT_TRUE(r1.merged.isApprox(expect1, 1e-6f)) << r1.merged;
  EXPECT_EQ(r1.rank, 1);
  EXPECT_NEAR(std::abs(r1.u_sigma(0, 0)), std::sqrt(8.0), 1e-9);
  const auto full = moekit::subspace_merge({w1, w2}, {0.5, 0.5});
  Matrix avg(2, 2);
  avg << 2, 0, 0, 0.5f;
  EXPECT_TRUE(full.merged.isApprox(avg, 1e-6f)) << full.merged;
  EXPECT_EQ(full.rank, 2);
  // Unequal frequencies: α = (¼, ¾) -> average [[2, 0], [0, ¼]].
  const auto w = moekit::subspace_merge({w1, w2}, {0.25, 0.75}, 0);
  EXPECT_NEAR(w.merged(1, 1), 0.25, 1e-6);
}

TEST(SubspaceMerge, EqualsTheProjectedAverageOnRandomWeights) {
  std::vector<Matrix> ws{random_matrix(6, 5, 41), random_matrix(6, 5, 42), random_matrix(6, 5, 43)};
  const std::vector<double> alpha{0.2, 0.5, 0.3};
  Eigen::MatrixXd A(6, 15), avg = Eigen::MatrixXd::Zero(6, 5);
  for (Index j = 0; j < 3; ++j) {
    A.middleCols(j * 5, 5) = ws[static_cast<std::size_t>(j)].cast<double>();
    avg += alpha[static_cast<std::size_t>(j)] * ws[static_cast<std::size_t>(j)].cast<double>();
  }
  const Eigen::JacobiSVD<Eigen::MatrixXd> svd(A, Eigen::ComputeThinU);
  for (const Index r : {1, 3, 6}) {
    const Eigen::MatrixXd U = svd.matrixU().leftCols(r);
    const Eigen::MatrixXd expect = U * U.transpose() * avg;
    const auto m = moekit::subspace_merge(ws, alpha, r);
    EXPECT_LE((m.merged.cast<double>() - expect).cwiseAbs().maxCoeff(), 1e-6) << "rank " << r;
    EXPECT_LE((m.u_sigma * m.v_merged.transpose() - expect).cwiseAbs().maxCoeff(), 1e-10) << "rank " << r;
  }
}

TEST(MergeExperts, SubspaceBlockEqualsTheBlockBuiltByHand) {
  auto block = moekit_test::random_block(4, 8, 12, 2, 51);
  const std::vector<std::int32_t> groups{0, 0, 1, 1};
  const std::vector<double> freq{2, 6, 1, 1};
  const auto opt = moekit::MergeOptions().with_method(moekit::MergeMethod::subspace).with_rank(4);
  auto merged = moekit::merge_experts(block, groups, freq, opt);
  const auto& ex = block.experts();
  Matrix gate(2 * 12, 8), up(2 * 12, 8), down(2 * 8, 12), r(2, 8);
  const std::vector<std::vector<double>> alpha{{0.25, 0.75}, {0.5, 0.5}};
  for (Index c = 0; c < 2; ++c) {
    const std::int32_t a = static_cast<std::int32_t>(2 * c), b = a + 1;
    const auto& al = alpha[static_cast<std::size_t>(c)];
    gate.middleRows(c * 12, 12) = moekit::subspace_merge({Matrix(ex.gate(a)), Matrix(ex.gate(b))}, al, 4).merged;
    up.middleRows(c * 12, 12) = moekit::subspace_merge({Matrix(ex.up(a)), Matrix(ex.up(b))}, al, 4).merged;
    down.middleRows(c * 8, 8) = moekit::subspace_merge({Matrix(ex.down(a)), Matrix(ex.down(b))}, al, 4).merged;
    r.row(c) = (0.5 * block.router().weight().row(a).cast<double>() + 0.5 * block.router().weight().row(b).cast<double>())
                   .cast<float>();
  }
  moekit::SwiGluMoEBlock by_hand(moekit::Router<>(r, block.router().options()),
                                 moekit::SwiGluExperts(2, gate, up, down));
  const Matrix x = random_matrix(25, 8, 52);
  EXPECT_TRUE(moekit_test::bit_identical(merged.forward(x), by_hand.forward(x)));
  // Rank 4 < 8 is a real truncation: it differs from the plain frequency average.
  auto averaged = moekit::merge_experts(block, groups, freq);
  EXPECT_GT(moekit_test::max_abs_diff(merged.forward(x), averaged.forward(x)), 1e-4);
  // Rank 0 (all components) is the frequency average.
  auto full = moekit::merge_experts(block, groups, freq, moekit::MergeOptions().with_method(moekit::MergeMethod::subspace));
  EXPECT_LE(moekit_test::max_abs_diff(full.forward(x), averaged.forward(x)), 1e-5);
}

TEST(MergeExperts, Errors) {
  auto block = moekit_test::random_block(4, 8, 12, 2, 61);
  EXPECT_EQ(error_message([&] { moekit::merge_experts(block, {0, 1, 0}, {1, 1, 1, 1}); }),
            "moekit: cluster assignment (one entry per expert): expected size 4, got 3");
  EXPECT_EQ(error_message([&] { moekit::merge_experts(block, {0, 2, 0, 2}, {1, 1, 1, 1}); }),
            "moekit: cluster assignment: cluster 1 of 3 has no expert (ids must be 0 .. K-1)");
  EXPECT_EQ(error_message([&] { moekit::merge_experts(block, {0, 0, 0, 0}, {1, 1, 1, 1}); }),
            "moekit: merged router: expected at least top_k = 2 clusters (with 0 null experts), got 1");
  EXPECT_EQ(error_message([&] { moekit::merge_experts(block, {0, 1, 0, 1}, {1, -1, 1, 1}); }),
            "moekit: expert frequency: expected finite values >= 0, got -1 for expert 1");
}

}  // namespace
