// SPDX-License-Identifier: MIT
// Row-major Eigen aliases for activations and weights, and the checks that
// every public entry point runs on them.
//
// Activations are [tokens, hidden] row-major float32; weights follow the
// checkpoint convention [out, in], also row-major, so a weight row is one
// output feature and `y = x * W^T`.
#pragma once

#include <Eigen/Core>
#include <cmath>
#include <cstdint>
#include <cstring>

#include "error.hpp"

MOEKIT_NAMESPACE_BEGIN

/// Dense row-major float32 matrix, e.g. activations [tokens, hidden] or a weight [out, in].
using Matrix = Eigen::Matrix<float, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;
/// Dense float32 column vector, e.g. a router bias [experts].
using Vector = Eigen::Matrix<float, Eigen::Dynamic, 1>;
/// Dense row-major int32 matrix, e.g. expert ids [tokens, k].
using IdMatrix = Eigen::Matrix<std::int32_t, Eigen::Dynamic, Eigen::Dynamic, Eigen::RowMajor>;

/// Zero-copy views over user buffers (contiguous, row-major).
using MatrixMap = Eigen::Map<Matrix>;
using ConstMatrixMap = Eigen::Map<const Matrix>;
using VectorMap = Eigen::Map<Vector>;
using ConstVectorMap = Eigen::Map<const Vector>;

/// Read-only row-major matrix argument that binds to a Matrix, a map, or a
/// contiguous block of rows without copying.
using MatrixRef = Eigen::Ref<const Matrix>;
/// Writable row-major matrix argument.
using MatrixOut = Eigen::Ref<Matrix>;

namespace detail {

/// Throws unless every element of `m` is finite: "<what>: non-finite value nan at [r, c]".
/// (Checked row by row with exponent bits, a loop the compiler vectorises: the
/// check runs on every forward's input, so it must cost little next to it.)
template <class Derived>
void require_finite(const char* what, const Eigen::DenseBase<Derived>& m) {
  for (Index r = 0; r < m.rows(); ++r) {
    std::uint32_t bad = 0;
    for (Index c = 0; c < m.cols(); ++c) {
      const float v = static_cast<float>(m(r, c));
      std::uint32_t bits;
      std::memcpy(&bits, &v, sizeof bits);
      bad |= static_cast<std::uint32_t>((bits & 0x7f800000u) == 0x7f800000u);  // inf or NaN
    }
    if (bad)
      for (Index c = 0; c < m.cols(); ++c) {
        const float v = static_cast<float>(m(r, c));
        if (!std::isfinite(v)) fail(what, ": non-finite value ", v, " at [", r, ", ", c, "]");
      }
  }
}

}  // namespace detail

MOEKIT_NAMESPACE_END
