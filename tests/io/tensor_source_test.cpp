// SPDX-License-Identifier: MIT
// SafetensorsTensorSource: a sharded checkpoint made by the test, read through
// the TensorSource interface the presets use (shape as stored, flattened f32
// matrices, the checked overloads, a name prefix, missing names).
#include <gtest/gtest.h>

#include <string>
#include <vector>

#include "io_test_util.hpp"
#include "moekit/io/safetensors_source.hpp"
#include "moekit/io/safetensors_writer.hpp"

namespace {

using moekit::Matrix;

TEST(SafetensorsTensorSource, ReadsACheckpointThroughTheInterface) {
  moekit_io_test::TempDir dir;
  moekit::SafetensorsWriter w;
  const Matrix experts = Matrix::Random(4 * 3, 5);  // [E*f, d] stored as [E, f, d]
  const Matrix gate = Matrix::Random(4, 5);
  w.add("model.layers.1.mlp.experts.gate_up_proj", experts, moekit::SafetensorsDtype::f32, {4, 3, 5});
  w.add("model.layers.1.mlp.gate.weight", gate, moekit::SafetensorsDtype::bf16);
  w.add("model.layers.1.mlp.gate.bias", Matrix::Constant(1, 4, 0.5f), moekit::SafetensorsDtype::f32, {4});
  moekit::write_sharded_checkpoint(dir.path().string(), w, 2);

  const moekit::SafetensorsTensorSource source(dir.path().string());
  const moekit::TensorSource& src = source;
  EXPECT_TRUE(source.checkpoint().is_sharded());
  EXPECT_TRUE(src.contains("model.layers.1.mlp.gate.weight"));
  EXPECT_FALSE(src.contains("model.layers.1.mlp.gate.weights"));
  EXPECT_EQ(src.shape("model.layers.1.mlp.experts.gate_up_proj"), (std::vector<std::int64_t>{4, 3, 5}));
  EXPECT_EQ(src.matrix("model.layers.1.mlp.experts.gate_up_proj", 12, 5), experts);

  const moekit::PrefixedTensorSource layer(src, "model.layers.1.mlp.");
  const Matrix g = layer.matrix("gate.weight", 4, 5);
  for (moekit::Index i = 0; i < g.size(); ++i)
    EXPECT_EQ(g.data()[i], moekit::bf16_bits_to_float(moekit::float_to_bf16_bits(gate.data()[i])));
  EXPECT_EQ(layer.vector("gate.bias", 4), moekit::Vector::Constant(4, 0.5f));
  moekit_io_test::expect_contains(moekit_io_test::error_of([&] { layer.matrix("gate.weight", 5, 4); }),
                                  {"expected shape [5, 4], got [4, 5]"});
  moekit_io_test::expect_contains(moekit_io_test::error_of([&] { layer.matrix("gate.wieght"); }),
                                  {"no tensor named 'model.layers.1.mlp.gate.wieght'",
                                   "'model.layers.1.mlp.gate.weight'"});
}

}  // namespace
