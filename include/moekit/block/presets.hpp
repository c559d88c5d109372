// SPDX-License-Identifier: MIT
// Presets: the exact MoE block of a real model family from its configuration
// values and its weights, in one call.
//
//   moekit::FamilyConfig cfg = moekit::FamilyConfig::defaults("deepseek_v3");
//   cfg.hidden_size = ...;  (or FamilyConfig::from_values(metadata / config.json values))
//   moekit::MoELayer layer = moekit::presets::build(cfg, source);   // source: TensorSource
//
// Tensor names are relative to the MoE block (`gate.weight`,
// `experts.3.w1.weight`, `experts.gate_up_proj` ...), as in
// conformance/SEMANTICS.md; wrap a checkpoint in a PrefixedTensorSource to
// read layer N. Both the per-expert (Hub / transformers v4) and the fused
// (transformers v5 / gpt-oss / Llama-4 / Granite / DBRX) layouts are read.
//
// Families: mixtral, qwen2_moe, qwen3_moe, olmoe, jamba, granitemoe, dbrx,
// deepseek_v2, deepseek_v3, gpt_oss, llama4, switch_transformers, nllb_moe,
// phimoe, expert_choice (the golden-case family names; "mixtral_fused" is
// accepted as mixtral).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "../core/error.hpp"
#include "../core/tensor.hpp"
#include "../expert/gated_experts.hpp"
#include "../expert/mlp_experts.hpp"
#include "../expert/shared_experts.hpp"
#include "../io/tensor_source.hpp"
#include "../router/expert_choice.hpp"
#include "../router/grouped_topk.hpp"
#include "../router/router.hpp"
#include "../router/sparsemixer.hpp"
#include "moe_block.hpp"
#include "moe_layer.hpp"

MOEKIT_NAMESPACE_BEGIN

/// Configuration values of one MoE block, under the generic names of the
/// conformance files (HF names in the comments).
struct FamilyConfig {
  std::string family;
  Index hidden_size = 0;        ///< hidden_size / d_model
  Index intermediate_size = 0;  ///< expert FFN size: intermediate_size / moe_intermediate_size / d_ff / ffn_hidden_size
  Index num_experts = 0;        ///< num_local_experts / num_experts / n_routed_experts / moe_num_experts
  Index top_k = 0;              ///< num_experts_per_tok / moe_top_k (0 for expert choice)
  std::optional<bool> norm_topk_prob;         ///< renormalise the top-k weights (family default when unset)
  float routed_scaling_factor = 1.0f;         ///< DeepSeek
  Index n_group = 1, topk_group = 1;          ///< DeepSeek group-limited routing
  std::string topk_method;                    ///< DeepSeek-V2: "greedy" | "group_limited_greedy"
  Index n_shared_experts = 0;                 ///< DeepSeek: shared MLP of size intermediate_size · n_shared_experts
  Index shared_expert_intermediate_size = 0;  ///< Qwen2-MoE; Llama-4's shared expert uses intermediate_size when 0
  float swiglu_alpha = 1.702f, swiglu_limit = 7.0f;  ///< gpt-oss
  Index expert_capacity = 0;                  ///< Switch / NLLB absolute capacity
  float moe_eval_capacity_token_fraction = 1.0f;     ///< NLLB eval capacity (fraction of tokens)
  float moe_token_dropout = 0.2f;             ///< NLLB eval output scale 1 − dropout
  bool normalize_router_prob_before_dropping = false;  ///< NLLB
  float router_jitter_noise = 0.01f;          ///< Phi-MoE sparsemixer threshold ε
  std::optional<float> moe_normalize_expert_weights;   ///< DBRX p-norm (unset = no normalisation)
  float capacity_factor = 2.0f;               ///< expert choice
  std::string hidden_act = "silu";            ///< silu | gelu | gelu_tanh | relu (expert activation)
  /// DeepSeek-V3 masked-group fill: false (default) = -inf as DeepSeek's reference
  /// code; true = 0.0 as Hugging Face ("hf_compat").
  bool hf_compat_group_fill = false;

  /// Values by generic or HF name (strings as in conformance metadata or
  /// config.json; "None" / "null" mean unset). Unknown keys are ignored.
  static FamilyConfig from_values(const std::string& family, const std::map<std::string, std::string>& v) {
    FamilyConfig c;
    c.family = family == "mixtral_fused" ? "mixtral" : family;
    const auto get = [&](std::initializer_list<const char*> names) -> std::optional<std::string> {
      for (const char* n : names) {
        const auto it = v.find(n);
        if (it != v.end() && it->second != "None" && it->second != "null" && !it->second.empty()) return it->second;
      }
      return std::nullopt;
    };
    const auto num = [&](std::initializer_list<const char*> names, auto& field) {
      if (const auto s = get(names)) {
        char* end = nullptr;
        const double x = std::strtod(s->c_str(), &end);
        if (end == s->c_str() || *end != '\0' || !std::isfinite(x))
          detail::fail("config ", *names.begin(), ": expected a number, got \"", *s, "\"");
        field = static_cast<std::decay_t<decltype(field)>>(x);
      }
    };
    const auto flag = [&](std::initializer_list<const char*> names, auto& field) {
      if (const auto s = get(names)) {
        if (*s == "True" || *s == "true" || *s == "1") field = true;
        else if (*s == "False" || *s == "false" || *s == "0") field = false;
        else detail::fail("config ", *names.begin(), ": expected True or False, got \"", *s, "\"");
      }
    };
    num({"hidden_size", "d_model"}, c.hidden_size);
    num({"intermediate_size", "moe_intermediate_size", "d_ff", "ffn_hidden_size", "encoder_ffn_dim"}, c.intermediate_size);
    if (family == "deepseek_v2" || family == "deepseek_v3" || family == "qwen2_moe" || family == "qwen3_moe")
      num({"moe_intermediate_size"}, c.intermediate_size);  // their intermediate_size is the dense MLP's
    num({"num_experts", "num_local_experts", "n_routed_experts", "moe_num_experts"}, c.num_experts);
    num({"top_k", "num_experts_per_tok", "moe_top_k"}, c.top_k);
    bool b = false;
    if (get({"norm_topk_prob"})) { flag({"norm_topk_prob"}, b); c.norm_topk_prob = b; }
    num({"routed_scaling_factor"}, c.routed_scaling_factor);
    num({"n_group"}, c.n_group);
    num({"topk_group"}, c.topk_group);
    if (const auto s = get({"topk_method"})) c.topk_method = *s;
    num({"n_shared_experts"}, c.n_shared_experts);
    num({"shared_expert_intermediate_size"}, c.shared_expert_intermediate_size);
    num({"swiglu_alpha"}, c.swiglu_alpha);
    num({"swiglu_limit"}, c.swiglu_limit);
    num({"expert_capacity"}, c.expert_capacity);
    num({"moe_eval_capacity_token_fraction"}, c.moe_eval_capacity_token_fraction);
    num({"moe_token_dropout"}, c.moe_token_dropout);
    flag({"normalize_router_prob_before_dropping"}, c.normalize_router_prob_before_dropping);
    num({"router_jitter_noise"}, c.router_jitter_noise);
    if (get({"moe_normalize_expert_weights"})) {
      float p = 1.0f;
      num({"moe_normalize_expert_weights"}, p);
      c.moe_normalize_expert_weights = p;
    }
    num({"capacity_factor"}, c.capacity_factor);
    if (const auto s = get({"hidden_act", "dense_act_fn", "activation_function", "ffn_act_fn"})) c.hidden_act = *s;
    flag({"hf_compat_group_fill"}, c.hf_compat_group_fill);
    return c;
  }

  /// The families presets::build knows.
  static const std::vector<std::string>& families() {
    static const std::vector<std::string> f = {"mixtral", "qwen2_moe", "qwen3_moe", "olmoe", "jamba",
                                               "granitemoe", "dbrx", "deepseek_v2", "deepseek_v3",
                                               "gpt_oss", "llama4", "switch_transformers", "nllb_moe",
                                               "phimoe", "expert_choice"};
    return f;
  }
};

namespace presets {
namespace detail {

using moekit::detail::fail;
using moekit::detail::require;

inline std::string expert_name(const std::string& pattern, Index e) {
  std::string s = pattern;
  const auto at = s.find("{e}");
  return s.replace(at, 3, std::to_string(e));
}

/// Stacks per-expert tensors named by `pattern` ("experts.{e}.w1.weight"), each [rows, cols].
inline Matrix stack(const TensorSource& src, const std::string& pattern, Index E, Index rows, Index cols) {
  Matrix out(E * rows, cols);
  for (Index e = 0; e < E; ++e) out.middleRows(e * rows, rows) = src.matrix(expert_name(pattern, e), rows, cols);
  return out;
}

/// Stacked gated experts from per-expert names, or from fused v5 tensors.
template <class Gate>
GatedExperts<Gate> gated(const TensorSource& src, const FamilyConfig& c, const std::string& gate_n,
                         const std::string& up_n, const std::string& down_n, Gate g = Gate()) {
  const Index E = c.num_experts, d = c.hidden_size, f = c.intermediate_size;
  if (src.contains("experts.gate_up_proj"))  // transformers v5 in-memory layout
    return GatedExperts<Gate>::from_gate_up(E, src.matrix("experts.gate_up_proj", E * 2 * f, d),
                                            src.matrix("experts.down_proj", E * d, f), g);
  return GatedExperts<Gate>(E, stack(src, gate_n, E, f, d), stack(src, up_n, E, f, d), stack(src, down_n, E, d, f), g);
}

/// A one-expert SwiGLU bank from `prefix.{gate,up,down}_proj.weight`.
inline SwiGluExperts dense_swiglu(const TensorSource& src, const std::string& prefix, Index d, Index f) {
  return SwiGluExperts(1, src.matrix(prefix + ".gate_proj.weight", f, d), src.matrix(prefix + ".up_proj.weight", f, d),
                       src.matrix(prefix + ".down_proj.weight", d, f));
}

inline void check(const FamilyConfig& c) {
  require(c.hidden_size >= 1, c.family, " config: hidden_size must be >= 1, got ", c.hidden_size);
  require(c.intermediate_size >= 1, c.family, " config: intermediate_size must be >= 1, got ", c.intermediate_size);
  require(c.num_experts >= 1, c.family, " config: num_experts must be >= 1, got ", c.num_experts);
  if (c.family != "expert_choice")
    require(c.top_k >= 1 && c.top_k <= c.num_experts, c.family, " config: top_k must be in [1, num_experts = ",
            c.num_experts, "], got ", c.top_k);
}

/// Softmax-top-k SwiGLU families (Mixtral, Qwen, OLMoE, Jamba, DBRX, DeepSeek-V2 greedy).
inline MoELayer softmax_swiglu(const FamilyConfig& c, const TensorSource& src, const std::string& router_name,
                               bool renorm_default, const std::string& g, const std::string& u, const std::string& dn,
                               RouterOptions opt) {
  opt.with_top_k(c.top_k).with_renormalize(c.norm_topk_prob.value_or(renorm_default));
  Router<> router(src.matrix(router_name, c.num_experts, c.hidden_size), opt);
  SwiGluMoEBlock block(std::move(router), gated<SiluGate>(src, c, g, u, dn));
  return MoELayer(std::move(block), c.family);
}

}  // namespace detail

/// Builds the exact block of `cfg.family` from weights in `src` (names relative to the block).
inline MoELayer build(const FamilyConfig& cfg, const TensorSource& src) {
  using namespace detail;
  const FamilyConfig& c = cfg;
  const std::string& fam = c.family;
  const bool known = std::find(FamilyConfig::families().begin(), FamilyConfig::families().end(), fam) !=
                     FamilyConfig::families().end();
  if (!known) {
    std::string list;
    for (const auto& f : FamilyConfig::families()) list += (list.empty() ? "" : ", ") + f;
    fail("presets: unknown family \"", fam, "\" (known: ", list, ")");
  }
  check(c);
  const Index E = c.num_experts, d = c.hidden_size, f = c.intermediate_size;
  const std::string w1 = "experts.{e}.w1.weight", w3 = "experts.{e}.w3.weight", w2 = "experts.{e}.w2.weight";
  const std::string gp = "experts.{e}.gate_proj.weight", up = "experts.{e}.up_proj.weight",
                    dp = "experts.{e}.down_proj.weight";

  if (fam == "mixtral") return softmax_swiglu(c, src, "gate.weight", true, w1, w3, w2, RouterOptions());
  if (fam == "qwen3_moe" || fam == "olmoe")
    return softmax_swiglu(c, src, "gate.weight", false, gp, up, dp, RouterOptions());
  if (fam == "jamba") return softmax_swiglu(c, src, "router.weight", false, gp, up, dp, RouterOptions());
  if (fam == "qwen2_moe") {
    MoELayer layer = softmax_swiglu(c, src, "gate.weight", false, gp, up, dp, RouterOptions());
    const Index fs = c.shared_expert_intermediate_size;
    if (fs > 0 && src.contains("shared_expert.gate_proj.weight")) {
      Vector gate = src.contains("shared_expert_gate.weight") ? src.vector("shared_expert_gate.weight", d) : Vector();
      layer.as<SwiGluMoEBlock>()->set_shared_experts(SharedExperts<>(dense_swiglu(src, "shared_expert", d, fs), gate));
    }
    return layer;
  }
  if (fam == "dbrx") {
    RouterOptions opt = RouterOptions().with_top_k(c.top_k);
    if (c.moe_normalize_expert_weights) opt.with_normalization(Normalization::p_norm, *c.moe_normalize_expert_weights);
    else opt.with_renormalize(false);
    Router<> router(src.matrix("router.layer.weight", E, d), opt);
    const Matrix w2m = src.matrix("experts.mlp.w2", E * f, d);  // [E·f, d], used untransposed
    Matrix down(E * d, f);
    for (Index e = 0; e < E; ++e) down.middleRows(e * d, d) = w2m.middleRows(e * f, f).transpose();
    SwiGluExperts ex(E, src.matrix("experts.mlp.w1", E * f, d), src.matrix("experts.mlp.v1", E * f, d), std::move(down));
    return MoELayer(SwiGluMoEBlock(std::move(router), std::move(ex)), fam);
  }
  if (fam == "granitemoe") {
    using R = Router<LogitScoring>;
    R router(src.matrix("router.layer.weight", E, d),
             RouterOptions().with_top_k(c.top_k).with_weight_source(WeightSource::softmax_of_selected).with_renormalize(false));
    auto ex = SwiGluExperts::from_gate_up(E, src.matrix("input_linear.weight", E * 2 * f, d), src.matrix("output_linear.weight", E * d, f));
    return MoELayer(MoEBlock<R>(std::move(router), std::move(ex)), fam);
  }
  if (fam == "deepseek_v2" || fam == "deepseek_v3") {
    const bool v3 = fam == "deepseek_v3";
    RouterOptions opt = RouterOptions().with_top_k(c.top_k).with_scaling_factor(c.routed_scaling_factor);
    if (v3 && c.norm_topk_prob.value_or(true)) opt.with_normalization(Normalization::sum, 1.0f, 1e-20f);
    else opt.with_renormalize(false);
    auto ex = gated<SiluGate>(src, c, gp, up, dp);
    std::optional<SharedExperts<>> shared;
    if (c.n_shared_experts > 0)
      shared = SharedExperts<>(dense_swiglu(src, "shared_experts", d, f * c.n_shared_experts));
    const MaskFill fill = c.hf_compat_group_fill ? MaskFill::zero : MaskFill::neg_inf;
    const Matrix rw = src.matrix("gate.weight", E, d);
    if (v3) {
      using R = Router<SigmoidScoring, GroupedTopKSelector>;
      R router(rw, opt, Vector(), GroupedTopKSelector(c.n_group, c.topk_group, GroupScore::sum_of_top2, fill));
      if (src.contains("gate.e_score_correction_bias")) router.set_correction_bias(src.vector("gate.e_score_correction_bias", E));
      MoEBlock<R> block(std::move(router), std::move(ex));
      if (shared) block.set_shared_experts(*shared);
      return MoELayer(std::move(block), fam);
    }
    if (c.topk_method == "group_limited_greedy") {
      using R = Router<SoftmaxScoring, GroupedTopKSelector>;
      MoEBlock<R> block(R(rw, opt, Vector(), GroupedTopKSelector(c.n_group, c.topk_group, GroupScore::max, fill)), std::move(ex));
      if (shared) block.set_shared_experts(*shared);
      return MoELayer(std::move(block), fam);
    }
    SwiGluMoEBlock block(Router<>(rw, opt), std::move(ex));
    if (shared) block.set_shared_experts(*shared);
    return MoELayer(std::move(block), fam);
  }
  if (fam == "gpt_oss") {
    using R = Router<LogitScoring>;
    R router(src.matrix("router.weight", E, d),
             RouterOptions().with_top_k(c.top_k).with_weight_source(WeightSource::softmax_of_selected).with_renormalize(false),
             src.contains("router.bias") ? src.vector("router.bias", E) : Vector());
    ClampedSwiGluGate gate;
    gate.alpha = c.swiglu_alpha;
    gate.limit = c.swiglu_limit;
    auto ex = ClampedSwiGluExperts::from_transposed_gate_up(E, src.matrix("experts.gate_up_proj", E * d, 2 * f),
                                                            src.matrix("experts.down_proj", E * f, d),
                                                            GateUpLayout::interleaved, gate);
    if (src.contains("experts.gate_up_proj_bias"))
      ex.set_fused_biases(src.matrix("experts.gate_up_proj_bias", E, 2 * f),
                          src.contains("experts.down_proj_bias") ? src.matrix("experts.down_proj_bias", E, d) : Matrix(),
                          GateUpLayout::interleaved);
    return MoELayer(MoEBlock<R, ClampedSwiGluExperts>(std::move(router), std::move(ex)), fam);
  }
  if (fam == "llama4") {
    using R = Router<LogitScoring>;
    R router(src.matrix("router.weight", E, d),
             RouterOptions().with_top_k(c.top_k).with_weight_source(WeightSource::sigmoid_of_selected).with_renormalize(false));
    auto ex = SwiGluExperts::from_transposed_gate_up(E, src.matrix("experts.gate_up_proj", E * d, 2 * f),
                                                     src.matrix("experts.down_proj", E * f, d), GateUpLayout::halves);
    MoEBlock<R> block(std::move(router), std::move(ex), WeightedSum(WeightPlacement::input));
    if (src.contains("shared_expert.gate_proj.weight")) {
      const Index fs = c.shared_expert_intermediate_size > 0 ? c.shared_expert_intermediate_size : f;
      block.set_shared_experts(SharedExperts<>(dense_swiglu(src, "shared_expert", d, fs)));
    }
    return MoELayer(std::move(block), fam);
  }
  if (fam == "switch_transformers" || fam == "nllb_moe") {
    const bool nllb = fam == "nllb_moe";
    RouterOptions opt = RouterOptions().with_top_k(c.top_k).with_renormalize(nllb && c.normalize_router_prob_before_dropping);
    CapacityLimit cap = nllb && c.moe_eval_capacity_token_fraction > 0.0f
                            ? CapacityLimit::of_tokens(c.moe_eval_capacity_token_fraction)
                            : (c.expert_capacity > 0 ? CapacityLimit::absolute(c.expert_capacity)
                                                     : CapacityLimit::factor(nllb ? 2.0f : 1.0f));
    if (nllb) cap.with_renormalize_after_drop(!c.normalize_router_prob_before_dropping);
    opt.with_capacity(cap);
    Router<> router(src.matrix("router.classifier.weight", E, d), opt);
    const std::string in = nllb ? "experts.expert_{e}.fc1" : "experts.expert_{e}.wi";
    const std::string out = nllb ? "experts.expert_{e}.fc2" : "experts.expert_{e}.wo";
    ReluExperts ex(E, stack(src, in + ".weight", E, f, d), stack(src, out + ".weight", E, d, f));
    if (src.contains(expert_name(in + ".bias", 0)))
      ex.set_biases(stack(src, in + ".bias", E, 1, f), stack(src, out + ".bias", E, 1, d));
    if (nllb) ex.set_output_scale(1.0f - c.moe_token_dropout);
    return MoELayer(MoEBlock<Router<>, ReluExperts>(std::move(router), std::move(ex)), fam);
  }
  if (fam == "phimoe") {
    SparseMixerRouter router(src.matrix("gate.weight", E, d), c.top_k, c.router_jitter_noise);
    return MoELayer(MoEBlock<SparseMixerRouter>(std::move(router), gated<SiluGate>(src, c, w1, w3, w2)), fam);
  }
  // expert_choice
  ExpertChoiceRouter router(src.matrix("gate.weight", E, d), c.capacity_factor);
  return MoELayer(MoEBlock<ExpertChoiceRouter>(std::move(router), gated<SiluGate>(src, c, gp, up, dp)), fam);
}

}  // namespace presets

MOEKIT_NAMESPACE_END
