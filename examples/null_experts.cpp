// SPDX-License-Identifier: MIT
// null_experts: AdaMoE (Zeng et al., arXiv 2406.13233). A block with E routed
// experts plus N "null" experts that output zero and cost nothing. The router
// scores all E + N, takes the top-k' (k' > k), and each token therefore runs
// between 0 and k' real experts. The example prints how many real experts the
// tokens use, the expert FLOPs saved against a plain top-k' block (and against
// the top-k block AdaMoE starts from), and the pooled balance loss that
// constrains only the average null usage.
//
// Build alone:  g++ -std=c++17 -O2 -I<moekit>/include -I/usr/include/eigen3 null_experts.cpp -pthread
#include <moekit/moekit.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

int main() {
  // Mixtral's AdaMoE setting at a small size: 8 experts, 16 null experts, k 2 -> 4.
  const moekit::Index E = 8, N = 16, k = 2, kp = 4, d = 128, f = 256, T = 256;

  std::mt19937 gen(7);
  auto random = [&](moekit::Index rows, moekit::Index cols, float scale) {
    std::normal_distribution<float> dist(0.0f, scale);
    moekit::Matrix m(rows, cols);
    for (moekit::Index i = 0; i < m.size(); ++i) m.data()[i] = dist(gen);
    return m;
  };

  const moekit::Matrix w_true = random(E, d, 0.05f);  // the original gate [E, d]
  const moekit::Matrix gate = random(E * f, d, 0.05f), up = random(E * f, d, 0.05f),
                       down = random(E * d, f, 0.03f);
  const moekit::Matrix x = random(T, d, 1.0f);

  // Router weight [E + N, d]: the true rows first, then the null rows. The
  // AdaMoE code initialises W_null by tiling the true rows N/E times; here a
  // perturbation of those rows plus a bias on the null logits (-0.35, about
  // 0.6 of the logits' spread) stands in for what fine-tuning learns: some
  // tokens now prefer "no expert", others several.
  moekit::Matrix w(E + N, d);
  w.topRows(E) = w_true;
  for (moekit::Index i = 0; i < N; ++i) w.row(E + i) = w_true.row(i % E);
  w.bottomRows(N) += random(N, d, 0.04f);
  moekit::Vector bias = moekit::Vector::Zero(E + N);
  bias.tail(N).setConstant(-0.35f);

  // Null experts are the last N router rows; renormalisation (sum) runs over
  // the routed experts of a token only, as AdaMoE does.
  moekit::SwiGluMoEBlock block(
      moekit::Router<>(w, moekit::RouterOptions().with_top_k(kp).with_renormalize(true).with_null_experts(N), bias),
      moekit::SwiGluExperts(E, gate, up, down));
  // The plain blocks for comparison: top-k' and top-k over the E real experts.
  moekit::SwiGluMoEBlock plain_kp(moekit::Router<>(w_true, moekit::RouterOptions().with_top_k(kp)),
                                  moekit::SwiGluExperts(E, gate, up, down));
  moekit::SwiGluMoEBlock plain_k(moekit::Router<>(w_true, moekit::RouterOptions().with_top_k(k)),
                                 moekit::SwiGluExperts(E, gate, up, down));

  moekit::ThreadPoolExecutor pool(2);
  moekit::Matrix y(T, d), y_kp(T, d), y_k(T, d);
  block.forward(x, y, pool);
  plain_kp.forward(x, y_kp, pool);
  plain_k.forward(x, y_k, pool);
  const moekit::RoutingPlan& plan = block.last_plan();

  std::printf("AdaMoE: %ld tokens, hidden %ld, ffn %ld, %ld experts + %ld null experts, top-%ld (was top-%ld)\n",
              static_cast<long>(T), static_cast<long>(d), static_cast<long>(f), static_cast<long>(E),
              static_cast<long>(N), static_cast<long>(kp), static_cast<long>(k));

  // Real experts per token.
  std::vector<long> hist(static_cast<std::size_t>(kp + 1), 0);
  for (moekit::Index t = 0; t < T; ++t) ++hist[static_cast<std::size_t>(plan.routed_count(t))];
  const moekit::Index pairs = plan.routed_pairs();
  std::printf("average real experts per token: %.3f (of %ld slots)\n",
              static_cast<double>(pairs) / static_cast<double>(T), static_cast<long>(kp));
  std::printf("real experts per token:\n");
  for (moekit::Index n = 0; n <= kp; ++n) {
    const long c = hist[static_cast<std::size_t>(n)];
    std::printf("  %ld real: %4ld tokens (%5.1f%%)  ", static_cast<long>(n), c, 100.0 * c / static_cast<double>(T));
    for (long i = 0; i < c; i += 4) std::printf("#");
    std::printf("\n");
  }

  // Expert FLOPs: every computed expert row costs three d x f matmuls (gate, up, down).
  const double per_row = 2.0 * 3.0 * static_cast<double>(d) * static_cast<double>(f);
  const moekit::Index rows = block.last_groups().num_rows();
  const moekit::Index rows_kp = plain_kp.last_groups().num_rows();
  const moekit::Index rows_k = plain_k.last_groups().num_rows();
  std::printf("expert rows computed: AdaMoE %ld, plain top-%ld %ld (T*k' = %ld), plain top-%ld %ld\n",
              static_cast<long>(rows), static_cast<long>(kp), static_cast<long>(rows_kp),
              static_cast<long>(T * kp), static_cast<long>(k), static_cast<long>(rows_k));
  std::printf("expert GFLOPs: AdaMoE %.4f, top-%ld %.4f, top-%ld %.4f\n", rows * per_row * 1e-9,
              static_cast<long>(kp), rows_kp * per_row * 1e-9, static_cast<long>(k), rows_k * per_row * 1e-9);
  const double vs_k = 100.0 * (1.0 - static_cast<double>(rows) / static_cast<double>(rows_k));
  std::printf("AdaMoE saves %.1f%% of the expert FLOPs of top-%ld; against top-%ld it uses %.1f%% %s\n",
              100.0 * (1.0 - static_cast<double>(rows) / static_cast<double>(rows_kp)), static_cast<long>(kp),
              static_cast<long>(k), std::fabs(vs_k), vs_k >= 0 ? "fewer" : "more");
  std::printf("  (the router itself costs 2*(E+N)*d = %ld FLOPs per token instead of 2*E*d = %ld)\n",
              static_cast<long>(2 * (E + N) * d), static_cast<long>(2 * E * d));

  // AdaMoE balance loss: Switch form over all E + N slots, the null experts'
  // load pooled. The scores are the router's softmax over E + N entries.
  moekit::RoutingPlan plan2;
  moekit::Matrix scores;
  block.router().route_logits(block.last_logits(), plan2, &scores);
  const double pooled = moekit::null_pooled_balancing_loss(scores, plan2);
  double null_slots = 0;
  for (moekit::Index t = 0; t < T; ++t)
    for (moekit::Index j = 0; j < kp; ++j) null_slots += plan.is_null(plan.ids(t, j)) ? 1 : 0;
  std::printf("null-pooled balancing loss: %.4f (null experts take %.1f%% of the slots)\n", pooled,
              100.0 * null_slots / static_cast<double>(T * kp));

  // Sanity: the block computed exactly the routed pairs, fewer than top-k';
  // tokens with no real expert output exactly zero; the output matches the
  // double-precision reference.
  bool ok = rows == pairs && pairs < T * kp && rows_kp == T * kp && (plan2.ids.array() == plan.ids.array()).all();
  double zero_rows_max = 0;
  for (moekit::Index t = 0; t < T; ++t)
    if (plan.routed_count(t) == 0) zero_rows_max = std::max(zero_rows_max, static_cast<double>(y.row(t).cwiseAbs().maxCoeff()));
  const moekit::Matrix ref = moekit::reference::forward(block, x);
  const double err = (y - ref).cwiseAbs().maxCoeff();
  ok = ok && zero_rows_max == 0.0 && err <= 1e-5 * std::max(1.0f, ref.cwiseAbs().maxCoeff());
  std::printf("check: rows computed %ld == routed pairs %ld < T*k' %ld; max |y| of 0-expert tokens %.1g; "
              "max |y - reference| %.3g -> %s\n",
              static_cast<long>(rows), static_cast<long>(pairs), static_cast<long>(T * kp), zero_rows_max, err,
              ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
