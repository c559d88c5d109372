// SPDX-License-Identifier: MIT
// Expert importance from calibration data: EASY-EP's output-aware score
// (Dong et al., arXiv 2504.06792, METHODS.md §6), plus frequency and
// weight-mass scores, and the keep set of the n most important experts.
//
// NOTE: EasyEpImportance is an observer that opts in to on_expert_output.
// For every routed (token t, expert i) pair of every forward it adds
//     w_t · g_{i,t} · ‖e_{i,t}‖₂
// to score[i], where g is the pair's combine weight from the plan and e the
// expert's output before weighting. The token weight is w_t = 1, unless the
// residual stream h [T, d] before the block was given with set_residual() for
// that forward: then w_t = max(0, 1 − cos(h_t, h_t + r_t)), with r_t the
// routed-experts-only output Σ_i g_{i,t} e_{i,t} (shared experts excluded; for
// WeightPlacement::input, r_t = Σ_i e_{i,t}, the weight being already inside).
// A zero vector has cosine 0 with anything (w_t = 1). Since r_t is complete
// only after every expert reported, weighted pairs wait until the next
// on_route or the next read of scores().
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <numeric>
#include <utility>
#include <vector>

#include "../combine/weighted_sum.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../router/routing_plan.hpp"
#include "routing_stats.hpp"

MOEKIT_NAMESPACE_BEGIN

/// EASY-EP output-aware importance Σ w_t · g · ‖e‖ per expert, over every forward observed.
class EasyEpImportance {
 public:
  static constexpr bool enabled = true;

  /// `placement` must match the block's combine (Llama-4 blocks: input).
  explicit EasyEpImportance(WeightPlacement placement = WeightPlacement::output)
      : placement_(placement) {}

  /// The residual stream h [T, d] before the block, for the next forward only.
  void set_residual(const MatrixRef& h) {
    next_residual_ = h;
    has_next_residual_ = true;
  }

  void on_route(const MatrixRef& x, const Matrix&, const RoutingPlan& plan) {
    flush();
    const bool first = E_ == 0;
    detail::adopt_num_experts(E_, plan, "EASY-EP importance");
    if (first) {
      scores_.assign(static_cast<std::size_t>(E_), 0.0);
      pairs_.assign(static_cast<std::size_t>(E_), 0);
    }
    weights_ = plan.weights;
    hidden_ = x.cols();
    tokens_ += plan.num_tokens();
    weighted_ = has_next_residual_;
    if (weighted_) {
      detail::require_shape("EASY-EP residual h", next_residual_.rows(), next_residual_.cols(),
                            x.rows(), x.cols());
      residual_ = std::move(next_residual_);
      routed_ = Eigen::MatrixXd::Zero(x.rows(), x.cols());
      has_next_residual_ = false;
      next_residual_.resize(0, 0);
    }
  }

  bool wants_expert_outputs() const noexcept { return true; }

  void on_expert_output(Index expert, const std::int32_t* tokens, const std::int32_t* slots, Index n,
                        const float* out) {
    const Index d = hidden_;
    for (Index r = 0; r < n; ++r) {
      const float* row = out + r * d;  // [d]
      const double g = static_cast<double>(weights_.data()[slots[r]]);
      double sq = 0.0;
      for (Index c = 0; c < d; ++c) sq += static_cast<double>(row[c]) * static_cast<double>(row[c]);
      if (!weighted_) {
        scores_[static_cast<std::size_t>(expert)] += g * std::sqrt(sq);
        continue;
      }
      const double gr = placement_ == WeightPlacement::output ? g : 1.0;
      for (Index c = 0; c < d; ++c) routed_(tokens[r], c) += gr * static_cast<double>(row[c]);
      pending_.push_back({tokens[r], static_cast<std::int32_t>(expert), g * std::sqrt(sq)});
    }
    pairs_[static_cast<std::size_t>(expert)] += n;
  }

  Index num_experts() const noexcept { return E_; }
  /// Tokens observed.
  Index tokens() const noexcept { return tokens_; }
  /// [E] routed pairs each expert ran (its frequency on the calibration data).
  const std::vector<Index>& pairs() const noexcept { return pairs_; }
  /// [E] Σ w_t · g · ‖e‖ (settles the pending weighted pairs first).
  const std::vector<double>& scores() {
    flush();
    return scores_;
  }

  void reset() { *this = EasyEpImportance(placement_); }

 private:
  struct Pending {
    std::int32_t token, expert;
    double value;  // g · ‖e‖
  };

  void flush() {
    if (!weighted_) return;
    std::vector<double> w(static_cast<std::size_t>(routed_.rows()), 1.0);
    for (Index t = 0; t < routed_.rows(); ++t) {
      const Eigen::VectorXd h = residual_.row(t).cast<double>().transpose();
      const Eigen::VectorXd hr = h + routed_.row(t).transpose();
      const double nh = h.norm(), nhr = hr.norm();
      const double cos = nh > 0.0 && nhr > 0.0 ? h.dot(hr) / (nh * nhr) : 0.0;
      w[static_cast<std::size_t>(t)] = std::max(0.0, 1.0 - cos);
    }
    for (const Pending& p : pending_)
      scores_[static_cast<std::size_t>(p.expert)] += w[static_cast<std::size_t>(p.token)] * p.value;
    pending_.clear();
    weighted_ = false;
  }

  WeightPlacement placement_;
  Index E_ = 0, tokens_ = 0, hidden_ = 0;
  std::vector<double> scores_;  // [E]
  std::vector<Index> pairs_;    // [E]
  Matrix weights_;              // [T, k] combine weights of the current forward
  bool weighted_ = false, has_next_residual_ = false;
  Matrix next_residual_, residual_;  // [T, d]
  Eigen::MatrixXd routed_;           // [T, d] r_t of the current forward
  std::vector<Pending> pending_;
};

/// Frequency importance: [E] routed pairs per expert (a LoadObserver's counts).
inline std::vector<double> frequency_importance(const LoadObserver& load) {
  std::vector<double> out;
  for (const Index c : load.counts()) out.push_back(static_cast<double>(c));
  return out;
}

/// Weight-mass importance: [E] Σ of each expert's combine weights.
inline std::vector<double> weight_mass_importance(const LoadObserver& load) {
  return load.weight_mass();
}

/// The n most important experts, in increasing id order (ties -> lower id).
inline std::vector<std::int32_t> top_experts(const std::vector<double>& importance, Index n) {
  const auto E = static_cast<Index>(importance.size());
  detail::require(n >= 1 && n <= E, "top experts n: expected 1 <= n <= ", E, ", got ", n);
  std::vector<std::int32_t> order(importance.size());
  std::iota(order.begin(), order.end(), 0);
  std::stable_sort(order.begin(), order.end(), [&](std::int32_t a, std::int32_t b) {
    return importance[static_cast<std::size_t>(a)] > importance[static_cast<std::size_t>(b)];
  });
  order.resize(static_cast<std::size_t>(n));
  std::sort(order.begin(), order.end());
  return order;
}

MOEKIT_NAMESPACE_END
