#include "sdk/internal/remote_client.h"

#include <algorithm>
#include <optional>
#include <stop_token>
#include <string>
#include <thread>
#include <utility>

#include "absl/base/thread_annotations.h"
#include "absl/strings/str_cat.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "broker/internal/thread_identity.h"
#include "broker/internal/thread_name.h"
#include "broker/util/stat_counter.h"
#include "broker/util/status_macros.h"
#include "sdk/internal/handles.h"
#include "sdk/internal/remote_core.h"

namespace herald::internal {
namespace {

// Wakes a receive call parked on `sub` when its stop token is requested:
// taking and releasing the mutex makes it evaluate its condition again.
struct WakeOnStop {
  RemoteSub* sub;
  void operator()() const {
    EnsureThreadIdentity();  // Runs on the thread that requests the stop.
    absl::MutexLock lock(&sub->mu);
    sub->WakeWaiterLocked();  // A receive call leading the socket polls.
  }
};

// Takes the next message of `sub`, waiting until `deadline` (see
// Subscriber::Receive()); it counts as consumed at once (credit).
absl::StatusOr<Received> Pop(RemoteCore& core, RemoteSub& sub,
                             Deadline deadline, const std::stop_token& stop) {
  EnsureThreadIdentity();
  // Constructed before the lock and destroyed after it: its destructor waits
  // for a running WakeOnStop, which takes the lock.
  std::optional<std::stop_callback<WakeOnStop>> on_stop;
  if (stop.stop_possible()) on_stop.emplace(stop, WakeOnStop{&sub});
  absl::StatusOr<Received> result;
  RemoteSub::CreditReturn credit;
  {
    absl::MutexLock lock(&sub.mu);
    auto ready = [&sub, &stop]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(sub.mu) {
      return sub.closed || !sub.buffer.empty() || !sub.ended.ok() ||
             stop.stop_requested();
    };
    // The clock is read (and a timeout starts) only if there is a wait.
    if (!ready()) {
      // This thread reads the socket itself if it can (one thread hop less);
      // if it cannot, or returns before the deadline, it waits for the I/O
      // thread as before.
      sub.mu.Unlock();
      core.LeadReceive(sub, deadline.Get(), ready);
      sub.mu.Lock();
      if (!ready()) {
        sub.mu.AwaitWithDeadline(absl::Condition(&ready), deadline.Get());
      }
    }
    if (sub.closed) {
      return absl::FailedPreconditionError(
          absl::StrCat("receive: subscription ", sub.sid, " is closed"));
    }
    if (!sub.buffer.empty()) {
      result = core.TakeFrontLocked(sub);
      // In the same critical section as the pop: one lock per message.
      credit = sub.ConsumeLocked(1);
    } else if (!sub.ended.ok()) {
      return sub.ended;
    } else if (stop.stop_requested()) {
      return absl::CancelledError("receive: cancelled by the stop token");
    } else {
      return absl::DeadlineExceededError(absl::StrCat(
          "receive: no message on subscription ", sub.sid, " by the deadline"));
    }
  }
  if (credit.give > 0)
    core.ReturnCredit(sub.sid, credit.incarnation, credit.give);
  return result;
}

// Thread-safe.
class RemotePublisher final : public PublisherImpl {
 public:
  RemotePublisher(std::shared_ptr<RemoteCore> core, absl::Duration wait)
      : core_(std::move(core)), wait_(wait) {}

  // PublisherImpl
  absl::Status Publish(absl::string_view topic, absl::string_view payload,
                       const Headers& headers,
                       absl::string_view type_name) override {
    return core_->Publish(topic, payload, headers, type_name, wait_);
  }

 private:
  const std::shared_ptr<RemoteCore> core_;
  const absl::Duration wait_;
};

// Thread safety as Subscriber's.
class RemoteSubscriber final : public SubscriberImpl {
 public:
  RemoteSubscriber(std::shared_ptr<RemoteCore> core,
                   std::shared_ptr<RemoteSub> sub, std::string pattern,
                   Client::Callback callback)
      : core_(std::move(core)), sub_(std::move(sub)), pattern_(pattern) {
    if (callback == nullptr) return;
    // A serial executor over the client's callback pool: turns are queued
    // by the I/O thread as messages arrive, and here for what arrived
    // before the callback was set. A turn holds its own references: it may
    // outlive this object when the subscriber is destroyed in its callback.
    std::shared_ptr<CallbackPool> pool = core_->callback_pool();
    if (pool == nullptr) return;  // The client is closing.
    bool schedule = false;
    {
      absl::MutexLock lock(&sub_->mu);
      sub_->callback_fn = std::move(callback);
      sub_->pool = pool;
      if (!sub_->closed && !sub_->buffer.empty() && !sub_->scheduled) {
        sub_->scheduled = true;
        schedule = true;
      }
    }
    if (schedule) core_->ScheduleCallbacks(sub_, pool);
  }

  ~RemoteSubscriber() override {
    EnsureThreadIdentity();
    if (!close_.Begin()) return;  // Close() ran.
    CloseLocally();
    WaitForCallback();
    // Without waiting: the I/O thread forgets the subscription at its Ack.
    core_->Unsubscribe(sub_->sid, /*wait=*/false).IgnoreError();
  }

  // SubscriberImpl
  absl::StatusOr<Received> Receive(Deadline deadline,
                                   std::stop_token stop) override {
    if (sub_->callback) {
      return absl::FailedPreconditionError(
          absl::StrCat("receive: subscription ", sub_->sid, " has a callback"));
    }
    return Pop(*core_, *sub_, deadline, stop);
  }

  absl::StatusOr<SubscriptionTotals> Close() override {
    EnsureThreadIdentity();
    bool in_own_callback;
    {
      absl::MutexLock lock(&sub_->mu);
      in_own_callback = sub_->running_in == std::this_thread::get_id();
    }
    return close_.Run([this] { return DoClose(); }, in_own_callback);
  }

  uint64_t id() const override { return sub_->sid; }
  const std::string& pattern() const override { return pattern_; }
  void NoteDecodeError() override { Bump(core_->counters().decode_errors); }

 private:
  absl::StatusOr<SubscriptionTotals> DoClose() {
    CloseLocally();
    WaitForCallback();
    absl::StatusOr<v1::SubscriptionStats> stats =
        core_->Unsubscribe(sub_->sid, /*wait=*/true);
    if (!stats.ok()) return stats.status();
    uint64_t app_delivered;
    {
      absl::MutexLock sub_lock(&sub_->mu);
      app_delivered = sub_->app_delivered;
    }
    SubscriptionTotals t;
    t.matched = stats->matched();
    const v1::DropCounts& d = stats->dropped();
    auto set = [&t](DropReason r, uint64_t n) {
      t.dropped_by_reason[static_cast<size_t>(r)] = n;
    };
    set(DropReason::kQueueFull, d.queue_full());
    set(DropReason::kEvictedOldest, d.evicted_oldest());
    set(DropReason::kBlockTimeout, d.block_timeout());
    set(DropReason::kClosed, d.closed());
    set(DropReason::kShutdown, d.shutdown());
    set(DropReason::kGroupFull, d.group_full());
    // What the broker sent and the application did not take was abandoned
    // here, in the client's buffer.
    t.delivered = std::min(app_delivered, stats->delivered());
    t.abandoned = stats->abandoned() + (stats->delivered() - t.delivered);
    t.queued = stats->queued();
    t.high_water = stats->high_water();
    return t;
  }

  // Once closed, no turn starts a callback; this waits for a running one,
  // unless called from inside it (it then ends when the callback returns).
  void WaitForCallback() {
    const std::thread::id self = std::this_thread::get_id();
    absl::MutexLock lock(&sub_->mu);
    auto done = [this, self]() ABSL_EXCLUSIVE_LOCKS_REQUIRED(sub_->mu) {
      return sub_->running_in == std::thread::id() || sub_->running_in == self;
    };
    sub_->mu.Await(absl::Condition(&done));
  }

  // Receive calls return kFailedPrecondition from here on; what is buffered
  // is abandoned.
  void CloseLocally() {
    absl::MutexLock lock(&sub_->mu);
    if (sub_->closed) return;
    sub_->closed = true;
    sub_->WakeWaiterLocked();
    Bump(core_->counters().abandoned, sub_->buffer.size());
    Drop(core_->counters().buffered, sub_->buffer.size());
    sub_->buffer.clear();
  }

  const std::shared_ptr<RemoteCore> core_;
  const std::shared_ptr<RemoteSub> sub_;
  const std::string pattern_;
  CloseOnce close_;
};

}  // namespace

absl::StatusOr<std::unique_ptr<Client>> RemoteClient::Connect(
    absl::string_view url, ClientOptions options) {
  const absl::Time deadline = absl::Now() + options.connect_timeout;
  auto core =
      std::make_shared<RemoteCore>(std::string(url), std::move(options));
  if (absl::Status s = core->Start(deadline); !s.ok()) {
    core->Close(absl::Now()).IgnoreError();  // Only stops the I/O thread.
    return s;
  }
  return std::unique_ptr<Client>(new RemoteClient(std::move(core)));
}

RemoteClient::RemoteClient(std::shared_ptr<RemoteCore> core)
    : core_(std::move(core)) {}

RemoteClient::~RemoteClient() {
  // The result says whether the flush completed; the counters keep it.
  core_->Close(absl::Now() + core_->options().linger).IgnoreError();
}

absl::StatusOr<Publisher> RemoteClient::CreatePublisher(
    PublisherOptions options) {
  HERALD_RETURN_IF_ERROR(ValidatePublisherOptions(options));
  if (core_->closing()) {
    return absl::FailedPreconditionError(
        "create publisher: the client is closed");
  }
  return HandleAccess::MakePublisher(
      std::make_shared<RemotePublisher>(core_, options.buffer_wait));
}

absl::StatusOr<Subscriber> RemoteClient::Subscribe(
    absl::string_view pattern, SubscriptionOptions options) {
  HERALD_ASSIGN_OR_RETURN(std::shared_ptr<RemoteSub> sub,
                          core_->Subscribe(pattern, options, false));
  return HandleAccess::MakeSubscriber(std::make_unique<RemoteSubscriber>(
      core_, std::move(sub), std::string(pattern), nullptr));
}

absl::StatusOr<Subscriber> RemoteClient::Subscribe(absl::string_view pattern,
                                                   SubscriptionOptions options,
                                                   Callback callback) {
  if (callback == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("subscribe to \"", pattern, "\": the callback is null"));
  }
  HERALD_ASSIGN_OR_RETURN(std::shared_ptr<RemoteSub> sub,
                          core_->Subscribe(pattern, options, true));
  return HandleAccess::MakeSubscriber(std::make_unique<RemoteSubscriber>(
      core_, std::move(sub), std::string(pattern), std::move(callback)));
}

absl::Status RemoteClient::Flush(absl::Time deadline) {
  return core_->Flush(deadline);
}

absl::Status RemoteClient::Close(absl::Time deadline) {
  return core_->Close(deadline);
}

ClientStats RemoteClient::Stats() const { return core_->Stats(); }

absl::StatusOr<v1::StatsReply> RemoteClient::BrokerAndServerStats(
    absl::Time deadline) {
  return core_->BrokerAndServerStats(deadline);
}

}  // namespace herald::internal
