// SPDX-License-Identifier: MIT
// Kernel scratch: the buffers a kernel call needs for a moment (bf16-rounded
// or int8-quantised activation rows, a decoded weight panel).
//
// A kernel asks for one with detail::thread_scratch<Tag, T>(n). Inside a
// block's forward the buffers come from the block's ScratchArena: each task
// leases one of num_threads slots for as long as it runs, and after every
// parallel phase the block grows every slot to the largest size any slot
// needed. So once a forward has run, the next one with the same shapes
// allocates nothing, whatever thread ran which task (a per-thread buffer
// would only stop growing once that thread had run the largest task, which
// depends on the schedule). Outside a lease (a kernel called directly) the
// buffers are per thread and grow-only.
#pragma once

#include <array>
#include <atomic>
#include <cstddef>
#include <cstdint>
#include <vector>

#include "aligned_buffer.hpp"

MOEKIT_NAMESPACE_BEGIN

namespace detail {

/// At most this many distinct (Tag, T) scratch kinds are served from slots;
/// more fall back to per-thread buffers.
inline constexpr int kScratchKinds = 16;

inline std::atomic<int>& scratch_kind_counter() noexcept {
  static std::atomic<int> next{0};
  return next;
}
// A small id per (Tag, T), numbered on first use.
template <class Tag, class T>
int scratch_kind() noexcept {
  static const int id = scratch_kind_counter().fetch_add(1);
  return id;
}

/// One task's scratch: a grow-only byte buffer per kind.
class ScratchSlot {
 public:
  /// At least `bytes` bytes for `kind`, 64-byte aligned.
  unsigned char* get(int kind, std::size_t bytes) {
    AlignedBuffer<unsigned char>& b = bufs_[static_cast<std::size_t>(kind)];
    if (b.size() < bytes) b.resize(bytes);
    return b.data();
  }
  std::size_t size(int kind) const noexcept { return bufs_[static_cast<std::size_t>(kind)].size(); }

 private:
  std::array<AlignedBuffer<unsigned char>, kScratchKinds> bufs_;
};

// The slot the calling thread's task holds, or nullptr.
inline ScratchSlot*& current_scratch_slot() noexcept {
  thread_local ScratchSlot* slot = nullptr;
  return slot;
}

/// A per-call buffer of at least n elements of T, one per Tag (buffers in use
/// at the same time need different tags). Contents are undefined on entry.
template <class Tag, class T>
T* thread_scratch(Index n) {
  const std::size_t count = static_cast<std::size_t>(n);
  const int kind = scratch_kind<Tag, T>();
  if (ScratchSlot* slot = current_scratch_slot(); slot && kind < kScratchKinds)
    return reinterpret_cast<T*>(slot->get(kind, count * sizeof(T)));
  thread_local AlignedBuffer<T> buf;
  if (buf.size() < count) buf.resize(count);
  return buf.data();
}

/// Slots for the tasks of one parallel phase, owned by a block (its workspace).
/// Not for concurrent forwards: one arena per block, as every other buffer.
class ScratchArena {
 public:
  static constexpr int kMaxSlots = 64;

  ScratchArena() = default;
  // A copy starts empty: scratch is workspace, not state.
  ScratchArena(const ScratchArena&) noexcept {}
  ScratchArena& operator=(const ScratchArena&) noexcept { return *this; }

  /// Makes room for `threads` tasks at once (at most kMaxSlots); allocates
  /// only when the thread count grows.
  void reserve(int threads) {
    const int n = threads < 1 ? 1 : (threads > kMaxSlots ? kMaxSlots : threads);
    if (static_cast<int>(slots_.size()) < n) slots_.resize(static_cast<std::size_t>(n));
  }

  /// Grows every slot to the largest size any slot holds, kind by kind. Call
  /// after a parallel phase, on the calling thread.
  void equalize() {
    for (int k = 0; k < kScratchKinds; ++k) {
      std::size_t most = 0;
      for (const ScratchSlot& s : slots_) most = s.size(k) > most ? s.size(k) : most;
      if (most == 0) continue;
      for (ScratchSlot& s : slots_) s.get(k, most);
    }
  }

  /// Takes a free slot; nullptr when every slot is taken (more tasks at once
  /// than reserve() allowed for: the caller falls back to per-thread buffers).
  ScratchSlot* acquire() noexcept {
    const int n = static_cast<int>(slots_.size());
    std::uint64_t used = busy_.load(std::memory_order_relaxed);
    for (;;) {
      int i = 0;
      while (i < n && ((used >> i) & 1u) != 0) ++i;
      if (i == n) return nullptr;
      const std::uint64_t bit = std::uint64_t{1} << i;
      if (busy_.compare_exchange_weak(used, used | bit, std::memory_order_acquire,
                                      std::memory_order_relaxed))
        return &slots_[static_cast<std::size_t>(i)];
    }
  }
  void release(ScratchSlot* s) noexcept {
    const auto i = static_cast<unsigned>(s - slots_.data());
    busy_.fetch_and(~(std::uint64_t{1} << i), std::memory_order_release);
  }

 private:
  std::vector<ScratchSlot> slots_;
  std::atomic<std::uint64_t> busy_{0};
};

/// RAII: the calling thread's kernel scratch comes from a slot of `arena`
/// until the lease ends (restores what was there before).
class ScratchLease {
 public:
  explicit ScratchLease(ScratchArena& arena) noexcept
      : arena_(arena), slot_(arena.acquire()), previous_(current_scratch_slot()) {
    if (slot_) current_scratch_slot() = slot_;
  }
  ~ScratchLease() {
    current_scratch_slot() = previous_;
    if (slot_) arena_.release(slot_);
  }
  ScratchLease(const ScratchLease&) = delete;
  ScratchLease& operator=(const ScratchLease&) = delete;

 private:
  ScratchArena& arena_;
  ScratchSlot* slot_;
  ScratchSlot* previous_;
};

}  // namespace detail

MOEKIT_NAMESPACE_END
