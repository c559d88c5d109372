#!/usr/bin/env bash
# Build moekit and run its whole test suite (Release, -Werror, every CTest test).
#
#   sudo bash scripts/test.sh            # fresh Debian 12 / Ubuntu machine: installs what is missing
#   bash scripts/test.sh                 # prepared machine: no apt-get at all
#
# Environment:
#   MOEKIT_BUILD_DIR    build directory (default: build/test under the repository)
#   MOEKIT_CMAKE_ARGS   extra CMake arguments, e.g. "-DMOEKIT_REQUIRE_CONFORMANCE=ON"
#   MOEKIT_JOBS         parallel build and test jobs (default: nproc)
# Extra arguments to this script are passed to CMake as well.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
# Installs the Debian/Ubuntu packages moekit needs, only those that are
# missing, so a prepared machine never runs apt-get. (Same list in
# scripts/test.sh, scripts/demo.sh and .ci/run.)
MOEKIT_DEPS=(build-essential cmake pkg-config libeigen3-dev libgtest-dev libbenchmark-dev
             nlohmann-json3-dev)

moekit_install_deps() {
  local wanted=("${MOEKIT_DEPS[@]}") missing=() pkg
  for pkg in "${wanted[@]}"; do
    # "install ok installed" only: a removed package leaves its status behind.
    if ! dpkg-query -W -f='${Status}' "${pkg}" 2>/dev/null | grep -q "install ok installed"; then
      missing+=("${pkg}")
    fi
  done
  if [ "${#missing[@]}" -eq 0 ]; then
    echo "== moekit: all packages present (${wanted[*]})"
    return 0
  fi
  echo "== moekit: installing ${missing[*]}"
  local sudo=()
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
      sudo=(sudo)
    else
      echo "moekit: missing packages (${missing[*]}) and not root, and no sudo: install them" \
           "yourself or run as root" >&2
      return 1
    fi
  fi
  if ! command -v apt-get >/dev/null 2>&1; then
    echo "moekit: apt-get not found; install these packages yourself: ${missing[*]}" >&2
    return 1
  fi
  ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get update
  ${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
    "${missing[@]}"
}

moekit_install_deps

build_dir="${MOEKIT_BUILD_DIR:-build/test}"
jobs="${MOEKIT_JOBS:-$(nproc)}"
read -r -a extra_args <<< "${MOEKIT_CMAKE_ARGS:-}"

echo "== moekit: configure (Release, -Werror) in ${build_dir}"
cmake -S . -B "${build_dir}" \
  -DCMAKE_BUILD_TYPE=Release \
  -DMOEKIT_WERROR=ON \
  -DMOEKIT_BUILD_TESTS=ON \
  -DMOEKIT_BUILD_EXAMPLES=ON \
  -DMOEKIT_BUILD_BENCHMARKS=ON \
  ${extra_args[@]+"${extra_args[@]}"} "$@"

echo "== moekit: build (${jobs} jobs)"
cmake --build "${build_dir}" -j "${jobs}"

echo "== moekit: test"
# ctest --test-dir needs CMake 3.20; cd works everywhere.
cd "${build_dir}"
ctest --output-on-failure -j "${jobs}"
