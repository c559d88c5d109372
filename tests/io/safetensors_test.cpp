// SPDX-License-Identifier: MIT
// SafetensorsFile and SafetensorsWriter on valid files: round trips of every
// dtype through files (mapped and read) and memory, conversions to f32 and
// int32 checked against independent reference formulas (exhaustively for the
// 8- and 16-bit floats), flattening, typed views (zero-copy and misaligned
// copies), metadata, the canonical layout the writer produces, and the
// missing-tensor message with its nearest names.
#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>
#include <vector>

#include "io_test_util.hpp"
#include "moekit/io/safetensors.hpp"
#include "moekit/io/safetensors_writer.hpp"

namespace {

using moekit::IdMatrix;
using moekit::Index;
using moekit::Matrix;
using moekit::SafetensorsDtype;
using moekit::SafetensorsFile;
using moekit::SafetensorsWriter;
using moekit_io_test::error_of;
using moekit_io_test::expect_contains;
using moekit_io_test::TempDir;

const SafetensorsDtype kAllDtypes[] = {
    SafetensorsDtype::boolean, SafetensorsDtype::u8,      SafetensorsDtype::i8,
    SafetensorsDtype::f8_e5m2, SafetensorsDtype::f8_e4m3, SafetensorsDtype::f8_e8m0,
    SafetensorsDtype::i16,     SafetensorsDtype::u16,     SafetensorsDtype::f16,
    SafetensorsDtype::bf16,    SafetensorsDtype::i32,     SafetensorsDtype::u32,
    SafetensorsDtype::f32,     SafetensorsDtype::i64,     SafetensorsDtype::u64,
    SafetensorsDtype::f64,
};

template <class T>
T load(const std::uint8_t* p) {
  T v;
  std::memcpy(&v, p, sizeof v);
  return v;
}

// Independent reference conversions (formulas, not the library's bit tricks).
float ref_f16(std::uint16_t h) {
  const int e = (h >> 10) & 31, m = h & 1023;
  const float s = (h & 0x8000) ? -1.0f : 1.0f;
  if (e == 0) return s * std::ldexp(static_cast<float>(m), -24);
  if (e == 31) return m ? std::numeric_limits<float>::quiet_NaN() : s * INFINITY;
  return s * std::ldexp(static_cast<float>(1024 + m), e - 25);
}
float ref_bf16(std::uint16_t h) {
  const std::uint32_t u = static_cast<std::uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
float ref_e4m3(std::uint8_t b) {
  const int e = (b >> 3) & 15, m = b & 7;
  const float s = (b & 0x80) ? -1.0f : 1.0f;
  if (e == 15 && m == 7) return std::numeric_limits<float>::quiet_NaN();
  if (e == 0) return s * std::ldexp(static_cast<float>(m), -9);
  return s * std::ldexp(static_cast<float>(8 + m), e - 10);
}
float ref_e5m2(std::uint8_t b) {
  const int e = (b >> 2) & 31, m = b & 3;
  const float s = (b & 0x80) ? -1.0f : 1.0f;
  if (e == 31) return m ? std::numeric_limits<float>::quiet_NaN() : s * INFINITY;
  if (e == 0) return s * std::ldexp(static_cast<float>(m), -16);
  return s * std::ldexp(static_cast<float>(4 + m), e - 17);
}
float ref_e8m0(std::uint8_t b) {
  if (b == 255) return std::numeric_limits<float>::quiet_NaN();
  return std::ldexp(1.0f, b - 127);
}

float ref_to_float(SafetensorsDtype t, const std::uint8_t* p, std::size_t i) {
  switch (t) {
    case SafetensorsDtype::boolean: return p[i] ? 1.0f : 0.0f;
    case SafetensorsDtype::u8: return static_cast<float>(p[i]);
    case SafetensorsDtype::i8: return static_cast<float>(static_cast<std::int8_t>(p[i]));
    case SafetensorsDtype::f8_e5m2: return ref_e5m2(p[i]);
    case SafetensorsDtype::f8_e4m3: return ref_e4m3(p[i]);
    case SafetensorsDtype::f8_e8m0: return ref_e8m0(p[i]);
    case SafetensorsDtype::i16: return static_cast<float>(load<std::int16_t>(p + 2 * i));
    case SafetensorsDtype::u16: return static_cast<float>(load<std::uint16_t>(p + 2 * i));
    case SafetensorsDtype::f16: return ref_f16(load<std::uint16_t>(p + 2 * i));
    case SafetensorsDtype::bf16: return ref_bf16(load<std::uint16_t>(p + 2 * i));
    case SafetensorsDtype::i32: return static_cast<float>(load<std::int32_t>(p + 4 * i));
    case SafetensorsDtype::u32: return static_cast<float>(load<std::uint32_t>(p + 4 * i));
    case SafetensorsDtype::f32: return load<float>(p + 4 * i);
    case SafetensorsDtype::i64: return static_cast<float>(load<std::int64_t>(p + 8 * i));
    case SafetensorsDtype::u64: return static_cast<float>(load<std::uint64_t>(p + 8 * i));
    case SafetensorsDtype::f64: return static_cast<float>(load<double>(p + 8 * i));
  }
  return 0.0f;
}

bool same_float(float a, float b) {
  if (std::isnan(a) || std::isnan(b)) return std::isnan(a) && std::isnan(b);
  std::uint32_t x, y;
  std::memcpy(&x, &a, 4);
  std::memcpy(&y, &b, 4);
  return x == y;  // bitwise: keeps -0.0 apart from 0.0
}

// Bytes of `n` elements of dtype t: a varied pattern, valid for every dtype (BOOL gets 0/1).
std::vector<std::uint8_t> pattern(SafetensorsDtype t, std::size_t n) {
  std::vector<std::uint8_t> b(n * moekit::safetensors_dtype_size(t));
  std::uint32_t x = 12345u + static_cast<std::uint32_t>(t);
  for (auto& v : b) {
    x = x * 1103515245u + 12345u;
    v = static_cast<std::uint8_t>(x >> 16);
  }
  if (t == SafetensorsDtype::boolean)
    for (auto& v : b) v &= 1u;
  return b;
}

template <class T>
void expect_typed_view(const SafetensorsFile& f, const std::string& name) {
  const moekit::TensorData<T> d = f.data<T>(name);
  const moekit::ByteView raw = f.bytes(name);
  ASSERT_EQ(static_cast<std::size_t>(d.size()) * sizeof(T), raw.size);
  if (raw.size) {
    EXPECT_EQ(std::memcmp(d.data(), raw.data, raw.size), 0);
  }
  EXPECT_EQ(d.to_vector().size(), static_cast<std::size_t>(d.size()));
}

void expect_typed_view_any(const SafetensorsFile& f, const std::string& name) {
  switch (f.info(name).dtype) {
    case SafetensorsDtype::f64: return expect_typed_view<double>(f, name);
    case SafetensorsDtype::f32: return expect_typed_view<float>(f, name);
    case SafetensorsDtype::bf16: return expect_typed_view<moekit::bf16>(f, name);
    case SafetensorsDtype::f16: return expect_typed_view<moekit::f16>(f, name);
    case SafetensorsDtype::i64: return expect_typed_view<std::int64_t>(f, name);
    case SafetensorsDtype::i32: return expect_typed_view<std::int32_t>(f, name);
    case SafetensorsDtype::i16: return expect_typed_view<std::int16_t>(f, name);
    case SafetensorsDtype::i8: return expect_typed_view<std::int8_t>(f, name);
    case SafetensorsDtype::u64: return expect_typed_view<std::uint64_t>(f, name);
    case SafetensorsDtype::u32: return expect_typed_view<std::uint32_t>(f, name);
    case SafetensorsDtype::u16: return expect_typed_view<std::uint16_t>(f, name);
    case SafetensorsDtype::u8: return expect_typed_view<std::uint8_t>(f, name);
    default: return;  // BOOL and F8: raw bytes only
  }
}

class EveryDtype : public ::testing::TestWithParam<SafetensorsDtype> {};

TEST_P(EveryDtype, RoundTripsThroughFileAndMemory) {
  const SafetensorsDtype t = GetParam();
  const std::vector<std::int64_t> shape3 = {2, 3, 5};  // flattens to [6, 5]
  const std::vector<std::uint8_t> data = pattern(t, 30);
  const std::vector<std::uint8_t> vec = pattern(t, 7);
  const std::vector<std::uint8_t> scalar = pattern(t, 1);

  SafetensorsWriter w;
  w.add_raw("a.cube", t, shape3, data.data(), data.size());
  w.add_raw("b.vector", t, {7}, vec.data(), vec.size());
  w.add_raw("c.scalar", t, {}, scalar.data(), scalar.size());
  w.add_raw("d.empty", t, {3, 0, 2}, nullptr, 0);
  w.set_metadata("dtype", moekit::safetensors_dtype_name(t));

  TempDir dir;
  const std::string path = dir.file("all.safetensors");
  w.write(path);
  EXPECT_EQ(moekit_io_test::read_file(path), w.to_bytes());

  std::vector<SafetensorsFile> files;
  files.emplace_back(path, moekit::FileAccess::map);
  files.emplace_back(path, moekit::FileAccess::read);
  files.push_back(SafetensorsFile::from_bytes(w.to_bytes(), "<writer>"));
  EXPECT_TRUE(files[0].is_mapped());
  EXPECT_FALSE(files[1].is_mapped());

  for (const SafetensorsFile& f : files) {
    SCOPED_TRACE(f.origin());
    EXPECT_EQ(f.names(), (std::vector<std::string>{"a.cube", "b.vector", "c.scalar", "d.empty"}));
    EXPECT_EQ(f.metadata("dtype"), moekit::safetensors_dtype_name(t));

    const moekit::TensorInfo& cube = f.info("a.cube");
    EXPECT_EQ(cube.dtype, t);
    EXPECT_EQ(cube.shape, shape3);
    EXPECT_EQ(cube.numel, 30);
    EXPECT_EQ(cube.nbytes(), data.size());
    EXPECT_EQ(cube.shape_string(), "[2, 3, 5]");
    EXPECT_EQ(f.info("c.scalar").rank(), 0u);
    EXPECT_EQ(f.info("d.empty").numel, 0);

    struct Case {
      const char* name;
      const std::vector<std::uint8_t>* bytes;
      Index rows, cols;
    };
    static const std::vector<std::uint8_t> none;
    for (const Case& c : {Case{"a.cube", &data, 6, 5}, Case{"b.vector", &vec, 1, 7},
                          Case{"c.scalar", &scalar, 1, 1}, Case{"d.empty", &none, 0, 2}}) {
      SCOPED_TRACE(c.name);
      const moekit::ByteView raw = f.bytes(c.name);
      ASSERT_EQ(raw.size, c.bytes->size());
      if (raw.size) {
        EXPECT_EQ(std::memcmp(raw.data, c.bytes->data(), raw.size), 0);
      }
      const Matrix m = f.to_matrix(c.name);
      ASSERT_EQ(m.rows(), c.rows);
      ASSERT_EQ(m.cols(), c.cols);
      for (Index i = 0; i < m.size(); ++i)
        EXPECT_TRUE(same_float(m.data()[i], ref_to_float(t, c.bytes->data(), static_cast<std::size_t>(i))))
            << "element " << i << ": " << m.data()[i];
      expect_typed_view_any(f, c.name);
    }
  }
}

INSTANTIATE_TEST_SUITE_P(Safetensors, EveryDtype, ::testing::ValuesIn(kAllDtypes),
                         [](const ::testing::TestParamInfo<SafetensorsDtype>& info) {
                           return std::string(moekit::safetensors_dtype_name(info.param));
                         });

// Every bit pattern of the 8- and 16-bit float formats against the reference formulas.
TEST(SafetensorsConvert, SmallFloatsExhaustive) {
  for (const SafetensorsDtype t : {SafetensorsDtype::f16, SafetensorsDtype::bf16,
                                   SafetensorsDtype::f8_e4m3, SafetensorsDtype::f8_e5m2,
                                   SafetensorsDtype::f8_e8m0}) {
    SCOPED_TRACE(moekit::safetensors_dtype_name(t));
    const std::size_t esize = moekit::safetensors_dtype_size(t);
    const std::size_t n = esize == 1 ? 256 : 65536;
    std::vector<std::uint8_t> bytes(n * esize);
    for (std::size_t i = 0; i < n; ++i)
      for (std::size_t k = 0; k < esize; ++k) bytes[i * esize + k] = static_cast<std::uint8_t>(i >> (8 * k));
    SafetensorsWriter w;
    w.add_raw("x", t, {static_cast<std::int64_t>(n)}, bytes.data(), bytes.size());
    const SafetensorsFile f = SafetensorsFile::from_bytes(w.to_bytes());
    const Matrix m = f.to_matrix("x");
    for (std::size_t i = 0; i < n; ++i)
      ASSERT_TRUE(same_float(m(0, static_cast<Index>(i)), ref_to_float(t, bytes.data(), i)))
          << "bits " << i << " gave " << m(0, static_cast<Index>(i));
  }
}

TEST(SafetensorsConvert, KnownEightBitValues) {
  EXPECT_EQ(moekit::detail::f8_e4m3_to_float(0x38), 1.0f);
  EXPECT_EQ(moekit::detail::f8_e4m3_to_float(0x7e), 448.0f);
  EXPECT_EQ(moekit::detail::f8_e4m3_to_float(0x01), std::ldexp(1.0f, -9));
  EXPECT_TRUE(std::isnan(moekit::detail::f8_e4m3_to_float(0xff)));
  EXPECT_TRUE(std::signbit(moekit::detail::f8_e4m3_to_float(0x80)));
  EXPECT_EQ(moekit::detail::f8_e5m2_to_float(0x3c), 1.0f);
  EXPECT_EQ(moekit::detail::f8_e5m2_to_float(0x7b), 57344.0f);
  EXPECT_EQ(moekit::detail::f8_e5m2_to_float(0x7c), INFINITY);
  EXPECT_EQ(moekit::detail::f8_e5m2_to_float(0xfc), -INFINITY);
  EXPECT_TRUE(std::isnan(moekit::detail::f8_e5m2_to_float(0x7d)));
  EXPECT_EQ(moekit::detail::f8_e8m0_to_float(127), 1.0f);
  EXPECT_EQ(moekit::detail::f8_e8m0_to_float(128), 2.0f);
  EXPECT_EQ(moekit::detail::f8_e8m0_to_float(0), std::ldexp(1.0f, -127));
}

TEST(SafetensorsWriter, MatrixStoredAsEveryFloatDtype) {
  Matrix m(2, 3);
  m << 1.0f, -2.5f, 3.14159265f, 1e-3f, 65504.0f, -0.0f;
  for (const SafetensorsDtype t : {SafetensorsDtype::f32, SafetensorsDtype::f64,
                                   SafetensorsDtype::f16, SafetensorsDtype::bf16}) {
    SCOPED_TRACE(moekit::safetensors_dtype_name(t));
    SafetensorsWriter w;
    w.add("m", m, t);
    w.add("m3", m, t, {1, 2, 3});
    w.add("flat", m, t, {6});
    const SafetensorsFile f = SafetensorsFile::from_bytes(w.to_bytes());
    EXPECT_EQ(f.info("m").shape, (std::vector<std::int64_t>{2, 3}));
    EXPECT_EQ(f.info("m3").shape, (std::vector<std::int64_t>{1, 2, 3}));
    const Matrix back = f.to_matrix("m");
    const Matrix flat = f.to_matrix("flat");
    ASSERT_EQ(flat.rows(), 1);
    ASSERT_EQ(flat.cols(), 6);
    for (Index i = 0; i < m.size(); ++i) {
      float expect = m.data()[i];
      if (t == SafetensorsDtype::f16) expect = moekit::f16_bits_to_float(moekit::float_to_f16_bits(expect));
      if (t == SafetensorsDtype::bf16) expect = moekit::bf16_bits_to_float(moekit::float_to_bf16_bits(expect));
      EXPECT_TRUE(same_float(back.data()[i], expect)) << i;
      EXPECT_TRUE(same_float(flat.data()[i], expect)) << i;
    }
    EXPECT_TRUE((f.to_matrix("m3").array() == back.array()).all());
  }
}

TEST(SafetensorsWriter, TypedBuffersIdsAndExpressions) {
  const std::vector<std::int64_t> i64 = {-3, 0, 7, 1ll << 40};
  const std::vector<moekit::bf16> b16 = {moekit::bf16(1.5f), moekit::bf16(-2.0f)};
  IdMatrix ids(2, 2);
  ids << 3, 1, 0, 7;
  Matrix big = Matrix::Random(5, 4);

  SafetensorsWriter w;
  w.add("i64", i64);
  w.add("b16", b16, {1, 2});
  w.add("ids", ids);
  w.add("rows", big.middleRows(1, 2));   // an Eigen expression, not a Matrix
  w.add("ptr", big.data(), {20});
  const SafetensorsFile f = SafetensorsFile::from_bytes(w.to_bytes());

  EXPECT_EQ(f.data<std::int64_t>("i64").to_vector(), i64);
  const auto b = f.data<moekit::bf16>("b16");
  ASSERT_EQ(b.size(), 2);
  EXPECT_EQ(b[0].bits, b16[0].bits);
  EXPECT_EQ(b[1].bits, b16[1].bits);
  EXPECT_EQ(f.to_ids("ids"), ids);
  EXPECT_EQ(f.to_matrix("rows"), Matrix(big.middleRows(1, 2)));
  EXPECT_EQ(f.to_matrix("ptr"), Eigen::Map<const Matrix>(big.data(), 1, 20));
  EXPECT_EQ(f.info("ids").dtype, SafetensorsDtype::i32);
}

TEST(SafetensorsFile, FlattensLeadingDimensions) {
  std::vector<float> v(2 * 3 * 4);
  for (std::size_t i = 0; i < v.size(); ++i) v[i] = static_cast<float>(i);
  SafetensorsWriter w;
  w.add("e", v, {2, 3, 4});
  w.add("four", v, {1, 2, 3, 4});
  w.add("row", v);
  w.add("zero_rows", std::vector<float>{}, {0, 4});
  w.add("zero_cols", std::vector<float>{}, {3, 0});
  const SafetensorsFile f = SafetensorsFile::from_bytes(w.to_bytes());
  const Matrix e = f.to_matrix("e");
  EXPECT_EQ(e.rows(), 6);
  EXPECT_EQ(e.cols(), 4);
  EXPECT_EQ(e(5, 3), 23.0f);
  EXPECT_EQ(e(1, 0), 4.0f);
  EXPECT_EQ(f.to_matrix("four").rows(), 6);
  EXPECT_EQ(f.to_matrix("row").rows(), 1);
  EXPECT_EQ(f.to_matrix("row").cols(), 24);
  EXPECT_EQ(f.to_matrix("zero_rows").rows(), 0);
  EXPECT_EQ(f.to_matrix("zero_rows").cols(), 4);
  EXPECT_EQ(f.to_matrix("zero_cols").rows(), 3);
  EXPECT_EQ(f.to_matrix("zero_cols").cols(), 0);
  EXPECT_EQ(f.info("e").rows(), 6);
  EXPECT_EQ(f.info("e").cols(), 4);
}

TEST(SafetensorsFile, ToIdsConvertsIntegersAndChecksRange) {
  const std::vector<std::int64_t> ok = {-5, 0, 2147483647};
  const std::vector<std::int64_t> big = {1, 2147483648ll};
  const std::vector<std::uint64_t> huge = {std::numeric_limits<std::uint64_t>::max()};
  const std::vector<std::uint8_t> u8 = {0, 255};
  const std::vector<std::int16_t> i16 = {-32768, 32767};
  SafetensorsWriter w;
  w.add("ok", ok);
  w.add("big", big);
  w.add("huge", huge);
  w.add("u8", u8);
  w.add("i16", i16);
  w.add("f", std::vector<float>{1.0f});
  const std::uint8_t flags[] = {1, 0, 1};
  w.add_raw("mask", SafetensorsDtype::boolean, {3}, flags, 3);
  const SafetensorsFile f = SafetensorsFile::from_bytes(w.to_bytes(), "ids.safetensors");

  EXPECT_EQ(f.to_ids("ok")(0, 0), -5);
  EXPECT_EQ(f.to_ids("ok")(0, 2), 2147483647);
  EXPECT_EQ(f.to_ids("u8")(0, 1), 255);
  EXPECT_EQ(f.to_ids("i16")(0, 0), -32768);
  EXPECT_EQ(f.to_ids("mask"), (IdMatrix(1, 3) << 1, 0, 1).finished());
  expect_contains(error_of([&] { f.to_ids("big"); }),
                  {"'ids.safetensors'", "tensor 'big'", "element 1", "2147483648", "int32"});
  expect_contains(error_of([&] { f.to_ids("huge"); }), {"tensor 'huge'", "element 0", "2^63"});
  expect_contains(error_of([&] { f.to_ids("f"); }), {"tensor 'f'", "integer", "F32"});
}

TEST(SafetensorsFile, TypedViewIsZeroCopyWhenAlignedAndCopiesWhenNot) {
  // "a" holds 3 BF16 values (6 bytes), so "b" (F32) starts at data offset 6: misaligned.
  const std::vector<moekit::bf16> a = {moekit::bf16(1.0f), moekit::bf16(2.0f), moekit::bf16(3.0f)};
  const std::vector<float> b = {0.5f, -1.25f, 8.0f};
  SafetensorsWriter w;
  w.add("a", a);
  w.add("b", b);
  TempDir dir;
  w.write(dir.file("x.safetensors"));
  const SafetensorsFile f(dir.file("x.safetensors"));
  ASSERT_EQ(f.data_offset() % 8, 0u);

  const auto va = f.data<moekit::bf16>("a");
  EXPECT_FALSE(va.is_copy());
  EXPECT_EQ(static_cast<const void*>(va.data()), static_cast<const void*>(f.bytes("a").data));

  const auto vb = f.data<float>("b");
  EXPECT_TRUE(vb.is_copy());
  EXPECT_EQ(vb.to_vector(), b);
  EXPECT_EQ(f.to_matrix("b"), Eigen::Map<const Matrix>(b.data(), 1, 3));

  // A copied view stays valid when copied or moved itself.
  const moekit::TensorData<float> copy = vb;
  moekit::TensorData<float> source = vb;
  const moekit::TensorData<float> moved = std::move(source);
  EXPECT_EQ(copy.to_vector(), b);
  EXPECT_EQ(moved.to_vector(), b);

  expect_contains(error_of([&] { f.data<float>("a"); }),
                  {"tensor 'a'", "data<F32>() needs dtype F32", "the tensor is BF16"});
}

TEST(SafetensorsFile, ViewsSurviveMovingTheFile) {
  SafetensorsWriter w;
  w.add("v", std::vector<float>{1, 2, 3, 4});
  TempDir dir;
  w.write(dir.file("m.safetensors"));
  SafetensorsFile f(dir.file("m.safetensors"));
  const moekit::ByteView before = f.bytes("v");
  const auto typed = f.data<float>("v");
  SafetensorsFile g = std::move(f);
  EXPECT_EQ(g.bytes("v").data, before.data);
  EXPECT_EQ(typed[3], 4.0f);
  std::vector<SafetensorsFile> many;
  many.push_back(std::move(g));
  many.emplace_back(dir.file("m.safetensors"), moekit::FileAccess::read);
  const moekit::ByteView read_view = many[1].bytes("v");
  many.reserve(100);  // moves the elements
  EXPECT_EQ(many[0].bytes("v").data, before.data);
  EXPECT_EQ(many[1].bytes("v").data, read_view.data);
  EXPECT_EQ(many[1].data<float>("v")[2], 3.0f);
}

TEST(SafetensorsFile, Metadata) {
  SafetensorsWriter w;
  w.set_metadata("format", "pt").set_metadata("note", "ünïcødé \"quoted\"\n").set_metadata("empty", "");
  w.add("t", std::vector<float>{1});
  const SafetensorsFile f = SafetensorsFile::from_bytes(w.to_bytes(), "meta.safetensors");
  EXPECT_EQ(f.metadata().size(), 3u);
  EXPECT_EQ(f.metadata("format"), "pt");
  EXPECT_EQ(f.metadata("note"), "ünïcødé \"quoted\"\n");
  EXPECT_EQ(f.metadata("empty"), "");
  EXPECT_EQ(f.metadata_or("absent", "fallback"), "fallback");
  expect_contains(error_of([&] { f.metadata("absent"); }),
                  {"'meta.safetensors'", "no __metadata__ key 'absent'"});

  SafetensorsWriter none;
  none.add("t", std::vector<float>{1});
  EXPECT_TRUE(SafetensorsFile::from_bytes(none.to_bytes()).metadata().empty());
}

TEST(SafetensorsFile, MissingTensorNamesItAndTheNearestNames) {
  SafetensorsWriter w;
  for (int e = 0; e < 8; ++e)
    for (const char* p : {"w1", "w2", "w3"})
      w.add("model.layers.0.block_sparse_moe.experts." + std::to_string(e) + "." + p + ".weight",
            std::vector<float>{1});
  w.add("model.layers.0.block_sparse_moe.gate.weight", std::vector<float>{1});
  const SafetensorsFile f = SafetensorsFile::from_bytes(w.to_bytes(), "mixtral.safetensors");
  const std::string msg =
      error_of([&] { f.info("model.layers.0.mlp.experts.3.w1.weight"); });
  expect_contains(msg, {"'mixtral.safetensors'", "no tensor named 'model.layers.0.mlp.experts.3.w1.weight'",
                        "25 tensors", "'model.layers.0.block_sparse_moe.experts.3.w1.weight'"});
  expect_contains(error_of([&] { f.to_matrix("model.layers.0.block_sparse_moe.gate.weights"); }),
                  {"nearest", "'model.layers.0.block_sparse_moe.gate.weight'"});
  for (const auto& call : std::vector<std::function<void()>>{
           [&] { f.bytes("nope"); }, [&] { f.to_ids("nope"); }, [&] { f.data<float>("nope"); }})
    expect_contains(error_of(call), {"no tensor named 'nope'"});

  SafetensorsWriter empty;
  const SafetensorsFile g = SafetensorsFile::from_bytes(empty.to_bytes());
  expect_contains(error_of([&] { g.info("x"); }), {"no tensor named 'x'", "no tensors"});
}

TEST(SafetensorsWriter, CanonicalLayout) {
  SafetensorsWriter w;
  w.add("b", std::vector<std::int32_t>{7});
  w.add("a", std::vector<std::uint8_t>{1, 2, 3});
  w.set_metadata("k", "v");
  const std::vector<std::uint8_t> bytes = w.to_bytes();
  const std::string expected_header =
      R"({"__metadata__":{"k":"v"},"a":{"data_offsets":[0,3],"dtype":"U8","shape":[3]},)"
      R"("b":{"data_offsets":[3,7],"dtype":"I32","shape":[1]}})";
  std::string header = w.header();
  ASSERT_EQ(header.size() % 8, 0u);
  EXPECT_EQ(header.substr(0, expected_header.size()), expected_header);
  EXPECT_EQ(header.find_first_not_of(' ', expected_header.size()), std::string::npos);
  ASSERT_EQ(bytes.size(), 8 + header.size() + 7);
  EXPECT_EQ(bytes[0], header.size());
  for (int i = 1; i < 8; ++i) EXPECT_EQ(bytes[static_cast<std::size_t>(i)], 0);
  const std::vector<std::uint8_t> data(bytes.end() - 7, bytes.end());
  EXPECT_EQ(data, (std::vector<std::uint8_t>{1, 2, 3, 7, 0, 0, 0}));

  // Offsets are contiguous in name order.
  const SafetensorsFile f = SafetensorsFile::from_bytes(bytes);
  EXPECT_EQ(f.info("a").begin, 0u);
  EXPECT_EQ(f.info("a").end, 3u);
  EXPECT_EQ(f.info("b").begin, 3u);
  EXPECT_EQ(f.data_offset(), 8 + header.size());
  EXPECT_EQ(f.header_size(), header.size());
}

TEST(SafetensorsWriter, RejectsBadInput) {
  SafetensorsWriter w;
  w.add("x", std::vector<float>{1, 2});
  expect_contains(error_of([&] { w.add("x", std::vector<float>{1}); }), {"tensor 'x'", "added twice"});
  expect_contains(error_of([&] { w.add("__metadata__", std::vector<float>{1}); }), {"reserved"});
  expect_contains(error_of([&] { w.add("s", std::vector<float>{1, 2, 3}, {2, 2}); }),
                  {"tensor 's'", "shape [2, 2] holds 4 elements", "vector holds 3"});
  expect_contains(error_of([&] { w.add("n", std::vector<float>{}, {-1}); }),
                  {"tensor 'n'", "negative"});
  expect_contains(error_of([&] { w.add("m", Matrix::Zero(2, 2), SafetensorsDtype::f32, {3}); }),
                  {"tensor 'm'", "shape [3] holds 3", "[2, 2] holds 4"});
  expect_contains(error_of([&] { w.add("m", Matrix::Zero(2, 2), SafetensorsDtype::i32); }),
                  {"tensor 'm'", "F32, F64, F16 or BF16, not I32"});
  const std::uint8_t raw[3] = {};
  expect_contains(error_of([&] { w.add_raw("r", SafetensorsDtype::f16, {2}, raw, 3); }),
                  {"tensor 'r'", "F16", "[2]", "got 3"});
  expect_contains(error_of([&] { w.add("o", std::vector<float>{}, {1ll << 40, 1ll << 40, 0}); }),
                  {"tensor 'o'", "overflows"});
  SafetensorsWriter bad_utf8;
  bad_utf8.add("\xff\xfe", std::vector<float>{1});
  expect_contains(error_of([&] { bad_utf8.to_bytes(); }), {"UTF-8"});
  EXPECT_EQ(w.size(), 1u);
}

TEST(SafetensorsFile, EmptyAndMetadataOnlyHeaders) {
  const SafetensorsFile a = SafetensorsFile::from_bytes(moekit_io_test::image("{}"));
  EXPECT_EQ(a.size(), 0u);
  const SafetensorsFile b =
      SafetensorsFile::from_bytes(moekit_io_test::image(R"({"__metadata__":{"a":"b"}}   )"));
  EXPECT_EQ(b.size(), 0u);
  EXPECT_EQ(b.metadata("a"), "b");
}

TEST(SafetensorsFile, AcceptsGapsUnknownFieldsAndTrailingBytes) {
  // "x" at [8, 12) leaves a gap [0, 8); 4 bytes after it; an unknown key in the entry.
  const std::string header =
      R"({"x":{"dtype":"F32","shape":[1],"data_offsets":[8,12],"extra":[1,2]}})";
  std::vector<std::uint8_t> data(16, 0);
  const float v = 2.5f;
  std::memcpy(data.data() + 8, &v, 4);
  const SafetensorsFile f = SafetensorsFile::from_bytes(moekit_io_test::image(header, data));
  EXPECT_EQ(f.to_matrix("x")(0, 0), 2.5f);
}

TEST(MappedFile, OpenErrorsNameThePath) {
  TempDir dir;
  expect_contains(error_of([&] { moekit::MappedFile::open(dir.file("absent")); }),
                  {"cannot open", "absent'", "No such file"});
  expect_contains(error_of([&] { moekit::MappedFile::open(dir.path().string()); }),
                  {"not a regular file"});
  moekit_io_test::write_file(dir.file("empty"), {});
  const moekit::MappedFile empty = moekit::MappedFile::open(dir.file("empty"));
  EXPECT_EQ(empty.size(), 0u);
  expect_contains(error_of([&] { SafetensorsFile f(dir.file("empty")); }),
                  {"'" + dir.file("empty") + "'", "0 bytes long", "at least 8"});
}

}  // namespace
