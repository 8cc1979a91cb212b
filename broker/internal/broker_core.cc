#include "broker/internal/broker_core.h"

#include <algorithm>
#include <utility>
#include <vector>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "broker/topic.h"
#include "broker/util/status_macros.h"

namespace herald::internal {
namespace {

void AddTotals(const SubscriptionTotals& t, SubscriptionTotals* sum) {
  sum->matched += t.matched;
  sum->delivered += t.delivered;
  sum->abandoned += t.abandoned;
  for (size_t i = 0; i < kDropReasonCount; ++i) {
    sum->dropped_by_reason[i] += t.dropped_by_reason[i];
  }
}

absl::Status OutOfRange(absl::string_view what, uint64_t value,
                        absl::string_view range) {
  return absl::InvalidArgumentError(
      absl::StrCat(what, " is ", value, "; it must be in ", range));
}

}  // namespace

absl::Status BrokerCore::Validate(const BrokerOptions& o) {
  if (o.shard_count < 1 || o.shard_count > 4096) {
    return OutOfRange("broker option shard_count", o.shard_count, "[1, 4096]");
  }
  if (o.dispatcher_threads < 1 || o.dispatcher_threads > 256) {
    return OutOfRange("broker option dispatcher_threads", o.dispatcher_threads,
                      "[1, 256]");
  }
  if (o.max_queue_capacity < 1 || o.max_queue_capacity > (size_t{1} << 30)) {
    return OutOfRange("broker option max_queue_capacity", o.max_queue_capacity,
                      "[1, 2^30]");
  }
  if (o.default_queue_capacity < 1 ||
      o.default_queue_capacity > o.max_queue_capacity) {
    return OutOfRange(
        "broker option default_queue_capacity", o.default_queue_capacity,
        absl::StrCat("[1, ", o.max_queue_capacity, "] (max_queue_capacity)"));
  }
  if (o.max_message_bytes < 1 || o.max_message_bytes > (size_t{1} << 30)) {
    return OutOfRange("broker option max_message_bytes", o.max_message_bytes,
                      "[1, 2^30]");
  }
  if (o.max_topics < 1) {
    return OutOfRange("broker option max_topics", o.max_topics, "[1, ...]");
  }
  if (o.max_block_timeout <= absl::ZeroDuration()) {
    return absl::InvalidArgumentError(absl::StrCat(
        "broker option max_block_timeout is ",
        absl::FormatDuration(o.max_block_timeout), "; it must be > 0"));
  }
  return absl::OkStatus();
}

BrokerCore::BrokerCore(BrokerOptions options)
    : options_(std::move(options)),
      registry_(options_.shard_count, options_.max_topics),
      dispatcher_(options_.dispatcher_threads) {}

BrokerCore::~BrokerCore() { Shutdown(absl::InfinitePast()); }

absl::Status BrokerCore::CheckMessageSlow(absl::string_view topic,
                                          absl::string_view payload,
                                          const Headers& headers,
                                          bool allow_reserved,
                                          bool topic_known) {
  // Relaxed on the refusal counters: statistics. A topic with a registry
  // entry was validated when the entry was made.
  if (!topic_known) {
    if (absl::Status s = ValidateTopic(topic); !s.ok()) {
      refused_invalid_.fetch_add(1, std::memory_order_relaxed);
      return s;
    }
  }
  for (const Header& h : headers) {
    if (h.key.empty()) {
      refused_invalid_.fetch_add(1, std::memory_order_relaxed);
      return absl::InvalidArgumentError(
          absl::StrCat("publish to \"", topic, "\": empty header key"));
    }
    if (!allow_reserved && absl::StartsWith(h.key, kReservedHeaderPrefix)) {
      refused_invalid_.fetch_add(1, std::memory_order_relaxed);
      return absl::InvalidArgumentError(
          absl::StrCat("publish to \"", topic, "\": header key \"", h.key,
                       "\" uses the reserved prefix \"herald-\""));
    }
  }
  const size_t size = Message::ByteSize(topic, payload, headers);
  if (size > options_.max_message_bytes) {
    refused_too_large_.fetch_add(1, std::memory_order_relaxed);
    return absl::InvalidArgumentError(absl::StrCat(
        "publish to \"", topic, "\": message of ", size,
        " bytes is over max_message_bytes (", options_.max_message_bytes, ")"));
  }
  return absl::OkStatus();
}

PublishResult BrokerCore::FanOut(const MatchList* list, absl::string_view topic,
                                 absl::string_view payload,
                                 const Headers& headers,
                                 std::vector<DeferredPush>* deferred,
                                 absl::Time publish_time) {
  PublishResult result;
  if (list == nullptr || list->empty()) return result;
  const uint32_t targets = static_cast<uint32_t>(list->size());
  // One allocation, one reference per target; the references of targets
  // that did not take it are dropped together at the end.
  const absl::Time now =
      publish_time == absl::InfinitePast() ? absl::Now() : publish_time;
  Message* m = Message::Create(topic, payload, headers, now, targets);
  uint32_t unused = 0;
  for (SubscriptionState* s : list->subscriptions) {
    const PushOutcome outcome =
        deferred != nullptr ? s->PushOrDefer(m) : s->Push(m);
    if (outcome.deferred) {
      // Its reference goes with it. The pin keeps `s` registered, so the
      // broker still holds it: shared_from_this() is safe.
      deferred->push_back({s->shared_from_this(), MessageRef::Adopt(m),
                           now + s->block_timeout()});
    } else if (outcome.taken) {
      ++result.taken;
    } else {
      ++result.dropped_by_reason[static_cast<size_t>(outcome.reason)];
      ++unused;
    }
    if (outcome.evicted != nullptr) {
      outcome.evicted->Unref();
      ++result.evicted;
    }
  }
  for (GroupState* g : list->groups) {
    if (g->Offer(m)) {
      ++result.taken;
    } else {
      ++result.dropped_by_reason[static_cast<size_t>(DropReason::kGroupFull)];
      ++unused;
    }
  }
  result.matched = targets;
  if (unused > 0) m->Unref(unused);
  return result;
}

absl::StatusOr<PublishResult> BrokerCore::Publish(absl::string_view topic,
                                                  absl::string_view payload,
                                                  const Headers& headers,
                                                  PublishFlags flags) {
  // One hash, one lock-free probe: a topic with an entry skips validation.
  const uint64_t hash = Registry::HashTopic(topic);
  const size_t shard = registry_.ShardOf(hash);
  const uint32_t pin = registry_.Pin(shard);
  TopicEntry* entry = registry_.Find(shard, hash, topic);
  if (absl::Status s =
          CheckMessage(topic, payload, headers, flags.allow_reserved_headers,
                       /*topic_known=*/entry != nullptr);
      !s.ok()) {
    registry_.Unpin(shard, pin);
    return s;
  }
  // Acquire: pairs with the store in Shutdown(); a publish that sees false
  // is waited for by Shutdown's grace period.
  if (shutting_down_.load(std::memory_order_acquire)) {
    registry_.Unpin(shard, pin);
    refused_shutdown_.fetch_add(1, std::memory_order_relaxed);
    return absl::FailedPreconditionError(
        absl::StrCat("publish to \"", topic, "\": the broker is shut down"));
  }
  std::unique_ptr<MatchList> uncached;
  // Acquire: pairs with the registry's release of a new list.
  const MatchList* list =
      entry != nullptr
          ? entry->list.load(std::memory_order_acquire)
          : registry_.LookupMiss(shard, hash, topic, &entry, &uncached);
  // A publisher that may wait defers its pushes into full kBlock queues and
  // waits for them once unpinned (see EndPublish()).
  std::vector<DeferredPush> waits;
  std::vector<DeferredPush>* deferred = flags.deferred;
  if (deferred == nullptr && flags.may_block) deferred = &waits;
  PublishResult result =
      FanOut(list, topic, payload, headers, deferred, flags.publish_time);
  EndPublish(shard, pin, entry, waits, &result);
  return result;
}

void BrokerCore::EndPublishWaiting(size_t shard, uint32_t pin,
                                   std::vector<DeferredPush>& waits,
                                   PublishResult* result) {
  {
    // Counted while still pinned, so that Shutdown() sees it.
    absl::MutexLock lock(&waits_mu_);
    ++waiting_publishers_;
  }
  registry_.Unpin(shard, pin);
  // Each push is waited for unpinned and settled pinned (SettleDeferred()).
  // Every push that has room now is settled first, so that one full queue
  // does not hold up the others.
  bool first_pass = true;
  size_t left = waits.size();
  while (left > 0) {
    for (DeferredPush& d : waits) {
      if (d.subscription == nullptr) continue;  // Settled.
      if (!first_pass) d.subscription->WaitForRoom(d.deadline);
      const PushOutcome outcome = SettleDeferred(
          d, /*give_up=*/!first_pass && absl::Now() >= d.deadline);
      if (outcome.deferred) continue;  // Wait for room.
      --left;
      if (outcome.taken) {
        ++result->taken;
      } else {
        ++result->dropped_by_reason[static_cast<size_t>(outcome.reason)];
      }
      d = DeferredPush{};  // Settled: drops a dropped message's reference.
    }
    first_pass = false;
  }
  waits.clear();
  absl::MutexLock lock(&waits_mu_);
  --waiting_publishers_;
}

PushOutcome BrokerCore::SettleDeferred(DeferredPush& d, bool give_up) {
  // Any shard: Close() and Shutdown() wait for the publishers pinned in
  // every shard.
  const uint32_t pin = registry_.Pin(0);
  Message* m = d.message.Release();
  const PushOutcome out = d.subscription->SettleDeferred(m, give_up);
  registry_.Unpin(0, pin);
  // Taken: the queue has the reference now. Otherwise it is still ours.
  if (!out.taken) d.message = MessageRef::Adopt(m);
  return out;
}

absl::StatusOr<PublishResult> BrokerCore::PublishToEntry(
    TopicEntry* entry, absl::string_view payload, const Headers& headers) {
  HERALD_RETURN_IF_ERROR(CheckMessage(entry->name, payload, headers,
                                      /*allow_reserved=*/false,
                                      /*topic_known=*/true));
  const size_t shard = registry_.ShardOf(entry->hash);
  const uint32_t pin = registry_.Pin(shard);
  if (shutting_down_.load(std::memory_order_acquire)) {
    registry_.Unpin(shard, pin);
    refused_shutdown_.fetch_add(1, std::memory_order_relaxed);
    return absl::FailedPreconditionError(absl::StrCat(
        "publish to \"", entry->name, "\": the broker is shut down"));
  }
  // Acquire: pairs with the registry's release of a new list. The handle
  // keeps the entry; the pin keeps the list.
  std::vector<DeferredPush> waits;
  PublishResult result = FanOut(entry->list.load(std::memory_order_acquire),
                                entry->name, payload, headers, &waits);
  EndPublish(shard, pin, entry, waits, &result);
  return result;
}

absl::StatusOr<TopicHandle> BrokerCore::Topic(absl::string_view topic) {
  HERALD_RETURN_IF_ERROR(ValidateTopic(topic));
  if (shutting_down_.load(std::memory_order_acquire)) {
    return absl::FailedPreconditionError(
        absl::StrCat("topic \"", topic, "\": the broker is shut down"));
  }
  HERALD_ASSIGN_OR_RETURN(TopicEntry * entry, registry_.AcquireTopic(topic));
  return TopicHandle(shared_from_this(), entry);
}

absl::Status BrokerCore::CheckSubscribe(absl::string_view pattern,
                                        const SubscriptionOptions& o,
                                        bool callback) const {
  HERALD_RETURN_IF_ERROR(ValidatePattern(pattern));
  const size_t capacity =
      o.queue_capacity.value_or(options_.default_queue_capacity);
  if (capacity < 1 || capacity > options_.max_queue_capacity) {
    return absl::InvalidArgumentError(
        absl::StrCat("subscribe to \"", pattern, "\": queue_capacity ",
                     capacity, " must be in [1, ", options_.max_queue_capacity,
                     "] (max_queue_capacity)"));
  }
  if (o.block_timeout <= absl::ZeroDuration() ||
      o.block_timeout > options_.max_block_timeout) {
    return absl::InvalidArgumentError(
        absl::StrCat("subscribe to \"", pattern, "\": block_timeout ",
                     absl::FormatDuration(o.block_timeout), " must be in (0, ",
                     absl::FormatDuration(options_.max_block_timeout), "]"));
  }
  if (o.callback_batch_limit == 0) {
    return absl::InvalidArgumentError(absl::StrCat(
        "subscribe to \"", pattern, "\": callback_batch_limit is 0"));
  }
  for (const char c : o.queue_group) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f || c == ' ') {
      return absl::InvalidArgumentError(
          absl::StrCat("subscribe to \"", pattern, "\": queue group \"",
                       o.queue_group, "\" has a space or control byte"));
    }
  }
  (void)callback;
  return absl::OkStatus();
}

absl::StatusOr<Subscription> BrokerCore::Subscribe(
    absl::string_view pattern, const SubscriptionOptions& options,
    Broker::Callback callback, SubscriptionState::Notifier notifier) {
  if (absl::Status s = CheckSubscribe(pattern, options, callback != nullptr);
      !s.ok()) {
    subscribe_refused_.fetch_add(1, std::memory_order_relaxed);
    return s;
  }
  std::shared_ptr<SubscriptionState> state;
  {
    absl::MutexLock lock(&mu_);
    if (shutdown_started_) {
      subscribe_refused_.fetch_add(1, std::memory_order_relaxed);
      return absl::FailedPreconditionError(absl::StrCat(
          "subscribe to \"", pattern, "\": the broker is shut down"));
    }
    state = std::make_shared<SubscriptionState>(
        ++next_id_, std::string(pattern), options.queue_group, options.name,
        options.overflow.value_or(options_.default_overflow),
        options.queue_capacity.value_or(options_.default_queue_capacity),
        options.block_timeout, options.callback_batch_limit,
        std::move(callback), std::move(notifier), &dispatcher_);
    subs_.emplace(state->id(), state);
  }
  if (absl::Status s = registry_.Add(state.get()); !s.ok()) {
    subscribe_refused_.fetch_add(1, std::memory_order_relaxed);
    absl::MutexLock lock(&mu_);
    subs_.erase(state->id());
    return s;
  }
  return Subscription(std::move(state), weak_from_this());
}

SubscriptionTotals BrokerCore::Unsubscribe(
    const std::shared_ptr<SubscriptionState>& state) {
  // A second Close() returns the frozen totals again.
  if (state->owner_closed()) return state->FinishClose();
  state->MarkClosing();
  SubscriptionState* const removed[] = {state.get()};
  registry_.Remove(removed);
  return Closed(*state);
}

SubscriptionTotals BrokerCore::Closed(SubscriptionState& state) {
  const SubscriptionTotals totals = state.FinishClose();
  absl::MutexLock lock(&mu_);
  if (subs_.erase(state.id()) > 0) {
    ++closed_count_;
    AddTotals(totals, &closed_totals_);
  }
  return totals;
}

void BrokerCore::CloseTogether(absl::Span<Subscription* const> subscriptions) {
  std::vector<SubscriptionState*> closing;
  closing.reserve(subscriptions.size());
  for (Subscription* s : subscriptions) {
    SubscriptionState* state = s->state_.get();
    if (state == nullptr || state->owner_closed()) continue;
    state->MarkClosing();
    closing.push_back(state);
  }
  registry_.Remove(closing);
  for (SubscriptionState* state : closing) Closed(*state);
}

v1::BrokerStats BrokerCore::Stats() const {
  v1::BrokerStats out;
  registry_.FillStats(&out);
  // Relaxed: statistics.
  out.set_refused_invalid(refused_invalid_.load(std::memory_order_relaxed));
  out.set_refused_too_large(refused_too_large_.load(std::memory_order_relaxed));
  out.set_refused_shutdown(refused_shutdown_.load(std::memory_order_relaxed));
  out.set_subscribe_refused(subscribe_refused_.load(std::memory_order_relaxed));
  std::vector<std::shared_ptr<SubscriptionState>> subs;
  {
    absl::MutexLock lock(&mu_);
    out.set_shut_down(shutdown_started_);
    out.set_subscriptions_active(subs_.size());
    out.set_subscriptions_closed(closed_count_);
    out.set_closed_matched(closed_totals_.matched);
    out.set_closed_delivered(closed_totals_.delivered);
    out.set_closed_abandoned(closed_totals_.abandoned);
    const uint64_t closed_groups_full = out.closed_dropped().group_full();
    FillDropCounts(closed_totals_.dropped_by_reason,
                   out.mutable_closed_dropped());
    out.mutable_closed_dropped()->set_group_full(closed_groups_full);
    subs.reserve(subs_.size());
    for (const auto& [id, s] : subs_) subs.push_back(s);
  }
  std::sort(subs.begin(), subs.end(),
            [](const auto& a, const auto& b) { return a->id() < b->id(); });
  for (const auto& s : subs) s->FillStats(out.add_subscriptions());
  return out;
}

v1::BrokerStats BrokerCore::Shutdown(absl::Time drain_deadline) {
  bool first = false;
  {
    absl::MutexLock lock(&mu_);
    if (!shutdown_started_) {
      shutdown_started_ = true;
      first = true;
      // Release: pairs with the acquire in Publish().
      shutting_down_.store(true, std::memory_order_release);
    }
  }
  if (!first) {
    shutdown_done_.WaitForNotification();
    return *final_stats_;
  }
  // Every publish that did not see the flag has finished after this, or
  // waits for a full kBlock queue and is counted in waiting_publishers_.
  registry_.SynchronizeAll();

  std::vector<std::shared_ptr<SubscriptionState>> subs;
  {
    absl::MutexLock lock(&mu_);
    for (const auto& [id, s] : subs_) subs.push_back(s);
  }
  // Drain: subscribers take what is queued, until the deadline. Polled every
  // millisecond so that the consume path carries no shutdown hook.
  while (absl::Now() < drain_deadline) {
    const bool drained = std::all_of(subs.begin(), subs.end(), [](auto& s) {
      return s->closing() || (s->Depth() == 0 && !s->HasDeferred());
    });
    if (drained) break;
    absl::SleepFor(
        std::min(absl::Milliseconds(1), drain_deadline - absl::Now()));
  }
  // Every subscription is marked before any is ended: ending one waits for
  // its running callback, which may itself be waiting for room in another.
  for (const auto& s : subs) s->MarkEnded();
  for (const auto& s : subs) s->End();
  // A deferred push settled by a polling publisher (SettleDeferred()) that
  // was admitted before End() may still be in its AfterPush(); once this
  // returns, every later settle finds the subscription ended.
  registry_.SynchronizeAll();
  {
    // Publishers still waiting on a full kBlock queue were woken by End();
    // they may still schedule a callback turn, so the dispatcher outlives
    // them.
    absl::MutexLock lock(&waits_mu_);
    waits_mu_.Await(absl::Condition(
        +[](int* n) { return *n == 0; }, &waiting_publishers_));
  }
  dispatcher_.Stop();
  final_stats_ = Stats();
  shutdown_done_.Notify();
  return *final_stats_;
}

}  // namespace herald::internal
