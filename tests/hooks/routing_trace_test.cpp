// SPDX-License-Identifier: MIT
// Routing traces: recording from blocks (layers), the trace file format
// (checked with the independent test-only safetensors reader) and its errors.
#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <string>
#include <vector>

#include <moekit/hooks/routing_trace.hpp>
#include <moekit/hooks/trace_file.hpp>

#include "hooks_test_util.hpp"
#include "safetensors_lite.hpp"

namespace {

using hooks_test::make_plan;
using moekit::Index;
using moekit::Matrix;
using moekit_test::error_message;

std::string temp_path(const std::string& name) {
  return ::testing::TempDir() + "moekit_hooks_" + name;
}

void write_bytes(const std::string& path, const std::string& bytes) {
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
}

// A safetensors file from a header string and raw data bytes.
std::string safetensors_bytes(const std::string& header, const std::string& data) {
  std::string out(8, '\0');
  const std::uint64_t n = header.size();
  for (int i = 0; i < 8; ++i)
    out[static_cast<std::size_t>(i)] = static_cast<char>((n >> (8 * i)) & 0xFF);
  return out + header + data;
}

std::string int32_bytes(const std::vector<std::int32_t>& v) {
  std::string s;
  for (const std::int32_t x : v) {
    const auto u = static_cast<std::uint32_t>(x);
    for (int b = 0; b < 4; ++b) s += static_cast<char>((u >> (8 * b)) & 0xFF);
  }
  return s;
}

TEST(RoutingTrace, RecorderStacksLayersAndForwards) {
  moekit::TraceRecorder rec(2);
  // Layer 0 sees two forwards (2 + 1 tokens), layer 1 one forward of 3 tokens.
  rec.record(0, make_plan(4, {{0, 1}, {2, 3}}, {{.5f, .5f}, {.5f, .5f}}));
  rec.record(1, make_plan(4, {{3, 2}, {1, 0}, {0, -1}}, {{1, 0}, {1, 0}, {1, 0}}));
  rec.record(0, make_plan(4, {{1, 2}}, {{.5f, .5f}}));
  const moekit::RoutingTrace tr = rec.trace();
  ASSERT_EQ(tr.num_tokens(), 3);
  ASSERT_EQ(tr.num_layers(), 2);
  ASSERT_EQ(tr.top_k(), 2);
  ASSERT_EQ(tr.num_experts(), 4);
  // [T, L, k] row-major: token 0 = {0,1 | 3,2}, token 1 = {2,3 | 1,0}, token 2 = {1,2 | 0,-1}.
  const std::vector<std::int32_t> expect{0, 1, 3, 2, 2, 3, 1, 0, 1, 2, 0, -1};
  EXPECT_EQ(tr.data(), expect);
  EXPECT_EQ(rec.num_forwards(0), 2);
  EXPECT_EQ(rec.forward_ids(0, 1)(0, 1), 2);
  EXPECT_EQ(tr.num_requests(), 11);
  EXPECT_EQ(tr.layer(1)(2, 0), 0);
}

TEST(RoutingTrace, NullExpertsAndEmptySlotsBecomeMinusOne) {
  moekit::RoutingPlan p = make_plan(3, {{0, 3}, {-1, 2}}, {{1, 0}, {0, 1}});
  p.num_null_experts = 1;  // id 3 is a null expert
  moekit::TraceRecorder rec(1);
  rec.record(0, p);
  EXPECT_EQ(rec.trace().data(), (std::vector<std::int32_t>{0, -1, -1, 2}));
}

TEST(RoutingTrace, RecorderErrors) {
  moekit::TraceRecorder rec(2);
  EXPECT_NE(error_message([&] { rec.trace(); }).find("no plan recorded"), std::string::npos);
  rec.record(0, make_plan(4, {{0, 1}}, {{1, 0}}));
  EXPECT_EQ(error_message([&] { rec.trace(); }),
            "moekit: trace recorder: layer 1 has 0 tokens, expected 1 (as layer 0)");
  EXPECT_EQ(error_message([&] {
              rec.record(1, make_plan(5, {{0, 1}}, {{1, 0}}));
            }),
            "moekit: trace recorder: layer 1 plan has 5 experts, expected 4 (as the first plan "
            "recorded)");
  EXPECT_EQ(error_message([&] { rec.layer(2); }),
            "moekit: trace recorder layer: expected [0, 2), got 2");
  EXPECT_EQ(error_message([] {
              moekit::RoutingTrace({0, 0}, 1, 1, 2, 4);
            }),
            "moekit: routing trace ids: token 0 names expert 0 twice at layer 0 (slots 0 and 1)");
  EXPECT_EQ(error_message([] {
              moekit::RoutingTrace({0, 4}, 1, 1, 2, 4);
            }),
            "moekit: routing trace ids: expected an expert id in [0, 4) or -1 at [0, 0, 1], got 4");
}

TEST(RoutingTrace, RecordsBlocksAsLayers) {
  // Three blocks, each fed the previous one's output: the recorder's trace
  // holds exactly the plans the blocks made.
  std::vector<moekit::SwiGluMoEBlock> blocks;
  for (std::uint32_t l = 0; l < 3; ++l)
    blocks.push_back(moekit_test::random_block(6, 16, 24, 2, 100 + 10 * l));
  moekit::TraceRecorder rec(3);
  std::vector<moekit::IdMatrix> expect(3);
  for (std::uint32_t batch = 0; batch < 2; ++batch) {
    Matrix h = moekit_test::random_matrix(5 + batch, 16, 7 + batch);
    for (Index l = 0; l < 3; ++l) {
      auto obs = rec.layer(l);
      h = blocks[static_cast<std::size_t>(l)].forward(h, obs);
      const moekit::IdMatrix& ids = blocks[static_cast<std::size_t>(l)].last_plan().ids;
      moekit::IdMatrix& e = expect[static_cast<std::size_t>(l)];
      moekit::IdMatrix cat(e.rows() + ids.rows(), 2);
      if (e.rows()) cat.topRows(e.rows()) = e;
      cat.bottomRows(ids.rows()) = ids;
      e = cat;
    }
  }
  const moekit::RoutingTrace tr = rec.trace();
  ASSERT_EQ(tr.num_tokens(), 11);
  for (Index l = 0; l < 3; ++l)
    EXPECT_EQ(tr.layer(l), expect[static_cast<std::size_t>(l)]) << "layer " << l;
}

TEST(TraceFile, RoundTripAndIndependentReader) {
  const moekit::RoutingTrace tr = hooks_test::random_trace(7, 3, 2, 9, 5);
  const std::string path = temp_path("roundtrip.safetensors");
  moekit::save_trace(path, tr);
  const moekit::RoutingTrace back = moekit::load_trace(path);
  EXPECT_EQ(back.num_tokens(), 7);
  EXPECT_EQ(back.num_layers(), 3);
  EXPECT_EQ(back.top_k(), 2);
  EXPECT_EQ(back.num_experts(), 9);
  EXPECT_EQ(back.data(), tr.data());

  // The test-only reader (nlohmann JSON) sees the format METHODS.md §5 names.
  const auto file = moekit_test::safetensors::File::load(path);
  EXPECT_EQ(file.meta("num_experts"), "9");
  const auto& info = file.info("topk_ids");
  EXPECT_EQ(info.dtype, "I32");
  EXPECT_EQ(info.shape, (std::vector<std::int64_t>{7, 3, 2}));
  const moekit::IdMatrix flat = file.to_int_matrix("topk_ids");  // [7 * 3, 2]
  for (Index t = 0; t < 7; ++t)
    for (Index l = 0; l < 3; ++l)
      for (Index j = 0; j < 2; ++j) EXPECT_EQ(flat(t * 3 + l, j), tr(t, l, j));
  std::remove(path.c_str());
}

TEST(TraceFile, ExactBytesOfATinyTrace) {
  const moekit::RoutingTrace tr({1, -1}, 1, 1, 2, 3);
  const std::string path = temp_path("tiny.safetensors");
  moekit::save_trace(path, tr);
  std::ifstream in(path, std::ios::binary);
  const std::string bytes((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
  std::string header =
      "{\"__metadata__\":{\"num_experts\":\"3\"},\"topk_ids\":{\"dtype\":\"I32\",\"shape\":[1,1,2],"
      "\"data_offsets\":[0,8]}}";
  while (header.size() % 8) header += ' ';
  EXPECT_EQ(bytes, safetensors_bytes(header, int32_bytes({1, -1})));
  std::remove(path.c_str());
}

TEST(TraceFile, AcceptsOtherTensorsAndMetadata) {
  const std::string header =
      "{ \"extra\": {\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\n"
      "  \"topk_ids\": {\"dtype\":\"I32\",\"shape\":[2,1,1],\"data_offsets\":[4,12]},\n"
      "  \"__metadata__\": {\"format\":\"pt\",\"num_experts\":\"2\",\"note\":\"a \\\"quoted\\\" "
      "\\u00e9\"} }";
  const std::string path = temp_path("extra.safetensors");
  write_bytes(path, safetensors_bytes(header, std::string(4, '\0') + int32_bytes({1, 0})));
  const moekit::RoutingTrace tr = moekit::load_trace(path);
  EXPECT_EQ(tr.data(), (std::vector<std::int32_t>{1, 0}));
  EXPECT_EQ(tr.num_experts(), 2);
  std::remove(path.c_str());
}

TEST(TraceFile, BytesRoundTripInMemory) {
  moekit::RoutingTrace tr(std::vector<std::int32_t>{0, 3, -1, 2, 1, 0}, 3, 1, 2, 4);
  const std::vector<unsigned char> bytes = moekit::trace_to_bytes(tr);
  const moekit::RoutingTrace back = moekit::load_trace_from_memory(bytes.data(), bytes.size());
  EXPECT_EQ(back.data(), tr.data());
  EXPECT_EQ(back.num_tokens(), 3);
  EXPECT_EQ(back.num_experts(), 4);
  const std::string msg =
      error_message([&] { moekit::load_trace_from_memory(bytes.data(), 7, "in memory"); });
  EXPECT_NE(msg.find("trace file 'in memory': expected at least 8 bytes, got 7"), std::string::npos)
      << msg;
}

TEST(TraceFile, MalformedFilesThrowWithTheirProblem) {
  const std::string path = temp_path("bad.safetensors");
  const std::string ok_entry =
      "\"topk_ids\":{\"dtype\":\"I32\",\"shape\":[1,1,1],\"data_offsets\":[0,4]}";
  const std::string ok_meta = "\"__metadata__\":{\"num_experts\":\"4\"}";
  struct Case {
    std::string bytes;
    std::string message;
  };
  const std::vector<Case> cases{
      {"abc", "expected at least 8 bytes, got 3"},
      {std::string("\xff\xff\xff\xff\xff\xff\xff\x7f", 8) + "{}", "header length"},
      {safetensors_bytes("{", ""), "bad header JSON at byte 1: expected a string key"},
      {safetensors_bytes("[1]", ""), "header is not a JSON object"},
      {safetensors_bytes("{" + ok_meta + "," + ok_entry + "} x", int32_bytes({0})),
       "unexpected trailing characters"},
      {safetensors_bytes("{" + ok_meta + "}", ""), "no tensor 'topk_ids'"},
      {safetensors_bytes("{" + ok_entry + "}", int32_bytes({0})), "no \"__metadata__\" object"},
      {safetensors_bytes("{\"__metadata__\":{\"num_experts\":\"x4\"}," + ok_entry + "}",
                         int32_bytes({0})),
       "num_experts: expected an integer, got x4"},
      {safetensors_bytes("{\"__metadata__\":{\"num_experts\":\"0\"}," + ok_entry + "}",
                         int32_bytes({0})),
       "num_experts: expected an integer in [1, 2^31), got 0"},
      {safetensors_bytes("{" + ok_meta + "," + ok_entry + "}", int32_bytes({4})),
       "routing trace ids: expected an expert id in [0, 4) or -1 at [0, 0, 0], got 4"},
      {safetensors_bytes("{" + ok_meta + "," + ok_entry + "}", "\x01\x02"),
       "data_offsets [0, 4] outside the data section of 2 bytes"},
      {safetensors_bytes(
           "{" + ok_meta +
               ",\"topk_ids\":{\"dtype\":\"F32\",\"shape\":[1,1,1],\"data_offsets\":[0,4]}}",
           int32_bytes({0})),
       "expected dtype I32, got F32"},
      {safetensors_bytes(
           "{" + ok_meta +
               ",\"topk_ids\":{\"dtype\":\"I32\",\"shape\":[1,1],\"data_offsets\":[0,4]}}",
           int32_bytes({0})),
       "expected shape [tokens, layers, k] (rank 3), got rank 2"},
      {safetensors_bytes(
           "{" + ok_meta +
               ",\"topk_ids\":{\"dtype\":\"I32\",\"shape\":[1,1,2],\"data_offsets\":[0,4]}}",
           int32_bytes({0})),
       "data_offsets cover 4 bytes, shape and dtype need 8"},
      {safetensors_bytes(
           "{" + ok_meta +
               ",\"topk_ids\":{\"dtype\":\"I32\",\"shape\":[-1,1,1],\"data_offsets\":[0,4]}}",
           int32_bytes({0})),
       "shape: expected a non-negative integer"},
      {safetensors_bytes("{" + ok_meta +
                             ",\"topk_ids\":{\"dtype\":\"I32\",\"shape\":[4294967296,4294967296,4],"
                             "\"data_offsets\":[0,4]}}",
                         int32_bytes({0})),
       "shape too large"},
      {safetensors_bytes("{" + ok_meta +
                             ",\"topk_ids\":{\"dtype\":\"I32\",\"shape\":[0,4294967296,1],"
                             "\"data_offsets\":[0,0]}}",
                         ""),
       "expected layers and k in [1, 2^31), got shape [0, 4294967296, 1]"},
      {safetensors_bytes("{" + ok_meta + "," + ok_meta + "," + ok_entry + "}", int32_bytes({0})),
       "duplicate key"},
      {safetensors_bytes(std::string(100, '['), ""), "nested too deeply"},
      {safetensors_bytes("{\"a\x01\":1}", ""), "control character in a string"},
  };
  for (const Case& c : cases) {
    write_bytes(path, c.bytes);
    const std::string msg = error_message([&] { moekit::load_trace(path); });
    EXPECT_NE(msg.find(c.message), std::string::npos)
        << "got: " << msg << "\nwanted: " << c.message;
    EXPECT_EQ(msg.rfind("moekit: trace file '" + path + "'", 0), 0u) << msg;
  }
  std::remove(path.c_str());
  EXPECT_NE(
      error_message([&] { moekit::load_trace(temp_path("does_not_exist")); }).find("cannot open"),
      std::string::npos);
}

}  // namespace
