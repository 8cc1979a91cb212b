// herald::Client: one API for publishing and subscribing whether the broker
// is embedded in this process or reached over ZeroMQ, chosen by URL.
//
//   // In-process, on a Broker the application owns:
//   auto client = herald::Client::Connect("inproc:", {}, broker.get());
//   // Remote, through the broker's net::Server (docs/protocol.md):
//   auto client = herald::Client::Connect("tcp://127.0.0.1:7450");
//
//   auto publisher = (*client)->CreatePublisher({}).value();
//   auto subscriber = (*client)->Subscribe("orders.>", {}).value();
//   publisher.Publish("orders.eu.created", "{...}").IgnoreError();
//   (*client)->Flush(absl::Now() + absl::Seconds(1)).IgnoreError();
//   auto message = subscriber.Receive(absl::Seconds(1));
//
// Publisher (sdk/publisher.h), Subscriber (sdk/subscriber.h) and Received
// (sdk/received.h) behave the same over both; the differences are named in
// their comments (the publish buffer, credit, reconnects). Errors follow
// docs/errors.md. A remote client has one I/O thread that owns its ZeroMQ
// DEALER socket; the calls hand it work through a mutex-protected queue and
// wake it through an eventfd. While it is idle, a publishing thread sends
// its own batch and a thread waiting in Receive() reads the socket itself
// (docs/design/net.md).
#ifndef HERALD_SDK_CLIENT_H_
#define HERALD_SDK_CLIENT_H_

#include <functional>
#include <memory>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "broker/broker.h"
#include "broker/options.h"
#include "schemas/protocol.pb.h"
#include "schemas/stats.pb.h"
#include "sdk/options.h"
#include "sdk/publisher.h"
#include "sdk/received.h"
#include "sdk/stats.h"
#include "sdk/subscriber.h"

namespace herald {

// Thread-safe: every method may be called from any thread. The abstract seam
// between the in-process and the remote implementation.
class Client {
 public:
  // Called for each message of a callback subscription, never concurrently
  // with itself and in order, in turns of at most callback_batch_limit
  // messages. In-process it runs on the broker's dispatcher pool; remote, on
  // the client's pool of ClientOptions::callback_threads.
  using Callback = std::function<void(const Received&)>;

  // Makes a client for `url`:
  //   "inproc:"          the in-process `broker` (non-null; it must outlive
  //                      the client and every handle made from it);
  //   "tcp://host:port"  a broker's net::Server SDK endpoint;
  //   "ipc:///path"      the same over a Unix socket.
  // Remote, blocks until the broker's Welcome, at most
  // options.connect_timeout. Returns kInvalidArgument for an unknown scheme,
  // an endpoint ZeroMQ refuses, a bad option, a missing `broker` for
  // inproc: or one given with another scheme; kUnavailable if the broker did
  // not answer in time; a broker's refusal as it came (kResourceExhausted
  // past its max_clients, kUnimplemented for a protocol version it does not
  // speak).
  static absl::StatusOr<std::unique_ptr<Client>> Connect(
      absl::string_view url, ClientOptions options = {},
      Broker* broker = nullptr);

  // Close(now + options.linger), ignoring its result.
  virtual ~Client() = default;

  // Makes a publisher. Returns kInvalidArgument for a bad option and
  // kFailedPrecondition after Close() began. Never blocks.
  virtual absl::StatusOr<Publisher> CreatePublisher(
      PublisherOptions options) = 0;

  // Subscribes to `pattern` for pulling messages with Subscriber::Receive().
  // The subscription is live when this returns: every later publish that
  // matches reaches it (remote: once the broker's Ack came back). Returns
  // kInvalidArgument for an invalid pattern or option (checked locally, then
  // by the broker: see Broker::Subscribe()), kResourceExhausted past the
  // broker's subscription limits, kFailedPrecondition after Close() began or
  // once the broker shut down; remote, kUnavailable if the broker did not
  // answer within options.request_timeout (through reconnects).
  virtual absl::StatusOr<Subscriber> Subscribe(absl::string_view pattern,
                                               SubscriptionOptions options) = 0;
  // As above, but `callback` (non-null, else kInvalidArgument) receives the
  // messages (see Callback). Subscriber::Receive() then returns
  // kFailedPrecondition.
  virtual absl::StatusOr<Subscriber> Subscribe(absl::string_view pattern,
                                               SubscriptionOptions options,
                                               Callback callback) = 0;

  // Waits until every message published through this client before the call
  // has been processed by the broker (delivered into the matching
  // subscriptions' queues, or refused and counted), and every earlier
  // subscribe, credit and close has reached it: a round trip, through
  // reconnects (a batch lost to a broker restart counts as processed, and as
  // lost in Stats()). Returns kDeadlineExceeded if `deadline` passes first
  // and kFailedPrecondition after Close() began. In-process it returns at
  // once: publishes are synchronous.
  virtual absl::Status Flush(absl::Time deadline) = 0;

  // Closes the client: refuses new publishes and subscribes
  // (kFailedPrecondition), flushes until `deadline`, then counts what is
  // left unsent or unacknowledged as dropped (ClientStats), closes every
  // subscriber (their receive calls return kFailedPrecondition; buffered
  // messages count as abandoned), says Goodbye to the broker and joins the
  // I/O thread. Returns OK if the flush completed, kDeadlineExceeded if not.
  // A later call waits for the first and returns its result; made from one
  // of this client's callbacks (which the first call waits for), it
  // returns once the client stops sending and receiving. REQUIRES: not
  // called from ClientOptions::on_error. Blocks until `deadline` at most
  // (plus the I/O thread's exit).
  virtual absl::Status Close(absl::Time deadline) = 0;

  // A snapshot of the SDK's own counters (never blocks on the network).
  virtual ClientStats Stats() const = 0;

  // The broker's counters (`broker`: in-process Broker::Stats()) and, remote,
  // those of the network server the client talks to (`server`: its
  // sessions, network traffic and refused input; absent in-process). Remote
  // it is a StatsRequest round trip. Returns kDeadlineExceeded if no answer
  // came by `deadline` and kFailedPrecondition after Close() began.
  virtual absl::StatusOr<v1::StatsReply> BrokerAndServerStats(
      absl::Time deadline) = 0;

  // The broker's part of BrokerAndServerStats().
  absl::StatusOr<v1::BrokerStats> BrokerStats(absl::Time deadline);
};

}  // namespace herald

#endif  // HERALD_SDK_CLIENT_H_
