// The scheduler with a fake job runner: ordering, admission, cancellation, concurrency and isolation.
#include "server/scheduler.h"

#include <atomic>
#include <map>
#include <vector>

#include "absl/synchronization/mutex.h"
#include "gtest/gtest.h"

namespace lowbit::server {
namespace {

// Records the order jobs start in; a job blocks until released (or runs through when not gated).
class FakeRunner {
 public:
  explicit FakeRunner(bool gated) : gated_(gated) {}
  void Run(const std::string& id) {
    {
      absl::MutexLock lock(&mu_);
      started_.push_back(id);
      ++running_;
      max_running_ = std::max(max_running_, running_);
    }
    if (id.rfind("fail", 0) == 0) {
      absl::MutexLock lock(&mu_);
      --running_;
      failed_.push_back(id);
      return;  // a failing job returns early; the scheduler must carry on
    }
    if (gated_) {
      absl::MutexLock lock(&mu_);
      auto released = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return released_.count(id) > 0; };
      mu_.Await(absl::Condition(&released));
    }
    absl::MutexLock lock(&mu_);
    --running_;
    finished_.push_back(id);
  }
  void Release(const std::string& id) {
    absl::MutexLock lock(&mu_);
    released_[id] = true;
  }
  void WaitStarted(size_t n) {
    absl::MutexLock lock(&mu_);
    auto enough = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return started_.size() >= n; };
    mu_.Await(absl::Condition(&enough));
  }
  std::vector<std::string> started() {
    absl::MutexLock lock(&mu_);
    return started_;
  }
  std::vector<std::string> finished() {
    absl::MutexLock lock(&mu_);
    return finished_;
  }
  int max_running() {
    absl::MutexLock lock(&mu_);
    return max_running_;
  }

 private:
  const bool gated_;
  absl::Mutex mu_;
  std::vector<std::string> started_ ABSL_GUARDED_BY(mu_), finished_ ABSL_GUARDED_BY(mu_), failed_ ABSL_GUARDED_BY(mu_);
  std::map<std::string, bool> released_ ABSL_GUARDED_BY(mu_);
  int running_ ABSL_GUARDED_BY(mu_) = 0;
  int max_running_ ABSL_GUARDED_BY(mu_) = 0;
};

TEST(SchedulerTest, RunsJobsInSubmissionOrder) {
  FakeRunner runner(/*gated=*/false);
  {
    Scheduler scheduler({1, 16}, [&](const std::string& id) { runner.Run(id); });
    for (const char* id : {"a", "b", "c", "d"}) ASSERT_TRUE(scheduler.Enqueue(id).ok());
    runner.WaitStarted(4);
    ASSERT_TRUE(scheduler.WaitUntilIdle(absl::Seconds(10)));
  }
  EXPECT_EQ(runner.started(), (std::vector<std::string>{"a", "b", "c", "d"}));
}

TEST(SchedulerTest, FullQueueIsResourceExhausted) {
  FakeRunner runner(/*gated=*/true);
  Scheduler scheduler({1, 2}, [&](const std::string& id) { runner.Run(id); });
  ASSERT_TRUE(scheduler.Enqueue("running").ok());
  runner.WaitStarted(1);
  ASSERT_TRUE(scheduler.Enqueue("q1").ok());
  ASSERT_TRUE(scheduler.Enqueue("q2").ok());
  EXPECT_EQ(scheduler.Enqueue("q3").code(), absl::StatusCode::kResourceExhausted);
  EXPECT_EQ(scheduler.queued(), 2);
  EXPECT_EQ(scheduler.running(), 1);
  for (const char* id : {"running", "q1", "q2"}) runner.Release(id);
  ASSERT_TRUE(scheduler.WaitUntilIdle(absl::Seconds(10)));
  runner.WaitStarted(3);
  ASSERT_TRUE(scheduler.WaitUntilIdle(absl::Seconds(10)));
  EXPECT_TRUE(scheduler.Enqueue("later").ok()) << "space frees up as jobs finish";
  runner.Release("later");
}

TEST(SchedulerTest, CancelledQueuedJobNeverStarts) {
  FakeRunner runner(/*gated=*/true);
  Scheduler scheduler({1, 8}, [&](const std::string& id) { runner.Run(id); });
  ASSERT_TRUE(scheduler.Enqueue("first").ok());
  runner.WaitStarted(1);
  ASSERT_TRUE(scheduler.Enqueue("doomed").ok());
  ASSERT_TRUE(scheduler.Enqueue("kept").ok());
  EXPECT_TRUE(scheduler.RemoveQueued("doomed"));
  EXPECT_FALSE(scheduler.RemoveQueued("first")) << "a running job is not in the queue";
  runner.Release("first");
  runner.Release("kept");
  runner.WaitStarted(2);
  ASSERT_TRUE(scheduler.WaitUntilIdle(absl::Seconds(10)));
  EXPECT_EQ(runner.started(), (std::vector<std::string>{"first", "kept"}));
}

TEST(SchedulerTest, RunsUpToTheConfiguredNumberOfJobsAtOnce) {
  FakeRunner runner(/*gated=*/true);
  Scheduler scheduler({3, 16}, [&](const std::string& id) { runner.Run(id); });
  for (int i = 0; i < 6; ++i) ASSERT_TRUE(scheduler.Enqueue("j" + std::to_string(i)).ok());
  runner.WaitStarted(3);
  EXPECT_EQ(scheduler.running(), 3);
  EXPECT_EQ(scheduler.queued(), 3);
  for (int i = 0; i < 6; ++i) runner.Release("j" + std::to_string(i));
  runner.WaitStarted(6);
  ASSERT_TRUE(scheduler.WaitUntilIdle(absl::Seconds(10)));
  EXPECT_EQ(runner.max_running(), 3);
  EXPECT_EQ(runner.finished().size(), 6u);
}

// Jobs start only while the running jobs' estimates fit the budget; a smaller job behind a big one may go
// first, and a job bigger than the budget still runs, alone.
TEST(SchedulerTest, AdmitsJobsByTheirMemoryEstimates) {
  FakeRunner runner(/*gated=*/true);
  Scheduler scheduler({3, 16, /*memory_budget_bytes=*/100}, [&](const std::string& id) { runner.Run(id); });
  ASSERT_TRUE(scheduler.Enqueue("a60", 60).ok());
  ASSERT_TRUE(scheduler.Enqueue("b50", 50).ok());
  ASSERT_TRUE(scheduler.Enqueue("c30", 30).ok());
  ASSERT_TRUE(scheduler.Enqueue("d200", 200).ok());
  runner.WaitStarted(2);
  absl::SleepFor(absl::Milliseconds(100));  // time for a wrong admission to show
  EXPECT_EQ(runner.started(), (std::vector<std::string>{"a60", "c30"})) << "b50 would exceed the budget beside a60";
  EXPECT_EQ(scheduler.running(), 2);
  runner.Release("a60");
  runner.WaitStarted(3);
  EXPECT_EQ(runner.started().back(), "b50");
  runner.Release("c30");
  runner.Release("b50");
  runner.WaitStarted(4);
  EXPECT_EQ(runner.started().back(), "d200") << "alone, over the budget";
  EXPECT_EQ(scheduler.running(), 1);
  runner.Release("d200");
  ASSERT_TRUE(scheduler.WaitUntilIdle(absl::Seconds(10)));
}

TEST(SchedulerTest, FailingJobDoesNotHarmTheJobBesideIt) {
  FakeRunner runner(/*gated=*/true);
  Scheduler scheduler({2, 16}, [&](const std::string& id) { runner.Run(id); });
  ASSERT_TRUE(scheduler.Enqueue("healthy").ok());
  ASSERT_TRUE(scheduler.Enqueue("fail-1").ok());
  ASSERT_TRUE(scheduler.Enqueue("fail-2").ok());
  ASSERT_TRUE(scheduler.Enqueue("after").ok());
  runner.WaitStarted(3);
  runner.Release("healthy");
  runner.Release("after");
  runner.WaitStarted(4);
  ASSERT_TRUE(scheduler.WaitUntilIdle(absl::Seconds(10)));
  const auto finished = runner.finished();
  EXPECT_NE(std::find(finished.begin(), finished.end(), "healthy"), finished.end());
  EXPECT_NE(std::find(finished.begin(), finished.end(), "after"), finished.end());
}

TEST(SchedulerTest, StopAcceptingRefusesNewJobsAndShutdownLeavesQueuedOnesUnstarted) {
  FakeRunner runner(/*gated=*/true);
  std::atomic<int> changes{0};
  Scheduler scheduler({1, 8}, [&](const std::string& id) { runner.Run(id); }, [&](int, int) { ++changes; });
  ASSERT_TRUE(scheduler.Enqueue("running").ok());
  runner.WaitStarted(1);
  ASSERT_TRUE(scheduler.Enqueue("waiting").ok());
  scheduler.StopAccepting();
  EXPECT_EQ(scheduler.Enqueue("late").code(), absl::StatusCode::kUnavailable);
  EXPECT_FALSE(scheduler.WaitUntilIdle(absl::Milliseconds(50))) << "a job is still running";
  runner.Release("running");
  scheduler.Shutdown();
  EXPECT_EQ(runner.started(), (std::vector<std::string>{"running"}));
  EXPECT_GT(changes.load(), 0) << "metrics hear about queue changes";
}

}  // namespace
}  // namespace lowbit::server
