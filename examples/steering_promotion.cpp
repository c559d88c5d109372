// SPDX-License-Identifier: MIT
// steering_promotion: multilingual routing steering (Bandarkar et al., arXiv
// 2510.04694). 1) Identify "task experts": each expert's activation frequency
// (fraction of tokens whose top-k contains it) on in-task data minus the same on
// generic data, Δ_e = freq_task - freq_generic, kept when Δ_e > τ. 2) Soft
// intervention on generic input: z_e += λ·std(z) for the task experts (std over
// the token's E logits), λ = 0.5 and 1.0, via Steering::promote(...,
// PromoteScale::logit_std). 3) Hard intervention: Steering::force (selection
// only; the expert keeps its own softmax weight) and the paper's form
// z_e = max(z) + ε built as a per-token logit bias (the expert also gets the
// top weight). Prints the task experts' frequencies and the output change.
//
// Build alone:  g++ -std=c++17 -O2 -I<moekit>/include -I/usr/include/eigen3 steering_promotion.cpp -pthread
#include <moekit/moekit.hpp>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

namespace {

// Fraction of tokens whose top-k contains each expert [E].
std::vector<double> activation_frequency(const moekit::RoutingPlan& plan) {
  const std::vector<moekit::Index> counts = plan.expert_counts();
  std::vector<double> freq(counts.size());
  for (std::size_t e = 0; e < counts.size(); ++e)
    freq[e] = static_cast<double>(counts[e]) / static_cast<double>(plan.num_tokens());
  return freq;
}

// Mean activation frequency of a set of experts.
double set_frequency(const moekit::RoutingPlan& plan, const std::vector<std::int32_t>& set) {
  const std::vector<double> freq = activation_frequency(plan);
  double s = 0;
  for (std::int32_t e : set) s += freq[static_cast<std::size_t>(e)];
  return s / static_cast<double>(set.size());
}

// Mean combine weight the set's experts get in the tokens that select them.
double set_weight(const moekit::RoutingPlan& plan, const std::vector<std::int32_t>& set) {
  double s = 0;
  long n = 0;
  for (moekit::Index t = 0; t < plan.num_tokens(); ++t)
    for (moekit::Index j = 0; j < plan.top_k(); ++j)
      if (std::find(set.begin(), set.end(), plan.ids(t, j)) != set.end()) {
        s += plan.weights(t, j);
        ++n;
      }
  return n ? s / static_cast<double>(n) : 0.0;
}

double relative_change(const moekit::Matrix& a, const moekit::Matrix& b) {
  return static_cast<double>((a - b).norm() / b.norm());
}

}  // namespace

int main() {
  // A Qwen/OLMoE-like router at a small size: softmax over 16 experts, top-2, not renormalised.
  const moekit::Index E = 16, k = 2, d = 128, f = 256, T = 512;
  const double tau = 0.2;

  std::mt19937 gen(11);
  auto random = [&](moekit::Index rows, moekit::Index cols, float scale) {
    std::normal_distribution<float> dist(0.0f, scale);
    moekit::Matrix m(rows, cols);
    for (moekit::Index i = 0; i < m.size(); ++i) m.data()[i] = dist(gen);
    return m;
  };

  // Weights drawn one by one (the order of evaluation of function arguments
  // differs between compilers, and so would the numbers).
  const moekit::Matrix w_router = random(E, d, 0.15f);
  const moekit::Matrix gate = random(E * f, d, 0.05f), up = random(E * f, d, 0.05f),
                       down = random(E * d, f, 0.03f);
  moekit::SwiGluMoEBlock block(moekit::Router<>(w_router, moekit::RouterOptions().with_top_k(k).with_renormalize(false)),
                               moekit::SwiGluExperts(E, gate, up, down));

  // Two batches: "generic" tokens, and "task" tokens that lean towards a
  // direction some (unknown to the method) experts' router rows point along.
  const moekit::Matrix generic = random(T, d, 1.0f);
  moekit::Vector dir = (w_router.row(3) + w_router.row(9) + w_router.row(12)).transpose();
  dir /= dir.norm();
  moekit::Matrix task = random(T, d, 1.0f);
  task.rowwise() += 2.0f * dir.transpose();

  // 1) Task-expert identification (Eq. 3): Δ_e = freq_task - freq_generic > τ.
  const std::vector<double> f_task = activation_frequency(block.route(task));
  const moekit::RoutingPlan plan0 = block.route(generic);
  const std::vector<double> f_gen = activation_frequency(plan0);
  std::vector<std::int32_t> task_experts;
  std::printf("expert  freq_task  freq_generic  delta\n");
  for (moekit::Index e = 0; e < E; ++e) {
    const double delta = f_task[static_cast<std::size_t>(e)] - f_gen[static_cast<std::size_t>(e)];
    if (delta > tau) task_experts.push_back(static_cast<std::int32_t>(e));
    std::printf("  %2ld     %.3f      %.3f      %+.3f%s\n", static_cast<long>(e), f_task[static_cast<std::size_t>(e)],
                f_gen[static_cast<std::size_t>(e)], delta, delta > tau ? "  <- task expert" : "");
  }
  if (task_experts.empty()) {
    std::printf("no expert has delta > %.2f\nFAILED\n", tau);
    return 1;
  }
  std::printf("task experts (delta > %.2f):", tau);
  for (std::int32_t e : task_experts) std::printf(" %d", e);
  std::printf("\n\n");

  moekit::ThreadPoolExecutor pool(2);
  moekit::Matrix y0(T, d), y(T, d);
  block.forward(generic, y0, pool);

  // 2) Soft intervention on the generic batch: z_e += λ·std(z).
  const double freq_before = set_frequency(plan0, task_experts);
  std::printf("generic batch, task experts' mean activation frequency:\n");
  std::printf("  no steering          freq %.3f  mean weight %.3f\n", freq_before, set_weight(plan0, task_experts));
  std::vector<double> soft_freq;
  for (float lambda : {0.5f, 1.0f}) {
    block.router().steering().clear();
    block.router().steering().promote(task_experts, lambda, moekit::PromoteScale::logit_std);
    block.forward(generic, y, pool);
    const moekit::RoutingPlan& plan = block.last_plan();
    soft_freq.push_back(set_frequency(plan, task_experts));
    std::printf("  promote lambda=%.1f   freq %.3f  mean weight %.3f  |dy|/|y| = %.3f\n", lambda, soft_freq.back(),
                set_weight(plan, task_experts), relative_change(y, y0));
  }

  // 3) Hard intervention. At most k experts (forcing more than k derails a
  // model): the task experts with the largest Δ.
  std::vector<std::int32_t> hard = task_experts;
  std::sort(hard.begin(), hard.end(), [&](std::int32_t a, std::int32_t b) {
    return f_task[static_cast<std::size_t>(a)] - f_gen[static_cast<std::size_t>(a)] >
           f_task[static_cast<std::size_t>(b)] - f_gen[static_cast<std::size_t>(b)];
  });
  if (static_cast<moekit::Index>(hard.size()) > k) hard.resize(static_cast<std::size_t>(k));
  const double hard_before = set_frequency(plan0, hard);

  // (a) Steering::force: always selected, weight = its own softmax score.
  block.router().steering().clear();
  block.router().steering().force(hard);
  block.forward(generic, y, pool);
  const double forced_freq = set_frequency(block.last_plan(), hard);
  std::printf("hard, forced set {");
  for (std::size_t i = 0; i < hard.size(); ++i) std::printf(i ? " %d" : "%d", hard[i]);
  std::printf("} (freq before %.3f):\n", hard_before);
  std::printf("  force()              freq %.3f  mean weight %.3f  |dy|/|y| = %.3f\n", forced_freq,
              set_weight(block.last_plan(), hard), relative_change(y, y0));

  // (b) The paper's z_e = max(z) + ε, as a per-token bias [T, E] computed from
  // the raw logits: the expert is both selected and weighted as the top choice.
  const moekit::Matrix z = block.router().logits(generic);
  moekit::Matrix tb = moekit::Matrix::Zero(T, E);
  for (moekit::Index t = 0; t < T; ++t)
    for (std::size_t i = 0; i < hard.size(); ++i)
      tb(t, hard[i]) = z.row(t).maxCoeff() - z(t, hard[i]) + 1e-3f * static_cast<float>(hard.size() - i);
  block.router().steering().clear();
  block.router().steering().set_token_bias(tb);
  block.forward(generic, y, pool);
  const double maxeps_freq = set_frequency(block.last_plan(), hard);
  std::printf("  z_e = max(z) + eps   freq %.3f  mean weight %.3f  |dy|/|y| = %.3f\n", maxeps_freq,
              set_weight(block.last_plan(), hard), relative_change(y, y0));

  // The library's promotion must match the definition (double-precision reference routing).
  block.router().steering().clear();
  block.router().steering().promote(task_experts, 0.5f, moekit::PromoteScale::logit_std);
  const bool same_as_reference =
      (block.route(generic).ids.array() == moekit::reference::route(block.router(), generic).ids.array()).all();
  block.router().steering().clear();

  const bool ok = freq_before < soft_freq[0] && soft_freq[0] < soft_freq[1] && forced_freq == 1.0 &&
                  maxeps_freq == 1.0 && same_as_reference;
  std::printf("\ncheck: promoted frequency %.3f < %.3f (0.5) < %.3f (1.0), forced %.3f, max+eps %.3f, "
              "plan == reference: %s -> %s\n",
              freq_before, soft_freq[0], soft_freq[1], forced_freq, maxeps_freq, same_as_reference ? "yes" : "no",
              ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
