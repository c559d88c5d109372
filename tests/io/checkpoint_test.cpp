// SPDX-License-Identifier: MIT
// SafetensorsCheckpoint over directories the tests make: a single
// model.safetensors, a sharded checkpoint written by write_sharded_checkpoint
// (opened eagerly, lazily, from the directory, the index or a shard), and
// broken indexes (missing shard, tensor absent from its shard, path traversal,
// malformed JSON) that must fail with clear messages.
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <thread>
#include <vector>

#include "io_test_util.hpp"
#include "moekit/io/safetensors_checkpoint.hpp"
#include "moekit/io/safetensors_writer.hpp"

namespace {

using moekit::CheckpointOptions;
using moekit::IdMatrix;
using moekit::Matrix;
using moekit::SafetensorsCheckpoint;
using moekit::SafetensorsWriter;
using moekit_io_test::error_of;
using moekit_io_test::expect_contains;
using moekit_io_test::TempDir;
using moekit_io_test::write_text;

// Six tensors of mixed dtypes, names as in a real MoE layer.
SafetensorsWriter model() {
  SafetensorsWriter w;
  const std::string p = "model.layers.0.mlp.";
  w.add(p + "gate.weight", Matrix::Constant(4, 8, 0.25f));
  for (int e = 0; e < 4; ++e)
    w.add(p + "experts." + std::to_string(e) + ".up_proj.weight",
          Matrix::Constant(6, 8, static_cast<float>(e)), moekit::SafetensorsDtype::bf16);
  w.add("ids", IdMatrix::Constant(2, 3, 7));
  w.set_metadata("format", "pt");
  return w;
}

void expect_same_tensors(const SafetensorsCheckpoint& ck, const SafetensorsWriter& w) {
  const moekit::SafetensorsFile ref = moekit::SafetensorsFile::from_bytes(w.to_bytes());
  EXPECT_EQ(ck.names(), ref.names());
  EXPECT_EQ(ck.size(), ref.size());
  for (const std::string& name : ref.names()) {
    SCOPED_TRACE(name);
    EXPECT_TRUE(ck.contains(name));
    EXPECT_EQ(ck.info(name).shape, ref.info(name).shape);
    EXPECT_EQ(ck.info(name).dtype, ref.info(name).dtype);
    EXPECT_EQ(ck.to_matrix(name), ref.to_matrix(name));
    const moekit::ByteView a = ck.bytes(name), b = ref.bytes(name);
    ASSERT_EQ(a.size, b.size);
    EXPECT_EQ(std::memcmp(a.data, b.data, a.size), 0);
  }
  EXPECT_EQ(ck.to_ids("ids"), IdMatrix::Constant(2, 3, 7));
  EXPECT_EQ(ck.data<moekit::bf16>("model.layers.0.mlp.experts.3.up_proj.weight")[0].bits,
            moekit::bf16(3.0f).bits);
}

TEST(SafetensorsCheckpoint, SingleFileDirectory) {
  TempDir dir;
  const SafetensorsWriter w = model();
  w.write(dir.file("model.safetensors"));
  const SafetensorsCheckpoint ck(dir.path().string());
  EXPECT_FALSE(ck.is_sharded());
  EXPECT_EQ(ck.shard_names(), std::vector<std::string>{"model.safetensors"});
  EXPECT_EQ(ck.shard_of("ids"), "model.safetensors");
  EXPECT_EQ(ck.metadata().at("format"), "pt");
  expect_same_tensors(ck, w);
  // The file itself may be given too.
  expect_same_tensors(SafetensorsCheckpoint(dir.file("model.safetensors")), w);
}

TEST(SafetensorsCheckpoint, ShardedDirectoryEagerAndLazy) {
  TempDir dir;
  const SafetensorsWriter w = model();
  const std::vector<std::string> shards = moekit::write_sharded_checkpoint(dir.path().string(), w, 3);
  EXPECT_EQ(shards, (std::vector<std::string>{"model-00001-of-00003.safetensors",
                                              "model-00002-of-00003.safetensors",
                                              "model-00003-of-00003.safetensors"}));
  ASSERT_TRUE(std::filesystem::exists(dir.file("model.safetensors.index.json")));

  for (const bool lazy : {false, true}) {
    SCOPED_TRACE(lazy ? "lazy" : "eager");
    CheckpointOptions options;
    options.lazy = lazy;
    const SafetensorsCheckpoint ck(dir.path().string(), options);
    EXPECT_TRUE(ck.is_sharded());
    EXPECT_EQ(ck.shard_names(), shards);
    EXPECT_EQ(ck.metadata().at("total_size"), std::to_string(w.data_size()));
    EXPECT_EQ(ck.metadata().at("format"), "pt");
    // Name order: "ids" < "model.layers.0.mlp.experts.0..." < ...; two tensors per shard.
    EXPECT_EQ(ck.shard_of("ids"), shards[0]);
    EXPECT_EQ(ck.shard_of("model.layers.0.mlp.gate.weight"), shards[2]);
    EXPECT_TRUE(ck.file_of("ids").contains("model.layers.0.mlp.experts.0.up_proj.weight"));
    expect_same_tensors(ck, w);
  }
  // Through the index file, read rather than mapped.
  CheckpointOptions read;
  read.access = moekit::FileAccess::read;
  expect_same_tensors(SafetensorsCheckpoint(dir.file("model.safetensors.index.json"), read), w);
}

TEST(SafetensorsCheckpoint, LazyShardsOpenOnceAcrossThreads) {
  TempDir dir;
  const SafetensorsWriter w = model();
  moekit::write_sharded_checkpoint(dir.path().string(), w, 6);
  CheckpointOptions options;
  options.lazy = true;
  const SafetensorsCheckpoint ck(dir.path().string(), options);
  const std::vector<std::string> names = ck.names();
  std::vector<std::thread> threads;
  std::vector<int> ok(8, 0);
  for (int t = 0; t < 8; ++t)
    threads.emplace_back([&, t] {
      for (int round = 0; round < 20; ++round)
        for (const std::string& name : names) ok[static_cast<std::size_t>(t)] += ck.info(name).numel > 0;
    });
  for (auto& th : threads) th.join();
  for (int v : ok) EXPECT_EQ(v, 20 * static_cast<int>(names.size()));
}

TEST(SafetensorsCheckpoint, SingleFileWinsOverIndex) {
  TempDir dir;
  SafetensorsWriter one;
  one.add("only", std::vector<float>{1});
  one.write(dir.file("model.safetensors"));
  moekit::write_sharded_checkpoint(dir.path().string(), model(), 2);
  const SafetensorsCheckpoint ck(dir.path().string());
  EXPECT_FALSE(ck.is_sharded());
  EXPECT_EQ(ck.names(), std::vector<std::string>{"only"});
}

TEST(SafetensorsCheckpoint, MissingTensorListsNearestNames) {
  TempDir dir;
  moekit::write_sharded_checkpoint(dir.path().string(), model(), 2);
  const SafetensorsCheckpoint ck(dir.path().string());
  expect_contains(error_of([&] { ck.to_matrix("model.layers.0.mlp.experts.2.up_proj.weights"); }),
                  {"model.safetensors.index.json'",
                   "no tensor named 'model.layers.0.mlp.experts.2.up_proj.weights'",
                   "'model.layers.0.mlp.experts.2.up_proj.weight'"});
}

// A sharded checkpoint whose index the test then rewrites.
struct BrokenIndex : ::testing::Test {
  TempDir dir;
  std::string index_path;
  void SetUp() override {
    moekit::write_sharded_checkpoint(dir.path().string(), model(), 2);
    index_path = dir.file("model.safetensors.index.json");
  }
  std::string open_error(bool lazy = false) {
    CheckpointOptions options;
    options.lazy = lazy;
    return error_of([&] { SafetensorsCheckpoint ck(dir.path().string(), options); });
  }
};

TEST_F(BrokenIndex, MissingShard) {
  std::filesystem::remove(dir.file("model-00002-of-00002.safetensors"));
  for (const bool lazy : {false, true})
    expect_contains(open_error(lazy),
                    {"'" + index_path + "'", "shard 'model-00002-of-00002.safetensors'",
                     "listed for 'model.layers.0.mlp.experts.2.up_proj.weight' and 2 more tensors",
                     "is missing"});
}

TEST_F(BrokenIndex, TensorNotInItsShard) {
  write_text(index_path, R"({"weight_map": {"ids": "model-00001-of-00002.safetensors",
                               "model.layers.0.mlp.gate.weight": "model-00001-of-00002.safetensors"}})");
  const std::string msg = open_error();
  expect_contains(msg, {"'" + index_path + "'", "weight_map puts tensor 'model.layers.0.mlp.gate.weight'",
                        "in shard 'model-00001-of-00002.safetensors'", "no tensor named"});
  // Lazy: the shard opens (and the error appears) at the first access.
  CheckpointOptions options;
  options.lazy = true;
  const SafetensorsCheckpoint ck(dir.path().string(), options);
  expect_contains(error_of([&] { ck.to_matrix("ids"); }),
                  {"weight_map puts tensor 'model.layers.0.mlp.gate.weight'"});
}

TEST_F(BrokenIndex, PathTraversal) {
  for (const std::string shard : {"../model-00001-of-00002.safetensors", "/etc/passwd", "..", ".",
                                  "sub/model.safetensors", "..\\\\evil.safetensors", ""}) {
    SCOPED_TRACE(shard);
    write_text(index_path, R"({"weight_map": {"ids": ")" + shard + R"("}})");
    expect_contains(open_error(), {"weight_map entry 'ids' names shard", "not a plain file name"});
  }
}

TEST_F(BrokenIndex, MalformedIndex) {
  write_text(index_path, "{\"weight_map\": ");
  expect_contains(open_error(), {"'" + index_path + "'", "not valid JSON"});
  write_text(index_path, "[]");
  expect_contains(open_error(), {"expected a JSON object, found an array"});
  write_text(index_path, R"({"metadata": {}})");
  expect_contains(open_error(), {"missing \"weight_map\""});
  write_text(index_path, R"({"weight_map": ["a"]})");
  expect_contains(open_error(), {"\"weight_map\" is an array, expected an object"});
  write_text(index_path, R"({"weight_map": {"ids": 3}})");
  expect_contains(open_error(), {"weight_map entry 'ids' is 3, expected a shard file name"});
  write_text(index_path, R"({"metadata": 1, "weight_map": {}})");
  expect_contains(open_error(), {"\"metadata\" is 1, expected an object"});
  write_text(index_path, R"({"weight_map": {"a": "x.safetensors", "a": "y.safetensors"}})");
  expect_contains(open_error(), {"duplicate key \"a\""});
  write_text(index_path, "");
  expect_contains(open_error(), {"expected a JSON object, found null"});
}

TEST_F(BrokenIndex, BrokenShard) {
  write_text(dir.file("model-00001-of-00002.safetensors"), "garbage!!");
  expect_contains(open_error(), {"model-00001-of-00002.safetensors'", "header length"});
}

TEST(SafetensorsCheckpoint, PathErrors) {
  TempDir dir;
  expect_contains(error_of([&] { SafetensorsCheckpoint ck(dir.path().string()); }),
                  {"neither model.safetensors nor model.safetensors.index.json"});
  expect_contains(error_of([&] { SafetensorsCheckpoint ck(dir.file("absent")); }),
                  {"absent'", "no such file or directory"});
}

}  // namespace
