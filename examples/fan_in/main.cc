// fan_in: many publishers, one callback subscriber.
//
// N sensor threads each publish readings on their own topic,
// `sensors.<id>.reading`, with a per-sensor sequence number in a header. One
// callback subscription on `sensors.>` receives them all on the broker's
// dispatcher pool. The example checks that each sensor's readings arrive in
// the order it published them (sequence numbers only increase; drops may
// leave gaps, never reorder) and that the totals add up: every reading
// published was delivered to the callback or dropped with a reason. It exits 1
// otherwise.
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
          "How long the sensors publish before the shutdown.");
ABSL_FLAG(int, sensors, 4, "Publisher threads, one topic each.");
ABSL_FLAG(int, rate, 1000, "Readings per second per sensor.");
ABSL_FLAG(absl::Duration, callback_work, absl::Microseconds(200),
          "Simulated work per reading in the callback; make it larger to see "
          "more drops.");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(1),
          "How long Shutdown() lets the callback drain its queue.");

namespace {

using ::herald::examples::Checks;
using ::herald::examples::Failures;
using ::herald::examples::Verdict;

using herald::DropReason;

// PublishResults summed over one sensor's publishes.
struct PublishTally {
  uint64_t published = 0;
  uint64_t matched = 0;
  uint64_t taken = 0;
  herald::DropCounts dropped{};

  void Add(const herald::PublishResult& r) {
    ++published;
    matched += r.matched;
    taken += r.taken;
    for (size_t i = 0; i < dropped.size(); ++i) {
      dropped[i] += r.dropped_by_reason[i];
    }
  }
};

// [START receiver]
// What the callback saw, per sensor. The broker calls OnReading() on its
// dispatcher threads, one call at a time and in order, but not always on the
// same thread, and main() reads the results: a mutex guards them.
// Thread-safe.
class Receiver {
 public:
  Receiver(int sensors, absl::Duration work, Failures& failures)
      : sensors_(sensors),
        work_(work),
        failures_(failures),
        last_seq_(sensors, -1),
        received_(sensors, 0),
        out_of_order_(sensors, 0) {}

  // The callback. Topic `sensors.<id>.reading`, header `seq`.
  void OnReading(const herald::Delivery& d) {
    const std::vector<absl::string_view> tokens =
        absl::StrSplit(d.topic(), '.');
    absl::string_view seq_text;
    int sensor;
    int64_t seq;
    if (tokens.size() != 3 || !absl::SimpleAtoi(tokens[1], &sensor) ||
        sensor < 0 || sensor >= sensors_ ||
        !d.headers().Find("seq", &seq_text) ||
        !absl::SimpleAtoi(seq_text, &seq)) {
      failures_.Add("callback", absl::InvalidArgumentError(absl::StrCat(
                                    "reading on \"", d.topic(),
                                    "\": no sensor id or seq header")));
      return;
    }
    if (work_ > absl::ZeroDuration()) absl::SleepFor(work_);  // Slow work.
    absl::MutexLock lock(&mu_);
    ++calls_;
    missed_ += d.missed();  // Dropped (all sensors) since the last reading.
    ++received_[sensor];
    if (seq <= last_seq_[sensor]) ++out_of_order_[sensor];
    last_seq_[sensor] = seq;
  }
  // [END receiver]

  uint64_t calls() const {
    absl::MutexLock lock(&mu_);
    return calls_;
  }
  uint64_t missed() const {
    absl::MutexLock lock(&mu_);
    return missed_;
  }
  uint64_t received(int sensor) const {
    absl::MutexLock lock(&mu_);
    return received_[sensor];
  }
  int64_t last_seq(int sensor) const {
    absl::MutexLock lock(&mu_);
    return last_seq_[sensor];
  }
  uint64_t out_of_order(int sensor) const {
    absl::MutexLock lock(&mu_);
    return out_of_order_[sensor];
  }

 private:
  const int sensors_;
  const absl::Duration work_;
  Failures& failures_;
  mutable absl::Mutex mu_;
  uint64_t calls_ ABSL_GUARDED_BY(mu_) = 0;
  uint64_t missed_ ABSL_GUARDED_BY(mu_) = 0;
  std::vector<int64_t> last_seq_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> received_ ABSL_GUARDED_BY(mu_);
  std::vector<uint64_t> out_of_order_ ABSL_GUARDED_BY(mu_);
};

// [START sensor]
// One sensor: a TopicHandle for its own topic, a reading `rate` times a
// second, each carrying the sensor's next sequence number.
void RunSensor(std::stop_token stop, herald::TopicHandle topic, int rate,
               PublishTally& tally, Failures& failures) {
  const absl::Duration period = absl::Seconds(1) / rate;
  const absl::Time start = absl::Now();
  for (int64_t seq = 0; !stop.stop_requested(); ++seq) {
    const std::string celsius = absl::StrCat(18 + seq % 70 / 10.0);
    absl::StatusOr<herald::PublishResult> result =
        topic.Publish(celsius, {{"seq", absl::StrCat(seq)}});
    if (!result.ok()) {
      failures.Add(absl::StrCat("publish to \"", topic.name(), "\""),
                   result.status());
      return;
    }
    tally.Add(*result);
    // Pacing to the rate (not synchronization).
    const absl::Duration ahead = start + (seq + 1) * period - absl::Now();
    if (ahead > absl::ZeroDuration()) absl::SleepFor(ahead);
  }
}
// [END sensor]

}  // namespace

int main(int argc, char** argv) {
  absl::ParseCommandLine(argc, argv);
  const absl::Duration duration = absl::GetFlag(FLAGS_duration);
  const int sensors = absl::GetFlag(FLAGS_sensors);
  const int rate = absl::GetFlag(FLAGS_rate);
  if (duration <= absl::ZeroDuration() || sensors <= 0 || rate <= 0) {
    absl::FPrintF(stderr,
                  "error: --duration, --sensors and --rate must be > 0\n");
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

  Failures failures;
  Receiver receiver(sensors, absl::GetFlag(FLAGS_callback_work), failures);
  // [START subscribe]
  herald::SubscriptionOptions options;
  options.queue_capacity = 256;
  options.name = "collector";
  absl::StatusOr<herald::Subscription> sub = broker->Subscribe(
      "sensors.>", options,
      [&](const herald::Delivery& d) { receiver.OnReading(d); });
  if (!sub.ok()) {
    absl::FPrintF(stderr, "error: subscribe to \"sensors.>\": %s\n",
                  sub.status().ToString());
    return 1;
  }
  // [END subscribe]

  std::vector<herald::TopicHandle> topics;
  for (int i = 0; i < sensors; ++i) {
    const std::string name = absl::StrCat("sensors.", i, ".reading");
    absl::StatusOr<herald::TopicHandle> topic = broker->Topic(name);
    if (!topic.ok()) {
      absl::FPrintF(stderr, "error: topic \"%s\": %s\n", name,
                    topic.status().ToString());
      return 1;
    }
    topics.push_back(*std::move(topic));
  }

  absl::PrintF(
      "fan_in: %d sensors x %d readings/s for %s -> one callback on "
      "\"sensors.>\" (queue %d, %s of work per reading)\n",
      sensors, rate, absl::FormatDuration(duration), *options.queue_capacity,
      absl::FormatDuration(absl::GetFlag(FLAGS_callback_work)));

  std::vector<PublishTally> tallies(sensors);
  std::vector<std::jthread> threads;
  for (int i = 0; i < sensors; ++i) {
    threads.emplace_back(RunSensor, std::move(topics[i]), rate,
                         std::ref(tallies[i]), std::ref(failures));
  }

  // The run itself (not synchronization): the sensors publish meanwhile.
  absl::SleepFor(duration);

  // [START shutdown]
  // Stop and join the sensors; Shutdown() lets the callback drain the queue
  // until the deadline and waits for a running callback before it returns.
  for (std::jthread& t : threads) t.request_stop();
  for (std::jthread& t : threads) t.join();
  const herald::v1::BrokerStats stats =
      broker->Shutdown(absl::GetFlag(FLAGS_drain_timeout));
  absl::StatusOr<herald::SubscriptionTotals> closed = sub->Close();
  if (!closed.ok()) {
    absl::FPrintF(stderr, "error: close: %s\n", closed.status().ToString());
    return 1;
  }
  const herald::SubscriptionTotals& totals = *closed;
  // [END shutdown]

  absl::PrintF("\n%-6s %-20s %9s %9s %6s %9s %8s\n", "sensor", "topic",
               "published", "received", "lost", "last seq", "in order");
  PublishTally published;
  uint64_t received = 0;
  for (int i = 0; i < sensors; ++i) {
    const PublishTally& t = tallies[i];
    published.published += t.published;
    published.matched += t.matched;
    published.taken += t.taken;
    for (size_t r = 0; r < t.dropped.size(); ++r) {
      published.dropped[r] += t.dropped[r];
    }
    received += receiver.received(i);
    absl::PrintF("%-6d %-20s %9d %9d %6d %9d %8s\n", i,
                 absl::StrCat("sensors.", i, ".reading"), t.published,
                 receiver.received(i), t.published - receiver.received(i),
                 receiver.last_seq(i),
                 receiver.out_of_order(i) == 0 ? "yes" : "NO");
  }
  absl::PrintF(
      "\ncallback: matched %d, delivered %d, dropped %d (queue_full %d, "
      "shutdown %d), missed %d, abandoned %d\n",
      totals.matched, totals.delivered, totals.dropped(),
      totals.dropped(DropReason::kQueueFull),
      totals.dropped(DropReason::kShutdown), receiver.missed(),
      totals.abandoned);

  // [START accounting]
  Checks checks;
  for (int i = 0; i < sensors; ++i) {
    checks.Equal(absl::StrCat("sensor ", i, ": readings out of order"),
                 receiver.out_of_order(i), 0);
    checks.AtMost(absl::StrCat("sensor ", i, ": received <= published"),
                  receiver.received(i), tallies[i].published);
  }
  checks.Equal("publishes counted by the broker", stats.published(),
               published.published);
  checks.Equal("sum of PublishResult.matched == subscription's matched",
               published.matched, totals.matched);
  checks.Equal("published == matched (one subscriber)", published.published,
               totals.matched);
  checks.Equal("matched == delivered + dropped + abandoned", totals.matched,
               totals.delivered + totals.dropped() + totals.abandoned);
  checks.Equal("delivered == callback calls", totals.delivered,
               receiver.calls());
  checks.Equal("callback calls == sum over sensors received", receiver.calls(),
               received);
  checks.Equal("sum of PublishResult.taken == delivered + shutdown + abandoned",
               published.taken,
               totals.delivered + totals.dropped(DropReason::kShutdown) +
                   totals.abandoned);
  checks.Equal("PublishResult queue_full drops == subscription's",
               published.dropped[static_cast<size_t>(DropReason::kQueueFull)],
               totals.dropped(DropReason::kQueueFull));
  checks.AtMost("missed <= dropped before the end", receiver.missed(),
                totals.dropped() - totals.dropped(DropReason::kShutdown));
  // [END accounting]

  return Verdict(failures, checks, "every sensor's readings arrived in order");
}
