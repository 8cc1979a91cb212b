// Topic names and subscription patterns: validation and matching.
//
// A topic is a non-empty string of dot-separated tokens, `orders.eu.created`.
// A pattern (what a subscription asks for) may also use two wildcards, with
// NATS's meaning:
//   `*` matches exactly one token:        `orders.*`  matches `orders.eu`
//   `>` matches one or more last tokens:  `orders.>`  matches `orders.eu.x`
// Herald is stricter than NATS: a token is either exactly `*` or `>` (patterns
// only, and `>` only as the last token) or contains neither character, so
// `foo*bar` is an error rather than a literal. Tokens are never empty; topics
// are at most kMaxTopicLength bytes; control bytes (0x00-0x1f, 0x7f) and
// spaces are refused. Bytes >= 0x80 (UTF-8) are allowed.
//
// Thread-safe: these are pure functions.
#ifndef HERALD_BROKER_TOPIC_H_
#define HERALD_BROKER_TOPIC_H_

#include <cstddef>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"

namespace herald {

// The longest topic or pattern accepted, in bytes.
inline constexpr size_t kMaxTopicLength = 512;

// Checks a topic that a message is published to: no wildcards allowed.
// Returns OK, or kInvalidArgument with a message naming the topic and the
// problem (empty, too long, empty token, wildcard, control byte or space).
absl::Status ValidateTopic(absl::string_view topic);

// Checks a subscription pattern: a topic that may use `*` tokens and a last
// `>` token. Returns OK, or kInvalidArgument naming the pattern and problem.
absl::Status ValidatePattern(absl::string_view pattern);

// True if `pattern` contains a `*` or `>` token. REQUIRES: a valid pattern.
bool HasWildcard(absl::string_view pattern);

// True if the topic `topic` matches `pattern`. REQUIRES: `pattern` is a valid
// pattern and `topic` a valid topic (checked only in debug builds). Does not
// allocate.
bool PatternMatches(absl::string_view pattern, absl::string_view topic);

}  // namespace herald

#endif  // HERALD_BROKER_TOPIC_H_
