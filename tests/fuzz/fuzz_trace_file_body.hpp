// SPDX-License-Identifier: MIT
// The body of the trace-file fuzz target, shared by the libFuzzer binary
// (fuzz_trace_file.cpp) and the corpus regression test (corpus_test.cpp).
//
// It feeds arbitrary bytes to load_trace_from_memory (hooks/trace_file.hpp,
// the trace format's own safetensors reader). Rejection must be a
// moekit::Error and nothing else. A trace that loads must be consistent
// (T · L · k ids, each in [-1, E)), and written back with trace_to_bytes it
// must load again to the same trace. A broken invariant is returned as a
// message ("" when all holds).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "moekit/hooks/trace_file.hpp"

namespace moekit_fuzz {

/// Runs one input; returns "" when every invariant holds, else what broke.
inline std::string run_trace_input(const std::uint8_t* data, std::size_t size) {
  moekit::RoutingTrace tr;
  try {
    tr = moekit::load_trace_from_memory(data, size, "<fuzz input>");
  } catch (const moekit::Error&) {
    return "";  // rejected cleanly
  }
  const moekit::Index T = tr.num_tokens(), L = tr.num_layers(), k = tr.top_k(),
                      E = tr.num_experts();
  if (T < 0 || L < 1 || k < 1 || E < 1) return "a loaded trace has a bad shape";
  if (static_cast<moekit::Index>(tr.data().size()) != T * L * k)
    return "a loaded trace holds the wrong number of ids";
  for (const std::int32_t id : tr.data())
    if (id < -1 || id >= E) return "a loaded trace holds an id outside [-1, E)";

  const std::vector<unsigned char> bytes = moekit::trace_to_bytes(tr);
  try {
    const moekit::RoutingTrace back =
        moekit::load_trace_from_memory(bytes.data(), bytes.size(), "<rewritten>");
    if (back.num_tokens() != T || back.num_layers() != L || back.top_k() != k ||
        back.num_experts() != E || back.data() != tr.data())
      return "trace_to_bytes and load again changed the trace";
  } catch (const moekit::Error& e) {
    return std::string("the rewritten trace does not load: ") + e.what();
  }
  return "";
}

}  // namespace moekit_fuzz
