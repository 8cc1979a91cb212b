#include "broker/subscription.h"

#include <utility>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "broker/internal/broker_core.h"
#include "broker/internal/subscription_state.h"
#include "broker/internal/thread_identity.h"

namespace herald {

Subscription::Subscription(std::shared_ptr<internal::SubscriptionState> state,
                           std::weak_ptr<internal::BrokerCore> core)
    : state_(std::move(state)), core_(std::move(core)) {}

Subscription::Subscription(Subscription&& other) noexcept
    : state_(std::move(other.state_)), core_(std::move(other.core_)) {}

Subscription& Subscription::operator=(Subscription&& other) noexcept {
  if (this != &other) {
    // Closing the subscription this handle held: its totals are not wanted,
    // and closing a held subscription cannot fail.
    if (state_ != nullptr) Close().IgnoreError();
    state_ = std::move(other.state_);
    core_ = std::move(other.core_);
  }
  return *this;
}

Subscription::~Subscription() {
  // Closing cannot fail for a held subscription; the totals are not wanted.
  if (state_ != nullptr) Close().IgnoreError();
}

bool Subscription::valid() const {
  return state_ != nullptr && !state_->owner_closed();
}

uint64_t Subscription::id() const {
  return state_ != nullptr ? state_->id() : 0;
}

absl::Status Subscription::CheckOpen() const {
  internal::EnsureThreadIdentity();
  if (state_ == nullptr) {
    return absl::FailedPreconditionError(
        "subscription handle is empty (default-constructed or moved from)");
  }
  return absl::OkStatus();
}

absl::StatusOr<Delivery> Subscription::Receive(absl::Time deadline,
                                               const std::stop_token& stop) {
  if (absl::Status s = CheckOpen(); !s.ok()) return s;
  return state_->Receive(internal::Deadline::At(deadline), stop);
}

absl::StatusOr<Delivery> Subscription::Receive(absl::Duration timeout,
                                               const std::stop_token& stop) {
  if (absl::Status s = CheckOpen(); !s.ok()) return s;
  return state_->Receive(internal::Deadline::After(timeout), stop);
}

absl::StatusOr<Delivery> Subscription::TryReceive() {
  return Receive(absl::InfinitePast());
}

absl::StatusOr<std::vector<Delivery>> Subscription::ReceiveBatch(
    size_t max_messages, absl::Time deadline, const std::stop_token& stop) {
  std::vector<Delivery> out;
  if (absl::Status s = ReceiveBatch(max_messages, deadline, &out, stop);
      !s.ok()) {
    return s;
  }
  return out;
}

absl::Status Subscription::ReceiveBatch(size_t max_messages,
                                        absl::Time deadline,
                                        std::vector<Delivery>* out,
                                        const std::stop_token& stop) {
  if (absl::Status s = CheckOpen(); !s.ok()) {
    out->clear();
    return s;
  }
  return state_->ReceiveBatch(max_messages, internal::Deadline::At(deadline),
                              out, stop);
}

absl::StatusOr<SubscriptionTotals> Subscription::Close() {
  if (absl::Status s = CheckOpen(); !s.ok()) return s;
  if (std::shared_ptr<internal::BrokerCore> core = core_.lock()) {
    return core->Unsubscribe(state_);
  }
  // The broker is gone; it ended the subscription when it shut down.
  state_->MarkClosing();
  return state_->FinishClose();
}

internal::SubscriptionState* internal::StateOf(Subscription& subscription) {
  return subscription.state_.get();
}

absl::StatusOr<SubscriptionTotals> Subscription::Totals() const {
  if (absl::Status s = CheckOpen(); !s.ok()) return s;
  return state_->Totals();
}

}  // namespace herald
