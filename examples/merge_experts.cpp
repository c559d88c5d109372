// SPDX-License-Identifier: MIT
// merge_experts: halve the experts of a block by merging similar ones.
// Cluster the 16 experts into 8 groups (by their outputs on calibration
// tokens, by their router rows, or at random), merge each group by
// frequency-weighted averaging or by the Sub-MoE subspace merge (joint SVD,
// shared U, frequency-merged V), and print the output error of each merged
// block against the original on held-out tokens.
//
// The experts are made as noisy pairs of 8 prototypes (shuffled), the
// situation merging is for: similar experts that a model learned twice.
//
// Build alone:  g++ -std=c++17 -O2 -I<moekit>/include -I/usr/include/eigen3 merge_experts.cpp -pthread
#include <moekit/moekit.hpp>
#include <moekit/hooks/expert_clustering.hpp>
#include <moekit/hooks/expert_merging.hpp>
#include <moekit/hooks/routing_stats.hpp>

#include <algorithm>
#include <cstdio>
#include <numeric>
#include <random>
#include <vector>

using moekit::Index;
using moekit::Matrix;

int main() {
  const Index E = 16, K = 8, k = 2, d = 64, f = 96;
  std::mt19937 gen(11);
  auto random = [&](Index rows, Index cols, float scale) {
    std::normal_distribution<float> dist(0.0f, scale);
    Matrix m(rows, cols);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = dist(gen);
    return m;
  };

  // Expert e is prototype proto[e] plus 25% noise; router rows likewise.
  std::vector<int> proto(static_cast<std::size_t>(E));
  for (Index e = 0; e < E; ++e) proto[static_cast<std::size_t>(e)] = static_cast<int>(e / 2);
  std::shuffle(proto.begin(), proto.end(), gen);
  const float sd = 0.125f, sf = 0.1f;
  std::vector<Matrix> pg, pu, pdn, pr;
  for (Index p = 0; p < K; ++p) {
    pg.push_back(random(f, d, sd));
    pu.push_back(random(f, d, sd));
    pdn.push_back(random(d, f, sf));
    pr.push_back(random(1, d, 0.5f));
  }
  Matrix gate(E * f, d), up(E * f, d), down(E * d, f), router(E, d);
  for (Index e = 0; e < E; ++e) {
    const auto p = static_cast<std::size_t>(proto[static_cast<std::size_t>(e)]);
    gate.middleRows(e * f, f) = pg[p] + random(f, d, 0.25f * sd);
    up.middleRows(e * f, f) = pu[p] + random(f, d, 0.25f * sd);
    down.middleRows(e * d, d) = pdn[p] + random(d, f, 0.25f * sf);
    router.row(e) = pr[p] + random(1, d, 0.125f);
  }
  moekit::SwiGluMoEBlock block(moekit::Router<>(router, moekit::RouterOptions().with_top_k(k)),
                               moekit::SwiGluExperts(E, gate, up, down));

  const Matrix calib = random(256, d, 1.0f), test = random(512, d, 1.0f);
  moekit::LoadObserver load;
  block.forward(calib, load);
  std::vector<double> freq;
  for (const Index c : load.counts()) freq.push_back(static_cast<double>(c));
  const Matrix y = block.forward(test);

  std::printf("%ld experts (noisy pairs of %ld prototypes), top-%ld, d = %ld, f = %ld -> %ld merged experts\n",
              static_cast<long>(E), static_cast<long>(K), static_cast<long>(k), static_cast<long>(d),
              static_cast<long>(f), static_cast<long>(K));
  std::printf("prototype of each expert:  ");
  for (const int p : proto) std::printf("%d ", p);
  std::printf("\n\n");

  auto print_groups = [&](const char* name, const std::vector<std::int32_t>& g) {
    std::printf("%-24s", name);
    for (Index c = 0; c < K; ++c) {
      std::printf("{");
      bool first = true;
      for (Index e = 0; e < E; ++e)
        if (g[static_cast<std::size_t>(e)] == c) {
          std::printf(first ? "%ld" : ",%ld", static_cast<long>(e));
          first = false;
        }
      std::printf("} ");
    }
    std::printf("\n");
  };
  auto error_of = [&](const std::vector<std::int32_t>& groups, const moekit::MergeOptions& opt) {
    auto merged = moekit::merge_experts(block, groups, freq, opt);
    return static_cast<double>((merged.forward(test) - y).norm() / y.norm());
  };

  const auto by_output = moekit::cluster_experts(moekit::output_features(block.experts(), calib), K);
  const auto by_router = moekit::cluster_experts(moekit::router_features(block.router()), K,
                                                 moekit::ClusterOptions().with_method(moekit::ClusterMethod::agglomerative));
  std::vector<std::int32_t> at_random(static_cast<std::size_t>(E));
  for (Index e = 0; e < E; ++e) at_random[static_cast<std::size_t>(e)] = static_cast<std::int32_t>(e % K);
  std::shuffle(at_random.begin(), at_random.end(), gen);
  print_groups("outputs (k-means):", by_output);
  print_groups("router rows (agglom.):", by_router);
  print_groups("random:", at_random);

  const auto avg = moekit::MergeOptions();
  const auto sub_full = moekit::MergeOptions().with_method(moekit::MergeMethod::subspace);
  const Index rank = 64;
  const auto sub_low = moekit::MergeOptions().with_method(moekit::MergeMethod::subspace).with_rank(rank);
  std::printf("\nrelative output error ||y_merged - y|| / ||y|| on %ld held-out tokens\n", static_cast<long>(test.rows()));
  std::printf("  %-24s %12s %16s %13s%-3ld\n", "clusters", "freq. avg", "Sub-MoE full", "Sub-MoE r=", static_cast<long>(rank));
  const std::pair<const char*, const std::vector<std::int32_t>*> rows[] = {
      {"outputs (k-means)", &by_output}, {"router rows (agglom.)", &by_router}, {"random", &at_random}};
  double best = 1e9, rnd = 0;
  for (const auto& r : rows) {
    const double a = error_of(*r.second, avg), b = error_of(*r.second, sub_full), c = error_of(*r.second, sub_low);
    std::printf("  %-24s %12.4f %16.4f %16.4f\n", r.first, a, b, c);
    if (r.second == &at_random) rnd = a;
    else best = std::min(best, a);
  }
  std::printf("\n(Sub-MoE at full rank is the frequency average; rank r keeps the average's part in the\n"
              " cluster's top-r shared output subspace, what a factorised U_r, V_r store would hold.)\n");
  return best < rnd ? 0 : 1;
}
