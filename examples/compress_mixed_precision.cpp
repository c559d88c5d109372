// SPDX-License-Identifier: MIT
// compress_mixed_precision: give each expert its own bit width under a
// 3-bit average budget (MC-MoE's pre-loading mixed-precision allocation:
// frequency x routing weight x quantisation error, solved exactly), quantise
// group-wise, and print bits per expert, memory and output error, beside
// uniform 2-, 3- and 4-bit quantisation of the same block and beside the
// same solver minimising the sum of squared per-expert errors instead.
//
// Build alone:  g++ -std=c++17 -O2 -I<moekit>/include -I/usr/include/eigen3 compress_mixed_precision.cpp -pthread
#include <moekit/hooks/group_quantization.hpp>
#include <moekit/hooks/mixed_precision.hpp>
#include <moekit/moekit.hpp>

#include <cstdio>
#include <random>
#include <vector>

using moekit::Index;
using moekit::Matrix;

int main() {
  const Index E = 8, k = 2, d = 128, f = 256, group = 32;
  std::mt19937 gen(3);
  auto random = [&](Index rows, Index cols, float scale) {
    std::normal_distribution<float> dist(0.0f, scale);
    Matrix m(rows, cols);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = dist(gen);
    return m;
  };
  // A block whose router bias makes some experts much busier than others.
  moekit::Vector bias(E);
  bias << 1.5f, 1.0f, 0.6f, 0.3f, 0.0f, -0.3f, -0.6f, -1.0f;
  moekit::SwiGluMoEBlock block(
      moekit::Router<>(random(E, d, 0.1f), moekit::RouterOptions().with_top_k(k), bias),
      moekit::SwiGluExperts(E, random(E * f, d, 0.09f), random(E * f, d, 0.09f),
                            random(E * d, f, 0.06f)));
  const Matrix calib = random(256, d, 1.0f);

  const auto mixed = moekit::compress_mixed_precision(block, calib,
                                                      moekit::MixedPrecisionOptions()
                                                          .with_allowed_bits({2, 3, 4, 8})
                                                          .with_average_bits(3.0)
                                                          .with_group_size(group));

  std::printf(
      "%ld experts [d = %ld, f = %ld], top-%ld, %ld calibration tokens; budget 3.0 bits on "
      "average,\n"
      "widths {2, 3, 4, 8}, groups of %ld along the input dim, f16 scales\n\n",
      static_cast<long>(E), static_cast<long>(d), static_cast<long>(f), static_cast<long>(k),
      static_cast<long>(calib.rows()), static_cast<long>(group));
  const auto mixed_l2 = moekit::compress_mixed_precision(block, calib,
                                                         moekit::MixedPrecisionOptions()
                                                             .with_allowed_bits({2, 3, 4, 8})
                                                             .with_average_bits(3.0)
                                                             .with_group_size(group)
                                                             .with_exponents(0, 0, 2));
  std::printf(
      "  expert  freq.  weight   eps(2b)   eps(3b)   eps(4b)   eps(8b)  bits  bits(sum eps^2)\n");
  const auto& st = mixed.stats;
  for (Index e = 0; e < E; ++e) {
    const auto i = static_cast<std::size_t>(e);
    std::printf("  %6ld  %5.3f  %6.3f  %8.4f  %8.4f  %8.4f  %8.4f  %4d  %15d\n",
                static_cast<long>(e), st.frequency[i], st.weight[i], st.error[i][0], st.error[i][1],
                st.error[i][2], st.error[i][3], mixed.bits[i], mixed_l2.bits[i]);
  }

  std::printf(
      "\n(eps(b): ||Y - Y_q|| on the calibration tokens with that expert alone at b bits;\n"
      " MC-MoE minimises sum freq * weight^1.5 * eps, the other column sum eps^2)\n");
  std::printf("\n  %-22s %8s %14s %10s %14s\n", "scheme", "avg bits", "expert bytes", "vs f32",
              "output error");
  auto row = [&](const char* name, const moekit::MixedPrecisionResult<moekit::SwiGluMoEBlock>& r) {
    std::printf("  %-22s %8.3f %14lld %9.1f%% %14.5f\n", name, r.average_bits,
                static_cast<long long>(r.bytes),
                100.0 * static_cast<double>(r.bytes) / static_cast<double>(r.fp32_bytes),
                r.output_error);
  };
  std::printf("  %-22s %8s %14lld %9.1f%% %14s\n", "f32", "32",
              static_cast<long long>(mixed.fp32_bytes), 100.0, "0");
  for (const int b : {4, 3, 2}) {
    char name[32];
    std::snprintf(name, sizeof name, "uniform %d-bit", b);
    row(name, moekit::compress_mixed_precision(block, calib,
                                               moekit::MixedPrecisionOptions()
                                                   .with_allowed_bits({b})
                                                   .with_average_bits(b)
                                                   .with_group_size(group)));
  }
  row("mixed, MC-MoE PMQ", mixed);
  row("mixed, sum eps^2", mixed_l2);
  std::printf(
      "\n(output error: ||Y_q - Y|| / ||Y|| on the calibration tokens; bytes: bit-packed codes + "
      "one\n"
      " f16 scale per group; the bank holds the dequantised f32 weights: a simulation of any "
      "width)\n");

  // The widths the kernels run natively: int8 / int4 experts (symmetric, one f32 scale per 32
  // inputs), and how the activations meet them (Bf16Math): f32 (widen), rounded to bf16 (dot:
  // vdpbf16ps, or AMX tiles) or quantised to int8 per 32 inputs (int8_dot: vpdpbusd with AVX-512
  // VNNI, integer multiply-adds with AVX2, SDOT on NEON with DotProd). Where the CPU lacks an
  // instruction the next option down runs; the last column says what ran.
  const Matrix y32 = block.forward(calib);
  std::printf("\n  %-26s %14s %14s  %s\n", "kernels: weights, math", "expert bytes", "output error",
              "ran");
  for (const moekit::Dtype t : {moekit::Dtype::i8, moekit::Dtype::i4}) {
    moekit::SwiGluMoEBlock q = block;
    q.experts().set_weight_dtype(t);
    const struct {
      const char* name;
      moekit::Bf16Math math;
    } maths[] = {{"widen", moekit::Bf16Math::widen},
                 {"dot", moekit::Bf16Math::dot},
                 {"int8_dot", moekit::Bf16Math::int8_dot}};
    for (const auto& m : maths) {
      q.experts().set_bf16_math(m.math);
      const double err = (q.forward(calib) - y32).norm() / y32.norm();
      const char* ran = q.experts().quant_uses_int8_activations() ? "int8 x int8 (integer)"
                        : q.experts().quant_uses_dot()            ? "bf16 x bf16 (dot / tiles)"
                                                                  : "f32 x f32 (FMA)";
      char name[40];
      std::snprintf(name, sizeof name, "%s, %s", moekit::dtype_name(t), m.name);
      std::printf("  %-26s %14lld %14.5f  %s\n", name,
                  static_cast<long long>(E * q.experts().bytes_of_expert(0)), err, ran);
    }
  }
  return mixed.average_bits <= 3.0 && mixed_l2.average_bits <= 3.0 ? 0 : 1;
}
