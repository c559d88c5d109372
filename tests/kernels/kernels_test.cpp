// SPDX-License-Identifier: MIT
// Every kernel on every ISA this machine has (capped with set_max_isa, as
// MOEKIT_MAX_ISA does) against double-precision sums, on the odd shapes that
// break SIMD code: one row, widths one either side of the vector width, K = 1,
// column blocks that start mid-matrix; then whole blocks per ISA against the
// reference and across thread counts.
//
// Tolerances: kernel outputs are f32 sums of K products of N(0,1) values;
// the error bound asserted is 1e-5 · sqrt(K) · scale (measured errors are
// ~1e-6 · sqrt(K)). SiLU uses a polynomial exp (relative error ~2e-7): 1e-6
// relative. Results are bit-identical across thread counts within one ISA, not
// across ISAs (different summation order), which the tests state separately.
#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <random>
#include <string>
#include <utility>
#include <vector>

#include "moekit/kernels/roofline.hpp"
#include "test_util.hpp"

namespace {

using moekit::AlignedBuffer;
using moekit::Index;
using moekit::Isa;
using moekit::Matrix;
namespace kernels = moekit::kernels;
using moekit_test::random_matrix;

class PerIsa : public ::testing::TestWithParam<Isa> {
 protected:
  void SetUp() override { moekit::set_max_isa(GetParam()); }
  void TearDown() override { moekit::clear_max_isa(); }
};

// Which ISAs have bf16 dot-product kernels: AVX-512 BF16 (vdpbf16ps), AMX
// (tiles), NEON with BF16.
bool expects_bf16_dot(Isa isa) {
  return isa == Isa::avx512_bf16 || isa == Isa::avx512_amx ||
         (isa == Isa::neon && moekit::cpu_features().neon_bf16);
}

// Which ISAs have AVX-512 VNNI and the vdpbf16ps kernels (avx512_amx keeps
// them for what the tile kernels do not cover).
bool has_avx512_bf16(Isa isa) { return isa == Isa::avx512_bf16 || isa == Isa::avx512_amx; }

// Whether a block's bf16 experts run them: the ISA has them and the bf16 dot
// policy (Intel without AMX: off by default; MOEKIT_BF16_DOT) lets them run.
bool expects_block_bf16_dot(Isa isa) {
  return expects_bf16_dot(isa) && moekit::bf16_dot_enabled(isa);
}

// Which ISAs have int8-activation kernels: every x86 one, NEON with DotProd.
bool expects_int8_activations(Isa isa) {
  return isa == Isa::neon ? moekit::cpu_features().neon_dotprod : isa != Isa::scalar;
}

std::string isa_test_name(const ::testing::TestParamInfo<Isa>& info) {
  return moekit::isa_name(info.param);
}

// m rounded to bf16 (nearest even) value by value, as the vdpbf16ps kernels round activations.
Matrix round_to_bf16(Matrix m) {
  for (Index i = 0; i < m.size(); ++i) m.data()[i] = static_cast<float>(moekit::bf16(m.data()[i]));
  return m;
}

// Weights quantised panel by panel with quantize_panel in both layouts: a
// copy of W as a plain weight (16 values per k-row: c16, s16) and W, W2 as
// gate and up (32: c32, s32). Quantising writes code · scale back, so Wd, W
// and W2 end up holding the dequantised masters the kernels compute with.
struct QuantizedPanels {
  Matrix Wd, W, W2;
  std::vector<std::uint8_t> c16, c32;
  std::vector<float> s16, s32;
  QuantizedPanels(Matrix w, Matrix w2, int bits) : Wd(w), W(std::move(w)), W2(std::move(w2)) {
    const Index N = W.rows(), K = W.cols(), np = kernels::panels(N);
    c16.resize(static_cast<std::size_t>(np * kernels::quant_panel_code_bytes(K, 16, bits)));
    s16.resize(static_cast<std::size_t>(np * kernels::quant_panel_scales(K, 16)));
    c32.resize(static_cast<std::size_t>(np * kernels::quant_panel_code_bytes(K, 32, bits)));
    s32.resize(static_cast<std::size_t>(np * kernels::quant_panel_scales(K, 32)));
    float* one[1] = {Wd.data()};
    float* two[2] = {W.data(), W2.data()};
    for (Index p = 0; p < np; ++p) {
      kernels::quantize_panel(one, 1, N, K, p, bits,
                              c16.data() + p * kernels::quant_panel_code_bytes(K, 16, bits),
                              s16.data() + p * kernels::quant_panel_scales(K, 16));
      kernels::quantize_panel(two, 2, N, K, p, bits,
                              c32.data() + p * kernels::quant_panel_code_bytes(K, 32, bits),
                              s32.data() + p * kernels::quant_panel_scales(K, 32));
    }
  }
};

// One pair of quantised entry points (matmul, gate_up) on A against the
// double products Ar·Wdᵀ, Ar·Wᵀ, Ar·W2ᵀ within 1e-5·sqrt(K) of the output
// scale (f32 summation): whole and split column ranges (the first call must
// not write past its range), and row 0's bytes the same when computed alone.
void check_quant_entry_points(kernels::KernelTable::QMatmulFn matmul,
                              kernels::KernelTable::QGateUpFn gate_up, const Matrix& A,
                              const Eigen::MatrixXd& Ar, const QuantizedPanels& q,
                              const std::string& what) {
  const Index m = A.rows(), K = A.cols(), N = q.W.rows();
  const Eigen::MatrixXd ref = Ar * q.Wd.cast<double>().transpose(),
                        refg = Ar * q.W.cast<double>().transpose(),
                        refu = Ar * q.W2.cast<double>().transpose();
  const double scale = std::max(
      {1.0, ref.cwiseAbs().maxCoeff(), refg.cwiseAbs().maxCoeff(), refu.cwiseAbs().maxCoeff()});
  const double tol = 1e-5 * std::sqrt(static_cast<double>(K)) * scale;
  const auto run = [&](Index rows, Index c0, Index c1, Matrix& Y, Matrix& G, Matrix& U) {
    matmul(A.data(), K, rows, K, q.c16.data(), q.s16.data(), N, c0, c1, Y.data(), N);
    gate_up({A.data(), K}, rows, K, q.c32.data(), q.s32.data(), N, c0, c1, G.data(), U.data(), N);
  };
  for (Index split : {N, (N > 32 ? Index(32) : N)}) {
    Matrix Y = Matrix::Constant(m, N, 777.0f), G = Y, U = Y;
    run(m, 0, split, Y, G, U);
    if (split < N) {
      ASSERT_EQ(Y(0, split), 777.0f) << "wrote past its column range: " << what;
      ASSERT_EQ(Y(m - 1, split), 777.0f) << "wrote past its column range: " << what;
      ASSERT_EQ(G(m - 1, split), 777.0f) << "wrote past its column range: " << what;
      ASSERT_EQ(U(m - 1, split), 777.0f) << "wrote past its column range: " << what;
      run(m, split, N, Y, G, U);
    }
    ASSERT_LE((Y.cast<double>() - ref).cwiseAbs().maxCoeff(), tol) << "matmul " << what;
    ASSERT_LE((G.cast<double>() - refg).cwiseAbs().maxCoeff(), tol) << "gate " << what;
    ASSERT_LE((U.cast<double>() - refu).cwiseAbs().maxCoeff(), tol) << "up " << what;
  }
  // A row's bytes do not depend on how many rows share the call (tile shape).
  Matrix Y1(1, N), G1(1, N), U1(1, N), Ym(m, N), Gm(m, N), Um(m, N);
  run(1, 0, N, Y1, G1, U1);
  run(m, 0, N, Ym, Gm, Um);
  ASSERT_TRUE(moekit_test::bit_identical(Y1, Ym.topRows(1))) << "row count changed row 0: " << what;
  ASSERT_TRUE(moekit_test::bit_identical(G1, Gm.topRows(1))) << "row count changed row 0: " << what;
  ASSERT_TRUE(moekit_test::bit_identical(U1, Um.topRows(1))) << "row count changed row 0: " << what;
}

TEST_P(PerIsa, CapIsHonoured) {
  EXPECT_EQ(moekit::active_isa(), GetParam());
  EXPECT_EQ(kernels::active().isa, GetParam());
}

TEST_P(PerIsa, MatmulAndGateUpOnOddShapes) {
  const auto& k = kernels::active();
  std::mt19937 gen(1);
  for (Index m : {1, 2, 5, 11, 12, 13, 25})
    for (Index K : {1, 7, 8, 9, 15, 16, 17, 64})
      for (Index N : {1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 48, 64, 70}) {
        const Matrix A = random_matrix(m, K, static_cast<std::uint32_t>(m * 1000 + K * 10 + N));
        const Matrix W = random_matrix(N, K, static_cast<std::uint32_t>(N + 7)),
                     W2 = random_matrix(N, K, static_cast<std::uint32_t>(N + 8));
        AlignedBuffer<float> p(static_cast<std::size_t>(kernels::packed_size(N, K)));
        AlignedBuffer<float> pgu(static_cast<std::size_t>(kernels::packed_gate_up_size(N, K)));
        kernels::pack_panels(W.data(), N, K, p.data());
        kernels::pack_gate_up(W.data(), W2.data(), N, K, pgu.data());
        const Eigen::MatrixXd ref = A.cast<double>() * W.cast<double>().transpose();
        const Eigen::MatrixXd ref2 = A.cast<double>() * W2.cast<double>().transpose();
        const double tol =
            1e-5 * std::sqrt(static_cast<double>(K)) * std::max(1.0, ref.cwiseAbs().maxCoeff());
        // Whole range, and a split at a panel boundary: both halves written, nothing else.
        for (Index split : {N, (N > 16 ? Index(16) : N)}) {
          Matrix Y = Matrix::Constant(m, N, 777.0f), G = Y, U = Y;
          k.matmul_f32(A.data(), K, m, K, p.data(), N, 0, split, Y.data(), N);
          k.gate_up_f32({A.data(), K}, m, K, pgu.data(), N, 0, split, G.data(), U.data(), N);
          if (split < N) {
            EXPECT_EQ(Y(0, split), 777.0f) << "wrote past its column range";
            k.matmul_f32(A.data(), K, m, K, p.data(), N, split, N, Y.data(), N);
            k.gate_up_f32({A.data(), K}, m, K, pgu.data(), N, split, N, G.data(), U.data(), N);
          }
          ASSERT_LE((Y.cast<double>() - ref).cwiseAbs().maxCoeff(), tol)
              << "matmul m=" << m << " K=" << K << " N=" << N;
          ASSERT_LE((G.cast<double>() - ref).cwiseAbs().maxCoeff(), tol)
              << "gate m=" << m << " K=" << K << " N=" << N;
          ASSERT_LE((U.cast<double>() - ref2).cwiseAbs().maxCoeff(), tol)
              << "up m=" << m << " K=" << K << " N=" << N;
        }
      }
}

TEST_P(PerIsa, SiluMulAccuracyIncludingExtremes) {
  const auto& k = kernels::active();
  std::vector<float> g, u;
  for (int i = -2000; i <= 2000; ++i) g.push_back(static_cast<float>(i) * 0.05f);
  for (float v : {-1e30f, -200.0f, -88.5f, -87.0f, 87.0f, 88.5f, 200.0f, 1e30f, 0.0f, -0.0f})
    g.push_back(v);
  for (std::size_t i = 0; i < g.size(); ++i)
    u.push_back(1.0f + 0.001f * static_cast<float>(i % 97));
  for (Index n : {Index(g.size()), Index(1), Index(15), Index(17)}) {
    std::vector<float> h(static_cast<std::size_t>(n));
    k.silu_mul_f32(g.data(), u.data(), h.data(), n);
    for (Index i = 0; i < n; ++i) {
      const double gi = g[static_cast<std::size_t>(i)],
                   ref = gi / (1.0 + std::exp(-gi)) * u[static_cast<std::size_t>(i)];
      ASSERT_TRUE(std::isfinite(h[static_cast<std::size_t>(i)])) << gi;
      ASSERT_NEAR(h[static_cast<std::size_t>(i)], ref,
                  1e-6 * std::max(1e-30, std::fabs(ref)) + 1e-30)
          << "g = " << gi;
    }
  }
  // In place (h aliases g), as the experts use it.
  std::vector<float> gg = g;
  k.silu_mul_f32(gg.data(), u.data(), gg.data(), static_cast<Index>(gg.size()));
  EXPECT_NEAR(gg[2100], 5.0 / (1 + std::exp(-5.0)) * u[2100], 1e-5);
}

TEST_P(PerIsa, BlockMatchesReferenceAndIsThreadInvariant) {
  struct Case {
    Index T, E, k, d, f;
  };
  for (const Case c : {Case{1, 8, 2, 33, 47}, Case{7, 8, 2, 16, 16}, Case{64, 16, 4, 17, 15},
                       Case{200, 8, 8, 40, 70}, Case{33, 64, 2, 31, 33}}) {
    moekit::SwiGluMoEBlock block =
        moekit_test::random_block(c.E, c.d, c.f, c.k, static_cast<std::uint32_t>(c.T + c.E));
    const Matrix x = random_matrix(c.T, c.d, 3);
    const Matrix y = block.forward(x);
    const Matrix ref = moekit::reference::forward(block, x);
    EXPECT_LE(moekit_test::max_abs_diff(y, ref),
              moekit_test::kBlockTolerance * moekit_test::scale_of(ref))
        << c.T << "x" << c.d;
    for (int threads : {2, 3, 5, 16}) {
      moekit::ThreadPoolExecutor pool(threads);
      Matrix y2(c.T, c.d);
      block.forward(x, y2, pool);
      EXPECT_TRUE(moekit_test::bit_identical(y, y2)) << threads << " threads";
    }
    // Batch composition: a token's output does not depend on the other tokens.
    if (c.T > 3) {
      const Matrix y_first = block.forward(x.topRows(3));
      EXPECT_TRUE(moekit_test::bit_identical(y_first, y.topRows(3)));
    }
  }
}

// Shared experts run in the block's expert phases, split over columns on
// every thread (one task per chunk of tokens before): against the reference,
// bit-identical for any thread count, a token's output independent of the
// batch, and y aliasing x. A shared FFN width other than the routed one, one
// or two shared experts, with and without the sigmoid gate, f32 / bf16 / int8.
TEST_P(PerIsa, BlockWithSharedExperts) {
  struct Case {
    Index T, S, fs;
    bool gated;
    moekit::Dtype dtype;
  };
  const Index E = 8, d = 33, f = 20;
  for (const Case c :
       {Case{1, 1, 40, false, moekit::Dtype::f32}, Case{7, 2, 17, true, moekit::Dtype::f32},
        Case{70, 1, 48, true, moekit::Dtype::f32}, Case{1, 2, 33, true, moekit::Dtype::bf16},
        Case{40, 1, 64, false, moekit::Dtype::bf16}, Case{9, 1, 40, true, moekit::Dtype::i8}}) {
    SCOPED_TRACE(testing::Message() << "T " << c.T << " S " << c.S << " fs " << c.fs << " "
                                    << moekit::dtype_name(c.dtype));
    moekit::SwiGluMoEBlock block =
        moekit_test::random_block(E, d, f, 2, static_cast<std::uint32_t>(c.T + c.fs));
    moekit::SwiGluExperts bank(c.S, random_matrix(c.S * c.fs, d, 11, 0.3f),
                               random_matrix(c.S * c.fs, d, 12, 0.3f),
                               random_matrix(c.S * d, c.fs, 13, 0.3f));
    bank.set_weight_dtype(c.dtype).set_bf16_math(moekit::Bf16Math::widen);
    block.experts().set_weight_dtype(c.dtype).set_bf16_math(moekit::Bf16Math::widen);
    block.set_shared_experts(moekit::SharedExperts<>(
        std::move(bank),
        c.gated ? moekit::Vector(random_matrix(1, d, 14).row(0).transpose()) : moekit::Vector()));
    const Matrix x = random_matrix(c.T, d, 3);
    const Matrix y = block.forward(x);
    const Matrix ref = moekit::reference::forward(block, x);
    EXPECT_LE(moekit_test::max_abs_diff(y, ref),
              moekit_test::kBlockTolerance * moekit_test::scale_of(ref));
    for (int threads : {2, 3, 5, 16}) {
      moekit::ThreadPoolExecutor pool(threads);
      Matrix y2(c.T, d);
      block.forward(x, y2, pool);
      EXPECT_TRUE(moekit_test::bit_identical(y, y2)) << threads << " threads";
    }
    const Matrix y_first = block.forward(x.topRows(1));
    EXPECT_TRUE(moekit_test::bit_identical(y_first, y.topRows(1)));
    Matrix xy = x;  // y aliases x
    moekit::ThreadPoolExecutor pool(2);
    block.forward(xy, xy, pool);
    EXPECT_TRUE(moekit_test::bit_identical(xy, y));
  }
}

TEST_P(PerIsa, AllTokensOnOneExpertAndEmptyExperts) {
  const Index E = 8, d = 37, f = 45, T = 90;
  moekit::SwiGluMoEBlock block = moekit_test::random_block(E, d, f, 1, 5);
  Matrix w = Matrix::Zero(E, d);
  w(6, 0) = 20.0f;
  block = moekit::SwiGluMoEBlock(moekit::Router<>(w, moekit::RouterOptions().with_top_k(1)),
                                 block.experts());
  Matrix x = random_matrix(T, d, 6);
  x.col(0).setConstant(1.0f);
  const Matrix y = block.forward(x);
  EXPECT_EQ(block.last_groups().count(6), T);
  const Matrix ref = moekit::reference::forward(block, x);
  EXPECT_LE(moekit_test::max_abs_diff(y, ref),
            moekit_test::kBlockTolerance * moekit_test::scale_of(ref));
  moekit::ThreadPoolExecutor pool(2);
  Matrix y2(T, d);
  block.forward(x, y2, pool);
  EXPECT_TRUE(moekit_test::bit_identical(y, y2));
}

// bf16 / f16 weights: kernels widen to f32 as they load, so the result is f32
// arithmetic on the rounded weights: the same tolerance as f32 against a
// double product of the rounded weights.
template <class T>
void check_half_kernels() {
  const auto& k = kernels::active();
  for (Index m : {1, 3, 4, 7, 13})
    for (Index K : {1, 9, 33})
      for (Index N : {1, 15, 16, 17, 40, 64, 70}) {  // 64, 70: one row runs 4 panels at once
        const Matrix A = random_matrix(m, K, static_cast<std::uint32_t>(m + K + N));
        Matrix W = random_matrix(N, K, 5), W2 = random_matrix(N, K, 6);
        for (Matrix* w : {&W, &W2})
          for (Index i = 0; i < w->size(); ++i) w->data()[i] = static_cast<float>(T(w->data()[i]));
        AlignedBuffer<T> p(static_cast<std::size_t>(kernels::packed_size<T>(N, K)));
        AlignedBuffer<T> pgu(static_cast<std::size_t>(kernels::packed_gate_up_size<T>(N, K)));
        kernels::pack_panels(W.data(), N, K, p.data());
        kernels::pack_gate_up(W.data(), W2.data(), N, K, pgu.data());
        Matrix Y(m, N), G(m, N), U(m, N);
        k.matmul(p.data())(A.data(), K, m, K, p.data(), N, 0, N, Y.data(), N);
        k.gate_up(pgu.data())({A.data(), K}, m, K, pgu.data(), N, 0, N, G.data(), U.data(), N);
        const Eigen::MatrixXd ref = A.cast<double>() * W.cast<double>().transpose();
        const Eigen::MatrixXd ref2 = A.cast<double>() * W2.cast<double>().transpose();
        const double tol =
            1e-5 * std::sqrt(static_cast<double>(K)) * std::max(1.0, ref.cwiseAbs().maxCoeff());
        ASSERT_LE((Y.cast<double>() - ref).cwiseAbs().maxCoeff(), tol) << m << " " << K << " " << N;
        ASSERT_LE((G.cast<double>() - ref).cwiseAbs().maxCoeff(), tol);
        ASSERT_LE((U.cast<double>() - ref2).cwiseAbs().maxCoeff(), tol);
        // Row 0 alone (one tile, weights widened in registers) has the bytes
        // it has among m rows (AVX2: each panel decoded once to f32).
        Matrix Y1(1, N), G1(1, N), U1(1, N);
        k.matmul(p.data())(A.data(), K, 1, K, p.data(), N, 0, N, Y1.data(), N);
        k.gate_up(pgu.data())({A.data(), K}, 1, K, pgu.data(), N, 0, N, G1.data(), U1.data(), N);
        ASSERT_TRUE(moekit_test::bit_identical(Y1, Y.topRows(1))) << m << " " << K << " " << N;
        ASSERT_TRUE(moekit_test::bit_identical(G1, G.topRows(1))) << m << " " << K << " " << N;
        ASSERT_TRUE(moekit_test::bit_identical(U1, U.topRows(1))) << m << " " << K << " " << N;
      }
}

TEST_P(PerIsa, Bf16AndF16WeightKernels) {
  check_half_kernels<moekit::bf16>();
  check_half_kernels<moekit::f16>();
}

// bf16 dot-product kernels (vdpbf16ps on avx512_bf16, BFDOT on NEON with
// BF16, whose pair sums round to odd: within the same bound): the products of bf16 values are exact
// in f32, so against a double product of the bf16-rounded activations and
// weights the f32 summation tolerance holds. Row counts both sides of the wide
// tiles (6) and the row tile (12), odd K (a zero-padded last pair).
TEST_P(PerIsa, Bf16DotKernelsAgainstRoundedProducts) {
  const auto& k = kernels::active();
  EXPECT_EQ(k.gate_up_bf16_dot != nullptr, expects_bf16_dot(GetParam()));
  if (!k.gate_up_bf16_dot) {
    GTEST_SKIP() << "no bf16 dot products on " << moekit::isa_name(GetParam());
  }
  // (and both sides of the AMX tile rows, 16 and 32, and k-chunks, 32 inputs)
  for (Index m : {1, 2, 6, 7, 12, 13, 16, 17, 30, 33})
    for (Index K : {1, 2, 15, 16, 17, 33, 64, 100})
      for (Index N : {1, 15, 16, 17, 40, 64, 70}) {
        const Matrix A = random_matrix(m, K, static_cast<std::uint32_t>(3 * m + K + N));
        const Matrix W = round_to_bf16(random_matrix(N, K, 15)),
                     W2 = round_to_bf16(random_matrix(N, K, 16));
        AlignedBuffer<moekit::bf16> p(
            static_cast<std::size_t>(kernels::packed_size<moekit::bf16>(N, K)));
        AlignedBuffer<moekit::bf16> pgu(
            static_cast<std::size_t>(kernels::packed_gate_up_size<moekit::bf16>(N, K)));
        kernels::pack_panels(W.data(), N, K, p.data());
        kernels::pack_gate_up(W.data(), W2.data(), N, K, pgu.data());
        const Eigen::MatrixXd Ar = round_to_bf16(A).cast<double>();
        const Eigen::MatrixXd ref = Ar * W.cast<double>().transpose(),
                              ref2 = Ar * W2.cast<double>().transpose();
        const double tol =
            1e-5 * std::sqrt(static_cast<double>(K)) * std::max(1.0, ref.cwiseAbs().maxCoeff());
        for (Index split : {N, (N > 32 ? Index(32) : N)}) {
          Matrix Y = Matrix::Constant(m, N, 777.0f), G = Y, U = Y;
          k.matmul_bf16_dot(A.data(), K, m, K, p.data(), N, 0, split, Y.data(), N);
          k.gate_up_bf16_dot({A.data(), K}, m, K, pgu.data(), N, 0, split, G.data(), U.data(), N);
          if (split < N) {
            ASSERT_EQ(Y(0, split), 777.0f) << "wrote past its column range";
            k.matmul_bf16_dot(A.data(), K, m, K, p.data(), N, split, N, Y.data(), N);
            k.gate_up_bf16_dot({A.data(), K}, m, K, pgu.data(), N, split, N, G.data(), U.data(), N);
          }
          ASSERT_LE((Y.cast<double>() - ref).cwiseAbs().maxCoeff(), tol)
              << "matmul m=" << m << " K=" << K << " N=" << N;
          ASSERT_LE((G.cast<double>() - ref).cwiseAbs().maxCoeff(), tol)
              << "gate m=" << m << " K=" << K << " N=" << N;
          ASSERT_LE((U.cast<double>() - ref2).cwiseAbs().maxCoeff(), tol)
              << "up m=" << m << " K=" << K << " N=" << N;
        }
        Matrix Y1(1, N), Ym(m, N);
        k.matmul_bf16_dot(A.data(), K, 1, K, p.data(), N, 0, N, Y1.data(), N);
        k.matmul_bf16_dot(A.data(), K, m, K, p.data(), N, 0, N, Ym.data(), N);
        ASSERT_TRUE(moekit_test::bit_identical(Y1, Ym.topRows(1)))
            << "row count changed row 0: m=" << m;
      }
}

TEST_P(PerIsa, BlockWithHalfPrecisionWeights) {
  for (moekit::Dtype t : {moekit::Dtype::bf16, moekit::Dtype::f16}) {
    moekit::SwiGluMoEBlock block = moekit_test::random_block(16, 45, 37, 4, 11);
    const Matrix x = random_matrix(50, 45, 12);
    const Matrix y32 = block.forward(x);
    block.experts().set_weight_dtype(t);
    EXPECT_EQ(block.experts().weight_dtype(), t);
    const Matrix y = block.forward(x);
    // Against the reference on the rounded (dequantized) weights: f32
    // tolerance when the kernels widen; with vdpbf16ps the activations are
    // rounded to bf16 too (2^-9 relative each), so 1e-2 of the output scale.
    const Matrix ref = moekit::reference::forward(block, x);
    const bool dot = t == moekit::Dtype::bf16 && block.experts().bf16_uses_dot();
    EXPECT_EQ(dot, t == moekit::Dtype::bf16 && expects_block_bf16_dot(GetParam()));
    EXPECT_LE(moekit_test::max_abs_diff(y, ref),
              (dot ? 1e-2 : moekit_test::kBlockTolerance) * moekit_test::scale_of(ref))
        << moekit::dtype_name(t);
    if (dot) {  // widen: f32 activations, f32 tolerance on every ISA
      block.experts().set_bf16_math(moekit::Bf16Math::widen);
      EXPECT_FALSE(block.experts().bf16_uses_dot());
      EXPECT_LE(moekit_test::max_abs_diff(block.forward(x), ref),
                moekit_test::kBlockTolerance * moekit_test::scale_of(ref));
      block.experts().set_bf16_math(moekit::Bf16Math::dot);
      EXPECT_TRUE(moekit_test::bit_identical(block.forward(x), y));
    }
    // Against the f32 block: the weight rounding itself (bf16: 2^-9 relative per weight).
    EXPECT_LE(moekit_test::max_abs_diff(y, y32),
              (t == moekit::Dtype::bf16 ? 3e-2 : 4e-3) * moekit_test::scale_of(y32));
    moekit::ThreadPoolExecutor pool(2);
    Matrix y2(50, 45);
    block.forward(x, y2, pool);
    EXPECT_TRUE(moekit_test::bit_identical(y, y2));
  }
  moekit::SwiGluMoEBlock block = moekit_test::random_block(4, 8, 8, 2, 1);
  EXPECT_THROW(block.experts().set_weight_dtype(moekit::Dtype::i32), moekit::Error);
}

// int8 / int4 weights with group-wise scales: the masters become the
// dequantised values, so against the reference the f32 tolerance holds when
// the kernels dequantise (widen), and 1e-2 of the output scale with vdpbf16ps
// (activations rounded to bf16, as BlockWithHalfPrecisionWeights); the
// quantisation error itself (vs the f32 block) is bounded separately.
TEST_P(PerIsa, BlockWithQuantizedWeights) {
  for (moekit::Dtype t : {moekit::Dtype::i8, moekit::Dtype::i4}) {
    moekit::SwiGluMoEBlock block =
        moekit_test::random_block(12, 70, 45, 3, 21);  // d, f not multiples of 32
    const Matrix x = random_matrix(40, 70, 22);
    const Matrix y32 = block.forward(x);
    const Index bytes32 = block.experts().bytes_of_expert(0);
    block.experts().set_weight_dtype(t);
    const Matrix y = block.forward(x);
    const Matrix ref = moekit::reference::forward(block, x);
    EXPECT_EQ(block.experts().bf16_uses_dot(), expects_block_bf16_dot(GetParam()));
    // int8 / int4 through vdpbf16ps or AMX tiles: x86 only (NEON's dot math
    // keeps them on f32 kernels).
    EXPECT_EQ(kernels::active().gate_up_q8_dot != nullptr, has_avx512_bf16(GetParam()));
    const bool dot = has_avx512_bf16(GetParam()) && moekit::bf16_dot_enabled();
    EXPECT_EQ(block.experts().quant_uses_dot(), dot);
    EXPECT_LE(moekit_test::max_abs_diff(y, ref),
              (dot ? 1e-2 : moekit_test::kBlockTolerance) * moekit_test::scale_of(ref))
        << moekit::dtype_name(t);
    if (dot) {  // widen: exactly the dequantised weights, f32 activations, f32 tolerance
      block.experts().set_bf16_math(moekit::Bf16Math::widen);
      EXPECT_LE(moekit_test::max_abs_diff(block.forward(x), ref),
                moekit_test::kBlockTolerance * moekit_test::scale_of(ref));
      block.experts().set_bf16_math(moekit::Bf16Math::dot);
      EXPECT_TRUE(moekit_test::bit_identical(block.forward(x), y));
    }
    // int8 activations (every x86 ISA, NEON with DotProd; scalar widens): each input off
    // by up to max|a| / 254 of its group, where bf16 rounding is off by
    // |a| · 2^-9, so a few times the dot bound (measured: 1.0e-2 int8, 0.9e-2
    // int4 on this block).
    block.experts().set_bf16_math(moekit::Bf16Math::int8_dot);
    EXPECT_EQ(block.experts().quant_uses_int8_activations(), expects_int8_activations(GetParam()));
    const Matrix y8 = block.forward(x);
    const double err8 = moekit_test::max_abs_diff(y8, ref) / moekit_test::scale_of(ref);
    EXPECT_LE(err8, block.experts().quant_uses_int8_activations() ? 3e-2
                    : dot                                         ? 1e-2
                                                                  : moekit_test::kBlockTolerance)
        << moekit::dtype_name(t);
    Matrix y8t(40, 70);
    moekit::ThreadPoolExecutor pool2(2);
    block.forward(x, y8t, pool2);
    EXPECT_TRUE(moekit_test::bit_identical(y8, y8t));
    block.experts().set_bf16_math(moekit::Bf16Math::dot);
    EXPECT_LE(moekit_test::max_abs_diff(y, y32),
              (t == moekit::Dtype::i8 ? 3e-2 : 0.5) * moekit_test::scale_of(y32));
    EXPECT_LT(block.experts().bytes_of_expert(0), bytes32 / (t == moekit::Dtype::i8 ? 3 : 5));
    moekit::ThreadPoolExecutor pool(3);
    Matrix y3(40, 70);
    block.forward(x, y3, pool);
    EXPECT_TRUE(moekit_test::bit_identical(y, y3));
    // Quantising again is the identity: the masters already hold code · scale.
    block.experts().set_weight_dtype(t);
    EXPECT_TRUE(moekit_test::bit_identical(block.forward(x), y));
  }
}

TEST_P(PerIsa, MixedPrecisionPerExpert) {
  moekit::SwiGluMoEBlock block = moekit_test::random_block(6, 48, 40, 2, 31);
  const moekit::Dtype types[6] = {moekit::Dtype::f32, moekit::Dtype::bf16, moekit::Dtype::f16,
                                  moekit::Dtype::i8,  moekit::Dtype::i4,   moekit::Dtype::i8};
  for (Index e = 0; e < 6; ++e) block.experts().set_expert_dtype(e, types[e]);
  block.experts().set_bf16_math(
      moekit::Bf16Math::widen);  // f32 activations: the f32 tolerance below
  for (Index e = 0; e < 6; ++e) EXPECT_EQ(block.experts().expert_dtype(e), types[e]);
  const Matrix x = random_matrix(64, 48, 32);
  const Matrix y = block.forward(x);
  const Matrix ref = moekit::reference::forward(block, x);
  EXPECT_LE(moekit_test::max_abs_diff(y, ref),
            moekit_test::kBlockTolerance * moekit_test::scale_of(ref));
  EXPECT_GT(block.experts().bytes_of_expert(0), block.experts().bytes_of_expert(3));
  EXPECT_GT(block.experts().bytes_of_expert(3), block.experts().bytes_of_expert(4));
}

// The bf16 dot policy (set_bf16_dot, MOEKIT_BF16_DOT): off computes bf16,
// int8 and int4 experts exactly as Bf16Math::widen; on runs the dot kernels
// where the ISA has them (their rounded activations change the bytes);
// automatic follows the CPU (off where vdpbf16ps runs at half rate: Intel).
TEST_P(PerIsa, Bf16DotPolicy) {
  struct Restore {
    ~Restore() { moekit::clear_bf16_dot(); }
  } restore;
  for (moekit::Dtype t : {moekit::Dtype::bf16, moekit::Dtype::i8, moekit::Dtype::i4}) {
    SCOPED_TRACE(moekit::dtype_name(t));
    moekit::SwiGluMoEBlock block = moekit_test::random_block(8, 40, 36, 2, 41);
    block.experts().set_weight_dtype(t);
    const Matrix x = random_matrix(30, 40, 42);
    block.experts().set_bf16_math(moekit::Bf16Math::widen);
    const Matrix y_widen = block.forward(x);
    block.experts().set_bf16_math(moekit::Bf16Math::dot);

    moekit::set_bf16_dot(moekit::Bf16Dot::off);
    EXPECT_FALSE(moekit::bf16_dot_enabled());
    EXPECT_FALSE(block.experts().bf16_uses_dot());
    EXPECT_FALSE(block.experts().quant_uses_dot());
    EXPECT_TRUE(moekit_test::bit_identical(block.forward(x), y_widen));

    moekit::set_bf16_dot(moekit::Bf16Dot::on);
    const bool dot_runs =
        t == moekit::Dtype::bf16 ? expects_bf16_dot(GetParam()) : has_avx512_bf16(GetParam());
    EXPECT_EQ(t == moekit::Dtype::bf16 ? block.experts().bf16_uses_dot()
                                       : block.experts().quant_uses_dot(),
              dot_runs);
    const Matrix y_on = block.forward(x);
    EXPECT_EQ(moekit_test::bit_identical(y_on, y_widen), !dot_runs);

    moekit::set_bf16_dot(moekit::Bf16Dot::automatic);
    EXPECT_EQ(moekit::bf16_dot_enabled(),
              GetParam() == Isa::avx512_amx || !moekit::cpu_features().bf16_dot_half_rate);
    EXPECT_TRUE(
        moekit_test::bit_identical(block.forward(x), moekit::bf16_dot_enabled() ? y_on : y_widen));
    // int8_dot's bf16 experts follow the policy too.
    if (t == moekit::Dtype::bf16) {
      block.experts().set_bf16_math(moekit::Bf16Math::int8_dot);
      moekit::set_bf16_dot(moekit::Bf16Dot::off);
      EXPECT_TRUE(moekit_test::bit_identical(block.forward(x), y_widen));
    }
  }
  // Without the API setting, MOEKIT_BF16_DOT decides (the suite runs once
  // more under MOEKIT_BF16_DOT=off: tests/kernels/CMakeLists.txt).
  moekit::clear_bf16_dot();
  const char* env = std::getenv("MOEKIT_BF16_DOT");
  if (env && std::string(env) == "off") {
    EXPECT_FALSE(moekit::bf16_dot_enabled());
  }
  if (env && std::string(env) == "on") {
    EXPECT_TRUE(moekit::bf16_dot_enabled());
  }
  if (moekit::cpu_features().bf16_dot_half_rate) {
    EXPECT_TRUE(moekit::cpu_features().avx512bf16);
  }
}

// The vendor test behind bf16_dot_half_rate agrees with the kernel's
// /proc/cpuinfo (Linux on x86: half rate exactly on GenuineIntel with AVX-512 BF16).
TEST(CpuFeatures, Bf16DotHalfRateIsIntelWithAvx512Bf16) {
  std::ifstream info("/proc/cpuinfo");
  std::string line, vendor;
  while (vendor.empty() && std::getline(info, line))
    if (line.rfind("vendor_id", 0) == 0) vendor = line.substr(line.find(':') + 2);
  if (vendor.empty()) GTEST_SKIP() << "no vendor_id in /proc/cpuinfo (not Linux on x86)";
  const moekit::CpuFeatures& f = moekit::cpu_features();
  EXPECT_EQ(f.bf16_dot_half_rate, vendor == "GenuineIntel" && f.avx512bf16) << vendor;
}

// AMX is detected where the kernel lists amx_bf16 and amx_tile (Linux grants
// the tile state on request since 5.16), and then it is the best ISA.
TEST(CpuFeatures, AmxWhereCpuinfoListsIt) {
  std::ifstream info("/proc/cpuinfo");
  std::string line, flags;
  while (flags.empty() && std::getline(info, line))
    if (line.rfind("flags", 0) == 0) flags = " " + line.substr(line.find(':') + 1) + " ";
  if (flags.empty()) GTEST_SKIP() << "no flags in /proc/cpuinfo (not Linux on x86)";
  const auto has = [&](const char* f) {
    return flags.find(std::string(" ") + f + " ") != std::string::npos;
  };
  const moekit::CpuFeatures& cf = moekit::cpu_features();
  const bool listed = has("amx_bf16") && has("amx_tile") && has("avx512_bf16");
  if (!listed) {
    EXPECT_FALSE(cf.amx_bf16);
  }
  if (cf.amx_bf16) {
    EXPECT_TRUE(listed);
    EXPECT_EQ(moekit::detected_isa(), Isa::avx512_amx);
  }
  EXPECT_EQ(cf.amx_int8, cf.amx_bf16 && has("amx_int8"));
  if (listed && !cf.amx_bf16) GTEST_SKIP() << "the kernel refused the AMX tile state";
}

// The panel decoder the scalar kernels use gives back exactly the
// dequantised masters, for gate + up (W = 32) and plain (W = 16) panels. (The
// SIMD kernels decode in registers; QuantizedKernelsMatchDequantizedF32 checks
// them against the same masters on every ISA.)
TEST(Quantize, DequantisedPanelIsTheMasters) {
  for (int bits : {8, 4})
    for (Index W : {16, 32})
      for (Index K : {1, 31, 32, 33, 70}) {
        const int nsrc = static_cast<int>(W / 16);
        Matrix g = random_matrix(16, K, 41), u = random_matrix(16, K, 42);
        float* src[2] = {g.data(), u.data()};
        std::vector<std::uint8_t> codes(
            static_cast<std::size_t>(kernels::quant_panel_code_bytes(K, W, bits)));
        std::vector<float> scales(static_cast<std::size_t>(kernels::quant_panel_scales(K, W)));
        kernels::quantize_panel(src, nsrc, 16, K, 0, bits, codes.data(), scales.data());
        std::vector<float> out(static_cast<std::size_t>(K * W));
        kernels::detail::dequant_panel_scalar(codes.data(), scales.data(), K, W, bits, out.data());
        for (Index k = 0; k < K; ++k)
          for (Index j = 0; j < 16; ++j) {
            ASSERT_EQ(out[static_cast<std::size_t>(k * W + j)], g(j, k))
                << bits << " bits, W = " << W << ", K = " << K;
            if (W == 32) {
              ASSERT_EQ(out[static_cast<std::size_t>(k * W + 16 + j)], u(j, k));
            }
          }
      }
}

// The quantised entry points (group-scaled on AVX-512, int4 group-scaled on
// AVX2, decoded in registers or a panel at a time on NEON,
// dequantise-then-f32 on scalar) against a double product with the
// dequantised masters: the same weights, so the only difference is f32
// summation (a group-scaled tile sums a · code per group of 32 k and scales each group sum:
// a different order, the same tolerance as the f32 kernels), on row counts
// both sides of the tile limits (3 gate/up, 6 down, 12; over 12 rows the
// AVX-512 kernels decode each panel once for its row tiles), K across group
// boundaries and odd, column ranges that end mid-panel and start at a later
// panel (one row runs 2 gate/up or 4 down panels at once on AVX2: N 40-70).
TEST_P(PerIsa, QuantizedKernelsMatchDequantizedF32) {
  const auto& k = kernels::active();
  for (int bits : {8, 4})
    for (Index m : {1, 2, 3, 4, 6, 7, 12, 13, 25})
      for (Index K : {1, 2, 31, 32, 33, 65, 96})
        for (Index N : {1, 15, 16, 17, 40, 64, 70}) {
          const QuantizedPanels q(random_matrix(N, K, static_cast<std::uint32_t>(N * 31 + K)),
                                  random_matrix(N, K, static_cast<std::uint32_t>(N * 37 + K)),
                                  bits);
          const Matrix A = random_matrix(m, K, static_cast<std::uint32_t>(m + K));
          ASSERT_NO_FATAL_FAILURE(check_quant_entry_points(
              k.matmul_quant(bits), k.gate_up_quant(bits), A, A.cast<double>(), q,
              std::to_string(bits) + " bits m=" + std::to_string(m) + " K=" + std::to_string(K) +
                  " N=" + std::to_string(N)));
        }
}

// The default quantised entry points on rows that hold a NaN, an infinity or
// huge finite values: a non-finite input makes every output of its row
// non-finite (AVX2's biased int4 codes give NaN where a product with the
// dequantised weight gives an infinity: both say the row is invalid), huge
// finite inputs (1e30: far from overflow after 32 products of codes up to 255)
// stay within the f32 tolerance, and the other rows are not touched.
TEST_P(PerIsa, QuantizedKernelsOnNonFiniteAndHugeRows) {
  const auto& k = kernels::active();
  const float nan = std::numeric_limits<float>::quiet_NaN(),
              inf = std::numeric_limits<float>::infinity();
  for (int bits : {8, 4})
    for (Index m : {1, 5, 13}) {
      const Index K = 70, N = 70;
      const QuantizedPanels q(random_matrix(N, K, 91), random_matrix(N, K, 92), bits);
      for (float bad : {nan, inf, -inf}) {
        Matrix A = random_matrix(m, K, 93);
        const Index r = m / 2;
        A(r, 33) = bad;
        Matrix Y(m, N), G(m, N), U(m, N);
        k.matmul_quant(bits)(A.data(), K, m, K, q.c16.data(), q.s16.data(), N, 0, N, Y.data(), N);
        k.gate_up_quant(bits)({A.data(), K}, m, K, q.c32.data(), q.s32.data(), N, 0, N, G.data(),
                              U.data(), N);
        for (Index j = 0; j < N; ++j) {
          ASSERT_FALSE(std::isfinite(Y(r, j))) << bits << " bits, m " << m << ", input " << bad;
          ASSERT_FALSE(std::isfinite(G(r, j))) << bits << " bits, m " << m << ", input " << bad;
          ASSERT_FALSE(std::isfinite(U(r, j))) << bits << " bits, m " << m << ", input " << bad;
        }
        for (Index i = 0; i < m; ++i)
          if (i != r) {
            ASSERT_TRUE(Y.row(i).allFinite()) << bits << " bits, row " << i;
            ASSERT_TRUE(G.row(i).allFinite()) << bits << " bits, row " << i;
            ASSERT_TRUE(U.row(i).allFinite()) << bits << " bits, row " << i;
          }
      }
      const Matrix A = random_matrix(m, K, 94) * 1e30f;
      ASSERT_NO_FATAL_FAILURE(check_quant_entry_points(
          k.matmul_quant(bits), k.gate_up_quant(bits), A, A.cast<double>(), q,
          std::to_string(bits) + " bits, huge rows, m=" + std::to_string(m)));
    }
}

// The dot entry points for int8 / int4 (vdpbf16ps on AVX-512 BF16, tiles on
// AMX) against a double product of the bf16-rounded activations and the
// dequantised masters: codes are exact in bf16 and the products exact in f32,
// so the only error is f32 summation (per group, then the scaled group sums):
// 1e-5·sqrt(K) of the output scale. Row counts both sides of the wide tiles
// (6), the row tile (12), the tile unit's 16 and 32 rows and its 128-row
// passes (130), K across group boundaries and odd (a padded k-pair), column
// ranges that end mid-panel; a row's bytes do not depend on the row count.
TEST_P(PerIsa, QuantDotKernelsAgainstRoundedProducts) {
  const auto& k = kernels::active();
  if (!k.gate_up_q8_dot) {
    EXPECT_FALSE(has_avx512_bf16(GetParam()));
    GTEST_SKIP() << "no vdpbf16ps on " << moekit::isa_name(GetParam());
  }
  for (int bits : {8, 4})
    for (Index m : {1, 3, 6, 7, 12, 13, 16, 17, 30, 33, 130})
      for (Index K : {1, 2, 31, 32, 33, 64, 97})
        for (Index N : {1, 15, 16, 17, 40, 64, 70}) {
          const QuantizedPanels q(random_matrix(N, K, static_cast<std::uint32_t>(N * 13 + K)),
                                  random_matrix(N, K, static_cast<std::uint32_t>(N * 17 + K)),
                                  bits);
          const Matrix A = random_matrix(m, K, static_cast<std::uint32_t>(5 * m + K));
          ASSERT_NO_FATAL_FAILURE(
              check_quant_entry_points(k.matmul_quant_dot(bits), k.gate_up_quant_dot(bits), A,
                                       round_to_bf16(A).cast<double>(), q,
                                       std::to_string(bits) + " bits m=" + std::to_string(m) +
                                           " K=" + std::to_string(K) + " N=" + std::to_string(N)));
        }
}

// Activations as the VNNI kernels see them: each row quantised per group of
// 32 inputs by quantize_activation_group, then code · scale (exact in double).
Eigen::MatrixXd int8_activations(const Matrix& A) {
  Eigen::MatrixXd out(A.rows(), A.cols());
  std::int8_t q[kernels::kQuantGroup];
  for (Index r = 0; r < A.rows(); ++r)
    for (Index k0 = 0; k0 < A.cols(); k0 += kernels::kQuantGroup) {
      const Index n = std::min(kernels::kQuantGroup, A.cols() - k0);
      const Matrix g = A.block(r, k0, 1, n);  // contiguous copy of the group
      const float s = kernels::quantize_activation_group(g.data(), n, q);
      for (Index i = 0; i < n; ++i) out(r, k0 + i) = static_cast<double>(q[i]) * s;
    }
  return out;
}

// The int8-activation entry points (vpdpbusd with AVX-512 VNNI, integer
// multiply-adds with AVX2) against a double product of the int8-quantised
// activations and the dequantised masters: the integer sums are exact, so the
// only error is f32 rounding of scale products and of the per-group total:
// 1e-5·sqrt(K) of the output scale. The same row counts, K (odd K: a
// half-empty last k-pair or k-quad; K = 97: a short last group) and column
// ranges as the dot test; a row's bytes do not depend on the row count.
TEST_P(PerIsa, QuantInt8ActivationKernelsAgainstQuantisedActivations) {
  const auto& k = kernels::active();
  EXPECT_EQ(k.has_int8_activations(), expects_int8_activations(GetParam()));
  if (!k.has_int8_activations()) {
    GTEST_SKIP() << "no int8-activation kernels on " << moekit::isa_name(GetParam());
  }
  for (int bits : {8, 4})
    for (Index m : {1, 3, 6, 7, 12, 13, 30})
      for (Index K : {1, 2, 3, 5, 31, 32, 33, 64, 97, 300})
        for (Index N : {1, 15, 16, 17, 40, 64, 70}) {
          const QuantizedPanels q(random_matrix(N, K, static_cast<std::uint32_t>(N * 19 + K)),
                                  random_matrix(N, K, static_cast<std::uint32_t>(N * 23 + K)),
                                  bits);
          const Matrix A = random_matrix(m, K, static_cast<std::uint32_t>(7 * m + K));
          ASSERT_NO_FATAL_FAILURE(check_quant_entry_points(
              k.matmul_quant_a8(bits), k.gate_up_quant_a8(bits), A, int8_activations(A), q,
              std::to_string(bits) + " bits m=" + std::to_string(m) + " K=" + std::to_string(K) +
                  " N=" + std::to_string(N)));
        }
}

#ifdef MOEKIT_HAVE_X86_KERNELS
// AVX2 prefill prefetch: the nt row tiles of a panel ask for the next panel's
// lines in disjoint, consecutive shares that together cover every line once,
// each share finished by the tile's last k-pair step.
TEST(Avx2Ahead, TileSharesCoverTheNextPanelOnce) {
  const auto isas = moekit::available_isas();
  if (std::find(isas.begin(), isas.end(), Isa::avx2) == isas.end()) GTEST_SKIP() << "no AVX2";
  alignas(64) static char panel[64 * 300];
  for (Index bytes : {Index(64), Index(100), Index(64 * 7), Index(64 * 300)})
    for (Index nt : {1, 2, 3, 11})
      for (Index K : {1, 2, 7, 64, 2048}) {
        const Index lines = (bytes + 63) / 64;
        const char* expect = panel;
        for (Index t = 0; t < nt; ++t) {
          kernels::avx2::Ahead a = kernels::avx2::ahead_share(panel, bytes, t, nt, K);
          ASSERT_EQ(a.line, expect) << bytes << " " << nt << " " << K << " " << t;
          // The int4 prefill tile steps a group (16 k-pairs) at a time.
          kernels::avx2::Ahead by_group = a;
          for (Index s = 0; s < a.steps; ++s) a.step();
          for (Index s = 0; s < by_group.steps; s += 16)
            by_group.step(std::min<Index>(16, by_group.steps - s));
          expect = panel + (t + 1) * lines / nt * 64;
          ASSERT_EQ(a.line, expect) << bytes << " " << nt << " " << K << " " << t;
          ASSERT_EQ(by_group.line, expect) << bytes << " " << nt << " " << K << " " << t;
        }
        ASSERT_EQ(expect - panel, lines * 64);
      }
  EXPECT_EQ(kernels::avx2::ahead_share(nullptr, 640, 0, 2, 64).lines, 0);
}

// Rows that test an activation quantiser: ties at half steps, an all-zero
// group, subnormals (a group that small quantises to zero), values just above
// that limit, huge values, a lone outlier, NaN and infinity.
Matrix quantiser_rows(Index K) {
  Matrix A = random_matrix(9, K, static_cast<std::uint32_t>(K));
  for (Index k = 0; k < K; ++k) {
    A(1, k) = static_cast<float>(k % 9) - 4.0f;  // max 4: a step of 4/127, values on and off it
    A(2, k) = 0.0f;
    A(3, k) = 1e-40f * static_cast<float>(k + 1);  // subnormal: below kActivationTiny, zeros
    A(8, k) = 1e-36f * static_cast<float>(k % 3) - 1e-36f;  // just above it
    A(4, k) = 3e38f * (k % 2 ? 1.0f : -1.0f);
    A(5, k) = k == K / 2 ? 1e4f : A(5, k);
  }
  A(1, 0) = 2.0f;  // 2 · (127 / 4) = 63.5: a tie, rounded to even
  A(6, K - 1) = std::numeric_limits<float>::quiet_NaN();
  A(7, 0) = -std::numeric_limits<float>::infinity();
  return A;
}

// Group g of row r of A as quantize_activation_group quantises it into q
// (codes past the group's end zero), and the kernel's scale for it checked
// against that one (NaN for NaN). Returns the group's length.
Index expect_group_scale(const Matrix& A, Index r, Index g, float got,
                         std::int8_t (&q)[kernels::kQuantGroup]) {
  const Index k0 = g * kernels::kQuantGroup, n = std::min(kernels::kQuantGroup, A.cols() - k0);
  std::fill(q, q + kernels::kQuantGroup, std::int8_t{0});
  const Matrix grp = A.block(r, k0, 1, n);  // contiguous copy of the group
  const float s = kernels::quantize_activation_group(grp.data(), n, q);
  if (std::isnan(s)) {
    EXPECT_TRUE(std::isnan(got)) << "row " << r << " K " << A.cols();
  } else {
    EXPECT_EQ(got, s) << "row " << r << " K " << A.cols();
  }
  return n;
}

// The AVX2 int8-activation kernels' row quantiser gives quantize_activation_group's
// codes and scales bit for bit, in the k-pair words the tiles broadcast (int8
// weights: two 16-bit codes; int4: the two code bytes twice), with int4's bias
// corrections from those codes, K across group and pair boundaries.
TEST(Avx2Int8, RowQuantiserIsTheScalarOne) {
  const auto isas = moekit::available_isas();
  if (std::find(isas.begin(), isas.end(), Isa::avx2) == isas.end()) GTEST_SKIP() << "no AVX2";
  for (Index K : {1, 2, 3, 5, 31, 32, 33, 63, 64, 100}) {
    const Matrix A = quantiser_rows(K);
    const Index R = A.rows(), G = kernels::quant_groups(K), ld = G * kernels::kQuantGroup / 2;
    for (int bits : {8, 4}) {
      std::vector<std::uint32_t> words(static_cast<std::size_t>(R * ld), 0xdeadbeefu);
      std::vector<float> scales(static_cast<std::size_t>(R * G));
      std::vector<std::int32_t> corr(static_cast<std::size_t>(R * G));
      (bits == 8 ? &kernels::avx2_int8::quantize_rows<8>
                 : &kernels::avx2_int8::quantize_rows<4>)({A.data(), K}, R, K, words.data(), ld,
                                                          scales.data(), corr.data());
      for (Index r = 0; r < R; ++r)
        for (Index g = 0; g < G; ++g) {
          const Index k0 = g * kernels::kQuantGroup;
          const std::size_t i = static_cast<std::size_t>(r * G + g);
          std::int8_t q[kernels::kQuantGroup];  // zeros past the group's end: the padding
          expect_group_scale(A, r, g, scales[i], q);
          std::int32_t sum = 0;
          for (Index j = 0; j < kernels::kQuantGroup; ++j) sum += q[j];
          EXPECT_EQ(corr[i], bits == 4 ? -8 * sum : 0) << "row " << r << " K " << K;
          for (Index kp = 0; kp < kernels::kQuantGroup / 2; ++kp) {
            const std::uint32_t w = words[static_cast<std::size_t>(r * ld + g * 16 + kp)];
            const auto lo = static_cast<std::uint8_t>(q[2 * kp]),
                       hi = static_cast<std::uint8_t>(q[2 * kp + 1]);
            const std::uint32_t expect =
                bits == 8
                    ? static_cast<std::uint16_t>(q[2 * kp]) |
                          static_cast<std::uint32_t>(static_cast<std::uint16_t>(q[2 * kp + 1]))
                              << 16
                    : (lo | hi << 8) * 0x00010001u;
            ASSERT_EQ(w, expect) << bits << " bits, row " << r << " k " << k0 + 2 * kp << " K "
                                 << K;
          }
        }
    }
  }
}

// The VNNI kernels' row quantiser gives quantize_activation_group's codes and
// scales bit for bit (and the offset corrections from those codes), on the
// rows of quantiser_rows, K across group and quad boundaries.
TEST_P(PerIsa, QuantVnniRowQuantiserIsTheScalarOne) {
  if (!has_avx512_bf16(GetParam())) GTEST_SKIP() << "no VNNI on " << moekit::isa_name(GetParam());
  for (Index K : {1, 3, 4, 5, 31, 32, 33, 63, 64, 100}) {
    const Matrix A = quantiser_rows(K);
    const Index R = A.rows();
    const Index K4 = (K + 3) / 4, G = kernels::quant_groups(K);
    for (std::int32_t offset : {128, 8}) {
      std::vector<std::uint32_t> codes(static_cast<std::size_t>(R * K4), 0xdeadbeefu);
      std::vector<float> scales(static_cast<std::size_t>(R * G));
      std::vector<std::int32_t> corr(static_cast<std::size_t>(R * G));
      kernels::avx512_vnni::quantize_rows({A.data(), K}, R, K, offset, codes.data(), scales.data(),
                                          corr.data());
      for (Index r = 0; r < R; ++r) {
        const auto* got = reinterpret_cast<const std::int8_t*>(codes.data() + r * K4);
        for (Index g = 0; g < G; ++g) {
          const Index k0 = g * kernels::kQuantGroup;
          const std::size_t i = static_cast<std::size_t>(r * G + g);
          std::int8_t q[kernels::kQuantGroup];
          const Index n = expect_group_scale(A, r, g, scales[i], q);
          std::int32_t sum = 0;
          for (Index j = 0; j < n; ++j) {
            ASSERT_EQ(got[k0 + j], q[j]) << "row " << r << " k " << k0 + j << " K " << K;
            sum += q[j];
          }
          EXPECT_EQ(corr[i], -offset * sum);
        }
        for (Index k = K; k < 4 * K4; ++k) EXPECT_EQ(got[k], 0) << "padding, K " << K;
      }
    }
  }
}
#endif

// A quantised weight as stored in the panels of a weight with W values per
// k-row (W = 16: plain, output n; W = 32: gate + up, n of source src): its
// signed code and its group scale.
struct StoredWeight {
  int code;
  float scale;
};
StoredWeight stored_weight(const std::vector<std::uint8_t>& codes, const std::vector<float>& scales,
                           Index K, Index W, int bits, Index n, int src, Index k) {
  const Index p = n / kernels::kPanel, col = src * kernels::kPanel + n % kernels::kPanel;
  const Index e = 2 * col + (k & 1);
  const std::uint8_t b =
      codes[static_cast<std::size_t>(p * kernels::quant_panel_code_bytes(K, W, bits) +
                                     kernels::quant_code_byte(k >> 1, e, W, bits))];
  const int code = bits == 8 ? static_cast<std::int8_t>(b) : (e < W ? (b & 0x0f) : (b >> 4)) - 8;
  const float scale = scales[static_cast<std::size_t>(p * kernels::quant_panel_scales(K, W) +
                                                      (k / kernels::kQuantGroup) * W + col)];
  return {code, scale};
}

// Bf16Math::int8_dot spelled out in plain C++: per group of 32 inputs, the
// exact integer sum of weight code × activation code (quantize_activation_group),
// then total = fma(f32(sum), weight scale · activation scale, total), group
// after group. Every ISA's int8-activation kernels must give exactly these
// bytes (so they agree with each other and with any future ISA), on row
// counts that take the one-row, row-tile and prefill paths, K with a short
// last group and odd K (a half-empty last k-pair and k-quad).
TEST_P(PerIsa, QuantInt8ActivationBytesAreThePlainSequence) {
  const auto& k = kernels::active();
  if (!k.has_int8_activations())
    GTEST_SKIP() << "no int8-activation kernels on " << moekit::isa_name(GetParam());
  for (int bits : {8, 4})
    for (Index m : {1, 4, 7, 40})
      for (Index K : {5, 33, 70, 256}) {
        const Index N = 70, G = kernels::quant_groups(K);
        const QuantizedPanels w(random_matrix(N, K, 11), random_matrix(N, K, 12), bits);
        Matrix A = random_matrix(m, K, static_cast<std::uint32_t>(m * 3 + K));
        A.row(0) *= 1e-3f;  // scales far from 1 too
        std::vector<std::int8_t> qa(static_cast<std::size_t>(m * G * kernels::kQuantGroup));
        std::vector<float> sa(static_cast<std::size_t>(m * G));
        for (Index r = 0; r < m; ++r)
          for (Index g = 0; g < G; ++g) {
            const Index k0 = g * kernels::kQuantGroup;
            const Index n = std::min(kernels::kQuantGroup, K - k0);
            const Matrix grp = A.block(r, k0, 1, n);
            sa[static_cast<std::size_t>(r * G + g)] = kernels::quantize_activation_group(
                grp.data(), n, qa.data() + r * G * kernels::kQuantGroup + k0);
          }
        const auto expected = [&](const std::vector<std::uint8_t>& codes,
                                  const std::vector<float>& scales, Index W, int src) {
          Matrix out(m, N);
          for (Index r = 0; r < m; ++r)
            for (Index n = 0; n < N; ++n) {
              float total = 0.0f;
              for (Index g = 0; g < G; ++g) {
                std::int32_t sum = 0;
                float ws = 0.0f;
                for (Index kk = g * kernels::kQuantGroup;
                     kk < std::min(K, (g + 1) * kernels::kQuantGroup); ++kk) {
                  const StoredWeight sw = stored_weight(codes, scales, K, W, bits, n, src, kk);
                  sum += sw.code * qa[static_cast<std::size_t>(r * G * kernels::kQuantGroup + kk)];
                  ws = sw.scale;
                }
                const float s = ws * sa[static_cast<std::size_t>(r * G + g)];
                total = std::fma(static_cast<float>(sum), s, total);
              }
              out(r, n) = total;
            }
          return out;
        };
        Matrix Y(m, N), Gt(m, N), U(m, N);
        k.matmul_quant_a8(bits)(A.data(), K, m, K, w.c16.data(), w.s16.data(), N, 0, N, Y.data(),
                                N);
        k.gate_up_quant_a8(bits)({A.data(), K}, m, K, w.c32.data(), w.s32.data(), N, 0, N,
                                 Gt.data(), U.data(), N);
        const std::string what =
            std::to_string(bits) + " bits m=" + std::to_string(m) + " K=" + std::to_string(K);
        EXPECT_TRUE(moekit_test::bit_identical(Y, expected(w.c16, w.s16, 16, 0))) << what;
        EXPECT_TRUE(moekit_test::bit_identical(Gt, expected(w.c32, w.s32, 32, 0))) << what;
        EXPECT_TRUE(moekit_test::bit_identical(U, expected(w.c32, w.s32, 32, 1))) << what;
      }
}

// Bf16Math::int8_dot gives the same bytes on every ISA that has int8
// activations (AVX2 integer multiply-adds, AVX-512 VNNI): the same codes, the
// same exact integer group sums, the same f32 operations after them. Each
// ISA's entry points against the first one's, on row counts that take the
// one-row, tile and prefill paths and K with a short last group.
TEST(Int8Activations, SameBytesOnEveryIsa) {
  std::vector<Isa> isas;
  for (Isa isa : moekit::available_isas())
    if (kernels::table_for(isa).has_int8_activations()) isas.push_back(isa);
  if (isas.size() < 2) GTEST_SKIP() << "fewer than two ISAs with int8 activations";
  for (int bits : {8, 4})
    for (Index m : {1, 5, 40})
      for (Index K : {33, 100, 256}) {
        const Index N = 70;
        const QuantizedPanels w(random_matrix(N, K, 5), random_matrix(N, K, 6), bits);
        const Matrix A = random_matrix(m, K, static_cast<std::uint32_t>(m + K));
        std::vector<Matrix> out;
        for (Isa isa : isas) {
          const auto& k = kernels::table_for(isa);
          Matrix Y(m, N), G(m, N), U(m, N);
          k.matmul_quant_a8(bits)(A.data(), K, m, K, w.c16.data(), w.s16.data(), N, 0, N, Y.data(),
                                  N);
          k.gate_up_quant_a8(bits)({A.data(), K}, m, K, w.c32.data(), w.s32.data(), N, 0, N,
                                   G.data(), U.data(), N);
          Matrix all(m, 3 * N);
          all << Y, G, U;
          out.push_back(all);
        }
        for (std::size_t i = 1; i < isas.size(); ++i)
          EXPECT_TRUE(moekit_test::bit_identical(out[0], out[i]))
              << moekit::isa_name(isas[i]) << " vs " << moekit::isa_name(isas[0]) << ", " << bits
              << " bits m=" << m << " K=" << K;
      }
}

// Quantising activations must not hide bad values or invent them: a row with
// a NaN or an infinity gives NaN outputs (that row only), an all-zero row
// gives zeros, and a row of huge values keeps its scale (no overflow).
TEST_P(PerIsa, QuantInt8ActivationNonFiniteAndExtremeRows) {
  const auto& k = kernels::active();
  if (!k.has_int8_activations())
    GTEST_SKIP() << "no int8-activation kernels on " << moekit::isa_name(GetParam());
  const Index K = 70, N = 40;
  Matrix A = random_matrix(5, K, 5);
  A(1, 40) = std::numeric_limits<float>::quiet_NaN();
  A(2, 3) = std::numeric_limits<float>::infinity();
  A.row(3).setZero();
  A.row(4) *= 1e30f;
  for (int bits : {8, 4}) {
    const QuantizedPanels w(random_matrix(N, K, 3), random_matrix(N, K, 4), bits);
    Matrix Y(5, N), G(5, N), U(5, N);
    k.matmul_quant_a8(bits)(A.data(), K, 5, K, w.c16.data(), w.s16.data(), N, 0, N, Y.data(), N);
    k.gate_up_quant_a8(bits)({A.data(), K}, 5, K, w.c32.data(), w.s32.data(), N, 0, N, G.data(),
                             U.data(), N);
    for (const Matrix* out : {&Y, &G, &U}) {
      EXPECT_TRUE(out->row(0).allFinite()) << bits;
      EXPECT_TRUE(out->row(1).array().isNaN().all()) << bits;
      EXPECT_TRUE(out->row(2).array().isNaN().all()) << bits;
      EXPECT_TRUE((out->row(3).array() == 0.0f).all()) << bits;
      EXPECT_TRUE(out->row(4).allFinite()) << bits;
    }
    const Eigen::MatrixXd ref4 =
        int8_activations(A.bottomRows(1)) * w.Wd.cast<double>().transpose();
    EXPECT_LE((Y.bottomRows(1).cast<double>() - ref4).cwiseAbs().maxCoeff(),
              1e-5 * std::sqrt(static_cast<double>(K)) * ref4.cwiseAbs().maxCoeff())
        << bits;
  }
}

// Row-count invariance of the float kernels too: the wide decode tiles (up to
// 6 rows) and the 12-row prefill tiles sum each output in the same order.
TEST_P(PerIsa, RowResultDoesNotDependOnRowCount) {
  const auto& k = kernels::active();
  const Index K = 45, N = 83;
  const Matrix A = random_matrix(25, K, 71), W = random_matrix(N, K, 72),
               W2 = random_matrix(N, K, 73);
  AlignedBuffer<float> p(static_cast<std::size_t>(kernels::packed_size(N, K)));
  AlignedBuffer<float> pgu(static_cast<std::size_t>(kernels::packed_gate_up_size(N, K)));
  kernels::pack_panels(W.data(), N, K, p.data());
  kernels::pack_gate_up(W.data(), W2.data(), N, K, pgu.data());
  Matrix Y1(1, N), G1(1, N), U1(1, N);
  k.matmul_f32(A.data(), K, 1, K, p.data(), N, 0, N, Y1.data(), N);
  k.gate_up_f32({A.data(), K}, 1, K, pgu.data(), N, 0, N, G1.data(), U1.data(), N);
  for (Index m : {2, 5, 6, 7, 12, 13, 25}) {
    Matrix Y(m, N), G(m, N), U(m, N);
    k.matmul_f32(A.data(), K, m, K, p.data(), N, 0, N, Y.data(), N);
    k.gate_up_f32({A.data(), K}, m, K, pgu.data(), N, 0, N, G.data(), U.data(), N);
    EXPECT_TRUE(moekit_test::bit_identical(Y1, Y.topRows(1))) << m;
    EXPECT_TRUE(moekit_test::bit_identical(G1, G.topRows(1))) << m;
    EXPECT_TRUE(moekit_test::bit_identical(U1, U.topRows(1))) << m;
  }
}

// Gate + up on rows picked by index (the block's path: an expert's tokens
// straight from x) give the bytes of the same call on a gathered copy, for
// every gate + up entry point of the ISA: the packers (bf16 pairs, int8
// groups) read the indexed rows, the f32 tiles a per-call copy. Indices
// repeat, run backwards and skip rows; x has a row stride wider than K.
TEST_P(PerIsa, GateUpGathersIndexedRows) {
  const auto& k = kernels::active();
  for (Index K : {1, 17, 64, 77})
    for (Index m : {1, 3, 7, 13, 29}) {
      const Index N = 40, T = 31, ldx = K + 5;
      const Matrix X = random_matrix(T, ldx, static_cast<std::uint32_t>(K * 100 + m));
      std::vector<std::int32_t> idx(static_cast<std::size_t>(m));
      for (Index r = 0; r < m; ++r)
        idx[static_cast<std::size_t>(r)] = static_cast<std::int32_t>((T - 1 - 3 * r) % T + T) % T;
      if (m > 2) idx[2] = idx[0];  // a token twice (top-k never does; the kernels must not care)
      Matrix A(m, K);              // the gathered copy
      for (Index r = 0; r < m; ++r) A.row(r) = X.row(idx[static_cast<std::size_t>(r)]).head(K);
      const kernels::ActivationRows rows(X.data(), ldx, idx.data());
      const kernels::ActivationRows plain(A.data(), K);
      const std::string what = "K " + std::to_string(K) + " m " + std::to_string(m);
      const auto same = [&](const auto& call, const std::string& name) {
        Matrix G1(m, N), U1(m, N), G2(m, N), U2(m, N);
        call(rows, G1, U1);
        call(plain, G2, U2);
        EXPECT_TRUE(moekit_test::bit_identical(G1, G2)) << name << " " << what;
        EXPECT_TRUE(moekit_test::bit_identical(U1, U2)) << name << " " << what;
      };
      const Matrix W = random_matrix(N, K, 7), W2 = random_matrix(N, K, 8);
      AlignedBuffer<float> pf(static_cast<std::size_t>(kernels::packed_gate_up_size<float>(N, K)));
      AlignedBuffer<moekit::bf16> pb(
          static_cast<std::size_t>(kernels::packed_gate_up_size<moekit::bf16>(N, K)));
      kernels::pack_gate_up(W.data(), W2.data(), N, K, pf.data());
      kernels::pack_gate_up(W.data(), W2.data(), N, K, pb.data());
      same([&](const kernels::ActivationRows& a, Matrix& G,
               Matrix& U) { k.gate_up_f32(a, m, K, pf.data(), N, 0, N, G.data(), U.data(), N); },
           "f32");
      same([&](const kernels::ActivationRows& a, Matrix& G,
               Matrix& U) { k.gate_up_bf16(a, m, K, pb.data(), N, 0, N, G.data(), U.data(), N); },
           "bf16");
      if (k.has_dot())
        same(
            [&](const kernels::ActivationRows& a, Matrix& G, Matrix& U) {
              k.gate_up_bf16_dot(a, m, K, pb.data(), N, 0, N, G.data(), U.data(), N);
            },
            "bf16 dot");
      for (int bits : {8, 4}) {
        const QuantizedPanels q(W, W2, bits);
        for (auto fn : {k.gate_up_quant(bits), k.gate_up_quant_dot(bits), k.gate_up_quant_a8(bits)})
          if (fn)
            same(
                [&](const kernels::ActivationRows& a, Matrix& G, Matrix& U) {
                  fn(a, m, K, q.c32.data(), q.s32.data(), N, 0, N, G.data(), U.data(), N);
                },
                "int" + std::to_string(bits));
      }
    }
}

// The probes of `moekit roofline` on every ISA: each compute loop the ISA has
// runs (a finite checksum), the others report 0 operations and do nothing,
// and the bandwidth probe adds exactly (small integers) whatever path it takes.
TEST_P(PerIsa, RooflineProbesRun) {
  using kernels::PeakLoop;
  const Isa isa = GetParam();
  const bool fma = isa != Isa::scalar, bf16 = expects_bf16_dot(isa),
             int8 =
                 has_avx512_bf16(isa) || (isa == Isa::neon && moekit::cpu_features().neon_dotprod);
  EXPECT_EQ(kernels::peak_ops_per_iter(PeakLoop::fp32_fma, isa) > 0, fma);
  EXPECT_EQ(kernels::peak_ops_per_iter(PeakLoop::bf16_dot, isa) > 0, bf16);
  EXPECT_EQ(kernels::peak_ops_per_iter(PeakLoop::int8_dot, isa) > 0, int8);
  EXPECT_EQ(kernels::peak_ops_per_iter(PeakLoop::amx_bf16, isa) > 0, isa == Isa::avx512_amx);
  for (PeakLoop loop :
       {PeakLoop::fp32_fma, PeakLoop::bf16_dot, PeakLoop::int8_dot, PeakLoop::amx_bf16}) {
    const float sum = kernels::run_peak_loop(loop, isa, 100);
    EXPECT_TRUE(std::isfinite(sum)) << static_cast<int>(loop);
    if (kernels::peak_ops_per_iter(loop, isa) == 0) {
      EXPECT_EQ(sum, 0.0f);
    }
  }
  const std::size_t n = 64 * 9;
  AlignedBuffer<float> buf(n);
  float expected = 0.0f;
  for (std::size_t i = 0; i < n; ++i) expected += buf.data()[i] = static_cast<float>(i % 7);
  EXPECT_EQ(kernels::read_sum(isa, buf.data(), n), expected);
}

INSTANTIATE_TEST_SUITE_P(Isas, PerIsa, ::testing::ValuesIn(moekit::available_isas()),
                         isa_test_name);

TEST(Dispatch, NamesCapsAndEigenPath) {
  for (Isa i : moekit::available_isas()) EXPECT_EQ(moekit::parse_isa(moekit::isa_name(i)), i);
  EXPECT_THROW(moekit::parse_isa("sse9"), moekit::Error);
  moekit::set_max_isa(Isa::scalar);
  EXPECT_EQ(moekit::active_isa(), Isa::scalar);
  moekit::clear_max_isa();
  EXPECT_EQ(moekit::active_isa(),
            moekit::available_isas().back());  // the best within MOEKIT_MAX_ISA
  // The Eigen path (no packing) and the packed kernels agree.
  moekit::SwiGluMoEBlock block = moekit_test::random_block(8, 29, 35, 2, 9);
  const Matrix x = random_matrix(21, 29, 10);
  const Matrix packed = block.forward(x);
  block.experts().use_packed_kernels(false);
  EXPECT_FALSE(block.experts().packed());
  const Matrix eigen = block.forward(x);
  EXPECT_LE(moekit_test::max_abs_diff(packed, eigen),
            moekit_test::kBlockTolerance * moekit_test::scale_of(eigen));
  block.experts().use_packed_kernels(true);
  EXPECT_TRUE(moekit_test::bit_identical(block.forward(x), packed));
  // Writing weights through a view marks the packing stale; the next forward repacks.
  block.experts().down(3).setZero();
  EXPECT_FALSE(block.experts().packed());
  const Matrix after = block.forward(x);
  EXPECT_TRUE(block.experts().packed());
  EXPECT_LE(moekit_test::max_abs_diff(after, moekit::reference::forward(block, x)),
            moekit_test::kBlockTolerance * moekit_test::scale_of(after));
}

}  // namespace
