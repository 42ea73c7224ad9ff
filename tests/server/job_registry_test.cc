// The job registry: idempotent creation, paging and filtering, watchers, and persistence across restarts.
#include "server/job_registry.h"

#include <thread>

#include "gtest/gtest.h"
#include "tests/test_util/temp_dir.h"

namespace lowbit::server {
namespace {

v1::QuantizeModelRequest Request(const std::string& request_id = "") {
  v1::QuantizeModelRequest r;
  r.set_source_uri("m.bin");
  r.set_destination_uri("out");
  r.mutable_rtn()->set_bits(4);
  r.set_request_id(request_id);
  return r;
}

TEST(JobRegistryTest, SameRequestIdReturnsTheSameJob) {
  JobRegistry registry(nullptr);
  bool created = false;
  const v1::Job a = registry.Create(Request("retry-me"), &created);
  EXPECT_TRUE(created);
  const v1::Job b = registry.Create(Request("retry-me"), &created);
  EXPECT_FALSE(created);
  EXPECT_EQ(a.name(), b.name());
  const v1::Job c = registry.Create(Request(), &created);
  EXPECT_TRUE(created);
  EXPECT_NE(c.name(), a.name());
  EXPECT_EQ(registry.GetByRequestId("retry-me")->name(), a.name());
}

TEST(JobRegistryTest, ListPagesInCreationOrderAndFiltersByState) {
  JobRegistry registry(nullptr);
  std::vector<std::string> names;
  bool created;
  for (int i = 0; i < 7; ++i) names.push_back(registry.Create(Request(), &created).name());
  ASSERT_TRUE(registry.Update(JobId(*registry.Get(names[2].substr(5))), [](v1::Job& j) { j.set_state(v1::Job::RUNNING); }).ok());
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    JobRegistry::Page page = registry.List(3, token, v1::Job::STATE_UNSPECIFIED);
    for (const v1::Job& j : page.jobs) seen.push_back(j.name());
    token = page.next_page_token;
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(seen, names);
  EXPECT_EQ(pages, 3);
  JobRegistry::Page running = registry.List(10, "", v1::Job::RUNNING);
  ASSERT_EQ(running.jobs.size(), 1u);
  EXPECT_EQ(running.jobs[0].name(), names[2]);
}

TEST(JobRegistryTest, WatchersWakeOnUpdates) {
  JobRegistry registry(nullptr);
  bool created;
  const std::string id = JobId(registry.Create(Request(), &created));
  auto first = registry.WaitForChange(id, 0, absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(first.has_value());
  std::thread updater([&] {
    absl::SleepFor(absl::Milliseconds(50));
    registry.Update(id, [](v1::Job& j) { j.set_layers_done(3); }).IgnoreError();
  });
  auto second = registry.WaitForChange(id, first->second, absl::Now() + absl::Seconds(5));
  updater.join();
  ASSERT_TRUE(second.has_value());
  EXPECT_GT(second->second, first->second);
  EXPECT_EQ(second->first.layers_done(), 3);
  EXPECT_FALSE(registry.WaitForChange("nope", 0, absl::Now()).has_value());
}

TEST(JobRegistryTest, JobsSurviveARestart) {
  testing::TempDir dir;
  std::string queued, running, done;
  {
    auto store = *FileJobStore::Create(dir.File("jobs"));
    JobRegistry registry(store.get());
    bool created;
    queued = JobId(registry.Create(Request("q"), &created));
    running = JobId(registry.Create(Request(), &created));
    done = JobId(registry.Create(Request(), &created));
    ASSERT_TRUE(registry.Update(running, [](v1::Job& j) { j.set_state(v1::Job::RUNNING); }).ok());
    ASSERT_TRUE(registry.Update(done, [](v1::Job& j) {
      j.set_state(v1::Job::SUCCEEDED);
      j.mutable_result()->set_layers_quantized(35);
    }).ok());
  }
  auto store = *FileJobStore::Create(dir.File("jobs"));
  JobRegistry registry(store.get());
  auto requeue = registry.Restore();
  ASSERT_TRUE(requeue.ok()) << requeue.status();
  EXPECT_EQ(*requeue, std::vector<std::string>{queued});
  EXPECT_EQ(registry.Get(queued)->state(), v1::Job::QUEUED);
  EXPECT_EQ(registry.Get(running)->state(), v1::Job::FAILED) << "its output was never committed";
  EXPECT_EQ(registry.Get(running)->error().code(), static_cast<int>(absl::StatusCode::kAborted));
  EXPECT_EQ(registry.Get(done)->result().layers_quantized(), 35);
  bool created;
  EXPECT_EQ(JobId(registry.Create(Request("q"), &created)), queued) << "request ids survive too";
  EXPECT_FALSE(created);
}

TEST(JobRegistryTest, OnlyFinishedJobsCanBeDeleted) {
  testing::TempDir dir;
  auto store = *FileJobStore::Create(dir.File("jobs"));
  JobRegistry registry(store.get());
  bool created;
  const std::string id = JobId(registry.Create(Request(), &created));
  EXPECT_EQ(registry.Delete(id).code(), absl::StatusCode::kFailedPrecondition);
  ASSERT_TRUE(registry.Update(id, [](v1::Job& j) { j.set_state(v1::Job::CANCELLED); }).ok());
  EXPECT_TRUE(registry.Delete(id).ok());
  EXPECT_FALSE(registry.Get(id).has_value());
  EXPECT_TRUE(store->LoadAll()->empty());
}

}  // namespace
}  // namespace lowbit::server
