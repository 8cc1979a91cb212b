#include "tools/herald/format.h"

#include <algorithm>
#include <cstdio>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/str_join.h"
#include "broker/util/json.h"
#include "broker/util/status_macros.h"

namespace herald::cli {
namespace {

// The nonzero counts of `d` as "queue_full=2 closed=1", or "-" if none.
std::string DropReasons(const v1::DropCounts& d) {
  const std::pair<absl::string_view, uint64_t> counts[] = {
      {"queue_full", d.queue_full()},
      {"evicted_oldest", d.evicted_oldest()},
      {"block_timeout", d.block_timeout()},
      {"closed", d.closed()},
      {"shutdown", d.shutdown()},
      {"group_full", d.group_full()},
  };
  std::vector<std::string> parts;
  for (const auto& [name, n] : counts) {
    if (n != 0) parts.push_back(absl::StrCat(name, "=", n));
  }
  return parts.empty() ? "-" : absl::StrJoin(parts, ",");
}

uint64_t DropTotal(const v1::DropCounts& d) {
  return d.queue_full() + d.evicted_oldest() + d.block_timeout() + d.closed() +
         d.shutdown() + d.group_full();
}

absl::string_view PolicyName(v1::OverflowPolicy p) {
  switch (p) {
    case v1::OVERFLOW_POLICY_DROP_NEWEST:
      return "drop-newest";
    case v1::OVERFLOW_POLICY_DROP_OLDEST:
      return "drop-oldest";
    case v1::OVERFLOW_POLICY_BLOCK:
      return "block";
    default:
      return "?";
  }
}

std::string OrDash(absl::string_view s) {
  return s.empty() ? "-" : EscapeBytes(s);
}

}  // namespace

std::string EscapeBytes(absl::string_view bytes) {
  std::string out;
  out.reserve(bytes.size());
  for (unsigned char c : bytes) {
    switch (c) {
      case '\\':
        out += "\\\\";
        break;
      case '\n':
        out += "\\n";
        break;
      case '\r':
        out += "\\r";
        break;
      case '\t':
        out += "\\t";
        break;
      default:
        if (c >= 0x20 && c <= 0x7e) {
          out += static_cast<char>(c);
        } else {
          absl::StrAppendFormat(&out, "\\x%02x", c);
        }
    }
  }
  return out;
}

std::string GroupDigits(uint64_t n) {
  std::string digits = absl::StrCat(n);
  std::string out;
  for (size_t i = 0; i < digits.size(); ++i) {
    if (i != 0 && (digits.size() - i) % 3 == 0) out += ',';
    out += digits[i];
  }
  return out;
}

std::string ShortDuration(absl::Duration d) {
  const double ns = absl::ToDoubleNanoseconds(d);
  struct Unit {
    double scale;
    const char* name;
  };
  static constexpr Unit kUnits[] = {{1e9, "s"}, {1e6, "ms"}, {1e3, "us"}};
  for (const Unit& u : kUnits) {
    if (ns >= u.scale) {
      const double v = ns / u.scale;
      const int precision = v >= 100 ? 0 : v >= 10 ? 1 : 2;
      return absl::StrFormat("%.*f%s", precision, v, u.name);
    }
  }
  return absl::StrFormat("%.0fns", ns);
}

std::string Table::Render() const {
  size_t columns = 0;
  for (const auto& row : rows_) columns = std::max(columns, row.size());
  std::vector<size_t> width(columns, 0);
  std::vector<bool> digits(columns, false);
  std::vector<bool> text(columns, false);
  for (size_t r = 0; r < rows_.size(); ++r) {
    for (size_t c = 0; c < rows_[r].size(); ++c) {
      const std::string& cell = rows_[r][c];
      width[c] = std::max(width[c], cell.size());
      if (r == 0 || cell.empty() || cell == "-") continue;
      (absl::ascii_isdigit(cell.front()) ? digits : text)[c] = true;
    }
  }
  std::vector<bool> numeric(columns);
  for (size_t c = 0; c < columns; ++c) numeric[c] = digits[c] && !text[c];
  std::string out;
  for (const auto& row : rows_) {
    std::string line;
    for (size_t c = 0; c < columns; ++c) {
      const std::string cell = c < row.size() ? row[c] : "";
      const std::string pad(width[c] - cell.size(), ' ');
      if (c > 0) line += "  ";
      if (numeric[c]) {
        absl::StrAppend(&line, pad, cell);
      } else {
        absl::StrAppend(&line, cell, pad);
      }
    }
    while (!line.empty() && line.back() == ' ') line.pop_back();
    absl::StrAppend(&out, line, "\n");
  }
  return out;
}

std::string StatsText(const v1::BrokerStats& b, const v1::ServerStats* server) {
  std::string out;
  absl::StrAppend(&out, "published: ", b.published(),
                  " (unmatched: ", b.published_unmatched(), ")\n");
  absl::StrAppend(
      &out, "refused: ",
      b.refused_invalid() + b.refused_too_large() + b.refused_shutdown(),
      " (invalid: ", b.refused_invalid(),
      ", too_large: ", b.refused_too_large(),
      ", shutdown: ", b.refused_shutdown(), ")\n");
  absl::StrAppend(&out, "topics: ", b.topics(), "\n");
  absl::StrAppend(&out, "subscriptions: ", b.subscriptions_active(),
                  " active, ", b.subscriptions_closed(), " closed, ",
                  b.subscribe_refused(), " refused\n");
  if (server != nullptr) {
    const v1::ServerStats& s = *server;
    absl::StrAppend(&out, "sessions: ", s.sessions_active(), " active (",
                    s.sessions_opened(), " opened, ", s.sessions_expired(),
                    " expired, ", s.sessions_closed(), " closed, ",
                    s.sessions_detached(), " detached, ", s.clients_refused(),
                    " refused)\n");
    absl::StrAppend(&out, "network: publish accepted: ", s.publish_accepted(),
                    ", publish refused: ", s.publish_refused(),
                    ", delivered: ", s.delivered(),
                    ", send failures: ", s.send_failures(),
                    ", lost with a connection: ", s.deliveries_lost(),
                    ", remote subscriptions: ", s.remote_subscriptions(), "\n");
    absl::StrAppend(&out, "refused input: bad_magic: ", s.bad_magic(),
                    ", unsupported_version: ", s.unsupported_version(),
                    ", malformed: ", s.malformed(),
                    ", unknown_command: ", s.unknown_command(),
                    ", oversized: ", s.oversized(),
                    ", no_session: ", s.no_session(),
                    ", held_full: ", s.held_full(), "\n");
    absl::StrAppend(&out, "plain endpoints: published: ", s.plain_published(),
                    ", refused: ", s.plain_refused(),
                    ", delivered: ", s.plain_delivered(),
                    ", abandoned at stop: ", s.plain_abandoned(),
                    ", SUB prefixes: ", s.plain_prefixes(), "\n");
  }
  if (b.shut_down()) out += "state: shut down\n";

  out += "\n";
  Table subs({"ID", "PATTERN", "GROUP", "POLICY", "CAPACITY", "MATCHED",
              "DELIVERED", "DROPPED", "QUEUED", "HIGH_WATER", "DROP_REASONS"});
  for (const v1::SubscriptionStats& s : b.subscriptions()) {
    subs.AddRow({absl::StrCat(s.id()), EscapeBytes(s.pattern()),
                 OrDash(s.queue_group()), std::string(PolicyName(s.overflow())),
                 absl::StrCat(s.capacity()), absl::StrCat(s.matched()),
                 absl::StrCat(s.delivered()),
                 absl::StrCat(DropTotal(s.dropped())), absl::StrCat(s.queued()),
                 absl::StrCat(s.high_water()), DropReasons(s.dropped())});
  }
  if (b.subscriptions_size() == 0) {
    out += "no live subscriptions\n";
  } else {
    out += subs.Render();
  }

  if (b.groups_size() > 0) {
    out += "\n";
    Table groups({"PATTERN", "GROUP", "MEMBERS", "MATCHED", "TAKEN", "DROPPED",
                  "DROP_REASONS"});
    for (const v1::GroupStats& g : b.groups()) {
      groups.AddRow({EscapeBytes(g.pattern()), OrDash(g.queue_group()),
                     absl::StrCat(g.members()), absl::StrCat(g.matched()),
                     absl::StrCat(g.taken()),
                     absl::StrCat(DropTotal(g.dropped())),
                     DropReasons(g.dropped())});
    }
    out += groups.Render();
  }

  absl::StrAppend(&out, "\nclosed subscriptions: matched: ", b.closed_matched(),
                  ", delivered: ", b.closed_delivered(),
                  ", dropped: ", DropTotal(b.closed_dropped()), " (",
                  DropReasons(b.closed_dropped()),
                  "), abandoned: ", b.closed_abandoned(), "\n");
  return out;
}

absl::StatusOr<std::string> StatsJson(const v1::BrokerStats& broker,
                                      const v1::ServerStats* server) {
  v1::StatsReply reply;
  *reply.mutable_broker() = broker;
  if (server != nullptr) *reply.mutable_server() = *server;
  HERALD_ASSIGN_OR_RETURN(std::string out, util::ProtoToJson(reply));
  out += "\n";
  return out;
}

}  // namespace herald::cli
