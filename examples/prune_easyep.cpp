// SPDX-License-Identifier: MIT
// prune_easyep: EASY-EP domain pruning. Score the experts of a Mixtral-style
// block on in-domain calibration tokens (gate weight x output norm, weighted
// by how much the routed experts change the residual), keep the best half,
// and compare the pruned block's output error on held-out in-domain tokens
// with pruning by frequency and pruning random halves.
//
// Build alone:  g++ -std=c++17 -O2 -I<moekit>/include -I/usr/include/eigen3 prune_easyep.cpp -pthread
#include <moekit/moekit.hpp>
#include <moekit/hooks/expert_importance.hpp>
#include <moekit/hooks/expert_pruning.hpp>
#include <moekit/hooks/observer_tee.hpp>
#include <moekit/hooks/routing_stats.hpp>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

using moekit::Index;
using moekit::Matrix;

int main() {
  const Index E = 16, k = 2, d = 64, f = 128, keep_n = E / 2;
  std::mt19937 gen(7);
  auto random = [&](Index rows, Index cols, float scale) {
    std::normal_distribution<float> dist(0.0f, scale);
    Matrix m(rows, cols);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = dist(gen);
    return m;
  };

  // A softmax top-2 block with random weights (checkpoint layout).
  moekit::SwiGluMoEBlock block(
      moekit::Router<>(random(E, d, 1.0f), moekit::RouterOptions().with_top_k(k)),
      moekit::SwiGluExperts(E, random(E * f, d, 0.125f), random(E * f, d, 0.125f), random(E * d, f, 0.09f)));

  // "In-domain" tokens live near a 3-dimensional subspace: they favour some experts.
  const Matrix basis = random(3, d, 1.0f);
  auto domain_tokens = [&](Index n) {
    Matrix x = random(n, 3, 1.0f) * basis + random(n, d, 0.2f);
    return x;
  };
  const Matrix calib = domain_tokens(256), test = domain_tokens(512);

  // Calibration: EASY-EP scores and load counters in one forward. The residual
  // stream before the block is taken to be the block input itself here.
  moekit::EasyEpImportance easyep;
  moekit::LoadObserver load;
  auto both = moekit::tee(easyep, load);
  easyep.set_residual(calib);
  block.forward(calib, both);
  const std::vector<double> scores = easyep.scores();

  std::printf("EASY-EP on %ld calibration tokens, %ld experts, top-%ld; keep %ld\n", static_cast<long>(calib.rows()),
              static_cast<long>(E), static_cast<long>(k), static_cast<long>(keep_n));
  std::printf("  expert  tokens  EASY-EP score\n");
  for (Index e = 0; e < E; ++e)
    std::printf("  %6ld  %6ld  %13.3f\n", static_cast<long>(e), static_cast<long>(load.counts()[static_cast<std::size_t>(e)]),
                scores[static_cast<std::size_t>(e)]);

  const Matrix y_full = block.forward(test);
  auto error_of = [&](const std::vector<std::int32_t>& keep) {
    auto pruned = moekit::prune(block, keep);
    const Matrix y = pruned.forward(test);
    return static_cast<double>((y - y_full).norm() / y_full.norm());
  };
  auto print_set = [](const char* name, const std::vector<std::int32_t>& keep, double err) {
    std::printf("  %-22s {", name);
    for (std::size_t i = 0; i < keep.size(); ++i) std::printf(i ? ", %d" : "%d", keep[i]);
    std::printf("}  relative error %.4f\n", err);
  };

  std::printf("\nheld-out in-domain tokens: %ld; relative output error ||y_pruned - y|| / ||y||\n",
              static_cast<long>(test.rows()));
  const auto keep_easyep = moekit::top_experts(scores, keep_n);
  const double err_easyep = error_of(keep_easyep);
  print_set("EASY-EP", keep_easyep, err_easyep);
  const auto keep_freq = moekit::top_experts(moekit::frequency_importance(load), keep_n);
  print_set("frequency", keep_freq, error_of(keep_freq));

  std::vector<double> random_errors;
  std::vector<std::int32_t> ids(static_cast<std::size_t>(E));
  std::iota(ids.begin(), ids.end(), 0);
  for (int trial = 0; trial < 20; ++trial) {
    std::shuffle(ids.begin(), ids.end(), gen);
    random_errors.push_back(error_of(std::vector<std::int32_t>(ids.begin(), ids.begin() + keep_n)));
  }
  std::sort(random_errors.begin(), random_errors.end());
  const double mean = std::accumulate(random_errors.begin(), random_errors.end(), 0.0) / 20.0;
  std::printf("  %-22s mean %.4f, best %.4f, worst %.4f (20 random halves)\n", "random", mean,
              random_errors.front(), random_errors.back());

  // The run-time mask gives the same outputs without copying any weight.
  moekit::mask_experts(block, keep_easyep);
  auto pruned = moekit::prune(block, keep_easyep);
  const Matrix y_masked = block.forward(test), y_pruned = pruned.forward(test);
  const bool same = (y_masked - y_pruned).cwiseAbs().maxCoeff() == 0.0f;
  std::printf("\nmask_experts(block, keep) == prune(block, keep) bit for bit: %s\n", same ? "yes" : "NO");
  return same && err_easyep < mean ? 0 : 1;
}
