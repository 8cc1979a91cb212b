#include "sdk/internal/in_process_client.h"

#include <array>
#include <atomic>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/container/flat_hash_map.h"
#include "absl/synchronization/mutex.h"
#include "broker/internal/broker_core.h"
#include "broker/internal/thread_identity.h"
#include "broker/util/stat_counter.h"
#include "broker/util/status_macros.h"
#include "sdk/internal/checks.h"
#include "sdk/internal/handles.h"

namespace herald::internal {
namespace {

// One subscription, shared by its Subscriber and the client's registry (so
// that Client::Close() can close it while the application holds it).
struct SubState {
  explicit SubState(Subscription s) : subscription(std::move(s)) {}
  // Never moved or reassigned once made: Close() may run concurrently from
  // the owner and from Client::Close() (Subscription allows that).
  const Subscription subscription;
  // Set by the first close, so that it is counted once.
  std::atomic<bool> counted{false};
};

}  // namespace

// The subscription whose callback this thread is running, if any: its own
// Close() must not wait for another closer (that one waits for it).
thread_local const SubState* tls_running_callback = nullptr;

struct InProcessClient::Shared {
  explicit Shared(Broker* b) : broker(b) {}

  // Closes `state`'s subscription; counts the first close. (What it leaves
  // queued is the broker's `abandoned`: in-process the SDK buffers nothing.)
  absl::StatusOr<SubscriptionTotals> CloseSub(SubState& state) {
    // Close() does not change the handle itself (see broker/subscription.h),
    // hence the const_cast on the shared, const member.
    absl::StatusOr<SubscriptionTotals> totals =
        const_cast<Subscription&>(state.subscription).Close();
    // Acq_rel: only the first closer counts; nothing else is published.
    if (totals.ok() &&
        !state.counted.exchange(true, std::memory_order_acq_rel)) {
      Bump(closed_subscriptions);
    }
    return totals;
  }

  Broker* const broker;
  // Acquire/release: set once by Close(); every call checks it first.
  std::atomic<bool> closed{false};

  std::atomic<uint64_t> published{0};
  std::array<std::atomic<uint64_t>, kPublishRefusalCount> refused{};
  std::atomic<uint64_t> delivered{0};
  std::atomic<uint64_t> decode_errors{0};
  std::atomic<uint64_t> opened_subscriptions{0};
  std::atomic<uint64_t> closed_subscriptions{0};

  absl::Mutex mu;  // Leaf lock.
  uint64_t next_key ABSL_GUARDED_BY(mu) = 0;
  absl::flat_hash_map<uint64_t, std::weak_ptr<SubState>> subs
      ABSL_GUARDED_BY(mu);
};

namespace {

using Shared = InProcessClient::Shared;

absl::Status Closed(absl::string_view what) {
  return absl::FailedPreconditionError(
      absl::StrCat(what, ": the client is closed"));
}

void CountRefusal(Shared& shared, const absl::Status& status) {
  PublishRefusal reason = PublishRefusal::kInvalid;
  if (status.code() == absl::StatusCode::kFailedPrecondition) {
    reason = PublishRefusal::kClosed;
  }
  Bump(shared.refused[static_cast<size_t>(reason)]);
}

// Thread-safe.
class InProcessPublisher final : public PublisherImpl {
 public:
  explicit InProcessPublisher(std::shared_ptr<Shared> shared)
      : shared_(std::move(shared)) {}

  // PublisherImpl
  absl::Status Publish(absl::string_view topic, absl::string_view payload,
                       const Headers& headers,
                       absl::string_view type_name) override {
    EnsureThreadIdentity();
    // Acquire: pairs with the release in Close().
    if (shared_->closed.load(std::memory_order_acquire)) {
      const absl::Status s = Closed(absl::StrCat("publish to \"", topic, "\""));
      CountRefusal(*shared_, s);
      return s;
    }
    absl::StatusOr<PublishResult> result;
    if (type_name.empty()) {
      result = shared_->broker->Publish(topic, payload, headers);
    } else {
      // The SDK's own reserved header: the user's headers are checked here,
      // then the broker is told to accept the `herald-` one added after them.
      if (absl::Status s = CheckPublishInput(topic, headers); !s.ok()) {
        CountRefusal(*shared_, s);
        return s;
      }
      Headers typed = headers;
      typed.push_back({std::string(kProtoTypeHeader), std::string(type_name)});
      result =
          CoreOf(*shared_->broker)
              .Publish(topic, payload, typed, {.allow_reserved_headers = true});
    }
    if (!result.ok()) {
      CountRefusal(*shared_, result.status());
      return result.status();
    }
    Bump(shared_->published);
    return absl::OkStatus();
  }

 private:
  const std::shared_ptr<Shared> shared_;
};

// Thread safety as Subscriber's.
class InProcessSubscriber final : public SubscriberImpl {
 public:
  InProcessSubscriber(std::shared_ptr<Shared> shared,
                      std::shared_ptr<SubState> state, uint64_t key,
                      std::string pattern)
      : shared_(std::move(shared)),
        state_(std::move(state)),
        key_(key),
        pattern_(std::move(pattern)) {}

  ~InProcessSubscriber() override {
    EnsureThreadIdentity();
    if (!close_.Begin()) return;               // Close() ran.
    shared_->CloseSub(*state_).IgnoreError();  // Totals not wanted.
    absl::MutexLock lock(&shared_->mu);
    shared_->subs.erase(key_);
  }

  // SubscriberImpl
  absl::StatusOr<Received> Receive(Deadline deadline,
                                   std::stop_token stop) override {
    // A pending timeout stays one: the subscription starts it only if it
    // has to wait.
    Subscription& subscription =
        const_cast<Subscription&>(state_->subscription);
    absl::StatusOr<Delivery> d =
        deadline.pending()
            ? subscription.Receive(deadline.timeout(), std::move(stop))
            : subscription.Receive(deadline.Get(), std::move(stop));
    if (!d.ok()) {
      if (d.status().code() == absl::StatusCode::kFailedPrecondition &&
          shared_->closed.load(std::memory_order_acquire)) {
        return Closed("receive");
      }
      return d.status();
    }
    Bump(shared_->delivered);
    return ReceivedAccess::FromDelivery(*std::move(d));
  }

  absl::StatusOr<SubscriptionTotals> Close() override {
    EnsureThreadIdentity();
    return close_.Run(
        [this]() -> absl::StatusOr<SubscriptionTotals> {
          const bool client_closed =
              shared_->closed.load(std::memory_order_acquire);
          // Closed either way: a Client::Close() that began may have listed
          // the subscriptions before it and not see it once erased below.
          absl::StatusOr<SubscriptionTotals> result =
              shared_->CloseSub(*state_);
          // Client::Close() closes it: as remote, its totals are not this
          // handle's to report.
          if (client_closed) result = Closed("close subscription");
          absl::MutexLock lock(&shared_->mu);
          shared_->subs.erase(key_);
          return result;
        },
        tls_running_callback == state_.get());
  }

  uint64_t id() const override { return state_->subscription.id(); }
  const std::string& pattern() const override { return pattern_; }
  void NoteDecodeError() override { Bump(shared_->decode_errors); }

 private:
  const std::shared_ptr<Shared> shared_;
  const std::shared_ptr<SubState> state_;
  const uint64_t key_;
  const std::string pattern_;
  CloseOnce close_;
};

// Adds a new subscription to the client's registry and makes its handle.
absl::StatusOr<Subscriber> Register(const std::shared_ptr<Shared>& shared,
                                    std::shared_ptr<SubState> state,
                                    absl::string_view pattern) {
  uint64_t key;
  {
    absl::MutexLock lock(&shared->mu);
    key = ++shared->next_key;
    shared->subs.emplace(key, state);
  }
  Bump(shared->opened_subscriptions);
  // A Close() that ran meanwhile did not see this one: close it now.
  if (shared->closed.load(std::memory_order_acquire)) {
    shared->CloseSub(*state).IgnoreError();
  }
  return HandleAccess::MakeSubscriber(std::make_unique<InProcessSubscriber>(
      shared, std::move(state), key, std::string(pattern)));
}

}  // namespace

InProcessClient::InProcessClient(Broker* broker, ClientOptions options)
    : shared_(std::make_shared<Shared>(broker)) {
  (void)options;  // Nothing in them applies in-process yet.
}

InProcessClient::~InProcessClient() {
  Close(absl::Now()).IgnoreError();  // Nothing to flush in-process.
}

absl::StatusOr<Publisher> InProcessClient::CreatePublisher(
    PublisherOptions options) {
  HERALD_RETURN_IF_ERROR(ValidatePublisherOptions(options));
  if (shared_->closed.load(std::memory_order_acquire)) {
    return Closed("create publisher");
  }
  return HandleAccess::MakePublisher(
      std::make_shared<InProcessPublisher>(shared_));
}

absl::StatusOr<Subscriber> InProcessClient::Subscribe(
    absl::string_view pattern, SubscriptionOptions options) {
  return DoSubscribe(pattern, options, nullptr);
}

absl::StatusOr<Subscriber> InProcessClient::Subscribe(
    absl::string_view pattern, SubscriptionOptions options, Callback callback) {
  if (callback == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("subscribe to \"", pattern, "\": the callback is null"));
  }
  return DoSubscribe(pattern, options, std::move(callback));
}

absl::StatusOr<Subscriber> InProcessClient::DoSubscribe(
    absl::string_view pattern, const SubscriptionOptions& options,
    Callback callback) {
  EnsureThreadIdentity();
  if (shared_->closed.load(std::memory_order_acquire)) {
    return Closed(absl::StrCat("subscribe to \"", pattern, "\""));
  }
  absl::StatusOr<Subscription> subscription;
  if (callback == nullptr) {
    subscription = shared_->broker->Subscribe(pattern, options);
  } else {
    // The broker's dispatcher runs it; `shared` counts the deliveries. A
    // weak reference: the broker may hold the callback after the client.
    std::weak_ptr<Shared> weak = shared_;
    // The callback learns its SubState once it exists (the first message
    // may come before Subscribe() returns).
    auto owner = std::make_shared<std::atomic<const SubState*>>(nullptr);
    subscription = shared_->broker->Subscribe(
        pattern, options,
        [weak, owner, callback = std::move(callback)](const Delivery& d) {
          // Acquire: pairs with the release store below.
          tls_running_callback = owner->load(std::memory_order_acquire);
          callback(ReceivedAccess::FromDelivery(d));
          tls_running_callback = nullptr;
          if (std::shared_ptr<Shared> shared = weak.lock()) {
            Bump(shared->delivered);
          }
        });
    if (!subscription.ok()) return subscription.status();
    auto state = std::make_shared<SubState>(*std::move(subscription));
    // Release: the callback reads the pointer, not the state behind it.
    owner->store(state.get(), std::memory_order_release);
    return Register(shared_, std::move(state), pattern);
  }
  if (!subscription.ok()) return subscription.status();
  return Register(shared_, std::make_shared<SubState>(*std::move(subscription)),
                  pattern);
}

absl::Status InProcessClient::Flush(absl::Time deadline) {
  (void)deadline;  // Publishes are synchronous: nothing is pending.
  if (shared_->closed.load(std::memory_order_acquire)) return Closed("flush");
  return absl::OkStatus();
}

absl::Status InProcessClient::Close(absl::Time deadline) {
  (void)deadline;  // Nothing to flush.
  EnsureThreadIdentity();
  // Release: pairs with the acquire loads in every call.
  shared_->closed.store(true, std::memory_order_release);
  std::vector<std::shared_ptr<SubState>> subs;
  {
    absl::MutexLock lock(&shared_->mu);
    for (const auto& [key, weak] : shared_->subs) {
      if (std::shared_ptr<SubState> s = weak.lock()) subs.push_back(s);
    }
  }
  // Outside the lock: closing a callback subscription waits for its callback.
  for (const std::shared_ptr<SubState>& s : subs) {
    shared_->CloseSub(*s).IgnoreError();  // Totals not wanted here.
  }
  return absl::OkStatus();
}

ClientStats InProcessClient::Stats() const {
  ClientStats s;
  s.published = Read(shared_->published);
  for (size_t i = 0; i < kPublishRefusalCount; ++i) {
    s.publish_refused[i] = Read(shared_->refused[i]);
  }
  s.publish_acked = s.published;
  const uint64_t opened = Read(shared_->opened_subscriptions);
  const uint64_t closed = Read(shared_->closed_subscriptions);
  s.subscriptions_active = opened >= closed ? opened - closed : 0;
  s.delivered = Read(shared_->delivered);
  s.received = s.delivered;
  s.decode_errors = Read(shared_->decode_errors);
  s.connected = !shared_->closed.load(std::memory_order_acquire);
  return s;
}

absl::StatusOr<v1::StatsReply> InProcessClient::BrokerAndServerStats(
    absl::Time deadline) {
  (void)deadline;  // Broker::Stats() does not wait.
  if (shared_->closed.load(std::memory_order_acquire)) {
    return Closed("broker stats");
  }
  v1::StatsReply reply;
  *reply.mutable_broker() = shared_->broker->Stats();
  return reply;  // No server in between: `server` stays unset.
}

}  // namespace herald::internal
