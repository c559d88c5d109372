// SPDX-License-Identifier: MIT
// A downstream program: includes the umbrella header, builds a small SwiGLU
// MoE block and checks its forward against the reference implementation.
// Built by tests/buildsystem both through add_subdirectory and find_package.
#include <moekit/moekit.hpp>

#include <cmath>
#include <cstdio>
#include <utility>

int main() {
  const moekit::Index E = 4, d = 8, f = 16, T = 5;

  // Deterministic, non-trivial weights (no RNG so the program is reproducible).
  moekit::Matrix router_weight(E, d);  // [E, d]
  for (moekit::Index e = 0; e < E; ++e)
    for (moekit::Index c = 0; c < d; ++c)
      router_weight(e, c) = 0.1f * static_cast<float>((e * 7 + c * 3) % 11) - 0.5f;

  moekit::SwiGluExperts experts(E, d, f);
  for (moekit::Index e = 0; e < E; ++e) {
    auto gate = experts.gate(e);  // [f, d]
    auto up = experts.up(e);      // [f, d]
    auto down = experts.down(e);  // [d, f]
    for (moekit::Index i = 0; i < f; ++i)
      for (moekit::Index c = 0; c < d; ++c) {
        gate(i, c) = 0.01f * static_cast<float>((i + 2 * c + e) % 13) - 0.06f;
        up(i, c) = 0.02f * static_cast<float>((3 * i + c + 5 * e) % 7) - 0.06f;
        down(c, i) = 0.015f * static_cast<float>((i * c + e) % 9) - 0.06f;
      }
  }

  moekit::SwiGluMoEBlock block(
      moekit::Router<>(router_weight, moekit::RouterOptions().with_top_k(2)), std::move(experts));

  moekit::Matrix x(T, d);  // [T, d]
  for (moekit::Index t = 0; t < T; ++t)
    for (moekit::Index c = 0; c < d; ++c) x(t, c) = std::sin(static_cast<float>(t * d + c));

  const moekit::Matrix y = block.forward(x);  // [T, d]
  const moekit::Matrix ref = moekit::reference::forward(block, x);
  const float err = (y - ref).cwiseAbs().maxCoeff();

  std::printf("moekit %s consumer: y [%ld, %ld], max |y - ref| = %g\n", MOEKIT_VERSION_STRING,
              static_cast<long>(y.rows()), static_cast<long>(y.cols()), static_cast<double>(err));
  if (y.rows() != T || y.cols() != d || !(err <= 1e-5f)) {
    std::fprintf(stderr, "consumer: FAILED\n");
    return 1;
  }
  std::printf("consumer: OK\n");
  return 0;
}
