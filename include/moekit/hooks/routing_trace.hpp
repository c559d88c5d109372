// SPDX-License-Identifier: MIT
// RoutingTrace and TraceRecorder: the top-k expert ids of every token at every
// layer, recorded from live blocks through the observer hook.
//
// A trace is `ids[t][l][j]`, int32 [T, L, k] row-major (token-major, as the
// trace file stores it): the j-th expert (rank order) of token t at layer l,
// out of E experts per layer. An empty slot (dynamic-k padding, a pruned or
// dropped choice) and a null expert (AdaMoE, id >= E) are both stored as -1:
// neither runs an expert, so neither is a request for the metrics and cache
// simulations that read traces (routing_consistency.hpp, expert_cache.hpp).
//
// Several blocks are the layers of a model: one TraceRecorder is shared by
// them and each block gets the observer of its layer,
//
//   moekit::TraceRecorder rec(/*num_layers=*/L);
//   for (l = 0..L-1) { auto obs = rec.layer(l); h = blocks[l].forward(h, obs); }
//   moekit::RoutingTrace trace = rec.trace();   // [T, L, k]
//
// Each forward appends its T tokens to its layer; trace() stacks the layers,
// which must therefore have seen the same number of tokens.
#pragma once

#include <cstdint>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../router/routing_plan.hpp"
#include "route_only_observer.hpp"

MOEKIT_NAMESPACE_BEGIN

/// Top-k expert ids [T, L, k] of T tokens at L layers of E experts each; -1 marks
/// an empty slot.
class RoutingTrace {
 public:
  RoutingTrace() = default;

  /// A trace of the given shape with every slot empty (-1).
  RoutingTrace(Index tokens, Index layers, Index top_k, Index num_experts)
      : T_(tokens), L_(layers), k_(top_k), E_(num_experts) {
    check_shape();
    ids_.assign(static_cast<std::size_t>(T_ * L_ * k_), -1);
  }

  /// From ids [T, L, k] (row-major). Throws moekit::Error on a size mismatch,
  /// an id outside [-1, E) or an expert named twice by one token at one layer.
  RoutingTrace(std::vector<std::int32_t> ids, Index tokens, Index layers, Index top_k,
               Index num_experts)
      : T_(tokens), L_(layers), k_(top_k), E_(num_experts), ids_(std::move(ids)) {
    check_shape();
    detail::require_size("routing trace ids (T * L * k)", static_cast<Index>(ids_.size()),
                         T_ * L_ * k_);
    validate();
  }

  Index num_tokens() const noexcept { return T_; }
  Index num_layers() const noexcept { return L_; }
  Index top_k() const noexcept { return k_; }
  Index num_experts() const noexcept { return E_; }

  /// Id of slot j of token t at layer l (unchecked).
  std::int32_t operator()(Index t, Index l, Index j) const noexcept {
    return ids_[static_cast<std::size_t>((t * L_ + l) * k_ + j)];
  }
  std::int32_t& operator()(Index t, Index l, Index j) noexcept {
    return ids_[static_cast<std::size_t>((t * L_ + l) * k_ + j)];
  }
  /// The k ids of token t at layer l: [k] (unchecked).
  const std::int32_t* slots(Index t, Index l) const noexcept {
    return ids_.data() + (t * L_ + l) * k_;
  }

  /// All ids [T, L, k], row-major.
  const std::vector<std::int32_t>& data() const noexcept { return ids_; }

  /// Layer l as a matrix [T, k].
  IdMatrix layer(Index l) const {
    detail::require(l >= 0 && l < L_, "routing trace layer: expected [0, ", L_, "), got ", l);
    IdMatrix out(T_, k_);
    for (Index t = 0; t < T_; ++t)
      for (Index j = 0; j < k_; ++j) out(t, j) = (*this)(t, l, j);
    return out;
  }

  /// Number of (token, layer, slot) entries that name an expert (not -1).
  Index num_requests() const noexcept {
    Index n = 0;
    for (const std::int32_t id : ids_) n += id >= 0 ? 1 : 0;
    return n;
  }

  /// Throws unless every id is in [-1, E) and no token names an expert twice at one layer.
  void validate() const {
    for (Index t = 0; t < T_; ++t)
      for (Index l = 0; l < L_; ++l)
        for (Index j = 0; j < k_; ++j) {
          const std::int32_t e = (*this)(t, l, j);
          if (e < -1 || e >= E_)
            detail::fail("routing trace ids: expected an expert id in [0, ", E_, ") or -1 at [",
                         t, ", ", l, ", ", j, "], got ", e);
          if (e < 0) continue;
          for (Index i = 0; i < j; ++i)
            if ((*this)(t, l, i) == e)
              detail::fail("routing trace ids: token ", t, " names expert ", e,
                           " twice at layer ", l, " (slots ", i, " and ", j, ")");
        }
  }

 private:
  void check_shape() const {
    detail::require(T_ >= 0, "routing trace tokens: expected >= 0, got ", T_);
    detail::require(L_ >= 1, "routing trace layers: expected >= 1, got ", L_);
    detail::require(k_ >= 1, "routing trace top_k: expected >= 1, got ", k_);
    detail::require(E_ >= 1 && E_ <= INT32_MAX, "routing trace num_experts: expected >= 1, got ",
                    E_);
  }

  Index T_ = 0, L_ = 0, k_ = 0, E_ = 0;
  std::vector<std::int32_t> ids_;  // [T, L, k]
};

/// Records the routing of every forward of several blocks (the layers of a model).
class TraceRecorder {
 public:
  /// The observer one block reports to; tagged with its layer.
  class LayerObserver : public detail::RouteOnlyObserver {
   public:
    static constexpr bool enabled = true;
    LayerObserver(TraceRecorder& recorder, Index layer) : rec_(&recorder), layer_(layer) {}
    void on_route(const MatrixRef&, const Matrix&, const RoutingPlan& plan) {
      rec_->record(layer_, plan);
    }
    Index layer() const noexcept { return layer_; }

   private:
    TraceRecorder* rec_;
    Index layer_;
  };

  explicit TraceRecorder(Index num_layers) {
    detail::require(num_layers >= 1, "trace recorder num_layers: expected >= 1, got ", num_layers);
    layers_.resize(static_cast<std::size_t>(num_layers));
  }

  /// The observer of layer l: pass it to that block's forward(x, observer).
  LayerObserver layer(Index l) {
    check_layer(l);
    return LayerObserver(*this, l);
  }

  /// Appends one forward's plan to layer l: ids [T, k]; null experts and empty
  /// slots become -1. Every plan of a recorder must have the same E and k.
  void record(Index l, const RoutingPlan& plan) {
    check_layer(l);
    if (E_ == 0) {
      E_ = plan.num_experts;
      k_ = plan.top_k();
    }
    detail::require(plan.num_experts == E_, "trace recorder: layer ", l, " plan has ",
                    plan.num_experts, " experts, expected ", E_, " (as the first plan recorded)");
    detail::require(plan.top_k() == k_, "trace recorder: layer ", l, " plan has top_k ",
                    plan.top_k(), ", expected ", k_, " (as the first plan recorded)");
    IdMatrix ids = plan.ids;
    for (Index i = 0; i < ids.size(); ++i) {
      std::int32_t& e = ids.data()[i];
      if (!plan.is_routed(e)) e = RoutingPlan::kNoExpert;
    }
    Layer& lay = layers_[static_cast<std::size_t>(l)];
    lay.tokens += ids.rows();
    lay.calls.push_back(std::move(ids));
  }

  Index num_layers() const noexcept { return static_cast<Index>(layers_.size()); }
  /// E and k of the recorded plans (0 before the first).
  Index num_experts() const noexcept { return E_; }
  Index top_k() const noexcept { return k_; }
  /// Tokens recorded at layer l so far.
  Index num_tokens(Index l) const {
    check_layer(l);
    return layers_[static_cast<std::size_t>(l)].tokens;
  }
  /// Forwards recorded at layer l so far.
  Index num_forwards(Index l) const {
    check_layer(l);
    return static_cast<Index>(layers_[static_cast<std::size_t>(l)].calls.size());
  }
  /// The ids [T, k] of forward `call` at layer l.
  const IdMatrix& forward_ids(Index l, Index call) const {
    check_layer(l);
    const auto& calls = layers_[static_cast<std::size_t>(l)].calls;
    detail::require(call >= 0 && call < static_cast<Index>(calls.size()),
                    "trace recorder forward: expected [0, ", calls.size(), ") at layer ", l,
                    ", got ", call);
    return calls[static_cast<std::size_t>(call)];
  }

  /// Every token of every layer: [T, L, k]. Throws unless all layers have seen
  /// the same number of tokens (and at least one plan was recorded).
  RoutingTrace trace() const {
    detail::require(E_ > 0, "trace recorder: no plan recorded yet");
    const Index L = num_layers(), T = layers_[0].tokens;
    for (Index l = 1; l < L; ++l)
      detail::require(layers_[static_cast<std::size_t>(l)].tokens == T, "trace recorder: layer ",
                      l, " has ", layers_[static_cast<std::size_t>(l)].tokens,
                      " tokens, expected ", T, " (as layer 0)");
    RoutingTrace out(T, L, k_, E_);
    for (Index l = 0; l < L; ++l) {
      Index t0 = 0;
      for (const IdMatrix& ids : layers_[static_cast<std::size_t>(l)].calls) {
        for (Index t = 0; t < ids.rows(); ++t)
          for (Index j = 0; j < k_; ++j) out(t0 + t, l, j) = ids(t, j);
        t0 += ids.rows();
      }
    }
    return out;
  }

  /// Forgets every recorded plan (E and k too).
  void clear() {
    for (Layer& lay : layers_) lay = Layer();
    E_ = k_ = 0;
  }

 private:
  struct Layer {
    std::vector<IdMatrix> calls;  // one [T_call, k] per forward
    Index tokens = 0;
  };
  void check_layer(Index l) const {
    detail::require(l >= 0 && l < num_layers(), "trace recorder layer: expected [0, ",
                    num_layers(), "), got ", l);
  }

  std::vector<Layer> layers_;
  Index E_ = 0, k_ = 0;
};

MOEKIT_NAMESPACE_END
