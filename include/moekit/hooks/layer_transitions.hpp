// SPDX-License-Identifier: MIT
// Layer-to-layer expert transition counts across the blocks (layers) of a model.
//
//   counts(l)[i][j] = Σ over tokens t of [i ∈ S_l(t)] · [j ∈ S_{l+1}(t)]
//
// where S_l(t) are the routed experts of token t at layer l: every one of the
// token's (up to k · k) pairs counts once. Inputs of inter-layer predictors
// (ExpertFlow) and placement (MoETuner).
//
// TransitionRecorder is shared by the blocks, each block's observer tagged
// with its layer (as TraceRecorder). It keeps only the latest plan of each
// layer: when layer l + 1 reports, its plan is paired token by token with the
// latest plan of layer l, which must cover the same number of tokens (run the
// layers in order on the same batch). It stores O(L · E²) counts, never the
// whole trace. transition_counts(trace, l) gives the same counts offline.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../router/routing_plan.hpp"
#include "route_only_observer.hpp"
#include "routing_stats.hpp"
#include "routing_trace.hpp"

MOEKIT_NAMESPACE_BEGIN

class TransitionRecorder {
 public:
  /// The observer one block reports to; tagged with its layer.
  class LayerObserver : public detail::RouteOnlyObserver {
   public:
    static constexpr bool enabled = true;
    LayerObserver(TransitionRecorder& recorder, Index layer) : rec_(&recorder), layer_(layer) {}
    void on_route(const MatrixRef&, const Matrix&, const RoutingPlan& plan) {
      rec_->record(layer_, plan);
    }
    Index layer() const noexcept { return layer_; }

   private:
    TransitionRecorder* rec_;
    Index layer_;
  };

  explicit TransitionRecorder(Index num_layers) {
    detail::require(num_layers >= 2, "transition recorder num_layers: expected >= 2, got ",
                    num_layers);
    last_.resize(static_cast<std::size_t>(num_layers));
    counts_.resize(static_cast<std::size_t>(num_layers - 1));
  }

  /// The observer of layer l.
  LayerObserver layer(Index l) {
    check_layer(l);
    return LayerObserver(*this, l);
  }

  /// Records layer l's plan; for l >= 1 adds its transitions from layer l - 1.
  void record(Index l, const RoutingPlan& plan) {
    check_layer(l);
    Last& cur = last_[static_cast<std::size_t>(l)];
    if (l > 0) {
      const Last& prev = last_[static_cast<std::size_t>(l - 1)];
      detail::require(prev.seen, "transition recorder: layer ", l,
                      " reported before layer ", l - 1, " saw any batch");
      detail::require(prev.ids.rows() == plan.num_tokens(), "transition recorder: layer ", l,
                      " saw ", plan.num_tokens(), " tokens, expected ", prev.ids.rows(),
                      " (the latest batch of layer ", l - 1, ")");
      CountMatrix& c = counts_[static_cast<std::size_t>(l - 1)];
      if (c.size() == 0) c = CountMatrix::Zero(prev.E, plan.num_experts);
      detail::require(c.rows() == prev.E && c.cols() == plan.num_experts,
                      "transition recorder: layers ", l - 1, " and ", l, " changed their expert counts");
      for (Index t = 0; t < plan.num_tokens(); ++t)
        for (Index a = 0; a < prev.ids.cols(); ++a) {
          const std::int32_t i = prev.ids(t, a);
          if (i < 0) continue;
          for (Index b = 0; b < plan.top_k(); ++b) {
            const std::int32_t j = plan.ids(t, b);
            if (plan.is_routed(j)) ++c(i, j);
          }
        }
    }
    cur.seen = true;
    cur.E = plan.num_experts;
    cur.ids = plan.ids;
    for (Index i = 0; i < cur.ids.size(); ++i)
      if (!plan.is_routed(cur.ids.data()[i])) cur.ids.data()[i] = RoutingPlan::kNoExpert;
  }

  Index num_layers() const noexcept { return static_cast<Index>(last_.size()); }

  /// [E_l, E_{l+1}] transitions from layer l to layer l + 1 (empty before the
  /// first pair of batches), for l in [0, L - 1).
  const CountMatrix& counts(Index l) const {
    detail::require(l >= 0 && l + 1 < num_layers(), "transition recorder counts: expected layer in [0, ",
                    num_layers() - 1, "), got ", l);
    return counts_[static_cast<std::size_t>(l)];
  }

  void reset() {
    for (Last& x : last_) x = Last();
    for (CountMatrix& c : counts_) c.resize(0, 0);
  }

 private:
  struct Last {
    bool seen = false;
    Index E = 0;
    IdMatrix ids;  // [T, k], non-routed slots -1
  };
  void check_layer(Index l) const {
    detail::require(l >= 0 && l < num_layers(), "transition recorder layer: expected [0, ",
                    num_layers(), "), got ", l);
  }

  std::vector<Last> last_;           // [L]
  std::vector<CountMatrix> counts_;  // [L - 1] of [E_l, E_{l+1}]
};

/// Offline: transitions [E, E] from layer l to layer l + 1 of a trace.
inline CountMatrix transition_counts(const RoutingTrace& trace, Index l) {
  detail::require(l >= 0 && l + 1 < trace.num_layers(), "transition counts layer: expected [0, ",
                  trace.num_layers() - 1, "), got ", l);
  const Index E = trace.num_experts(), k = trace.top_k();
  CountMatrix c = CountMatrix::Zero(E, E);
  for (Index t = 0; t < trace.num_tokens(); ++t)
    for (Index a = 0; a < k; ++a) {
      const std::int32_t i = trace(t, l, a);
      if (i < 0) continue;
      for (Index b = 0; b < k; ++b) {
        const std::int32_t j = trace(t, l + 1, b);
        if (j >= 0) ++c(i, j);
      }
    }
  return c;
}

MOEKIT_NAMESPACE_END
