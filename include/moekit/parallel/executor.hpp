// SPDX-License-Identifier: MIT
// Executors: how a block spreads independent tasks over threads.
//
// An executor is any type with
//     template <class F> void parallel_for(Index n, F&& f);   // calls f(i) once for each i in [0, n)
//     int num_threads() const;
// moekit never owns a hidden global pool: the caller picks the executor and
// its thread count. Tasks write disjoint outputs, so results do not depend on
// which thread runs which task (bit-identical for any thread count).
#pragma once

#include <algorithm>
#include <atomic>
#include <condition_variable>
#include <exception>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

#include "../core/error.hpp"

MOEKIT_NAMESPACE_BEGIN

/// Runs every task on the calling thread, in index order.
class SerialExecutor {
 public:
  template <class F>
  void parallel_for(Index n, F&& f) const {
    for (Index i = 0; i < n; ++i) f(i);
  }
  int num_threads() const noexcept { return 1; }
};

/// A fixed pool of `num_threads - 1` worker threads plus the calling thread.
/// Tasks are handed out dynamically (an atomic counter), so a slow task does
/// not hold up the others. The first exception thrown by a task is rethrown
/// on the calling thread once all tasks have stopped. Not reentrant: do not
/// call parallel_for from inside a task.
class ThreadPoolExecutor {
 public:
  explicit ThreadPoolExecutor(int num_threads = static_cast<int>(std::thread::hardware_concurrency()))
      : num_threads_(std::max(1, num_threads)) {
    for (int t = 1; t < num_threads_; ++t) workers_.emplace_back([this] { worker_loop(); });
  }
  ThreadPoolExecutor(const ThreadPoolExecutor&) = delete;
  ThreadPoolExecutor& operator=(const ThreadPoolExecutor&) = delete;
  ~ThreadPoolExecutor() {
    {
      std::lock_guard<std::mutex> lock(mutex_);
      stop_ = true;
    }
    wake_.notify_all();
    for (auto& w : workers_) w.join();
  }

  int num_threads() const noexcept { return num_threads_; }

  template <class F>
  void parallel_for(Index n, F&& f) {
    if (n <= 0) return;
    if (num_threads_ == 1 || n == 1) {
      for (Index i = 0; i < n; ++i) f(i);
      return;
    }
    // A type-erased reference to f: no allocation, f outlives the call.
    using Fn = std::remove_reference_t<F>;
    {
      std::lock_guard<std::mutex> lock(mutex_);
      task_ctx_ = const_cast<void*>(static_cast<const void*>(&f));
      task_call_ = [](void* ctx, Index i) { (*static_cast<Fn*>(ctx))(i); };
      count_ = n;
      next_.store(0);
      active_ = static_cast<int>(workers_.size());
      error_ = nullptr;
      ++generation_;
    }
    wake_.notify_all();
    run_tasks();
    std::unique_lock<std::mutex> lock(mutex_);
    done_.wait(lock, [this] { return active_ == 0; });
    task_ctx_ = nullptr;
    if (error_) std::rethrow_exception(error_);
  }

 private:
  void run_tasks() {
    for (;;) {
      const Index i = next_.fetch_add(1);
      if (i >= count_) return;
      try {
        task_call_(task_ctx_, i);
      } catch (...) {
        std::lock_guard<std::mutex> lock(mutex_);
        if (!error_) error_ = std::current_exception();
        next_.store(count_);  // stop handing out tasks
      }
    }
  }

  void worker_loop() {
    unsigned long seen = 0;
    for (;;) {
      {
        std::unique_lock<std::mutex> lock(mutex_);
        wake_.wait(lock, [&] { return stop_ || generation_ != seen; });
        if (stop_) return;
        seen = generation_;
      }
      run_tasks();
      {
        std::lock_guard<std::mutex> lock(mutex_);
        --active_;
      }
      done_.notify_one();
    }
  }

  int num_threads_;
  std::vector<std::thread> workers_;
  std::mutex mutex_;
  std::condition_variable wake_, done_;
  void* task_ctx_ = nullptr;
  void (*task_call_)(void*, Index) = nullptr;
  Index count_ = 0;
  std::atomic<Index> next_{0};
  int active_ = 0;
  unsigned long generation_ = 0;
  bool stop_ = false;
  std::exception_ptr error_;
};

MOEKIT_NAMESPACE_END
