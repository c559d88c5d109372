// SPDX-License-Identifier: MIT
// Executors: every index runs exactly once, exceptions reach the caller, the
// pool is reusable.
#include <atomic>
#include <stdexcept>
#include <vector>

#include "test_util.hpp"

namespace {

TEST(Executor, EveryIndexRunsOnce) {
  for (int threads : {1, 2, 5, 16}) {
    moekit::ThreadPoolExecutor pool(threads);
    EXPECT_EQ(pool.num_threads(), threads);
    for (moekit::Index n : {0, 1, 3, 1000}) {
      std::vector<std::atomic<int>> hits(static_cast<std::size_t>(n));
      pool.parallel_for(n, [&](moekit::Index i) { hits[static_cast<std::size_t>(i)]++; });
      for (auto& h : hits) ASSERT_EQ(h.load(), 1);
    }
  }
  moekit::SerialExecutor serial;
  std::vector<moekit::Index> order;
  serial.parallel_for(4, [&](moekit::Index i) { order.push_back(i); });
  EXPECT_EQ(order, (std::vector<moekit::Index>{0, 1, 2, 3}));
}

TEST(Executor, ExceptionIsRethrownOnCaller) {
  moekit::ThreadPoolExecutor pool(3);
  EXPECT_THROW(pool.parallel_for(100, [](moekit::Index i) {
    if (i == 37) throw std::runtime_error("boom");
  }), std::runtime_error);
  std::atomic<int> count{0};
  pool.parallel_for(10, [&](moekit::Index) { count++; });  // still usable
  EXPECT_EQ(count.load(), 10);
}

}  // namespace
