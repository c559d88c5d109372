// SPDX-License-Identifier: MIT
// MoELayer: any MoEBlock behind one type.
//
// Presets and checkpoint loaders build blocks of different types (a sigmoid
// grouped router for DeepSeek-V3, ReLU experts with capacity for Switch ...).
// MoELayer erases the type so `load_layer` and `presets::build` can return one
// thing; the concrete block stays reachable through as<Block>() for research
// knobs (steering, the expert weights). One virtual call per forward.
#pragma once

#include <memory>
#include <string>
#include <type_traits>
#include <utility>

#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../parallel/executor.hpp"
#include "../router/routing_plan.hpp"

MOEKIT_NAMESPACE_BEGIN

class MoELayer {
 public:
  MoELayer() = default;

  /// Wraps a block (moved in). `family` is a label such as "mixtral".
  template <class Block, class = std::enable_if_t<!std::is_same_v<std::decay_t<Block>, MoELayer>>>
  explicit MoELayer(Block block, std::string family = "custom")
      : impl_(std::make_unique<Model<Block>>(std::move(block))), family_(std::move(family)) {}

  bool empty() const noexcept { return !impl_; }
  const std::string& family() const noexcept { return family_; }
  Index hidden_size() const { return get().hidden_size(); }
  Index num_experts() const { return get().num_experts(); }

  /// y = layer(x), x [T, d]; with `pool`, the experts run on its threads.
  Matrix forward(const MatrixRef& x, ThreadPoolExecutor* pool = nullptr) {
    Matrix y(x.rows(), hidden_size());
    MatrixOut out(y);
    get().forward(x, out, pool);
    return y;
  }
  void forward(const MatrixRef& x, MatrixOut y, ThreadPoolExecutor* pool = nullptr) { get().forward(x, y, pool); }
  void forward_with_plan(const MatrixRef& x, const RoutingPlan& plan, MatrixOut y) {
    get().forward_with_plan(x, plan, y);
  }
  RoutingPlan route(const MatrixRef& x) const { return get().route(x); }
  /// Stores the routed (and shared) expert weights as f32, bf16 or f16 where
  /// the bank supports it (GatedExperts); throws otherwise.
  void set_expert_weight_dtype(Dtype t) { get().set_expert_weight_dtype(t); }
  const RoutingPlan& last_plan() const { return get().last_plan(); }
  const Matrix& last_logits() const { return get().last_logits(); }

  /// The concrete block, or nullptr when it is of another type.
  template <class Block>
  Block* as() noexcept {
    auto* m = dynamic_cast<Model<Block>*>(impl_.get());
    return m ? &m->block : nullptr;
  }
  template <class Block>
  const Block* as() const noexcept {
    const auto* m = dynamic_cast<const Model<Block>*>(impl_.get());
    return m ? &m->block : nullptr;
  }

 private:
  struct Concept {
    virtual ~Concept() = default;
    virtual Index hidden_size() const = 0;
    virtual Index num_experts() const = 0;
    virtual void forward(const MatrixRef& x, MatrixOut& y, ThreadPoolExecutor* pool) = 0;
    virtual void forward_with_plan(const MatrixRef& x, const RoutingPlan& plan, MatrixOut& y) = 0;
    virtual RoutingPlan route(const MatrixRef& x) const = 0;
    virtual const RoutingPlan& last_plan() const = 0;
    virtual const Matrix& last_logits() const = 0;
    virtual void set_expert_weight_dtype(Dtype t) = 0;
  };
  template <class Block>
  struct Model final : Concept {
    explicit Model(Block b) : block(std::move(b)) {}
    Index hidden_size() const override { return block.hidden_size(); }
    Index num_experts() const override { return block.num_experts(); }
    void forward(const MatrixRef& x, MatrixOut& y, ThreadPoolExecutor* pool) override {
      if (pool) {
        block.forward(x, y, *pool);
      } else {
        SerialExecutor serial;
        block.forward(x, y, serial);
      }
    }
    void forward_with_plan(const MatrixRef& x, const RoutingPlan& plan, MatrixOut& y) override {
      block.forward_with_plan(x, plan, y);
    }
    RoutingPlan route(const MatrixRef& x) const override { return block.route(x); }
    const RoutingPlan& last_plan() const override { return block.last_plan(); }
    const Matrix& last_logits() const override { return block.last_logits(); }
    void set_expert_weight_dtype(Dtype t) override {
      if constexpr (has_dtype<typename Block::ExpertsType>::value) {
        block.experts().set_weight_dtype(t);
        if (const auto* sh = block.shared_experts()) {
          auto copy = *sh;
          copy.bank().set_weight_dtype(t);
          block.set_shared_experts(std::move(copy));
        }
      } else if (t != Dtype::f32) {
        detail::fail("MoELayer: this layer's experts keep f32 weights only (asked for ", dtype_name(t), ")");
      }
    }
    Block block;
  };

  template <class X, class = void>
  struct has_dtype : std::false_type {};
  template <class X>
  struct has_dtype<X, std::void_t<decltype(std::declval<X&>().set_weight_dtype(Dtype::f32))>> : std::true_type {};

  Concept& get() const {
    if (!impl_) detail::fail("MoELayer: empty layer (default-constructed or moved from)");
    return *impl_;
  }

  std::unique_ptr<Concept> impl_;
  std::string family_;
};

MOEKIT_NAMESPACE_END
