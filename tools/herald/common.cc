#include "tools/herald/common.h"

#include <string>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_replace.h"
#include "absl/synchronization/mutex.h"
#include "broker/internal/thread_identity.h"

namespace herald::cli {

void AddConnectionFlags(FlagSet& flags, ConnectionFlags* c) {
  flags.NonEmptyString("url", &c->url,
                       "the broker's SDK endpoint: tcp://HOST:PORT or "
                       "ipc://PATH");
  flags.PositiveDuration("connect-timeout", &c->connect_timeout,
                         "how long to wait for the broker's answer when "
                         "connecting");
}

absl::Status CheckUrl(absl::string_view command, absl::string_view url) {
  if (absl::StartsWith(url, "tcp://") && url.size() > 6) {
    return absl::OkStatus();
  }
  if (absl::StartsWith(url, "ipc://") && url.size() > 6) {
    return absl::OkStatus();
  }
  return absl::InvalidArgumentError(absl::StrCat(
      command, ": --url \"", url, "\": not tcp://HOST:PORT or ipc://PATH"));
}

absl::StatusOr<std::unique_ptr<Client>> ConnectClient(const ConnectionFlags& c,
                                                      absl::string_view name) {
  ClientOptions options;
  options.name = std::string(name);
  options.connect_timeout = c.connect_timeout;
  return Client::Connect(c.url, std::move(options));
}

void AddPolicyFlag(FlagSet& flags, std::optional<OverflowPolicy>* policy) {
  flags.Custom(
      "policy", "broker's default",
      [policy](absl::string_view text) {
        if (text == "drop-newest") {
          *policy = OverflowPolicy::kDropNewest;
        } else if (text == "drop-oldest") {
          *policy = OverflowPolicy::kDropOldest;
        } else if (text == "block") {
          *policy = OverflowPolicy::kBlock;
        } else {
          return absl::InvalidArgumentError(
              "not one of drop-newest, drop-oldest, block");
        }
        return absl::OkStatus();
      },
      "what the broker does when this subscriber's queue is full: "
      "drop-newest, drop-oldest or block");
}

void AddCapacityFlag(FlagSet& flags, std::optional<size_t>* capacity) {
  flags.Custom(
      "capacity", "broker's default",
      [capacity](absl::string_view text) {
        uint64_t v = 0;
        if (absl::Status s = ParseWholeNumber(text, &v); !s.ok()) return s;
        if (v == 0) return absl::InvalidArgumentError("must be at least 1");
        *capacity = static_cast<size_t>(v);
        return absl::OkStatus();
      },
      "messages the broker queues for this subscriber");
}

void PrintError(const Io& io, absl::string_view message) {
  *io.err << "herald: "
          << absl::StrReplaceAll(message, {{"\r\n", " "}, {"\n", " "}})
          << std::endl;
}

int Fail(const Io& io, const absl::Status& status) {
  PrintError(io, status.message());
  return absl::IsInvalidArgument(status) ? kExitUsage : kExitFailure;
}

int UsageError(const Io& io, absl::string_view message) {
  PrintError(io, message);
  return kExitUsage;
}

bool WaitUntil(absl::Time until, const std::stop_token& stop) {
  if (stop.stop_requested()) return false;
  if (absl::Now() >= until) return true;
  internal::EnsureThreadIdentity();
  absl::Mutex mu;
  bool stopped = false;
  // Declared after `mu`, so it is unregistered (waiting for a running
  // callback) before `mu` goes away.
  std::stop_callback on_stop(stop, [&] {
    absl::MutexLock lock(&mu);
    stopped = true;
  });
  absl::MutexLock lock(&mu);
  mu.AwaitWithDeadline(absl::Condition(&stopped), until);
  return !stopped;
}

}  // namespace herald::cli
