// Received: one message as an SDK subscriber receives it, the same type for
// in-process and remote clients.
//
// In-process, a Received wraps the broker's Delivery (a reference to the
// shared message: no copy). Remote, it shares the ZeroMQ frames of the Deliver
// message it arrived in (no copy either). Either way topic(), payload() and
// headers() stay valid while the Received lives, after its subscriber, its
// client or its broker are gone.
//
// Typed messages: Publisher::PublishProto() sets the header kProtoTypeHeader
// to the message's full type name; ParseProto() and
// Subscriber::ReceiveProto<T>() check it before parsing.
#ifndef HERALD_SDK_RECEIVED_H_
#define HERALD_SDK_RECEIVED_H_

#include <cstddef>
#include <cstdint>
#include <memory>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "broker/delivery.h"
#include "broker/message.h"

namespace google::protobuf {
class Message;
}  // namespace google::protobuf

namespace herald {

namespace v1 {
class DeliverEntry;
}  // namespace v1

namespace internal {
struct RemoteBatch;
struct ReceivedAccess;
}  // namespace internal

// The header that carries a typed message's full protobuf type name, e.g.
// "herald.v1.BrokerStats". Reserved (`herald-`): only the SDK sets it.
inline constexpr absl::string_view kProtoTypeHeader = "herald-type";

// A read-only view of a Received message's headers, valid while that
// Received lives. Thread-compatible.
class ReceivedHeaders {
 public:
  size_t size() const;
  bool empty() const { return size() == 0; }
  // REQUIRES: i < size().
  HeadersView::Entry operator[](size_t i) const;
  // Sets `*value` to the value of the first header named `key` and returns
  // true, or returns false if there is none.
  bool Find(absl::string_view key, absl::string_view* value) const;

 private:
  friend class Received;
  HeadersView local_;
  const v1::DeliverEntry* remote_ = nullptr;
};

// Thread-compatible (const methods may be called concurrently). Copyable:
// copies share the message.
class Received {
 public:
  // An empty Received; the accessors below require a non-empty one.
  Received() = default;

  absl::string_view topic() const;
  absl::string_view payload() const;
  ReceivedHeaders headers() const;
  // When the message was published (the broker's clock).
  absl::Time publish_time() const;

  // The subscription's admission number for the message (see
  // Delivery::sequence()). Remote: it starts again at 1 after a gap.
  uint64_t sequence() const { return sequence_; }
  // Messages the broker dropped for this subscription since the previous
  // delivery, all reasons together (see Delivery::missed()).
  uint64_t missed() const { return missed_; }
  // True on the first message after the broker lost the subscription
  // (restart or expired session) and the SDK made it again: messages
  // published in between are gone uncounted. Always false in-process.
  bool gap() const { return gap_; }
  // The broker epoch the message came from (0 in-process).
  uint64_t epoch() const { return epoch_; }

  // The value of kProtoTypeHeader, or empty if the message has none.
  absl::string_view proto_type() const;
  // Parses the payload into `message`. Returns kInvalidArgument if the
  // message carries no kProtoTypeHeader, names another type than
  // `message`'s, or its payload does not parse as that type.
  absl::Status ParseProto(google::protobuf::Message* message) const;

 private:
  friend struct internal::ReceivedAccess;

  // In-process.
  Delivery local_;
  // Remote: the Deliver message it arrived in, and its entry.
  std::shared_ptr<const internal::RemoteBatch> batch_;
  const v1::DeliverEntry* entry_ = nullptr;
  absl::string_view payload_;

  uint64_t sequence_ = 0;
  uint64_t missed_ = 0;
  bool gap_ = false;
  uint64_t epoch_ = 0;
};

// A decoded typed message and the Received it came from.
template <typename T>
struct ProtoReceived {
  T message;
  Received received;
};

}  // namespace herald

#endif  // HERALD_SDK_RECEIVED_H_
