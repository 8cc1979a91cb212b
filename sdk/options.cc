#include "sdk/options.h"

#include "absl/strings/str_cat.h"

namespace herald {
namespace {

absl::Status NotPositive(absl::string_view what, absl::Duration d) {
  return absl::InvalidArgumentError(
      absl::StrCat(what, " ", absl::FormatDuration(d), " must be > 0"));
}

absl::Status Negative(absl::string_view what, absl::Duration d) {
  return absl::InvalidArgumentError(
      absl::StrCat(what, " ", absl::FormatDuration(d), " must be >= 0"));
}

}  // namespace

absl::Status ValidateClientOptions(const ClientOptions& o) {
  if (o.publish_buffer == 0) {
    return absl::InvalidArgumentError(
        "client options: publish_buffer 0 must be > 0");
  }
  if (o.connect_timeout <= absl::ZeroDuration()) {
    return NotPositive("client options: connect_timeout", o.connect_timeout);
  }
  if (o.request_timeout <= absl::ZeroDuration()) {
    return NotPositive("client options: request_timeout", o.request_timeout);
  }
  if (o.heartbeat < absl::ZeroDuration()) {
    return Negative("client options: heartbeat", o.heartbeat);
  }
  if (o.liveness_timeout < absl::ZeroDuration()) {
    return Negative("client options: liveness_timeout", o.liveness_timeout);
  }
  if (o.reconnect_interval <= absl::ZeroDuration()) {
    return NotPositive("client options: reconnect_interval",
                       o.reconnect_interval);
  }
  if (o.callback_threads == 0) {
    return absl::InvalidArgumentError(
        "client options: callback_threads 0 must be > 0");
  }
  if (o.max_unacked_batches == 0) {
    return absl::InvalidArgumentError(
        "client options: max_unacked_batches 0 must be > 0");
  }
  if (o.linger < absl::ZeroDuration()) {
    return Negative("client options: linger", o.linger);
  }
  return absl::OkStatus();
}

absl::Status ValidatePublisherOptions(const PublisherOptions& o) {
  if (o.buffer_wait < absl::ZeroDuration()) {
    return Negative("publisher options: buffer_wait", o.buffer_wait);
  }
  return absl::OkStatus();
}

}  // namespace herald
