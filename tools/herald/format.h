// Text formatting for the `herald` tool: payloads printed safely, counts and
// durations for people, aligned tables, and the `herald stats` table.
//
// Pure functions: thread-safe.
#ifndef HERALD_TOOLS_HERALD_FORMAT_H_
#define HERALD_TOOLS_HERALD_FORMAT_H_

#include <cstdint>
#include <string>
#include <vector>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "schemas/protocol.pb.h"
#include "schemas/stats.pb.h"

namespace herald::cli {

// `bytes` with every byte that is not printable ASCII escaped, so that a
// payload cannot move the cursor, ring the bell or break a line: `\\` for a
// backslash, `\n`, `\r`, `\t`, and `\xNN` for any other byte outside
// 0x20..0x7e (UTF-8 text is escaped too: bytes are printed, not characters).
std::string EscapeBytes(absl::string_view bytes);

// 1234567 -> "1,234,567".
std::string GroupDigits(uint64_t n);

// A latency for a table, three significant digits: "812ns", "45.3us",
// "1.20ms", "2.50s".
std::string ShortDuration(absl::Duration d);

// Left-aligned text columns separated by two spaces; numeric columns (those
// whose cells after the header all start with a digit, or are "-" or empty,
// at least one starting with a digit) right-aligned.
// Thread-compatible.
class Table {
 public:
  explicit Table(std::vector<std::string> header) : rows_{std::move(header)} {}
  // A row; missing cells are blank, extra cells are kept.
  void AddRow(std::vector<std::string> row) { rows_.push_back(std::move(row)); }
  // The table, one line per row, each ending with '\n', no trailing spaces.
  std::string Render() const;

 private:
  std::vector<std::vector<std::string>> rows_;
};

// The human-readable form of `herald stats`: broker counters (publishes and
// refusals), the server's sessions (only when `server` is non-null), one
// table row per live subscription (pattern, group, policy, capacity,
// matched, delivered, dropped with its reasons, queued, high water),
// queue groups, and the totals of the closed subscriptions.
std::string StatsText(const v1::BrokerStats& broker,
                      const v1::ServerStats* server);

// `herald stats --json`: a herald.v1.StatsReply `{"broker": ..., "server":
// ...}` (`server` omitted when null) printed as herald::StatsToJson() prints
// (every field, a zero count too; proto field names; 64-bit counters as
// strings), followed by '\n'. Returns kInternal if printing fails.
absl::StatusOr<std::string> StatsJson(const v1::BrokerStats& broker,
                                      const v1::ServerStats* server);

}  // namespace herald::cli

#endif  // HERALD_TOOLS_HERALD_FORMAT_H_
