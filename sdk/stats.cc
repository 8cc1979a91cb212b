#include "sdk/stats.h"

#include <string>

#include "absl/strings/str_cat.h"

namespace herald {

absl::string_view PublishRefusalName(PublishRefusal reason) {
  switch (reason) {
    case PublishRefusal::kInvalid:
      return "invalid";
    case PublishRefusal::kBufferFull:
      return "buffer_full";
    case PublishRefusal::kBufferTimeout:
      return "buffer_timeout";
    case PublishRefusal::kClosed:
      return "closed";
  }
  return "unknown";
}

absl::string_view PublishDropName(PublishDrop reason) {
  switch (reason) {
    case PublishDrop::kUnsentAtClose:
      return "unsent_at_close";
    case PublishDrop::kUnackedAtClose:
      return "unacked_at_close";
    case PublishDrop::kBrokerRefused:
      return "broker_refused";
    case PublishDrop::kLost:
      return "lost";
  }
  return "unknown";
}

std::string ClientStats::DebugString() const {
  std::string out = absl::StrCat("published=", published);
  for (size_t i = 0; i < kPublishRefusalCount; ++i) {
    absl::StrAppend(&out, " publish_refused.",
                    PublishRefusalName(static_cast<PublishRefusal>(i)), "=",
                    publish_refused[i]);
  }
  for (size_t i = 0; i < kPublishDropCount; ++i) {
    absl::StrAppend(&out, " publish_dropped.",
                    PublishDropName(static_cast<PublishDrop>(i)), "=",
                    publish_dropped_by_reason[i]);
  }
  absl::StrAppend(
      &out, " publish_buffered=", publish_buffered,
      " publish_buffer_high_water=", publish_buffer_high_water,
      " publish_in_flight=", publish_in_flight,
      " publish_acked=", publish_acked, " batches_sent=", batches_sent,
      " batches_acked=", batches_acked, " batches_lost=", batches_lost,
      " batches_sent_inline=", batches_sent_inline,
      " subscriptions_active=", subscriptions_active, " received=", received,
      " delivered=", delivered, " receive_buffered=", receive_buffered,
      " abandoned=", abandoned, " discarded=", discarded,
      " credit_returned=", credit_returned, " gaps=", gaps,
      " decode_errors=", decode_errors, " received_inline=", received_inline,
      " sessions=", sessions, " reconnects=", reconnects,
      " pings_sent=", pings_sent, " errors_received=", errors_received,
      " protocol_errors=", protocol_errors, " broker_epoch=", broker_epoch,
      " connected=", connected ? "true" : "false");
  return out;
}

}  // namespace herald
