// Delivery: one message as a subscriber receives it.
//
// A Delivery holds a reference to the broker's message, so topic(), payload()
// and headers() stay valid while it lives, even after its subscription is
// closed or the broker is destroyed.
#ifndef HERALD_BROKER_DELIVERY_H_
#define HERALD_BROKER_DELIVERY_H_

#include <cstdint>
#include <utility>

#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "broker/message.h"

namespace herald {

// Thread-compatible (const methods may be called concurrently).
class Delivery {
 public:
  Delivery() = default;
  Delivery(MessageRef message, uint64_t sequence, uint64_t missed)
      : message_(std::move(message)), sequence_(sequence), missed_(missed) {}

  absl::string_view topic() const { return message_->topic(); }
  absl::string_view payload() const { return message_->payload(); }
  HeadersView headers() const { return message_->headers(); }
  // When Publish() was called.
  absl::Time publish_time() const { return message_->publish_time(); }

  // This subscription's admission number for the message: 1 for the first
  // message queued, increasing in delivery order. Drops leave gaps only for
  // kDropOldest evictions (an evicted message had a number).
  uint64_t sequence() const { return sequence_; }
  // Messages dropped for this subscription since the previous delivery, all
  // reasons together: a count, not a position. Drops are looked at once per
  // receive call, so the later deliveries of a batch report 0 and a drop
  // during a call is reported by the next call's first delivery.
  uint64_t missed() const { return missed_; }

  // The shared message itself.
  const MessageRef& message() const { return message_; }

 private:
  MessageRef message_;
  uint64_t sequence_ = 0;
  uint64_t missed_ = 0;
};

}  // namespace herald

#endif  // HERALD_BROKER_DELIVERY_H_
