// SPDX-License-Identifier: MIT
// mote_switch_experts: MoTE, Mixture of Tunable Experts (Dahlke et al., arXiv
// 2502.11096). Switch chosen experts off (their logit becomes -inf: never
// selected, out of the softmax, the next-best expert fills the slot) and force
// others on (always selected, weighted by their own score), on a live block
// with Steering::disable / Steering::force. Prints the per-expert load before
// and after, the output change, and shows that clear() gives back the original
// output bit for bit.
//
// Build alone:  g++ -std=c++17 -O2 -I<moekit>/include -I/usr/include/eigen3 mote_switch_experts.cpp -pthread
#include <moekit/moekit.hpp>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <numeric>
#include <random>
#include <vector>

int main() {
  // DeepSeek-style fine-grained routing at a small size: 16 experts, top-4, renormalised.
  const moekit::Index E = 16, k = 4, d = 128, f = 128, T = 256;

  std::mt19937 gen(3);
  auto random = [&](moekit::Index rows, moekit::Index cols, float scale) {
    std::normal_distribution<float> dist(0.0f, scale);
    moekit::Matrix m(rows, cols);
    for (moekit::Index i = 0; i < m.size(); ++i) m.data()[i] = dist(gen);
    return m;
  };

  // Weights drawn one by one (the order of evaluation of function arguments
  // differs between compilers, and so would the numbers).
  const moekit::Matrix w_router = random(E, d, 0.1f);
  const moekit::Matrix gate = random(E * f, d, 0.05f), up = random(E * f, d, 0.05f),
                       down = random(E * d, f, 0.03f);
  moekit::SwiGluMoEBlock block(moekit::Router<>(w_router, moekit::RouterOptions().with_top_k(k)),
                               moekit::SwiGluExperts(E, gate, up, down));
  const moekit::Matrix x = random(T, d, 1.0f);
  moekit::ThreadPoolExecutor pool(2);

  moekit::Matrix y0(T, d), y_off(T, d), y_both(T, d), y_back(T, d);
  block.forward(x, y0, pool);
  const std::vector<moekit::Index> load0 = block.last_plan().expert_counts();

  // The experts to switch: in MoTE they come from fTRI (differential
  // activation on behaviour-eliciting prompts); here, the two busiest experts
  // go off and the least used one is forced on.
  std::vector<std::int32_t> order(static_cast<std::size_t>(E));
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
    return load0[static_cast<std::size_t>(a)] > load0[static_cast<std::size_t>(b)];
  });
  const std::vector<std::int32_t> off = {order[0], order[1]};
  const std::vector<std::int32_t> on = {order[static_cast<std::size_t>(E - 1)]};
  std::printf("MoTE: %ld tokens, %ld experts, top-%ld; switch off {%d, %d}, force on {%d}\n",
              static_cast<long>(T), static_cast<long>(E), static_cast<long>(k), off[0], off[1], on[0]);

  // Switch off only: the vacated slots are refilled by the next-best experts.
  block.router().steering().disable(off);
  block.forward(x, y_off, pool);
  const std::vector<moekit::Index> load_off = block.last_plan().expert_counts();
  moekit::Index min_routed = k;
  for (moekit::Index t = 0; t < T; ++t) min_routed = std::min(min_routed, block.last_plan().routed_count(t));

  // Switch off and force on.
  block.router().steering().force(on);
  block.forward(x, y_both, pool);
  const moekit::RoutingPlan both = block.last_plan();
  const std::vector<moekit::Index> load_both = both.expert_counts();
  moekit::Index tokens_with_forced = 0;
  double forced_weight = 0;
  for (moekit::Index t = 0; t < T; ++t)
    for (moekit::Index j = 0; j < k; ++j)
      if (both.ids(t, j) == on[0]) {
        ++tokens_with_forced;
        forced_weight += both.weights(t, j);
      }
  const bool matches_reference = (both.ids.array() == moekit::reference::route(block.router(), x).ids.array()).all();

  std::printf("per-expert load (token-expert pairs, %ld in all):\n", static_cast<long>(T * k));
  std::printf("  expert  before  off  off+force\n");
  for (moekit::Index e = 0; e < E; ++e) {
    const std::size_t i = static_cast<std::size_t>(e);
    const bool is_off = std::find(off.begin(), off.end(), e) != off.end(), is_on = e == on[0];
    std::printf("    %2ld     %4ld  %4ld    %4ld   %s\n", static_cast<long>(e), static_cast<long>(load0[i]),
                static_cast<long>(load_off[i]), static_cast<long>(load_both[i]),
                is_off ? "off" : (is_on ? "forced" : ""));
  }
  std::printf("every token still runs %ld experts after switching off (min routed per token %ld)\n",
              static_cast<long>(k), static_cast<long>(min_routed));
  std::printf("forced expert %d is in %ld of %ld token plans, mean weight %.3f (its own renormalised score)\n", on[0],
              static_cast<long>(tokens_with_forced), static_cast<long>(T),
              forced_weight / static_cast<double>(std::max<moekit::Index>(1, tokens_with_forced)));
  std::printf("output change |dy|/|y|: off %.3f, off+force %.3f\n", (y_off - y0).norm() / y0.norm(),
              (y_both - y0).norm() / y0.norm());

  // Clearing the steering gives back the original routing and output, bit for bit.
  block.router().steering().clear();
  block.forward(x, y_back, pool);
  const bool identical = std::memcmp(y_back.data(), y0.data(), sizeof(float) * static_cast<std::size_t>(y0.size())) == 0;
  std::printf("after clear(): output bit-identical to the original: %s\n", identical ? "yes" : "no");

  bool ok = identical && tokens_with_forced == T && min_routed == k && matches_reference &&
            load_both[static_cast<std::size_t>(on[0])] == T;
  for (std::int32_t e : off)
    ok = ok && load_off[static_cast<std::size_t>(e)] == 0 && load_both[static_cast<std::size_t>(e)] == 0;
  std::printf("check: off experts 0 load, forced expert in all %ld plans, plan == reference: %s, clear() "
              "bit-identical -> %s\n",
              static_cast<long>(T), matches_reference ? "yes" : "no", ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
