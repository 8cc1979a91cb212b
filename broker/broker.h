// Broker: Herald's embedded publish/subscribe broker.
//
// An application creates a Broker, publishes on topics (`orders.eu.created`)
// and subscribes with patterns (`orders.*`, `orders.>`), all through direct
// calls on its own threads. Each subscription has a bounded queue with an
// overflow policy; every message that is not delivered is counted with a
// reason, so that for every subscription
//   matched == delivered + dropped + queued (+ abandoned at close)
// holds exactly once nothing is in flight. See broker/options.h for the
// options and result types, broker/subscription.h for receiving, and
// docs/errors.md for the status codes.
//
//   auto broker = herald::Broker::Create().value();
//   auto sub = broker->Subscribe("orders.>").value();
//   broker->Publish("orders.eu.created", "{...}").IgnoreError();
//   auto delivery = sub.Receive(absl::Seconds(1));
#ifndef HERALD_BROKER_BROKER_H_
#define HERALD_BROKER_BROKER_H_

#include <functional>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "broker/delivery.h"
#include "broker/message.h"
#include "broker/options.h"
#include "broker/subscription.h"
#include "schemas/stats.pb.h"

namespace herald {

class Broker;

namespace internal {
class BrokerCore;
struct TopicEntry;
// Herald's own layers (the network server) reach the core through this.
BrokerCore& CoreOf(Broker& broker);
}  // namespace internal

// A handle on one topic, for repeated publishing without the topic lookup.
// It keeps the topic's registry entry alive. Move-only; thread-safe for
// concurrent Publish() calls.
class TopicHandle {
 public:
  TopicHandle() = default;
  TopicHandle(TopicHandle&& other) noexcept;
  TopicHandle& operator=(TopicHandle&& other) noexcept;
  ~TopicHandle();

  // As Broker::Publish() on this topic. kFailedPrecondition on an empty
  // (default or moved-from) handle.
  absl::StatusOr<PublishResult> Publish(absl::string_view payload,
                                        const Headers& headers = {});
  // The topic name (empty for an empty handle).
  const std::string& name() const;

 private:
  friend class internal::BrokerCore;
  TopicHandle(std::shared_ptr<internal::BrokerCore> core,
              internal::TopicEntry* entry);
  void Reset();

  std::shared_ptr<internal::BrokerCore> core_;
  internal::TopicEntry* entry_ = nullptr;
};

// Thread-safe: every method may be called from any thread.
class Broker {
 public:
  // Called on a dispatcher thread, one message at a time, in order.
  using Callback = std::function<void(const Delivery&)>;

  // Creates a broker and starts its dispatcher threads. Returns
  // kInvalidArgument if an option is out of its documented range.
  static absl::StatusOr<std::unique_ptr<Broker>> Create(
      BrokerOptions options = {});

  // Shuts down with no drain time (see Shutdown()).
  ~Broker();

  Broker(const Broker&) = delete;
  Broker& operator=(const Broker&) = delete;

  // Publishes a copy of `payload` and `headers` to `topic`, on the calling
  // thread, to every matching subscription; never blocks unless a matching
  // kBlock subscription's queue is full (then until there is room, at most
  // the largest such block_timeout after the publish began; the other
  // subscriptions have the message meanwhile). Returns
  // what happened per subscription: matched, taken, dropped by reason (a
  // full queue is a counted drop, not an error). Errors, each counted by the
  // broker: kInvalidArgument for an invalid topic (see broker/topic.h), a
  // reserved (`herald-`) or empty header key, or a message (topic + payload +
  // headers) over max_message_bytes; kFailedPrecondition once Shutdown()
  // began.
  absl::StatusOr<PublishResult> Publish(absl::string_view topic,
                                        absl::string_view payload,
                                        const Headers& headers = {});

  // Returns a handle for publishing to `topic` repeatedly without the lookup.
  // kInvalidArgument for an invalid topic, kResourceExhausted past
  // max_topics, kFailedPrecondition once Shutdown() began.
  absl::StatusOr<TopicHandle> Topic(absl::string_view topic);

  // Subscribes to `pattern` for pulling messages with Receive(). The
  // subscription is live when this returns: every later publish that matches
  // reaches it. Returns kInvalidArgument for an invalid pattern or option
  // (capacity 0 or over max_queue_capacity, block_timeout out of range,
  // batch limit 0), kResourceExhausted when an exact pattern needs a topic
  // entry past max_topics, kFailedPrecondition once Shutdown() began. May
  // wait for publishes in flight to finish.
  absl::StatusOr<Subscription> Subscribe(absl::string_view pattern,
                                         SubscriptionOptions options = {});
  // As above, but `callback` (non-null, else kInvalidArgument) receives the
  // messages on the dispatcher pool: never concurrently with itself, in
  // order, at most callback_batch_limit per turn.
  absl::StatusOr<Subscription> Subscribe(absl::string_view pattern,
                                         SubscriptionOptions options,
                                         Callback callback);

  // A snapshot of the broker's, topics' and subscriptions' counters. Live
  // figures may differ by the operations in flight (see SubscriptionTotals).
  v1::BrokerStats Stats() const;

  // Stops the broker: refuses new publishes and subscribes
  // (kFailedPrecondition), waits for publishes in flight, lets subscribers
  // drain their queues until `drain_deadline`, then ends every subscription
  // (what is still queued is dropped, reason kShutdown; receivers get
  // kOutOfRange), waits for running callbacks (without a bound: a stuck
  // callback blocks shutdown) and joins every thread the broker started.
  // Returns the final stats. Later calls wait for the first and return the
  // same stats. REQUIRES: not called from a callback.
  v1::BrokerStats Shutdown(absl::Time drain_deadline);
  v1::BrokerStats Shutdown(absl::Duration drain_timeout);

  const BrokerOptions& options() const;

 private:
  friend internal::BrokerCore& internal::CoreOf(Broker& broker);
  explicit Broker(std::shared_ptr<internal::BrokerCore> core);
  std::shared_ptr<internal::BrokerCore> core_;
};

// Prints stats as JSON: every field (a zero count too), proto field names,
// 64-bit counters as strings (proto3 JSON). kInternal if printing fails.
absl::StatusOr<std::string> StatsToJson(const v1::BrokerStats& stats);

}  // namespace herald

#endif  // HERALD_BROKER_BROKER_H_
