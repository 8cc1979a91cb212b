// Local checks of a publish, shared by both clients: the same rules and
// messages as the broker's (broker/topic.h, Broker::Publish()).
//
// Internal to sdk/. Thread-safe (pure functions).
#ifndef HERALD_SDK_INTERNAL_CHECKS_H_
#define HERALD_SDK_INTERNAL_CHECKS_H_

#include <cstddef>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "broker/message.h"

namespace herald::internal {

// kInvalidArgument for an invalid topic or an empty or reserved (`herald-`)
// header key in `headers` (the user's headers: the SDK adds its own after).
absl::Status CheckPublishInput(absl::string_view topic, const Headers& headers);

// kInvalidArgument if a message of `bytes` (Message::ByteSize()) is over
// `max_message_bytes`.
absl::Status CheckMessageSize(absl::string_view topic, size_t bytes,
                              size_t max_message_bytes);

}  // namespace herald::internal

#endif  // HERALD_SDK_INTERNAL_CHECKS_H_
