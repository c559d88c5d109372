// SPDX-License-Identifier: MIT
// online_rerouting: "Rewiring experts on the fly" (Su et al., arXiv 2510.14853)
// on a toy task. The experts and the router stay frozen; only an additive
// logit vector δ [E] (the steering logit bias, z' = z + δ) is learned, by plain
// gradient descent with moekit::router_gradients. The target output is made by
// the same block with a hidden δ*; starting from δ = 0 the loss
// L = ½‖y − target‖² goes down as δ moves towards δ* (up to a constant shift,
// which softmax ignores). Prints the loss every few steps.
//
// Build alone:  g++ -std=c++17 -O2 -I<moekit>/include -I/usr/include/eigen3 online_rerouting.cpp -pthread
#include <moekit/moekit.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <random>

namespace {

// Centred copy of v (softmax routing does not see a constant added to every logit).
moekit::Vector centred(const moekit::Vector& v) { return (v.array() - v.mean()).matrix(); }

double cosine(const moekit::Vector& a, const moekit::Vector& b) {
  const double na = a.norm(), nb = b.norm();
  return na > 0 && nb > 0 ? static_cast<double>(a.dot(b)) / (na * nb) : 0.0;
}

// Fraction of slots whose expert id matches between two plans.
double same_slots(const moekit::RoutingPlan& a, const moekit::RoutingPlan& b) {
  return static_cast<double>((a.ids.array() == b.ids.array()).count()) / static_cast<double>(a.ids.size());
}

}  // namespace

int main() {
  // OLMoE-style routing (the paper's main model): softmax over 8 experts, top-2,
  // no renormalisation, so an expert outside the top-k still gets a gradient
  // through the softmax denominator.
  const moekit::Index E = 8, k = 2, d = 64, f = 128, T = 128;
  const int steps = 60, print_every = 5;
  // Step size, tuned by hand: L sums over T·d outputs, so it scales with 1/T.
  // 0.002 is slow (loss /20 in 60 steps), 0.05 overshoots and never settles.
  const float lr = 0.01f;

  std::mt19937 gen(5);
  auto random = [&](moekit::Index rows, moekit::Index cols, float scale) {
    std::normal_distribution<float> dist(0.0f, scale);
    moekit::Matrix m(rows, cols);
    for (moekit::Index i = 0; i < m.size(); ++i) m.data()[i] = dist(gen);
    return m;
  };

  // Weights drawn one by one (the order of evaluation of function arguments
  // differs between compilers, and so would the numbers).
  const moekit::Matrix w_router = random(E, d, 0.1f);
  const moekit::Matrix gate = random(E * f, d, 0.1f), up = random(E * f, d, 0.1f), down = random(E * d, f, 0.1f);
  moekit::SwiGluMoEBlock block(moekit::Router<>(w_router, moekit::RouterOptions().with_top_k(k).with_renormalize(false)),
                               moekit::SwiGluExperts(E, gate, up, down));
  const moekit::Matrix x = random(T, d, 1.0f);

  // The hidden "true" logit bias and the target it produces.
  const moekit::Vector delta_true = random(E, 1, 1.0f);
  block.router().steering().set_logit_bias(delta_true);
  const moekit::Matrix target = block.forward(x);
  const moekit::RoutingPlan target_plan = block.last_plan();

  std::printf("Rewiring on the fly (toy): %ld tokens, %ld experts, top-%ld; learn delta [E] only, lr %.3g\n",
              static_cast<long>(T), static_cast<long>(E), static_cast<long>(k), lr);
  std::printf(" step      loss   same slots as target   cos(delta, delta*)\n");

  const auto start = std::chrono::steady_clock::now();
  moekit::Vector delta = moekit::Vector::Zero(E);
  double first_loss = 0, last_loss = 0;
  for (int step = 0; step <= steps; ++step) {
    block.router().steering().set_logit_bias(delta);
    const moekit::Matrix y = block.forward(x);
    const moekit::Matrix dy = y - target;  // dL/dy for L = ½‖y − target‖²
    const double loss = 0.5 * static_cast<double>(dy.squaredNorm());
    if (step == 0) first_loss = loss;
    last_loss = loss;
    if (step % print_every == 0 || step == steps)
      std::printf(" %4d  %9.5f        %5.1f%%              %+.3f\n", step, loss,
                  100.0 * same_slots(block.last_plan(), target_plan), cosine(centred(delta), centred(delta_true)));
    if (step == steps) break;
    // dL/dδ with the experts frozen; selection counts as fixed (it is piecewise constant).
    const moekit::RouterGradients g = moekit::router_gradients(block, x, dy);
    delta -= lr * g.logit_bias;
  }
  const double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start).count();

  std::printf("delta* (centred):");
  for (moekit::Index e = 0; e < E; ++e) std::printf(" %+.2f", centred(delta_true)[e]);
  std::printf("\ndelta  (centred):");
  for (moekit::Index e = 0; e < E; ++e) std::printf(" %+.2f", centred(delta)[e]);
  std::printf("\n%d steps in %.0f ms\n", steps, ms);

  const bool ok = last_loss < 0.5 * first_loss;
  std::printf("check: final loss %.5f < 0.5 x initial %.5f -> %s\n", last_loss, first_loss, ok ? "ok" : "FAILED");
  return ok ? 0 : 1;
}
