// Options of the SDK: ClientOptions (one per Client) and PublisherOptions.
//
// Subscribers take the broker's own herald::SubscriptionOptions
// (broker/options.h), so a subscription means the same in-process and over
// the network. Every field documents its meaning, its default and its valid
// range; Client::Connect() and CreatePublisher() refuse a bad value with
// kInvalidArgument, never clamping it.
#ifndef HERALD_SDK_OPTIONS_H_
#define HERALD_SDK_OPTIONS_H_

#include <cstddef>
#include <functional>
#include <string>

#include "absl/status/status.h"
#include "absl/time/time.h"

namespace herald {

struct ClientOptions {
  // A label sent to the broker in Hello. Default: empty.
  std::string name;

  // Remote clients: the most messages accepted by Publish() and not yet sent
  // to the broker (the publish buffer). When it is full, Publish() refuses
  // (kResourceExhausted) or waits (see PublisherOptions::buffer_wait).
  // In-process clients have no buffer: a publish goes straight into the
  // broker. Default: 8192. Must be > 0.
  size_t publish_buffer = 8192;

  // Remote clients: how long Connect() waits for the broker's Welcome.
  // Default: 5s. Must be > 0.
  absl::Duration connect_timeout = absl::Seconds(5);

  // Remote clients: how long Subscribe() and Subscriber::Close() wait for the
  // broker's answer, through reconnects. Default: 10s. Must be > 0.
  absl::Duration request_timeout = absl::Seconds(10);

  // Remote clients: the interval between the client's Pings. Zero (the
  // default): a third of the session time-to-live the broker announces in
  // Welcome. Must be >= 0.
  absl::Duration heartbeat = absl::ZeroDuration();

  // Remote clients: when nothing has arrived from the broker for this long,
  // the client takes the session as lost and says Hello again. Zero (the
  // default): the session time-to-live from Welcome. Must be >= 0.
  absl::Duration liveness_timeout = absl::ZeroDuration();

  // Remote clients: the first interval between Hellos while (re)connecting;
  // it doubles up to 1s while the broker stays silent. Default: 50ms.
  // Must be > 0.
  absl::Duration reconnect_interval = absl::Milliseconds(50);

  // Remote clients: the threads that run callback subscriptions, started
  // with the first one. Each subscription runs one turn (at most its
  // callback_batch_limit messages) at a time, in order; a stuck callback
  // holds one thread. Default: 2. Must be > 0.
  size_t callback_threads = 2;

  // Remote clients: how many publish batches may be unsettled (awaiting
  // the broker's Ack) before the client coalesces further messages into the
  // next batch. More than one is in flight only while fewer than 64
  // messages are (a light load: a message goes out at once instead of
  // waiting a round trip); under a heavy load one batch is, and the rest
  // coalesce. Under a light load the client asks an Ack about once per
  // round trip, not per batch, so this must cover a round trip's worth of
  // batches. Default: 16. Must be > 0 (1: strictly one batch at a time).
  size_t max_unacked_batches = 16;

  // How long the destructor lets buffered publishes reach the broker: it
  // calls Close(now + linger). Default: 1s. Must be >= 0.
  absl::Duration linger = absl::Seconds(1);

  // Remote clients: called for errors that no call returns — a publish the
  // broker refused after Publish() had accepted it, a subscription the
  // broker would not re-make after a restart. Runs on the client's I/O
  // thread (or, for a send ZeroMQ fails, inside the Publish() that sent its
  // batch itself): it must not block and must not call the client. Default:
  // none (the errors are still counted in ClientStats).
  std::function<void(const absl::Status&)> on_error;
};

struct PublisherOptions {
  // How long Publish() waits for room when the client's publish buffer is
  // full. Zero (the default): it does not wait and returns
  // kResourceExhausted. Positive: it waits up to this long and then returns
  // kDeadlineExceeded. Must be >= 0. (In-process clients have no buffer.)
  absl::Duration buffer_wait = absl::ZeroDuration();
};

// kInvalidArgument naming the first field out of range, else OK.
absl::Status ValidateClientOptions(const ClientOptions& options);
absl::Status ValidatePublisherOptions(const PublisherOptions& options);

}  // namespace herald

#endif  // HERALD_SDK_OPTIONS_H_
