// Subscription: the move-only handle an application receives from
// Broker::Subscribe(). Destroying it closes the subscription.
//
// Pull subscriptions take messages with Receive()/TryReceive()/
// ReceiveBatch(); callback subscriptions (Broker::Subscribe with a callback)
// have their callback run on the broker's dispatcher pool instead.
#ifndef HERALD_BROKER_SUBSCRIPTION_H_
#define HERALD_BROKER_SUBSCRIPTION_H_

#include <cstddef>
#include <cstdint>
#include <memory>
#include <stop_token>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "broker/delivery.h"
#include "broker/options.h"

namespace herald {

class Subscription;

namespace internal {
class BrokerCore;
class SubscriptionState;
// Herald's own layers (the network server) reach the state through this.
SubscriptionState* StateOf(Subscription& subscription);
}  // namespace internal

// Thread safety: the receive calls (Receive, TryReceive, ReceiveBatch) are for
// one consumer thread at a time. Close() and Totals() may be called from any
// thread, also while another thread is blocked in a receive call (which then
// returns kFailedPrecondition). Moving or destroying the handle needs external
// synchronization with every other call on it.
class Subscription {
 public:
  // An empty handle: every call but Close() returns kFailedPrecondition, and
  // Close() does too.
  Subscription() = default;
  Subscription(Subscription&& other) noexcept;
  // Closes the subscription this handle held, then takes `other`'s.
  Subscription& operator=(Subscription&& other) noexcept;
  // Closes the subscription. For a callback subscription, waits for a running
  // callback to return, except when called from inside that callback (the
  // subscription then stops when it returns).
  ~Subscription();

  // True if this handle holds a subscription that is not closed.
  bool valid() const;
  // The broker-assigned id (0 for an empty handle).
  uint64_t id() const;

  // Blocks until a message is available, `deadline` passes, or `stop` is
  // requested, and returns the message. Returns kDeadlineExceeded on timeout
  // (a deadline in the past polls once), kCancelled if `stop` was requested,
  // kOutOfRange once the broker ended the subscription (shutdown) and the
  // queue is drained, and kFailedPrecondition on an empty or closed handle or
  // a callback subscription. A queued message is returned even when the
  // deadline has passed or `stop` was already requested. After drops, the
  // result's missed() says how many messages were dropped since the previous
  // delivery.
  absl::StatusOr<Delivery> Receive(absl::Time deadline,
                                   const std::stop_token& stop = {});
  // As above, with a timeout; a timeout <= 0 polls once. The timeout starts
  // when the call finds nothing to take, so a call that finds a message at
  // once reads no clock.
  absl::StatusOr<Delivery> Receive(absl::Duration timeout,
                                   const std::stop_token& stop = {});
  // Returns a queued message without blocking, or kDeadlineExceeded if none;
  // other errors as Receive().
  absl::StatusOr<Delivery> TryReceive();
  // As Receive(), but returns up to `max_messages` (> 0, else
  // kInvalidArgument) messages once at least one is available.
  absl::StatusOr<std::vector<Delivery>> ReceiveBatch(
      size_t max_messages, absl::Time deadline,
      const std::stop_token& stop = {});
  // As above, into `*out`, whose contents it replaces (leaving it empty on an
  // error) and whose capacity it keeps: a consumer that reuses one vector
  // allocates nothing per message once the vector has grown.
  absl::Status ReceiveBatch(size_t max_messages, absl::Time deadline,
                            std::vector<Delivery>* out,
                            const std::stop_token& stop = {});

  // Closes the subscription: publishers from now on count its messages as
  // dropped (kClosed); waits until no publisher is inside a push to it and
  // (callback) until its running callback returns; counts the messages still
  // queued as abandoned. Returns the final totals, for which
  // matched == delivered + dropped() + abandoned holds exactly. A second
  // Close() returns the same totals; Close() on an empty (default or
  // moved-from) handle returns kFailedPrecondition. Blocks for at most one
  // publish on the broker (a publisher waiting for room in a kBlock queue is
  // not waited for: its push counts as kClosed).
  absl::StatusOr<SubscriptionTotals> Close();

  // A live snapshot of the counters. While publishes or receives are in
  // flight on this subscription, matched may run ahead of the other terms by
  // the operations in flight. kFailedPrecondition on an empty handle; after
  // Close(), the final totals.
  absl::StatusOr<SubscriptionTotals> Totals() const;

 private:
  friend class internal::BrokerCore;
  friend internal::SubscriptionState* internal::StateOf(Subscription&);
  Subscription(std::shared_ptr<internal::SubscriptionState> state,
               std::weak_ptr<internal::BrokerCore> core);
  absl::Status CheckOpen() const;

  // Close() does not change these (it may run while another thread is in a
  // receive call on this handle); the closed state lives in `state_`.
  std::shared_ptr<internal::SubscriptionState> state_;
  std::weak_ptr<internal::BrokerCore> core_;
};

}  // namespace herald

#endif  // HERALD_BROKER_SUBSCRIPTION_H_
