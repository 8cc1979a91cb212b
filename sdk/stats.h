// ClientStats: the SDK's own counters, under names distinct from the
// broker's, so that no message is lost between the two layers unseen.
//
// Publishing (remote clients), once nothing is in flight:
//   published == publish_acked + publish_buffered + publish_in_flight
//                + publish_dropped()
// where publish_refused counts the calls Publish() refused (the caller saw
// the error; those messages are not in `published`). In-process clients
// publish straight into the broker: publish_acked == published.
//
// Receiving, once nothing is in flight:
//   received == delivered + receive_buffered + abandoned
// (remote: `received` counts what arrived from the broker; in-process it is
// what the subscribers took from their queues, so it equals `delivered`).
// The broker's own per-subscription counters (matched, dropped by reason,
// queued) are in Client::BrokerStats().
#ifndef HERALD_SDK_STATS_H_
#define HERALD_SDK_STATS_H_

#include <array>
#include <cstddef>
#include <cstdint>
#include <string>

#include "absl/strings/string_view.h"

namespace herald {

// Why Publish() refused a message (the call returned an error).
enum class PublishRefusal {
  kInvalid = 0,        // kInvalidArgument: topic, header or size (checked
                       // locally against the broker's limits).
  kBufferFull = 1,     // kResourceExhausted: the publish buffer was full.
  kBufferTimeout = 2,  // kDeadlineExceeded: it stayed full past the wait.
  kClosed = 3,         // kFailedPrecondition: the client (or, in-process,
                       // the broker) was closed.
};
inline constexpr size_t kPublishRefusalCount = 4;

// Why a message that Publish() accepted did not reach the broker.
enum class PublishDrop {
  kUnsentAtClose = 0,   // Still in the publish buffer when Close()'s
                        // deadline passed.
  kUnackedAtClose = 1,  // Sent, but its batch was not acknowledged when
                        // Close()'s deadline passed.
  kBrokerRefused = 2,   // The broker refused it (an Error for its entry;
                        // ClientOptions::on_error is told).
  kLost = 3,            // Sent in a batch the broker never confirmed:
                        // unacknowledged when the broker restarted (a new
                        // epoch), or when a later batch was acknowledged.
                        // A broker that went away between processing a
                        // batch and acknowledging it may have published
                        // it: counted here all the same, since no one can
                        // tell (at most once, never silently).
};
inline constexpr size_t kPublishDropCount = 4;

// "invalid", "buffer_full", ...: the names used in stats output.
absl::string_view PublishRefusalName(PublishRefusal reason);
absl::string_view PublishDropName(PublishDrop reason);

// A snapshot of a client's counters (Client::Stats()). Gauges are marked;
// the rest only grow. Thread-compatible.
struct ClientStats {
  // --- Publishing.
  // Messages Publish() accepted.
  uint64_t published = 0;
  // Publish() calls refused, by reason (PublishRefusal index).
  std::array<uint64_t, kPublishRefusalCount> publish_refused{};
  // Accepted messages that did not reach the broker, by reason (PublishDrop
  // index).
  std::array<uint64_t, kPublishDropCount> publish_dropped_by_reason{};
  // Gauge: messages in the publish buffer, not yet sent.
  uint64_t publish_buffered = 0;
  // The most messages the publish buffer has held.
  uint64_t publish_buffer_high_water = 0;
  // Gauge: messages taken from the buffer into a batch that the broker has
  // not acknowledged yet (sent, or about to be while the socket is busy).
  uint64_t publish_in_flight = 0;
  // Messages in acknowledged batches that the broker took (its refusals are
  // counted in publish_dropped_by_reason[kBrokerRefused] instead).
  uint64_t publish_acked = 0;
  // Publish batches sent, acknowledged, and lost to a broker restart.
  uint64_t batches_sent = 0;
  uint64_t batches_acked = 0;
  uint64_t batches_lost = 0;
  // Of batches_sent, those the publishing thread sent itself, having found
  // the client's I/O thread idle (one thread hop less than a wake-up).
  uint64_t batches_sent_inline = 0;

  // --- Receiving.
  // Gauge: subscribers open.
  uint64_t subscriptions_active = 0;
  // Messages that reached the client's subscribers.
  uint64_t received = 0;
  // Messages handed to the application (Receive() or a callback).
  uint64_t delivered = 0;
  // Gauge: messages received and not yet taken by the application. Bounded
  // by each subscriber's credit window.
  uint64_t receive_buffered = 0;
  // Messages still buffered when their subscriber (or the client) closed.
  uint64_t abandoned = 0;
  // Messages that arrived for a subscription the client had already closed
  // (the broker counts them delivered; the client discards them).
  uint64_t discarded = 0;
  // Credit (messages) returned to the broker.
  uint64_t credit_returned = 0;
  // Subscriptions re-made after the broker lost them (restart or expired
  // session); each is reported once, on its next delivery (gap()).
  uint64_t gaps = 0;
  // ReceiveProto() calls that found another type or bytes that do not parse.
  uint64_t decode_errors = 0;
  // Of received, those a thread waiting in Receive() read from the socket
  // itself, having found the client's I/O thread idle (one thread hop less
  // than a hand-off).
  uint64_t received_inline = 0;

  // --- Session (remote clients).
  // Welcomes accepted: 1 after Connect(), one more per reconnect.
  uint64_t sessions = 0;
  // Sessions re-established after the first (Goodbye, or the broker silent
  // past the liveness timeout).
  uint64_t reconnects = 0;
  // Heartbeat Pings sent. The Pings that Flush() and the settling of
  // unacknowledged batches send are not heartbeats and not counted here.
  uint64_t pings_sent = 0;
  // Error messages from the broker, all kinds.
  uint64_t errors_received = 0;
  // Incoming messages the client could not use (bad magic, unparsable
  // envelope, payload count mismatch, unknown command): counted, dropped.
  uint64_t protocol_errors = 0;
  // The epoch of the broker's current session (0 in-process or before the
  // first Welcome).
  uint64_t broker_epoch = 0;
  // Gauge: a session is established and the broker is not stopping (after
  // its Goodbye). In-process: true until Close().
  bool connected = false;

  uint64_t publish_dropped() const {
    uint64_t sum = 0;
    for (uint64_t n : publish_dropped_by_reason) sum += n;
    return sum;
  }
  uint64_t publish_dropped(PublishDrop reason) const {
    return publish_dropped_by_reason[static_cast<size_t>(reason)];
  }
  uint64_t refused(PublishRefusal reason) const {
    return publish_refused[static_cast<size_t>(reason)];
  }

  // Every counter as `name=value` pairs on one line, for logs.
  std::string DebugString() const;
};

}  // namespace herald

#endif  // HERALD_SDK_STATS_H_
