// SPDX-License-Identifier: MIT
// moekit::Error, the one exception type of the library, and the helpers that
// build its messages. Every shape, dtype or configuration mistake made by a
// caller throws it with a message that names the tensor or option, the value
// that was expected and the value that was given.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

#include "../config.hpp"

MOEKIT_NAMESPACE_BEGIN

/// Thrown for every invalid argument, shape, configuration or file.
/// `what()` reads like "moekit: router weight: expected shape [8, 64], got [8, 63]".
class Error : public std::runtime_error {
 public:
  explicit Error(const std::string& message) : std::runtime_error("moekit: " + message) {}
};

namespace detail {

template <class... Parts>
std::string concat(Parts&&... parts) {
  std::ostringstream os;
  (os << ... << std::forward<Parts>(parts));
  return os.str();
}

template <class... Parts>
[[noreturn]] void fail(Parts&&... parts) {
  throw Error(concat(std::forward<Parts>(parts)...));
}

/// Throws `Error(parts...)` unless `cond` holds.
template <class... Parts>
void require(bool cond, Parts&&... parts) {
  if (!cond) fail(std::forward<Parts>(parts)...);
}

inline std::string shape_string(Index rows, Index cols) {
  return concat("[", rows, ", ", cols, "]");
}

/// Checks a 2-D shape: "<what>: expected shape [r, c], got [r', c']".
inline void require_shape(const char* what, Index rows, Index cols, Index expected_rows,
                          Index expected_cols) {
  if (rows != expected_rows || cols != expected_cols)
    fail(what, ": expected shape ", shape_string(expected_rows, expected_cols), ", got ",
         shape_string(rows, cols));
}

/// Checks a length: "<what>: expected size n, got m".
inline void require_size(const char* what, Index size, Index expected) {
  if (size != expected) fail(what, ": expected size ", expected, ", got ", size);
}

}  // namespace detail

MOEKIT_NAMESPACE_END
