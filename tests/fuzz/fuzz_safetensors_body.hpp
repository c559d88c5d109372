// SPDX-License-Identifier: MIT
// The body of the safetensors fuzz target, shared by the libFuzzer binary
// (fuzz_safetensors.cpp) and the corpus regression test (corpus_test.cpp).
//
// It feeds arbitrary bytes to SafetensorsFile::from_memory. Rejection must be
// a moekit::Error and nothing else. When the bytes parse, every tensor is
// touched through every accessor (info, bytes, data<T>, to_matrix, to_ids,
// the wrong-type and missing-name errors), every byte of every tensor is read
// (so ASan sees any out-of-bounds view), and the file is rewritten with
// SafetensorsWriter and parsed again, which must give the same tensors and
// metadata. A broken invariant is returned as a message ("" when all holds).
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <memory>
#include <string>
#include <vector>

#include "moekit/io/safetensors.hpp"
#include "moekit/io/safetensors_writer.hpp"

namespace moekit_fuzz {

namespace detail {

template <class T>
std::string check_typed(const moekit::SafetensorsFile& f, const std::string& name) {
  const moekit::TensorInfo& t = f.info(name);
  const moekit::TensorData<T> d = f.data<T>(name);
  if (d.size() != t.numel) return "data<T>().size() != numel for '" + name + "'";
  if (t.numel > 0 && std::memcmp(d.data(), f.bytes(name).data, t.nbytes()) != 0)
    return "data<T>() differs from bytes() for '" + name + "'";
  if (!d.is_copy() && reinterpret_cast<std::uintptr_t>(d.data()) % alignof(T) != 0)
    return "misaligned zero-copy view for '" + name + "'";
  return "";
}

inline std::string check_typed_any(const moekit::SafetensorsFile& f, const std::string& name) {
  using D = moekit::SafetensorsDtype;
  switch (f.info(name).dtype) {
    case D::f64: return check_typed<double>(f, name);
    case D::f32: return check_typed<float>(f, name);
    case D::bf16: return check_typed<moekit::bf16>(f, name);
    case D::f16: return check_typed<moekit::f16>(f, name);
    case D::i64: return check_typed<std::int64_t>(f, name);
    case D::i32: return check_typed<std::int32_t>(f, name);
    case D::i16: return check_typed<std::int16_t>(f, name);
    case D::i8: return check_typed<std::int8_t>(f, name);
    case D::u64: return check_typed<std::uint64_t>(f, name);
    case D::u32: return check_typed<std::uint32_t>(f, name);
    case D::u16: return check_typed<std::uint16_t>(f, name);
    case D::u8: return check_typed<std::uint8_t>(f, name);
    default: break;  // BOOL and F8: no typed view
  }
  // A typed view of the wrong type must be refused.
  try {
    f.data<float>(name);
    return "data<float>() accepted dtype " +
           std::string(moekit::safetensors_dtype_name(f.info(name).dtype));
  } catch (const moekit::Error&) {
  }
  return "";
}

inline std::string check_tensor(const moekit::SafetensorsFile& f, const std::string& name) {
  const moekit::TensorInfo& t = f.info(name);
  if (t.name != name) return "info().name differs";
  if (t.begin > t.end || t.end > f.file_size() - f.data_offset()) return "offsets outside the data";
  if (static_cast<std::uint64_t>(t.numel) * moekit::safetensors_dtype_size(t.dtype) != t.nbytes())
    return "numel x dtype size != nbytes for '" + name + "'";

  // Read every byte: ASan reports any view past the buffer.
  const moekit::ByteView raw = f.bytes(name);
  unsigned sum = 0;
  for (std::size_t i = 0; i < raw.size; ++i) sum += raw.data[i];
  volatile unsigned sink = sum;
  (void)sink;

  const moekit::Matrix m = f.to_matrix(name);
  if (m.rows() != t.rows() || m.cols() != t.cols() || m.size() != t.numel)
    return "to_matrix() shape differs from info() for '" + name + "'";
  if (t.dtype == moekit::SafetensorsDtype::f32 && t.numel > 0 &&
      std::memcmp(m.data(), raw.data, raw.size) != 0)
    return "to_matrix() of F32 is not bit-exact for '" + name + "'";

  try {
    const moekit::IdMatrix ids = f.to_ids(name);
    if (ids.size() != t.numel) return "to_ids() size differs for '" + name + "'";
  } catch (const moekit::Error&) {
  }
  return check_typed_any(f, name);
}

}  // namespace detail

/// Runs one input; returns "" when every invariant holds, else what broke.
inline std::string run_safetensors_input(const std::uint8_t* data, std::size_t size) {
  std::unique_ptr<moekit::SafetensorsFile> f;
  try {
    f = std::make_unique<moekit::SafetensorsFile>(
        moekit::SafetensorsFile::from_memory(data, size, "<fuzz input>"));
  } catch (const moekit::Error&) {
    return "";  // rejected cleanly
  }

  moekit::SafetensorsWriter w;
  for (const std::string& name : f->names()) {
    const std::string problem = detail::check_tensor(*f, name);
    if (!problem.empty()) return problem;
    const moekit::TensorInfo& t = f->info(name);
    w.add_raw(name, t.dtype, t.shape, f->bytes(name).data, t.nbytes());
  }
  for (const auto& kv : f->metadata()) {
    if (f->metadata(kv.first) != kv.second) return "metadata(key) differs from metadata()";
    w.set_metadata(kv.first, kv.second);
  }
  try {
    f->info("\x01 no such tensor \x02");
    return "a missing tensor did not throw";
  } catch (const moekit::Error&) {
  }

  // Rewrite and parse again: the same tensors, bytes and metadata.
  std::vector<std::uint8_t> bytes;
  try {
    bytes = w.to_bytes();
  } catch (const moekit::Error& e) {
    return std::string("the writer rejected a parsed file: ") + e.what();
  }
  try {
    const moekit::SafetensorsFile g = moekit::SafetensorsFile::from_bytes(std::move(bytes));
    if (g.names() != f->names()) return "rewrite changed the names";
    if (g.metadata() != f->metadata()) return "rewrite changed the metadata";
    for (const std::string& name : g.names()) {
      const moekit::TensorInfo& a = f->info(name);
      const moekit::TensorInfo& b = g.info(name);
      if (a.dtype != b.dtype || a.shape != b.shape || a.nbytes() != b.nbytes())
        return "rewrite changed tensor '" + name + "'";
      if (a.nbytes() > 0 && std::memcmp(f->bytes(name).data, g.bytes(name).data, a.nbytes()) != 0)
        return "rewrite changed the bytes of '" + name + "'";
    }
  } catch (const moekit::Error& e) {
    return std::string("the rewritten file does not parse: ") + e.what();
  }
  return "";
}

}  // namespace moekit_fuzz
