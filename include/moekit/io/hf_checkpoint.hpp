// SPDX-License-Identifier: MIT
// load_layer: layer N of a Hugging Face checkpoint directory as an MoELayer.
//
//   moekit::MoELayer layer = moekit::load_layer("path/to/Qwen3-30B-A3B", 12);
//   moekit::Matrix y = layer.forward(x);            // x: [tokens, hidden], f32
//
// Reads config.json (model_type gives the family; nested text_config /
// ffn_config values are merged in), opens the safetensors shards
// (model.safetensors or model.safetensors.index.json), finds the layer's MoE
// block under the family's name prefix and builds it with presets::build.
// Both per-expert (Hub / transformers v4) and fused (v5, gpt-oss, Llama-4,
// Granite, DBRX) tensor layouts load. With LoadOptions::weights = bf16 or f16
// the expert weights are kept in that type (half the memory the kernels
// stream); otherwise they are converted to f32.
#pragma once

#include <filesystem>
#include <fstream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "../block/moe_layer.hpp"
#include "../block/presets.hpp"
#include "../core/dtype.hpp"
#include "../core/error.hpp"
#include "safetensors_source.hpp"
#include "tensor_source.hpp"

MOEKIT_NAMESPACE_BEGIN

struct LoadOptions {
  /// Storage of the expert weights: f32 (default), bf16 or f16.
  Dtype weights = Dtype::f32;
  /// Family override (a golden-case family name); empty: from config.json's model_type.
  std::string family;

  LoadOptions& with_weights(Dtype t) { weights = t; return *this; }
  LoadOptions& with_family(std::string f) { family = std::move(f); return *this; }
};

namespace detail {

/// config.json's model_type -> preset family name ("" when unknown).
inline std::string family_of_model_type(const std::string& t) {
  static const std::map<std::string, std::string> m = {
      {"mixtral", "mixtral"},     {"qwen2_moe", "qwen2_moe"},     {"qwen3_moe", "qwen3_moe"},
      {"olmoe", "olmoe"},         {"jamba", "jamba"},             {"granitemoe", "granitemoe"},
      {"dbrx", "dbrx"},           {"deepseek_v2", "deepseek_v2"}, {"deepseek_v3", "deepseek_v3"},
      {"gpt_oss", "gpt_oss"},     {"llama4", "llama4"},           {"llama4_text", "llama4"},
      {"switch_transformers", "switch_transformers"},             {"nllb_moe", "nllb_moe"},
      {"phimoe", "phimoe"},       {"minimax", "mixtral"}};
  const auto it = m.find(t);
  return it == m.end() ? std::string() : it->second;
}

/// Flattens a config.json object into name -> string (numbers in repr form,
/// booleans True / False, null None); nested objects' keys are merged after
/// the top level, so text_config.hidden_size wins over a top-level one.
inline std::map<std::string, std::string> flatten_config(const nlohmann::json& j) {
  std::map<std::string, std::string> out;
  const auto put = [&](const std::string& k, const nlohmann::json& v) {
    if (v.is_boolean()) out[k] = v.get<bool>() ? "True" : "False";
    else if (v.is_null()) out[k] = "None";
    else if (v.is_string()) out[k] = v.get<std::string>();
    else if (v.is_number_integer()) out[k] = std::to_string(v.get<long long>());
    else if (v.is_number()) {
      std::ostringstream os;
      os.precision(17);
      os << v.get<double>();
      out[k] = os.str();
    }
  };
  for (auto it = j.begin(); it != j.end(); ++it)
    if (!it.value().is_object()) put(it.key(), it.value());
  for (auto it = j.begin(); it != j.end(); ++it)
    if (it.value().is_object())
      for (auto in = it.value().begin(); in != it.value().end(); ++in) put(in.key(), in.value());
  return out;
}

/// Name prefixes under which each family keeps layer N's MoE block, and the
/// router tensor that proves the block is there.
inline std::vector<std::pair<std::string, std::string>> layer_prefixes(const std::string& fam, long long n) {
  const std::string N = std::to_string(n);
  const std::string L = "model.layers." + N + ".";
  if (fam == "mixtral" || fam == "phimoe")
    return {{L + "block_sparse_moe.", "gate.weight"}, {L + "mlp.", "gate.weight"}, {L + "block_sparse_moe.", "router.weight"}};
  if (fam == "granitemoe") return {{L + "block_sparse_moe.", "router.layer.weight"}};
  if (fam == "jamba") return {{L + "feed_forward.", "router.weight"}};
  if (fam == "llama4")
    return {{L + "feed_forward.", "router.weight"}, {"language_model." + L + "feed_forward.", "router.weight"}};
  if (fam == "dbrx") return {{"transformer.blocks." + N + ".ffn.", "router.layer.weight"}};
  if (fam == "gpt_oss") return {{L + "mlp.", "router.weight"}};
  if (fam == "switch_transformers")
    return {{"encoder.block." + N + ".layer.1.mlp.", "router.classifier.weight"},
            {"decoder.block." + N + ".layer.2.mlp.", "router.classifier.weight"}};
  if (fam == "nllb_moe")
    return {{"model.encoder.layers." + N + ".ffn.", "router.classifier.weight"},
            {"model.decoder.layers." + N + ".ffn.", "router.classifier.weight"}};
  return {{L + "mlp.", "gate.weight"}};  // Qwen2/3-MoE, OLMoE, DeepSeek-V2/V3
}

}  // namespace detail

/// Builds layer `layer` of the Hugging Face checkpoint in `dir` (config.json + shards).
/// Throws moekit::Error naming what is missing: the config, an unknown model_type,
/// a layer without an MoE block (a dense layer, or out of range), or a tensor.
inline MoELayer load_layer(const std::string& dir, long long layer, const LoadOptions& options = LoadOptions()) {
  namespace fs = std::filesystem;
  const fs::path cfg_path = fs::path(dir) / "config.json";
  std::ifstream in(cfg_path);
  detail::require(static_cast<bool>(in), "load_layer: cannot open ", cfg_path.string());
  nlohmann::json cfg;
  try {
    in >> cfg;
  } catch (const std::exception& e) {
    detail::fail("load_layer: ", cfg_path.string(), " is not valid JSON: ", e.what());
  }
  detail::require(cfg.is_object(), "load_layer: ", cfg_path.string(), " must hold a JSON object");
  std::string family = options.family;
  if (family.empty()) {
    const std::string mt = cfg.value("model_type", std::string());
    family = detail::family_of_model_type(mt);
    detail::require(!family.empty(), "load_layer: model_type \"", mt, "\" in ", cfg_path.string(),
                    " is not a family moekit knows (set LoadOptions::family to force one)");
  }
  const FamilyConfig fc = FamilyConfig::from_values(family, detail::flatten_config(cfg));
  const SafetensorsTensorSource ckpt(dir);
  std::string tried;
  for (const auto& [prefix, probe] : detail::layer_prefixes(fc.family, layer)) {
    if (!ckpt.contains(prefix + probe)) {
      tried += (tried.empty() ? "" : ", ") + prefix + probe;
      continue;
    }
    const PrefixedTensorSource src(ckpt, prefix);
    MoELayer l = presets::build(fc, src);
    if (options.weights != Dtype::f32) l.set_expert_weight_dtype(options.weights);
    return l;
  }
  detail::fail("load_layer: layer ", layer, " of ", dir, " has no ", fc.family,
               " MoE block (a dense layer, or beyond the last layer?): looked for ", tried);
}

MOEKIT_NAMESPACE_END
