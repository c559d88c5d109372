// SPDX-License-Identifier: MIT
// Helpers of the io tests: a temporary directory removed after each test,
// hand-made safetensors images (a header string + data bytes, no checks), and
// an expectation that every way of opening a file rejects it with a
// moekit::Error whose message holds given pieces.
#pragma once

#include <gtest/gtest.h>

#include <atomic>
#include <cctype>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <functional>
#include <initializer_list>
#include <iterator>
#include <string>
#include <vector>

#include <unistd.h>

#include "moekit/io/safetensors.hpp"

namespace moekit_io_test {

namespace fs = std::filesystem;

/// A fresh directory under the system temp dir, removed (with its contents) on destruction.
class TempDir {
 public:
  TempDir() {
    static std::atomic<int> counter{0};
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    std::string tag = info ? std::string(info->test_suite_name()) + "_" + info->name() : "t";
    for (char& c : tag)
      if (!std::isalnum(static_cast<unsigned char>(c))) c = '_';
    path_ = fs::temp_directory_path() /
            ("moekit_io_" + std::to_string(::getpid()) + "_" + std::to_string(counter++) + "_" + tag);
    fs::remove_all(path_);
    fs::create_directories(path_);
  }
  ~TempDir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
  }
  TempDir(const TempDir&) = delete;
  TempDir& operator=(const TempDir&) = delete;

  const fs::path& path() const { return path_; }
  std::string file(const std::string& name) const { return (path_ / name).string(); }

 private:
  fs::path path_;
};

inline void write_file(const std::string& path, const std::vector<std::uint8_t>& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  ASSERT_TRUE(out.good()) << path;
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
  ASSERT_TRUE(out.good()) << path;
}

inline void write_text(const std::string& path, const std::string& text) {
  write_file(path, std::vector<std::uint8_t>(text.begin(), text.end()));
}

inline std::vector<std::uint8_t> read_file(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return std::vector<std::uint8_t>(std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>());
}

/// A safetensors image: u64 LE `header_length` (default header.size()), the header, the data.
inline std::vector<std::uint8_t> image(const std::string& header, const std::vector<std::uint8_t>& data = {},
                                       std::uint64_t header_length = ~0ull) {
  if (header_length == ~0ull) header_length = header.size();
  std::vector<std::uint8_t> out;
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::uint8_t>(header_length >> (8 * i)));
  out.insert(out.end(), header.begin(), header.end());
  out.insert(out.end(), data.begin(), data.end());
  return out;
}

/// `n` data bytes 0, 1, 2, ...
inline std::vector<std::uint8_t> ramp(std::size_t n) {
  std::vector<std::uint8_t> v(n);
  for (std::size_t i = 0; i < n; ++i) v[i] = static_cast<std::uint8_t>(i * 7 + 1);
  return v;
}

/// The message of the moekit::Error that `f` throws ("" and a test failure if none).
inline std::string error_of(const std::function<void()>& f) {
  try {
    f();
  } catch (const moekit::Error& e) {
    return e.what();
  } catch (const std::exception& e) {
    ADD_FAILURE() << "expected moekit::Error, got another exception: " << e.what();
    return "";
  }
  ADD_FAILURE() << "expected moekit::Error, nothing was thrown";
  return "";
}

inline void expect_contains(const std::string& message, std::initializer_list<std::string> pieces) {
  for (const std::string& p : pieces)
    EXPECT_NE(message.find(p), std::string::npos) << "message: " << message << "\nmissing: " << p;
}

/// Writes `bytes` to a temporary file and expects the mapped, read and in-memory readers
/// all to throw a moekit::Error naming the file and holding every piece.
inline void expect_rejected(const std::vector<std::uint8_t>& bytes,
                            std::initializer_list<std::string> pieces) {
  TempDir dir;
  const std::string path = dir.file("bad.safetensors");
  write_file(path, bytes);
  for (const moekit::FileAccess access : {moekit::FileAccess::map, moekit::FileAccess::read}) {
    const std::string msg = error_of([&] { moekit::SafetensorsFile f(path, access); });
    expect_contains(msg, pieces);
    expect_contains(msg, {"'" + path + "'"});
  }
  const std::string msg =
      error_of([&] { moekit::SafetensorsFile::from_memory(bytes.data(), bytes.size(), "<bytes>"); });
  expect_contains(msg, pieces);
  expect_contains(msg, {"'<bytes>'"});
}

}  // namespace moekit_io_test
