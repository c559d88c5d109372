// SPDX-License-Identifier: MIT
// Expert clustering, the first step of expert merging (Sub-MoE stage 1,
// METHODS.md §7): a feature vector per expert, then a deterministic k-means
// or average-linkage agglomerative clustering into K groups.
//
// Features, one row per expert (double precision):
//   router_features(router)    [E, d]            the router rows
//   weight_features(bank)      [E, |weights|]    the expert's weights, flattened
//   output_features(bank, x)   [E, N·d]          the expert run on all N calibration
//                                                tokens (Sub-MoE compares expert outputs)
//
// NOTE: the algorithms, deterministic by construction (no random seeds):
//   distance   euclidean on the rows, or cosine: rows are scaled to unit norm
//              first (a zero row stays zero), so squared euclidean distance is
//              2 − 2·cos and k-means becomes spherical k-means.
//   k-means    maximin initialisation: the first centre is the row farthest
//              from the mean of all rows, each next one the row farthest from
//              its nearest chosen centre (ties -> lower expert id). Then Lloyd
//              iterations: each row to its nearest centre (ties -> lower
//              cluster), centres = member means (renormalised for cosine); an
//              emptied cluster takes the row farthest from its own centre.
//              Stops when no assignment changes, or after max_iterations.
//   agglomerative  average linkage from singletons: repeatedly merge the two
//              clusters with the smallest mean pairwise distance (euclidean,
//              or 1 − cos) until K remain; ties -> the pair of lowest indices.
// The result names each expert's cluster in [0, K), clusters numbered in the
// order of their lowest expert id (expert 0 is always in cluster 0).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include <Eigen/Core>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../expert/gated_experts.hpp"
#include "../expert/mlp_experts.hpp"
#include "../router/router.hpp"

MOEKIT_NAMESPACE_BEGIN

enum class ClusterMethod { kmeans, agglomerative };
enum class ClusterDistance { euclidean, cosine };

struct ClusterOptions {
  ClusterMethod method = ClusterMethod::kmeans;
  ClusterDistance distance = ClusterDistance::cosine;
  /// Lloyd iterations at most (k-means).
  Index max_iterations = 100;

  ClusterOptions& with_method(ClusterMethod m) { method = m; return *this; }
  ClusterOptions& with_distance(ClusterDistance d) { distance = d; return *this; }
  ClusterOptions& with_max_iterations(Index n) { max_iterations = n; return *this; }
};

/// Router rows of the routed experts: [E, d].
template <class Scoring, class Selection>
Eigen::MatrixXd router_features(const Router<Scoring, Selection>& router) {
  return router.weight().topRows(router.num_experts()).template cast<double>();
}

/// Gated experts' gate, up and down weights, flattened per expert: [E, 3·f·d].
template <class Gate>
Eigen::MatrixXd weight_features(const GatedExperts<Gate>& bank) {
  const Index E = bank.num_experts(), n = bank.ffn_size() * bank.hidden_size();
  Eigen::MatrixXd out(E, 3 * n);
  for (Index e = 0; e < E; ++e) {
    out.row(e).segment(0, n) = Eigen::Map<const Eigen::RowVectorXf>(bank.gate(e).data(), n).cast<double>();
    out.row(e).segment(n, n) = Eigen::Map<const Eigen::RowVectorXf>(bank.up(e).data(), n).cast<double>();
    out.row(e).segment(2 * n, n) = Eigen::Map<const Eigen::RowVectorXf>(bank.down(e).data(), n).cast<double>();
  }
  return out;
}

/// MLP experts' input and output weights, flattened per expert: [E, 2·f·d].
template <class Act>
Eigen::MatrixXd weight_features(const MlpExperts<Act>& bank) {
  const Index E = bank.num_experts(), n = bank.ffn_size() * bank.hidden_size();
  Eigen::MatrixXd out(E, 2 * n);
  for (Index e = 0; e < E; ++e) {
    out.row(e).segment(0, n) = Eigen::Map<const Eigen::RowVectorXf>(bank.w_in(e).data(), n).cast<double>();
    out.row(e).segment(n, n) = Eigen::Map<const Eigen::RowVectorXf>(bank.w_out(e).data(), n).cast<double>();
  }
  return out;
}

/// Every expert on every calibration token x [N, d], flattened: [E, N·d].
template <class Bank>
Eigen::MatrixXd output_features(const Bank& bank, const MatrixRef& x) {
  detail::require_size("calibration x columns (hidden size)", x.cols(), bank.hidden_size());
  const Index E = bank.num_experts(), N = x.rows(), d = bank.hidden_size();
  Eigen::MatrixXd out(E, N * d);
  for (Index e = 0; e < E; ++e) {
    const Matrix y = bank.forward(e, x);  // [N, d] row-major
    out.row(e) = Eigen::Map<const Eigen::RowVectorXf>(y.data(), N * d).cast<double>();
  }
  return out;
}

namespace detail {

/// Renumbers clusters in the order of their lowest member.
inline std::vector<std::int32_t> canonical_clusters(const std::vector<std::int32_t>& a) {
  std::vector<std::int32_t> map(a.size(), -1), out(a.size());
  std::int32_t next = 0;
  for (std::size_t i = 0; i < a.size(); ++i) {
    std::int32_t& m = map[static_cast<std::size_t>(a[i])];
    if (m < 0) m = next++;
    out[i] = m;
  }
  return out;
}

inline std::vector<std::int32_t> kmeans(const Eigen::MatrixXd& X, Index K, bool spherical,
                                        Index max_iterations) {
  const Index E = X.rows();
  const auto sq = [&](Index i, const Eigen::RowVectorXd& c) { return (X.row(i) - c).squaredNorm(); };
  // Maximin initialisation.
  Eigen::MatrixXd C(K, X.cols());
  const Eigen::RowVectorXd mean = X.colwise().mean();
  Index first = 0;
  for (Index i = 1; i < E; ++i)
    if (sq(i, mean) > sq(first, mean)) first = i;
  C.row(0) = X.row(first);
  std::vector<double> nearest(static_cast<std::size_t>(E));
  for (Index i = 0; i < E; ++i) nearest[static_cast<std::size_t>(i)] = sq(i, C.row(0));
  for (Index c = 1; c < K; ++c) {
    Index pick = 0;
    for (Index i = 1; i < E; ++i)
      if (nearest[static_cast<std::size_t>(i)] > nearest[static_cast<std::size_t>(pick)]) pick = i;
    C.row(c) = X.row(pick);
    for (Index i = 0; i < E; ++i)
      nearest[static_cast<std::size_t>(i)] = std::min(nearest[static_cast<std::size_t>(i)], sq(i, C.row(c)));
  }
  std::vector<std::int32_t> assign(static_cast<std::size_t>(E), -1);
  for (Index it = 0; it < std::max<Index>(1, max_iterations); ++it) {
    bool changed = false;
    for (Index i = 0; i < E; ++i) {
      Index best = 0;
      double bd = sq(i, C.row(0));
      for (Index c = 1; c < K; ++c) {
        const double dc = sq(i, C.row(c));
        if (dc < bd) {
          bd = dc;
          best = c;
        }
      }
      if (assign[static_cast<std::size_t>(i)] != best) {
        assign[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(best);
        changed = true;
      }
    }
    // Refill empty clusters with the row farthest from its own centre.
    for (Index c = 0; c < K; ++c) {
      if (std::count(assign.begin(), assign.end(), static_cast<std::int32_t>(c)) > 0) continue;
      Index far = -1;
      double fd = -1.0;
      for (Index i = 0; i < E; ++i) {
        const std::int32_t own = assign[static_cast<std::size_t>(i)];
        if (std::count(assign.begin(), assign.end(), own) < 2) continue;  // keep singletons
        const double di = sq(i, C.row(own));
        if (di > fd) {
          fd = di;
          far = i;
        }
      }
      assign[static_cast<std::size_t>(far)] = static_cast<std::int32_t>(c);
      changed = true;
    }
    // New centres.
    C.setZero();
    std::vector<Index> n(static_cast<std::size_t>(K), 0);
    for (Index i = 0; i < E; ++i) {
      C.row(assign[static_cast<std::size_t>(i)]) += X.row(i);
      ++n[static_cast<std::size_t>(assign[static_cast<std::size_t>(i)])];
    }
    for (Index c = 0; c < K; ++c) {
      C.row(c) /= static_cast<double>(n[static_cast<std::size_t>(c)]);
      if (spherical && C.row(c).norm() > 0.0) C.row(c).normalize();
    }
    if (!changed) break;
  }
  return assign;
}

inline std::vector<std::int32_t> agglomerative(const Eigen::MatrixXd& X, Index K, bool cosine) {
  const Index E = X.rows();
  Eigen::MatrixXd D(E, E);  // pairwise distances
  for (Index i = 0; i < E; ++i)
    for (Index j = 0; j < E; ++j)
      D(i, j) = cosine ? 1.0 - X.row(i).dot(X.row(j)) : (X.row(i) - X.row(j)).norm();
  std::vector<std::vector<Index>> clusters;
  for (Index i = 0; i < E; ++i) clusters.push_back({i});
  while (static_cast<Index>(clusters.size()) > K) {
    std::size_t ba = 0, bb = 1;
    double best = std::numeric_limits<double>::infinity();
    for (std::size_t a = 0; a < clusters.size(); ++a)
      for (std::size_t b = a + 1; b < clusters.size(); ++b) {
        double s = 0.0;
        for (const Index i : clusters[a])
          for (const Index j : clusters[b]) s += D(i, j);
        s /= static_cast<double>(clusters[a].size() * clusters[b].size());
        if (s < best) {
          best = s;
          ba = a;
          bb = b;
        }
      }
    clusters[ba].insert(clusters[ba].end(), clusters[bb].begin(), clusters[bb].end());
    clusters.erase(clusters.begin() + static_cast<std::ptrdiff_t>(bb));
  }
  std::vector<std::int32_t> assign(static_cast<std::size_t>(E));
  for (std::size_t c = 0; c < clusters.size(); ++c)
    for (const Index i : clusters[c]) assign[static_cast<std::size_t>(i)] = static_cast<std::int32_t>(c);
  return assign;
}

}  // namespace detail

/// Groups the E rows of `features` [E, D] into K clusters (see the NOTE):
/// returns each expert's cluster id in [0, K).
inline std::vector<std::int32_t> cluster_experts(const Eigen::MatrixXd& features, Index K,
                                                 const ClusterOptions& options = ClusterOptions()) {
  const Index E = features.rows();
  detail::require(E >= 1, "cluster features: expected at least 1 expert row, got 0");
  detail::require(K >= 1 && K <= E, "number of clusters K: expected 1 <= K <= ", E, ", got ", K);
  for (Index i = 0; i < features.size(); ++i)
    detail::require(std::isfinite(features.data()[i]), "cluster features: non-finite value at flat index ", i);
  Eigen::MatrixXd X = features;
  const bool cosine = options.distance == ClusterDistance::cosine;
  if (cosine)
    for (Index i = 0; i < E; ++i)
      if (X.row(i).norm() > 0.0) X.row(i).normalize();
  const std::vector<std::int32_t> a = options.method == ClusterMethod::kmeans
                                          ? detail::kmeans(X, K, cosine, options.max_iterations)
                                          : detail::agglomerative(X, K, cosine);
  return detail::canonical_clusters(a);
}

MOEKIT_NAMESPACE_END
