// SPDX-License-Identifier: MIT
// moekit: the command-line tool.
//
//   moekit check ...      run golden cases (see file_commands.hpp)
//   moekit info FILE      list a safetensors file
//   moekit run ...        run layer N of a checkpoint on an input file
//   moekit lrc TRACE ...  SRP and SCH of a routing trace (see lrc_command.hpp)
//   moekit bench ...      time a block forward (see bench_command.hpp)
//   moekit roofline ...   measure this machine's compute and bandwidth limits
//   moekit version
// Every error is reported as one line on stderr with exit code 2.
#include <cstdio>
#include <cstring>
#include <exception>
#include <string>

#include <moekit/moekit.hpp>

#include "bench_command.hpp"
#include "file_commands.hpp"
#include "lrc_command.hpp"
#include "roofline_command.hpp"

namespace {

int usage(std::FILE* out) {
  std::fprintf(
      out,
      "usage: moekit <command> [options]\n"
      "  check     CASE.safetensors...\n"
      "  info      FILE\n"
      "  run       --checkpoint DIR --layer N --input IN.safetensors --output OUT.safetensors\n"
      "            [--dtype f32|bf16|f16] [--threads N] [--family NAME]\n"
      "  lrc       TRACE --segment M [--cache C] [--json]\n"
      "  bench     [--shape NAME | --hidden D --ffn F --experts E --top-k K [--shared-experts S]]\n"
      "            --tokens T [--dtype f32|bf16|f16|int8|int4] [--threads N] [--isa NAME]\n"
      "            [--bf16-math dot|widen|int8_dot] [--roofline] [--json]\n"
      "  roofline  --threads N [--json]\n"
      "  version\n");
  return out == stdout ? 0 : 2;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 2) return usage(stderr);
  const std::string cmd = argv[1];
  try {
    if (cmd == "check") return moekit_cli::check_command(argc, argv);
    if (cmd == "info") return moekit_cli::info_command(argc, argv);
    if (cmd == "run") return moekit_cli::run_command(argc, argv);
    if (cmd == "lrc") return moekit_cli::lrc_command(argc, argv);
    if (cmd == "bench") return moekit_cli::bench_command(argc, argv);
    if (cmd == "roofline") return moekit_cli::roofline_command(argc, argv);
    if (cmd == "version") {
      std::printf("moekit %s (kernels: %s)\n", MOEKIT_VERSION_STRING,
                  moekit::isa_name(moekit::active_isa()));
      return 0;
    }
    if (cmd == "--help" || cmd == "-h" || cmd == "help") return usage(stdout);
    std::fprintf(stderr, "moekit: unknown command \"%s\"\n", cmd.c_str());
    return usage(stderr);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "%s\n", e.what());
    return 2;
  }
}
