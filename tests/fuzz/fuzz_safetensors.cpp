// SPDX-License-Identifier: MIT
// libFuzzer target: arbitrary bytes into SafetensorsFile (see
// fuzz_safetensors_body.hpp for what is checked). Built by tests/fuzz when
// MOEKIT_BUILD_FUZZERS is ON and the compiler is Clang, with
// -fsanitize=fuzzer,address,undefined. A broken invariant or an exception other
// than moekit::Error aborts, which libFuzzer reports as a crash.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "fuzz_safetensors_body.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string problem = moekit_fuzz::run_safetensors_input(data, size);
  if (!problem.empty()) {
    std::fprintf(stderr, "fuzz_safetensors: invariant broken: %s\n", problem.c_str());
    std::abort();
  }
  return 0;
}
