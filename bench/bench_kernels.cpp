// SPDX-License-Identifier: MIT
// Benchmark of the expert kernels alone, one thread: one expert's gate + up
// projection (G, U = A·W_gateᵀ, A·W_upᵀ) or down projection (Y = H·W_downᵀ)
// over m rows, for every ISA this machine has (kernels::table_for, the same
// entry points the block calls), every weight type and arithmetic.
//
//   ./bench_kernels --benchmark_filter='/m:[0-9]+/min'  # the hot cases (~5 min)
//   ./bench_kernels --benchmark_filter='avx2/bf16/'     # one ISA and type
//   ./bench_kernels --benchmark_filter='/m:64/'         # prefill-sized calls
//   ./bench_kernels --benchmark_filter='/streamed'      # weights from memory
//   ./bench_kernels --benchmark_filter='^tile/'         # the AMX tile unit alone
//
// Names: kernel/<isa>/<dtype>/<math>/<shape>/<gate_up|down>/m:<rows>[/streamed].
// <math>: "f32" the f32-FMA kernels (f32 activations; bf16 / f16 / int8 / int4
// weights widened or decoded), "bf16_dot" activations rounded to bf16
// (vdpbf16ps, BFDOT), "int8_dot" int8 activations (VNNI, AVX2 integer
// multiply-adds, SDOT); a path the ISA lacks is not registered.
// <shape>: one expert of olmoe (d 2048, f 1024) or mixtral-s (d 1024, f 3584).
//
// Without /streamed the same weights are read by every call, so after the
// first they come from the caches as far as they fit (olmoe f32 gate + up:
// 16 MiB): this measures the kernels' arithmetic, not the memory. /streamed
// cases hold copies of the weights, 768 MiB in all, and each call reads the
// next copy, so the weights come from memory as they do in a forward over
// many experts (decode), without the forward's routing and its other phases:
// `moekit bench` and bench_block measure whole forwards.
//
// tile/avx512_amx/<bf16|int8>/k_bytes:<64|32>/rows:<16|1>: the tile unit
// alone (no memory traffic): the time of one tdpbf16ps / tdpbusd of a
// rows x k_bytes activation tile by a k_bytes/4 x 64-byte weight tile, six
// independent accumulators. It says what a product over a 32-input scale
// group (int8 / int4 experts) costs against one over 32 bf16 inputs.
//
// Before timing, each case's output is compared with the scalar kernels' on
// the same packed weights: within 1e-4 · max(1, max|ref|) for f32 arithmetic
// (summation order differs), 3e-2 for bf16 / int8 activations (README's
// promises); a case that fails is skipped with an error.
//
// Counters (rates over real time): GFLOP/s = 2·m·K·N per call (gate + up:
// N = 2f); GB/s = the packed weight bytes the call reads (scales included).

#include <benchmark/benchmark.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <memory>
#include <string>
#include <type_traits>
#include <vector>

#include <moekit/moekit.hpp>

namespace {

using moekit::Index;
namespace kernels = moekit::kernels;

struct Shape {
  const char* name;
  Index d, f;
};
constexpr Shape kShapes[] = {{"olmoe", 2048, 1024}, {"mixtral-s", 1024, 3584}};
constexpr Index kRows[] = {1, 3, 8, 64};

enum class Weights { f32, bf16, f16, int8, int4 };
enum class Math { f32, bf16_dot, int8_dot };
const char* name_of(Weights w) {
  constexpr const char* n[] = {"f32", "bf16", "f16", "int8", "int4"};
  return n[static_cast<int>(w)];
}
const char* name_of(Math m) {
  constexpr const char* n[] = {"f32", "bf16_dot", "int8_dot"};
  return n[static_cast<int>(m)];
}

std::vector<float> uniform(Index n, std::uint32_t seed, float scale) {
  std::vector<float> v(static_cast<std::size_t>(n));
  std::uint32_t s = seed * 2654435761u + 1u;
  for (float& x : v) {
    s = s * 1664525u + 1013904223u;
    x = scale * (static_cast<float>(s >> 8) / 8388608.0f - 1.0f);
  }
  return v;
}

// One projection's packed weights in one storage type, and the call that runs
// a kernel table's entry point for it.
struct Projection {
  bool gate_up;
  Index K, N;  // inputs, outputs (gate + up: N = f outputs of each)
  Weights w;
  moekit::AlignedBuffer<float> f32;
  moekit::AlignedBuffer<moekit::bf16> bf16;
  moekit::AlignedBuffer<moekit::f16> f16;
  moekit::AlignedBuffer<std::uint8_t> codes;
  moekit::AlignedBuffer<float> scales;

  Projection(bool gu, Index K_, Index N_, Weights w_) : gate_up(gu), K(K_), N(N_), w(w_) {
    std::vector<float> a = uniform(N * K, 1, 0.035f), b = uniform(N * K, 2, 0.035f);
    const auto pack = [&](auto& buf) {
      using T = std::remove_reference_t<decltype(buf[0])>;
      buf.resize(static_cast<std::size_t>(gate_up ? kernels::packed_gate_up_size<T>(N, K)
                                                  : kernels::packed_size<T>(N, K)));
      if (gate_up)
        kernels::pack_gate_up<T>(a.data(), b.data(), N, K, buf.data());
      else
        kernels::pack_panels<T>(a.data(), N, K, buf.data());
    };
    if (w == Weights::f32) pack(f32);
    if (w == Weights::bf16) pack(bf16);
    if (w == Weights::f16) pack(f16);
    if (w == Weights::int8 || w == Weights::int4) {
      const int bits = w == Weights::int8 ? 8 : 4;
      const Index W = gate_up ? 2 * kernels::kPanel : kernels::kPanel;
      const Index cb = kernels::quant_panel_code_bytes(K, W, bits);
      const Index sc = kernels::quant_panel_scales(K, W);
      codes.resize(static_cast<std::size_t>(kernels::panels(N) * cb));
      scales.resize(static_cast<std::size_t>(kernels::panels(N) * sc));
      float* src[2] = {a.data(), b.data()};
      for (Index p = 0; p < kernels::panels(N); ++p)
        kernels::quantize_panel(src, gate_up ? 2 : 1, N, K, p, bits, codes.data() + p * cb,
                                scales.data() + p * sc);
    }
  }

  // Copies of the packed weights, one after another (streamed cases).
  Index copies = 1;
  void replicate(Index n) {
    const auto grow = [n](auto& buf) {
      const std::size_t one = buf.size();
      if (one == 0) return;
      std::remove_reference_t<decltype(buf)> all(one * static_cast<std::size_t>(n));
      for (Index c = 0; c < n; ++c)
        std::copy(buf.data(), buf.data() + one, all.data() + static_cast<std::size_t>(c) * one);
      buf = std::move(all);
    };
    grow(f32);
    grow(bf16);
    grow(f16);
    grow(codes);
    grow(scales);
    copies = n;
  }

  // Packed bytes of one copy (scales included): what one call reads.
  double bytes() const {
    return static_cast<double>(f32.size() * 4 + bf16.size() * 2 + f16.size() * 2 + codes.size() +
                               scales.size() * 4) /
           static_cast<double>(copies);
  }
  double flops(Index m) const { return 2.0 * static_cast<double>(m * K * N) * (gate_up ? 2 : 1); }

  // Whether `t` has this path; if so, runs it on m rows of A into O0 (and O1).
  bool run(const kernels::KernelTable& t, Math math, const float* A, Index m, float* O0, float* O1,
           Index copy = 0) const {
    const Index ld = N;
    // Element offset of `copy` in a buffer of `copies` copies.
    const auto at = [&](const auto& buf) {
      return buf.data() +
             buf.size() / static_cast<std::size_t>(copies) * static_cast<std::size_t>(copy);
    };
    if (w == Weights::f32 || w == Weights::bf16 || w == Weights::f16) {
      if (math == Math::int8_dot) return false;
      const auto go = [&](const auto* packed, auto gu, auto mm) {
        if (!gu || !mm) return false;
        if (gate_up)
          gu({A, K}, m, K, packed, N, 0, N, O0, O1, ld);
        else
          mm(A, K, m, K, packed, N, 0, N, O0, ld);
        return true;
      };
      if (w == Weights::f32) return math == Math::f32 && go(at(f32), t.gate_up_f32, t.matmul_f32);
      if (w == Weights::f16) return math == Math::f32 && go(at(f16), t.gate_up_f16, t.matmul_f16);
      return math == Math::f32 ? go(at(bf16), t.gate_up_bf16, t.matmul_bf16)
                               : go(at(bf16), t.gate_up_bf16_dot, t.matmul_bf16_dot);
    }
    const int bits = w == Weights::int8 ? 8 : 4;
    const auto gu = math == Math::f32        ? t.gate_up_quant(bits)
                    : math == Math::bf16_dot ? t.gate_up_quant_dot(bits)
                                             : t.gate_up_quant_a8(bits);
    const auto mm = math == Math::f32        ? t.matmul_quant(bits)
                    : math == Math::bf16_dot ? t.matmul_quant_dot(bits)
                                             : t.matmul_quant_a8(bits);
    if (!gu || !mm) return false;
    if (gate_up)
      gu({A, K}, m, K, at(codes), at(scales), N, 0, N, O0, O1, ld);
    else
      mm(A, K, m, K, at(codes), at(scales), N, 0, N, O0, ld);
    return true;
  }
};

// Largest |got - ref| over max(1, max|ref|) of the outputs.
double relative_error(const std::vector<float>& got, const std::vector<float>& ref) {
  double err = 0.0, scale = 1.0;
  for (std::size_t i = 0; i < ref.size(); ++i) {
    if (!std::isfinite(got[i])) return INFINITY;
    err = std::max(err, static_cast<double>(std::fabs(got[i] - ref[i])));
    scale = std::max(scale, static_cast<double>(std::fabs(ref[i])));
  }
  return err / scale;
}

void run_case(benchmark::State& state, const Projection& proj, moekit::Isa isa, Math math,
              Index m) {
  const auto& table = kernels::table_for(isa);
  const std::vector<float> A = uniform(m * proj.K, 3, 1.0f);
  std::vector<float> O0(static_cast<std::size_t>(m * proj.N)), O1(O0.size());
  std::vector<float> R0(O0.size()), R1(O0.size());
  proj.run(kernels::table_for(moekit::Isa::scalar), Math::f32, A.data(), m, R0.data(), R1.data());
  proj.run(table, math, A.data(), m, O0.data(), O1.data());
  const double tol = math == Math::f32 ? 1e-4 : 3e-2;
  const double err = std::max(relative_error(O0, R0), proj.gate_up ? relative_error(O1, R1) : 0.0);
  if (!(err <= tol)) {
    state.SkipWithError(("output differs from the scalar kernels: " + std::to_string(err)).c_str());
    return;
  }
  Index copy = 0;
  for (auto _ : state) {
    proj.run(table, math, A.data(), m, O0.data(), O1.data(), copy);
    copy = copy + 1 == proj.copies ? 0 : copy + 1;
    benchmark::DoNotOptimize(O0.data());
    benchmark::ClobberMemory();
  }
  const double calls = static_cast<double>(state.iterations());
  state.counters["GFLOP/s"] =
      benchmark::Counter(proj.flops(m) * calls * 1e-9, benchmark::Counter::kIsRate);
  state.counters["GB/s"] =
      benchmark::Counter(proj.bytes() * calls * 1e-9, benchmark::Counter::kIsRate);
}

#if defined(MOEKIT_HAVE_X86_KERNELS)
// `iters` x 6 tile products (int8: tdpbusd, else tdpbf16ps) of a rows x
// k_bytes activation tile (tmm6) by a k_bytes/4 x 64-byte weight tile (tmm7)
// into six accumulators (tmm0..5), operands zero.
void tile_products(bool int8, int k_bytes, int rows, std::int64_t iters) {
  kernels::avx512_amx::detail::TileConfig c;
  for (int t = 0; t < 6; ++t) {
    c.colsb[t] = 64;
    c.rows[t] = static_cast<std::uint8_t>(rows);
  }
  c.colsb[6] = static_cast<std::uint16_t>(k_bytes);
  c.rows[6] = static_cast<std::uint8_t>(rows);
  c.colsb[7] = 64;
  c.rows[7] = static_cast<std::uint8_t>(k_bytes / 4);
  alignas(64) static const std::uint8_t zeros[16 * 64] = {};
  const long stride = 64;
  __asm__ volatile("ldtilecfg %0" ::"m"(c));
  __asm__ volatile(
      "tilezero %%tmm0\n tilezero %%tmm1\n tilezero %%tmm2\n"
      "tilezero %%tmm3\n tilezero %%tmm4\n tilezero %%tmm5\n"
      "tileloadd (%0,%1,1), %%tmm6\n tileloadd (%0,%1,1), %%tmm7" ::"r"(zeros),
      "r"(stride)
      : "memory");
  if (int8)
    for (std::int64_t i = 0; i < iters; ++i)
      __asm__ volatile(
          "tdpbusd %%tmm7, %%tmm6, %%tmm0\n tdpbusd %%tmm7, %%tmm6, %%tmm1\n"
          "tdpbusd %%tmm7, %%tmm6, %%tmm2\n tdpbusd %%tmm7, %%tmm6, %%tmm3\n"
          "tdpbusd %%tmm7, %%tmm6, %%tmm4\n tdpbusd %%tmm7, %%tmm6, %%tmm5" ::);
  else
    for (std::int64_t i = 0; i < iters; ++i)
      __asm__ volatile(
          "tdpbf16ps %%tmm7, %%tmm6, %%tmm0\n tdpbf16ps %%tmm7, %%tmm6, %%tmm1\n"
          "tdpbf16ps %%tmm7, %%tmm6, %%tmm2\n tdpbf16ps %%tmm7, %%tmm6, %%tmm3\n"
          "tdpbf16ps %%tmm7, %%tmm6, %%tmm4\n tdpbf16ps %%tmm7, %%tmm6, %%tmm5" ::);
  __asm__ volatile("tilerelease" ::: "memory");
}

void run_tile_case(benchmark::State& state, bool int8, int k_bytes, int rows) {
  constexpr std::int64_t kIters = 10000;
  for (auto _ : state) tile_products(int8, k_bytes, rows, kIters);
  const double products = 6.0 * kIters * static_cast<double>(state.iterations());
  // Multiply-adds per product: rows x 16 columns x k (k_bytes / 2 bf16, k_bytes int8).
  const double flops = 2.0 * rows * 16 * (int8 ? k_bytes : k_bytes / 2);
  state.counters["ns/product"] = benchmark::Counter(
      products * 1e-9, benchmark::Counter::kIsRate | benchmark::Counter::kInvert);
  state.counters["GFLOP/s"] =
      benchmark::Counter(products * flops * 1e-9, benchmark::Counter::kIsRate);
}
#endif

}  // namespace

int main(int argc, char** argv) {
  benchmark::Initialize(&argc, argv);
  // Projections live for the whole run (a few hundred MiB at most).
  static std::vector<std::unique_ptr<Projection>> projections;
  // The streamed projection in use (one at a time: they are large).
  static std::unique_ptr<Projection> streamed;
  static std::size_t streamed_slot = 0;
  for (const Shape& s : kShapes)
    for (Weights w : {Weights::f32, Weights::bf16, Weights::f16, Weights::int8, Weights::int4})
      for (bool gate_up : {true, false}) {
        // Built on first use: a filter that skips them costs nothing.
        projections.push_back(nullptr);
        const std::size_t slot = projections.size() - 1;
        const Index K = gate_up ? s.d : s.f, N = gate_up ? s.f : s.d;
        const auto get = [slot, gate_up, K, N, w]() -> const Projection& {
          auto& p = projections[slot];
          if (!p) p = std::make_unique<Projection>(gate_up, K, N, w);
          return *p;
        };
        const auto get_streamed = [slot, gate_up, K, N, w]() -> const Projection& {
          if (!streamed || streamed_slot != slot) {
            streamed.reset();  // free the last one first
            streamed = std::make_unique<Projection>(gate_up, K, N, w);
            const double all = 768.0 * (1 << 20);
            streamed->replicate(std::max<Index>(2, static_cast<Index>(all / streamed->bytes())));
            streamed_slot = slot;
          }
          return *streamed;
        };
        for (moekit::Isa isa : moekit::available_isas())
          for (Math math : {Math::f32, Math::bf16_dot, Math::int8_dot}) {
            // Register only the paths this ISA has (probed on a tiny projection).
            const float probe_in[2] = {1.0f, 1.0f};
            float probe_out[2] = {};
            const Projection probe(gate_up, 2, 1, w);
            if (!probe.run(kernels::table_for(isa), math, probe_in, 1, probe_out, probe_out + 1))
              continue;
            for (bool from_memory : {false, true})
              for (Index m : kRows) {
                const std::string name =
                    std::string("kernel/") + moekit::isa_name(isa) + "/" + name_of(w) + "/" +
                    name_of(math) + "/" + s.name + "/" + (gate_up ? "gate_up" : "down") +
                    "/m:" + std::to_string(m) + (from_memory ? "/streamed" : "");
                benchmark::RegisterBenchmark(
                    name.c_str(),
                    [get, get_streamed, from_memory, isa, math, m](benchmark::State& st) {
                      run_case(st, from_memory ? get_streamed() : get(), isa, math, m);
                    })
                    ->Unit(benchmark::kMicrosecond)
                    ->UseRealTime()
                    ->MinTime(0.5);
              }
          }
      }
#if defined(MOEKIT_HAVE_X86_KERNELS)
  if (moekit::cpu_features().amx_bf16)
    for (bool int8 : {false, true}) {
      if (int8 && !moekit::cpu_features().amx_int8) continue;
      for (int k_bytes : {64, 32})
        for (int rows : {16, 1}) {
          const std::string name = std::string("tile/avx512_amx/") + (int8 ? "int8" : "bf16") +
                                   "/k_bytes:" + std::to_string(k_bytes) +
                                   "/rows:" + std::to_string(rows);
          benchmark::RegisterBenchmark(name.c_str(),
                                       [int8, k_bytes, rows](benchmark::State& st) {
                                         run_tile_case(st, int8, k_bytes, rows);
                                       })
              ->Unit(benchmark::kMicrosecond)
              ->UseRealTime()
              ->MinTime(0.3);
        }
    }
#endif
  benchmark::RunSpecifiedBenchmarks();
  benchmark::Shutdown();
  return 0;
}
