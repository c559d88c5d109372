// SPDX-License-Identifier: MIT
// Baseline benchmark of the fp32 MoE block forward (SwiGluMoEBlock) on the
// standard shapes of shared/conformance/README.md, at T = 1, 8, 64, 512 tokens,
// with 1 and 2 threads (ThreadPoolExecutor).
//
//   ./bench_block                                   # everything (~10 min per path on 2 cores)
//   ./bench_block --benchmark_filter='/olmoe/'      # one shape
//   ./bench_block --benchmark_filter='/T:1/'        # decode only
//
// Names: block_f32/<shape>/T:<tokens>/threads:<executor threads>/<path>/... .
// The executor's thread count is part of the name; Google Benchmark's own
// "threads" field stays 1 (one thread drives the block). <path> is the expert
// path: "eigen" is the foundation baseline (one Eigen GEMM per expert and
// projection). Where the expert bank has use_packed_kernels(bool), the
// library's default, its packed SIMD kernels, is measured too as "packed";
// --benchmark_filter=/eigen selects the baseline alone.
//
// Per shape the weights are drawn once (uniform, standard deviation 0.02, fixed
// seed) and reused for every T and thread count; only one shape is resident at
// a time (qwen3-30b-a3b is 2.4 GB of f32). Eight random inputs per T, N(0, 1),
// are cycled over the iterations so that the routing, and the set of experts
// whose weights are read, changes from one forward to the next.
//
// Before the first timing of a (shape, path, T), one forward with 1 thread and one
// with 2 threads must give bit-identical, finite outputs, and for T <= 8 the
// output must match moekit::reference (double precision) for the block's own
// routing within 1e-5 * max(1, max|ref|). A failure skips the case with an error.
//
// Counters (rates over real time):
//   GFLOP/s          active FLOPs 2*T*(E*d + 3*k*d*f) per forward
//   GB/s             weight bytes read per forward: distinct experts touched in that
//                    forward * 3*d*f*4, plus the router's E*d*4
//   experts_touched  distinct experts with at least one row, mean per forward
// Shared experts (deepseek-v2-lite has 2) are not in the library yet: only the
// routed experts are measured.

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
#include <type_traits>
#include <utility>
#include <vector>

#include <moekit/moekit.hpp>
#if __has_include(<moekit/kernels/dispatch.hpp>)
#include <moekit/kernels/dispatch.hpp>
#define MOEKIT_BENCH_HAS_KERNELS 1
#endif

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
  return 2.0 * static_cast<double>(T) *
         static_cast<double>(s.E * s.d + 3 * s.k * s.d * s.f);
}

enum class Path { eigen, packed };
const char* path_name(Path p) { return p == Path::eigen ? "eigen" : "packed"; }

// Detects an expert bank with a switch between packed kernels and Eigen.
template <class Bank, class = void>
struct HasPackedSwitch : std::false_type {};
template <class Bank>
struct HasPackedSwitch<Bank, std::void_t<decltype(std::declval<Bank&>().use_packed_kernels(true))>>
    : std::true_type {};
using ExpertBank = std::decay_t<decltype(std::declval<moekit::SwiGluMoEBlock&>().experts())>;
constexpr bool kHasPackedPath = HasPackedSwitch<ExpertBank>::value;

template <class Bank>
void select_path(Bank& bank, Path p) {
  if constexpr (HasPackedSwitch<Bank>::value) bank.use_packed_kernels(p == Path::packed);
  (void)bank;
  (void)p;
}

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
  int path = -1;                                // Path the bank is set to, -1 = library default
  std::map<Index, std::vector<Matrix>> inputs;  // per T: kNumInputs inputs [T, d]
  std::map<std::pair<int, Index>, std::string> check;  // per (path, T): "" = passed, else why not
  std::uint64_t cursor = 0;                     // next input, carried across runs
};

Loaded& loaded() {
  static Loaded l;
  return l;
}

Loaded& load(int shape) {
  Loaded& l = loaded();
  if (l.shape == shape) return l;
  l = Loaded();  // free the previous shape first
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
  l.shape = shape;
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  std::fprintf(stderr, "# %s: built weights (%.2f GB f32) in %.1f s\n", s.name,
               static_cast<double>(s.E * (3 * s.d * s.f + s.d)) * 4e-9, secs);
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
    const float tol = 1e-5f * std::max(1.0f, ref.cwiseAbs().maxCoeff());
    const float diff = (y2 - ref).cwiseAbs().maxCoeff();
    if (!(diff <= tol)) err << "differs from moekit::reference by " << diff << " > " << tol << "; ";
  }
  return err.str();
}

void bm_block(benchmark::State& state, int shape, Index T, int threads, Path path) {
  Loaded& l = load(shape);
  if (l.path != static_cast<int>(path)) {
    select_path(l.block->experts(), path);
    l.path = static_cast<int>(path);
  }
  const auto key = std::make_pair(l.path, T);
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
  const double expert_bytes = 3.0 * static_cast<double>(s.d * s.f) * sizeof(float);
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
  benchmark::AddCustomContext("weights", "f32, uniform, std 0.02; inputs N(0,1), 8 cycled");
#ifdef MOEKIT_BENCH_HAS_KERNELS
  benchmark::AddCustomContext("packed_kernels_isa",
                              moekit::isa_name(moekit::active_isa()));
#endif

  std::vector<Path> paths{Path::eigen};
  if (kHasPackedPath) paths.push_back(Path::packed);
  for (int si = 0; si < static_cast<int>(std::size(kShapes)); ++si)
    for (const Path path : paths)
      for (const Index T : kTokens)
        for (const int n : kThreadCounts) {
          const std::string name = std::string("block_f32/") + kShapes[si].name + "/T:" +
                                   std::to_string(T) + "/threads:" + std::to_string(n) + "/" +
                                   path_name(path);
          benchmark::RegisterBenchmark(name.c_str(), bm_block, si, T, n, path)
              ->Unit(benchmark::kMillisecond)
              ->UseRealTime()
              ->MinTime(min_time_for(T));
        }
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
