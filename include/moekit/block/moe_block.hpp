// SPDX-License-Identifier: MIT
// MoEBlock: router -> dispatch -> experts -> combine, composed from policies.
//
//   x [T, d] --Router--> RoutingPlan (ids, weights [T, k])
//            --dispatch--> ExpertGroups (rows grouped by expert, counting sort)
//            --Experts--> grouped outputs [rows, d], one task per non-empty expert
//            --Combine--> y [T, d], fixed slot order per token
//            (+ shared experts, if set: y_t += g(x_t) · Σ_s shared_s(x_t))
//
// Requirements on the policies (checked with static_assert where possible):
//   Router:  num_experts(), hidden_size(), route(x, RoutingPlan&, Matrix& logits)
//   Experts: num_experts(), hidden_size(), scratch_per_row(),
//            forward(e, const float* x [n, d], n, float* out [n, d], float* scratch);
//            optionally hidden_width(), prepare(), forward_hidden / forward_output
//            (split over columns), and forward_hidden on kernels::ActivationRows
//            (the expert's rows of x by index: no gathered copy is made)
//   Combine: combine_rows(plan, groups, const float* grouped_out, d, MatrixOut&, t0, t1),
//            optionally scales_input() (weights applied to the expert inputs)
//   Shared:  add_to(const float* x [n, d], n, float* y, y_stride, float* scratch),
//            scratch_per_row(), hidden_size(); optionally bank() and add_outputs()
//            (SharedExperts), which lets the block run the bank in its expert
//            phases, split over columns like the routed experts
//
// A block keeps its buffers between calls (no reallocation once the batch
// size has been seen), so one block must not run two forwards at once.
#pragma once

#include <algorithm>
#include <optional>
#include <type_traits>
#include <utility>
#include <vector>

#include "../combine/dispatch.hpp"
#include "../combine/weighted_sum.hpp"
#include "../core/error.hpp"
#include "../core/scratch_arena.hpp"
#include "../core/tensor.hpp"
#include "../expert/gated_experts.hpp"
#include "../expert/shared_experts.hpp"
#include "../hooks/observer.hpp"
#include "../parallel/executor.hpp"
#include "../router/router.hpp"
#include "../router/routing_plan.hpp"

MOEKIT_NAMESPACE_BEGIN

/// What the block does with a non-finite (NaN or ±inf) value in its input.
enum class NonFinitePolicy {
  /// Throw moekit::Error naming the first offending [token, feature] (default).
  /// Costs one pass over x, small against the experts' work.
  reject,
  /// Skip the input check. Non-finite router logits are still rejected by the
  /// router (a NaN score has no rank); non-finite values inside experts flow
  /// through to the output as IEEE arithmetic makes them.
  propagate,
};

struct BlockOptions {
  NonFinitePolicy non_finite_input = NonFinitePolicy::reject;

  BlockOptions& with_non_finite_input(NonFinitePolicy p) {
    non_finite_input = p;
    return *this;
  }
};

namespace detail {
template <class C, class = void>
struct combine_scales_input {
  static bool get(const C&) noexcept { return false; }
};
template <class C>
struct combine_scales_input<C, std::void_t<decltype(std::declval<const C&>().scales_input())>> {
  static bool get(const C& c) noexcept { return c.scales_input(); }
};
// Expert banks that split an expert's work into column blocks (two phases:
// hidden columns, then output columns) and keep packed weights.
template <class X, class = void>
struct splits_columns : std::false_type {};
template <class X>
struct splits_columns<X, std::void_t<decltype(std::declval<const X&>().hidden_width()),
                                     decltype(std::declval<X&>().prepare())>> : std::true_type {};

// Experts whose phase 1 takes indexed rows (kernels::ActivationRows): their
// kernels gather an expert's token rows from x while packing them.
template <class X, class = void>
struct gathers_rows : std::false_type {};
template <class X>
struct gathers_rows<X, std::void_t<decltype(std::declval<const X&>().forward_hidden(
                           Index(), std::declval<const kernels::ActivationRows&>(), Index(),
                           static_cast<float*>(nullptr), Index(), Index()))>> : std::true_type {};

// Shared experts whose bank splits columns and that take outputs computed
// elsewhere (SharedExperts::add_outputs): the block runs them in its expert
// phases, over every token in row blocks, on every thread.
template <class S, class = void>
struct shared_splits : std::false_type {};
template <class S>
struct shared_splits<
    S, std::void_t<decltype(std::declval<S&>().bank()),
                   decltype(std::declval<const S&>().add_outputs(nullptr, Index(), nullptr, Index(),
                                                                 nullptr, nullptr, Index()))>>
    : splits_columns<std::decay_t<decltype(std::declval<S&>().bank())>> {};

template <class X, class = void>
struct has_prepare : std::false_type {};
template <class X>
struct has_prepare<X, std::void_t<decltype(std::declval<X&>().prepare())>> : std::true_type {};

template <class X>
void prepare_if_any(X& x) {
  if constexpr (has_prepare<X>::value) x.prepare();
}

}  // namespace detail

template <class RouterT = Router<>, class ExpertsT = SwiGluExperts, class CombineT = WeightedSum,
          class SharedT = SharedExperts<SwiGluExperts>>
class MoEBlock {
 public:
  using RouterType = RouterT;
  using ExpertsType = ExpertsT;
  using CombineType = CombineT;
  using SharedType = SharedT;

  MoEBlock(RouterT router, ExpertsT experts, CombineT combine = CombineT(),
           BlockOptions options = BlockOptions())
      : router_(std::move(router)),
        experts_(std::move(experts)),
        combine_(std::move(combine)),
        options_(options) {
    detail::require(router_.num_experts() == experts_.num_experts(), "block: router has ",
                    router_.num_experts(), " experts but the expert bank has ",
                    experts_.num_experts());
    detail::require(router_.hidden_size() == experts_.hidden_size(), "block: router hidden size ",
                    router_.hidden_size(), " differs from the experts' hidden size ",
                    experts_.hidden_size());
  }

  RouterT& router() noexcept { return router_; }
  const RouterT& router() const noexcept { return router_; }
  ExpertsT& experts() noexcept { return experts_; }
  const ExpertsT& experts() const noexcept { return experts_; }
  const CombineT& combine() const noexcept { return combine_; }
  BlockOptions& options() noexcept { return options_; }
  const BlockOptions& options() const noexcept { return options_; }

  Index hidden_size() const noexcept { return experts_.hidden_size(); }
  Index num_experts() const noexcept { return experts_.num_experts(); }

  /// Adds always-on shared experts (replacing any set before).
  MoEBlock& set_shared_experts(SharedT shared) {
    detail::require(shared.hidden_size() == hidden_size(), "block: shared experts hidden size ",
                    shared.hidden_size(), " differs from the block's ", hidden_size());
    shared_ = std::move(shared);
    return *this;
  }
  void clear_shared_experts() { shared_.reset(); }
  /// The shared experts, or nullptr.
  const SharedT* shared_experts() const noexcept { return shared_ ? &*shared_ : nullptr; }

  /// Routing alone: the plan forward() would use for x [T, d].
  RoutingPlan route(const MatrixRef& x) const {
    check_input(x);
    RoutingPlan plan;
    Matrix logits;
    router_.route(x, plan, logits);
    return plan;
  }

  /// y = block(x): x [T, d] -> [T, d], on the calling thread.
  Matrix forward(const MatrixRef& x) {
    Matrix y(x.rows(), hidden_size());
    SerialExecutor serial;
    forward(x, y, serial);
    return y;
  }
  void forward(const MatrixRef& x, MatrixOut y) {
    SerialExecutor serial;
    forward(x, y, serial);
  }

  /// y = block(x) with the experts spread over `executor`. y may alias x.
  /// The result is bit-identical for every executor and thread count.
  template <class Executor>
  void forward(const MatrixRef& x, MatrixOut y, Executor& executor) {
    NoObserver none;
    forward(x, y, executor, none);
  }

  /// forward() that also reports to an observer (hooks/observer.hpp).
  template <class Executor, class Observer>
  void forward(const MatrixRef& x, MatrixOut y, Executor& executor, Observer& observer) {
    check_input(x);
    router_.route(x, plan_, logits_);
    if constexpr (detail::observer_enabled<Observer>()) {
      if constexpr (detail::observer_has_route<Observer>::value)
        observer.on_route(x, logits_, plan_);
    }
    run(x, plan_, y, executor, observer);
  }
  /// Serial forward with an observer: y = block(x).
  template <class Observer,
            class = std::enable_if_t<!std::is_base_of_v<Eigen::EigenBase<Observer>, Observer>>>
  Matrix forward(const MatrixRef& x, Observer& observer) {
    Matrix y(x.rows(), hidden_size());
    SerialExecutor serial;
    forward(x, y, serial, observer);
    return y;
  }

  /// Runs the experts and the combine for a plan the caller made or edited
  /// (validated first: ids in range, no duplicate expert per token, finite weights).
  template <class Executor>
  void forward_with_plan(const MatrixRef& x, const RoutingPlan& plan, MatrixOut y,
                         Executor& executor) {
    check_input(x);
    plan.validate();
    detail::require(plan.num_experts == num_experts(), "routing plan: expected num_experts ",
                    num_experts(), ", got ", plan.num_experts);
    detail::require_size("routing plan rows (tokens)", plan.num_tokens(), x.rows());
    NoObserver none;
    run(x, plan, y, executor, none);
  }
  void forward_with_plan(const MatrixRef& x, const RoutingPlan& plan, MatrixOut y) {
    SerialExecutor serial;
    forward_with_plan(x, plan, y, serial);
  }

  /// The plan, raw router logits [T, E + N] (before steering) and expert grouping of the latest forward().
  const RoutingPlan& last_plan() const noexcept { return plan_; }
  const Matrix& last_logits() const noexcept { return logits_; }
  const ExpertGroups& last_groups() const noexcept { return groups_; }

 private:
  void check_input(const MatrixRef& x) const {
    if (x.cols() != hidden_size())
      detail::fail("input x: expected shape ", detail::shape_string(x.rows(), hidden_size()),
                   " (hidden size ", hidden_size(), "), got ",
                   detail::shape_string(x.rows(), x.cols()));
    if (options_.non_finite_input == NonFinitePolicy::reject) detail::require_finite("input x", x);
  }

  template <class Executor, class Observer>
  void run(const MatrixRef& x, const RoutingPlan& plan, MatrixOut& y, Executor& executor,
           Observer& observer) {
    const Index T = x.rows(), d = hidden_size(), E = num_experts();
    detail::require_shape("output y", y.rows(), y.cols(), T, d);
    dispatch(plan, groups_);
    const Index rows = groups_.num_rows();
    const bool scale_input = detail::combine_scales_input<CombineT>::get(combine_);
    const Index per_row = experts_.scratch_per_row();
    // Rows go to the experts' kernels by index (gathered as they are packed)
    // where the experts take them so and need no scaling (Llama-4's w · x
    // needs a copy to scale); otherwise gathered here first.
    const bool by_index = detail::gathers_rows<ExpertsT>::value && !scale_input;
    if (!by_index) grouped_in_.resize(static_cast<std::size_t>(rows * d));
    grouped_out_.resize(static_cast<std::size_t>(rows * d));
    scratch_.resize(static_cast<std::size_t>(rows * per_row));

    // Kernel scratch (rounded / quantised activation rows, decoded panels) is
    // leased per task from the block's arena, so its size does not depend on
    // which thread ran which task (scratch_arena.hpp).
    arena_.reserve(static_cast<int>(executor.num_threads()));

    active_.clear();
    for (Index e = 0; e < E; ++e)
      if (groups_.count(e) > 0) active_.push_back(e);
    const Index n_active = static_cast<Index>(active_.size());

    // Gather each expert's rows (Llama-4: scaled by their weights).
    const auto gather = [&](Index e) {
      const Index begin = groups_.offsets[static_cast<std::size_t>(e)], n = groups_.count(e);
      float* xin = grouped_in_.data() + begin * d;
      for (Index r = 0; r < n; ++r) {
        const auto* src = x.row(groups_.tokens[static_cast<std::size_t>(begin + r)]).data();
        float* dst = xin + r * d;
        if (scale_input) {  // Llama-4: expert(w · x)
          const Index slot = groups_.slots[static_cast<std::size_t>(begin + r)];
          const float w = plan.weights.data()[slot];
          for (Index c = 0; c < d; ++c) dst[c] = w * src[c];
        } else {
          std::copy(src, src + d, dst);
        }
      }
    };

    bool shared_done = false;  // shared expert outputs already in shared_out_
    if constexpr (detail::splits_columns<ExpertsT>::value) {
      // NOTE: work is split over (expert, column block) so that one hot expert
      // or a decode step with few experts still uses every thread. Phase 1
      // computes hidden columns, phase 2 output columns; each output element is
      // produced by exactly one task with a fixed summation order, so the bytes
      // do not depend on the split or the thread count. Shared experts join
      // the same phases over every token, in row blocks (run per combine
      // chunk instead, a decode step would stream their weights on one
      // thread, and prefill would stream them once per chunk of 32 tokens).
      experts_.prepare();
      Index S = 0, fs = 0, shared_per_row = 0;
      if constexpr (detail::shared_splits<SharedT>::value) {
        if (shared_) {
          auto& bank = shared_->bank();
          bank.prepare();
          S = bank.num_experts();
          fs = bank.hidden_width();
          shared_per_row = bank.scratch_per_row();
          shared_in_.resize(static_cast<std::size_t>(T * d));
          shared_hidden_.resize(static_cast<std::size_t>(S * T * shared_per_row));
          shared_out_.resize(static_cast<std::size_t>(S * T * d));
          shared_done = true;
        }
      }
      // Gather each expert's rows (unless its kernels do: by_index); copy x for
      // the shared experts (y may alias x).
      constexpr Index kCopyRows = 64;
      const Index copies = S > 0 ? (T + kCopyRows - 1) / kCopyRows : 0;
      const Index gathers = by_index ? 0 : n_active;
      if (gathers + copies > 0)
        executor.parallel_for(gathers + copies, [&](Index i) {
          if (i < gathers) return gather(active_[static_cast<std::size_t>(i)]);
          const Index t0 = (i - gathers) * kCopyRows, t1 = std::min(T, t0 + kCopyRows);
          for (Index t = t0; t < t1; ++t)
            std::copy(x.row(t).data(), x.row(t).data() + d, shared_in_.data() + t * d);
        });
      const Index f = experts_.hidden_width();
      // About 12 tasks per thread: with few active experts (mixtral-s: 8) and
      // unequal row counts, fewer, larger tasks left one thread idle at the end
      // of each phase (12 instead of 4: mixtral-s T = 512 about 5 % faster).
      const Index target = 12 * std::max<Index>(1, static_cast<Index>(executor.num_threads()));
      for (int phase = 0; phase < 2; ++phase) {
        make_tasks(phase == 0 ? f : d, phase == 0 ? fs : d, S, T, target);
        executor.parallel_for(static_cast<Index>(tasks_.size()), [&](Index i) {
          const Task& tk = tasks_[static_cast<std::size_t>(i)];
          detail::ScratchLease lease(arena_);
          if (tk.expert >= E) {  // shared expert s, rows [r0, r1)
            if constexpr (detail::shared_splits<SharedT>::value) {
              const Index s = tk.expert - E, n = tk.r1 - tk.r0;
              float* hidden = shared_hidden_.data() + (s * T + tk.r0) * shared_per_row;
              if (phase == 0)
                shared_->bank().forward_hidden(s, shared_in_.data() + tk.r0 * d, n, hidden, tk.c0,
                                               tk.c1);
              else
                shared_->bank().forward_output(
                    s, hidden, n, shared_out_.data() + (s * T + tk.r0) * d, tk.c0, tk.c1);
            }
            return;
          }
          const Index begin = groups_.offsets[static_cast<std::size_t>(tk.expert)],
                      n = groups_.count(tk.expert);
          float* scratch = scratch_.data() + begin * per_row;
          if (phase == 0) {
            if constexpr (detail::gathers_rows<ExpertsT>::value)
              if (by_index)
                return experts_.forward_hidden(
                    tk.expert,
                    kernels::ActivationRows(x.data(), x.outerStride(),
                                            groups_.tokens.data() + begin),
                    n, scratch, tk.c0, tk.c1);
            experts_.forward_hidden(tk.expert, grouped_in_.data() + begin * d, n, scratch, tk.c0,
                                    tk.c1);
          } else
            experts_.forward_output(tk.expert, scratch, n, grouped_out_.data() + begin * d, tk.c0,
                                    tk.c1);
        });
        arena_.equalize();
      }
    } else {
      // One task per non-empty expert: gather its rows, run it. Tasks write
      // disjoint row ranges, so any schedule gives the same bytes.
      detail::prepare_if_any(experts_);
      executor.parallel_for(n_active, [&](Index i) {
        const Index e = active_[static_cast<std::size_t>(i)];
        detail::ScratchLease lease(arena_);
        const Index begin = groups_.offsets[static_cast<std::size_t>(e)], n = groups_.count(e);
        gather(e);
        experts_.forward(e, grouped_in_.data() + begin * d, n, grouped_out_.data() + begin * d,
                         scratch_.data() + begin * per_row);
      });
      arena_.equalize();
    }
    if (shared_) detail::prepare_if_any(shared_->bank());

    if constexpr (detail::observer_enabled<Observer>() &&
                  detail::observer_has_expert_output<Observer>::value) {
      if (detail::observer_wants_outputs<Observer>::get(observer))
        for (const Index e : active_) {
          const Index begin = groups_.offsets[static_cast<std::size_t>(e)];
          observer.on_expert_output(e, groups_.tokens.data() + begin, groups_.slots.data() + begin,
                                    groups_.count(e), grouped_out_.data() + begin * d);
        }
    }

    // Combine in token chunks (fixed order inside each token), then the shared
    // experts on the same chunk of rows: their outputs summed from the phases,
    // or (a bank that does not split columns) run here.
    constexpr Index kChunk = 32;
    const Index chunks = (T + kChunk - 1) / kChunk;
    const Index chunk_floats = !shared_      ? 0
                               : shared_done ? d
                                             : d + shared_->scratch_per_row();  // per row
    shared_scratch_.resize(static_cast<std::size_t>(chunks * kChunk * chunk_floats));
    executor.parallel_for(chunks, [&](Index c) {
      const Index t0 = c * kChunk, t1 = std::min(T, (c + 1) * kChunk), n = t1 - t0;
      detail::ScratchLease lease(arena_);
      float* xs = shared_scratch_.data() + c * kChunk * chunk_floats;
      if (shared_ && !shared_done)  // x rows copied before y is written: y may alias x
        for (Index t = t0; t < t1; ++t)
          std::copy(x.row(t).data(), x.row(t).data() + d, xs + (t - t0) * d);
      combine_.combine_rows(plan, groups_, grouped_out_.data(), d, y, t0, t1);
      if (!shared_) return;
      if (!shared_done) {
        shared_->add_to(xs, n, y.row(t0).data(), y.outerStride(), xs + n * d);
        return;
      }
      if constexpr (detail::shared_splits<SharedT>::value)
        shared_->add_outputs(shared_in_.data() + t0 * d, n, shared_out_.data() + t0 * d, T * d, xs,
                             y.row(t0).data(), y.outerStride());
    });
    arena_.equalize();
  }

  struct Task {
    Index expert;  // a routed expert's id, or E + s for shared expert s
    Index r0, r1;  // rows of a shared expert's task (a routed one takes all its rows)
    Index c0, c1;  // columns
  };

  // Shared experts run over row blocks of at most this many tokens, so a row
  // block's activations stay in L2 while its weights stream.
  static constexpr Index kSharedRows = 64;

  // Splits the `width` columns of every active expert, and the
  // `shared_width` columns of each row block of each of S shared experts,
  // into blocks of whole 16-column panels, each in proportion to its work
  // (rows x columns), about `target` tasks in all; shared experts first (the
  // largest tasks start early). Depends only on the plan and the thread
  // count's target, never on timing.
  void make_tasks(Index width, Index shared_width, Index S, Index T, Index target) {
    tasks_.clear();
    Index total = S * T * shared_width;
    for (const Index e : active_) total += groups_.count(e) * width;
    const auto add = [&](Index id, Index r0, Index n, Index w) {
      const Index panels = (w + 15) / 16;
      Index blocks = (n * w * target + total - 1) / std::max<Index>(1, total);
      blocks = std::max<Index>(1, std::min(blocks, panels));
      const Index per = (panels + blocks - 1) / blocks;  // panels per block
      for (Index p = 0; p < panels; p += per)
        tasks_.push_back({id, r0, r0 + n, p * 16, std::min(w, (p + per) * 16)});
    };
    for (Index s = 0; s < S; ++s)
      for (Index r0 = 0; r0 < T; r0 += kSharedRows)
        add(num_experts() + s, r0, std::min(kSharedRows, T - r0), shared_width);
    for (const Index e : active_) add(e, 0, groups_.count(e), width);
  }

  RouterT router_;
  ExpertsT experts_;
  CombineT combine_;
  BlockOptions options_;
  // Workspace, reused across calls.
  RoutingPlan plan_;
  Matrix logits_;  // [T, E + N] raw router logits
  ExpertGroups groups_;
  std::vector<float> grouped_in_;   // [rows, d]
  std::vector<float> grouped_out_;  // [rows, d]
  std::vector<float> scratch_;      // [rows, experts.scratch_per_row()]
  std::vector<Index> active_;       // experts with rows, in id order
  std::vector<Task> tasks_;         // (expert, rows, column block) work items of one phase
  std::optional<SharedT> shared_;
  std::vector<float> shared_scratch_;  // per combine chunk: Σ shared outputs, or add_to's scratch
  std::vector<float> shared_in_;       // [T, d] x rows for the shared experts
  std::vector<float> shared_hidden_;   // [S, T, bank scratch per row]
  std::vector<float> shared_out_;      // [S, T, d] shared expert outputs
  detail::ScratchArena arena_;         // kernel scratch, one slot per task running at once
};

/// The Mixtral / Qwen3-MoE / OLMoE block: softmax top-k router, SwiGLU experts, weighted sum.
using SwiGluMoEBlock = MoEBlock<Router<>, SwiGluExperts, WeightedSum>;

MOEKIT_NAMESPACE_END
