// ThreadPool: a fixed set of worker threads running closures in FIFO order.
//
// Shared by every job of a process, so the number of threads bounds CPU use however many jobs run.
// Thread-safe. The destructor finishes queued work and joins the threads.
#ifndef LOWBIT_CORE_UTIL_THREAD_POOL_H_
#define LOWBIT_CORE_UTIL_THREAD_POOL_H_

#include <deque>
#include <functional>
#include <future>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"

namespace lowbit {

class ThreadPool {
 public:
  explicit ThreadPool(int num_threads);
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  void Schedule(std::function<void()> fn);

  // Runs `fn` on the pool and returns its result as a future.
  template <typename F>
  auto Submit(F fn) -> std::future<decltype(fn())> {
    auto task = std::make_shared<std::packaged_task<decltype(fn())()>>(std::move(fn));
    std::future<decltype(fn())> result = task->get_future();
    Schedule([task] { (*task)(); });
    return result;
  }

  int num_threads() const { return static_cast<int>(threads_.size()); }

 private:
  void WorkerLoop();

  absl::Mutex mu_;
  std::deque<std::function<void()>> queue_ ABSL_GUARDED_BY(mu_);
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
  std::vector<std::thread> threads_;
};

}  // namespace lowbit

#endif  // LOWBIT_CORE_UTIL_THREAD_POOL_H_
