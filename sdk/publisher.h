// Publisher: publishes bytes or protobuf messages through a herald::Client,
// the same way whether the broker is in this process or remote.
//
//   auto publisher = client->CreatePublisher({}).value();
//   HERALD_RETURN_IF_ERROR(publisher.Publish("orders.eu.created", bytes));
//   HERALD_RETURN_IF_ERROR(publisher.PublishProto("stats.broker", stats));
#ifndef HERALD_SDK_PUBLISHER_H_
#define HERALD_SDK_PUBLISHER_H_

#include <memory>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "broker/message.h"

namespace google::protobuf {
class Message;
}  // namespace google::protobuf

namespace herald {

namespace internal {
class PublisherImpl;
struct HandleAccess;
}  // namespace internal

// Thread-safe: Publish() and PublishProto() may be called from any number of
// threads. Moving or destroying the handle needs external synchronization
// with every other call on it. A Publisher may outlive its Client: its calls
// then return kFailedPrecondition.
class Publisher {
 public:
  // An empty handle: every call returns kFailedPrecondition.
  Publisher() = default;
  Publisher(Publisher&&) noexcept = default;
  Publisher& operator=(Publisher&&) noexcept = default;
  ~Publisher() = default;

  // True if this handle holds a publisher (it may still be closed).
  bool valid() const { return impl_ != nullptr; }

  // Publishes a copy of `payload` and `headers` to `topic`.
  //
  // In-process, the message goes straight into the broker (see
  // Broker::Publish()) before this returns. Remote, this returns once the
  // message is accepted into the client's bounded publish buffer; the client's
  // I/O thread sends it, batched, and the broker's refusals reach
  // ClientOptions::on_error and ClientStats. Client::Flush() waits until the
  // broker has processed it.
  //
  // Returns kInvalidArgument for an invalid topic (broker/topic.h), an empty
  // or reserved (`herald-`) header key, or a message (topic + payload +
  // headers) over the broker's max_message_bytes; kResourceExhausted when the
  // publish buffer is full and PublisherOptions::buffer_wait is zero;
  // kDeadlineExceeded when it stayed full for buffer_wait; kFailedPrecondition
  // on an empty handle, after Client::Close() began, or (in-process) once the
  // broker shut down. Each refusal is counted (ClientStats::publish_refused).
  // Blocks only to wait for room, at most buffer_wait (in-process: as
  // Broker::Publish(), for kBlock subscriptions).
  absl::Status Publish(absl::string_view topic, absl::string_view payload,
                       const Headers& headers = {});

  // Publishes `message`'s serialized bytes, with the header kProtoTypeHeader
  // (sdk/received.h) set to its full type name, after `headers`. Errors as
  // Publish(), and kInvalidArgument if the message does not serialize.
  absl::Status PublishProto(absl::string_view topic,
                            const google::protobuf::Message& message,
                            const Headers& headers = {});

 private:
  friend struct internal::HandleAccess;
  explicit Publisher(std::shared_ptr<internal::PublisherImpl> impl)
      : impl_(std::move(impl)) {}

  std::shared_ptr<internal::PublisherImpl> impl_;
};

}  // namespace herald

#endif  // HERALD_SDK_PUBLISHER_H_
