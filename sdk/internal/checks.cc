#include "sdk/internal/checks.h"

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "broker/topic.h"
#include "broker/util/status_macros.h"

namespace herald::internal {

absl::Status CheckPublishInput(absl::string_view topic,
                               const Headers& headers) {
  HERALD_RETURN_IF_ERROR(ValidateTopic(topic));
  for (size_t i = 0; i < headers.size(); ++i) {
    const Header& h = headers[i];
    if (h.key.empty()) {
      return absl::InvalidArgumentError(absl::StrCat(
          "publish to \"", topic, "\": header ", i, " has an empty key"));
    }
    if (absl::StartsWith(h.key, kReservedHeaderPrefix)) {
      return absl::InvalidArgumentError(absl::StrCat(
          "publish to \"", topic, "\": header \"", h.key,
          "\" uses the reserved prefix \"", kReservedHeaderPrefix, "\""));
    }
  }
  return absl::OkStatus();
}

absl::Status CheckMessageSize(absl::string_view topic, size_t bytes,
                              size_t max_message_bytes) {
  if (bytes > max_message_bytes) {
    return absl::InvalidArgumentError(absl::StrCat(
        "publish to \"", topic, "\": ", bytes,
        " bytes (topic + payload + headers) is over max_message_bytes (",
        max_message_bytes, ")"));
  }
  return absl::OkStatus();
}

}  // namespace herald::internal
