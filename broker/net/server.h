// herald::net::Server: serves a herald::Broker over ZeroMQ.
//
// An application (or heraldd) attaches a Server to a Broker it owns; other
// processes then publish and subscribe through the SDK (ROUTER endpoint,
// protocol in docs/protocol.md) or with plain ZeroMQ PUB/SUB sockets (XSUB
// and XPUB endpoints). Remote subscriptions are core subscriptions with their
// own bounded queues and counters, sent within the client's credit, so no
// message is lost silently inside ZeroMQ.
//
// One I/O thread owns every socket; it never blocks on a core queue (it is
// woken through an eventfd when remote subscriptions have messages).
#ifndef HERALD_BROKER_NET_SERVER_H_
#define HERALD_BROKER_NET_SERVER_H_

#include <cstddef>
#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/time/time.h"
#include "broker/broker.h"
#include "schemas/protocol.pb.h"

namespace herald::net {

// The protocol version this server speaks (frame 0's last byte).
inline constexpr uint8_t kProtocolVersion = 1;

struct ServerOptions {
  // SDK endpoint (ROUTER). Empty: not served. Default: tcp://127.0.0.1:7450.
  // Use port `*` to let the OS choose; the bound endpoint is reported by
  // Server::sdk_endpoint().
  std::string sdk_endpoint = "tcp://127.0.0.1:7450";
  // Plain publish endpoint (XSUB) for any ZeroMQ PUB socket. Empty: not
  // served. Default: tcp://127.0.0.1:7451.
  std::string publish_endpoint = "tcp://127.0.0.1:7451";
  // Plain subscribe endpoint (XPUB) for any ZeroMQ SUB socket. Empty: not
  // served. Default: tcp://127.0.0.1:7452.
  std::string subscribe_endpoint = "tcp://127.0.0.1:7452";
  // Most SDK sessions at once; past it Hello gets kResourceExhausted.
  // Default: 1024. Must be > 0.
  size_t max_clients = 1024;
  // Most subscriptions per session. Default: 1024. Must be > 0.
  size_t max_subscriptions_per_client = 1024;
  // Most queue capacity (messages) one session's subscriptions may hold
  // together; past it Subscribe gets kResourceExhausted. A queue takes its
  // whole capacity in memory when it is made (16 bytes a slot), so this
  // bounds what one client can make the server allocate: 1 << 22 slots is
  // 64 MiB. Default: 1 << 22 (four queues of the broker's default
  // max_queue_capacity). Must be > 0.
  size_t max_queue_capacity_per_client = size_t{1} << 22;
  // Most bytes (frames after the routing id, summed) of the messages one
  // session may have waiting behind a Publish blocked by a full kBlock
  // queue; past it, or past 1024 messages, a message gets
  // kResourceExhausted (counted held_full). The SDK sends at most
  // max_unacked_batches batches of at most max_message_bytes each, plus
  // small requests, so keep this above max_unacked_batches times the
  // broker's max_message_bytes (16 MiB with the defaults). Default: 64 MiB.
  // Must be > 0.
  size_t max_held_bytes_per_client = size_t{64} << 20;
  // A session silent this long expires. Default: 10s. Must be > 0.
  absl::Duration session_ttl = absl::Seconds(10);
  // Most entries in one Publish batch. Default: 1024. Must be > 0.
  size_t max_batch_messages = 1024;
  // Most credit (messages in flight) one subscription may hold. Default:
  // 1024. Must be > 0. A session's total credit is capped below the ROUTER's
  // send high-water mark, which the server sets accordingly.
  size_t max_credit = 1024;
  // Queue capacity of the plain subscribe endpoint's core subscription (its
  // feed). Default: 65536. Must be <= the broker's max_queue_capacity.
  size_t plain_queue_capacity = 65536;
  // The feed is open while some plain SUB subscribes to something, and
  // closes once none has for this long: opening and closing it touches
  // every topic, which SUBs coming and going should not make the server do
  // each time. Default: 1s. Must be >= 0.
  absl::Duration plain_feed_linger = absl::Seconds(1);
  // How long Stop() lets unsent messages (the Goodbyes among them) go out
  // (ZMQ_LINGER), never past Stop()'s deadline. Default: 100ms.
  absl::Duration linger = absl::Milliseconds(100);
};

// Thread-safe.
class Server {
 public:
  // Binds the endpoints and starts the I/O thread. `broker` must outlive the
  // server. Returns kInvalidArgument for a bad option, kUnavailable if an
  // endpoint cannot be bound (naming it and ZeroMQ's error).
  static absl::StatusOr<std::unique_ptr<Server>> Start(Broker* broker,
                                                       ServerOptions options);
  // Stop(), with no linger.
  ~Server();

  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;

  // The bound endpoints (with the OS-chosen port resolved), or empty.
  const std::string& sdk_endpoint() const { return sdk_endpoint_; }
  const std::string& publish_endpoint() const { return publish_endpoint_; }
  const std::string& subscribe_endpoint() const { return subscribe_endpoint_; }
  // This broker run's epoch, sent in Welcome.
  uint64_t epoch() const { return epoch_; }

  // First step of a graceful stop: sends Goodbye to every session, then
  // refuses new sessions, publishes and subscribes (kUnavailable; plain
  // publishes are refused and counted), while remote subscriptions keep
  // being delivered within credit, so that Broker::Shutdown(drain) can let
  // them drain. Returns at once. Idempotent.
  void StopIntake();

  // Stops intake (if not done), closes the remote subscriptions (their
  // totals stay in the broker's stats), closes the sockets (letting unsent
  // messages go for the configured linger, at most until `deadline`) and
  // joins the I/O thread. Idempotent. Does not shut the broker down.
  //
  // DESIGN.md's order for a daemon: StopIntake(), Broker::Shutdown(drain),
  // then Stop(deadline).
  void Stop(absl::Time deadline);

  // A snapshot of the server's counters.
  v1::ServerStats Stats() const;

 private:
  class Impl;
  explicit Server(std::unique_ptr<Impl> impl);

  std::unique_ptr<Impl> impl_;
  std::string sdk_endpoint_;
  std::string publish_endpoint_;
  std::string subscribe_endpoint_;
  uint64_t epoch_ = 0;
};

}  // namespace herald::net

#endif  // HERALD_BROKER_NET_SERVER_H_
