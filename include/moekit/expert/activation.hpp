// SPDX-License-Identifier: MIT
// Activation functions and the gate policies of expert FFNs.
//
// A gate policy combines the gate and up projections of a gated FFN into the
// hidden activation, h = gate_fn(g, u); an activation policy maps one value
// of a plain MLP, h = act(a). Both are templates over the scalar so the same
// policy serves the f32 block and the f64 reference.
#pragma once

#include <algorithm>
#include <cmath>

#include "../config.hpp"

MOEKIT_NAMESPACE_BEGIN

/// silu(x) = x · sigmoid(x) = x / (1 + e^-x).
template <class T>
T silu(T x) noexcept {
  return x / (T(1) + std::exp(-x));
}

/// Exact GELU: x · Φ(x) = 0.5 · x · (1 + erf(x / √2)).
template <class T>
T gelu(T x) noexcept {
  return T(0.5) * x * (T(1) + std::erf(x * T(0.70710678118654752440)));
}

/// GELU, tanh approximation (GPT-2 / "gelu_new" / "gelu_pytorch_tanh").
template <class T>
T gelu_tanh(T x) noexcept {
  return T(0.5) * x * (T(1) + std::tanh(T(0.79788456080286535588) * (x + T(0.044715) * x * x * x)));
}

// ---- Gate policies (gated FFNs: h = gate_fn(W_gate x, W_up x)) -------------

/// SwiGLU: silu(g) · u (Mixtral, Qwen, OLMoE, DeepSeek, Llama-4, ...).
struct SiluGate {
  static constexpr const char* name = "swiglu";
  template <class T>
  T operator()(T g, T u) const noexcept { return silu(g) * u; }
};

/// GeGLU: gelu(g) · u with the exact (erf) GELU.
struct GeluGate {
  static constexpr const char* name = "geglu";
  template <class T>
  T operator()(T g, T u) const noexcept { return gelu(g) * u; }
};

/// GeGLU with the tanh-approximated GELU.
struct GeluTanhGate {
  static constexpr const char* name = "geglu_tanh";
  template <class T>
  T operator()(T g, T u) const noexcept { return gelu_tanh(g) * u; }
};

/// gpt-oss clamped SwiGLU: g ← min(g, limit); u ← clamp(u, −limit, limit);
/// h = (u + 1) · g · sigmoid(alpha · g). Defaults are gpt-oss's.
struct ClampedSwiGluGate {
  static constexpr const char* name = "clamped_swiglu";
  float alpha = 1.702f;
  float limit = 7.0f;
  template <class T>
  T operator()(T g, T u) const noexcept {
    const T lim = static_cast<T>(limit);
    g = std::min(g, lim);
    u = std::max(-lim, std::min(u, lim));
    return (u + T(1)) * g / (T(1) + std::exp(-static_cast<T>(alpha) * g));
  }
};

// ---- Activation policies (plain MLPs: h = act(W_in x)) ---------------------

struct ReluActivation {
  static constexpr const char* name = "relu";
  template <class T>
  T operator()(T a) const noexcept { return a > T(0) ? a : T(0); }
};

struct GeluActivation {
  static constexpr const char* name = "gelu";
  template <class T>
  T operator()(T a) const noexcept { return gelu(a); }
};

struct SiluActivation {
  static constexpr const char* name = "silu";
  template <class T>
  T operator()(T a) const noexcept { return silu(a); }
};

MOEKIT_NAMESPACE_END
