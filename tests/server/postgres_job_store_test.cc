// The PostgreSQL job store's rules (server/postgres_job_store.h) against a real server, started for the
// test by tests/e2e/with_postgres.py: one claim per job however replicas race, only the holder writes,
// leases expire, cancels and request ids cross replicas, migrations run once.
#include "server/postgres_job_store.h"

#include <cstdlib>
#include <set>
#include <thread>

#include "absl/strings/str_cat.h"
#include "gtest/gtest.h"

namespace lowbit::server {
namespace {

class PostgresJobStoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    const char* uri = std::getenv("LOWBIT_TEST_POSTGRES");
    ASSERT_NE(uri, nullptr) << "run under tests/e2e/with_postgres.py";
    uri_ = uri;
    a_ = Connect("a");
    b_ = Connect("b");
  }

  std::unique_ptr<PostgresJobStore> Connect(const std::string& replica) {
    absl::StatusOr<std::unique_ptr<PostgresJobStore>> store = PostgresJobStore::Connect(uri_, replica);
    EXPECT_TRUE(store.ok()) << store.status();
    return std::move(*store);
  }

  // A new queued job, unique to the test, planned at `bytes`.
  JobRecord Queued(uint64_t bytes = 1000, const std::string& request_id = "") {
    JobRecord r;
    r.mutable_job()->set_name(absl::StrCat("jobs/", ::testing::UnitTest::GetInstance()->current_test_info()->name(),
                                           "-", ++jobs_));
    r.mutable_job()->set_state(v1::Job::QUEUED);
    r.mutable_job()->mutable_plan()->set_total_bytes(static_cast<int64_t>(bytes));
    r.mutable_job()->mutable_request()->set_request_id(request_id);
    r.set_version(1);
    return r;
  }

  // Claims until this test's job `id` comes up (other tests' leftovers may come first; they are released).
  std::optional<PostgresJobStore::Row> ClaimJob(PostgresJobStore& store, const std::string& id,
                                                absl::Duration lease = absl::Seconds(30)) {
    std::vector<std::string> others;
    std::optional<PostgresJobStore::Row> found;
    for (;;) {
      absl::StatusOr<std::optional<PostgresJobStore::Row>> row = store.Claim(std::nullopt, lease);
      EXPECT_TRUE(row.ok()) << row.status();
      if (!row.ok() || !row->has_value()) break;
      if (JobId((*row)->record.job()) == id) {
        found = **row;
        break;
      }
      others.push_back(JobId((*row)->record.job()));
    }
    for (const std::string& other : others) EXPECT_TRUE(store.Release(other).ok());
    return found;
  }

  std::string uri_;
  std::unique_ptr<PostgresJobStore> a_, b_;
  int jobs_ = 0;
};

TEST_F(PostgresJobStoreTest, MigrationsRunOnceHoweverManyReplicasStart) {
  std::vector<std::thread> starting;
  for (int i = 0; i < 4; ++i) starting.emplace_back([&, i] { Connect(absl::StrCat("starter-", i)); });
  for (std::thread& t : starting) t.join();
  // A fifth start after them finds the schema in place and changes nothing.
  EXPECT_NE(Connect("late"), nullptr);
}

TEST_F(PostgresJobStoreTest, RacingReplicasNeverClaimOneJobTwice) {
  std::set<std::string> mine;
  for (int i = 0; i < 20; ++i) {
    JobRecord r = Queued();
    ASSERT_TRUE(a_->Save(r).ok());
    mine.insert(JobId(r.job()));
  }
  std::vector<std::unique_ptr<PostgresJobStore>> replicas;
  for (int i = 0; i < 4; ++i) replicas.push_back(Connect(absl::StrCat("racer-", i)));
  std::vector<std::vector<std::string>> claimed(replicas.size());
  std::vector<std::thread> racing;
  for (size_t i = 0; i < replicas.size(); ++i) {
    racing.emplace_back([&, i] {
      for (;;) {
        absl::StatusOr<std::optional<PostgresJobStore::Row>> row = replicas[i]->Claim(std::nullopt, absl::Seconds(30));
        if (!row.ok() || !row->has_value()) return;
        claimed[i].push_back(JobId((*row)->record.job()));
      }
    });
  }
  for (std::thread& t : racing) t.join();
  std::multiset<std::string> all;
  for (const auto& c : claimed) all.insert(c.begin(), c.end());
  for (const std::string& id : mine) EXPECT_EQ(all.count(id), 1u) << id;
}

TEST_F(PostgresJobStoreTest, OnlyTheHolderWritesAndNeverAnOlderVersion) {
  JobRecord r = Queued();
  ASSERT_TRUE(a_->Save(r).ok());
  ASSERT_TRUE(ClaimJob(*a_, JobId(r.job())).has_value());
  r.mutable_job()->set_state(v1::Job::RUNNING);
  r.set_version(2);
  EXPECT_TRUE(absl::IsFailedPrecondition(b_->Save(r))) << "b does not hold it";
  EXPECT_TRUE(a_->Save(r).ok());
  EXPECT_TRUE(a_->Save(r).ok()) << "the same version again: a retry whose answer was lost";
  JobRecord older = r;
  older.set_version(1);
  older.mutable_job()->set_current_layer("stale");
  EXPECT_TRUE(a_->Save(older).ok());
  EXPECT_EQ((*a_->Load(JobId(r.job())))->record.job().current_layer(), "") << "the older version did not land";
  // Saved finished, the claim is given back and the job is no one's to write.
  r.mutable_job()->set_state(v1::Job::SUCCEEDED);
  r.set_version(3);
  ASSERT_TRUE(a_->Save(r).ok());
  std::optional<PostgresJobStore::Row> row = *a_->Load(JobId(r.job()));
  EXPECT_EQ(row->owner, "");
  r.set_version(4);
  EXPECT_TRUE(absl::IsFailedPrecondition(a_->Save(r)));
  EXPECT_FALSE(ClaimJob(*b_, JobId(r.job())).has_value()) << "a finished job is never claimed";
}

TEST_F(PostgresJobStoreTest, AnExpiredLeaseIsTakenOverAndTheOldHolderIsFencedOut) {
  JobRecord r = Queued();
  ASSERT_TRUE(a_->Save(r).ok());
  ASSERT_TRUE(ClaimJob(*a_, JobId(r.job()), absl::Milliseconds(300)).has_value());
  r.mutable_job()->set_state(v1::Job::RUNNING);
  r.set_version(2);
  ASSERT_TRUE(a_->Save(r).ok());
  EXPECT_FALSE(ClaimJob(*b_, JobId(r.job()), absl::Milliseconds(300)).has_value()) << "a live lease is not taken";
  absl::SleepFor(absl::Milliseconds(500));  // a stops renewing
  // Within one (claimer's) lease of the database's start nothing is taken over: after a restart the
  // holders get that long to renew. The server started for this test is younger than an hour.
  EXPECT_FALSE(ClaimJob(*b_, JobId(r.job()), absl::Hours(1)).has_value());
  std::optional<PostgresJobStore::Row> taken = ClaimJob(*b_, JobId(r.job()), absl::Milliseconds(300));
  ASSERT_TRUE(taken.has_value());
  EXPECT_EQ(taken->record.job().state(), v1::Job::RUNNING) << "as its holder left it";
  EXPECT_EQ(taken->owner, "b");
  absl::StatusOr<std::vector<std::string>> held = a_->Renew(absl::Seconds(30), 0, 0);
  ASSERT_TRUE(held.ok());
  EXPECT_EQ(std::count(held->begin(), held->end(), JobId(r.job())), 0) << "a learns it lost the job";
  r.set_version(3);
  EXPECT_TRUE(absl::IsFailedPrecondition(a_->Save(r))) << "a's late writes are refused";
}

TEST_F(PostgresJobStoreTest, ClaimsRespectTheReplicasFreeMemory) {
  JobRecord big = Queued(uint64_t{64} << 30);
  ASSERT_TRUE(a_->Save(big).ok());
  std::vector<std::string> claimed;
  for (;;) {  // with 1 GiB free, everything but the big job
    absl::StatusOr<std::optional<PostgresJobStore::Row>> row = a_->Claim(uint64_t{1} << 30, absl::Seconds(30));
    ASSERT_TRUE(row.ok());
    if (!row->has_value()) break;
    claimed.push_back(JobId((*row)->record.job()));
  }
  EXPECT_EQ(std::count(claimed.begin(), claimed.end(), JobId(big.job())), 0);
  for (const std::string& id : claimed) ASSERT_TRUE(a_->Release(id).ok());
  EXPECT_TRUE(ClaimJob(*a_, JobId(big.job())).has_value()) << "without a bound it is claimed";
  ASSERT_TRUE(a_->Renew(absl::Seconds(30), uint64_t{16} << 30, 0).ok());
  ASSERT_TRUE(b_->Renew(absl::Seconds(30), uint64_t{32} << 30, 0).ok());
  absl::StatusOr<std::optional<uint64_t>> largest = a_->LargestBudget(absl::Seconds(60));
  ASSERT_TRUE(largest.ok());
  // Other tests' replicas advertise no bound (0) or small ones; none advertises more than 32 GiB.
  if (largest->has_value()) {
    EXPECT_EQ(**largest, uint64_t{32} << 30);
  }
}

TEST_F(PostgresJobStoreTest, ACancelFromAnyReplicaReachesTheHolder) {
  JobRecord r = Queued();
  ASSERT_TRUE(a_->Save(r).ok());
  ASSERT_TRUE(ClaimJob(*a_, JobId(r.job())).has_value());
  ASSERT_TRUE(b_->RequestCancel(JobId(r.job())).ok());
  EXPECT_TRUE((*a_->Load(JobId(r.job())))->cancel_requested);
}

TEST_F(PostgresJobStoreTest, ARequestIdNamesOneJobAcrossReplicas) {
  const std::string request_id = absl::StrCat("req-", absl::ToUnixNanos(absl::Now()));
  JobRecord first = Queued(1000, request_id);
  ASSERT_TRUE(a_->Save(first).ok());
  EXPECT_TRUE(absl::IsAlreadyExists(b_->Save(Queued(1000, request_id))));
  absl::StatusOr<std::optional<PostgresJobStore::Row>> known = b_->LoadByRequestId(request_id);
  ASSERT_TRUE(known.ok() && known->has_value());
  EXPECT_EQ((*known)->record.job().name(), first.job().name());
}

TEST_F(PostgresJobStoreTest, OnlyFinishedUnclaimedJobsAreDeleted) {
  JobRecord r = Queued();
  ASSERT_TRUE(a_->Save(r).ok());
  EXPECT_TRUE(absl::IsFailedPrecondition(b_->Delete(JobId(r.job()))));
  ASSERT_TRUE(ClaimJob(*a_, JobId(r.job())).has_value());
  r.mutable_job()->set_state(v1::Job::CANCELLED);
  r.set_version(2);
  ASSERT_TRUE(a_->Save(r).ok());
  EXPECT_TRUE(b_->Delete(JobId(r.job())).ok());
  EXPECT_FALSE(a_->Load(JobId(r.job()))->has_value());
}

TEST_F(PostgresJobStoreTest, NotificationsNameEveryChangedJob) {
  std::set<std::string> seen;
  absl::Mutex mu;
  bool synced = false;
  std::thread listener([&] {
    b_->Listen(
        [&](const std::string& id) {
          absl::MutexLock lock(&mu);
          seen.insert(id);
        },
        [&] {
          absl::MutexLock lock(&mu);
          synced = true;
        });
  });
  {
    absl::MutexLock lock(&mu);
    mu.Await(absl::Condition(&synced));
  }
  JobRecord r = Queued();
  ASSERT_TRUE(a_->Save(r).ok());
  const std::string id = JobId(r.job());
  auto saw = [&]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu) { return seen.count(id) > 0; };
  {
    absl::MutexLock lock(&mu);
    EXPECT_TRUE(mu.AwaitWithTimeout(absl::Condition(&saw), absl::Seconds(10)));
    seen.clear();
  }
  ASSERT_TRUE(ClaimJob(*a_, id).has_value());
  {
    absl::MutexLock lock(&mu);
    EXPECT_TRUE(mu.AwaitWithTimeout(absl::Condition(&saw), absl::Seconds(10))) << "the claim is a change";
    seen.clear();
  }
  // A renewal touches only the lease: nobody is woken for it.
  ASSERT_TRUE(a_->Renew(absl::Seconds(30), 0, 0).ok());
  {
    absl::MutexLock lock(&mu);
    EXPECT_FALSE(mu.AwaitWithTimeout(absl::Condition(&saw), absl::Milliseconds(500))) << "a renewal woke a listener";
  }
  ASSERT_TRUE(a_->RequestCancel(id).ok());
  {
    absl::MutexLock lock(&mu);
    EXPECT_TRUE(mu.AwaitWithTimeout(absl::Condition(&saw), absl::Seconds(10)));
  }
  b_->StopListening();
  listener.join();
}

}  // namespace
}  // namespace lowbit::server
