// SPDX-License-Identifier: MIT
// A steady-state forward allocates nothing: once a block has seen a batch
// size, every buffer is reused. Counted with a replaced global operator new
// (this test binary only), serial and with the thread pool, for the
// SwiGLU block, shared experts and a grouped sigmoid router. It is its own
// executable: the replacements apply to the whole binary.
#include <atomic>
#include <cstddef>
#include <cstdlib>
#include <new>

#include "test_util.hpp"

namespace {
std::atomic<long> g_allocations{0};
std::atomic<bool> g_counting{false};
}  // namespace

// The replacements pair malloc with free; GCC's -Wmismatched-new-delete does
// not know they replace the global pair.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wmismatched-new-delete"
#endif
namespace {
void* counted_alloc(std::size_t n, std::size_t align) {
  if (g_counting.load(std::memory_order_relaxed))
    g_allocations.fetch_add(1, std::memory_order_relaxed);
  if (n == 0) n = 1;
  if (align <= alignof(std::max_align_t)) return std::malloc(n);
  return std::aligned_alloc(align, (n + align - 1) / align * align);
}
}  // namespace

// Every replaceable allocation function, so that all of them pair with free()
// (a partial set mixes with the sanitizers' own operator new).
void* operator new(std::size_t n) {
  if (void* p = counted_alloc(n, 0)) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n) { return ::operator new(n); }
void* operator new(std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n, 0); }
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept { return counted_alloc(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) {
  if (void* p = counted_alloc(n, static_cast<std::size_t>(a))) return p;
  throw std::bad_alloc();
}
void* operator new[](std::size_t n, std::align_val_t a) { return ::operator new(n, a); }
void operator delete(void* p) noexcept { std::free(p); }
void operator delete[](void* p) noexcept { std::free(p); }
void operator delete(void* p, std::size_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t) noexcept { std::free(p); }
void operator delete(void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete[](void* p, const std::nothrow_t&) noexcept { std::free(p); }
void operator delete(void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { std::free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { std::free(p); }

namespace {

using moekit::Matrix;

template <class Block, class Exec>
long allocations_of_forward(Block& block, const Matrix& x, Exec& exec) {
  Matrix y(x.rows(), x.cols());
  block.forward(x, y, exec);  // warm-up: buffers sized here
  block.forward(x, y, exec);
  g_allocations = 0;
  g_counting = true;
  block.forward(x, y, exec);
  block.forward(x, y, exec);
  g_counting = false;
  return g_allocations.load();
}

TEST(Allocation, SteadyStateForwardAllocatesNothing) {
  moekit::SwiGluMoEBlock block = moekit_test::random_block(16, 40, 24, 4, 3);
  block.set_shared_experts(moekit::SharedExperts<>(moekit::SwiGluExperts(
      1, moekit_test::random_matrix(30, 40, 1), moekit_test::random_matrix(30, 40, 2),
      moekit_test::random_matrix(40, 30, 3))));
  const Matrix x = moekit_test::random_matrix(37, 40, 4);
  moekit::SerialExecutor serial;
  EXPECT_EQ(allocations_of_forward(block, x, serial), 0);
  moekit::ThreadPoolExecutor pool(2);
  EXPECT_EQ(allocations_of_forward(block, x, pool), 0);

  using V3 = moekit::MoEBlock<moekit::Router<moekit::SigmoidScoring, moekit::GroupedTopKSelector>>;
  V3 v3(moekit::Router<moekit::SigmoidScoring, moekit::GroupedTopKSelector>(
            moekit_test::random_matrix(16, 40, 5), moekit::RouterOptions().with_top_k(4),
            moekit::Vector(), moekit::GroupedTopKSelector(4, 2)),
        moekit::SwiGluExperts(16, moekit_test::random_matrix(16 * 24, 40, 6),
                              moekit_test::random_matrix(16 * 24, 40, 7),
                              moekit_test::random_matrix(16 * 40, 24, 8)));
  EXPECT_EQ(allocations_of_forward(v3, x, pool), 0);

  // Low-precision experts: their kernels' scratch (rounded or quantised
  // activation rows, decoded panels) comes from the block's arena, whose slots
  // are all grown to the largest request after each phase, so the pool
  // allocates nothing either, whichever worker ran which task.
  for (moekit::Dtype t : {moekit::Dtype::bf16, moekit::Dtype::i8, moekit::Dtype::i4})
    for (moekit::Bf16Math m :
         {moekit::Bf16Math::dot, moekit::Bf16Math::widen, moekit::Bf16Math::int8_dot}) {
      block.experts().set_weight_dtype(t).set_bf16_math(m);
      EXPECT_EQ(allocations_of_forward(block, x, serial), 0) << moekit::dtype_name(t);
      for (int rep = 0; rep < 4; ++rep)  // several schedules
        EXPECT_EQ(allocations_of_forward(block, x, pool), 0) << moekit::dtype_name(t);
    }
}

// The mechanism behind the pool case above, with a fixed schedule: a buffer
// one slot grew to is in every slot after equalize(), so a later task in
// another slot gets it without allocating.
struct ArenaTestTag;
TEST(Allocation, ScratchArenaSlotsAreEqualised) {
  moekit::detail::ScratchArena arena;
  arena.reserve(2);
  using moekit::detail::ScratchLease;
  using moekit::detail::thread_scratch;
  {
    ScratchLease first(arena);
    float* a = thread_scratch<ArenaTestTag, float>(1000);
    {
      ScratchLease second(arena);  // the other slot
      float* b = thread_scratch<ArenaTestTag, float>(10);
      EXPECT_NE(a, b);
    }
    float* again = thread_scratch<ArenaTestTag, float>(1000);
    EXPECT_EQ(again, a);  // back in the first slot
  }
  arena.equalize();
  g_allocations = 0;
  g_counting = true;
  {
    ScratchLease first(arena);
    ScratchLease second(arena);
    float* c = thread_scratch<ArenaTestTag, float>(1000);
    c[999] = 1.0f;
  }
  g_counting = false;
  EXPECT_EQ(g_allocations.load(), 0);
  // A third lease at once finds no slot and falls back to a per-thread buffer.
  ScratchLease first(arena), second(arena), third(arena);
  float* fallback = thread_scratch<ArenaTestTag, float>(4);
  EXPECT_NE(fallback, nullptr);
}

}  // namespace
