#include "broker/broker.h"

#include <utility>

#include "absl/time/clock.h"
#include "broker/internal/broker_core.h"
#include "broker/internal/thread_identity.h"
#include "broker/util/json.h"
#include "broker/util/status_macros.h"

namespace herald {

// --------------------------------------------------------------- TopicHandle

TopicHandle::TopicHandle(std::shared_ptr<internal::BrokerCore> core,
                         internal::TopicEntry* entry)
    : core_(std::move(core)), entry_(entry) {}

TopicHandle::TopicHandle(TopicHandle&& other) noexcept
    : core_(std::move(other.core_)),
      entry_(std::exchange(other.entry_, nullptr)) {}

TopicHandle& TopicHandle::operator=(TopicHandle&& other) noexcept {
  if (this != &other) {
    Reset();
    core_ = std::move(other.core_);
    entry_ = std::exchange(other.entry_, nullptr);
  }
  return *this;
}

TopicHandle::~TopicHandle() { Reset(); }

void TopicHandle::Reset() {
  internal::EnsureThreadIdentity();
  if (entry_ != nullptr) core_->ReleaseTopic(entry_);
  entry_ = nullptr;
  core_.reset();
}

absl::StatusOr<PublishResult> TopicHandle::Publish(absl::string_view payload,
                                                   const Headers& headers) {
  internal::EnsureThreadIdentity();
  if (entry_ == nullptr) {
    return absl::FailedPreconditionError(
        "topic handle is empty (default-constructed or moved from)");
  }
  return core_->PublishToEntry(entry_, payload, headers);
}

const std::string& TopicHandle::name() const {
  static const std::string* const kEmpty = new std::string();
  return entry_ != nullptr ? entry_->name : *kEmpty;
}

// -------------------------------------------------------------------- Broker

absl::StatusOr<std::unique_ptr<Broker>> Broker::Create(BrokerOptions options) {
  HERALD_RETURN_IF_ERROR(internal::BrokerCore::Validate(options));
  return std::unique_ptr<Broker>(
      new Broker(std::make_shared<internal::BrokerCore>(std::move(options))));
}

Broker::Broker(std::shared_ptr<internal::BrokerCore> core)
    : core_(std::move(core)) {}

Broker::~Broker() {
  internal::EnsureThreadIdentity();
  core_->Shutdown(absl::InfinitePast());
}

absl::StatusOr<PublishResult> Broker::Publish(absl::string_view topic,
                                              absl::string_view payload,
                                              const Headers& headers) {
  internal::EnsureThreadIdentity();
  return core_->Publish(topic, payload, headers);
}

absl::StatusOr<TopicHandle> Broker::Topic(absl::string_view topic) {
  internal::EnsureThreadIdentity();
  return core_->Topic(topic);
}

absl::StatusOr<Subscription> Broker::Subscribe(absl::string_view pattern,
                                               SubscriptionOptions options) {
  internal::EnsureThreadIdentity();
  return core_->Subscribe(pattern, options, nullptr);
}

absl::StatusOr<Subscription> Broker::Subscribe(absl::string_view pattern,
                                               SubscriptionOptions options,
                                               Callback callback) {
  internal::EnsureThreadIdentity();
  if (callback == nullptr) {
    return absl::InvalidArgumentError(
        absl::StrCat("subscribe to \"", pattern, "\": the callback is empty"));
  }
  return core_->Subscribe(pattern, options, std::move(callback));
}

v1::BrokerStats Broker::Stats() const {
  internal::EnsureThreadIdentity();
  return core_->Stats();
}

v1::BrokerStats Broker::Shutdown(absl::Time drain_deadline) {
  internal::EnsureThreadIdentity();
  return core_->Shutdown(drain_deadline);
}

v1::BrokerStats Broker::Shutdown(absl::Duration drain_timeout) {
  return core_->Shutdown(absl::Now() + drain_timeout);
}

const BrokerOptions& Broker::options() const { return core_->options(); }

internal::BrokerCore& internal::CoreOf(Broker& broker) { return *broker.core_; }

absl::StatusOr<std::string> StatsToJson(const v1::BrokerStats& stats) {
  return util::ProtoToJson(stats);
}

// ------------------------------------------------------------------- options

absl::string_view DropReasonName(DropReason reason) {
  switch (reason) {
    case DropReason::kQueueFull:
      return "queue_full";
    case DropReason::kEvictedOldest:
      return "evicted_oldest";
    case DropReason::kBlockTimeout:
      return "block_timeout";
    case DropReason::kClosed:
      return "closed";
    case DropReason::kShutdown:
      return "shutdown";
    case DropReason::kGroupFull:
      return "group_full";
  }
  return "unknown";
}

absl::string_view OverflowPolicyName(OverflowPolicy policy) {
  switch (policy) {
    case OverflowPolicy::kDropNewest:
      return "drop-newest";
    case OverflowPolicy::kDropOldest:
      return "drop-oldest";
    case OverflowPolicy::kBlock:
      return "block";
  }
  return "unknown";
}

}  // namespace herald
