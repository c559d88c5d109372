// SPDX-License-Identifier: MIT
// libFuzzer target: arbitrary bytes into load_trace_from_memory (see
// fuzz_trace_file_body.hpp for what is checked). Built as fuzz_safetensors is.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "fuzz_trace_file_body.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string problem = moekit_fuzz::run_trace_input(data, size);
  if (!problem.empty()) {
    std::fprintf(stderr, "fuzz_trace_file: invariant broken: %s\n", problem.c_str());
    std::abort();
  }
  return 0;
}
