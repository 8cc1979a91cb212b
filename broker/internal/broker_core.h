// BrokerCore: the implementation behind herald::Broker, shared (through
// std::shared_ptr) with TopicHandles and known weakly to Subscriptions, so a
// handle that outlives its Broker stays safe to use and to close.
//
// Thread-safe.
#ifndef HERALD_BROKER_INTERNAL_BROKER_CORE_H_
#define HERALD_BROKER_INTERNAL_BROKER_CORE_H_

#include <atomic>
#include <cstdint>
#include <memory>
#include <optional>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/synchronization/notification.h"
#include "absl/time/time.h"
#include "absl/types/span.h"
#include "broker/broker.h"
#include "broker/internal/dispatcher.h"
#include "broker/internal/registry.h"
#include "broker/internal/subscription_state.h"
#include "broker/options.h"
#include "schemas/stats.pb.h"

namespace herald::internal {

// A push that a full kBlock queue deferred for a publisher that must not
// wait (the network server): it counts as matched, and the publisher
// settles it later with SubscriptionState::SettleDeferred().
struct DeferredPush {
  std::shared_ptr<SubscriptionState> subscription;
  MessageRef message;   // The push's own reference.
  absl::Time deadline;  // Publish time + the subscription's block_timeout.
};

// How a publish may behave beyond Broker::Publish()'s contract.
struct PublishFlags {
  // Herald's own layers (the SDK) may set `herald-` headers.
  bool allow_reserved_headers = false;
  // True: a full kBlock queue makes the publisher wait (up to the queue's
  // block_timeout), with no registry pin held. False for the network
  // server's I/O thread, which must never wait: a full kBlock queue then
  // drops at once (kBlockTimeout), or, with `deferred`, defers the push
  // into it (then the PublishResult's taken + dropped falls short of
  // matched by the pushes deferred).
  bool may_block = true;
  std::vector<DeferredPush>* deferred = nullptr;
  // The message's publish time; InfinitePast: now. The network server
  // stamps a Publish batch's entries with the batch's arrival, read once.
  absl::Time publish_time = absl::InfinitePast();
};

class BrokerCore : public std::enable_shared_from_this<BrokerCore> {
 public:
  // kInvalidArgument naming the first option out of range.
  static absl::Status Validate(const BrokerOptions& options);

  // REQUIRES: Validate(options).ok().
  explicit BrokerCore(BrokerOptions options);
  ~BrokerCore();

  const BrokerOptions& options() const { return options_; }

  absl::StatusOr<PublishResult> Publish(absl::string_view topic,
                                        absl::string_view payload,
                                        const Headers& headers,
                                        PublishFlags flags = {});
  // A publish from the network: never blocks, may carry `herald-` headers.
  // With `deferred`, full kBlock queues defer their pushes into it.
  absl::StatusOr<PublishResult> PublishFromNetwork(
      absl::string_view topic, absl::string_view payload,
      const Headers& headers, std::vector<DeferredPush>* deferred = nullptr,
      absl::Time publish_time = absl::InfinitePast()) {
    return Publish(topic, payload, headers,
                   {.allow_reserved_headers = true,
                    .may_block = false,
                    .deferred = deferred,
                    .publish_time = publish_time});
  }
  // Settles `d` (see SubscriptionState::SettleDeferred()) pinned, so that a
  // Close() or Shutdown() waits for the AfterPush() of a push this admits,
  // which may wake a consumer or run another server's notifier. For every
  // publisher with deferred pushes: one that waits (EndPublishWaiting()) and
  // one that polls (the network server). `d.message` is left empty once the
  // queue took it and keeps the message while still deferred or dropped.
  PushOutcome SettleDeferred(DeferredPush& d, bool give_up);
  absl::StatusOr<PublishResult> PublishToEntry(TopicEntry* entry,
                                               absl::string_view payload,
                                               const Headers& headers);
  absl::StatusOr<TopicHandle> Topic(absl::string_view topic);
  void ReleaseTopic(TopicEntry* entry) { registry_.ReleaseTopic(entry); }

  absl::StatusOr<Subscription> Subscribe(
      absl::string_view pattern, const SubscriptionOptions& options,
      Broker::Callback callback,
      SubscriptionState::Notifier notifier = nullptr);
  // Closes `state` (see Subscription::Close()).
  SubscriptionTotals Unsubscribe(
      const std::shared_ptr<SubscriptionState>& state);
  // Closes every valid one of `subscriptions` (of this broker) as
  // Subscription::Close() does, with one grace period for them all instead
  // of one each: for closing many at once (a server's sessions).
  void CloseTogether(absl::Span<Subscription* const> subscriptions);

  v1::BrokerStats Stats() const;
  v1::BrokerStats Shutdown(absl::Time drain_deadline);

  // What Subscribe() would refuse in these arguments (kInvalidArgument),
  // for a caller that subscribes later and must not fail then.
  absl::Status CheckSubscribe(absl::string_view pattern,
                              const SubscriptionOptions& options,
                              bool callback) const;

 private:
  // The last step of closing `state` once no publisher can reach it: its
  // totals freeze and move to the broker's closed totals.
  SubscriptionTotals Closed(SubscriptionState& state);

  // Checks what Publish() must refuse, counting the refusal. With
  // `topic_known`, the topic has a registry entry and is valid.
  absl::Status CheckMessage(absl::string_view topic, absl::string_view payload,
                            const Headers& headers, bool allow_reserved,
                            bool topic_known) {
    // The common case inline: a known topic, no headers, within the limit.
    if (topic_known && headers.empty() &&
        topic.size() + payload.size() <= options_.max_message_bytes) {
      return absl::OkStatus();
    }
    return CheckMessageSlow(topic, payload, headers, allow_reserved,
                            topic_known);
  }
  absl::Status CheckMessageSlow(absl::string_view topic,
                                absl::string_view payload,
                                const Headers& headers, bool allow_reserved,
                                bool topic_known);
  // Gives one message to every target of `list`. REQUIRES: pinned. With
  // `deferred`, a full kBlock queue defers its push into it (PushOrDefer());
  // without, it drops at once. `publish_time` as in PublishFlags.
  PublishResult FanOut(const MatchList* list, absl::string_view topic,
                       absl::string_view payload, const Headers& headers,
                       std::vector<DeferredPush>* deferred,
                       absl::Time publish_time = absl::InfinitePast());
  // The end of every publish, after FanOut(): counts it on `entry` (or the
  // shard), unpins, and settles `waits`, the pushes FanOut() deferred into
  // full kBlock queues. REQUIRES: pinned (`pin`).
  void EndPublish(size_t shard, uint32_t pin, TopicEntry* entry,
                  std::vector<DeferredPush>& waits, PublishResult* result) {
    registry_.CountPublish(shard, entry, result->matched > 0);
    if (waits.empty()) {
      registry_.Unpin(shard, pin);  // The common case inline.
      return;
    }
    EndPublishWaiting(shard, pin, waits, result);
  }
  // EndPublish() with `waits`, once counted: counts the publisher in
  // waiting_publishers_, unpins, waits for each of `waits` to be taken or
  // dropped (waiting with no pin held; settling pinned), and adds the
  // outcomes to `*result`.
  void EndPublishWaiting(size_t shard, uint32_t pin,
                         std::vector<DeferredPush>& waits,
                         PublishResult* result);

  const BrokerOptions options_;
  Registry registry_;
  Dispatcher dispatcher_;

  // Set once Shutdown() begins; read by every publish (under its pin).
  std::atomic<bool> shutting_down_{false};
  std::atomic<uint64_t> refused_invalid_{0};
  std::atomic<uint64_t> refused_too_large_{0};
  std::atomic<uint64_t> refused_shutdown_{0};
  std::atomic<uint64_t> subscribe_refused_{0};

  // Publishers waiting for deferred pushes (in EndPublishWaiting()):
  // Shutdown() waits for them before it stops the dispatcher.
  absl::Mutex waits_mu_;
  int waiting_publishers_ ABSL_GUARDED_BY(waits_mu_) = 0;

  mutable absl::Mutex mu_;
  uint64_t next_id_ ABSL_GUARDED_BY(mu_) = 0;
  absl::flat_hash_map<uint64_t, std::shared_ptr<SubscriptionState>> subs_
      ABSL_GUARDED_BY(mu_);
  uint64_t closed_count_ ABSL_GUARDED_BY(mu_) = 0;
  SubscriptionTotals closed_totals_ ABSL_GUARDED_BY(mu_);
  bool shutdown_started_ ABSL_GUARDED_BY(mu_) = false;
  absl::Notification shutdown_done_;
  std::optional<v1::BrokerStats> final_stats_;  // Written before
                                                // shutdown_done_ is notified.
};

}  // namespace herald::internal

#endif  // HERALD_BROKER_INTERNAL_BROKER_CORE_H_
