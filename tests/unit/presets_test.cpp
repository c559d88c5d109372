// SPDX-License-Identifier: MIT
// Presets: configuration parsing, every family built from in-memory weights,
// and the errors for unknown families, missing tensors and bad shapes. The
// exact numbers of each family are pinned by the golden cases (tests/conformance).
#include "test_util.hpp"

namespace {

using moekit::FamilyConfig;
using moekit::Index;
using moekit::MapTensorSource;
using moekit::Matrix;
using moekit_test::error_message;
using moekit_test::random_matrix;

// Random weights under every tensor name a family may read.
MapTensorSource weights_for(const FamilyConfig& c) {
  const Index E = c.num_experts, d = c.hidden_size, f = c.intermediate_size;
  MapTensorSource s;
  std::uint32_t seed = 100;
  auto add = [&](const std::string& n, Index r, Index k, std::vector<std::int64_t> shape = {}) {
    s.add(n, random_matrix(r, k, seed++, 0.2f), std::move(shape));
  };
  for (const char* n : {"gate.weight", "router.weight", "router.layer.weight", "router.classifier.weight"}) add(n, E, d);
  add("router.bias", 1, E, {E});
  add("gate.e_score_correction_bias", 1, E, {E});
  for (Index e = 0; e < E; ++e) {
    const std::string p = "experts." + std::to_string(e) + ".";
    add(p + "w1.weight", f, d); add(p + "w3.weight", f, d); add(p + "w2.weight", d, f);
    add(p + "gate_proj.weight", f, d); add(p + "up_proj.weight", f, d); add(p + "down_proj.weight", d, f);
    const std::string q = "experts.expert_" + std::to_string(e) + ".";
    add(q + "wi.weight", f, d); add(q + "wo.weight", d, f);
    add(q + "fc1.weight", f, d); add(q + "fc2.weight", d, f);
    add(q + "fc1.bias", 1, f, {f}); add(q + "fc2.bias", 1, d, {d});
  }
  if (c.family == "gpt_oss" || c.family == "llama4") {
    add("experts.gate_up_proj", E * d, 2 * f, {E, d, 2 * f});
    add("experts.down_proj", E * f, d, {E, f, d});
    add("experts.gate_up_proj_bias", E, 2 * f);
    add("experts.down_proj_bias", E, d);
  }
  add("input_linear.weight", E * 2 * f, d, {E, 2 * f, d});
  add("output_linear.weight", E * d, f, {E, d, f});
  for (const char* n : {"experts.mlp.w1", "experts.mlp.v1", "experts.mlp.w2"}) add(n, E * f, d);
  const Index fs = c.shared_expert_intermediate_size > 0 ? c.shared_expert_intermediate_size : f;
  for (const char* p : {"shared_expert", "shared_experts"}) {
    const Index sf = std::string(p) == "shared_experts" ? f * std::max<Index>(1, c.n_shared_experts) : fs;
    add(std::string(p) + ".gate_proj.weight", sf, d);
    add(std::string(p) + ".up_proj.weight", sf, d);
    add(std::string(p) + ".down_proj.weight", d, sf);
  }
  add("shared_expert_gate.weight", 1, d);
  return s;
}

FamilyConfig config_for(const std::string& family) {
  std::map<std::string, std::string> v = {{"hidden_size", "24"}, {"intermediate_size", "10"}, {"num_experts", "8"},
                                          {"top_k", "2"}, {"n_group", "4"}, {"topk_group", "2"},
                                          {"n_shared_experts", "2"}, {"shared_expert_intermediate_size", "20"},
                                          {"topk_method", "group_limited_greedy"}, {"routed_scaling_factor", "2.5"},
                                          {"expert_capacity", "3"}, {"moe_normalize_expert_weights", "1"}};
  return FamilyConfig::from_values(family, v);
}

TEST(Presets, EveryFamilyBuildsAndRuns) {
  for (const std::string& fam : FamilyConfig::families()) {
    const FamilyConfig c = config_for(fam);
    const MapTensorSource src = weights_for(c);
    moekit::MoELayer layer = moekit::presets::build(c, src);
    EXPECT_EQ(layer.family(), fam);
    EXPECT_EQ(layer.hidden_size(), 24);
    EXPECT_EQ(layer.num_experts(), 8);
    const Matrix x = random_matrix(13, 24, 7);
    const Matrix y = layer.forward(x);
    EXPECT_TRUE(y.allFinite()) << fam;
    EXPECT_GT(y.cwiseAbs().maxCoeff(), 0.0f) << fam;
    moekit::ThreadPoolExecutor pool(2);
    EXPECT_TRUE(moekit_test::bit_identical(layer.forward(x, &pool), y)) << fam;
    EXPECT_EQ(layer.last_plan().num_tokens(), 13);
  }
}

TEST(Presets, ConcreteBlockIsReachable) {
  const FamilyConfig c = config_for("deepseek_v3");
  moekit::MoELayer layer = moekit::presets::build(c, weights_for(c));
  using V3 = moekit::MoEBlock<moekit::Router<moekit::SigmoidScoring, moekit::GroupedTopKSelector>>;
  V3* block = layer.as<V3>();
  ASSERT_NE(block, nullptr);
  EXPECT_EQ(layer.as<moekit::SwiGluMoEBlock>(), nullptr);
  EXPECT_EQ(block->router().correction_bias().size(), 8);
  ASSERT_NE(block->shared_experts(), nullptr);
  EXPECT_EQ(block->shared_experts()->bank().ffn_size(), 20);  // f · n_shared
  block->router().steering().disable({0, 1, 2});
  layer.forward(random_matrix(5, 24, 1));
  for (Index t = 0; t < 5; ++t)
    for (Index j = 0; j < 2; ++j) EXPECT_GT(layer.last_plan().ids(t, j), 2);
}

TEST(Presets, ConfigParsing) {
  const FamilyConfig c = FamilyConfig::from_values(
      "qwen2_moe", {{"hidden_size", "64"}, {"moe_intermediate_size", "32"}, {"intermediate_size", "5504"},
                    {"num_experts", "60"}, {"num_experts_per_tok", "4"}, {"norm_topk_prob", "False"},
                    {"routed_scaling_factor", "None"}, {"shared_expert_intermediate_size", "96"}});
  EXPECT_EQ(c.hidden_size, 64);
  EXPECT_EQ(c.intermediate_size, 32);  // Qwen's intermediate_size is the dense MLP's
  EXPECT_EQ(c.num_experts, 60);
  EXPECT_EQ(c.top_k, 4);
  ASSERT_TRUE(c.norm_topk_prob.has_value());
  EXPECT_FALSE(*c.norm_topk_prob);
  EXPECT_EQ(c.routed_scaling_factor, 1.0f);  // None = unset
  EXPECT_EQ(FamilyConfig::from_values("mixtral_fused", {}).family, "mixtral");
  EXPECT_NE(error_message([] { FamilyConfig::from_values("mixtral", {{"hidden_size", "sixty"}}); }).find("config hidden_size: expected a number, got \"sixty\""), std::string::npos);
  EXPECT_NE(error_message([] { FamilyConfig::from_values("qwen3_moe", {{"norm_topk_prob", "maybe"}}); }).find("expected True or False"), std::string::npos);
}

TEST(Presets, ErrorsNameTheProblem) {
  FamilyConfig c = config_for("mixtral");
  MapTensorSource src = weights_for(c);
  c.family = "mixtrall";
  EXPECT_NE(error_message([&] { moekit::presets::build(c, src); }).find("unknown family \"mixtrall\" (known: mixtral, qwen2_moe"), std::string::npos);
  c.family = "mixtral";
  c.top_k = 9;
  EXPECT_NE(error_message([&] { moekit::presets::build(c, src); }).find("top_k must be in [1, num_experts = 8], got 9"), std::string::npos);
  c.top_k = 2;
  MapTensorSource missing;
  missing.add("gate.weight", Matrix::Zero(8, 24));
  const std::string msg = error_message([&] { moekit::presets::build(c, missing); });
  EXPECT_NE(msg.find("no tensor named \"experts.0.w"), std::string::npos) << msg;  // w1, w3 or w2: argument order
  MapTensorSource bad = weights_for(c);
  bad.add("experts.3.w2.weight", Matrix::Zero(24, 11));
  EXPECT_NE(error_message([&] { moekit::presets::build(c, bad); }).find("experts.3.w2.weight: expected shape [24, 10], got [24, 11]"), std::string::npos);
  // A prefixed view reads layer N of a checkpoint.
  MapTensorSource ckpt;
  ckpt.add("model.layers.3.block_sparse_moe.gate.weight", Matrix::Zero(8, 24));
  const moekit::PrefixedTensorSource view(ckpt, "model.layers.3.block_sparse_moe.");
  EXPECT_TRUE(view.contains("gate.weight"));
  EXPECT_FALSE(view.contains("experts.0.w1.weight"));
}

}  // namespace
