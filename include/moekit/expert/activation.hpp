// SPDX-License-Identifier: MIT
// Scalar activation functions shared by expert kinds and the reference.
#pragma once

#include <cmath>

#include "../config.hpp"

MOEKIT_NAMESPACE_BEGIN

/// silu(x) = x · sigmoid(x) = x / (1 + e^-x).
inline float silu(float x) noexcept { return x / (1.0f + std::exp(-x)); }
inline double silu(double x) noexcept { return x / (1.0 + std::exp(-x)); }

MOEKIT_NAMESPACE_END
