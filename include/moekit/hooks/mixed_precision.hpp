// SPDX-License-Identifier: MIT
// Mixed-precision expert compression: each expert gets its own bit width,
// chosen under a memory budget from calibration statistics as MC-MoE's PMQ
// does (Huang et al., arXiv 2410.06270, METHODS.md §8a), then quantised with
// group_quantization.hpp.
//
//   auto r = moekit::compress_mixed_precision(block, calib,
//                moekit::MixedPrecisionOptions().with_average_bits(3.0));
//   r.block, r.bits, r.bytes, r.output_error ...
//
// NOTE: the allocation. On the calibration tokens x [N, d], with the block's
// own routing, per expert i:
//   φ_i     = routed pairs of i / all routed pairs          (activation frequency)
//   w_i     = Σ combine weights of i / Σ all combine weights (activation weight)
//   ε_{i,b} = ‖Y − Y_{i,b}‖_F, Y the block output and Y_{i,b} the output with
//             expert i alone quantised to b bits. The router is not quantised,
//             so the routing does not change and only the rows routed to i
//             differ: ε² = Σ over those (token, slot) of ‖g·(e_i(x) − e_i^b(x))‖²
//             (‖e_i(g·x) − e_i^b(g·x)‖² for WeightPlacement::input), which is how
//             it is computed: one expert at a time on its own tokens.
//   Then, exactly (dynamic programming over experts and bit sums),
//     minimise   Σ_i φ_i^a · w_i^b · ε_{i,b_i}^c
//     subject to Σ_i b_i ≤ floor(average_bits · E),  b_i ∈ allowed_bits,
//   ties going to the smaller bit sum. MC-MoE: a = c = α = 1, b = β = 1.5
//   (the defaults). Since ε already sums over the expert's own tokens and
//   weights, φ and w count usage a second time; a = b = 0, c = 2 instead
//   minimises Σ_i ε_i², the squared output error when the experts' errors
//   add up independently (with_exponents(0, 0, 2)). The experts of a bank all have the same
//   size, so the bit sum is the memory budget (MC-MoE's Σ b ≤ B_total);
//   bytes and budget_used report the true storage, scales included.
// MC-MoE's extra constraint (at least one expert at each of two widths) is
// not imposed; its Gurobi ILP and this DP give the same optimum otherwise.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <utility>
#include <vector>

#include "../block/moe_block.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "expert_pruning.hpp"
#include "group_quantization.hpp"

MOEKIT_NAMESPACE_BEGIN

struct MixedPrecisionOptions {
  /// Bit widths an expert may get (each in [2, 8]).
  std::vector<int> allowed_bits{2, 3, 4, 8};
  /// Budget: Σ_i b_i <= floor(average_bits · E).
  double average_bits = 3.0;
  /// Quantisation group size along the input dimension.
  Index group_size = 128;
  /// Exponents of the objective φ^a · w^b · ε^c (MC-MoE's defaults a = c = α = 1, b = β = 1.5).
  double frequency_exponent = 1.0, weight_exponent = 1.5, error_exponent = 1.0;

  MixedPrecisionOptions& with_allowed_bits(std::vector<int> b) { allowed_bits = std::move(b); return *this; }
  MixedPrecisionOptions& with_average_bits(double b) { average_bits = b; return *this; }
  MixedPrecisionOptions& with_group_size(Index g) { group_size = g; return *this; }
  MixedPrecisionOptions& with_exponents(double frequency, double weight, double error) {
    frequency_exponent = frequency;
    weight_exponent = weight;
    error_exponent = error;
    return *this;
  }
};

/// Calibration statistics of every expert (see the NOTE).
struct ExpertQuantStats {
  std::vector<int> bits;                   ///< [B] the candidate widths
  std::vector<double> frequency;           ///< [E] φ_i
  std::vector<double> weight;              ///< [E] w_i
  std::vector<std::vector<double>> error;  ///< [E][B] ε_{i,b}
};

/// A bit width per expert and its objective value.
struct BitAllocation {
  std::vector<int> bits;    ///< [E]
  double cost = 0.0;        ///< Σ_i cost[i][chosen]
  std::int64_t bit_sum = 0; ///< Σ_i b_i
};

/// Exact minimum of Σ_i cost[i][j_i] subject to Σ_i allowed[j_i] <= max_bit_sum
/// (dynamic programming over experts and bit sums; ties -> smaller bit sum,
/// then the earlier choice). cost: [E][B], allowed: [B] widths >= 1.
inline BitAllocation allocate_bits(const std::vector<std::vector<double>>& cost, const std::vector<int>& allowed,
                                   std::int64_t max_bit_sum) {
  const std::size_t E = cost.size(), B = allowed.size();
  detail::require(E >= 1, "bit allocation: expected at least 1 expert, got 0");
  detail::require(B >= 1, "bit allocation: expected at least 1 allowed bit width, got 0");
  int lo = allowed[0], hi = allowed[0];
  for (const int b : allowed) {
    detail::require(b >= 1, "bit allocation: expected bit widths >= 1, got ", b);
    lo = std::min(lo, b);
    hi = std::max(hi, b);
  }
  for (std::size_t i = 0; i < E; ++i) {
    detail::require_size("bit allocation cost row", static_cast<Index>(cost[i].size()), static_cast<Index>(B));
    for (const double c : cost[i])
      detail::require(std::isfinite(c), "bit allocation: non-finite cost ", c, " for expert ", i);
  }
  const std::int64_t need = static_cast<std::int64_t>(E) * lo;
  detail::require(max_bit_sum >= need, "bit budget: expected at least ", need, " bits (", E, " experts at ", lo,
                  " bits), got ", max_bit_sum);
  const std::int64_t S = std::min<std::int64_t>(max_bit_sum, static_cast<std::int64_t>(E) * hi);
  const double inf = std::numeric_limits<double>::infinity();
  const auto W = static_cast<std::size_t>(S + 1);
  std::vector<double> dp(W, inf), next(W);
  std::vector<int> choice(E * W, -1);  // [E][S + 1] width index chosen for expert i at sum s
  dp[0] = 0.0;
  for (std::size_t i = 0; i < E; ++i) {
    std::fill(next.begin(), next.end(), inf);
    for (std::size_t s = 0; s < W; ++s) {
      if (dp[s] == inf) continue;
      for (std::size_t j = 0; j < B; ++j) {
        const std::size_t t = s + static_cast<std::size_t>(allowed[j]);
        if (t >= W) continue;
        const double v = dp[s] + cost[i][j];
        if (v < next[t]) {
          next[t] = v;
          choice[i * W + t] = static_cast<int>(j);
        }
      }
    }
    dp.swap(next);
  }
  std::size_t best = W;
  for (std::size_t s = 0; s < W; ++s)
    if (dp[s] < inf && (best == W || dp[s] < dp[best])) best = s;
  BitAllocation out;
  out.cost = dp[best];
  out.bit_sum = static_cast<std::int64_t>(best);
  out.bits.resize(E);
  for (std::size_t i = E; i-- > 0;) {
    const int j = choice[i * W + best];
    out.bits[i] = allowed[static_cast<std::size_t>(j)];
    best -= static_cast<std::size_t>(allowed[static_cast<std::size_t>(j)]);
  }
  return out;
}

/// φ, w and ε of every expert of `block` on calibration tokens x [N, d], for
/// every width in `bits` (see the NOTE).
template <class R, class X, class C, class S>
ExpertQuantStats expert_quantization_stats(const MoEBlock<R, X, C, S>& block, const MatrixRef& x,
                                           const std::vector<int>& bits, Index group_size) {
  const Index E = block.num_experts(), d = block.hidden_size();
  const RoutingPlan plan = block.route(x);
  const bool input_side = detail::combine_scales_input<C>::get(block.combine());
  ExpertQuantStats st;
  st.bits = bits;
  st.frequency.assign(static_cast<std::size_t>(E), 0.0);
  st.weight.assign(static_cast<std::size_t>(E), 0.0);
  st.error.assign(static_cast<std::size_t>(E), std::vector<double>(bits.size(), 0.0));
  // Rows routed to each expert, with their weights.
  std::vector<std::vector<std::pair<Index, float>>> rows(static_cast<std::size_t>(E));
  double pairs = 0.0, mass = 0.0;
  for (Index t = 0; t < plan.num_tokens(); ++t)
    for (Index j = 0; j < plan.top_k(); ++j) {
      const std::int32_t e = plan.ids(t, j);
      if (!plan.is_routed(e)) continue;
      rows[static_cast<std::size_t>(e)].push_back({t, plan.weights(t, j)});
      st.frequency[static_cast<std::size_t>(e)] += 1.0;
      st.weight[static_cast<std::size_t>(e)] += static_cast<double>(plan.weights(t, j));
      pairs += 1.0;
      mass += static_cast<double>(plan.weights(t, j));
    }
  for (Index e = 0; e < E; ++e) {
    if (pairs > 0.0) st.frequency[static_cast<std::size_t>(e)] /= pairs;
    if (mass != 0.0) st.weight[static_cast<std::size_t>(e)] /= mass;
    const auto& r = rows[static_cast<std::size_t>(e)];
    if (r.empty()) continue;
    Matrix xe(static_cast<Index>(r.size()), d);  // [n, d] the expert's inputs
    for (std::size_t i = 0; i < r.size(); ++i)
      xe.row(static_cast<Index>(i)) = input_side ? Matrix(r[i].second * x.row(r[i].first)) : Matrix(x.row(r[i].first));
    const auto one = prune_experts(block.experts(), {static_cast<std::int32_t>(e)});
    const Matrix y = one.forward(0, xe);
    for (std::size_t b = 0; b < bits.size(); ++b) {
      const Matrix yq = quantize_experts(one, {bits[b]}, group_size).forward(0, xe);
      double sq = 0.0;
      for (std::size_t i = 0; i < r.size(); ++i) {
        const double g = input_side ? 1.0 : static_cast<double>(r[i].second);
        sq += g * g * (y.row(static_cast<Index>(i)) - yq.row(static_cast<Index>(i))).cast<double>().squaredNorm();
      }
      st.error[static_cast<std::size_t>(e)][b] = std::sqrt(sq);
    }
  }
  return st;
}

/// What compress_mixed_precision made and measured.
template <class Block>
struct MixedPrecisionResult {
  Block block;                   ///< the compressed block (dequantised f32 weights)
  std::vector<int> bits;         ///< [E] bit width of each expert
  double average_bits = 0.0;     ///< Σ b_i / E
  std::int64_t bit_budget = 0;   ///< floor(average_bits option · E)
  std::int64_t bytes = 0;        ///< routed experts' true compressed size (codes + f16 scales + f32 biases)
  std::int64_t fp32_bytes = 0;   ///< their f32 size
  double objective = 0.0;        ///< Σ φ^a w^b ε^c at the chosen widths
  double output_error = 0.0;     ///< ‖Y_q − Y‖_F / ‖Y‖_F on the calibration tokens
  double output_max_abs = 0.0;   ///< max |Y_q − Y|
  ExpertQuantStats stats;        ///< the calibration statistics used
};

/// Chooses a width per expert under the budget (see the NOTE), quantises, and
/// measures the result against the f32 block on the calibration tokens.
template <class R, class X, class C, class S>
MixedPrecisionResult<MoEBlock<R, X, C, S>> compress_mixed_precision(
    const MoEBlock<R, X, C, S>& block, const MatrixRef& calib,
    const MixedPrecisionOptions& options = MixedPrecisionOptions()) {
  detail::require(!options.allowed_bits.empty(), "mixed precision allowed_bits: expected at least one width");
  for (const int b : options.allowed_bits) detail::check_quantization(b, options.group_size);
  detail::require(std::isfinite(options.average_bits) && options.average_bits > 0.0,
                  "mixed precision average_bits: expected a finite value > 0, got ", options.average_bits);
  detail::require(calib.rows() >= 1, "calibration x: expected at least 1 token, got 0");
  for (const double x : {options.frequency_exponent, options.weight_exponent, options.error_exponent})
    detail::require(std::isfinite(x) && x >= 0.0, "mixed precision exponents: expected finite values >= 0, got ", x);
  const Index E = block.num_experts();
  const ExpertQuantStats st = expert_quantization_stats(block, calib, options.allowed_bits, options.group_size);
  std::vector<std::vector<double>> cost(static_cast<std::size_t>(E));
  for (std::size_t i = 0; i < cost.size(); ++i)
    for (std::size_t b = 0; b < options.allowed_bits.size(); ++b)
      cost[i].push_back(std::pow(st.frequency[i], options.frequency_exponent) *
                        std::pow(st.weight[i], options.weight_exponent) *
                        std::pow(st.error[i][b], options.error_exponent));
  const auto budget = static_cast<std::int64_t>(std::floor(options.average_bits * static_cast<double>(E) + 1e-9));
  const BitAllocation alloc = allocate_bits(cost, options.allowed_bits, budget);

  MoEBlock<R, X, C, S> q(block.router(), quantize_experts(block.experts(), alloc.bits, options.group_size),
                         block.combine(), block.options());
  if (const S* shared = block.shared_experts()) q.set_shared_experts(*shared);
  MoEBlock<R, X, C, S> ref_block = block;
  const Matrix y = ref_block.forward(calib), yq = q.forward(calib);

  MixedPrecisionResult<MoEBlock<R, X, C, S>> out{std::move(q), alloc.bits, 0.0, budget, 0, 0, alloc.cost,
                                                 0.0, 0.0, st};
  for (const int b : alloc.bits) {
    out.average_bits += static_cast<double>(b) / static_cast<double>(E);
    out.bytes += expert_bytes(block.experts(), b, options.group_size);
    out.fp32_bytes += expert_fp32_bytes(block.experts());
  }
  const double ny = static_cast<double>(y.norm());
  out.output_error = ny > 0.0 ? static_cast<double>((yq - y).norm()) / ny : static_cast<double>((yq - y).norm());
  out.output_max_abs = y.size() ? static_cast<double>((yq - y).cwiseAbs().maxCoeff()) : 0.0;
  return out;
}

MOEKIT_NAMESPACE_END
