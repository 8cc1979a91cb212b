#include "broker/topic.h"

#include <string>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "broker/util/check.h"

namespace herald {
namespace {

enum class Kind { kTopic, kPattern };

// Quotes `s` for an error message, escaping control bytes so that the message
// stays one readable line.
std::string Quote(absl::string_view s) {
  std::string out = "\"";
  for (const char c : s.substr(0, 64)) {
    const auto byte = static_cast<unsigned char>(c);
    if (byte < 0x20 || byte == 0x7f || c == '"' || c == '\\') {
      absl::StrAppendFormat(&out, "\\x%02x", byte);
    } else {
      out.push_back(c);
    }
  }
  if (s.size() > 64) out += "...";
  out += "\"";
  return out;
}

absl::Status Validate(absl::string_view s, Kind kind) {
  const char* what = kind == Kind::kTopic ? "topic" : "pattern";
  if (s.empty()) {
    return absl::InvalidArgumentError(absl::StrCat(what, " is empty"));
  }
  if (s.size() > kMaxTopicLength) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " ", Quote(s), ": ", s.size(),
                     " bytes is over the limit of ", kMaxTopicLength));
  }
  // One pass over the bytes; a token's wildcard characters are noted as
  // they go by (no second search per token: this runs on every publish).
  size_t token_start = 0;
  bool token_has_wildcard_char = false;
  for (size_t i = 0; i <= s.size(); ++i) {
    if (i < s.size() && s[i] != '.') {
      const auto byte = static_cast<unsigned char>(s[i]);
      if (byte <= 0x20 || byte == 0x7f) {
        if (byte == ' ') {
          return absl::InvalidArgumentError(
              absl::StrCat(what, " ", Quote(s), ": space at byte ", i));
        }
        return absl::InvalidArgumentError(absl::StrFormat(
            "%s %s: control byte 0x%02x at byte %d", what, Quote(s), byte, i));
      }
      token_has_wildcard_char |= (s[i] == '*' || s[i] == '>');
      continue;
    }
    // [token_start, i) is a complete token.
    const size_t token_size = i - token_start;
    if (token_size == 0) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " ", Quote(s), ": empty token at byte ", i));
    }
    if (token_has_wildcard_char) {
      const absl::string_view token = s.substr(token_start, token_size);
      const bool is_wildcard = token == "*" || token == ">";
      if (is_wildcard && kind == Kind::kTopic) {
        return absl::InvalidArgumentError(absl::StrCat(
            "topic ", Quote(s), ": wildcard \"", token, "\" at byte ",
            token_start, " (wildcards are for subscription patterns only)"));
      }
      if (!is_wildcard) {
        return absl::InvalidArgumentError(absl::StrCat(
            what, " ", Quote(s), ": token \"", token, "\" at byte ",
            token_start, " mixes a wildcard with other characters"));
      }
      if (token == ">" && i != s.size()) {
        return absl::InvalidArgumentError(
            absl::StrCat(what, " ", Quote(s), ": \">\" at byte ", token_start,
                         " is not the last token"));
      }
    }
    token_start = i + 1;
    token_has_wildcard_char = false;
  }
  return absl::OkStatus();
}

}  // namespace

absl::Status ValidateTopic(absl::string_view topic) {
  return Validate(topic, Kind::kTopic);
}

absl::Status ValidatePattern(absl::string_view pattern) {
  return Validate(pattern, Kind::kPattern);
}

bool HasWildcard(absl::string_view pattern) {
  size_t start = 0;
  while (start < pattern.size()) {
    size_t end = pattern.find('.', start);
    if (end == pattern.npos) end = pattern.size();
    if (end - start == 1 && (pattern[start] == '*' || pattern[start] == '>')) {
      return true;
    }
    start = end + 1;
  }
  return false;
}

bool PatternMatches(absl::string_view pattern, absl::string_view topic) {
  HERALD_DCHECK(ValidatePattern(pattern).ok());
  HERALD_DCHECK(ValidateTopic(topic).ok());
  size_t p = 0;
  size_t t = 0;
  while (true) {
    size_t p_end = pattern.find('.', p);
    if (p_end == pattern.npos) p_end = pattern.size();
    const absl::string_view p_token = pattern.substr(p, p_end - p);
    if (p_token == ">")
      return true;  // `t` still has a token: valid topics
                    // never end in a dot.
    size_t t_end = topic.find('.', t);
    if (t_end == topic.npos) t_end = topic.size();
    if (p_token != "*" && p_token != topic.substr(t, t_end - t)) return false;
    const bool pattern_done = p_end == pattern.size();
    const bool topic_done = t_end == topic.size();
    if (pattern_done || topic_done) return pattern_done && topic_done;
    p = p_end + 1;
    t = t_end + 1;
  }
}

}  // namespace herald
