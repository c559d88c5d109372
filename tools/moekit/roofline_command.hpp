// SPDX-License-Identifier: MIT
// `moekit roofline --threads N [--json]`: this machine's FP32 FMA peak, BF16
// dot-product peak, INT8 dot-product (VNNI) peak, AMX BF16 tile peak and
// memory read bandwidth, measured with N threads.
#pragma once

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <thread>
#include <vector>

#include <moekit/kernels/roofline.hpp>

#include "cli.hpp"

namespace moekit_cli {

// Runs fn(thread) on n threads at once; returns the wall time in seconds.
template <class F>
double timed_threads(int n, F fn) {
  std::vector<std::thread> ts;
  std::atomic<int> ready{0};
  std::atomic<bool> go{false};
  for (int t = 0; t < n; ++t)
    ts.emplace_back([&, t] {
      ready++;
      while (!go.load()) std::this_thread::yield();
      fn(t);
    });
  while (ready.load() < n) std::this_thread::yield();
  const auto t0 = std::chrono::steady_clock::now();
  go = true;
  for (auto& th : ts) th.join();
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
}

// Read bandwidth with n threads: each sums its share of a `bytes` buffer
// (far larger than the caches), best of `reps`. GB/s.
inline double measure_read_gbps(int n, std::size_t bytes, int reps) {
  const moekit::Isa isa = moekit::active_isa();
  const std::size_t total = bytes / sizeof(float) / 64 * 64;
  moekit::AlignedBuffer<float> buf(total);
  for (std::size_t i = 0; i < total; i += 1024) buf[i] = 1.0f;
  std::vector<float> sink(static_cast<std::size_t>(n));
  double gbps = 0.0;
  for (int rep = 0; rep < reps; ++rep) {
    const double t = timed_threads(n, [&](int i) {
      const std::size_t per = total / static_cast<std::size_t>(n) / 64 * 64,
                        b = per * static_cast<std::size_t>(i);
      sink[static_cast<std::size_t>(i)] = moekit::kernels::read_sum(isa, buf.data() + b, per);
    });
    gbps = std::max(gbps, static_cast<double>(total * sizeof(float)) / t / 1e9);
  }
  volatile float keep = 0.0f;
  for (float v : sink) keep = keep + v;
  return gbps;
}

inline int roofline_command(int argc, char** argv) {
  const Args a = parse_args(argc, argv, 2, {"threads"});
  const int n = static_cast<int>(a.get_int("threads", 1));
  moekit::detail::require(n >= 1, "--threads: expected >= 1, got ", n);
  const moekit::Isa isa = moekit::active_isa();
  std::vector<float> sink(static_cast<std::size_t>(n));

  // Compute peaks: best of 3 runs of ~0.3 s each (0 where the ISA lacks the instruction).
  using moekit::kernels::PeakLoop;
  const std::int64_t iters = 20'000'000;
  const PeakLoop loops[4] = {PeakLoop::fp32_fma, PeakLoop::bf16_dot, PeakLoop::int8_dot,
                             PeakLoop::amx_bf16};
  double peak[4] = {0.0, 0.0, 0.0, 0.0};
  for (int rep = 0; rep < 3; ++rep)
    for (int l = 0; l < 4; ++l) {
      const double ops = moekit::kernels::peak_ops_per_iter(loops[l], isa);
      if (ops == 0.0) continue;
      // A tile iteration (6 products of 16 x 16 x 32) is ~50x a vector one.
      const std::int64_t it = loops[l] == PeakLoop::amx_bf16 ? iters / 50 : iters;
      const double t = timed_threads(n, [&](int i) {
        sink[static_cast<std::size_t>(i)] += moekit::kernels::run_peak_loop(loops[l], isa, it);
      });
      peak[l] = std::max(peak[l], ops * static_cast<double>(it) * n / t / 1e9);
    }
  const double fma = peak[0], bf16 = peak[1], int8 = peak[2], amx = peak[3];
  // Read bandwidth: each thread sums its share of a 1 GiB buffer, best of 5.
  const double gbps = measure_read_gbps(n, std::size_t(1) << 30, 5);
  float checksum = 0.0f;
  for (float v : sink) checksum += v;
  if (a.flag("json")) {
    std::printf(
        "{\"threads\": %d, \"isa\": \"%s\", \"fp32_fma_gflops\": %.1f, \"bf16_dot_gflops\": %.1f, "
        "\"int8_dot_gops\": %.1f, \"amx_bf16_gflops\": %.1f, \"read_gbps\": %.2f, "
        "\"checksum\": %g}\n",
        n, moekit::isa_name(isa), fma, bf16, int8, amx, gbps, static_cast<double>(checksum));
  } else {
    std::printf("roofline, %d thread(s), %s\n", n, moekit::isa_name(isa));
    std::printf("  FP32 FMA peak   %8.1f GFLOP/s\n", fma);
    if (bf16 > 0)
      std::printf("  BF16 dot peak   %8.1f GFLOP/s\n", bf16);
    else
      std::printf("  BF16 dot peak        n/a (no AVX-512 BF16)\n");
    if (int8 > 0)
      std::printf("  INT8 dot peak   %8.1f GOP/s\n", int8);
    else
      std::printf("  INT8 dot peak        n/a (no AVX-512 VNNI)\n");
    if (amx > 0)
      std::printf("  AMX BF16 peak   %8.1f GFLOP/s\n", amx);
    else
      std::printf("  AMX BF16 peak        n/a (no AMX, or not the active ISA)\n");
    std::printf("  read bandwidth  %8.2f GB/s\n", gbps);
  }
  return 0;
}

}  // namespace moekit_cli
