// worker_pool: a queue group sharing jobs between workers.
//
//   producer --jobs--> [queue group "workers": worker 0 .. W-1]
//   worker w --results.<w>--> collector on "results.>"
//
// W workers subscribe to `jobs` in the queue group "workers": each job goes to
// exactly one member whose queue has room (a full member is skipped; when all
// are full the job is dropped once, on the group, reason group_full). Each
// worker publishes its result on `results.<w>`, and a collector on
// `results.>` fans them back in. The example checks that every job was
// processed exactly once, that the group's and the members' counters add up to
// the jobs published, and that every result reached the collector, and exits
// 1 otherwise.
#include <cstdint>
#include <cstdio>
#include <memory>
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
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_split.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "broker/broker.h"
#include "examples/common/accounting.h"

ABSL_FLAG(absl::Duration, duration, absl::Seconds(3),
          "How long the producer publishes jobs.");
ABSL_FLAG(int, workers, 4, "Members of the queue group.");
ABSL_FLAG(int, rate, 4000, "Jobs per second.");
ABSL_FLAG(absl::Duration, job_work, absl::Milliseconds(1),
          "Simulated work per job.");

namespace {

using ::herald::examples::Checks;
using ::herald::examples::Failures;
using ::herald::examples::Verdict;

using herald::DropReason;

constexpr absl::string_view kGroup = "workers";

// One worker, or the collector. The vectors and counters are written by its
// thread only and read by main() after joining it.
struct Consumer {
  std::string name;
  herald::Subscription sub;
  std::vector<int64_t> jobs;       // Job ids processed (worker) or collected.
  std::vector<int> from;           // Collector: the worker of each result.
  uint64_t results_published = 0;  // Worker: result publishes that were OK.
  uint64_t results_taken = 0;      // Worker: results the collector queued.
  uint64_t bad = 0;                // Collector: malformed results.
  herald::SubscriptionTotals totals;  // From Close().
};

// Takes messages until `upstream_done` is requested and the queue is empty:
// Receive() returns kCancelled only when nothing is queued, and the rest is
// taken with TryReceive() (nothing more can arrive once upstream is done).
// `handle` returns false to stop on an error.
template <typename Handle>
void ConsumeUntilDrained(std::stop_token upstream_done, Consumer& c,
                         Failures& failures, Handle handle) {
  while (true) {
    absl::StatusOr<herald::Delivery> d =
        c.sub.Receive(absl::InfiniteFuture(), upstream_done);
    if (absl::IsCancelled(d.status())) break;
    if (!d.ok()) {
      failures.Add(absl::StrCat(c.name, ": receive"), d.status());
      return;
    }
    if (!handle(*d)) return;
  }
  while (true) {
    absl::StatusOr<herald::Delivery> d = c.sub.TryReceive();
    if (absl::IsDeadlineExceeded(d.status())) return;  // Drained.
    if (!d.ok()) {
      failures.Add(absl::StrCat(c.name, ": drain"), d.status());
      return;
    }
    if (!handle(*d)) return;
  }
}

// [START worker]
// A worker: processes each job it is given and publishes the result on its
// own topic, results.<w>.
void RunWorker(std::stop_token upstream_done, herald::Broker& broker, int w,
               absl::Duration work, Consumer& worker, Failures& failures) {
  const std::string results = absl::StrCat("results.", w);
  ConsumeUntilDrained(
      upstream_done, worker, failures, [&](const herald::Delivery& job) {
        int64_t id;
        if (!absl::SimpleAtoi(job.payload(), &id)) {
          failures.Add(worker.name, absl::InvalidArgumentError(absl::StrCat(
                                        "job \"", job.payload(), "\"")));
          return false;
        }
        if (work > absl::ZeroDuration()) absl::SleepFor(work);  // The job.
        worker.jobs.push_back(id);
        absl::StatusOr<herald::PublishResult> result =
            broker.Publish(results, job.payload());
        if (!result.ok()) {
          failures.Add(
              absl::StrCat(worker.name, ": publish to \"", results, "\""),
              result.status());
          return false;
        }
        ++worker.results_published;
        worker.results_taken += result->taken;
        return true;
      });
}
// [END worker]

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const absl::Duration duration = absl::GetFlag(FLAGS_duration);
  const int workers = absl::GetFlag(FLAGS_workers);
  const int rate = absl::GetFlag(FLAGS_rate);
  if (duration <= absl::ZeroDuration() || workers <= 0 || rate <= 0) {
    absl::FPrintF(stderr,
                  "error: --duration, --workers and --rate must be > 0\n");
    return 1;
  }

  absl::StatusOr<std::unique_ptr<herald::Broker>> created =
      herald::Broker::Create();
  if (!created.ok()) {
    absl::FPrintF(stderr, "error: create broker: %s\n",
                  created.status().ToString());
    return 1;
  }
  std::unique_ptr<herald::Broker> broker = *std::move(created);

  // [START subscribe]
  // The workers: same pattern, same queue group. Small queues, so a busy
  // worker is skipped and the job goes to one with room.
  std::vector<std::unique_ptr<Consumer>> pool;
  for (int w = 0; w < workers; ++w) {
    herald::SubscriptionOptions options;
    options.queue_group = std::string(kGroup);
    options.queue_capacity = 16;
    options.name = absl::StrCat("worker-", w);
    absl::StatusOr<herald::Subscription> sub =
        broker->Subscribe("jobs", options);
    if (!sub.ok()) {
      absl::FPrintF(stderr, "error: worker %d: subscribe to \"jobs\": %s\n", w,
                    sub.status().ToString());
      return 1;
    }
    pool.push_back(std::make_unique<Consumer>());
    pool.back()->name = options.name;
    pool.back()->sub = *std::move(sub);
  }
  // The collector must not lose a result: kBlock, with room to spare.
  herald::SubscriptionOptions collector_options;
  collector_options.queue_capacity = 4096;
  collector_options.overflow = herald::OverflowPolicy::kBlock;
  collector_options.block_timeout = absl::Seconds(1);
  collector_options.name = "collector";
  absl::StatusOr<herald::Subscription> collector_sub =
      broker->Subscribe("results.>", collector_options);
  if (!collector_sub.ok()) {
    absl::FPrintF(stderr, "error: collector: subscribe to \"results.>\": %s\n",
                  collector_sub.status().ToString());
    return 1;
  }
  // [END subscribe]
  Consumer collector;
  collector.name = "collector";
  collector.sub = *std::move(collector_sub);

  absl::PrintF(
      "worker_pool: %d jobs/s for %s to queue group \"%s\" of %d workers "
      "(%s per job, queue 16 each)\n",
      rate, absl::FormatDuration(duration), kGroup, workers,
      absl::FormatDuration(absl::GetFlag(FLAGS_job_work)));

  Failures failures;
  std::jthread collector_thread([&](std::stop_token upstream_done) {
    ConsumeUntilDrained(
        upstream_done, collector, failures, [&](const herald::Delivery& d) {
          const std::vector<absl::string_view> topic =
              absl::StrSplit(d.topic(), '.');
          int w;
          int64_t id;
          if (topic.size() != 2 || !absl::SimpleAtoi(topic[1], &w) ||
              !absl::SimpleAtoi(d.payload(), &id)) {
            ++collector.bad;
            return true;
          }
          collector.jobs.push_back(id);
          collector.from.push_back(w);
          return true;
        });
  });
  std::vector<std::jthread> worker_threads;
  for (int w = 0; w < workers; ++w) {
    worker_threads.emplace_back(RunWorker, std::ref(*broker), w,
                                absl::GetFlag(FLAGS_job_work),
                                std::ref(*pool[w]), std::ref(failures));
  }

  // [START produce]
  // The producer: job ids 0, 1, 2, ... A job published to a group matches
  // once (PublishResult.matched == 1): taken by one member, or dropped with
  // reason group_full.
  uint64_t published = 0;
  uint64_t matched = 0;
  uint64_t taken = 0;
  uint64_t group_full = 0;
  std::jthread producer([&](std::stop_token stop) {
    const absl::Duration period = absl::Seconds(1) / rate;
    const absl::Time start = absl::Now();
    for (int64_t id = 0; !stop.stop_requested(); ++id) {
      absl::StatusOr<herald::PublishResult> result =
          broker->Publish("jobs", absl::StrCat(id));
      if (!result.ok()) {
        failures.Add("producer: publish to \"jobs\"", result.status());
        return;
      }
      ++published;
      matched += result->matched;
      taken += result->taken;
      group_full += result->dropped(DropReason::kGroupFull);
      // Pacing to the rate (not synchronization).
      const absl::Duration ahead = start + (id + 1) * period - absl::Now();
      if (ahead > absl::ZeroDuration()) absl::SleepFor(ahead);
    }
  });
  // [END produce]

  // The run itself (not synchronization): the producer publishes meanwhile.
  absl::SleepFor(duration);

  // [START drain]
  // Drain in order: producer, then the workers (each takes what is queued),
  // then the collector. Then read the group's counters, while the workers
  // are still members: once a member closes, it leaves the group.
  producer.request_stop();
  producer.join();
  for (std::jthread& t : worker_threads) t.request_stop();
  for (std::jthread& t : worker_threads) t.join();
  collector_thread.request_stop();
  collector_thread.join();
  const herald::v1::BrokerStats stats = broker->Stats();
  // [END drain]
  for (auto& c : pool) {
    absl::StatusOr<herald::SubscriptionTotals> totals = c->sub.Close();
    if (!totals.ok()) {
      failures.Add(absl::StrCat(c->name, ": close"), totals.status());
      continue;
    }
    c->totals = *totals;
  }
  absl::StatusOr<herald::SubscriptionTotals> collector_totals =
      collector.sub.Close();
  if (!collector_totals.ok()) {
    failures.Add("collector: close", collector_totals.status());
  } else {
    collector.totals = *collector_totals;
  }
  const herald::v1::BrokerStats final_stats =
      broker->Shutdown(absl::ZeroDuration());

  Checks checks;
  // [START group_accounting]
  // The group, from the stats read before the workers closed: every job
  // published matched the group once, and went to one member or was dropped.
  const herald::v1::GroupStats* group = nullptr;
  for (const herald::v1::GroupStats& g : stats.groups()) {
    if (g.pattern() == "jobs" && g.queue_group() == kGroup) group = &g;
  }
  uint64_t members_matched = 0;
  for (const herald::v1::SubscriptionStats& s : stats.subscriptions()) {
    if (s.queue_group() == kGroup) members_matched += s.matched();
  }
  checks.Equal("queue group found in the stats", group != nullptr, true);
  const uint64_t group_matched = group != nullptr ? group->matched() : 0;
  const uint64_t group_dropped =
      group != nullptr ? group->dropped().group_full() : 0;
  checks.Equal("jobs published == group matched", published, group_matched);
  checks.Equal("jobs published == members' matched + group_full", published,
               members_matched + group_dropped);
  checks.Equal("sum of PublishResult.matched == jobs published", matched,
               published);
  checks.Equal("sum of PublishResult.taken == members' matched", taken,
               members_matched);
  checks.Equal("PublishResult group_full drops == group's", group_full,
               group_dropped);
  // [END group_accounting]

  // [START exactly_once]
  // Each worker, from its final totals; and exactly once overall: no job id
  // processed twice, and every job published processed or dropped (group).
  std::vector<int> processed_by(published, -1);
  uint64_t processed = 0;
  uint64_t duplicates = 0;
  uint64_t out_of_range = 0;
  uint64_t results = 0;
  uint64_t results_taken = 0;
  uint64_t workers_matched = 0;
  for (int w = 0; w < workers; ++w) {
    const Consumer& c = *pool[w];
    const herald::SubscriptionTotals& t = c.totals;
    checks.Equal(c.name + ": matched == delivered + dropped + abandoned",
                 t.matched, t.delivered + t.dropped() + t.abandoned);
    checks.Equal(c.name + ": delivered == processed", t.delivered,
                 c.jobs.size());
    workers_matched += t.matched;
    processed += c.jobs.size();
    results += c.results_published;
    results_taken += c.results_taken;
    for (int64_t id : c.jobs) {
      if (id < 0 || static_cast<uint64_t>(id) >= published) {
        ++out_of_range;
      } else if (processed_by[id] >= 0) {
        ++duplicates;
      } else {
        processed_by[id] = w;
      }
    }
  }
  checks.Equal("workers' final matched == members' matched in the stats",
               workers_matched, members_matched);
  checks.Equal("jobs processed twice", duplicates, 0);
  checks.Equal("job ids never published", out_of_range, 0);
  checks.Equal("jobs dropped or left in the workers' queues",
               workers_matched - processed, 0);
  checks.Equal("jobs published == processed + group_full", published,
               processed + group_dropped);
  // [END exactly_once]

  // The collector: every result arrived once, from the worker that did it.
  const herald::SubscriptionTotals& ct = collector.totals;
  absl::flat_hash_map<int64_t, int> collected;
  uint64_t result_duplicates = 0;
  uint64_t wrong_worker = 0;
  for (size_t i = 0; i < collector.jobs.size(); ++i) {
    const int64_t id = collector.jobs[i];
    if (!collected.emplace(id, collector.from[i]).second) ++result_duplicates;
    if (id < 0 || static_cast<uint64_t>(id) >= published ||
        processed_by[id] != collector.from[i]) {
      ++wrong_worker;
    }
  }
  checks.Equal("results published == collector matched", results, ct.matched);
  checks.Equal("sum of results' PublishResult.taken == collector delivered",
               results_taken, ct.delivered);
  checks.Equal("collector: matched == delivered + dropped + abandoned",
               ct.matched, ct.delivered + ct.dropped() + ct.abandoned);
  checks.Equal("collector: delivered == collected", ct.delivered,
               collector.jobs.size() + collector.bad);
  checks.Equal("collector: malformed results", collector.bad, 0);
  checks.Equal("collector: results received twice", result_duplicates, 0);
  checks.Equal("collector: results not from the worker that did the job",
               wrong_worker, 0);
  checks.Equal("collector: results lost", ct.dropped() + ct.abandoned, 0);
  checks.Equal("publishes counted by the broker", final_stats.published(),
               published + results);

  absl::PrintF("\n%-9s %8s %9s %6s %8s\n", "worker", "matched", "processed",
               "share", "results");
  for (int w = 0; w < workers; ++w) {
    const Consumer& c = *pool[w];
    absl::PrintF("%-9s %8d %9d %5.1f%% %8d\n", c.name, c.totals.matched,
                 c.jobs.size(),
                 processed > 0 ? 100.0 * c.jobs.size() / processed : 0.0,
                 c.results_published);
  }
  absl::PrintF(
      "\ngroup \"%s\" on \"jobs\": %d published = %d to members + %d "
      "group_full\n",
      kGroup, published, members_matched, group_dropped);
  absl::PrintF("exactly once: %d jobs processed, %d duplicates\n", processed,
               duplicates);
  absl::PrintF(
      "collector on \"results.>\": %d results, %d duplicates, %d lost\n",
      collector.jobs.size(), result_duplicates, ct.dropped() + ct.abandoned);

  return Verdict(failures, checks);
}
