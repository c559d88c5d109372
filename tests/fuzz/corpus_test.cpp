// SPDX-License-Identifier: MIT
// The fuzz corpora as regression suites, built with any compiler: every file
// under tests/fuzz/corpus/safetensors goes through the safetensors target's
// body (fuzz_safetensors_body.hpp), every file under tests/fuzz/corpus/trace
// through the trace-file target's (fuzz_trace_file_body.hpp); each must
// report no broken invariant and let no exception other than moekit::Error
// escape. Files named valid_* must parse; files named invalid_* must be
// rejected; others (inputs the fuzzer found, kept as regressions) may go
// either way.
#include <gtest/gtest.h>

#include <algorithm>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <string>
#include <vector>

#include "fuzz_safetensors_body.hpp"
#include "fuzz_trace_file_body.hpp"

#ifndef MOEKIT_FUZZ_CORPUS_DIR
#error "MOEKIT_FUZZ_CORPUS_DIR must name tests/fuzz/corpus"
#endif

namespace {

namespace fs = std::filesystem;

std::vector<fs::path> corpus_files(const std::string& dir) {
  std::vector<fs::path> out;
  for (const auto& entry : fs::directory_iterator(dir))
    if (entry.is_regular_file()) out.push_back(entry.path());
  std::sort(out.begin(), out.end());
  return out;
}

std::vector<std::uint8_t> read_bytes(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in),
                                   std::istreambuf_iterator<char>());
}

// Runs every file of one corpus through `body` (the fuzz target's checks) and
// `parses` (does the reader accept it).
template <class Body, class Parses>
void check_corpus(const std::string& dir, Body body, Parses parses) {
  const std::vector<fs::path> files = corpus_files(dir);
  ASSERT_GE(files.size(), 10u) << "corpus " << dir << " is missing or nearly empty";
  std::size_t valid = 0, invalid = 0;
  for (const fs::path& path : files) {
    SCOPED_TRACE(path.string());
    const std::vector<std::uint8_t> bytes = read_bytes(path);
    std::string problem;
    EXPECT_NO_THROW(problem = body(bytes.data(), bytes.size()));
    EXPECT_EQ(problem, "");
    const std::string name = path.filename().string();
    bool ok = true;
    try {
      parses(bytes);
    } catch (const moekit::Error&) {
      ok = false;
    }
    if (name.rfind("valid_", 0) == 0) {
      EXPECT_TRUE(ok) << "a valid_* seed was rejected";
      ++valid;
    }
    if (name.rfind("invalid_", 0) == 0) {
      EXPECT_FALSE(ok) << "an invalid_* seed was accepted";
      ++invalid;
    }
  }
  EXPECT_GT(valid, 0u);
  EXPECT_GT(invalid, 0u);
}

TEST(FuzzCorpus, EverySafetensorsFileKeepsTheInvariants) {
  check_corpus(std::string(MOEKIT_FUZZ_CORPUS_DIR) + "/safetensors",
               moekit_fuzz::run_safetensors_input, [](const std::vector<std::uint8_t>& b) {
                 moekit::SafetensorsFile::from_memory(b.data(), b.size());
               });
}

TEST(FuzzCorpus, EveryTraceFileKeepsTheInvariants) {
  check_corpus(std::string(MOEKIT_FUZZ_CORPUS_DIR) + "/trace", moekit_fuzz::run_trace_input,
               [](const std::vector<std::uint8_t>& b) {
                 moekit::load_trace_from_memory(b.data(), b.size());
               });
}

}  // namespace
