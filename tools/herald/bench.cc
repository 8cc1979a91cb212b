// herald bench: publishers x subscribers through the broker, over the
// network, in the manner of `nats bench`.
//
// Each publisher and each subscriber has a client (a connection) of its own.
// The subscribers subscribe first (a subscription is live when Subscribe()
// returns), then the publishers publish --msgs messages in all to one unique
// topic and flush. Latency is measured from a publish timestamp in the first
// eight payload bytes (this host's wall clock: publishers and subscribers run
// in this one process) or, for payloads under eight bytes, from the broker's
// publish time. The run ends when every subscriber has received or been told
// of (missed) every message, or once the broker has handed every message it
// still held for them to the network and the subscribers have received all of
// those, or after --drain-timeout.
#include <algorithm>
#include <array>
#include <atomic>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <memory>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/random/random.h"
#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "broker/internal/thread_identity.h"
#include "broker/options.h"
#include "broker/topic.h"
#include "schemas/stats.pb.h"
#include "sdk/client.h"
#include "sdk/stats.h"
#include "tools/herald/commands.h"
#include "tools/herald/common.h"
#include "tools/herald/flags.h"
#include "tools/herald/format.h"

namespace herald::cli {
namespace {

// Payloads at least this long carry the publish time (int64 ns, host order).
constexpr size_t kStampBytes = sizeof(int64_t);
// The most latency samples all subscribers keep together (8 bytes each);
// beyond, each keeps every n-th.
constexpr uint64_t kMaxSamples = uint64_t{1} << 23;

struct BenchConfig {
  uint64_t pubs = 1;
  uint64_t subs = 1;
  uint64_t msgs = 100000;
  uint64_t size = 128;
  double rate = 0;
  std::string topic;
  SubscriptionOptions sub_options;
  absl::Duration drain_timeout = absl::Seconds(10);
  absl::Duration progress_interval = absl::Seconds(1);
};

// Shared by the workers and the progress line. Relaxed: display only, and
// the final figures come from the joined workers' own results.
struct Progress {
  std::atomic<uint64_t> published{0};
  std::atomic<uint64_t> received{0};
  std::atomic<uint64_t> missed{0};
};

struct PubResult {
  uint64_t to_send = 0;
  absl::Time start;
  absl::Time end;  // After the final flush.
  absl::Status error;
  ClientStats stats;  // After Close().
};

struct SubResult {
  uint64_t received = 0;
  uint64_t missed = 0;
  uint64_t gaps = 0;
  absl::Time last;
  std::vector<int64_t> latencies_ns;
  absl::Status error;
  std::optional<SubscriptionTotals> totals;
  absl::Status close_error;
};

// Counts the subscribers that have finished (all messages received or
// missed, or an error), so the coordinator wakes as soon as they all have.
class DoneCounter {  // Thread-safe.
 public:
  void Add() {
    absl::MutexLock lock(&mu_);
    ++done_;
  }
  // Waits until `n` are done or `deadline`; returns whether they are.
  bool WaitFor(uint64_t n, absl::Time deadline) {
    absl::MutexLock lock(&mu_);
    auto all = [this, n]()
                   ABSL_EXCLUSIVE_LOCKS_REQUIRED(mu_) { return done_ >= n; };
    return mu_.AwaitWithDeadline(absl::Condition(&all), deadline);
  }

 private:
  absl::Mutex mu_;
  uint64_t done_ ABSL_GUARDED_BY(mu_) = 0;
};

void RunPublisher(Client& client, Publisher& publisher,
                  const BenchConfig& config, double rate, absl::Time start,
                  const std::stop_token& stop, Progress& progress,
                  PubResult* r) {
  internal::EnsureThreadIdentity();
  std::string payload(config.size, 'x');
  r->start = absl::Now();
  for (uint64_t i = 0; i < r->to_send; ++i) {
    if (stop.stop_requested()) break;
    if (rate > 0 &&
        !WaitUntil(start + absl::Seconds(static_cast<double>(i) / rate),
                   stop)) {
      break;
    }
    if (payload.size() >= kStampBytes) {
      const int64_t now = absl::GetCurrentTimeNanos();
      std::memcpy(payload.data(), &now, kStampBytes);
    }
    absl::Status s = publisher.Publish(config.topic, payload);
    if (s.ok()) {
      progress.published.fetch_add(1, std::memory_order_relaxed);
      continue;
    }
    // A full buffer past the wait is counted by the SDK: go on.
    if (absl::IsResourceExhausted(s) || absl::IsDeadlineExceeded(s)) continue;
    r->error = std::move(s);
    break;
  }
  absl::Status flushed = client.Flush(absl::Now() + config.drain_timeout);
  if (r->error.ok() && !flushed.ok()) r->error = std::move(flushed);
  r->end = absl::Now();
}

void RunSubscriber(Subscriber& sub, const BenchConfig& config,
                   const std::stop_token& stop, Progress& progress,
                   DoneCounter& done, SubResult* r) {
  internal::EnsureThreadIdentity();
  const uint64_t per_subscriber =
      std::max<uint64_t>(1, kMaxSamples / std::max<uint64_t>(1, config.subs));
  const uint64_t keep_every = config.msgs / per_subscriber + 1;  // >= 1
  r->latencies_ns.reserve(static_cast<size_t>(
      std::min(config.msgs / keep_every + 1, per_subscriber)));
  bool counted = false;
  while (true) {
    absl::StatusOr<Received> m = sub.Receive(absl::InfiniteFuture(), stop);
    if (!m.ok()) {
      if (!absl::IsCancelled(m.status())) r->error = m.status();
      break;
    }
    const int64_t now = absl::GetCurrentTimeNanos();
    int64_t sent = 0;
    if (config.size >= kStampBytes && m->payload().size() >= kStampBytes) {
      std::memcpy(&sent, m->payload().data(), kStampBytes);
    } else {
      sent = absl::ToUnixNanos(m->publish_time());
    }
    if (r->received % keep_every == 0) r->latencies_ns.push_back(now - sent);
    ++r->received;
    r->missed += m->missed();
    if (m->gap()) ++r->gaps;
    r->last = absl::Now();
    progress.received.fetch_add(1, std::memory_order_relaxed);
    progress.missed.fetch_add(m->missed(), std::memory_order_relaxed);
    if (!counted && r->received + r->missed >= config.msgs) {
      // Everything is accounted for; keep receiving (there should be
      // nothing more) until told to stop.
      counted = true;
      done.Add();
    }
  }
  if (!counted) done.Add();
}

// The percentile `q` (0..1) of sorted `v`, nearest rank.
int64_t Percentile(const std::vector<int64_t>& v, double q) {
  if (v.empty()) return 0;
  size_t rank =
      static_cast<size_t>(std::ceil(q * static_cast<double>(v.size())));
  rank = std::clamp<size_t>(rank, 1, v.size());
  return v[rank - 1];
}

std::string Rate(uint64_t n, absl::Duration d) {
  if (n == 0 || d <= absl::ZeroDuration()) return "0";
  return GroupDigits(static_cast<uint64_t>(
      std::llround(static_cast<double>(n) / absl::ToDoubleSeconds(d))));
}

std::string Megabytes(uint64_t n, uint64_t size, absl::Duration d) {
  if (n == 0 || d <= absl::ZeroDuration()) return "0.0";
  const double mb = static_cast<double>(n) * static_cast<double>(size) / 1e6 /
                    absl::ToDoubleSeconds(d);
  return mb < 10 ? absl::StrFormat("%.2f", mb) : absl::StrFormat("%.1f", mb);
}

// Latency cells for `samples` (sorted in place): p50, p99, p99.9.
std::vector<std::string> LatencyCells(std::vector<int64_t>& samples) {
  if (samples.empty()) return {"-", "-", "-"};
  std::sort(samples.begin(), samples.end());
  std::vector<std::string> cells;
  for (double q : {0.50, 0.99, 0.999}) {
    cells.push_back(ShortDuration(
        absl::Nanoseconds(std::max<int64_t>(0, Percentile(samples, q)))));
  }
  return cells;
}

std::string DropReasonsText(const DropCounts& counts) {
  std::vector<std::string> parts;
  for (size_t i = 0; i < counts.size(); ++i) {
    if (counts[i] != 0) {
      parts.push_back(absl::StrCat(DropReasonName(static_cast<DropReason>(i)),
                                   "=", counts[i]));
    }
  }
  return parts.empty() ? "none" : absl::StrJoin(parts, " ");
}

// Sums the broker's view of the bench subscriptions: what it still holds
// and what it has handed to the network.
struct BrokerView {
  uint64_t queued = 0;
  uint64_t delivered = 0;
  uint64_t subscriptions = 0;
};
BrokerView ViewOf(const v1::BrokerStats& stats, const std::string& topic) {
  BrokerView v;
  for (const v1::SubscriptionStats& s : stats.subscriptions()) {
    if (s.pattern() != topic || s.closed()) continue;
    ++v.subscriptions;
    v.queued += s.queued();
    v.delivered += s.delivered();
  }
  return v;
}

}  // namespace

int Bench(absl::Span<const std::string> args, const Io& io) {
  ConnectionFlags conn;
  BenchConfig config;
  FlagSet flags("bench");
  flags.Uint("pub", &config.pubs, "publishers (one connection each)", 1, 1024);
  flags.Uint("sub", &config.subs, "subscribers (one connection each)", 0, 1024);
  flags.Uint("msgs", &config.msgs, "messages published in all", 1);
  flags.Uint("size", &config.size,
             "payload bytes (>= 8 carries the publish time)", 0,
             uint64_t{1} << 30);
  flags.NonNegativeDouble("rate", &config.rate,
                          "messages a second, all publishers together "
                          "(0: as fast as possible)");
  flags.String("topic", &config.topic, "topic (default: bench.<random>)");
  AddCapacityFlag(flags, &config.sub_options.queue_capacity);
  AddPolicyFlag(flags, &config.sub_options.overflow);
  flags.PositiveDuration("drain-timeout", &config.drain_timeout,
                         "after publishing, how long to wait for the "
                         "subscribers (and for each publisher's flush)");
  flags.PositiveDuration("progress-interval", &config.progress_interval,
                         "progress line period, once a run lasts two periods");
  AddConnectionFlags(flags, &conn);

  std::vector<std::string> positional;
  bool help = false;
  if (absl::Status s = flags.Parse(args, &positional, &help); !s.ok()) {
    return UsageError(io, s.message());
  }
  if (help) {
    *io.out << "usage: herald bench [--pub N] [--sub M] [--msgs K] [--size B] "
               "[--rate R]\n\nflags:\n"
            << flags.Usage();
    return kExitOk;
  }
  if (!positional.empty()) {
    return UsageError(
        io, absl::StrCat("bench: unexpected argument \"", positional[0], "\""));
  }
  if (absl::Status s = CheckUrl("bench", conn.url); !s.ok()) {
    return UsageError(io, s.message());
  }
  if (config.topic.empty()) {
    absl::BitGen gen;
    config.topic = absl::StrFormat("bench.%016x", absl::Uniform<uint64_t>(gen));
  } else if (absl::Status s = ValidateTopic(config.topic); !s.ok()) {
    return UsageError(io, absl::StrCat("bench: --topic: ", s.message()));
  }

  // Connect everything first: subscribers, then publishers.
  std::vector<std::unique_ptr<Client>> sub_clients;
  std::vector<Subscriber> subscribers;
  for (uint64_t i = 0; i < config.subs; ++i) {
    auto client = ConnectClient(conn, absl::StrCat("herald bench sub ", i + 1));
    if (!client.ok()) return Fail(io, client.status());
    auto sub = (*client)->Subscribe(config.topic, config.sub_options);
    if (!sub.ok()) return Fail(io, sub.status());
    sub_clients.push_back(*std::move(client));
    subscribers.push_back(*std::move(sub));
  }
  std::vector<std::unique_ptr<Client>> pub_clients;
  std::vector<Publisher> publishers;
  PublisherOptions popts;
  // Back-pressure rather than refusals: a publisher waits for room in its
  // client's buffer (refusals past the wait are counted and reported).
  popts.buffer_wait = config.drain_timeout;
  for (uint64_t i = 0; i < config.pubs; ++i) {
    auto client = ConnectClient(conn, absl::StrCat("herald bench pub ", i + 1));
    if (!client.ok()) return Fail(io, client.status());
    auto pub = (*client)->CreatePublisher(popts);
    if (!pub.ok()) return Fail(io, pub.status());
    pub_clients.push_back(*std::move(client));
    publishers.push_back(*std::move(pub));
  }

  *io.out << "herald bench: " << config.pubs
          << (config.pubs == 1 ? " publisher x " : " publishers x ")
          << config.subs
          << (config.subs == 1 ? " subscriber, " : " subscribers, ")
          << GroupDigits(config.msgs) << " messages of " << config.size
          << " B on \"" << config.topic << "\" at " << conn.url << "\n";
  io.out->flush();

  Progress progress;
  DoneCounter subs_done;
  std::vector<PubResult> pub_results(config.pubs);
  std::vector<SubResult> sub_results(config.subs);
  std::stop_source stop_subs;
  // SIGINT/SIGTERM stop the subscribers too (publishers watch io.stop).
  std::stop_callback forward_stop(io.stop,
                                  [&stop_subs] { stop_subs.request_stop(); });

  const absl::Time start = absl::Now();
  std::vector<std::thread> sub_threads;
  for (uint64_t i = 0; i < config.subs; ++i) {
    sub_threads.emplace_back([&, i] {
      RunSubscriber(subscribers[i], config, stop_subs.get_token(), progress,
                    subs_done, &sub_results[i]);
    });
  }
  const double rate_each = config.rate / static_cast<double>(config.pubs);
  std::vector<std::thread> pub_threads;
  for (uint64_t i = 0; i < config.pubs; ++i) {
    pub_results[i].to_send =
        config.msgs / config.pubs + (i < config.msgs % config.pubs ? 1 : 0);
    pub_threads.emplace_back([&, i] {
      RunPublisher(*pub_clients[i], publishers[i], config, rate_each, start,
                   io.stop, progress, &pub_results[i]);
    });
  }

  // Progress, once the run has lasted two intervals.
  absl::Notification finished;
  std::thread progress_thread([&] {
    internal::EnsureThreadIdentity();
    uint64_t last_published = 0;
    absl::Time last = start;
    while (!finished.WaitForNotificationWithTimeout(config.progress_interval)) {
      const absl::Time now = absl::Now();
      if (now - start < 2 * config.progress_interval) continue;
      const uint64_t published =
          progress.published.load(std::memory_order_relaxed);
      *io.err
          << absl::StrFormat(
                 "bench %.1fs: published %s/%s (%s/s), received %s/%s, "
                 "missed %s",
                 absl::ToDoubleSeconds(now - start), GroupDigits(published),
                 GroupDigits(config.msgs),
                 Rate(published - last_published, now - last),
                 GroupDigits(progress.received.load(std::memory_order_relaxed)),
                 GroupDigits(config.msgs * config.subs),
                 GroupDigits(progress.missed.load(std::memory_order_relaxed)))
          << std::endl;
      last_published = published;
      last = now;
    }
  });

  for (std::thread& t : pub_threads) t.join();

  // Drain: until every subscriber has all messages, or the broker holds
  // none for them and they have received all it handed to the network.
  bool drained = config.subs == 0;
  uint64_t undelivered = 0;
  const absl::Time drain_deadline = absl::Now() + config.drain_timeout;
  while (!drained && !io.stop.stop_requested()) {
    if (subs_done.WaitFor(
            config.subs,
            std::min(drain_deadline, absl::Now() + absl::Milliseconds(50)))) {
      drained = true;
      break;
    }
    absl::StatusOr<v1::BrokerStats> stats =
        pub_clients[0]->BrokerStats(drain_deadline);
    if (stats.ok()) {
      const BrokerView view = ViewOf(*stats, config.topic);
      const uint64_t received =
          progress.received.load(std::memory_order_relaxed);
      undelivered = view.delivered > received ? view.delivered - received : 0;
      if (view.queued == 0 && received >= view.delivered) {
        drained = true;
        break;
      }
    }
    if (absl::Now() >= drain_deadline) break;
  }
  stop_subs.request_stop();
  for (std::thread& t : sub_threads) t.join();
  finished.Notify();
  progress_thread.join();

  for (size_t i = 0; i < subscribers.size(); ++i) {
    absl::StatusOr<SubscriptionTotals> totals = subscribers[i].Close();
    if (totals.ok()) {
      sub_results[i].totals = *totals;
    } else {
      sub_results[i].close_error = totals.status();
    }
  }
  for (auto& c : sub_clients) {
    c->Close(absl::Now() + absl::Seconds(1)).IgnoreError();  // Finished.
  }
  for (size_t i = 0; i < pub_clients.size(); ++i) {
    // Flushed already; Close() settles the SDK's counters.
    pub_clients[i]->Close(absl::Now() + absl::Seconds(1)).IgnoreError();
    pub_results[i].stats = pub_clients[i]->Stats();
  }

  // The table.
  // Without subscribers, only the publishing columns.
  std::vector<std::string> header = {"", "MSGS", "MSGS/S", "MB/S", "DROPPED"};
  std::vector<std::string> pub_tail;
  if (config.subs > 0) {
    header.insert(header.end(), {"MISSED", "P50", "P99", "P99.9"});
    pub_tail = {"-", "-", "-", "-"};
  }
  Table table(header);
  uint64_t pub_total = 0;
  uint64_t sdk_lost = 0;
  absl::Time pub_first = absl::InfiniteFuture();
  absl::Time pub_last = absl::InfinitePast();
  std::array<uint64_t, kPublishRefusalCount> refused_by_reason{};
  std::array<uint64_t, kPublishDropCount> dropped_by_reason{};
  for (size_t i = 0; i < pub_results.size(); ++i) {
    const PubResult& r = pub_results[i];
    uint64_t refused = 0;
    for (size_t k = 0; k < kPublishRefusalCount; ++k) {
      refused += r.stats.publish_refused[k];
      refused_by_reason[k] += r.stats.publish_refused[k];
    }
    for (size_t k = 0; k < kPublishDropCount; ++k) {
      dropped_by_reason[k] += r.stats.publish_dropped_by_reason[k];
    }
    const uint64_t lost = refused + r.stats.publish_dropped();
    sdk_lost += lost;
    pub_total += r.stats.publish_acked;
    pub_first = std::min(pub_first, r.start);
    pub_last = std::max(pub_last, r.end);
    std::vector<std::string> row = {
        absl::StrCat("pub ", i + 1), GroupDigits(r.stats.publish_acked),
        Rate(r.stats.publish_acked, r.end - r.start),
        Megabytes(r.stats.publish_acked, config.size, r.end - r.start),
        GroupDigits(lost)};
    row.insert(row.end(), pub_tail.begin(), pub_tail.end());
    table.AddRow(std::move(row));
  }
  uint64_t sub_total = 0;
  uint64_t missed_total = 0;
  uint64_t broker_dropped = 0;
  DropCounts drops{};
  absl::Time sub_last = start;
  std::vector<int64_t> all_samples;
  bool accounting_ok = true;
  for (size_t i = 0; i < sub_results.size(); ++i) {
    SubResult& r = sub_results[i];
    uint64_t dropped = 0;
    if (r.totals.has_value()) {
      const SubscriptionTotals& t = *r.totals;
      dropped = t.dropped();
      for (size_t k = 0; k < kDropReasonCount; ++k) {
        drops[k] += t.dropped_by_reason[k];
      }
      if (t.matched != t.delivered + t.dropped() + t.queued + t.abandoned) {
        accounting_ok = false;
      }
    }
    broker_dropped += dropped;
    sub_total += r.received;
    missed_total += r.missed;
    if (r.received > 0) sub_last = std::max(sub_last, r.last);
    all_samples.insert(all_samples.end(), r.latencies_ns.begin(),
                       r.latencies_ns.end());
    std::vector<std::string> row = {
        absl::StrCat("sub ", i + 1),
        GroupDigits(r.received),
        Rate(r.received, r.last - start),
        Megabytes(r.received, config.size, r.last - start),
        r.totals.has_value() ? GroupDigits(dropped) : "?",
        GroupDigits(r.missed)};
    for (std::string& cell : LatencyCells(r.latencies_ns)) {
      row.push_back(std::move(cell));
    }
    table.AddRow(std::move(row));
  }
  if (config.pubs > 1 || config.subs > 1) {
    std::vector<std::string> pub_row = {
        "pub all", GroupDigits(pub_total),
        Rate(pub_total, pub_last - pub_first),
        Megabytes(pub_total, config.size, pub_last - pub_first),
        GroupDigits(sdk_lost)};
    pub_row.insert(pub_row.end(), pub_tail.begin(), pub_tail.end());
    table.AddRow(std::move(pub_row));
    if (config.subs > 0) {
      std::vector<std::string> row = {
          "sub all",
          GroupDigits(sub_total),
          Rate(sub_total, sub_last - start),
          Megabytes(sub_total, config.size, sub_last - start),
          GroupDigits(broker_dropped),
          GroupDigits(missed_total)};
      for (std::string& cell : LatencyCells(all_samples)) {
        row.push_back(std::move(cell));
      }
      table.AddRow(std::move(row));
    }
  }
  *io.out << "\n" << table.Render() << "\n";

  const std::string refusals = [&] {
    std::vector<std::string> parts;
    for (size_t k = 0; k < kPublishRefusalCount; ++k) {
      if (refused_by_reason[k] == 0) continue;
      parts.push_back(
          absl::StrCat(PublishRefusalName(static_cast<PublishRefusal>(k)), "=",
                       refused_by_reason[k]));
    }
    for (size_t k = 0; k < kPublishDropCount; ++k) {
      if (dropped_by_reason[k] == 0) continue;
      parts.push_back(absl::StrCat(PublishDropName(static_cast<PublishDrop>(k)),
                                   "=", dropped_by_reason[k]));
    }
    return parts.empty() ? std::string("none") : absl::StrJoin(parts, " ");
  }();
  *io.out << "publisher losses (SDK): " << refusals << "\n";
  if (config.subs > 0) {
    *io.out << "subscriber drops (broker): " << DropReasonsText(drops) << "\n";
    *io.out << "latency: publish to receive, "
            << (config.size >= kStampBytes ? "from the publisher's clock"
                                           : "from the broker's publish time")
            << "\n";
    *io.out << "accounting: matched == delivered + dropped + queued + "
               "abandoned for every subscription: "
            << (accounting_ok ? "ok" : "MISMATCH") << "\n";
  }
  io.out->flush();

  // Errors, first one wins.
  for (const PubResult& r : pub_results) {
    if (!r.error.ok()) return Fail(io, r.error);
  }
  for (const SubResult& r : sub_results) {
    if (!r.error.ok()) return Fail(io, r.error);
    if (!r.close_error.ok()) return Fail(io, r.close_error);
  }
  if (io.stop.stop_requested()) return kExitOk;  // Interrupted: partial.
  if (!drained) {
    PrintError(io, absl::StrCat("bench: ", undelivered,
                                " messages the broker sent did not arrive "
                                "within --drain-timeout ",
                                absl::FormatDuration(config.drain_timeout)));
    return kExitFailure;
  }
  if (!accounting_ok) {
    PrintError(io, "bench: a subscription's totals do not add up");
    return kExitFailure;
  }
  return kExitOk;
}

}  // namespace herald::cli
