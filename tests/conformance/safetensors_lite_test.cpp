// SPDX-License-Identifier: MIT
// Tests of the test-only safetensors reader (tests/support/safetensors_lite.hpp):
// a round trip of a valid file, and malformed files written as temporary files,
// every one of which must throw std::runtime_error (never crash, never read
// out of bounds).
#include <gtest/gtest.h>

#include <cstdint>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "safetensors_lite.hpp"

namespace {

namespace fs = std::filesystem;
namespace st = moekit_test::safetensors;
using Bytes = std::vector<std::uint8_t>;
using nlohmann::json;

/// A temporary file removed at scope exit.
class TempFile {
 public:
  explicit TempFile(const Bytes& bytes) {
    static int counter = 0;
    const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
    path_ = fs::temp_directory_path() /
            ("moekit_st_" + std::string(info ? info->name() : "x") + "_" + std::to_string(counter++) + "_" +
             std::to_string(reinterpret_cast<std::uintptr_t>(this)) + ".safetensors");
    std::ofstream out(path_, std::ios::binary | std::ios::trunc);
    out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
    EXPECT_TRUE(out.good()) << "cannot write " << path_;
  }
  ~TempFile() {
    std::error_code ec;
    fs::remove(path_, ec);
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;
  std::string path() const { return path_.string(); }

 private:
  fs::path path_;
};

void put_u64(Bytes& b, std::uint64_t v) {
  for (int i = 0; i < 8; ++i) b.push_back(static_cast<std::uint8_t>(v >> (8 * i)));
}

/// A file image from a header text (padded with spaces to a multiple of 8) and a data section.
Bytes image(const std::string& header_text, const Bytes& data, bool pad = true) {
  std::string h = header_text;
  if (pad)
    while (h.size() % 8) h += ' ';
  Bytes b;
  put_u64(b, h.size());
  b.insert(b.end(), h.begin(), h.end());
  b.insert(b.end(), data.begin(), data.end());
  return b;
}

void append_f32(Bytes& b, float v) {
  std::uint8_t raw[4];
  std::memcpy(raw, &v, 4);
  b.insert(b.end(), raw, raw + 4);
}
void append_i32(Bytes& b, std::int32_t v) {
  std::uint8_t raw[4];
  std::memcpy(raw, &v, 4);
  b.insert(b.end(), raw, raw + 4);
}
void append_bf16(Bytes& b, float v) {  // v must be exactly representable in bf16
  std::uint32_t bits = 0;
  std::memcpy(&bits, &v, 4);
  b.push_back(static_cast<std::uint8_t>(bits >> 16));
  b.push_back(static_cast<std::uint8_t>(bits >> 24));
}

json entry(const std::string& dtype, std::vector<std::int64_t> shape, std::uint64_t begin,
           std::uint64_t end) {
  return json{{"dtype", dtype}, {"shape", shape}, {"data_offsets", {begin, end}}};
}

/// A valid file: F32 "a" [2, 3], BF16 "b" [3], I32 "c" [2, 2], F32 "d" [2, 2, 2], metadata.
Bytes valid_image() {
  Bytes data;
  for (int i = 0; i < 6; ++i) append_f32(data, 0.5f * static_cast<float>(i) - 1.0f);  // [0, 24)
  append_bf16(data, 1.5f);                                                            // [24, 30)
  append_bf16(data, -2.0f);
  append_bf16(data, 0.15625f);
  for (int i = 0; i < 4; ++i) append_i32(data, i * 7 - 3);  // [30, 46)
  for (int i = 0; i < 8; ++i) append_f32(data, static_cast<float>(i));  // [46, 78)
  json h;
  h["__metadata__"] = {{"family", "test"}, {"norm_topk_prob", "True"}};
  h["a"] = entry("F32", {2, 3}, 0, 24);
  h["b"] = entry("BF16", {3}, 24, 30);
  h["c"] = entry("I32", {2, 2}, 30, 46);
  h["d"] = entry("F32", {2, 2, 2}, 46, 78);
  return image(h.dump(), data);
}

/// Expects File::load on these bytes to throw std::runtime_error whose message contains `needle`.
void expect_rejected(const Bytes& bytes, const std::string& needle) {
  TempFile tmp(bytes);
  try {
    (void)st::File::load(tmp.path());
    ADD_FAILURE() << "expected std::runtime_error containing '" << needle << "'";
  } catch (const std::runtime_error& e) {
    EXPECT_NE(std::string(e.what()).find(needle), std::string::npos)
        << "message '" << e.what() << "' does not contain '" << needle << "'";
  } catch (...) {
    ADD_FAILURE() << "threw something other than std::runtime_error";
  }
}

TEST(SafetensorsLite, ReadsValidFile) {
  TempFile tmp(valid_image());
  const st::File f = st::File::load(tmp.path());
  EXPECT_EQ(f.names(), (std::vector<std::string>{"a", "b", "c", "d"}));
  EXPECT_EQ(f.metadata().size(), 2u);
  EXPECT_EQ(f.meta("family"), "test");
  EXPECT_EQ(f.meta_or("missing", "dflt"), "dflt");
  EXPECT_EQ(f.data_offset() % 8, 0u);

  EXPECT_EQ(f.info("a").dtype, "F32");
  EXPECT_EQ(f.info("a").shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(f.info("a").nbytes(), 24u);
  const moekit::Matrix a = f.to_float_matrix("a");
  ASSERT_EQ(a.rows(), 2);
  ASSERT_EQ(a.cols(), 3);
  EXPECT_EQ(a(0, 0), -1.0f);
  EXPECT_EQ(a(1, 2), 1.5f);

  const moekit::Matrix b = f.to_float_matrix("b");
  ASSERT_EQ(b.rows(), 1);
  ASSERT_EQ(b.cols(), 3);
  EXPECT_EQ(b(0, 0), 1.5f);
  EXPECT_EQ(b(0, 1), -2.0f);
  EXPECT_EQ(b(0, 2), 0.15625f);
  EXPECT_EQ(f.to_float_vector("b").size(), 3);

  const moekit::IdMatrix c = f.to_int_matrix("c");
  ASSERT_EQ(c.rows(), 2);
  ASSERT_EQ(c.cols(), 2);
  EXPECT_EQ(c(0, 0), -3);
  EXPECT_EQ(c(1, 1), 18);

  const moekit::Matrix d = f.to_float_matrix("d");  // [2, 2, 2] -> [4, 2]
  ASSERT_EQ(d.rows(), 4);
  ASSERT_EQ(d.cols(), 2);
  EXPECT_EQ(d(3, 1), 7.0f);
}

TEST(SafetensorsLite, BF16UpcastIsExactTopBits) {
  // 0x3F81 -> 0x3F810000 = 1.0078125; 0xC2F7 -> -123.5; 0x7F80 -> +inf.
  Bytes data = {0x81, 0x3F, 0xF7, 0xC2, 0x80, 0x7F};
  json h;
  h["w"] = entry("BF16", {3}, 0, 6);
  TempFile tmp(image(h.dump(), data));
  const moekit::Matrix w = st::File::load(tmp.path()).to_float_matrix("w");
  EXPECT_EQ(w(0, 0), 1.0078125f);
  EXPECT_EQ(w(0, 1), -123.5f);
  EXPECT_EQ(w(0, 2), std::numeric_limits<float>::infinity());
}

TEST(SafetensorsLite, WrongConversionsAndNamesThrow) {
  TempFile tmp(valid_image());
  const st::File f = st::File::load(tmp.path());
  EXPECT_THROW(f.to_float_matrix("c"), std::runtime_error);  // I32 as float
  EXPECT_THROW(f.to_int_matrix("a"), std::runtime_error);    // F32 as int
  EXPECT_THROW(f.info("nope"), std::runtime_error);
  EXPECT_THROW(f.to_float_matrix("nope"), std::runtime_error);
  EXPECT_THROW(f.meta("nope"), std::runtime_error);
}

TEST(SafetensorsLite, MissingFileThrows) {
  EXPECT_THROW(st::File::load((fs::temp_directory_path() / "moekit_no_such_file.safetensors").string()),
               std::runtime_error);
}

TEST(SafetensorsLite, RejectsTruncatedFile) {
  expect_rejected({}, "truncated file");
  expect_rejected({0x10, 0, 0, 0}, "truncated file");
  const Bytes good = valid_image();
  // Cut inside the header.
  expect_rejected(Bytes(good.begin(), good.begin() + 20), "runs past the end");
  // Cut inside the data section.
  expect_rejected(Bytes(good.begin(), good.end() - 1), "outside the data section");
}

TEST(SafetensorsLite, EveryTruncationThrowsWithoutCrashing) {
  const Bytes good = valid_image();
  for (std::size_t n = 0; n < good.size(); ++n) {
    const Bytes cut(good.begin(), good.begin() + static_cast<std::ptrdiff_t>(n));
    EXPECT_THROW(st::File::parse(cut), std::runtime_error) << "length " << n;
  }
  EXPECT_NO_THROW(st::File::parse(good));
}

TEST(SafetensorsLite, RejectsHeaderLengthBeyondFile) {
  Bytes b;
  put_u64(b, 1000);
  const std::string h = R"({"__metadata__":{}})";
  b.insert(b.end(), h.begin(), h.end());
  expect_rejected(b, "runs past the end");

  Bytes huge;
  put_u64(huge, std::numeric_limits<std::uint64_t>::max());
  huge.insert(huge.end(), h.begin(), h.end());
  expect_rejected(huge, "runs past the end");

  Bytes zero;
  put_u64(zero, 0);
  expect_rejected(zero, "too small");
}

TEST(SafetensorsLite, RejectsOffsetsOutOfRange) {
  Bytes data(16, 0);
  json h;
  h["a"] = entry("F32", {4}, 8, 24);  // data section has 16 bytes
  expect_rejected(image(h.dump(), data), "outside the data section");

  json h2;
  h2["a"] = entry("F32", {0}, 100, 100);  // empty tensor, still out of range
  expect_rejected(image(h2.dump(), data), "outside the data section");

  json h3;
  h3["a"] = entry("F32", {1}, std::numeric_limits<std::uint64_t>::max() - 2,
                  std::numeric_limits<std::uint64_t>::max() + 2ull);  // wraps to 1 -> begin after end
  expect_rejected(image(h3.dump(), data), "begin after end");

  json h4;
  h4["a"] = entry("F32", {1}, 8, 4);
  expect_rejected(image(h4.dump(), data), "begin after end");
}

TEST(SafetensorsLite, RejectsSizeMismatch) {
  Bytes data(16, 0);
  json h;
  h["a"] = entry("F32", {2, 2}, 0, 12);
  expect_rejected(image(h.dump(), data), "needs 16");
  json h2;
  h2["a"] = entry("BF16", {2, 2}, 0, 16);
  expect_rejected(image(h2.dump(), data), "needs 8");
}

TEST(SafetensorsLite, RejectsShapeOverflow) {
  Bytes data(16, 0);
  json h;
  h["a"] = entry("F32", {1ll << 40, 1ll << 40}, 0, 16);
  expect_rejected(image(h.dump(), data), "too large");
  json h2;
  h2["a"] = entry("F64", {1ll << 62}, 0, 16);
  expect_rejected(image(h2.dump(), data), "overflows");
  json h3;  // zero elements, but the leading dims alone overflow a row count
  h3["a"] = entry("F32", {1ll << 40, 1ll << 40, 0}, 0, 0);
  expect_rejected(image(h3.dump(), data), "too large");
}

TEST(SafetensorsLite, RejectsOverlap) {
  Bytes data(16, 0);
  json h;
  h["a"] = entry("F32", {2}, 0, 8);
  h["b"] = entry("F32", {2}, 4, 12);
  expect_rejected(image(h.dump(), data), "overlap");
}

TEST(SafetensorsLite, RejectsMalformedHeader) {
  const Bytes data(8, 0);
  expect_rejected(image("{\"a\": ", data), "not valid JSON");
  expect_rejected(image("[1, 2, 3]", data), "not a JSON object");
  expect_rejected(image(R"({"__metadata__": {"n": 3}})", data), "is not a string");
  expect_rejected(image(R"({"__metadata__": []})", data), "__metadata__ is not a JSON object");
  expect_rejected(image(R"({"a": 5})", data), "entry is not a JSON object");
  expect_rejected(image(R"({"a": {"shape": [2], "data_offsets": [0, 8]}})", data), "dtype");
  expect_rejected(image(R"({"a": {"dtype": "Q7", "shape": [2], "data_offsets": [0, 8]}})", data),
                  "unknown dtype");
  expect_rejected(image(R"({"a": {"dtype": "F32", "data_offsets": [0, 8]}})", data), "shape");
  expect_rejected(image(R"({"a": {"dtype": "F32", "shape": [-2], "data_offsets": [0, 8]}})", data),
                  "negative dimension");
  expect_rejected(image(R"({"a": {"dtype": "F32", "shape": [2.5], "data_offsets": [0, 8]}})", data),
                  "non-integer");
  expect_rejected(image(R"({"a": {"dtype": "F32", "shape": [2]}})", data), "data_offsets");
  expect_rejected(image(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [0]}})", data),
                  "data_offsets");
  expect_rejected(image(R"({"a": {"dtype": "F32", "shape": [2], "data_offsets": [-8, 0]}})", data),
                  "data_offsets");
  // A header whose bytes are not UTF-8 JSON.
  std::string junk(16, '\xff');
  expect_rejected(image(junk, data), "not valid JSON");
}

TEST(SafetensorsLite, RandomByteCorruptionNeverCrashes) {
  const Bytes good = valid_image();
  std::mt19937 rng(1234);
  for (int iter = 0; iter < 2000; ++iter) {
    Bytes b = good;
    const int flips = 1 + static_cast<int>(rng() % 4);
    for (int i = 0; i < flips; ++i) {
      // Mostly the length field and the header, where structure lives.
      const std::size_t limit = std::min<std::size_t>(b.size(), 8 + 300);
      b[rng() % limit] = static_cast<std::uint8_t>(rng());
    }
    try {
      const st::File f = st::File::parse(b);
      for (const auto& n : f.names()) {  // whatever parsed must be readable in bounds
        const auto& t = f.info(n);
        if (t.dtype == "F32" || t.dtype == "BF16") (void)f.to_float_matrix(n);
        if (t.dtype == "I32") (void)f.to_int_matrix(n);
      }
    } catch (const std::runtime_error&) {
      // expected for most corruptions
    }
  }
}

}  // namespace
