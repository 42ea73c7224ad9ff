#include "server/postgres_job_store.h"

#include <cstdio>
#include <thread>

#include <google/protobuf/util/json_util.h>
#include <pqxx/pqxx>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "core/util/status_macros.h"

namespace lowbit::server {
namespace {

// Applied in order, each once (lowbit_schema records which); never edit one that has shipped, add another.
constexpr const char* kMigrations[] = {
    // 1: jobs, their claims and the idempotency index of AIP-155; replicas and their budgets.
    R"sql(
CREATE TABLE lowbit_jobs (
  id               text PRIMARY KEY,
  request_id       text,
  state            text NOT NULL,
  version          bigint NOT NULL,
  plan_bytes       bigint NOT NULL DEFAULT 0,
  record           jsonb NOT NULL,
  owner            text,
  lease_until      timestamptz,
  cancel_requested boolean NOT NULL DEFAULT false
);
CREATE UNIQUE INDEX lowbit_jobs_request_id ON lowbit_jobs (request_id) WHERE request_id IS NOT NULL;
CREATE INDEX lowbit_jobs_claimable ON lowbit_jobs (state, id) WHERE state IN ('QUEUED', 'RUNNING');
CREATE TABLE lowbit_replicas (
  id            text PRIMARY KEY,
  memory_budget bigint NOT NULL,
  running_bytes bigint NOT NULL,
  heartbeat     timestamptz NOT NULL
);
-- Renewing a lease touches only lease_until, so it wakes nobody.
CREATE FUNCTION lowbit_jobs_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('lowbit_jobs', COALESCE(NEW.id, OLD.id));
  RETURN NULL;
END $$;
CREATE TRIGGER lowbit_jobs_changed AFTER INSERT OR DELETE OR UPDATE OF version, owner, cancel_requested
  ON lowbit_jobs FOR EACH ROW EXECUTE FUNCTION lowbit_jobs_notify();
)sql",
};

constexpr int64_t kMigrationLock = 0x6c6f77626974;  // "lowbit": serializes replicas migrating at once

absl::StatusOr<std::string> ToJson(const JobRecord& record) {
  std::string json;
  if (!google::protobuf::util::MessageToJsonString(record, &json).ok()) {
    return absl::InternalError(absl::StrCat("cannot encode job ", record.job().name()));
  }
  return json;
}

PostgresJobStore::Row RowFrom(const pqxx::row& r) {
  PostgresJobStore::Row row;
  google::protobuf::util::JsonParseOptions options;
  options.ignore_unknown_fields = true;  // a record written by a newer replica during a rolling upgrade
  if (!google::protobuf::util::JsonStringToMessage(r["record"].c_str(), &row.record, options).ok()) {
    throw pqxx::data_exception(absl::StrCat("job ", r["id"].c_str(), ": its record is not a JobRecord"));
  }
  row.owner = r["owner"].is_null() ? "" : r["owner"].c_str();
  row.cancel_requested = r["cancel_requested"].as<bool>();
  return row;
}

constexpr char kRowColumns[] = "id, record::text AS record, owner, cancel_requested";

double Seconds(absl::Duration d) { return absl::ToDoubleSeconds(d); }

}  // namespace

struct PostgresJobStore::Connection {
  explicit Connection(const std::string& uri) : c(uri) {}
  pqxx::connection c;
};

PostgresJobStore::PostgresJobStore(std::string uri, std::string replica)
    : uri_(std::move(uri)), replica_(std::move(replica)) {}

PostgresJobStore::~PostgresJobStore() = default;

absl::StatusOr<std::unique_ptr<PostgresJobStore>> PostgresJobStore::Connect(const std::string& uri,
                                                                           const std::string& replica) {
  // libpq waits for a connection without bound by default; a database that went silent must not hold
  // up the leases and the jobs' progress behind it for minutes.
  std::string bounded = uri;
  if (!absl::StrContains(uri, "connect_timeout=")) {
    absl::StrAppend(&bounded, absl::StrContains(uri, "?") ? "&" : "?", "connect_timeout=5");
  }
  std::unique_ptr<PostgresJobStore> store(new PostgresJobStore(bounded, replica));
  absl::Status migrated = store->Migrate();
  if (!migrated.ok()) return absl::Status(migrated.code(), absl::StrCat("job store: ", migrated.message()));
  return store;
}

absl::Status PostgresJobStore::WithConnection(const std::function<void(pqxx::connection_base&)>& body) {
  absl::MutexLock lock(&mu_);
  for (int attempt = 0;; ++attempt) {
    const bool fresh = connection_ == nullptr;
    try {
      if (fresh) connection_ = std::make_unique<Connection>(uri_);
      body(connection_->c);
      return absl::OkStatus();
    } catch (const pqxx::broken_connection& e) {
      connection_.reset();
      // An old connection may have died with a database restart: one retry on a new one.
      if (fresh || attempt > 0) return absl::UnavailableError(absl::StrCat("PostgreSQL unreachable: ", e.what()));
    } catch (const pqxx::unique_violation& e) {
      return absl::AlreadyExistsError(e.what());
    } catch (const pqxx::sql_error& e) {
      // A connection the server closed (admin shutdown) reports itself as an SQL error with no state.
      const bool lost = e.sqlstate().empty() || e.sqlstate().rfind("57P", 0) == 0 || e.sqlstate().rfind("08", 0) == 0;
      connection_.reset();
      if (!lost) return absl::InternalError(absl::StrCat("PostgreSQL: ", e.what()));
      if (fresh || attempt > 0) return absl::UnavailableError(absl::StrCat("PostgreSQL unreachable: ", e.what()));
    } catch (const pqxx::failure& e) {
      connection_.reset();
      return absl::UnavailableError(absl::StrCat("PostgreSQL: ", e.what()));
    } catch (const std::exception& e) {  // a record that does not parse, or libpqxx's own usage errors
      return absl::DataLossError(absl::StrCat("job store: ", e.what()));
    }
  }
}

absl::Status PostgresJobStore::Migrate() {
  return WithConnection([](pqxx::connection_base& c) {
    pqxx::work txn(c);
    txn.exec_params("SELECT pg_advisory_xact_lock($1)", kMigrationLock);
    txn.exec("CREATE TABLE IF NOT EXISTS lowbit_schema (version int PRIMARY KEY, applied timestamptz NOT NULL DEFAULT now())");
    const int applied = txn.exec("SELECT coalesce(max(version), 0) FROM lowbit_schema")[0][0].as<int>();
    const int known = static_cast<int>(std::size(kMigrations));
    for (int v = applied + 1; v <= known; ++v) {
      txn.exec(kMigrations[v - 1]);
      txn.exec_params("INSERT INTO lowbit_schema (version) VALUES ($1)", v);
    }
    txn.commit();
    if (applied > known) {
      std::fprintf(stderr, "lowbitd: job store schema %d is newer than this replica's %d\n", applied, known);
    }
  });
}

absl::Status PostgresJobStore::Save(const JobRecord& record) {
  absl::StatusOr<std::string> json = ToJson(record);
  if (!json.ok()) return json.status();
  const std::string id = JobId(record.job());
  const std::string state = v1::Job::State_Name(record.job().state());
  bool stored = false;
  int64_t stored_version = 0;
  std::string holder;
  RETURN_IF_ERROR(WithConnection([&](pqxx::connection_base& c) {
    pqxx::work txn(c);
    // Inserts a new job unclaimed, or updates one this replica holds. A record saved QUEUED or finished
    // gives the claim up; a finished job's cancel flag is spent.
    const pqxx::result r = txn.exec_params(
        R"sql(
INSERT INTO lowbit_jobs (id, request_id, state, version, plan_bytes, record)
VALUES ($1, NULLIF($2, ''), $3, $4, $5, $6::jsonb)
ON CONFLICT (id) DO UPDATE SET
  state = excluded.state, version = excluded.version, record = excluded.record,
  owner = CASE WHEN excluded.state = 'RUNNING' THEN lowbit_jobs.owner END,
  lease_until = CASE WHEN excluded.state = 'RUNNING' THEN lowbit_jobs.lease_until END,
  cancel_requested = lowbit_jobs.cancel_requested AND excluded.state IN ('QUEUED', 'RUNNING')
WHERE lowbit_jobs.owner = $7 AND lowbit_jobs.version < excluded.version
RETURNING id)sql",
        id, record.job().request().request_id(), state, record.version(), record.job().plan().total_bytes(), *json,
        replica_);
    stored = !r.empty();
    if (!stored) {  // not ours to write, or already written (a retry of a save whose answer was lost)
      const pqxx::result now = txn.exec_params("SELECT version, owner FROM lowbit_jobs WHERE id = $1", id);
      if (!now.empty()) {
        stored_version = now[0][0].as<int64_t>();
        holder = now[0][1].is_null() ? "" : now[0][1].c_str();
      }
    }
    txn.commit();
  }));
  if (stored || stored_version >= record.version()) return absl::OkStatus();
  return absl::FailedPreconditionError(absl::StrCat("job ", id, " is held by ",
                                                    holder.empty() ? "no replica" : holder, ", not by ", replica_));
}

absl::Status PostgresJobStore::Delete(const std::string& job_id) {
  bool deleted = false;
  RETURN_IF_ERROR(WithConnection([&](pqxx::connection_base& c) {
    pqxx::work txn(c);
    deleted = !txn.exec_params(
                       "DELETE FROM lowbit_jobs WHERE id = $1 AND owner IS NULL "
                       "AND state IN ('SUCCEEDED', 'FAILED', 'CANCELLED') RETURNING id",
                       job_id)
                   .empty();
    txn.commit();
  }));
  if (deleted) return absl::OkStatus();
  absl::StatusOr<std::optional<Row>> row = Load(job_id);
  if (!row.ok()) return row.status();
  return *row ? absl::FailedPreconditionError(absl::StrCat("job ", job_id, " has not finished")) : absl::OkStatus();
}

absl::StatusOr<std::vector<PostgresJobStore::Row>> PostgresJobStore::LoadRows() {
  std::vector<Row> rows;
  RETURN_IF_ERROR(WithConnection([&](pqxx::connection_base& c) {
    rows.clear();
    pqxx::read_transaction txn(c);
    for (const pqxx::row& r : txn.exec(absl::StrCat("SELECT ", kRowColumns, " FROM lowbit_jobs ORDER BY id"))) {
      rows.push_back(RowFrom(r));
    }
  }));
  return rows;
}

absl::StatusOr<std::vector<JobRecord>> PostgresJobStore::LoadAll() {
  ASSIGN_OR_RETURN(std::vector<Row> rows, LoadRows());
  std::vector<JobRecord> records;
  for (Row& row : rows) records.push_back(std::move(row.record));
  return records;
}

absl::StatusOr<std::optional<PostgresJobStore::Row>> PostgresJobStore::LoadWhere(const char* column,
                                                                                const std::string& value) {
  std::optional<Row> row;
  RETURN_IF_ERROR(WithConnection([&](pqxx::connection_base& c) {
    pqxx::read_transaction txn(c);
    const pqxx::result r =
        txn.exec_params(absl::StrCat("SELECT ", kRowColumns, " FROM lowbit_jobs WHERE ", column, " = $1"), value);
    row = r.empty() ? std::nullopt : std::optional<Row>(RowFrom(r[0]));
  }));
  return row;
}

absl::StatusOr<std::optional<PostgresJobStore::Row>> PostgresJobStore::Claim(std::optional<uint64_t> free_bytes,
                                                                            absl::Duration lease, bool cancelled_only) {
  std::optional<Row> row;
  const int64_t free = free_bytes ? static_cast<int64_t>(std::min<uint64_t>(*free_bytes, INT64_MAX)) : INT64_MAX;
  RETURN_IF_ERROR(WithConnection([&](pqxx::connection_base& c) {
    pqxx::work txn(c);
    const pqxx::result r = txn.exec_params(
        absl::StrCat(R"sql(
WITH candidate AS (
  SELECT id FROM lowbit_jobs
  WHERE state IN ('QUEUED', 'RUNNING')
    AND (owner IS NULL
         OR (lease_until < now() AND now() - pg_postmaster_start_time() > $2::float8 * interval '1 second'))
    AND (state = 'RUNNING' OR owner IS NOT NULL OR cancel_requested OR plan_bytes <= $3)
    AND (cancel_requested OR NOT $4)
  ORDER BY cancel_requested DESC, id
  LIMIT 1
  FOR UPDATE SKIP LOCKED)
UPDATE lowbit_jobs SET owner = $1, lease_until = now() + $2::float8 * interval '1 second'
FROM candidate WHERE lowbit_jobs.id = candidate.id
RETURNING )sql",
                     "lowbit_jobs.id, lowbit_jobs.record::text AS record, lowbit_jobs.owner, lowbit_jobs.cancel_requested"),
        replica_, Seconds(lease), free, cancelled_only);
    txn.commit();
    row = r.empty() ? std::nullopt : std::optional<Row>(RowFrom(r[0]));
  }));
  return row;
}

absl::StatusOr<std::vector<std::string>> PostgresJobStore::Renew(absl::Duration lease, uint64_t memory_budget,
                                                                uint64_t running_bytes) {
  std::vector<std::string> held;
  RETURN_IF_ERROR(WithConnection([&](pqxx::connection_base& c) {
    held.clear();
    pqxx::work txn(c);
    txn.exec_params(
        "INSERT INTO lowbit_replicas (id, memory_budget, running_bytes, heartbeat) VALUES ($1, $2, $3, now()) "
        "ON CONFLICT (id) DO UPDATE SET memory_budget = excluded.memory_budget, "
        "running_bytes = excluded.running_bytes, heartbeat = now()",
        replica_, static_cast<int64_t>(memory_budget), static_cast<int64_t>(running_bytes));
    // Replicas gone for a day are forgotten, so the table stays the size of the fleet.
    txn.exec("DELETE FROM lowbit_replicas WHERE heartbeat < now() - interval '1 day'");
    for (const pqxx::row& r : txn.exec_params(
             "UPDATE lowbit_jobs SET lease_until = now() + $2::float8 * interval '1 second' WHERE owner = $1 RETURNING id",
             replica_, Seconds(lease))) {
      held.push_back(r[0].c_str());
    }
    txn.commit();
  }));
  return held;
}

absl::Status PostgresJobStore::Release(const std::string& job_id) {
  return WithConnection([&](pqxx::connection_base& c) {
    pqxx::work txn(c);
    txn.exec_params("UPDATE lowbit_jobs SET owner = NULL, lease_until = NULL WHERE id = $1 AND owner = $2", job_id,
                    replica_);
    txn.commit();
  });
}

absl::Status PostgresJobStore::RequestCancel(const std::string& job_id) {
  return WithConnection([&](pqxx::connection_base& c) {
    pqxx::work txn(c);
    txn.exec_params(
        "UPDATE lowbit_jobs SET cancel_requested = true WHERE id = $1 AND state IN ('QUEUED', 'RUNNING') "
        "AND NOT cancel_requested",
        job_id);
    txn.commit();
  });
}

absl::StatusOr<std::optional<uint64_t>> PostgresJobStore::LargestBudget(absl::Duration live_within) {
  std::optional<uint64_t> largest;
  RETURN_IF_ERROR(WithConnection([&](pqxx::connection_base& c) {
    pqxx::read_transaction txn(c);
    const pqxx::row r = txn.exec_params(
        "SELECT coalesce(bool_or(memory_budget = 0), false), coalesce(max(memory_budget), 0) FROM lowbit_replicas "
        "WHERE heartbeat > now() - $1::float8 * interval '1 second'",
        Seconds(live_within))[0];
    largest = r[0].as<bool>() ? std::nullopt : std::optional<uint64_t>(r[1].as<int64_t>());
  }));
  return largest;
}

void PostgresJobStore::Listen(const std::function<void(const std::string&)>& on_change,
                              const std::function<void()>& on_resync) {
  struct Receiver final : pqxx::notification_receiver {
    Receiver(pqxx::connection_base& c, const std::function<void(const std::string&)>& f)
        : pqxx::notification_receiver(c, "lowbit_jobs"), on_change(f) {}
    void operator()(const std::string& payload, int) override { on_change(payload); }
    const std::function<void(const std::string&)>& on_change;
  };
  absl::Duration backoff = absl::Milliseconds(100);
  while (listening_) {
    try {
      pqxx::connection c(uri_);
      Receiver receiver(c, on_change);
      backoff = absl::Milliseconds(100);
      on_resync();
      while (listening_) c.await_notification(0, 200'000);  // wakes at least every 0.2 s to see StopListening
    } catch (const std::exception& e) {
      if (!listening_) break;
      std::fprintf(stderr, "lowbitd: job store notifications: %s; reconnecting\n", e.what());
      std::this_thread::sleep_for(absl::ToChronoMilliseconds(backoff));
      backoff = std::min(backoff * 2, absl::Seconds(5));
    }
  }
}

}  // namespace lowbit::server
