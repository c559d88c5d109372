// SPDX-License-Identifier: MIT
// Malformed safetensors files, each written to a temporary file and opened
// mapped, read and from memory: every one must throw moekit::Error naming
// the file, the tensor where there is one, and what was expected and found;
// none may crash or read out of bounds (the ASan build runs these too).
#include <gtest/gtest.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "io_test_util.hpp"
#include "moekit/io/safetensors.hpp"
#include "moekit/io/safetensors_writer.hpp"

namespace {

using moekit::SafetensorsFile;
using moekit::SafetensorsWriter;
using moekit_io_test::expect_rejected;
using moekit_io_test::image;
using moekit_io_test::ramp;

// One F32 tensor "t" with the given entry fields, and `data_bytes` bytes of data.
std::vector<std::uint8_t> one(const std::string& fields, std::size_t data_bytes = 16) {
  return image("{\"t\":{" + fields + "}}", ramp(data_bytes));
}

TEST(SafetensorsErrors, EveryTruncationOfAValidFile) {
  SafetensorsWriter w;
  w.add("alpha", std::vector<float>{1, 2, 3});
  w.add("beta", std::vector<std::int32_t>{4, 5});
  w.set_metadata("k", "v");
  const std::vector<std::uint8_t> full = w.to_bytes();
  ASSERT_NO_THROW(SafetensorsFile::from_bytes(full));
  moekit_io_test::TempDir dir;
  const std::string path = dir.file("cut.safetensors");
  for (std::size_t n = 0; n < full.size(); ++n) {
    SCOPED_TRACE("prefix of " + std::to_string(n) + " bytes");
    const std::vector<std::uint8_t> cut(full.begin(), full.begin() + static_cast<std::ptrdiff_t>(n));
    moekit_io_test::write_file(path, cut);
    for (const moekit::FileAccess access : {moekit::FileAccess::map, moekit::FileAccess::read}) {
      const std::string msg = moekit_io_test::error_of([&] { SafetensorsFile f(path, access); });
      moekit_io_test::expect_contains(msg, {"'" + path + "'"});
    }
    const std::string msg =
        moekit_io_test::error_of([&] { SafetensorsFile::from_memory(cut.data(), cut.size()); });
    if (n < 8) {
      moekit_io_test::expect_contains(msg, {"at least 8"});
    } else if (n < 8 + w.header().size()) {
      moekit_io_test::expect_contains(msg, {"header length", "larger than the"});
    } else {
      moekit_io_test::expect_contains(msg, {"tensor '", "end past the data section"});
    }
  }
}

TEST(SafetensorsErrors, HeaderLengthLargerThanFile) {
  expect_rejected(image("{}", {}, 3), {"header length 3 is larger than the 2 bytes"});
  expect_rejected(image("{}", {}, 1000), {"header length 1000", "larger than the 2 bytes"});
}

TEST(SafetensorsErrors, HugeHeaderLength) {
  expect_rejected(image("{}", {}, 1ull << 63), {"header length 9223372036854775808"});
  expect_rejected(image("{}", {}, ~0ull - 1), {"header length 18446744073709551614"});
}

TEST(SafetensorsErrors, HeaderLengthOverTheLimit) {
  // A sparse file a little over the limit: the header length fits the file but not the limit.
  moekit_io_test::TempDir dir;
  const std::string path = dir.file("big.safetensors");
  const std::uint64_t n = moekit::kSafetensorsMaxHeaderBytes + 1;
  moekit_io_test::write_file(path, image("", {}, n));
  std::filesystem::resize_file(path, 8 + n);
  const std::string msg = moekit_io_test::error_of([&] { SafetensorsFile f(path); });
  moekit_io_test::expect_contains(msg, {"header length 100000001 exceeds the limit of 100000000"});
}

TEST(SafetensorsErrors, HeaderIsNotJson) {
  expect_rejected(image("not json"), {"header: not valid JSON"});
  expect_rejected(image(""), {"header: not valid JSON"});
  expect_rejected(image("{\"a\":"), {"header: not valid JSON"});
  expect_rejected(image("{} trailing"), {"header: not valid JSON"});
  expect_rejected(image("{\"\xff\":1}"), {"header: not valid JSON"});  // not UTF-8
  expect_rejected(image(std::string("{}\0", 3)), {"header: not valid JSON: NUL byte at offset 2"});
  expect_rejected(image(std::string("{}\0{\"a\":1}", 10)), {"NUL byte at offset 2"});
}

TEST(SafetensorsErrors, HeaderIsNotAnObject) {
  expect_rejected(image("[]"), {"header: expected a JSON object, found an array"});
  expect_rejected(image("42"), {"expected a JSON object, found 42"});
  expect_rejected(image("\"x\""), {"found the string \"x\""});
}

TEST(SafetensorsErrors, DeepNestingAndDuplicateKeys) {
  expect_rejected(image(std::string(100000, '[') + std::string(100000, ']')),
                  {"nests deeper than 16 levels"});
  expect_rejected(image("{\"m\":" + std::string(20, '[') + std::string(20, ']') + "}"),
                  {"nests deeper than 16 levels"});
  expect_rejected(image(R"({"t":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},)"
                        R"("t":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}})",
                        ramp(2)),
                  {"duplicate key \"t\""});
  expect_rejected(one(R"("dtype":"U8","dtype":"F32","shape":[1],"data_offsets":[0,1])"),
                  {"duplicate key \"dtype\""});
}

TEST(SafetensorsErrors, EntryIsNotAnObject) {
  expect_rejected(image(R"({"t":[1,2]})"), {"tensor 't'", "expected an object", "found an array"});
}

TEST(SafetensorsErrors, Dtype) {
  expect_rejected(one(R"("dtype":"F33","shape":[4],"data_offsets":[0,16])"),
                  {"tensor 't'", "unknown dtype \"F33\"", "expected one of BOOL", "BF16", "F64"});
  expect_rejected(one(R"("dtype":"f32","shape":[4],"data_offsets":[0,16])"),
                  {"unknown dtype \"f32\""});
  expect_rejected(one(R"("dtype":4,"shape":[4],"data_offsets":[0,16])"),
                  {"tensor 't'", "\"dtype\" is 4, expected a string"});
  expect_rejected(one(R"("shape":[4],"data_offsets":[0,16])"), {"tensor 't'", "missing \"dtype\""});
}

TEST(SafetensorsErrors, Shape) {
  expect_rejected(one(R"("dtype":"F32","shape":[2,-2],"data_offsets":[0,16])"),
                  {"tensor 't'", "shape dimension 1 is negative (-2)"});
  expect_rejected(one(R"("dtype":"F32","shape":[2.5],"data_offsets":[0,16])"),
                  {"tensor 't'", "shape dimension 0 is 2.5, expected a non-negative integer"});
  expect_rejected(one(R"("dtype":"F32","shape":["4"],"data_offsets":[0,16])"),
                  {"shape dimension 0 is the string \"4\""});
  expect_rejected(one(R"("dtype":"F32","shape":[[4]],"data_offsets":[0,16])"),
                  {"shape dimension 0 is an array"});
  expect_rejected(one(R"("dtype":"F32","shape":4,"data_offsets":[0,16])"),
                  {"\"shape\" is 4, expected an array"});
  expect_rejected(one(R"("dtype":"F32","data_offsets":[0,16])"), {"missing \"shape\""});
  expect_rejected(one(R"("dtype":"F32","shape":[18446744073709551615],"data_offsets":[0,16])"),
                  {"shape dimension 0 is 18446744073709551615, larger than the largest index"});
  expect_rejected(one(R"("dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,16])"),
                  {"tensor 't'", "element count of shape [4294967296, 4294967296] overflows"});
  // A zero dimension makes the tensor empty, but the other dimensions must still be sane.
  expect_rejected(one(R"("dtype":"F32","shape":[0,4294967296,4294967296],"data_offsets":[0,0])"),
                  {"overflows"});
  // Element count fits, byte size does not.
  expect_rejected(one(R"("dtype":"F64","shape":[4611686018427387904],"data_offsets":[0,16])"),
                  {"tensor 't'", "the byte size of shape [4611686018427387904] x 8 bytes overflows"});
}

TEST(SafetensorsErrors, ShapeAndSizeMismatch) {
  expect_rejected(one(R"("dtype":"F32","shape":[2,2],"data_offsets":[0,12])"),
                  {"tensor 't'", "data_offsets [0, 12] span 12 bytes, expected 16",
                   "F32 x shape [2, 2] = 4 elements of 4 bytes"});
  expect_rejected(one(R"("dtype":"BF16","shape":[3],"data_offsets":[0,8])"),
                  {"span 8 bytes, expected 6"});
}

TEST(SafetensorsErrors, OffsetsOutOfRange) {
  expect_rejected(one(R"("dtype":"F32","shape":[4],"data_offsets":[4,20])"),
                  {"tensor 't'", "data_offsets [4, 20] end past the data section, which is 16 bytes long"});
  expect_rejected(one(R"("dtype":"F32","shape":[0],"data_offsets":[17,17])"),
                  {"end past the data section"});
  expect_rejected(
      one(R"("dtype":"U8","shape":[1],"data_offsets":[18446744073709551615,18446744073709551615])"),
      {"end past the data section"});
}

TEST(SafetensorsErrors, BeginAfterEnd) {
  expect_rejected(one(R"("dtype":"U8","shape":[0],"data_offsets":[8,4])"),
                  {"tensor 't'", "data_offsets [8, 4]: begin is after end"});
}

TEST(SafetensorsErrors, OffsetsNotAPair) {
  for (const char* offsets : {"[0]", "[0,4,8]", "[-1,3]", "[0,4.0]", "\"0,4\"", "[]", "null"})
    expect_rejected(one(std::string(R"("dtype":"U8","shape":[4],"data_offsets":)") + offsets),
                    {"tensor 't'", "\"data_offsets\" is", "expected [begin, end]"});
  expect_rejected(one(R"("dtype":"U8","shape":[4])"), {"missing \"data_offsets\""});
}

TEST(SafetensorsErrors, OverlappingTensors) {
  expect_rejected(image(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
                        R"("b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}})",
                        ramp(16)),
                  {"tensors 'a' (data_offsets [0, 8]) and 'b' (data_offsets [4, 12]) overlap"});
  // One inside another, not adjacent in name order.
  expect_rejected(image(R"({"a":{"dtype":"U8","shape":[16],"data_offsets":[0,16]},)"
                        R"("m":{"dtype":"U8","shape":[2],"data_offsets":[20,22]},)"
                        R"("z":{"dtype":"U8","shape":[2],"data_offsets":[6,8]}})",
                        ramp(24)),
                  {"'a'", "'z'", "overlap"});
  // Identical ranges.
  expect_rejected(image(R"({"a":{"dtype":"U8","shape":[2],"data_offsets":[0,2]},)"
                        R"("b":{"dtype":"I16","shape":[1],"data_offsets":[0,2]}})",
                        ramp(2)),
                  {"overlap"});
  // Empty tensors share offsets freely.
  EXPECT_NO_THROW(SafetensorsFile::from_bytes(
      image(R"({"a":{"dtype":"U8","shape":[0],"data_offsets":[1,1]},)"
            R"("b":{"dtype":"U8","shape":[2],"data_offsets":[0,2]}})",
            ramp(2))));
}

TEST(SafetensorsErrors, Metadata) {
  expect_rejected(image(R"({"__metadata__":{"a":"b","n":5}})"),
                  {"__metadata__: the value of key 'n' is 5, expected a string"});
  expect_rejected(image(R"({"__metadata__":{"o":{"x":"y"}}})"), {"key 'o' is an object"});
  expect_rejected(image(R"({"__metadata__":{"z":null}})"), {"key 'z' is null"});
  expect_rejected(image(R"({"__metadata__":["a"]})"),
                  {"__metadata__: expected a JSON object of strings, found an array"});
}

}  // namespace
