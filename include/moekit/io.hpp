// SPDX-License-Identifier: MIT
// moekit I/O module: safetensors files and checkpoints, Hugging Face layers.
//
// Separate from <moekit/moekit.hpp> because it needs nlohmann/json (Debian:
// nlohmann-json3-dev; CMake: link nlohmann_json::nlohmann_json) for the
// safetensors header and config.json; the rest of moekit needs only Eigen.
#pragma once

#include "moekit.hpp"

#include "io/mapped_file.hpp"
#include "io/safetensors.hpp"
#include "io/safetensors_writer.hpp"
#include "io/safetensors_checkpoint.hpp"
#include "io/safetensors_source.hpp"
#include "io/hf_checkpoint.hpp"
