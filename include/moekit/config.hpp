// SPDX-License-Identifier: MIT
// Library-wide configuration: the ABI namespace, assertion and inlining macros.
#pragma once

#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "version.hpp"

// Every public name lives in moekit::v0 (an inline namespace), so that two
// incompatible versions linked into one program fail to link instead of
// silently mixing layouts.
#define MOEKIT_NAMESPACE_BEGIN \
  namespace moekit {           \
  inline namespace v0 {
#define MOEKIT_NAMESPACE_END \
  }                          \
  }

// Internal invariants (never user errors: those throw moekit::Error).
// On in debug builds, off with NDEBUG; a user may define MOEKIT_ASSERT first.
#ifndef MOEKIT_ASSERT
#ifdef NDEBUG
#define MOEKIT_ASSERT(cond) ((void)0)
#else
#define MOEKIT_ASSERT(cond)                                                              \
  ((cond) ? (void)0                                                                      \
          : (std::fprintf(stderr, "moekit: internal assertion failed: %s (%s:%d)\n", #cond, \
                          __FILE__, __LINE__),                                           \
             std::abort()))
#endif
#endif

MOEKIT_NAMESPACE_BEGIN

/// Index type for sizes and positions (tokens, features, experts). Signed, as in Eigen.
using Index = std::ptrdiff_t;

MOEKIT_NAMESPACE_END
