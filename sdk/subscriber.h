// Subscriber: receives the messages of one subscription made through a
// herald::Client, the same way whether the broker is in this process or
// remote. Destroying it closes the subscription.
//
//   auto sub = client->Subscribe("orders.>", {}).value();
//   absl::StatusOr<Received> m = sub.Receive(absl::Seconds(1));
//   auto typed = sub.ReceiveProto<v1::BrokerStats>(absl::Seconds(1));
//
// Remote flow control: the subscriber grants the broker credit for
// min(queue_capacity, the broker's max_credit) messages (queue_capacity unset:
// min(1024, max_credit)) and returns it in batches of half that window as the
// application consumes, so its own buffer never holds more than the window
// (one more for a moment after a reconnect). Messages beyond it wait in the
// broker's queue for this subscription, where its overflow policy drops and
// counts them.
#ifndef HERALD_SDK_SUBSCRIBER_H_
#define HERALD_SDK_SUBSCRIBER_H_

#include <cstdint>
#include <memory>
#include <stop_token>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "broker/options.h"
#include "sdk/received.h"

namespace herald {

namespace internal {
class SubscriberImpl;
struct HandleAccess;
}  // namespace internal

// Thread safety: the receive calls (Receive, TryReceive, ReceiveProto) are for
// one consumer thread at a time. Close() may be called from any thread, also
// while another is blocked in a receive call (which then returns
// kFailedPrecondition). Moving or destroying the handle needs external
// synchronization with every other call on it. A Subscriber may outlive its
// Client.
class Subscriber {
 public:
  // An empty handle: every call returns kFailedPrecondition.
  Subscriber();
  Subscriber(Subscriber&& other) noexcept;
  // Closes the subscription this handle held, then takes `other`'s.
  Subscriber& operator=(Subscriber&& other) noexcept;
  // Closes the subscription without waiting for the broker's totals. For a
  // callback subscription, waits for a running callback to return, except
  // when called from inside that callback.
  ~Subscriber();

  // True if this handle holds a subscription (it may be closed).
  bool valid() const { return impl_ != nullptr; }
  // The subscription's id: the broker's in-process, the client-chosen sid
  // remote. 0 for an empty handle.
  uint64_t id() const;
  // The pattern subscribed to (empty for an empty handle).
  const std::string& pattern() const;

  // Blocks until a message is available, `deadline` passes, or `stop` is
  // requested, and returns the message. A queued message is returned even
  // when the deadline has passed or `stop` was already requested. Returns
  // kDeadlineExceeded on timeout (a deadline in the past polls once),
  // kCancelled if `stop` was requested, kOutOfRange once the broker ended the
  // subscription and the buffered messages are drained (in-process: broker
  // shutdown; remote: the broker refused to re-make it after a restart), and
  // kFailedPrecondition on an empty or closed handle, after Client::Close(),
  // or for a callback subscription. Remote: while the client reconnects it
  // keeps waiting (never kUnavailable); the first message after a broker
  // restart has gap() set.
  absl::StatusOr<Received> Receive(absl::Time deadline,
                                   std::stop_token stop = {});
  // As above, with a timeout; a timeout <= 0 polls once. The timeout starts
  // when the call finds nothing to take, so a call that finds a message at
  // once reads no clock.
  absl::StatusOr<Received> Receive(absl::Duration timeout,
                                   std::stop_token stop = {});
  // Returns a buffered message without blocking, or kDeadlineExceeded if
  // none; other errors as Receive().
  absl::StatusOr<Received> TryReceive();

  // Receives one message as Receive() and decodes it as a T (a generated
  // protobuf message type). Besides Receive()'s errors, returns
  // kInvalidArgument (counted ClientStats::decode_errors; the message is
  // consumed) when the message's kProtoTypeHeader is missing or names
  // another type, or its payload does not parse.
  template <typename T>
  absl::StatusOr<ProtoReceived<T>> ReceiveProto(absl::Time deadline,
                                                std::stop_token stop = {}) {
    absl::StatusOr<Received> r = Receive(deadline, std::move(stop));
    if (!r.ok()) return r.status();
    ProtoReceived<T> out;
    if (absl::Status s = r->ParseProto(&out.message); !s.ok()) {
      NoteDecodeError();
      return s;
    }
    out.received = *std::move(r);
    return out;
  }
  template <typename T>
  absl::StatusOr<ProtoReceived<T>> ReceiveProto(absl::Duration timeout,
                                                std::stop_token stop = {}) {
    return ReceiveProto<T>(absl::Now() + timeout, std::move(stop));
  }

  // Closes the subscription and returns its final totals, for which
  // matched == delivered + dropped() + abandoned holds exactly: `delivered`
  // counts what the application took, and messages buffered in the client
  // when it closed count as abandoned. Remote, after a broker restart they
  // are the totals of the subscription the SDK made again (the new broker
  // knows nothing earlier); messages of the earlier broker still buffered
  // then count in neither. A second Close() returns the same result. Returns
  // kFailedPrecondition on an empty handle, after Client::Close(), or when
  // called from the subscription's own callback while another thread is closing
  // it (that close waits for the callback); remote, kUnavailable if the broker
  // did not send the totals within ClientOptions::request_timeout or restarted
  // meanwhile (the subscription is closed all the same). Blocks for at most one
  // broker round trip (remote) or one publish (in-process, see
  // Subscription::Close()).
  absl::StatusOr<SubscriptionTotals> Close();

 private:
  friend struct internal::HandleAccess;
  explicit Subscriber(std::unique_ptr<internal::SubscriberImpl> impl);
  void NoteDecodeError();

  std::unique_ptr<internal::SubscriberImpl> impl_;
};

}  // namespace herald

#endif  // HERALD_SDK_SUBSCRIBER_H_
