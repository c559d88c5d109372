// SPDX-License-Identifier: MIT
// Every golden file of the conformance directory read by the library's reader:
// it must open (mapped and read), agree with the test-only safetensors_lite
// reader on every name, dtype, shape, byte and metadata value, have the
// documented tensors ([T, d] input and output, I32 topk_ids of T rows), and
// survive a rewrite by SafetensorsWriter unchanged. Skipped when the
// directory is absent. The directory comes from the compile definition
// MOEKIT_CONFORMANCE_DIR, or the environment variable of that name (it wins).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <string>
#include <vector>

#include "moekit/io/safetensors.hpp"
#include "moekit/io/safetensors_checkpoint.hpp"
#include "moekit/io/safetensors_writer.hpp"
#include "safetensors_lite.hpp"

#ifndef MOEKIT_CONFORMANCE_DIR
#define MOEKIT_CONFORMANCE_DIR ""
#endif

namespace {

namespace fs = std::filesystem;
using moekit::Index;
using moekit::SafetensorsFile;

std::string conformance_dir() {
  if (const char* env = std::getenv("MOEKIT_CONFORMANCE_DIR"); env && *env) return env;
  return MOEKIT_CONFORMANCE_DIR;
}

std::vector<std::string> golden_files() {
  std::vector<std::string> out;
  std::error_code ec;
  const std::string dir = conformance_dir();
  if (dir.empty() || !fs::is_directory(dir, ec)) return out;
  for (auto it = fs::recursive_directory_iterator(dir, ec); !ec && it != fs::end(it); it.increment(ec))
    if (it->is_regular_file() && it->path().extension() == ".safetensors") out.push_back(it->path().string());
  std::sort(out.begin(), out.end());
  return out;
}

#define SKIP_WITHOUT_GOLDEN_FILES(files)                                                 \
  if ((files).empty())                                                                   \
  GTEST_SKIP() << "conformance directory '" << conformance_dir()                         \
               << "' not found or empty (set MOEKIT_CONFORMANCE_DIR)"

TEST(ConformanceFiles, EveryFileAgreesWithTheLiteReader) {
  const std::vector<std::string> files = golden_files();
  SKIP_WITHOUT_GOLDEN_FILES(files);
  for (const std::string& path : files) {
    SCOPED_TRACE(path);
    const auto lite = moekit_test::safetensors::File::load(path);
    for (const moekit::FileAccess access : {moekit::FileAccess::map, moekit::FileAccess::read}) {
      const SafetensorsFile f(path, access);
      ASSERT_EQ(f.names(), lite.names());
      EXPECT_EQ(f.metadata(), lite.metadata());
      EXPECT_EQ(f.data_offset(), lite.data_offset());
      for (const std::string& name : f.names()) {
        SCOPED_TRACE(name);
        const moekit::TensorInfo& t = f.info(name);
        const auto& lt = lite.info(name);
        EXPECT_EQ(moekit::safetensors_dtype_name(t.dtype), lt.dtype);
        EXPECT_EQ(t.shape, lt.shape);
        EXPECT_EQ(t.begin, lt.begin);
        EXPECT_EQ(t.end, lt.end);
        ASSERT_EQ(f.bytes(name).size, lt.nbytes());
        EXPECT_EQ(std::memcmp(f.bytes(name).data, lite.raw(name), lt.nbytes()), 0);
        const moekit::Matrix m = f.to_matrix(name);
        EXPECT_EQ(m.size(), t.numel);
        if (lt.dtype == "F32" || lt.dtype == "BF16") {
          EXPECT_EQ(m, lite.to_float_matrix(name));
        }
        if (lt.dtype == "I32") {
          EXPECT_EQ(f.to_ids(name), lite.to_int_matrix(name));
        }
      }
    }
  }
}

TEST(ConformanceFiles, DocumentedTensorsAndMetadata) {
  const std::vector<std::string> files = golden_files();
  SKIP_WITHOUT_GOLDEN_FILES(files);
  for (const std::string& path : files) {
    SCOPED_TRACE(path);
    const SafetensorsFile f(path);
    for (const char* key : {"family", "case", "seed", "tokens", "hidden_size", "num_experts"})
      EXPECT_NE(f.metadata_or(key, ""), "") << key;
    const Index tokens = std::stol(f.metadata("tokens"));
    const Index hidden = std::stol(f.metadata("hidden_size"));
    EXPECT_EQ(hidden, 64);
    for (const char* name : {"input", "output"}) {
      ASSERT_TRUE(f.contains(name)) << name;
      EXPECT_EQ(f.info(name).dtype, moekit::SafetensorsDtype::f32);
      EXPECT_EQ(f.info(name).shape, (std::vector<std::int64_t>{tokens, hidden}));
      EXPECT_EQ(f.data<float>(name).size(), tokens * hidden);
    }
    if (f.contains("topk_ids")) {
      EXPECT_EQ(f.info("topk_ids").dtype, moekit::SafetensorsDtype::i32);
      const moekit::IdMatrix ids = f.to_ids("topk_ids");
      EXPECT_EQ(ids.rows(), tokens);
      const Index experts = std::stol(f.metadata("num_experts"));
      EXPECT_GE(ids.minCoeff(), 0);
      EXPECT_LT(ids.maxCoeff(), experts + 64);  // null experts may follow the real ones
    }
    // The standard layout the README documents: header padded to 8, names sorted, data in order.
    EXPECT_EQ(f.data_offset() % 8, 0u);
    std::size_t offset = 0;
    for (const auto& kv : f.tensors()) {
      EXPECT_EQ(kv.second.begin, offset) << kv.first;
      offset = kv.second.end;
    }
    EXPECT_EQ(offset, f.file_size() - f.data_offset());
  }
}

TEST(ConformanceFiles, Bf16WeightsStayBf16) {
  const std::string path = conformance_dir() + "/mixtral/t7_e8_k2_bf16.safetensors";
  if (!fs::exists(path)) GTEST_SKIP() << path << " not found";
  const SafetensorsFile f(path);
  EXPECT_EQ(f.metadata("weights_dtype"), "bf16");
  const moekit::TensorInfo& w1 = f.info("experts.0.w1.weight");
  EXPECT_EQ(w1.dtype, moekit::SafetensorsDtype::bf16);
  const Index inter = std::stol(f.metadata("intermediate_size"));
  EXPECT_EQ(w1.shape, (std::vector<std::int64_t>{inter, 64}));
  const auto raw = f.data<moekit::bf16>("experts.0.w1.weight");
  const moekit::Matrix m = f.to_matrix("experts.0.w1.weight");
  ASSERT_EQ(raw.size(), m.size());
  for (Index i = 0; i < m.size(); ++i) ASSERT_EQ(static_cast<float>(raw[i]), m.data()[i]) << i;
}

TEST(ConformanceFiles, RewriteKeepsEverything) {
  const std::vector<std::string> files = golden_files();
  SKIP_WITHOUT_GOLDEN_FILES(files);
  for (const std::string& path : files) {
    SCOPED_TRACE(path);
    const SafetensorsFile f(path);
    moekit::SafetensorsWriter w;
    for (const auto& kv : f.tensors())
      w.add_raw(kv.first, kv.second.dtype, kv.second.shape, f.bytes(kv.first).data,
                f.bytes(kv.first).size);
    for (const auto& kv : f.metadata()) w.set_metadata(kv.first, kv.second);
    const SafetensorsFile g = SafetensorsFile::from_bytes(w.to_bytes());
    ASSERT_EQ(g.names(), f.names());
    EXPECT_EQ(g.metadata(), f.metadata());
    // Same layout rules, so the same data section, byte for byte.
    ASSERT_EQ(g.file_size() - g.data_offset(), f.file_size() - f.data_offset());
    for (const auto& kv : f.tensors()) {
      EXPECT_EQ(g.info(kv.first).begin, kv.second.begin);
      EXPECT_EQ(std::memcmp(g.bytes(kv.first).data, f.bytes(kv.first).data, kv.second.nbytes()), 0);
    }
  }
}

TEST(ConformanceFiles, OpenAsCheckpoint) {
  const std::vector<std::string> files = golden_files();
  SKIP_WITHOUT_GOLDEN_FILES(files);
  const moekit::SafetensorsCheckpoint ck(files.front());
  EXPECT_FALSE(ck.is_sharded());
  EXPECT_TRUE(ck.contains("input"));
  EXPECT_EQ(ck.metadata(), SafetensorsFile(files.front()).metadata());
}

}  // namespace
