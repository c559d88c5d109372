#!/usr/bin/env bash
# Build and run the quickstart example (examples/quickstart.cpp).
#
#   sudo bash scripts/demo.sh            # fresh Debian 12 / Ubuntu machine: installs what is missing
#   bash scripts/demo.sh                 # prepared machine: no apt-get at all
#
# Environment: MOEKIT_BUILD_DIR (default: build/demo), MOEKIT_JOBS (default: nproc).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

if [ ! -f examples/quickstart.cpp ]; then
  echo "moekit demo: examples/quickstart.cpp does not exist yet, so there is nothing to run." >&2
  exit 1
fi

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

build_dir="${MOEKIT_BUILD_DIR:-build/demo}"
jobs="${MOEKIT_JOBS:-$(nproc)}"

echo "== moekit demo: configure (Release) in ${build_dir}"
cmake -S . -B "${build_dir}" -DCMAKE_BUILD_TYPE=Release \
  -DMOEKIT_BUILD_EXAMPLES=ON -DMOEKIT_BUILD_TESTS=OFF -DMOEKIT_BUILD_BENCHMARKS=OFF -DMOEKIT_WERROR=OFF
echo "== moekit demo: build example_quickstart"
cmake --build "${build_dir}" --target example_quickstart -j "${jobs}"

exe="${build_dir}/examples/example_quickstart"
if [ ! -x "${exe}" ]; then
  # Multi-config generators put it under a configuration directory.
  exe="$(find "${build_dir}" -type f -name example_quickstart -perm -u+x | head -n 1)"
fi
echo "== moekit demo: run ${exe}"
echo
"${exe}"
