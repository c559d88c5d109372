// SPDX-License-Identifier: MIT
// Benchmark of the MoE block forward (SwiGluMoEBlock) on the standard shapes
// of shared/conformance/README.md, for every expert weight type, at T = 1, 8,
// 64, 512 tokens, with 1 and 2 threads (ThreadPoolExecutor).
//
//   ./bench_block                                   # everything (~1 h on 2 cores)
//   ./bench_block --benchmark_filter='/olmoe/'      # one shape
//   ./bench_block --benchmark_filter='^block_int4/' # one weight type
//   ./bench_block --benchmark_filter='/T:1/'        # decode only
//
// Names: block_<dtype>/<shape>/T:<tokens>/threads:<executor threads>/<path>.
// The executor's thread count is part of the name; Google Benchmark's own
// "threads" field stays 1 (one thread drives the block). <dtype> is the
// experts' storage type (f32, bf16, f16, int8, int4: set_weight_dtype). <path>:
// "eigen" is the foundation baseline (f32 only: one Eigen GEMM per expert and
// projection), "packed" the library's default SIMD kernels (bf16 / int8 / int4
// with bf16-rounded activations where the CPU has AVX-512 BF16), "int8_dot"
// the opt-in int8 activations for int8 / int4 (Bf16Math::int8_dot: vpdpbusd
// with AVX-512 VNNI, integer multiply-adds with AVX2; elsewhere as packed).
//
// Per shape the weights are drawn once (uniform, standard deviation 0.02, fixed
// seed) and converted to each weight type in turn (drawn again when a type
// would need the f32 values back); only one shape is resident at a time
// (qwen3-30b-a3b is 2.4 GB of f32). Eight random inputs per T, N(0, 1), are
// cycled over the iterations so that the routing, and the set of experts whose
// weights are read, changes from one forward to the next.
//
// Before the first timing of a (shape, dtype, path, T), one forward with 1
// thread and one with 2 threads must give bit-identical, finite outputs, and
// for T <= 8 the output must match moekit::reference (double precision, on the
// same rounded / dequantised weights) for the block's own routing within
// tol * max(1, max|ref|): tol 1e-5 with f32 activations, 1e-2 with
// bf16-rounded ones, 3e-2 with int8 ones (README's promises). A failure skips
// the case with an error.
//
// Counters (rates over real time):
//   GFLOP/s          active FLOPs 2*T*(E*d + 3*k*d*f) per forward
//   GB/s             weight bytes read per forward: distinct experts touched in that
//                    forward * one expert's packed bytes (scales included; f32
//                    3*d*f*4 on the eigen path), plus the router's E*d*4
//   experts_touched  distinct experts with at least one row, mean per forward
// Shared experts (deepseek-v2-lite has 2) are left out: only the routed
// experts are measured (`moekit bench --shape` includes them).

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <iterator>
#include <map>
#include <memory>
#include <random>
#include <sstream>
#include <string>
#include <utility>
#include <vector>

#include <moekit/moekit.hpp>

namespace {

using moekit::Index;
using moekit::Matrix;

struct Shape {
  const char* name;
  Index d, f, E, k;
};

// shared/conformance/README.md, "Standard benchmark shapes" (routed experts only).
constexpr Shape kShapes[] = {
    {"mixtral-s", 1024, 3584, 8, 2},
    {"olmoe", 2048, 1024, 64, 8},
    {"qwen3-30b-a3b", 2048, 768, 128, 8},
    {"deepseek-v2-lite", 2048, 1408, 64, 6},
};
constexpr Index kTokens[] = {1, 8, 64, 512};
constexpr int kThreadCounts[] = {1, 2};
constexpr int kNumInputs = 8;
constexpr float kWeightStd = 0.02f;

// Minimum timed seconds per repetition (the whole suite, 3 repetitions, takes
// about 10 minutes on 2 cores). A T = 512 forward takes about a second on one
// thread, so those cases still run several iterations, i.e. several inputs.
double min_time_for(Index T) { return T >= 512 ? 5.0 : T >= 64 ? 3.0 : 2.0; }

double active_flops(const Shape& s, Index T) {
  return 2.0 * static_cast<double>(T) * static_cast<double>(s.E * s.d + 3 * s.k * s.d * s.f);
}

// One configuration of the expert bank: weight type, kernels, arithmetic.
struct Variant {
  const char* dtype;  // name part: block_<dtype>
  const char* path;   // eigen | packed | int8_dot
  moekit::Dtype type;
  bool packed;
  moekit::Bf16Math math;
};
constexpr Variant kVariants[] = {
    {"f32", "eigen", moekit::Dtype::f32, false, moekit::Bf16Math::dot},
    {"f32", "packed", moekit::Dtype::f32, true, moekit::Bf16Math::dot},
    {"bf16", "packed", moekit::Dtype::bf16, true, moekit::Bf16Math::dot},
    {"f16", "packed", moekit::Dtype::f16, true, moekit::Bf16Math::dot},
    {"int8", "packed", moekit::Dtype::i8, true, moekit::Bf16Math::dot},
    {"int8", "int8_dot", moekit::Dtype::i8, true, moekit::Bf16Math::int8_dot},
    {"int4", "packed", moekit::Dtype::i4, true, moekit::Bf16Math::dot},
    {"int4", "int8_dot", moekit::Dtype::i4, true, moekit::Bf16Math::int8_dot},
};

// splitmix64: fast, reproducible, and good enough for benchmark weights.
struct SplitMix64 {
  std::uint64_t state;
  std::uint64_t next() {
    std::uint64_t z = (state += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
};

// Uniform in [-a, a) with a = std * sqrt(3), i.e. standard deviation `std`.
void fill_uniform(Matrix& m, std::uint64_t seed, float std_dev) {
  SplitMix64 rng{seed};
  const float a = std_dev * std::sqrt(3.0f);
  const float scale = 2.0f * a / 16777216.0f;  // 24-bit mantissa
  float* p = m.data();
  const Index n = m.size();
  Index i = 0;
  for (; i + 1 < n; i += 2) {
    const std::uint64_t z = rng.next();
    p[i] = static_cast<float>((z >> 40) & 0xFFFFFF) * scale - a;
    p[i + 1] = static_cast<float>((z >> 8) & 0xFFFFFF) * scale - a;
  }
  if (i < n) p[i] = static_cast<float>(rng.next() >> 40) * scale - a;
}

// The weights and inputs of the one shape that is resident.
struct Loaded {
  int shape = -1;
  std::unique_ptr<moekit::SwiGluMoEBlock> block;
  int variant = -1;                             // kVariants entry the bank is set to
  std::map<Index, std::vector<Matrix>> inputs;  // per T: kNumInputs inputs [T, d]
  std::map<std::pair<int, Index>, std::string>
      check;                 // per (variant, T): "" = passed, else why not
  std::uint64_t cursor = 0;  // next input, carried across runs
};

Loaded& loaded() {
  static Loaded l;
  return l;
}

// Draws the shape's f32 weights into l.block (the same values every time).
void build_block(Loaded& l, int shape) {
  l.block.reset();  // free the previous weights first
  const Shape& s = kShapes[shape];
  const auto t0 = std::chrono::steady_clock::now();
  const std::uint64_t base = 0x6D6F656B6974ull * 1000u + static_cast<std::uint64_t>(shape) * 16u;
  Matrix router_w(s.E, s.d), gate(s.E * s.f, s.d), up(s.E * s.f, s.d), down(s.E * s.d, s.f);
  fill_uniform(router_w, base + 0, kWeightStd);
  fill_uniform(gate, base + 1, kWeightStd);
  fill_uniform(up, base + 2, kWeightStd);
  fill_uniform(down, base + 3, kWeightStd);
  moekit::Router<> router(std::move(router_w), moekit::RouterOptions().with_top_k(s.k));
  moekit::SwiGluExperts experts(s.E, std::move(gate), std::move(up), std::move(down));
  l.block = std::make_unique<moekit::SwiGluMoEBlock>(std::move(router), std::move(experts));
  l.variant = -1;
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "# %s: built weights (%.2f GB f32) in %.1f s\n", s.name,
               static_cast<double>(s.E * (3 * s.d * s.f + s.d)) * 4e-9, secs);
}

// The shape resident with the bank set to variant v.
Loaded& load(int shape, int v) {
  Loaded& l = loaded();
  if (l.shape != shape) {
    l = Loaded();  // free the previous shape first
    build_block(l, shape);
    l.shape = shape;
  }
  if (l.variant == v) return l;
  const Variant& var = kVariants[v];
  auto* bank = &l.block->experts();
  // Rounding or quantising replaces the master weights, so a type other
  // than the current one (unless the current one is f32) needs them drawn again.
  if (bank->weight_dtype() != var.type && bank->weight_dtype() != moekit::Dtype::f32) {
    build_block(l, shape);
    bank = &l.block->experts();
  }
  bank->use_packed_kernels(var.packed);
  if (bank->weight_dtype() != var.type) bank->set_weight_dtype(var.type);
  bank->set_bf16_math(var.math);
  l.variant = v;
  return l;
}

const std::vector<Matrix>& inputs_for(Loaded& l, Index T) {
  auto it = l.inputs.find(T);
  if (it != l.inputs.end()) return it->second;
  const Index d = kShapes[l.shape].d;
  std::mt19937_64 rng(0xC0FFEEull + static_cast<std::uint64_t>(l.shape) * 131u +
                      static_cast<std::uint64_t>(T));
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<Matrix> xs;
  for (int i = 0; i < kNumInputs; ++i) {
    Matrix x(T, d);
    for (Index j = 0; j < x.size(); ++j) x.data()[j] = normal(rng);
    xs.push_back(std::move(x));
  }
  return l.inputs.emplace(T, std::move(xs)).first->second;
}

// Correctness before timing; returns "" when it passes.
std::string run_check(Loaded& l, Index T) {
  moekit::SwiGluMoEBlock& block = *l.block;
  const Matrix& x = inputs_for(l, T).front();
  const Index d = block.hidden_size();
  moekit::ThreadPoolExecutor one(1), two(2);
  Matrix y1(T, d), y2(T, d);
  block.forward(x, y1, one);
  block.forward(x, y2, two);
  std::ostringstream err;
  if (!y1.allFinite()) err << "non-finite output; ";
  if (std::memcmp(y1.data(), y2.data(), sizeof(float) * static_cast<std::size_t>(y1.size())) != 0)
    err << "1-thread and 2-thread outputs differ (max |diff| " << (y1 - y2).cwiseAbs().maxCoeff()
        << "); ";
  if (T <= 8) {  // the double-precision oracle is cheap at decode sizes
    const Matrix ref = moekit::reference::forward_with_plan(block.experts(), x, block.last_plan());
    const auto& bank = block.experts();
    const bool low = bank.uses_packed_kernels() && (bank.weight_dtype() == moekit::Dtype::bf16 ||
                                                    bank.weight_dtype() == moekit::Dtype::i8 ||
                                                    bank.weight_dtype() == moekit::Dtype::i4);
    const float rel =
        low && bank.quant_uses_int8_activations() && bank.weight_dtype() != moekit::Dtype::bf16
            ? 3e-2f
        : low && bank.bf16_uses_dot() ? 1e-2f
                                      : 1e-5f;
    const float tol = rel * std::max(1.0f, ref.cwiseAbs().maxCoeff());
    const float diff = (y2 - ref).cwiseAbs().maxCoeff();
    if (!(diff <= tol)) err << "differs from moekit::reference by " << diff << " > " << tol << "; ";
  }
  return err.str();
}

void bm_block(benchmark::State& state, int shape, Index T, int threads, int variant) {
  Loaded& l = load(shape, variant);
  const auto key = std::make_pair(variant, T);
  auto checked = l.check.find(key);
  if (checked == l.check.end()) checked = l.check.emplace(key, run_check(l, T)).first;
  if (!checked->second.empty()) {
    state.SkipWithError(("correctness check failed: " + checked->second).c_str());
    return;
  }
  const Shape& s = kShapes[shape];
  moekit::SwiGluMoEBlock& block = *l.block;
  const std::vector<Matrix>& xs = inputs_for(l, T);
  moekit::ThreadPoolExecutor pool(threads);
  Matrix y(T, s.d);
  double touched_sum = 0;
  for (auto _ : state) {
    const Matrix& x = xs[static_cast<std::size_t>(l.cursor++ % kNumInputs)];
    block.forward(x, y, pool);
    benchmark::DoNotOptimize(y.data());
    benchmark::ClobberMemory();
    const moekit::ExpertGroups& g = block.last_groups();
    Index touched = 0;
    for (Index e = 0; e < s.E; ++e) touched += g.count(e) > 0 ? 1 : 0;
    touched_sum += static_cast<double>(touched);
  }
  const double iters = static_cast<double>(state.iterations());
  const double expert_bytes = kVariants[variant].packed
                                  ? static_cast<double>(block.experts().bytes_of_expert(0))
                                  : 3.0 * static_cast<double>(s.d * s.f) * sizeof(float);
  const double router_bytes = static_cast<double>(s.E * s.d) * sizeof(float);
  state.counters["GFLOP/s"] =
      benchmark::Counter(active_flops(s, T) * iters * 1e-9, benchmark::Counter::kIsRate);
  state.counters["GB/s"] = benchmark::Counter(
      (touched_sum * expert_bytes + iters * router_bytes) * 1e-9, benchmark::Counter::kIsRate);
  state.counters["experts_touched"] =
      benchmark::Counter(touched_sum, benchmark::Counter::kAvgIterations);
}

std::string build_flags() {
  std::string isa;
#if defined(__AVX512F__)
  isa = "avx512f";
#elif defined(__AVX2__)
  isa = "avx2";
#elif defined(__AVX__)
  isa = "avx";
#elif defined(__SSE2__)
  isa = "sse2";
#else
  isa = "none";
#endif
#if defined(__FMA__)
  isa += "+fma";
#endif
#if defined(NDEBUG)
  isa += ", NDEBUG";
#endif
  return isa;
}

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  if (benchmark::ReportUnrecognizedArguments(argc, argv)) return 1;
  benchmark::AddCustomContext("moekit", MOEKIT_VERSION_STRING);
  benchmark::AddCustomContext("compiler", __VERSION__);
  benchmark::AddCustomContext("compile_isa", build_flags());
  benchmark::AddCustomContext("eigen_simd", Eigen::SimdInstructionSetsInUse());
  benchmark::AddCustomContext("weights",
                              "uniform, std 0.02, then each dtype; inputs N(0,1), 8 cycled");
  benchmark::AddCustomContext("packed_kernels_isa", moekit::isa_name(moekit::active_isa()));

  for (int si = 0; si < static_cast<int>(std::size(kShapes)); ++si)
    for (int v = 0; v < static_cast<int>(std::size(kVariants)); ++v)
      for (const Index T : kTokens)
        for (const int n : kThreadCounts) {
          const std::string name = std::string("block_") + kVariants[v].dtype + "/" +
                                   kShapes[si].name + "/T:" + std::to_string(T) +
                                   "/threads:" + std::to_string(n) + "/" + kVariants[v].path;
          benchmark::RegisterBenchmark(name.c_str(), bm_block, si, T, n, v)
              ->Unit(benchmark::kMillisecond)
              ->UseRealTime()
              ->MinTime(min_time_for(T));
        }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
