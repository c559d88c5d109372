// SPDX-License-Identifier: MIT
// `moekit bench`: time one MoE block forward on random weights.
//
//   moekit bench [--shape NAME | --hidden D --ffn F --experts E --top-k K [--shared-experts S]]
//                --tokens T [--dtype f32|bf16|f16|int8|int4] [--threads N] [--isa NAME]
//                [--bf16-math dot|widen|int8_dot] [--roofline] [--json]
//
// Random weights (scale 0.02, fixed seed), four random inputs cycled, two
// warm-up runs, then repetitions until one second (at least 5, at most 200);
// the median is reported. FLOPs are the active FLOPs 2·T·(E·d + 3·k·d·f)
// (+ 2·T·3·d·f·S for S shared experts); weight_bytes counts the expert weights
// of the distinct experts the forwards touched (plus shared experts and the
// router), gbps = weight_bytes / median time.
#pragma once

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include <moekit/moekit.hpp>

#include "cli.hpp"
#include "roofline_command.hpp"

namespace moekit_cli {

struct BenchShape {
  const char* name;
  moekit::Index d, f, E, k, shared;
};

inline const std::vector<BenchShape>& bench_shapes() {
  static const std::vector<BenchShape> s = {{"mixtral-s", 1024, 3584, 8, 2, 0},
                                            {"olmoe", 2048, 1024, 64, 8, 0},
                                            {"qwen3-30b-a3b", 2048, 768, 128, 8, 0},
                                            {"deepseek-v2-lite", 2048, 1408, 64, 6, 2}};
  return s;
}

inline int bench_command(int argc, char** argv) {
  using moekit::Index;
  const Args a = parse_args(argc, argv, 2,
                            {"shape", "hidden", "ffn", "experts", "top-k", "shared-experts",
                             "tokens", "dtype", "threads", "isa", "bf16-math"});
  BenchShape shape{"custom", 0, 0, 0, 0, 0};
  if (a.has("shape")) {
    bool found = false;
    for (const auto& s : bench_shapes())
      if (a.get("shape") == s.name) shape = s, found = true;
    if (!found) {
      std::string names;
      for (const auto& s : bench_shapes()) names += std::string(names.empty() ? "" : ", ") + s.name;
      moekit::detail::fail("--shape: expected one of ", names, ", got \"", a.get("shape"), "\"");
    }
  } else {
    shape.d = a.get_int("hidden", 0);
    shape.f = a.get_int("ffn", 0);
    shape.E = a.get_int("experts", 0);
    shape.k = a.get_int("top-k", 0);
    shape.shared = a.get_int("shared-experts", 0);
    if (shape.d <= 0 || shape.f <= 0 || shape.E <= 0 || shape.k <= 0 || shape.k > shape.E)
      moekit::detail::fail(
          "bench: give --shape NAME, or --hidden, --ffn, --experts and --top-k (1 <= k <= E)");
  }
  const Index T = a.get_int("tokens", 1), threads = a.get_int("threads", 1);
  moekit::detail::require(T >= 1, "--tokens: expected >= 1, got ", T);
  moekit::detail::require(threads >= 1, "--threads: expected >= 1, got ", threads);
  const std::string dtype = a.get("dtype", "f32");
  const moekit::Dtype wt = moekit::parse_dtype(dtype);
  moekit::detail::require(wt != moekit::Dtype::i32,
                          "--dtype: expected f32, bf16, f16, int8 or int4, got ", dtype);
  if (a.has("isa")) moekit::set_max_isa(moekit::parse_isa(a.get("isa")));
  const Index d = shape.d, f = shape.f, E = shape.E, k = shape.k, S = shape.shared;

  std::mt19937 gen(42);
  std::normal_distribution<float> nd(0.0f, 0.02f);
  auto random = [&](Index r, Index c, float scale) {
    moekit::Matrix m(r, c);
    for (Index i = 0; i < m.size(); ++i) m.data()[i] = nd(gen) * scale;
    return m;
  };
  moekit::SwiGluMoEBlock block(
      moekit::Router<>(random(E, d, 1.0f), moekit::RouterOptions().with_top_k(k)),
      moekit::SwiGluExperts(E, random(E * f, d, 1.0f), random(E * f, d, 1.0f),
                            random(E * d, f, 1.0f)));
  const std::string bf16_math = a.get("bf16-math", "dot");
  moekit::detail::require(bf16_math == "dot" || bf16_math == "widen" || bf16_math == "int8_dot",
                          "--bf16-math: expected dot, widen or int8_dot, got ", bf16_math);
  const moekit::Bf16Math math = bf16_math == "dot"     ? moekit::Bf16Math::dot
                                : bf16_math == "widen" ? moekit::Bf16Math::widen
                                                       : moekit::Bf16Math::int8_dot;
  block.experts().set_weight_dtype(wt).set_bf16_math(math);
  // What bf16 experts really ran: dot only where the ISA has vdpbf16ps (or
  // BFDOT: bf16 experts on NEON).
  // bf16, int8 and int4 experts follow Bf16Math; f32 and f16 have one way.
  const bool follows_math =
      wt == moekit::Dtype::bf16 || wt == moekit::Dtype::i8 || wt == moekit::Dtype::i4;
  const bool quantized = wt == moekit::Dtype::i8 || wt == moekit::Dtype::i4;
  const char* math_used = !follows_math                                                ? "none"
                          : quantized && block.experts().quant_uses_int8_activations() ? "int8_dot"
                          : quantized && block.experts().quant_uses_dot()              ? "dot"
                          : !quantized && block.experts().bf16_uses_dot()              ? "dot"
                                                                                       : "widen";
  if (S > 0) {
    moekit::SwiGluExperts shared(1, random(f * S, d, 1.0f), random(f * S, d, 1.0f),
                                 random(d, f * S, 1.0f));
    shared.set_weight_dtype(wt).set_bf16_math(math);
    block.set_shared_experts(moekit::SharedExperts<>(std::move(shared)));
  }
  std::vector<moekit::Matrix> inputs;
  for (int i = 0; i < 4; ++i) inputs.push_back(random(T, d, 50.0f));  // N(0, 1) activations
  moekit::Matrix y(T, d);
  moekit::ThreadPoolExecutor pool(static_cast<int>(threads));

  for (int w = 0; w < 2; ++w) block.forward(inputs[static_cast<std::size_t>(w)], y, pool);
  std::vector<double> ms;
  double total = 0.0;
  while ((total < 1000.0 || ms.size() < 5) && ms.size() < 200) {
    const moekit::Matrix& x = inputs[ms.size() % inputs.size()];
    const auto t0 = std::chrono::steady_clock::now();
    block.forward(x, y, pool);
    const double t =
        std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    ms.push_back(t);
    total += t;
  }
  std::sort(ms.begin(), ms.end());
  const double median = ms[ms.size() / 2];
  // The distinct experts one forward touches (the bytes it must read), averaged over the inputs.
  double distinct = 0.0;
  for (const auto& x : inputs) {
    block.forward(x, y, pool);
    for (Index c : block.last_groups().counts()) distinct += c > 0 ? 1.0 : 0.0;
  }
  distinct /= static_cast<double>(inputs.size());
  const double flops = 2.0 * static_cast<double>(T) *
                       (static_cast<double>(E * d) + 3.0 * static_cast<double>(k * d * f) +
                        3.0 * static_cast<double>(d * f * S));
  // Packed bytes of the experts (scales included), the shared experts and the router.
  const double shared_bytes =
      block.shared_experts()
          ? static_cast<double>(block.shared_experts()->bank().bytes_of_expert(0))
          : 0.0;
  const double bytes = distinct * static_cast<double>(block.experts().bytes_of_expert(0)) +
                       shared_bytes + 4.0 * static_cast<double>(E * d);
  const double gflops = flops / median / 1e6, gbps = bytes / median / 1e6;
  const double read_gbps =
      a.flag("roofline") ? measure_read_gbps(static_cast<int>(threads), std::size_t(512) << 20, 3)
                         : 0.0;
  std::string roof;
  if (read_gbps > 0.0) {
    char buf[96];
    std::snprintf(buf, sizeof buf, ", \"read_gbps\": %.2f, \"bandwidth_fraction\": %.3f", read_gbps,
                  gbps / read_gbps);
    roof = buf;
  }
  if (a.flag("json")) {
    std::printf(
        "{\"shape\": \"%s\", \"hidden\": %ld, \"ffn\": %ld, \"experts\": %ld, \"top_k\": %ld, "
        "\"shared_experts\": %ld, "
        "\"tokens\": %ld, \"dtype\": \"%s\", \"threads\": %ld, \"isa\": \"%s\", \"runs\": %zu, "
        "\"ms_median\": %.4f, \"ms_min\": %.4f, \"ms_max\": %.4f, \"gflops\": %.3f, "
        "\"weight_bytes\": %.0f, \"gbps\": %.3f, "
        "\"bf16_math\": \"%s\"%s}\n",
        json_escape(shape.name).c_str(), static_cast<long>(d), static_cast<long>(f),
        static_cast<long>(E), static_cast<long>(k), static_cast<long>(S), static_cast<long>(T),
        dtype.c_str(), static_cast<long>(threads), moekit::isa_name(moekit::active_isa()),
        ms.size(), median, ms.front(), ms.back(), gflops, bytes, gbps, math_used, roof.c_str());
  } else {
    std::printf("%s (d %ld, f %ld, E %ld, k %ld, shared %ld), T = %ld, %s%s%s, %ld thread(s), %s\n",
                shape.name, static_cast<long>(d), static_cast<long>(f), static_cast<long>(E),
                static_cast<long>(k), static_cast<long>(S), static_cast<long>(T), dtype.c_str(),
                follows_math ? " " : "", follows_math ? math_used : "", static_cast<long>(threads),
                moekit::isa_name(moekit::active_isa()));
    std::printf("  median %.3f ms (min %.3f, max %.3f, %zu runs)\n", median, ms.front(), ms.back(),
                ms.size());
    std::printf("  %.1f GFLOP/s, %.1f GB/s of expert weights (%.1f MB, %.0f distinct experts)\n",
                gflops, gbps, bytes / 1e6, distinct);
    if (read_gbps > 0.0)
      std::printf("  read bandwidth now %.2f GB/s: %.0f%% of it\n", read_gbps,
                  100.0 * gbps / read_gbps);
  }
  return 0;
}

}  // namespace moekit_cli
