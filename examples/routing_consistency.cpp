// SPDX-License-Identifier: MIT
// routing_consistency: record the routing of a 4-layer stack of MoE blocks
// over a token sequence, save and reload it as a trace file, and measure its
// local routing consistency (SRP, SCH: Liang et al., arXiv 2505.16056), with
// the hit rate of LRU and LFU expert caches beside SCH's oracle. The same
// tokens in shuffled order (no locality) are the baseline.
//
// Build alone:  g++ -std=c++17 -O2 -I<moekit>/include -I/usr/include/eigen3 routing_consistency.cpp -pthread
#include <moekit/moekit.hpp>
#include <moekit/hooks/expert_cache.hpp>
#include <moekit/hooks/routing_consistency.hpp>
#include <moekit/hooks/routing_trace.hpp>
#include <moekit/hooks/trace_file.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <random>
#include <vector>

using moekit::Index;
using moekit::Matrix;

int main() {
  const Index L = 4, E = 16, k = 2, d = 64, f = 96, T = 512;
  std::mt19937 gen(5);
  auto random = [&](Index rows, Index cols, float scale) {
    std::normal_distribution<float> dist(0.0f, scale);
    Matrix m(rows, cols);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = dist(gen);
    return m;
  };
  std::vector<moekit::SwiGluMoEBlock> layers;
  for (Index l = 0; l < L; ++l)
    layers.emplace_back(moekit::Router<>(random(E, d, 0.3f), moekit::RouterOptions().with_top_k(k)),
                        moekit::SwiGluExperts(E, random(E * f, d, 0.1f), random(E * f, d, 0.1f), random(E * d, f, 0.08f)));

  // A sequence with local structure: the hidden state drifts slowly (AR(1), ρ = 0.9),
  // as a topic or domain does within a document.
  Matrix seq(T, d);
  seq.row(0) = random(1, d, 1.0f);
  for (Index t = 1; t < T; ++t) seq.row(t) = 0.9f * seq.row(t - 1) + random(1, d, std::sqrt(1.0f - 0.81f));
  std::vector<Index> order(static_cast<std::size_t>(T));
  for (Index t = 0; t < T; ++t) order[static_cast<std::size_t>(t)] = t;
  std::shuffle(order.begin(), order.end(), gen);
  Matrix shuffled(T, d);
  for (Index t = 0; t < T; ++t) shuffled.row(t) = seq.row(order[static_cast<std::size_t>(t)]);

  // Each layer's block reports to the layer's observer of one shared recorder;
  // the residual stream carries h = h + block(h) from layer to layer.
  auto record = [&](const Matrix& x) {
    moekit::TraceRecorder rec(L);
    Matrix h = x;
    for (Index l = 0; l < L; ++l) {
      auto obs = rec.layer(l);
      h += layers[static_cast<std::size_t>(l)].forward(h, obs);
    }
    return rec.trace();
  };
  const moekit::RoutingTrace trace = record(seq), baseline = record(shuffled);

  const std::string path = (std::filesystem::temp_directory_path() / "moekit_routing_trace.safetensors").string();
  moekit::save_trace(path, trace);
  const moekit::RoutingTrace loaded = moekit::load_trace(path);
  std::printf("trace: %ld tokens x %ld layers x top-%ld of %ld experts, saved to %s and reloaded: %s\n\n",
              static_cast<long>(T), static_cast<long>(L), static_cast<long>(k), static_cast<long>(E), path.c_str(),
              loaded.data() == trace.data() ? "identical" : "DIFFERENT");

  std::printf("SRP (segment routing best performance; 1 = one fixed expert set serves each segment)\n");
  std::printf("  %-4s", "m");
  for (Index l = 0; l < L; ++l) std::printf("  layer %ld", static_cast<long>(l));
  std::printf("    model  shuffled\n");
  for (const Index m : {4, 16, 64}) {
    std::printf("  %-4ld", static_cast<long>(m));
    for (const auto& r : moekit::srp_per_layer(loaded, m)) std::printf("  %7.3f", r.srp);
    const auto all = moekit::srp(loaded, m);
    std::printf("  %7.3f  %8.3f   (model tau = %ld)\n", all.srp, moekit::srp(baseline, m).srp, static_cast<long>(all.tau));
  }

  const Index m = 16;
  std::printf("\nexpert cache hit rate per layer (mean over layers), segment m = %ld for SCH's oracle\n",
              static_cast<long>(m));
  std::printf("  %-12s %10s %8s %8s %16s\n", "cache C", "SCH oracle", "LRU", "LFU", "oracle shuffled");
  for (const Index C : {k, 2 * k, 4 * k}) {
    double oracle = 0, lru = 0, lfu = 0, shuf = 0;
    for (Index l = 0; l < L; ++l) {
      const auto req = moekit::layer_requests(loaded, l);
      oracle += moekit::sch_layer(loaded, m, C, l).hit_rate() / static_cast<double>(L);
      lru += moekit::simulate_cache(req, C, moekit::LruPolicy()).hit_rate() / static_cast<double>(L);
      lfu += moekit::simulate_cache(req, C, moekit::LfuPolicy()).hit_rate() / static_cast<double>(L);
      shuf += moekit::sch_layer(baseline, m, C, l).hit_rate() / static_cast<double>(L);
    }
    std::printf("  C = %-2ld (%ldk) %10.3f %8.3f %8.3f %16.3f\n", static_cast<long>(C), static_cast<long>(C / k), oracle,
                lru, lfu, shuf);
  }
  std::printf("\nwhole-model SCH(m = %ld, C = 2k per layer): %.3f (shuffled %.3f)\n", static_cast<long>(m),
              moekit::sch(loaded, m, 2 * k).hit_rate(), moekit::sch(baseline, m, 2 * k).hit_rate());
  std::filesystem::remove(path);
  return loaded.data() == trace.data() ? 0 : 1;
}
