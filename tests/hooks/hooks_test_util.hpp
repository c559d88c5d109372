// SPDX-License-Identifier: MIT
// Helpers shared by the hooks tests: hand-made plans and traces, small blocks.
#pragma once

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <initializer_list>
#include <random>
#include <vector>

#include <moekit/hooks/routing_trace.hpp>
#include <moekit/moekit.hpp>

#include "../unit/test_util.hpp"

namespace hooks_test {

using moekit::Index;
using moekit::Matrix;

/// A plan from rows of ids and weights (same shape), E experts.
inline moekit::RoutingPlan make_plan(Index E, std::initializer_list<std::initializer_list<std::int32_t>> ids,
                                     std::initializer_list<std::initializer_list<float>> w) {
  const Index T = static_cast<Index>(ids.size()), k = static_cast<Index>(ids.begin()->size());
  moekit::RoutingPlan p(T, k, E);
  Index t = 0;
  for (const auto& row : ids) {
    Index j = 0;
    for (const std::int32_t e : row) p.ids(t, j++) = e;
    ++t;
  }
  t = 0;
  for (const auto& row : w) {
    Index j = 0;
    for (const float v : row) p.weights(t, j++) = v;
    ++t;
  }
  return p;
}

/// A one-layer trace from rows of k ids.
inline moekit::RoutingTrace layer_trace(Index E, const std::vector<std::vector<std::int32_t>>& rows) {
  const Index T = static_cast<Index>(rows.size()), k = static_cast<Index>(rows.at(0).size());
  std::vector<std::int32_t> ids;
  for (const auto& r : rows) ids.insert(ids.end(), r.begin(), r.end());
  return moekit::RoutingTrace(std::move(ids), T, 1, k, E);
}

/// A random trace: each (token, layer) picks k distinct experts of E.
inline moekit::RoutingTrace random_trace(Index T, Index L, Index k, Index E, std::uint32_t seed) {
  std::mt19937 gen(seed);
  std::vector<std::int32_t> ids;
  std::vector<std::int32_t> perm(static_cast<std::size_t>(E));
  for (Index t = 0; t < T; ++t)
    for (Index l = 0; l < L; ++l) {
      for (Index e = 0; e < E; ++e) perm[static_cast<std::size_t>(e)] = static_cast<std::int32_t>(e);
      std::shuffle(perm.begin(), perm.end(), gen);
      ids.insert(ids.end(), perm.begin(), perm.begin() + k);
    }
  return moekit::RoutingTrace(std::move(ids), T, L, k, E);
}

/// A random MLP (ReLU) block with the given router options.
inline moekit::MoEBlock<moekit::Router<>, moekit::ReluExperts, moekit::WeightedSum> random_relu_block(
    Index E, Index d, Index f, Index k, std::uint32_t seed) {
  using moekit_test::random_matrix;
  const float sd = 1.0f / std::sqrt(static_cast<float>(d)), sf = 1.0f / std::sqrt(static_cast<float>(f));
  moekit::Router<> router(random_matrix(E, d, seed, sd), moekit::RouterOptions().with_top_k(k));
  moekit::ReluExperts experts(E, random_matrix(E * f, d, seed + 1, sd), random_matrix(E * d, f, seed + 2, sf));
  return {std::move(router), std::move(experts)};
}

/// Relative Frobenius difference ‖a − b‖ / ‖b‖.
inline double rel_error(const Matrix& a, const Matrix& b) {
  return static_cast<double>((a - b).norm()) / std::max(1e-30, static_cast<double>(b.norm()));
}

}  // namespace hooks_test
