// SPDX-License-Identifier: MIT
// quickstart: build a Mixtral-style MoE block with random weights, run a batch,
// check it against the reference, and print how the tokens spread over the experts.
//
// Build alone:  g++ -std=c++17 -O2 -I<moekit>/include -I/usr/include/eigen3 quickstart.cpp -pthread
#include <moekit/moekit.hpp>

#include <algorithm>
#include <cstdio>
#include <random>

int main() {
  // Mixtral's routing (softmax over 8 experts, top-2, renormalised) at a small size.
  const moekit::Index E = 8, k = 2, d = 256, f = 896, T = 64;

  std::mt19937 gen(42);
  auto random = [&](moekit::Index rows, moekit::Index cols, float scale) {
    std::normal_distribution<float> dist(0.0f, scale);
    moekit::Matrix m(rows, cols);
    for (moekit::Index i = 0; i < m.size(); ++i) m.data()[i] = dist(gen);
    return m;
  };

  // Weights in checkpoint layout: router [E, d]; gate and up [E, f, d]; down [E, d, f].
  // (Drawn into named variables: argument evaluation order differs between compilers.)
  moekit::Matrix router_weight = random(E, d, 0.05f);
  moekit::Matrix gate = random(E * f, d, 0.05f), up = random(E * f, d, 0.05f), down = random(E * d, f, 0.03f);
  moekit::Router<> router(router_weight, moekit::RouterOptions().with_top_k(k));
  moekit::SwiGluExperts experts(E, gate, up, down);
  moekit::SwiGluMoEBlock block(std::move(router), std::move(experts));

  const moekit::Matrix x = random(T, d, 1.0f);  // [tokens, hidden]
  moekit::ThreadPoolExecutor pool(2);
  moekit::Matrix y(T, d);
  block.forward(x, y, pool);

  // The routing of that forward is plain data.
  const moekit::RoutingPlan& plan = block.last_plan();
  std::printf("moekit %s: %ld tokens, hidden %ld, %ld experts, top-%ld\n", MOEKIT_VERSION_STRING,
              static_cast<long>(T), static_cast<long>(d), static_cast<long>(E), static_cast<long>(k));
  std::printf("token 0 -> experts %d (w %.3f) and %d (w %.3f)\n", plan.ids(0, 0), plan.weights(0, 0),
              plan.ids(0, 1), plan.weights(0, 1));

  std::printf("per-expert load (token-expert pairs):\n");
  const std::vector<moekit::Index> load = plan.expert_counts();
  for (moekit::Index e = 0; e < E; ++e) {
    std::printf("  expert %ld: %3ld  ", static_cast<long>(e), static_cast<long>(load[static_cast<std::size_t>(e)]));
    for (moekit::Index i = 0; i < load[static_cast<std::size_t>(e)]; i += 2) std::printf("#");
    std::printf("\n");
  }

  // The plain-loop reference (double precision) is the oracle for every test.
  const moekit::Matrix ref = moekit::reference::forward(block, x);
  const double err = (y - ref).cwiseAbs().maxCoeff();
  std::printf("max |y - reference| = %.3g (output scale %.3g)\n", err, ref.cwiseAbs().maxCoeff());
  return err <= 1e-5 * std::max(1.0f, ref.cwiseAbs().maxCoeff()) ? 0 : 1;
}
