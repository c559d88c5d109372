// SPDX-License-Identifier: MIT
// Shared helpers for the unit tests: seeded random blocks and comparisons.
#pragma once

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <random>
#include <string>

#include <moekit/moekit.hpp>

namespace moekit_test {

using moekit::Index;
using moekit::Matrix;

/// Gaussian matrix with the given scale, fixed seed.
inline Matrix random_matrix(Index rows, Index cols, std::uint32_t seed, float scale = 1.0f) {
  std::mt19937 gen(seed);
  std::normal_distribution<float> dist(0.0f, scale);
  Matrix m(rows, cols);
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = dist(gen);
  return m;
}

/// A softmax-top-k SwiGLU block with weights scaled by 1/sqrt(fan_in), so
/// activations stay O(1) whatever d and f are.
inline moekit::SwiGluMoEBlock random_block(Index E, Index d, Index f, Index k, std::uint32_t seed,
                                           bool renormalize = true, float scaling = 1.0f) {
  const float sd = 1.0f / std::sqrt(static_cast<float>(d));
  const float sf = 1.0f / std::sqrt(static_cast<float>(f));
  moekit::Router<> router(random_matrix(E, d, seed, sd),
                          moekit::RouterOptions().with_top_k(k).with_renormalize(renormalize).with_scaling_factor(scaling));
  moekit::SwiGluExperts experts(E, random_matrix(E * f, d, seed + 1, sd),
                                random_matrix(E * f, d, seed + 2, sd),
                                random_matrix(E * d, f, seed + 3, sf));
  return moekit::SwiGluMoEBlock(std::move(router), std::move(experts));
}

/// max |a - b|, asserting equal shapes.
inline double max_abs_diff(const Matrix& a, const Matrix& b) {
  EXPECT_EQ(a.rows(), b.rows());
  EXPECT_EQ(a.cols(), b.cols());
  if (a.rows() != b.rows() || a.cols() != b.cols() || a.size() == 0) return 0.0;
  return static_cast<double>((a - b).cwiseAbs().maxCoeff());
}

/// The f32 block vs the f64 reference. Sums of at most a few hundred f32
/// products of O(1) values: the rounding error stays well below 1e-5 relative
/// to the output scale (measured 2.5e-7 to 3.6e-7 on the block_test shapes, 9.3e-7
/// at d = 1024, f = 512), so 1e-5 keeps a 10x margin and still catches a wrong
/// weight, slot or activation (those give errors of order 1e-1).
constexpr double kBlockTolerance = 1e-5;

inline double scale_of(const Matrix& m) {
  return m.size() ? std::max(1.0, static_cast<double>(m.cwiseAbs().maxCoeff())) : 1.0;
}

/// True when the two matrices hold the same bytes.
inline bool bit_identical(const Matrix& a, const Matrix& b) {
  return a.rows() == b.rows() && a.cols() == b.cols() &&
         std::memcmp(a.data(), b.data(), sizeof(float) * static_cast<std::size_t>(a.size())) == 0;
}

/// Runs `f` and returns the moekit::Error message it throws ("" when none is thrown).
template <class F>
std::string error_message(F&& f) {
  try {
    f();
  } catch (const moekit::Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace moekit_test
