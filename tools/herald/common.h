// What the `herald` subcommands share: the connection flags (--url,
// --connect-timeout), connecting through the SDK, the one-line error
// convention and exit codes, the overflow policy flag, and a stoppable wait
// for pacing publishes.
//
// Internal to tools/herald; thread-safe (free functions).
#ifndef HERALD_TOOLS_HERALD_COMMON_H_
#define HERALD_TOOLS_HERALD_COMMON_H_

#include <memory>
#include <optional>
#include <stop_token>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "broker/options.h"
#include "sdk/client.h"
#include "tools/herald/commands.h"
#include "tools/herald/flags.h"

namespace herald::cli {

// The flags every subcommand takes.
struct ConnectionFlags {
  std::string url = kDefaultUrl;
  // ClientOptions::connect_timeout.
  absl::Duration connect_timeout = absl::Seconds(5);
};

// Declares --url and --connect-timeout on `flags`, bound to `*c`.
void AddConnectionFlags(FlagSet& flags, ConnectionFlags* c);

// Checks the URL's form: tcp://HOST:PORT or ipc://PATH (the CLI has no
// in-process broker). kInvalidArgument otherwise, naming `command`.
absl::Status CheckUrl(absl::string_view command, absl::string_view url);

// Connects a client to `c.url`, labelled `name`. Errors as
// herald::Client::Connect(): kUnavailable when the broker does not answer
// within c.connect_timeout.
absl::StatusOr<std::unique_ptr<Client>> ConnectClient(const ConnectionFlags& c,
                                                      absl::string_view name);

// Declares `--policy` (drop-newest, drop-oldest, block), setting `*policy`.
void AddPolicyFlag(FlagSet& flags, std::optional<OverflowPolicy>* policy);
// Declares `--capacity` (> 0; default: the broker's), setting `*capacity`.
void AddCapacityFlag(FlagSet& flags, std::optional<size_t>* capacity);

// Prints "herald: MESSAGE" (newlines in the message made spaces) on io.err.
void PrintError(const Io& io, absl::string_view message);
// PrintError(status.message()) and the exit code for `status`:
// kExitUsage for kInvalidArgument (the command line asked for something the
// SDK or the broker refuses: a topic, a size, a capacity), else kExitFailure.
int Fail(const Io& io, const absl::Status& status);
// PrintError(message), kExitUsage.
int UsageError(const Io& io, absl::string_view message);

// Waits until `until` or until `stop` is requested, whichever comes first.
// Returns false if `stop` was requested. Returns at once if `until` passed.
bool WaitUntil(absl::Time until, const std::stop_token& stop);

}  // namespace herald::cli

#endif  // HERALD_TOOLS_HERALD_COMMON_H_
