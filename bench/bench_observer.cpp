// SPDX-License-Identifier: MIT
// The cost of observing a block: no observer, NoObserver passed explicitly
// (must be the same code: the calls are removed at compile time), and the
// ready-made observers (routing trace, load, EASY-EP importance with expert
// outputs). Shape: olmoe (d 2048, f 1024, E 64, k 8) at T = 1, 8, 64, f32,
// one thread. Counters as in bench_block: GFLOP/s of active FLOPs.
//
//   ./bench/bench_observer --benchmark_repetitions=5 --benchmark_report_aggregates_only=true
#include <benchmark/benchmark.h>

#include <random>

#include <moekit/moekit.hpp>

namespace {

using moekit::Index;
using moekit::Matrix;

constexpr Index kD = 2048, kF = 1024, kE = 64, kK = 8;

moekit::SwiGluMoEBlock& block() {
  static moekit::SwiGluMoEBlock b = [] {
    std::mt19937 gen(7);
    std::normal_distribution<float> nd(0.0f, 0.02f);
    auto rnd = [&](Index r, Index c) {
      Matrix m(r, c);
      for (Index i = 0; i < m.size(); ++i) m.data()[i] = nd(gen);
      return m;
    };
    Matrix router = rnd(kE, kD), gate = rnd(kE * kF, kD), up = rnd(kE * kF, kD), down = rnd(kE * kD, kF);
    return moekit::SwiGluMoEBlock(moekit::Router<>(router, moekit::RouterOptions().with_top_k(kK)),
                                  moekit::SwiGluExperts(kE, gate, up, down));
  }();
  return b;
}

Matrix input(Index T) {
  std::mt19937 gen(static_cast<unsigned>(T));
  std::normal_distribution<float> nd;
  Matrix x(T, kD);
  for (Index i = 0; i < x.size(); ++i) x.data()[i] = nd(gen);
  return x;
}

template <class MakeObserver>
void run(benchmark::State& state, MakeObserver make) {
  const Index T = state.range(0);
  const Matrix x = input(T);
  Matrix y(T, kD);
  moekit::SerialExecutor serial;
  auto observer = make();
  block().forward(x, y, serial);  // build the block and size its buffers outside the timing
  for (auto _ : state) {
    if constexpr (std::is_same_v<decltype(observer), std::nullptr_t>) {
      block().forward(x, y, serial);
    } else {
      block().forward(x, y, serial, observer);
    }
    benchmark::DoNotOptimize(y.data());
  }
  const double flops = 2.0 * static_cast<double>(T) * (kE * kD + 3.0 * kK * kD * kF);
  state.counters["GFLOP/s"] = benchmark::Counter(flops * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
}

void BM_NoObserver(benchmark::State& s) { run(s, [] { return nullptr; }); }
void BM_NoObserverExplicit(benchmark::State& s) { run(s, [] { return moekit::NoObserver(); }); }
void BM_LoadObserver(benchmark::State& s) { run(s, [] { return moekit::LoadObserver(); }); }
void BM_TraceObserver(benchmark::State& s) {
  static moekit::TraceRecorder recorder(1);
  run(s, [] { return recorder.layer(0); });
}
void BM_EasyEpObserver(benchmark::State& s) { run(s, [] { return moekit::EasyEpImportance(); }); }

#define MOEKIT_OBSERVER_BENCH(fn) BENCHMARK(fn)->Arg(1)->Arg(8)->Arg(64)->Unit(benchmark::kMillisecond)->UseRealTime()
MOEKIT_OBSERVER_BENCH(BM_NoObserver);
MOEKIT_OBSERVER_BENCH(BM_NoObserverExplicit);
MOEKIT_OBSERVER_BENCH(BM_LoadObserver);
MOEKIT_OBSERVER_BENCH(BM_TraceObserver);
MOEKIT_OBSERVER_BENCH(BM_EasyEpObserver);

}  // namespace

BENCHMARK_MAIN();
