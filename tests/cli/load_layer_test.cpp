// SPDX-License-Identifier: MIT
// load_layer on checkpoint directories made here (single file and sharded,
// per-expert and fused layouts, bf16), its errors, and `moekit run` / `info`
// end to end on the same directories.
#include <gtest/gtest.h>

#include <cstdlib>
#include <unistd.h>
#include <filesystem>
#include <fstream>
#include <string>

#include <moekit/io/hf_checkpoint.hpp>
#include <moekit/io/safetensors_writer.hpp>
#include <nlohmann/json.hpp>
#include <moekit/moekit.hpp>

namespace {

namespace fs = std::filesystem;
using moekit::Matrix;

// The environment variable overrides the configured path, as in the other
// conformance tests (a build run on another machine or from another folder).
std::string conformance_dir() {
  if (const char* env = std::getenv("MOEKIT_CONFORMANCE_DIR"); env && *env) return env;
  return MOEKIT_CONFORMANCE_DIR;
}
const std::string kDir = conformance_dir();

std::string fresh_dir(const std::string& name) {
  const fs::path p = fs::temp_directory_path() / ("moekit_load_layer_" + name + "_" + std::to_string(::getpid()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p.string();
}

// Writes the golden case's block weights as layer `layer` of a checkpoint.
void make_checkpoint(const std::string& golden, const std::string& prefix, const std::string& config,
                     const std::string& dir, std::size_t shards) {
  const moekit::SafetensorsFile f(golden);
  moekit::SafetensorsWriter w;
  for (const auto& n : f.names()) {
    if (n == "input" || n == "output" || n.rfind("router_logits", 0) == 0 || n.rfind("topk_", 0) == 0 ||
        n == "aux_loss")
      continue;
    w.add(prefix + n, f.to_matrix(n), moekit::SafetensorsDtype::f32, f.info(n).shape);
  }
  if (shards > 1) moekit::write_sharded_checkpoint(dir, w, shards);
  else w.write(dir + "/model.safetensors");
  std::ofstream(dir + "/config.json") << config;
}

class LoadLayer : public ::testing::Test {
 protected:
  void SetUp() override {
    if (!fs::exists(kDir + "/mixtral/t7_e8_k2.safetensors")) GTEST_SKIP() << "no conformance cases at " << kDir;
  }
};

TEST_F(LoadLayer, ShardedMixtralMatchesGolden) {
  const std::string golden = kDir + "/mixtral/t7_e8_k2.safetensors", dir = fresh_dir("mixtral");
  make_checkpoint(golden, "model.layers.3.block_sparse_moe.",
                  R"({"model_type": "mixtral", "hidden_size": 64, "intermediate_size": 96, "num_local_experts": 8,
                      "num_experts_per_tok": 2, "router_jitter_noise": 0.0, "num_hidden_layers": 4})",
                  dir, 3);
  ASSERT_TRUE(fs::exists(dir + "/model.safetensors.index.json"));
  const moekit::SafetensorsFile f(golden);
  moekit::MoELayer layer = moekit::load_layer(dir, 3);
  EXPECT_EQ(layer.family(), "mixtral");
  const Matrix want = f.to_matrix("output");
  const Matrix y = layer.forward(f.to_matrix("input"));
  EXPECT_LE((y - want).cwiseAbs().maxCoeff(), 1e-5f * std::max(1.0f, want.cwiseAbs().maxCoeff()));
  EXPECT_EQ(layer.last_plan().ids, f.to_ids("topk_ids"));
  // bf16 experts: rounding the weights moves the output by a little, not by a lot.
  moekit::MoELayer half = moekit::load_layer(dir, 3, moekit::LoadOptions().with_weights(moekit::Dtype::bf16));
  const Matrix yh = half.forward(f.to_matrix("input"));
  EXPECT_LE((yh - want).cwiseAbs().maxCoeff(), 3e-2f * std::max(1.0f, want.cwiseAbs().maxCoeff()));
  EXPECT_GT((yh - want).cwiseAbs().maxCoeff(), 0.0f);
  // Errors name the problem.
  try {
    moekit::load_layer(dir, 2);
    FAIL() << "layer 2 has no MoE block";
  } catch (const moekit::Error& e) {
    EXPECT_NE(std::string(e.what()).find("layer 2"), std::string::npos) << e.what();
  }
  EXPECT_THROW(moekit::load_layer(dir + "/nowhere", 3), moekit::Error);
  fs::remove_all(dir);
}

TEST_F(LoadLayer, FusedLayoutsAndConfigErrors) {
  const std::string golden = kDir + "/gpt_oss/t7_e8_k2.safetensors", dir = fresh_dir("gptoss");
  if (!fs::exists(golden)) GTEST_SKIP();
  make_checkpoint(golden, "model.layers.0.mlp.",
                  R"({"model_type": "gpt_oss", "hidden_size": 64, "intermediate_size": 32, "num_local_experts": 8,
                      "num_experts_per_tok": 2, "swiglu_limit": 7.0})",
                  dir, 1);
  const moekit::SafetensorsFile f(golden);
  moekit::MoELayer layer = moekit::load_layer(dir, 0);
  const Matrix want = f.to_matrix("output");
  EXPECT_LE((layer.forward(f.to_matrix("input")) - want).cwiseAbs().maxCoeff(), 1e-5f * std::max(1.0f, want.cwiseAbs().maxCoeff()));
  std::ofstream(dir + "/config.json") << R"({"model_type": "bert"})";
  try {
    moekit::load_layer(dir, 0);
    FAIL();
  } catch (const moekit::Error& e) {
    EXPECT_NE(std::string(e.what()).find("model_type \"bert\""), std::string::npos) << e.what();
  }
  std::ofstream(dir + "/config.json") << "{ not json";
  EXPECT_THROW(moekit::load_layer(dir, 0), moekit::Error);
  fs::remove_all(dir);
}

TEST_F(LoadLayer, CommandLineRunAndInfo) {
  const std::string golden = kDir + "/qwen2_moe/t7_e8_k4_nonorm.safetensors", dir = fresh_dir("qwen2");
  if (!fs::exists(golden)) GTEST_SKIP();
  make_checkpoint(golden, "model.layers.1.mlp.",
                  R"({"model_type": "qwen2_moe", "hidden_size": 64, "intermediate_size": 5632, "moe_intermediate_size": 32,
                      "num_experts": 8, "num_experts_per_tok": 4, "norm_topk_prob": false,
                      "shared_expert_intermediate_size": 96})",
                  dir, 2);
  const std::string out = dir + "/out.safetensors";
  const std::string cmd = std::string(MOEKIT_CLI_PATH) + " run --checkpoint " + dir + " --layer 1 --input " + golden +
                          " --output " + out + " --threads 2 > " + dir + "/log.txt 2>&1";
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  const moekit::SafetensorsFile res(out), f(golden);
  const Matrix want = f.to_matrix("output");
  EXPECT_LE((res.to_matrix("output") - want).cwiseAbs().maxCoeff(), 1e-5f * std::max(1.0f, want.cwiseAbs().maxCoeff()));
  EXPECT_EQ(res.to_ids("topk_ids"), f.to_ids("topk_ids"));
  EXPECT_EQ(std::system((std::string(MOEKIT_CLI_PATH) + " info " + out + " > /dev/null").c_str()), 0);
  fs::remove_all(dir);
}

TEST(Lrc, CommandLinePrintsSrpAndSch) {
  // Two layers, k = 2; layer 0 repeats {0, 1} then switches: SRP / SCH by the library, printed by the tool.
  const std::vector<std::int32_t> ids = {0, 1, 2, 3, 0, 1, 2, 3, 0, 2, 1, 3, 4, 5, 2, 3};
  const moekit::RoutingTrace trace(ids, 4, 2, 2, 6);
  const std::string dir = fresh_dir("lrc"), path = dir + "/trace.safetensors", out = dir + "/lrc.json";
  moekit::save_trace(path, trace);
  const std::string cmd = std::string(MOEKIT_CLI_PATH) + " lrc " + path + " --segment 2 --cache 2 --json > " + out;
  ASSERT_EQ(std::system(cmd.c_str()), 0) << cmd;
  std::ifstream in(out);
  const nlohmann::json j = nlohmann::json::parse(in);
  EXPECT_NEAR(j.at("srp").get<double>(), moekit::srp(trace, 2).srp, 1e-6);
  EXPECT_NEAR(j.at("sch").get<double>(), moekit::sch(trace, 2, 2).hit_rate(), 1e-6);
  ASSERT_EQ(j.at("srp_per_layer").size(), 2u);
  EXPECT_NEAR(j.at("sch_per_layer")[1].get<double>(), moekit::sch_layer(trace, 2, 2, 1).hit_rate(), 1e-6);
  fs::remove_all(dir);
}

}  // namespace
