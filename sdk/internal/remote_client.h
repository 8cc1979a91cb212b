// RemoteClient: herald::Client over a broker's net::Server ("tcp://",
// "ipc://"), speaking docs/protocol.md on a ZeroMQ DEALER socket.
//
// One I/O thread owns the socket's session: it reads, keeps time and does
// whatever API calls hand it through a mutex-protected queue, woken through
// an eventfd (not an inproc socket: ThreadSanitizer cannot see hand-offs
// through libzmq). A ZeroMQ socket is not thread-safe, so the socket and the
// protocol state are guarded by one mutex (io_mu_) that the I/O thread holds
// for its whole turn and lets go of only to sleep in poll() on the socket's
// ZMQ_FD and the eventfd. ZMQ_FD is edge-triggered: whoever touches the
// socket asks ZMQ_EVENTS afterwards, and a publishing thread that finds a
// message to read wakes the I/O thread, so no arrival waits for a timer.
//
// Publishing: Publish() copies the message into a bounded buffer. While
// the window of unsettled batches has room (a light load), it goes out at
// once: sent by the
// publishing thread itself if the I/O thread is asleep (no wake-up, one
// thread hop less), else by the I/O thread. Otherwise the buffer coalesces
// into the next batch (up to the broker's max_batch_messages and
// max_message_bytes), which the I/O thread sends when an Ack comes. An Ack
// is asked only while none is awaited; its publish progress settles the
// batches sent in between (docs/protocol.md, "Publishing"). Flush()
// is a Ping/Pong round trip sent after every batch it covers.
//
// Sessions: Hello/Welcome, then a Ping every heartbeat. A dropped connection
// (seen through a socket monitor read on the I/O thread), an Error answering
// a Ping (the broker lost the session) or silence past the liveness timeout
// makes the client say Hello again with the same session id; ZeroMQ
// re-establishes the connection by itself, and Hello goes out as soon as its
// handshake completes. A Goodbye (the broker is stopping) keeps the session
// while the broker drains: deliveries and credit continue, publishes and
// subscribes wait for the next session. If a Welcome shows the session was
// lost (not resumed, or a new epoch), unacknowledged batches are counted lost
// and every subscription is made again with its own sid; its next delivery
// reports the gap.
//
// Internal to sdk/: made by Client::Connect().
#ifndef HERALD_SDK_INTERNAL_REMOTE_CLIENT_H_
#define HERALD_SDK_INTERNAL_REMOTE_CLIENT_H_

#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "sdk/client.h"

namespace herald::internal {

class RemoteCore;

// Thread-safe.
class RemoteClient final : public Client {
 public:
  // Connects to `url` and waits for the broker's Welcome (see
  // Client::Connect()). REQUIRES: ValidateClientOptions(options).ok().
  static absl::StatusOr<std::unique_ptr<Client>> Connect(absl::string_view url,
                                                         ClientOptions options);

  // Close(now + linger).
  ~RemoteClient() override;

  // herald::Client
  absl::StatusOr<Publisher> CreatePublisher(PublisherOptions options) override;
  absl::StatusOr<Subscriber> Subscribe(absl::string_view pattern,
                                       SubscriptionOptions options) override;
  absl::StatusOr<Subscriber> Subscribe(absl::string_view pattern,
                                       SubscriptionOptions options,
                                       Callback callback) override;
  absl::Status Flush(absl::Time deadline) override;
  absl::Status Close(absl::Time deadline) override;
  ClientStats Stats() const override;
  absl::StatusOr<v1::StatsReply> BrokerAndServerStats(
      absl::Time deadline) override;

 private:
  explicit RemoteClient(std::shared_ptr<RemoteCore> core);

  // Shared with the handles, which may outlive the client.
  const std::shared_ptr<RemoteCore> core_;
};

}  // namespace herald::internal

#endif  // HERALD_SDK_INTERNAL_REMOTE_CLIENT_H_
