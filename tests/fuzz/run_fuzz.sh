#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
# Builds the libFuzzer targets fuzz_safetensors and fuzz_trace_file with
# clang++-14 and fuzzes each for a bounded time from its seed corpus
# (tests/fuzz/corpus/safetensors, tests/fuzz/corpus/trace; only read).
#   bash tests/fuzz/run_fuzz.sh [SECONDS=60] [BUILD_DIR=build/fuzz]
# Exit status 0 when no crash, leak, sanitizer report or broken invariant was
# found; otherwise the failing input is under BUILD_DIR/tests/fuzz/artifacts/.
set -euo pipefail
seconds="${1:-60}"
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
build="${2:-build/fuzz}"
cxx="${MOEKIT_FUZZ_CXX:-clang++-14}"
jobs="$(nproc 2>/dev/null || echo 2)"

cmake -S . -B "${build}" -DCMAKE_CXX_COMPILER="${cxx}" -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DMOEKIT_BUILD_FUZZERS=ON -DMOEKIT_FUZZ_SECONDS="${seconds}" \
  -DMOEKIT_BUILD_BENCHMARKS=OFF -DMOEKIT_BUILD_EXAMPLES=OFF -DMOEKIT_INSTALL=OFF
cmake --build "${build}" -j "${jobs}" --target fuzz_safetensors fuzz_trace_file
ctest --test-dir "${build}" -L fuzz --output-on-failure
