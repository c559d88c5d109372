// SPDX-License-Identifier: MIT
// The fuzz corpus as a regression suite, built with any compiler: every file
// under tests/fuzz/corpus/safetensors goes through the fuzz target's body
// (fuzz_safetensors_body.hpp), which must report no broken invariant and let
// no exception other than moekit::Error escape. Files named valid_* must
// parse; files named invalid_* must be rejected; others (inputs the fuzzer
// found, kept as regressions) may go either way.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_safetensors_body.hpp"

#ifndef MOEKIT_FUZZ_CORPUS_DIR
#error "MOEKIT_FUZZ_CORPUS_DIR must name tests/fuzz/corpus/safetensors"
#endif

namespace {

namespace fs = std::filesystem;

std::vector<fs::path> corpus_files() {
  std::vector<fs::path> out;
  for (const auto& entry : fs::directory_iterator(MOEKIT_FUZZ_CORPUS_DIR))
    if (entry.is_regular_file()) out.push_back(entry.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

TEST(FuzzCorpus, EveryFileKeepsTheInvariants) {
  const std::vector<fs::path> files = corpus_files();
  ASSERT_GE(files.size(), 10u) << "corpus " << MOEKIT_FUZZ_CORPUS_DIR << " is missing or nearly empty";
  std::size_t valid = 0, invalid = 0;
  for (const fs::path& path : files) {
    SCOPED_TRACE(path.string());
    const std::vector<std::uint8_t> bytes = read_bytes(path);
    std::string problem;
    EXPECT_NO_THROW(problem = moekit_fuzz::run_safetensors_input(bytes.data(), bytes.size()));
    EXPECT_EQ(problem, "");
    const std::string name = path.filename().string();
    bool parses = true;
    try {
      moekit::SafetensorsFile::from_memory(bytes.data(), bytes.size());
    } catch (const moekit::Error&) {
      parses = false;
    }
    if (name.rfind("valid_", 0) == 0) {
      EXPECT_TRUE(parses) << "a valid_* seed was rejected";
      ++valid;
    }
    if (name.rfind("invalid_", 0) == 0) {
      EXPECT_FALSE(parses) << "an invalid_* seed was accepted";
      ++invalid;
    }
  }
  EXPECT_GT(valid, 0u);
  EXPECT_GT(invalid, 0u);
}

}  // namespace
