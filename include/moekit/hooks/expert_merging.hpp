// SPDX-License-Identifier: MIT
// Expert merging: each cluster of experts (expert_clustering.hpp) becomes one
// expert, by frequency-weighted averaging or by the Sub-MoE subspace merge
// (Li et al., arXiv 2506.23266, METHODS.md §7), and the router is rewritten so
// the result is a normal block with K experts.
//
//   auto groups = moekit::cluster_experts(moekit::output_features(block.experts(), calib), K);
//   auto merged = moekit::merge_experts(block, groups, frequency);   // K experts
//
// NOTE: exact formulation. Cluster c has members j with calibration
// frequencies f_j (e.g. LoadObserver counts) and weights α_j = f_j / Σ f
// (uniform when Σ f = 0). For every weight kind W_j [out, in] (gate and up
// [f, d], down [d, f]; MLP banks: w_in [f, d], w_out [d, f]):
//   frequency_average   W_c = Σ_j α_j W_j
//   subspace (Sub-MoE)  A = [W_1, …, W_n]  [out, n·in]  (members side by side,
//                       sharing the output space), thin SVD in double
//                       A = U Σ Vᵀ, V = [V_1; …; V_n] with V_j [in, r] the rows
//                       of member j, truncated to r components:
//                       W_c = U_r Σ_r (Σ_j α_j V_{j,r})ᵀ  =  U_r U_rᵀ (Σ_j α_j W_j).
//                       r = options.rank, or all components when rank is 0 or
//                       at least min(out, n·in): then the merge equals the
//                       frequency average exactly (up to rounding), and a
//                       smaller r keeps only the part of the average that lies
//                       in the cluster's r-dimensional shared output subspace.
//                       Singleton clusters are copied unchanged.
// Expert biases are α-weighted averages in both methods; the output scale and
// gate policy are the bank's. Router: merged row c (and bias entry, and
// correction-bias entry) = the plain mean of the members' (RouterRowMerge::mean,
// default) or their α-weighted mean; null-expert rows stay last; options and
// selection are kept. Steering is not carried over (its ids name experts that
// no longer exist): set it again on the merged ids. The paper's concatenation
// axis, rank rule and V weighting are not verified against its code (none was
// published); this is our reading, stated here so results can be compared.
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <utility>
#include <vector>

#include <Eigen/Core>
#include <Eigen/SVD>

#include "../block/moe_block.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../expert/gated_experts.hpp"
#include "../expert/mlp_experts.hpp"
#include "../router/router.hpp"

MOEKIT_NAMESPACE_BEGIN

enum class MergeMethod {
  frequency_average,  ///< Σ α_j W_j
  subspace,           ///< Sub-MoE joint SVD, shared U, merged V
};

enum class RouterRowMerge {
  mean,                ///< plain mean of the members' router rows
  frequency_weighted,  ///< Σ α_j row_j
};

struct MergeOptions {
  MergeMethod method = MergeMethod::frequency_average;
  /// Sub-MoE rank r per weight kind; 0 keeps every component.
  Index rank = 0;
  RouterRowMerge router_rows = RouterRowMerge::mean;

  MergeOptions& with_method(MergeMethod m) {
    method = m;
    return *this;
  }
  MergeOptions& with_rank(Index r) {
    rank = r;
    return *this;
  }
  MergeOptions& with_router_rows(RouterRowMerge r) {
    router_rows = r;
    return *this;
  }
};

/// A merged weight and its Sub-MoE factors: merged = u_sigma · v_merged.transpose().
struct SubspaceMerge {
  Matrix merged;             ///< [out, in]
  Eigen::MatrixXd u_sigma;   ///< [out, r] shared U_r Σ_r
  Eigen::MatrixXd v_merged;  ///< [in, r]  Σ_j α_j V_{j,r}
  Index rank = 0;
};

/// Sub-MoE merge of n same-shaped weights [out, in] with weights alpha [n]
/// (summing to 1) at rank r (0: all components). See the NOTE.
// A template (Real is always double) only so that Eigen's SVD is instantiated
// in the programs that call it: as a plain inline function it cost every
// translation unit including <moekit/moekit.hpp> about 20 s of compile time.
template <typename Real = double>
SubspaceMerge subspace_merge(const std::vector<Matrix>& members, const std::vector<Real>& alpha,
                             Index rank = 0) {
  static_assert(std::is_same<Real, double>::value, "subspace merge: alpha is double");
  using MatrixR = Eigen::Matrix<Real, Eigen::Dynamic, Eigen::Dynamic>;
  detail::require(!members.empty(), "subspace merge: expected at least 1 member, got none");
  detail::require_size("subspace merge alpha", static_cast<Index>(alpha.size()),
                       static_cast<Index>(members.size()));
  detail::require(rank >= 0, "subspace merge rank: expected >= 0, got ", rank);
  const Index out = members[0].rows(), in = members[0].cols(),
              n = static_cast<Index>(members.size());
  MatrixR A(out, n * in);  // [out, n·in]
  for (Index j = 0; j < n; ++j) {
    const Matrix& W = members[static_cast<std::size_t>(j)];
    detail::require_shape("subspace merge member", W.rows(), W.cols(), out, in);
    A.middleCols(j * in, in) = W.template cast<Real>();
  }
  Eigen::BDCSVD<MatrixR> svd(A, Eigen::ComputeThinU | Eigen::ComputeThinV);
  const Index full = std::min(out, n * in);
  const Index r = rank == 0 || rank > full ? full : rank;
  SubspaceMerge m;
  m.rank = r;
  m.u_sigma = svd.matrixU().leftCols(r) * svd.singularValues().head(r).asDiagonal();  // [out, r]
  m.v_merged = Eigen::MatrixXd::Zero(in, r);
  for (Index j = 0; j < n; ++j)
    m.v_merged += alpha[static_cast<std::size_t>(j)] * svd.matrixV().block(j * in, 0, in, r);
  m.merged = (m.u_sigma * m.v_merged.transpose()).cast<float>();
  return m;
}

namespace detail {

/// Validated clusters: members[c] = expert ids of cluster c (increasing), K = max id + 1.
inline std::vector<std::vector<std::int32_t>> cluster_members(
    const std::vector<std::int32_t>& assignment, Index E) {
  detail::require_size("cluster assignment (one entry per expert)",
                       static_cast<Index>(assignment.size()), E);
  std::int32_t K = 0;
  for (const std::int32_t c : assignment) {
    detail::require(c >= 0 && c < E, "cluster assignment: expected cluster ids in [0, ", E,
                    "), got ", c);
    K = std::max(K, c + 1);
  }
  std::vector<std::vector<std::int32_t>> members(static_cast<std::size_t>(K));
  for (std::size_t e = 0; e < assignment.size(); ++e)
    members[static_cast<std::size_t>(assignment[e])].push_back(static_cast<std::int32_t>(e));
  for (std::size_t c = 0; c < members.size(); ++c)
    detail::require(!members[c].empty(), "cluster assignment: cluster ", c, " of ", K,
                    " has no expert (ids must be 0 .. K-1)");
  return members;
}

/// α_j of each member of a cluster.
inline std::vector<double> member_alpha(const std::vector<std::int32_t>& members,
                                        const std::vector<double>& frequency) {
  double sum = 0.0;
  for (const std::int32_t e : members) sum += frequency[static_cast<std::size_t>(e)];
  std::vector<double> a;
  for (const std::int32_t e : members)
    a.push_back(sum > 0.0 ? frequency[static_cast<std::size_t>(e)] / sum
                          : 1.0 / static_cast<double>(members.size()));
  return a;
}

inline void check_frequency(const std::vector<double>& frequency, Index E) {
  detail::require_size("expert frequency", static_cast<Index>(frequency.size()), E);
  for (std::size_t e = 0; e < frequency.size(); ++e)
    detail::require(std::isfinite(frequency[e]) && frequency[e] >= 0.0,
                    "expert frequency: expected finite values >= 0, got ", frequency[e],
                    " for expert ", e);
}

/// Merges one weight kind given per-expert views: get(e) -> [out, in].
template <class Get>
Matrix merge_kind(const std::vector<std::int32_t>& members, const std::vector<double>& alpha,
                  Get get, const MergeOptions& opt) {
  if (members.size() == 1) return get(members[0]);
  if (opt.method == MergeMethod::subspace) {
    std::vector<Matrix> ws;
    for (const std::int32_t e : members) ws.push_back(get(e));
    return subspace_merge(ws, alpha, opt.rank).merged;
  }
  Eigen::MatrixXd acc = Eigen::MatrixXd::Zero(get(members[0]).rows(), get(members[0]).cols());
  for (std::size_t j = 0; j < members.size(); ++j)
    acc += alpha[j] * get(members[j]).template cast<double>();
  return acc.cast<float>();
}

/// α-weighted average of the member rows of an [E, n] matrix (empty stays empty).
inline Matrix merge_rows(const Matrix& m, const std::vector<std::vector<std::int32_t>>& members,
                         const std::vector<std::vector<double>>& alpha) {
  if (m.size() == 0) return Matrix();
  Matrix out(static_cast<Index>(members.size()), m.cols());
  for (std::size_t c = 0; c < members.size(); ++c) {
    Eigen::RowVectorXd acc = Eigen::RowVectorXd::Zero(m.cols());
    for (std::size_t j = 0; j < members[c].size(); ++j)
      acc += alpha[c][j] * m.row(members[c][j]).cast<double>();
    out.row(static_cast<Index>(c)) = acc.cast<float>();
  }
  return out;
}

inline std::vector<std::vector<double>> all_alpha(
    const std::vector<std::vector<std::int32_t>>& members, const std::vector<double>& frequency) {
  std::vector<std::vector<double>> a;
  for (const auto& m : members) a.push_back(member_alpha(m, frequency));
  return a;
}

}  // namespace detail

/// The gated bank with each cluster merged into one expert (cluster c -> expert c).
template <class Gate>
GatedExperts<Gate> merge_expert_weights(const GatedExperts<Gate>& bank,
                                        const std::vector<std::int32_t>& assignment,
                                        const std::vector<double>& frequency,
                                        const MergeOptions& options = MergeOptions()) {
  const auto members = detail::cluster_members(assignment, bank.num_experts());
  detail::check_frequency(frequency, bank.num_experts());
  const auto alpha = detail::all_alpha(members, frequency);
  const Index K = static_cast<Index>(members.size()), f = bank.ffn_size(), d = bank.hidden_size();
  Matrix gate(K * f, d), up(K * f, d), down(K * d, f);
  for (Index c = 0; c < K; ++c) {
    const auto& m = members[static_cast<std::size_t>(c)];
    const auto& a = alpha[static_cast<std::size_t>(c)];
    gate.middleRows(c * f, f) = detail::merge_kind(
        m, a, [&](std::int32_t e) { return Matrix(bank.gate(e)); }, options);
    up.middleRows(c * f, f) = detail::merge_kind(
        m, a, [&](std::int32_t e) { return Matrix(bank.up(e)); }, options);
    down.middleRows(c * d, d) = detail::merge_kind(
        m, a, [&](std::int32_t e) { return Matrix(bank.down(e)); }, options);
  }
  GatedExperts<Gate> out(K, std::move(gate), std::move(up), std::move(down), bank.gate_fn());
  out.set_biases(detail::merge_rows(bank.gate_bias(), members, alpha),
                 detail::merge_rows(bank.up_bias(), members, alpha),
                 detail::merge_rows(bank.down_bias(), members, alpha));
  out.set_output_scale(bank.output_scale());
  if (!bank.uses_packed_kernels()) out.use_packed_kernels(false);
  return out;
}

/// The MLP bank with each cluster merged into one expert.
template <class Act>
MlpExperts<Act> merge_expert_weights(const MlpExperts<Act>& bank,
                                     const std::vector<std::int32_t>& assignment,
                                     const std::vector<double>& frequency,
                                     const MergeOptions& options = MergeOptions()) {
  const auto members = detail::cluster_members(assignment, bank.num_experts());
  detail::check_frequency(frequency, bank.num_experts());
  const auto alpha = detail::all_alpha(members, frequency);
  const Index K = static_cast<Index>(members.size()), f = bank.ffn_size(), d = bank.hidden_size();
  Matrix w_in(K * f, d), w_out(K * d, f);
  for (Index c = 0; c < K; ++c) {
    const auto& m = members[static_cast<std::size_t>(c)];
    const auto& a = alpha[static_cast<std::size_t>(c)];
    w_in.middleRows(c * f, f) = detail::merge_kind(
        m, a, [&](std::int32_t e) { return Matrix(bank.w_in(e)); }, options);
    w_out.middleRows(c * d, d) = detail::merge_kind(
        m, a, [&](std::int32_t e) { return Matrix(bank.w_out(e)); }, options);
  }
  MlpExperts<Act> out(K, std::move(w_in), std::move(w_out), bank.activation());
  out.set_biases(detail::merge_rows(bank.in_bias(), members, alpha),
                 detail::merge_rows(bank.out_bias(), members, alpha));
  out.set_output_scale(bank.output_scale());
  return out;
}

/// The router with one row per cluster (see the NOTE); null-expert rows stay last.
template <class Scoring, class Selection>
Router<Scoring, Selection> merge_router(const Router<Scoring, Selection>& router,
                                        const std::vector<std::int32_t>& assignment,
                                        const std::vector<double>& frequency,
                                        const MergeOptions& options = MergeOptions()) {
  const Index E = router.num_experts(), N = router.num_null_experts();
  const auto members = detail::cluster_members(assignment, E);
  detail::check_frequency(frequency, E);
  const Index K = static_cast<Index>(members.size());
  detail::require(K + N >= router.top_k(),
                  "merged router: expected at least top_k = ", router.top_k(), " clusters (with ",
                  N, " null experts), got ", K);
  std::vector<std::vector<double>> alpha = detail::all_alpha(members, frequency);
  if (options.router_rows == RouterRowMerge::mean)
    for (auto& a : alpha)
      for (double& v : a) v = 1.0 / static_cast<double>(a.size());
  // Null experts are singleton "clusters" after the K merged rows.
  auto all_members = members;
  auto all_alpha = alpha;
  for (Index n = 0; n < N; ++n) {
    all_members.push_back({static_cast<std::int32_t>(E + n)});
    all_alpha.push_back({1.0});
  }
  const Matrix w = detail::merge_rows(router.weight(), all_members, all_alpha);
  Vector bias;
  if (router.bias().size())
    bias = detail::merge_rows(Matrix(router.bias()), all_members, all_alpha).col(0);
  Router<Scoring, Selection> out(w, router.options(), std::move(bias), router.selection());
  if (router.correction_bias().size())
    out.set_correction_bias(
        detail::merge_rows(Matrix(router.correction_bias()), members, alpha).col(0));
  return out;
}

/// A new block with one expert per cluster: merged weights and router (see
/// the NOTE); shared experts, combine and block options copied unchanged.
template <class R, class X, class C, class S>
MoEBlock<R, X, C, S> merge_experts(const MoEBlock<R, X, C, S>& block,
                                   const std::vector<std::int32_t>& assignment,
                                   const std::vector<double>& frequency,
                                   const MergeOptions& options = MergeOptions()) {
  MoEBlock<R, X, C, S> out(merge_router(block.router(), assignment, frequency, options),
                           merge_expert_weights(block.experts(), assignment, frequency, options),
                           block.combine(), block.options());
  if (const S* shared = block.shared_experts()) out.set_shared_experts(*shared);
  return out;
}

MOEKIT_NAMESPACE_END
