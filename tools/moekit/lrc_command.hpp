// SPDX-License-Identifier: MIT
// `moekit lrc TRACE --segment M --cache C [--json]`: local routing consistency
// of a routing trace (METHODS.md §5): SRP (segment routing best performance)
// and SCH (segment cache best hit rate), per layer and for the whole model.
// The trace is a safetensors file with `topk_ids` int32 [tokens, layers, k]
// and `num_experts` in its metadata (hooks/trace_file.hpp writes it).
#pragma once

#include <cstdio>
#include <string>

#include <moekit/hooks/routing_consistency.hpp>
#include <moekit/hooks/trace_file.hpp>

#include "cli.hpp"

namespace moekit_cli {

inline int lrc_command(int argc, char** argv) {
  const Args a = parse_args(argc, argv, 2, {"segment", "cache"});
  moekit::detail::require(a.positional.size() == 1, "lrc: expected one TRACE file, got ", a.positional.size());
  const long long m = a.get_int("segment", 16), C = a.get_int("cache", 0);
  moekit::detail::require(m >= 1, "--segment: expected >= 1, got ", m);
  const moekit::RoutingTrace trace = moekit::load_trace(a.positional[0]);
  const long long cache = C > 0 ? C : 2 * trace.top_k();  // default: twice the active experts
  const auto srp_l = moekit::srp_per_layer(trace, m);
  const auto sch_l = moekit::sch_per_layer(trace, m, cache);
  const double srp = moekit::srp(trace, m).srp, sch = moekit::sch(trace, m, cache).hit_rate();
  if (a.flag("json")) {
    std::printf("{\"trace\": \"%s\", \"tokens\": %ld, \"layers\": %ld, \"top_k\": %ld, \"num_experts\": %ld, \"segment\": %lld, "
                "\"cache\": %lld, \"srp\": %.6f, \"sch\": %.6f, \"srp_per_layer\": [",
                json_escape(a.positional[0]).c_str(), static_cast<long>(trace.num_tokens()), static_cast<long>(trace.num_layers()),
                static_cast<long>(trace.top_k()), static_cast<long>(trace.num_experts()), m, cache, srp, sch);
    for (std::size_t l = 0; l < srp_l.size(); ++l) std::printf("%s%.6f", l ? ", " : "", srp_l[l].srp);
    std::printf("], \"sch_per_layer\": [");
    for (std::size_t l = 0; l < sch_l.size(); ++l) std::printf("%s%.6f", l ? ", " : "", sch_l[l].hit_rate());
    std::printf("]}\n");
  } else {
    std::printf("%s: %ld tokens, %ld layers, top-%ld of %ld experts; segment m = %lld, cache C = %lld\n",
                a.positional[0].c_str(), static_cast<long>(trace.num_tokens()), static_cast<long>(trace.num_layers()),
                static_cast<long>(trace.top_k()), static_cast<long>(trace.num_experts()), m, cache);
    std::printf("  layer      SRP      SCH\n");
    for (std::size_t l = 0; l < srp_l.size(); ++l)
      std::printf("  %5zu  %7.4f  %7.4f\n", l, srp_l[l].srp, sch_l[l].hit_rate());
    std::printf("  model  %7.4f  %7.4f\n", srp, sch);
  }
  return 0;
}

}  // namespace moekit_cli
