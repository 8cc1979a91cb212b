// orders: Herald's demo. Two storefront threads publish order, payment and
// notification events; three services subscribe to them with wildcards, each
// with its own queue size and overflow policy, and one of them is too slow on
// purpose. After --duration the example shuts the broker down gracefully,
// prints what every service received and lost (and why), and checks that
// every message is accounted for: it exits 1 if the totals do not add up.
//
//   bazel run //examples/orders -- --duration=5s --rate=2000
#include <array>
#include <cstdint>
#include <cstdio>
#include <memory>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "broker/broker.h"
#include "examples/common/accounting.h"

ABSL_FLAG(absl::Duration, duration, absl::Seconds(3),
          "How long the storefronts publish before the graceful shutdown.");
ABSL_FLAG(int, rate, 1000,
          "Events per second per storefront; each event is three messages.");
ABSL_FLAG(absl::Duration, slow_work, absl::Milliseconds(1),
          "Simulated work per message of the (slow) dashboard service.");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(1),
          "How long Shutdown() lets the services drain their queues.");

namespace {

using ::herald::examples::Checks;
using ::herald::examples::Failures;
using ::herald::examples::Verdict;

using herald::DropReason;

constexpr std::array<DropReason, 5> kReasons = {
    DropReason::kQueueFull, DropReason::kEvictedOldest,
    DropReason::kBlockTimeout, DropReason::kClosed, DropReason::kShutdown};

// What one storefront's publishes did, summed over its PublishResults.
struct PublishTally {
  uint64_t published = 0;
  uint64_t matched = 0;
  uint64_t taken = 0;
  uint64_t evicted = 0;
  herald::DropCounts dropped{};

  void Add(const herald::PublishResult& r) {
    ++published;
    matched += r.matched;
    taken += r.taken;
    evicted += r.evicted;
    for (size_t i = 0; i < dropped.size(); ++i) {
      dropped[i] += r.dropped_by_reason[i];
    }
  }
  void Add(const PublishTally& t) {
    published += t.published;
    matched += t.matched;
    taken += t.taken;
    evicted += t.evicted;
    for (size_t i = 0; i < dropped.size(); ++i) dropped[i] += t.dropped[i];
  }
};

// One subscription of a service, and what its consumer thread counted.
// `received` and `missed` are written by the consumer thread only and read by
// main() after joining it.
struct Stream {
  Stream(std::string service, std::string pattern, herald::Subscription sub)
      : service(std::move(service)),
        pattern(std::move(pattern)),
        subscription(std::move(sub)) {}

  const std::string service;
  const std::string pattern;
  herald::Subscription subscription;
  uint64_t received = 0;
  uint64_t missed = 0;                // Sum of Delivery::missed().
  herald::SubscriptionTotals totals;  // From Close(), after the shutdown.
};

// A subscribing service: its patterns share one set of options.
struct Service {
  std::string name;
  std::vector<std::string> patterns;
  herald::SubscriptionOptions options;
  absl::Duration work;  // Simulated work per message.
  std::vector<std::unique_ptr<Stream>> streams;
};

// [START publish]
// A storefront: `rate` times a second an order is created, paid, and the
// customer notified. A full queue is not an error of Publish(): it is a
// counted drop in the PublishResult, which the tally adds up.
void RunStorefront(std::stop_token stop, herald::Broker& broker,
                   const std::string& region, int rate, PublishTally& tally,
                   Failures& failures) {
  static constexpr std::array<absl::string_view, 3> kChannels = {"email", "sms",
                                                                 "push"};
  const herald::Headers headers = {{"content-type", "application/json"}};
  const absl::Duration period = absl::Seconds(1) / rate;
  const absl::Time start = absl::Now();
  for (int64_t event = 0; !stop.stop_requested(); ++event) {
    const std::string order = absl::StrCat(region, "-", event);
    const std::pair<std::string, std::string> messages[] = {
        {absl::StrCat("orders.", region, ".created"),
         absl::StrFormat(R"({"order":"%s","cents":%d})", order,
                         100 + event % 900)},
        {absl::StrCat("payments.", region, ".captured"),
         absl::StrFormat(R"({"order":"%s","method":"card"})", order)},
        {absl::StrCat("notifications.", kChannels[event % kChannels.size()]),
         absl::StrFormat(R"({"order":"%s","text":"thank you"})", order)},
    };
    for (const auto& [topic, payload] : messages) {
      absl::StatusOr<herald::PublishResult> result =
          broker.Publish(topic, payload, headers);
      if (!result.ok()) {
        failures.Add(absl::StrCat("publish to \"", topic, "\""),
                     result.status());
        return;
      }
      tally.Add(*result);
    }
    // Pacing to the rate (not synchronization): sleep until the next event.
    const absl::Duration ahead = start + (event + 1) * period - absl::Now();
    if (ahead > absl::ZeroDuration()) absl::SleepFor(ahead);
  }
}
// [END publish]

// [START receive]
// One consumer thread per subscription: takes messages until the broker ends
// the stream (kOutOfRange once Shutdown() has run and the queue is drained).
// `stop` is requested only if main() leaves early.
void Consume(std::stop_token stop, Stream& stream, absl::Duration work,
             Failures& failures) {
  while (true) {
    absl::StatusOr<herald::Delivery> delivery =
        stream.subscription.Receive(absl::InfiniteFuture(), stop);
    if (absl::IsOutOfRange(delivery.status())) return;  // End of stream.
    if (!delivery.ok()) {
      failures.Add(
          absl::StrCat(stream.service, ": receive on \"", stream.pattern, "\""),
          delivery.status());
      return;
    }
    ++stream.received;
    stream.missed += delivery->missed();  // Dropped since the last delivery.
    if (work > absl::ZeroDuration()) absl::SleepFor(work);  // Slow service.
  }
}
// [END receive]

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const absl::Duration duration = absl::GetFlag(FLAGS_duration);
  const int rate = absl::GetFlag(FLAGS_rate);
  if (duration <= absl::ZeroDuration() || rate <= 0) {
    absl::FPrintF(stderr, "error: --duration and --rate must be > 0\n");
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
  // Fulfillment must see every order and payment: a deep drop-newest queue.
  herald::SubscriptionOptions fulfillment;
  fulfillment.queue_capacity = 4096;
  fulfillment.overflow = herald::OverflowPolicy::kDropNewest;
  // The ledger holds a publisher back (up to 50ms) rather than lose a message
  // to a full queue; past that the message counts as dropped (block_timeout).
  herald::SubscriptionOptions ledger;
  ledger.queue_capacity = 256;
  ledger.overflow = herald::OverflowPolicy::kBlock;
  ledger.block_timeout = absl::Milliseconds(50);
  // The dashboard shows the latest events and is slow: 8 slots, and a new
  // message evicts the oldest queued one (evicted_oldest).
  herald::SubscriptionOptions dashboard;
  dashboard.queue_capacity = 8;
  dashboard.overflow = herald::OverflowPolicy::kDropOldest;

  std::vector<Service> services;
  services.push_back({"fulfillment",
                      {"orders.*.created", "payments.*.captured"},
                      fulfillment,
                      absl::ZeroDuration(),
                      {}});
  services.push_back({"ledger",
                      {"payments.>", "notifications.>"},
                      ledger,
                      absl::ZeroDuration(),
                      {}});
  services.push_back({"dashboard",
                      {"orders.>", "notifications.*"},
                      dashboard,
                      absl::GetFlag(FLAGS_slow_work),
                      {}});
  for (Service& service : services) {
    for (const std::string& pattern : service.patterns) {
      herald::SubscriptionOptions options = service.options;
      options.name = service.name;  // Shown in the broker's stats.
      absl::StatusOr<herald::Subscription> sub =
          broker->Subscribe(pattern, options);
      if (!sub.ok()) {
        absl::FPrintF(stderr, "error: %s: subscribe to \"%s\": %s\n",
                      service.name, pattern, sub.status().ToString());
        return 1;
      }
      service.streams.push_back(
          std::make_unique<Stream>(service.name, pattern, *std::move(sub)));
    }
  }
  // [END subscribe]

  absl::PrintF("orders: 2 storefronts x %d events/s for %s; 3 services:\n",
               rate, absl::FormatDuration(duration));
  for (const Service& service : services) {
    const herald::SubscriptionOptions& o = service.options;
    absl::PrintF("  %-12s %-40s %s, capacity %d%s\n", service.name,
                 absl::StrJoin(service.patterns, " + "),
                 herald::OverflowPolicyName(*o.overflow), *o.queue_capacity,
                 service.work > absl::ZeroDuration()
                     ? absl::StrCat(", ", absl::FormatDuration(service.work),
                                    " of work per message")
                     : "");
  }

  Failures failures;
  std::vector<std::jthread> consumers;
  for (Service& service : services) {
    for (auto& stream : service.streams) {
      consumers.emplace_back(Consume, std::ref(*stream), service.work,
                             std::ref(failures));
    }
  }
  const std::array<std::string, 2> regions = {"eu", "us"};
  std::array<PublishTally, 2> tallies;
  std::vector<std::jthread> storefronts;
  for (size_t i = 0; i < regions.size(); ++i) {
    storefronts.emplace_back(RunStorefront, std::ref(*broker),
                             std::cref(regions[i]), rate, std::ref(tallies[i]),
                             std::ref(failures));
  }

  // The run itself (not synchronization): the storefronts publish meanwhile.
  absl::SleepFor(duration);

  // [START shutdown]
  // Graceful shutdown: stop the storefronts and wait for them; Shutdown()
  // lets the services drain their queues until the deadline, then ends every
  // stream (what is still queued counts as dropped, reason shutdown), so each
  // consumer's Receive() returns kOutOfRange and its thread ends.
  for (std::jthread& t : storefronts) t.request_stop();
  for (std::jthread& t : storefronts) t.join();
  const herald::v1::BrokerStats stats =
      broker->Shutdown(absl::GetFlag(FLAGS_drain_timeout));
  for (std::jthread& t : consumers) t.join();
  // Close() returns each subscription's final totals.
  for (Service& service : services) {
    for (auto& stream : service.streams) {
      absl::StatusOr<herald::SubscriptionTotals> totals =
          stream->subscription.Close();
      if (!totals.ok()) {
        failures.Add(
            absl::StrCat(service.name, ": close \"", stream->pattern, "\""),
            totals.status());
        continue;
      }
      stream->totals = *totals;
    }
  }
  // [END shutdown]

  PublishTally published;
  for (const PublishTally& t : tallies) published.Add(t);
  absl::PrintF(
      "\npublished %d messages (eu %d, us %d); the broker counted %d, %d of "
      "them unmatched\n\n",
      published.published, tallies[0].published, tallies[1].published,
      stats.published(), stats.published_unmatched());

  // [START accounting]
  // For every subscription, from its final totals:
  //   matched == delivered + dropped (all reasons) + abandoned
  //   delivered == what its consumer thread received
  //   sum of Delivery::missed() <= drops before the end of the stream
  // and over all publishes, each PublishResult term equals the subscriptions'
  // sum: matched; taken (delivered, evicted later, or dropped at shutdown);
  // drops by reason at publish time; evictions.
  Checks checks;
  herald::SubscriptionTotals all;
  for (const Service& service : services) {
    for (const auto& stream : service.streams) {
      const herald::SubscriptionTotals& t = stream->totals;
      const std::string name =
          absl::StrCat(service.name, " \"", stream->pattern, "\"");
      checks.Equal(absl::StrCat(name,
                                ": matched == delivered + dropped + "
                                "abandoned"),
                   t.matched, t.delivered + t.dropped() + t.abandoned);
      checks.Equal(absl::StrCat(name, ": delivered == received"), t.delivered,
                   stream->received);
      checks.AtMost(absl::StrCat(name, ": missed <= dropped before the end"),
                    stream->missed,
                    t.dropped() - t.dropped(DropReason::kShutdown));
      all.matched += t.matched;
      all.delivered += t.delivered;
      all.abandoned += t.abandoned;
      for (size_t i = 0; i < all.dropped_by_reason.size(); ++i) {
        all.dropped_by_reason[i] += t.dropped_by_reason[i];
      }
    }
  }
  checks.Equal("publishes counted by the broker", stats.published(),
               published.published);
  checks.Equal("sum of PublishResult.matched == subscriptions' matched",
               published.matched, all.matched);
  checks.Equal(
      "sum of PublishResult.taken == delivered + evicted + shutdown "
      "+ abandoned",
      published.taken,
      all.delivered + all.dropped(DropReason::kEvictedOldest) +
          all.dropped(DropReason::kShutdown) + all.abandoned);
  checks.Equal("sum of PublishResult.evicted == evicted_oldest",
               published.evicted, all.dropped(DropReason::kEvictedOldest));
  for (DropReason reason : {DropReason::kQueueFull, DropReason::kBlockTimeout,
                            DropReason::kClosed}) {
    checks.Equal(absl::StrCat("PublishResult drops == subscriptions' drops, ",
                              herald::DropReasonName(reason)),
                 published.dropped[static_cast<size_t>(reason)],
                 all.dropped(reason));
  }
  // [END accounting]

  absl::PrintF("%-12s %11s %9s %9s %10s %14s %13s %6s %8s %7s %9s\n", "service",
               "policy", "received", "matched", "queue_full", "evicted_oldest",
               "block_timeout", "closed", "shutdown", "missed", "abandoned");
  for (const Service& service : services) {
    herald::SubscriptionTotals sum;
    uint64_t received = 0;
    uint64_t missed = 0;
    for (const auto& stream : service.streams) {
      received += stream->received;
      missed += stream->missed;
      sum.matched += stream->totals.matched;
      sum.abandoned += stream->totals.abandoned;
      for (size_t i = 0; i < sum.dropped_by_reason.size(); ++i) {
        sum.dropped_by_reason[i] += stream->totals.dropped_by_reason[i];
      }
    }
    std::string row =
        absl::StrFormat("%-12s %11s %9d %9d", service.name,
                        herald::OverflowPolicyName(*service.options.overflow),
                        received, sum.matched);
    const std::array<int, 5> widths = {10, 14, 13, 6, 8};
    for (size_t i = 0; i < kReasons.size(); ++i) {
      absl::StrAppendFormat(&row, " %*d", widths[i], sum.dropped(kReasons[i]));
    }
    absl::StrAppendFormat(&row, " %7d %9d", missed, sum.abandoned);
    absl::PrintF("%s\n", row);
  }

  return Verdict(
      failures, checks,
      "every matched message was delivered or dropped with a reason");
}
