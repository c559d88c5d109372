// SPDX-License-Identifier: MIT
// Version of the moekit headers. Pre-1.0: a minor version may break the API.
#pragma once

#define MOEKIT_VERSION_MAJOR 0
#define MOEKIT_VERSION_MINOR 1
#define MOEKIT_VERSION_PATCH 0
#define MOEKIT_VERSION_STRING "0.1.0"
// Single integer for #if comparisons: major * 10000 + minor * 100 + patch.
#define MOEKIT_VERSION (MOEKIT_VERSION_MAJOR * 10000 + MOEKIT_VERSION_MINOR * 100 + MOEKIT_VERSION_PATCH)
