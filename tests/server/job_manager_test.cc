// The job manager: admission (durable before visible, refusals leave nothing), request ids (AIP-155),
// the transition table, paging, watchers, restarts and retention. Jobs read the real stories260K.
#include "server/job_manager.h"

#include "server/quantizer_service.h"

#include <filesystem>
#include <fstream>
#include <thread>

#include "core/job/output_transaction.h"
#include "core/storage/local_object_store.h"
#include "gtest/gtest.h"
#include "tests/test_util/temp_dir.h"

namespace lowbit::server {
namespace {

class JobManagerTest : public ::testing::Test {
 protected:
  void SetUp() override {
    std::filesystem::create_directories(dir_.File("store"));
    std::filesystem::copy_file(std::string(LOWBIT_SHARED_DATA) + "/models/stories260K/stories260K.bin",
                               dir_.File("store/m.bin"));
    objects_ = *LocalObjectStore::Create({dir_.File("store")});
    store_ = *FileJobStore::Create(dir_.File("jobs"));
  }

  v1::QuantizeModelRequest Request(const std::string& request_id = "", const std::string& destination = "") {
    v1::QuantizeModelRequest r;
    r.set_source_uri("m.bin");
    r.set_destination_uri(destination.empty() ? "out" + std::to_string(++outputs_) : destination);
    r.mutable_rtn()->set_bits(4);
    r.set_request_id(request_id);
    return r;
  }

  // A manager over the test's stores, restored from them, whose scheduler only records what it was given
  // to run (the tests move the jobs themselves).
  std::unique_ptr<JobManager> Manager(JobManager::Options options = {}, int max_queued = 16) {
    auto manager = std::make_unique<JobManager>(options, store_.get(), objects_.get(), nullptr);
    EXPECT_TRUE(manager->Restore().ok());
    scheduler_ = std::make_unique<Scheduler>(Scheduler::Options{1, max_queued, 0}, [this](const std::string& id) {
      absl::MutexLock lock(&mu_);
      handed_out_.push_back(id);
    });
    manager->StartScheduling(scheduler_.get());
    return manager;
  }
  int HandedOut() {
    absl::MutexLock lock(&mu_);
    return static_cast<int>(handed_out_.size());
  }

  testing::TempDir dir_;
  std::unique_ptr<LocalObjectStore> objects_;
  std::unique_ptr<FileJobStore> store_;
  std::unique_ptr<Scheduler> scheduler_;
  absl::Mutex mu_;
  std::vector<std::string> handed_out_;
  int outputs_ = 0;
};

TEST_F(JobManagerTest, ARetryGetsTheSameJobAndAChangedRequestUnderTheSameIdIsRefused) {
  auto jobs = Manager();
  const v1::QuantizeModelRequest request = Request("retry-me");
  absl::StatusOr<v1::Job> a = jobs->Submit(request);
  ASSERT_TRUE(a.ok()) << a.status();
  absl::StatusOr<v1::Job> b = jobs->Submit(request);
  ASSERT_TRUE(b.ok()) << b.status();
  EXPECT_EQ(a->name(), b->name());
  v1::QuantizeModelRequest changed = request;
  changed.mutable_rtn()->set_bits(8);
  absl::StatusOr<v1::Job> c = jobs->Submit(changed);
  EXPECT_EQ(c.status().code(), absl::StatusCode::kAlreadyExists) << c.status();
  EXPECT_NE(c.status().message().find("different parameters"), std::string::npos) << c.status();
  EXPECT_EQ(jobs->List(100, "", v1::Job::STATE_UNSPECIFIED).jobs.size(), 1u);
}

TEST_F(JobManagerTest, RacingSubmitsOfOneRequestIdCreateOneJob) {
  auto jobs = Manager();
  const v1::QuantizeModelRequest request = Request("raced");
  std::vector<std::string> names(8);
  std::vector<std::thread> threads;
  for (int t = 0; t < 8; ++t) {
    threads.emplace_back([&, t] {
      absl::StatusOr<v1::Job> job = jobs->Submit(request);
      names[t] = job.ok() ? job->name() : job.status().ToString();
    });
  }
  for (std::thread& t : threads) t.join();
  for (const std::string& name : names) EXPECT_EQ(name, names[0]);
  EXPECT_EQ(store_->LoadAll()->size(), 1u);
}

TEST_F(JobManagerTest, ASubmitWhoseRecordCannotBeWrittenIsRefusedAndLeavesNothing) {
  auto jobs = Manager();
  // The state directory disappears under the server and a file takes its place: every save fails.
  std::filesystem::remove_all(dir_.File("jobs"));
  std::ofstream(dir_.File("jobs")) << "not a directory";
  absl::StatusOr<v1::Job> job = jobs->Submit(Request("lost"));
  EXPECT_EQ(job.status().code(), absl::StatusCode::kUnavailable) << job.status();
  EXPECT_TRUE(jobs->List(100, "", v1::Job::STATE_UNSPECIFIED).jobs.empty());
  EXPECT_EQ(HandedOut(), 0);
  // Once the disk is back the same request id is a new job, not a ghost of the refused one.
  std::filesystem::remove(dir_.File("jobs"));
  std::filesystem::create_directories(dir_.File("jobs"));
  EXPECT_TRUE(jobs->Submit(Request("lost")).ok());
}

TEST_F(JobManagerTest, RefusedRequestsLeaveNoRecord) {
  auto jobs = Manager();
  std::filesystem::create_directories(dir_.File("store/taken"));
  std::ofstream(dir_.File("store/taken/model.safetensors")) << "x";
  EXPECT_EQ(jobs->Submit(Request("", "taken")).status().code(), absl::StatusCode::kAlreadyExists);
  v1::QuantizeModelRequest missing = Request("missing-source");
  missing.set_source_uri("nope.bin");
  EXPECT_EQ(jobs->Submit(missing).status().code(), absl::StatusCode::kNotFound);
  // A full queue refuses the job before anything is written.
  auto full = Manager({}, 0);
  EXPECT_EQ(full->Submit(Request()).status().code(), absl::StatusCode::kResourceExhausted);
  EXPECT_TRUE(store_->LoadAll()->empty());
  EXPECT_TRUE(jobs->List(100, "", v1::Job::STATE_UNSPECIFIED).jobs.empty());
  // validate_only plans and stores nothing.
  v1::QuantizeModelRequest validate = Request();
  validate.set_validate_only(true);
  absl::StatusOr<v1::Job> planned = jobs->Submit(validate);
  ASSERT_TRUE(planned.ok()) << planned.status();
  EXPECT_GT(planned->plan().total_bytes(), 0);
  EXPECT_TRUE(store_->LoadAll()->empty());
}

TEST_F(JobManagerTest, OnlyTheTableOfMovesIsAllowed) {
  auto jobs = Manager();
  const std::string id = JobId(*jobs->Submit(Request()));
  // Finishing a job that never started is refused: it stays QUEUED.
  jobs->Finish(id, JobReport{}, false, 1);
  EXPECT_EQ(jobs->Get(id)->state(), v1::Job::QUEUED);
  ASSERT_TRUE(jobs->Start(id).ok());
  EXPECT_EQ(jobs->Get(id)->state(), v1::Job::RUNNING);
  EXPECT_FALSE(jobs->Start(id).ok()) << "a running job cannot start again";
  jobs->Progress(id, [](v1::Job& j) {
    j.set_layers_done(3);
    j.set_state(v1::Job::SUCCEEDED);  // progress cannot move a job
  });
  EXPECT_EQ(jobs->Get(id)->state(), v1::Job::RUNNING);
  EXPECT_EQ(jobs->Get(id)->layers_done(), 3);
  jobs->Finish(id, absl::InternalError("disk on fire"), false, 1);
  EXPECT_EQ(jobs->Get(id)->state(), v1::Job::FAILED);
  jobs->Finish(id, JobReport{}, false, 1);
  EXPECT_EQ(jobs->Get(id)->state(), v1::Job::FAILED) << "a finished job stays finished";
  EXPECT_EQ(store_->LoadAll()->at(0).job().state(), v1::Job::FAILED) << "state changes are persisted";
  EXPECT_EQ(jobs->Cancel(id).status().code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(JobManagerTest, ListPagesInCreationOrderWithinACountAndAByteBound) {
  JobManager::Options options;
  options.max_list_bytes = 1000;
  auto jobs = Manager(options);
  std::vector<std::string> names;
  for (int i = 0; i < 7; ++i) {
    v1::QuantizeModelRequest r = Request();
    (*r.mutable_labels())["note"] = std::string(250, 'a' + i);
    names.push_back(jobs->Submit(r)->name());
  }
  ASSERT_TRUE(jobs->Start(JobId(*jobs->Get(names[2].substr(5)))).ok());
  std::vector<std::string> seen;
  std::string token;
  int pages = 0;
  do {
    JobManager::Page page = jobs->List(3, token, v1::Job::STATE_UNSPECIFIED);
    size_t bytes = 0;
    for (const v1::Job& j : page.jobs) bytes += j.ByteSizeLong();
    EXPECT_TRUE(page.jobs.size() == 1 || bytes <= options.max_list_bytes) << bytes;
    for (const v1::Job& j : page.jobs) seen.push_back(j.name());
    token = page.next_page_token;
    ++pages;
  } while (!token.empty());
  EXPECT_EQ(seen, names);
  EXPECT_GT(pages, 3) << "the byte bound, not the count of 3, ended the pages";
  JobManager::Page running = jobs->List(10, "", v1::Job::RUNNING);
  ASSERT_EQ(running.jobs.size(), 1u);
  EXPECT_EQ(running.jobs[0].name(), names[2]);
}

TEST_F(JobManagerTest, ListFiltersByStateAndLabelsAsAip160Says) {
  auto jobs = Manager();
  std::vector<std::string> ids;
  for (const char* team : {"nlp", "vision", "nlp"}) {
    v1::QuantizeModelRequest r = Request();
    (*r.mutable_labels())["team"] = team;
    ids.push_back(JobId(*jobs->Submit(r)));
  }
  ASSERT_TRUE(jobs->Start(ids[2]).ok());
  auto names = [&](const std::string& text) {
    absl::StatusOr<JobFilter> filter = ParseJobFilter(text);
    EXPECT_TRUE(filter.ok()) << text << ": " << filter.status();
    std::vector<std::string> found;
    for (const v1::Job& j : jobs->List(100, "", filter.ok() ? *filter : JobFilter()).jobs) found.push_back(JobId(j));
    return found;
  };
  EXPECT_EQ(names(""), ids);
  EXPECT_EQ(names("labels.team = \"nlp\""), (std::vector<std::string>{ids[0], ids[2]}));
  EXPECT_EQ(names("labels.team=vision"), (std::vector<std::string>{ids[1]}));
  EXPECT_EQ(names("labels.team = \"nlp\" AND state = RUNNING"), (std::vector<std::string>{ids[2]}));
  EXPECT_EQ(names("state=queued AND labels.team = nlp"), (std::vector<std::string>{ids[0]}));
  EXPECT_TRUE(names("labels.owner = \"nobody\"").empty());
  for (const char* bad : {"team = nlp", "state = ASLEEP", "labels. = x", "state RUNNING"}) {
    EXPECT_EQ(ParseJobFilter(bad).status().code(), absl::StatusCode::kInvalidArgument) << bad;
  }
}

TEST_F(JobManagerTest, WatchersAndListenersWakeOnChanges) {
  auto jobs = Manager();
  const std::string id = JobId(*jobs->Submit(Request()));
  std::atomic<int> calls{0};
  const int64_t subscription = jobs->Subscribe(id, [&] { ++calls; });
  auto first = jobs->WaitForChange(id, 0, absl::Now() + absl::Seconds(5));
  ASSERT_TRUE(first.has_value());
  std::thread updater([&] {
    absl::SleepFor(absl::Milliseconds(50));
    jobs->Progress(id, [](v1::Job& j) { j.set_layers_done(3); });
  });
  auto second = jobs->WaitForChange(id, first->second, absl::Now() + absl::Seconds(5));
  updater.join();
  ASSERT_TRUE(second.has_value());
  EXPECT_GT(second->second, first->second);
  EXPECT_EQ(second->first.layers_done(), 3);
  EXPECT_EQ(calls.load(), 1);
  jobs->Unsubscribe(subscription);
  jobs->Progress(id, [](v1::Job& j) { j.set_layers_done(4); });
  EXPECT_EQ(calls.load(), 1) << "no call after Unsubscribe";
  EXPECT_FALSE(jobs->WaitForChange("nope", 0, absl::Now()).has_value());
}

TEST_F(JobManagerTest, AfterACrashRunningJobsAreQueuedAgainAndFinishedOnesStay) {
  std::string queued, running, done;
  const v1::QuantizeModelRequest retried = Request("q");
  {
    auto jobs = Manager();
    queued = JobId(*jobs->Submit(retried));
    running = JobId(*jobs->Submit(Request()));
    done = JobId(*jobs->Submit(Request()));
    ASSERT_TRUE(jobs->Start(running).ok());
    ASSERT_TRUE(jobs->Start(done).ok());
    JobReport report;
    report.summary.layers_quantized = 2;
    jobs->Finish(done, report, false, 1);
  }  // the process dies here, with `running` RUNNING
  auto jobs = Manager();
  EXPECT_EQ(jobs->Get(queued)->state(), v1::Job::QUEUED);
  EXPECT_EQ(jobs->Get(running)->state(), v1::Job::QUEUED) << "an interrupted job runs again";
  for (int i = 0; i < 500 && HandedOut() < 5; ++i) absl::SleepFor(absl::Milliseconds(10));
  EXPECT_EQ(HandedOut(), 5) << "3 submitted before the crash, both QUEUED ones after it";
  EXPECT_EQ(jobs->Get(done)->state(), v1::Job::SUCCEEDED);
  EXPECT_EQ(jobs->Get(done)->result().layers_quantized(), 2);
  absl::StatusOr<JobRecord> restarted = jobs->Start(running);
  ASSERT_TRUE(restarted.ok());
  EXPECT_EQ(restarted->attempts(), 2);
  EXPECT_NE(restarted->last_interruption().find("attempt 1"), std::string::npos) << restarted->last_interruption();
  EXPECT_EQ(JobId(*jobs->Submit(retried)), queued) << "request ids survive too";
}

TEST_F(JobManagerTest, FinishedJobsArePrunedAfterTheRetentionPeriodAndOnlyThey) {
  JobManager::Options options;
  options.retention = absl::Hours(1);
  auto jobs = Manager(options);
  const std::string finished = JobId(*jobs->Submit(Request()));
  const std::string waiting = JobId(*jobs->Submit(Request()));
  ASSERT_TRUE(jobs->Start(finished).ok());
  jobs->Finish(finished, JobReport{}, false, 1);
  EXPECT_EQ(jobs->PruneExpired(absl::Now() + absl::Minutes(30)), 0);
  EXPECT_EQ(jobs->PruneExpired(absl::Now() + absl::Hours(2)), 1);
  EXPECT_FALSE(jobs->Get(finished).has_value());
  EXPECT_TRUE(jobs->Get(waiting).has_value());
  EXPECT_EQ(store_->LoadAll()->size(), 1u);
  EXPECT_EQ(jobs->Delete(waiting).code(), absl::StatusCode::kFailedPrecondition);
}

TEST_F(JobManagerTest, DeletingWithOutputsRemovesWhatTheJobCommittedAndNothingElse) {
  auto jobs = Manager();
  const std::string id = JobId(*jobs->Submit(Request("", "deleted")));
  ASSERT_TRUE(jobs->Start(id).ok());
  const std::string out = dir_.File("store/deleted");
  std::filesystem::create_directories(out);
  for (const char* f : {"model.safetensors", "config.json", "lowbit_report.json", "notes-of-the-user.txt"}) {
    std::ofstream(out + "/" + f) << f;
  }
  JobReport report;
  report.files = {{"model.safetensors", 17}, {"config.json", 11}};
  jobs->Finish(id, report, false, 1);
  ASSERT_EQ(jobs->Get(id)->state(), v1::Job::SUCCEEDED);

  // While another job holds the destination, nothing is deleted.
  bool held = false;
  ASSERT_TRUE(LockDestination(objects_.get(), "deleted", "jobs/other", &held).ok());
  EXPECT_EQ(jobs->Delete(id, /*outputs=*/true).code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_TRUE(std::filesystem::exists(out + "/model.safetensors"));
  ASSERT_TRUE(UnlockDestination(objects_.get(), "deleted", "jobs/other").ok());

  ASSERT_TRUE(jobs->Delete(id, /*outputs=*/true).ok());
  EXPECT_FALSE(jobs->Get(id).has_value());
  for (const char* gone : {"model.safetensors", "config.json", "lowbit_report.json"}) {
    EXPECT_FALSE(std::filesystem::exists(out + "/" + gone)) << gone;
  }
  EXPECT_TRUE(std::filesystem::exists(out + "/notes-of-the-user.txt")) << "not the job's: kept";
  EXPECT_FALSE(std::filesystem::exists(out + "/.lowbit-lock"));
}

}  // namespace
}  // namespace lowbit::server
