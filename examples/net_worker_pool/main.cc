// net_worker_pool: a queue group of worker processes, over the network.
//
//   producer process --jobs--> heraldd --> [queue group "workers":
//                                          worker process 0 .. W-1]
//   worker process w --results.<w>--> heraldd --> coordinator on "results.>"
//
// One command starts it all: the coordinator starts heraldd (a data
// dependency, //tools/heraldd), then re-executes this binary as W worker
// processes (--role=worker) and one producer process (--role=producer), all
// connected to heraldd through the SDK over tcp. Each job goes to exactly one
// worker with room in its queue, or is dropped once, on the group (reason
// group_full). The coordinator collects the results itself, then checks that
// every job was processed exactly once: no id reported by two workers, the
// processed count equals the jobs the group handed out (from heraldd's stats),
// and every result came back from the worker that did it. It exits 1 if not.
//
//   bazel run //examples/net_worker_pool -- --workers=3 --duration=5s
#include <signal.h>
#include <unistd.h>

#include <cerrno>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "examples/common/accounting.h"
#include "examples/net_orders/child_process.h"
#include "sdk/client.h"

ABSL_FLAG(std::string, role, "coordinator",
          "coordinator (starts everything), producer or worker.");
ABSL_FLAG(absl::Duration, duration, absl::Seconds(3),
          "How long the producer publishes jobs.");
ABSL_FLAG(int, workers, 4, "Worker processes in the queue group.");
ABSL_FLAG(int, rate, 4000, "Jobs per second.");
ABSL_FLAG(absl::Duration, job_work, absl::Milliseconds(1),
          "Simulated work per job.");
ABSL_FLAG(std::string, connect, "",
          "Producer and worker: heraldd's SDK endpoint (set by the "
          "coordinator).");
ABSL_FLAG(int, worker, 0, "Worker: its number.");

namespace {

using ::herald::examples::Checks;
using ::herald::examples::Failures;
using ::herald::examples::Verdict;

using herald::examples::ChildProcess;
using herald::examples::FieldNumber;
using herald::examples::FieldValue;

constexpr absl::string_view kGroup = "workers";
// Generous: sanitizer builds on a loaded 2-core machine are slow, and a
// passing run returns as soon as what it waits for happens.
constexpr absl::Duration kStepTimeout = absl::Seconds(60);

// Waits for the coordinator: reads stdin until end of file.
void WaitForStdinEnd() {
  char chunk[256];
  while (true) {
    const ssize_t n = read(STDIN_FILENO, chunk, sizeof(chunk));
    if (n < 0 && errno == EINTR) continue;
    if (n <= 0) return;
  }
}

// One line on stdout, flushed at once: the coordinator reads it.
template <typename... Args>
void Report(const absl::FormatSpec<Args...>& format, const Args&... args) {
  std::fputs(absl::StrCat(absl::StrFormat(format, args...), "\n").c_str(),
             stdout);
  std::fflush(stdout);
}

absl::StatusOr<std::unique_ptr<herald::Client>> Connect(
    absl::string_view url, absl::string_view name) {
  herald::ClientOptions options;
  options.name = std::string(name);
  absl::StatusOr<std::unique_ptr<herald::Client>> client =
      herald::Client::Connect(url, options);
  if (!client.ok()) {
    return absl::Status(client.status().code(),
                        absl::StrCat(name, ": connect to \"", url,
                                     "\": ", client.status().message()));
  }
  return client;
}

// ----------------------------------------------------------------- producer

// [START produce]
// The producer process: job ids 0, 1, 2, ... at --rate until the
// coordinator closes our stdin; then it flushes (the broker has processed
// every job) and reports `producer published=.. acked=.. dropped=..`.
int RunProducer() {
  absl::StatusOr<std::unique_ptr<herald::Client>> client =
      Connect(absl::GetFlag(FLAGS_connect), "producer");
  if (!client.ok()) {
    absl::FPrintF(stderr, "error: %s\n", client.status().ToString());
    return 1;
  }
  herald::PublisherOptions options;
  options.buffer_wait = absl::Seconds(5);  // Wait for room, do not refuse.
  absl::StatusOr<herald::Publisher> publisher =
      (*client)->CreatePublisher(options);
  if (!publisher.ok()) {
    absl::FPrintF(stderr, "error: producer: create publisher: %s\n",
                  publisher.status().ToString());
    return 1;
  }
  Report("ready");
  Failures failures;
  const int rate = absl::GetFlag(FLAGS_rate);
  std::jthread producer([&](std::stop_token stop) {
    const absl::Duration period = absl::Seconds(1) / rate;
    const absl::Time start = absl::Now();
    for (int64_t id = 0; !stop.stop_requested(); ++id) {
      if (absl::Status s = publisher->Publish("jobs", absl::StrCat(id));
          !s.ok()) {
        failures.Add("producer: publish to \"jobs\"", s);
        return;
      }
      // Pacing to the rate (not synchronization).
      const absl::Duration ahead = start + (id + 1) * period - absl::Now();
      if (ahead > absl::ZeroDuration()) absl::SleepFor(ahead);
    }
  });
  WaitForStdinEnd();
  producer.request_stop();
  producer.join();
  if (absl::Status s = (*client)->Close(absl::Now() + kStepTimeout); !s.ok()) {
    failures.Add("producer: close", s);  // Close() flushes first.
  }
  const herald::ClientStats stats = (*client)->Stats();
  Report("producer published=%d acked=%d dropped=%d", stats.published,
         stats.publish_acked, stats.publish_dropped());
  return failures.count() > 0 ? 1 : 0;
}
// [END produce]

// ------------------------------------------------------------------- worker

// [START worker]
// A worker process: one member of the queue group. It processes each job it
// is given, publishes the result on results.<w>, and when the coordinator
// closes our stdin reports the ids it processed and its final totals.
int RunWorker() {
  const int w = absl::GetFlag(FLAGS_worker);
  const std::string name = absl::StrCat("worker-", w);
  absl::StatusOr<std::unique_ptr<herald::Client>> client =
      Connect(absl::GetFlag(FLAGS_connect), name);
  if (!client.ok()) {
    absl::FPrintF(stderr, "error: %s\n", client.status().ToString());
    return 1;
  }
  herald::SubscriptionOptions options;
  options.queue_group = std::string(kGroup);
  options.queue_capacity = 16;  // Small: a busy worker is skipped.
  absl::StatusOr<herald::Subscriber> jobs =
      (*client)->Subscribe("jobs", options);
  if (!jobs.ok()) {
    absl::FPrintF(stderr, "error: %s: subscribe to \"jobs\": %s\n", name,
                  jobs.status().ToString());
    return 1;
  }
  herald::PublisherOptions publisher_options;
  publisher_options.buffer_wait = absl::Seconds(5);
  absl::StatusOr<herald::Publisher> results =
      (*client)->CreatePublisher(publisher_options);
  if (!results.ok()) {
    absl::FPrintF(stderr, "error: %s: create publisher: %s\n", name,
                  results.status().ToString());
    return 1;
  }
  Report("ready");

  Failures failures;
  std::vector<int64_t> processed;  // Written by `worker`, read after join.
  const std::string topic = absl::StrCat("results.", w);
  const absl::Duration work = absl::GetFlag(FLAGS_job_work);
  std::jthread worker([&](std::stop_token stop) {
    while (true) {
      absl::StatusOr<herald::Received> job =
          jobs->Receive(absl::InfiniteFuture(), stop);
      if (absl::IsCancelled(job.status())) return;
      if (!job.ok()) {
        failures.Add(absl::StrCat(name, ": receive"), job.status());
        return;
      }
      int64_t id = 0;
      if (!absl::SimpleAtoi(job->payload(), &id)) {
        failures.Add(name, absl::InvalidArgumentError(
                               absl::StrCat("job \"", job->payload(), "\"")));
        return;
      }
      if (work > absl::ZeroDuration()) absl::SleepFor(work);  // The job.
      processed.push_back(id);
      if (absl::Status s = results->Publish(topic, job->payload()); !s.ok()) {
        failures.Add(absl::StrCat(name, ": publish to \"", topic, "\""), s);
        return;
      }
    }
  });
  WaitForStdinEnd();
  worker.request_stop();
  worker.join();
  absl::StatusOr<herald::SubscriptionTotals> t = jobs->Close();
  if (!t.ok()) failures.Add(absl::StrCat(name, ": close"), t.status());
  if (absl::Status s = (*client)->Close(absl::Now() + kStepTimeout); !s.ok()) {
    failures.Add(absl::StrCat(name, ": close client"), s);
  }
  const herald::SubscriptionTotals totals =
      t.ok() ? *t : herald::SubscriptionTotals{};
  Report(
      "worker w=%d matched=%d delivered=%d dropped=%d abandoned=%d "
      "results=%d ids=%s",
      w, totals.matched, totals.delivered, totals.dropped(), totals.abandoned,
      (*client)->Stats().publish_acked, absl::StrJoin(processed, ","));
  return failures.count() > 0 ? 1 : 0;
}
// [END worker]

// -------------------------------------------------------------- coordinator

int RunCoordinator() {
  signal(SIGPIPE, SIG_IGN);  // A child that died: its stdin write fails.
  const absl::Duration duration = absl::GetFlag(FLAGS_duration);
  const int workers = absl::GetFlag(FLAGS_workers);
  const int rate = absl::GetFlag(FLAGS_rate);
  if (duration <= absl::ZeroDuration() || workers <= 0 || rate <= 0) {
    absl::FPrintF(stderr,
                  "error: --duration, --workers and --rate must be > 0\n");
    return 1;
  }
  Failures failures;
  Checks checks;

  std::string endpoint;
  absl::StatusOr<ChildProcess> daemon =
      herald::examples::StartHeraldd({}, absl::Now() + kStepTimeout, &endpoint);
  if (!daemon.ok()) {
    absl::FPrintF(stderr, "error: start heraldd: %s\n",
                  daemon.status().ToString());
    return 1;
  }
  // [START collect]
  // The coordinator collects the results itself: one subscription on
  // "results.>", deep enough that no result is dropped.
  absl::StatusOr<std::unique_ptr<herald::Client>> client =
      Connect(endpoint, "coordinator");
  if (!client.ok()) {
    absl::FPrintF(stderr, "error: %s\n", client.status().ToString());
    return 1;
  }
  herald::SubscriptionOptions collector_options;
  collector_options.queue_capacity = 1 << 20;
  absl::StatusOr<herald::Subscriber> collector =
      (*client)->Subscribe("results.>", collector_options);
  if (!collector.ok()) {
    absl::FPrintF(stderr, "error: collector: subscribe to \"results.>\": %s\n",
                  collector.status().ToString());
    return 1;
  }
  // [END collect]

  const std::string self = herald::examples::SelfPath();
  herald::examples::ChildOptions child_options;
  child_options.stdin_pipe = true;
  auto start =
      [&](std::vector<std::string> argv) -> absl::StatusOr<ChildProcess> {
    argv.insert(argv.begin(), self);
    argv.push_back(absl::StrCat("--connect=", endpoint));
    return herald::examples::StartReady(argv, child_options,
                                        absl::Now() + kStepTimeout);
  };
  std::vector<ChildProcess> pool;
  for (int w = 0; w < workers; ++w) {
    absl::StatusOr<ChildProcess> child = start(
        {"--role=worker", absl::StrCat("--worker=", w),
         absl::StrCat("--job_work=",
                      absl::FormatDuration(absl::GetFlag(FLAGS_job_work)))});
    if (!child.ok()) {
      absl::FPrintF(stderr, "error: start worker %d: %s\n", w,
                    child.status().ToString());
      return 1;
    }
    pool.push_back(*std::move(child));
  }
  absl::StatusOr<ChildProcess> producer =
      start({"--role=producer", absl::StrCat("--rate=", rate)});
  if (!producer.ok()) {
    absl::FPrintF(stderr, "error: start producer: %s\n",
                  producer.status().ToString());
    return 1;
  }
  absl::PrintF(
      "net_worker_pool: heraldd (pid %d) at %s; a producer process, %d jobs/s "
      "for %s, to queue group \"%s\" of %d worker processes (%s per job, "
      "queue 16 each)\n",
      static_cast<int>(daemon->pid()), endpoint, rate,
      absl::FormatDuration(duration), kGroup, workers,
      absl::FormatDuration(absl::GetFlag(FLAGS_job_work)));

  // The run itself (not synchronization): the producer publishes meanwhile.
  absl::SleepFor(duration);

  // [START drain]
  // Stop the producer: once it exits, heraldd has processed every job. Its
  // stats then say how many jobs the group handed to a member (while the
  // workers are still members) and how many it dropped (group_full).
  producer->CloseStdin();
  absl::StatusOr<int> producer_code =
      producer->Wait(absl::Now() + kStepTimeout);
  std::optional<std::string> producer_report;
  for (const std::string& line : producer->lines()) {
    if (absl::StartsWith(line, "producer ")) producer_report = line;
  }
  if (!producer_code.ok() || *producer_code != 0 || !producer_report) {
    absl::FPrintF(stderr, "error: the producer failed\n");
    return 1;
  }
  const uint64_t published = FieldNumber(*producer_report, "acked").value_or(0);
  absl::StatusOr<herald::v1::BrokerStats> stats =
      (*client)->BrokerStats(absl::Now() + kStepTimeout);
  if (!stats.ok()) {
    absl::FPrintF(stderr, "error: broker stats: %s\n",
                  stats.status().ToString());
    return 1;
  }
  const herald::v1::GroupStats* group = nullptr;
  for (const herald::v1::GroupStats& g : stats->groups()) {
    if (g.pattern() == "jobs" && g.queue_group() == kGroup) group = &g;
  }
  const uint64_t group_matched = group != nullptr ? group->matched() : 0;
  const uint64_t group_taken = group != nullptr ? group->taken() : 0;
  const uint64_t group_full =
      group != nullptr ? group->dropped().group_full() : 0;
  // Every job handed out comes back as a result: collect them (each one
  // "results.<w>" with the job id), with a deadline.
  std::vector<std::pair<int, int64_t>> collected;  // (worker, job id)
  uint64_t malformed = 0;
  const absl::Time collect_deadline = absl::Now() + kStepTimeout;
  while (collected.size() + malformed < group_taken) {
    absl::StatusOr<herald::Received> r = collector->Receive(collect_deadline);
    if (!r.ok()) {
      failures.Add(absl::StrCat("collector: after ", collected.size(), " of ",
                                group_taken, " results"),
                   r.status());
      break;
    }
    const std::vector<absl::string_view> topic =
        absl::StrSplit(r->topic(), '.');
    int w = 0;
    int64_t id = 0;
    if (topic.size() != 2 || !absl::SimpleAtoi(topic[1], &w) ||
        !absl::SimpleAtoi(r->payload(), &id)) {
      ++malformed;
      continue;
    }
    collected.emplace_back(w, id);
  }
  // Then the workers report what they processed, and heraldd stops.
  std::vector<std::string> worker_reports;
  for (ChildProcess& p : pool) p.CloseStdin();
  for (ChildProcess& p : pool) {
    absl::StatusOr<int> code = p.Wait(absl::Now() + kStepTimeout);
    if (!code.ok() || *code != 0) {
      failures.Add("worker", code.ok() ? absl::InternalError(
                                             absl::StrCat("exit code ", *code))
                                       : code.status());
    }
    for (const std::string& line : p.lines()) {
      if (absl::StartsWith(line, "worker ")) worker_reports.push_back(line);
    }
  }
  absl::StatusOr<herald::SubscriptionTotals> collector_totals =
      collector->Close();
  if (!collector_totals.ok()) {
    failures.Add("collector: close", collector_totals.status());
  }
  if (absl::Status s = (*client)->Close(absl::Now() + kStepTimeout); !s.ok()) {
    failures.Add("coordinator: close client", s);
  }
  const absl::StatusOr<uint64_t> daemon_published =
      herald::examples::StopHeraldd(*daemon, absl::Now() + kStepTimeout);
  if (!daemon_published.ok()) {
    failures.Add("stop heraldd", daemon_published.status());
  }
  // [END drain]

  // [START exactly_once]
  // Exactly once: no job id reported by two workers, every job the group
  // handed out processed, and each result from the worker that did it.
  absl::flat_hash_map<int64_t, int> processed_by;
  uint64_t processed = 0;
  uint64_t duplicates = 0;
  uint64_t out_of_range = 0;
  uint64_t results = 0;
  absl::PrintF("\n%-9s %9s %9s %8s %10s\n", "worker", "processed", "matched",
               "dropped", "abandoned");
  for (const std::string& report : worker_reports) {
    const int w = static_cast<int>(FieldNumber(report, "w").value_or(0));
    const std::string ids = FieldValue(report, "ids").value_or("");
    uint64_t count = 0;
    for (absl::string_view s : absl::StrSplit(ids, ',', absl::SkipEmpty())) {
      int64_t id = 0;
      ++count;
      if (!absl::SimpleAtoi(s, &id) || id < 0 ||
          static_cast<uint64_t>(id) >= published) {
        ++out_of_range;
      } else if (!processed_by.emplace(id, w).second) {
        ++duplicates;
      }
    }
    processed += count;
    results += FieldNumber(report, "results").value_or(0);
    const std::string name = absl::StrCat("worker-", w);
    checks.Equal(name + ": delivered == processed",
                 FieldNumber(report, "delivered").value_or(0), count);
    checks.Equal(name + ": matched == delivered + dropped + abandoned",
                 FieldNumber(report, "matched").value_or(0),
                 FieldNumber(report, "delivered").value_or(0) +
                     FieldNumber(report, "dropped").value_or(0) +
                     FieldNumber(report, "abandoned").value_or(0));
    absl::PrintF("%-9s %9d %9d %8d %10d\n", name, count,
                 FieldNumber(report, "matched").value_or(0),
                 FieldNumber(report, "dropped").value_or(0),
                 FieldNumber(report, "abandoned").value_or(0));
  }
  uint64_t wrong_worker = 0;
  uint64_t result_duplicates = 0;
  absl::flat_hash_map<int64_t, int> result_from;
  for (const auto& [w, id] : collected) {
    if (!result_from.emplace(id, w).second) ++result_duplicates;
    auto it = processed_by.find(id);
    if (it == processed_by.end() || it->second != w) ++wrong_worker;
  }
  checks.Equal("worker reports", worker_reports.size(), workers);
  checks.Equal("queue group found in heraldd's stats", group != nullptr, true);
  checks.Equal("jobs published == group matched", published, group_matched);
  checks.Equal("group matched == taken + group_full", group_matched,
               group_taken + group_full);
  checks.Equal("jobs processed twice", duplicates, 0);
  checks.Equal("job ids never published", out_of_range, 0);
  checks.Equal("jobs processed == jobs the group handed out", processed,
               group_taken);
  checks.Equal("results collected == jobs processed", collected.size(),
               processed);
  checks.Equal("results published by the workers == jobs processed", results,
               processed);
  checks.Equal("results collected twice", result_duplicates, 0);
  checks.Equal("results not from the worker that processed the job",
               wrong_worker, 0);
  checks.Equal("malformed results", malformed, 0);
  checks.Equal("heraldd's final published == jobs + results",
               daemon_published.value_or(0), published + results);
  // [END exactly_once]

  absl::PrintF(
      "\n%d jobs published; the group handed %d to workers and dropped %d "
      "(group_full); %d processed, %d results collected\n",
      published, group_taken, group_full, processed, collected.size());
  return Verdict(
      failures, checks,
      "every job was processed exactly once or dropped by the group");
}

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const std::string role = absl::GetFlag(FLAGS_role);
  if (role == "coordinator") return RunCoordinator();
  if (role == "producer") return RunProducer();
  if (role == "worker") return RunWorker();
  absl::FPrintF(stderr,
                "error: --role must be coordinator, producer or worker\n");
  return 1;
}
