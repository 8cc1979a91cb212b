// Instructions per message of the in-process publish and receive paths,
// Herald against the ring reference of inproc_bench, on one thread so that
// the counts do not depend on scheduling. Run it under callgrind with
// bench/inproc_cost.sh, which collects each phase on its own (callgrind's
// --toggle-collect) and divides by the messages it handled.
//
//   inproc_cost herald SUBSCRIBERS   Broker::Publish by name to SUBSCRIBERS
//                                    drop-newest subscriptions, each drained
//                                    with Subscription::ReceiveBatch
//   inproc_cost ring SUBSCRIBERS     the reference: Message::Create, one
//                                    MpscRing push per subscriber, a batch pop
//
// Phases, each a function of its own: *PublishPhase (per publish),
// *ReceivePhase and ClearPhase (per delivery; the ring's receive includes
// releasing the message, Herald's happens when the batch is cleared).
#include <atomic>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <stop_token>
#include <string>
#include <vector>

#include "absl/base/attributes.h"
#include "absl/strings/numbers.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "broker/broker.h"
#include "broker/internal/mpsc_ring.h"
#include "broker/message.h"

namespace {

using herald::Message;
using Ring = herald::internal::MpscRing<Message*>;

constexpr char kTopic[] = "bench.inproc";
constexpr int kRounds = 2000;
constexpr int kPerRound = 256;  // Messages published, then received, per round.
constexpr size_t kCapacity = 65536;

void Check(bool ok, const char* what) {
  if (!ok) {
    std::fprintf(stderr, "inproc_cost: %s\n", what);
    std::abort();
  }
}

ABSL_ATTRIBUTE_NOINLINE void HeraldPublishPhase(herald::Broker& broker,
                                                const std::string& payload) {
  for (int i = 0; i < kPerRound; ++i) {
    Check(broker.Publish(kTopic, payload).ok(), "publish failed");
  }
}

ABSL_ATTRIBUTE_NOINLINE uint64_t HeraldReceivePhase(
    herald::Subscription& sub, std::vector<herald::Delivery>* batch,
    const std::stop_token& stop) {
  Check(sub.ReceiveBatch(kPerRound, absl::InfiniteFuture(), batch, stop).ok(),
        "receive failed");
  uint64_t sum = 0;
  for (const herald::Delivery& d : *batch) {
    sum += d.payload().size() +
           static_cast<uint64_t>(d.message()->publish_time_unix_ns());
  }
  return sum;
}

ABSL_ATTRIBUTE_NOINLINE void ClearPhase(std::vector<herald::Delivery>* batch) {
  batch->clear();
}

uint64_t RunHerald(int subscribers) {
  auto broker = herald::Broker::Create();
  Check(broker.ok(), "broker");
  herald::SubscriptionOptions options;
  options.queue_capacity = kCapacity;
  options.overflow = herald::OverflowPolicy::kDropNewest;
  std::vector<herald::Subscription> subs;
  for (int i = 0; i < subscribers; ++i) {
    auto sub = (*broker)->Subscribe(kTopic, options);
    Check(sub.ok(), "subscribe");
    subs.push_back(std::move(*sub));
  }
  std::vector<std::vector<herald::Delivery>> batches(subscribers);
  const std::string payload(64, 'x');
  const std::stop_source stop;
  uint64_t sum = 0;
  for (int round = 0; round < kRounds; ++round) {
    HeraldPublishPhase(**broker, payload);
    for (int i = 0; i < subscribers; ++i) {
      ClearPhase(&batches[i]);
      sum += HeraldReceivePhase(subs[i], &batches[i], stop.get_token());
    }
  }
  return sum;
}

ABSL_ATTRIBUTE_NOINLINE void RingPublishPhase(
    std::vector<std::unique_ptr<Ring>>& rings,
    const std::atomic<uint32_t>& waiters, const std::string& payload) {
  static const herald::Headers kNoHeaders;
  const auto targets = static_cast<uint32_t>(rings.size());
  for (int i = 0; i < kPerRound; ++i) {
    Message* m =
        Message::Create(kTopic, payload, kNoHeaders, absl::Now(), targets);
    uint32_t unused = 0;
    for (std::unique_ptr<Ring>& ring : rings) {
      uint64_t position;
      if (!ring->TryPush(m, &position)) {
        ++unused;
      } else {
        // inproc_bench's check for a parked consumer (never one here).
        Check(waiters.load(std::memory_order_seq_cst) == 0, "waiters");
      }
    }
    if (unused > 0) m->Unref(unused);
  }
}

ABSL_ATTRIBUTE_NOINLINE uint64_t RingReceivePhase(Ring& ring, absl::Mutex& mu) {
  Message* batch[kPerRound];
  size_t n = 0;
  {
    absl::MutexLock lock(&mu);
    uint64_t position;
    while (n < kPerRound && ring.TryPop(&batch[n], &position)) ++n;
  }
  uint64_t sum = 0;
  for (size_t i = 0; i < n; ++i) {
    sum += batch[i]->payload().size() +
           static_cast<uint64_t>(batch[i]->publish_time_unix_ns());
    batch[i]->Unref();
  }
  return sum;
}

uint64_t RunRing(int subscribers) {
  std::vector<std::unique_ptr<Ring>> rings;
  for (int i = 0; i < subscribers; ++i) {
    rings.push_back(std::make_unique<Ring>(kCapacity));
  }
  std::atomic<uint32_t> waiters{0};
  absl::Mutex mu;
  const std::string payload(64, 'x');
  uint64_t sum = 0;
  for (int round = 0; round < kRounds; ++round) {
    RingPublishPhase(rings, waiters, payload);
    for (int i = 0; i < subscribers; ++i)
      sum += RingReceivePhase(*rings[i], mu);
  }
  return sum;
}

}  // namespace

int main(int argc, char** argv) {
  int subscribers = 0;
  const absl::string_view subject = argc == 3 ? argv[1] : "";
  if ((subject != "herald" && subject != "ring") ||
      !absl::SimpleAtoi(argv[2], &subscribers) || subscribers < 1 ||
      subscribers > 64) {
    std::fprintf(stderr, "usage: inproc_cost herald|ring SUBSCRIBERS(1-64)\n");
    return 2;
  }
  const uint64_t sum =
      subject == "herald" ? RunHerald(subscribers) : RunRing(subscribers);
  std::printf("%d messages x %d subscribers (checksum %llu)\n",
              kRounds * kPerRound, subscribers,
              static_cast<unsigned long long>(sum));
  return 0;
}
