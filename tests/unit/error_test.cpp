// SPDX-License-Identifier: MIT
// moekit::Error messages and the checking helpers.
#include "test_util.hpp"

namespace {

TEST(Error, MessagesNameWhatExpectedAndGot) {
  using moekit_test::error_message;
  EXPECT_EQ(error_message([] { moekit::detail::require_shape("router weight", 8, 63, 8, 64); }),
            "moekit: router weight: expected shape [8, 64], got [8, 63]");
  EXPECT_EQ(error_message([] { moekit::detail::require_size("router bias", 3, 4); }),
            "moekit: router bias: expected size 4, got 3");
  EXPECT_EQ(error_message([] { moekit::detail::require_shape("w", 2, 2, 2, 2); }), "");
  moekit::Matrix m = moekit::Matrix::Zero(2, 3);
  m(1, 2) = NAN;
  EXPECT_EQ(error_message([&] { moekit::detail::require_finite("x", m); }),
            "moekit: x: non-finite value nan at [1, 2]");
  // moekit::Error is a std::runtime_error, so generic handlers catch it too.
  EXPECT_THROW(moekit::detail::fail("a"), std::runtime_error);
}

TEST(Version, MacrosAgree) {
  EXPECT_EQ(MOEKIT_VERSION, MOEKIT_VERSION_MAJOR * 10000 + MOEKIT_VERSION_MINOR * 100 + MOEKIT_VERSION_PATCH);
  EXPECT_EQ(std::string(MOEKIT_VERSION_STRING), std::to_string(MOEKIT_VERSION_MAJOR) + "." +
                                                    std::to_string(MOEKIT_VERSION_MINOR) + "." +
                                                    std::to_string(MOEKIT_VERSION_PATCH));
}

}  // namespace
