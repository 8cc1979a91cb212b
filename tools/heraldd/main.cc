// heraldd: Herald's broker daemon.
//
// Runs one herald::Broker and serves it over ZeroMQ (herald::net::Server: the
// SDK endpoint and the plain PUB/SUB endpoints), and optionally over HTTP for
// metrics (/metrics in the Prometheus text format, /statsz as JSON). It logs
// its bound endpoints at start, then waits for SIGINT or SIGTERM and stops in
// the order DESIGN.md fixes, within --stop_timeout: the server stops intake,
// sends Goodbye and closes its sockets, the broker shuts down (draining for at
// most --drain_timeout), the metrics server stops, and a final stats line is
// printed. Exit codes: 0 after a signal, 1 if it cannot start (an endpoint
// cannot be bound), 2 for a bad flag. See docs/operations.md.
//
//   heraldd --sdk_endpoint=tcp://0.0.0.0:7450 --metrics_addr=127.0.0.1:9464

#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "absl/flags/flag.h"
#include "absl/flags/parse.h"
#include "absl/flags/reflection.h"
#include "absl/flags/usage.h"
#include "absl/status/status.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/strings/string_view.h"
#include "absl/strings/strip.h"
#include "absl/synchronization/notification.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "broker/broker.h"
#include "broker/internal/thread_identity.h"
#include "broker/net/server.h"
#include "broker/options.h"
#include "tools/heraldd/metrics.h"

// Endpoints. Defaults come from herald::net::ServerOptions.
ABSL_FLAG(std::string, sdk_endpoint, herald::net::ServerOptions().sdk_endpoint,
          "SDK endpoint (ZeroMQ ROUTER, Herald's protocol). Port * lets the OS "
          "choose (tcp://127.0.0.1:*). Empty: not served.");
ABSL_FLAG(std::string, publish_endpoint,
          herald::net::ServerOptions().publish_endpoint,
          "Plain publish endpoint (XSUB) for any ZeroMQ PUB socket sending "
          "[topic][payload]. Empty: not served.");
ABSL_FLAG(std::string, subscribe_endpoint,
          herald::net::ServerOptions().subscribe_endpoint,
          "Plain subscribe endpoint (XPUB) for any ZeroMQ SUB socket "
          "(byte-prefix filtering). Empty: not served.");

// Queue defaults and broker limits. Defaults come from herald::BrokerOptions.
ABSL_FLAG(uint64_t, queue_capacity,
          herald::BrokerOptions().default_queue_capacity,
          "Queue capacity (messages) of a subscription that does not set one. "
          "In [1, --max_queue_capacity].");
ABSL_FLAG(std::string, overflow, "drop-newest",
          "Overflow policy of a subscription that does not set one: "
          "drop-newest, drop-oldest or block.");
ABSL_FLAG(uint64_t, max_queue_capacity,
          herald::BrokerOptions().max_queue_capacity,
          "The largest queue capacity a subscription may ask for. In [1, "
          "2^30].");
ABSL_FLAG(uint64_t, max_message_bytes,
          herald::BrokerOptions().max_message_bytes,
          "The largest message (topic + payload + headers) accepted. In [1, "
          "2^30].");
ABSL_FLAG(uint64_t, max_topics, herald::BrokerOptions().max_topics,
          "The most topic entries the registry holds. > 0.");
ABSL_FLAG(uint64_t, shards, herald::BrokerOptions().shard_count,
          "Registry shards. In [1, 4096].");
ABSL_FLAG(uint64_t, dispatcher_threads,
          herald::BrokerOptions().dispatcher_threads,
          "Threads running callback subscriptions. In [1, 256].");

// Network limits. Defaults come from herald::net::ServerOptions.
ABSL_FLAG(uint64_t, max_clients, herald::net::ServerOptions().max_clients,
          "Most SDK sessions at once. > 0.");
ABSL_FLAG(uint64_t, max_subscriptions_per_client,
          herald::net::ServerOptions().max_subscriptions_per_client,
          "Most subscriptions per SDK session. > 0.");
ABSL_FLAG(uint64_t, max_queue_capacity_per_client,
          herald::net::ServerOptions().max_queue_capacity_per_client,
          "Most queue capacity (messages, summed over its subscriptions) one "
          "SDK session may hold; a queue takes 16 bytes a slot when it is "
          "made. > 0.");
ABSL_FLAG(uint64_t, max_held_bytes_per_client,
          herald::net::ServerOptions().max_held_bytes_per_client,
          "Most bytes of the messages one SDK session may have waiting behind "
          "a publish blocked by a full kBlock queue. > 0.");
ABSL_FLAG(absl::Duration, session_ttl, herald::net::ServerOptions().session_ttl,
          "An SDK session silent this long expires. > 0.");
ABSL_FLAG(uint64_t, max_batch_messages,
          herald::net::ServerOptions().max_batch_messages,
          "Most entries in one SDK Publish batch. > 0.");
ABSL_FLAG(uint64_t, max_credit, herald::net::ServerOptions().max_credit,
          "Most credit (messages in flight) one SDK subscription may hold. "
          "> 0.");
ABSL_FLAG(uint64_t, plain_queue_capacity,
          herald::net::ServerOptions().plain_queue_capacity,
          "Queue capacity of the subscribe endpoint's broker subscription.");
ABSL_FLAG(absl::Duration, linger, herald::net::ServerOptions().linger,
          "How long unsent messages may go out when the sockets close "
          "(ZMQ_LINGER).");

// Metrics and shutdown.
ABSL_FLAG(std::string, metrics_addr, "",
          "host:port for HTTP /metrics (Prometheus) and /statsz (JSON); "
          ":port listens on every IPv4 interface, port 0 lets the OS choose. "
          "Empty: off.");
ABSL_FLAG(absl::Duration, drain_timeout, absl::Seconds(2),
          "At shutdown, how long subscribers may drain their queues (within "
          "--stop_timeout). >= 0.");
ABSL_FLAG(absl::Duration, stop_timeout, absl::Seconds(5),
          "The deadline for the whole shutdown after SIGINT or SIGTERM. > 0.");

namespace {

constexpr int kExitOk = 0;
constexpr int kExitStartFailed = 1;
constexpr int kExitBadFlag = 2;
constexpr int kExitStopTimedOut = 1;

// How long past --stop_timeout the watchdog lets shutdown run before it
// exits with code 1, saying so. The grace covers the metrics server's stop,
// whose request timeouts (1s) are not under the deadline.
constexpr absl::Duration kWatchdogGrace = absl::Seconds(3);

// One line on stdout, flushed at once (a supervisor or a test reads it).
template <typename... Args>
void Log(const absl::FormatSpec<Args...>& format, const Args&... args) {
  std::fputs(
      absl::StrCat("heraldd: ", absl::StrFormat(format, args...), "\n").c_str(),
      stdout);
  std::fflush(stdout);
}

// One line on stderr; returns `exit_code`.
int Error(int exit_code, absl::string_view message) {
  std::fputs(absl::StrCat("heraldd: ", message, "\n").c_str(), stderr);
  std::fflush(stderr);
  return exit_code;
}

// Error(), then exit: only before anything has started.
[[noreturn]] void Fail(int exit_code, absl::string_view message) {
  std::exit(Error(exit_code, message));
}

// absl::ParseCommandLine() exits 1 on a bad flag and prints usage lines; we
// want one line and exit code 2. So every --name[=value] is checked first:
// the flag must exist and its value must parse (setting it, as the parse
// after this will again).
void CheckFlags(int argc, char** argv) {
  // Handled by absl::ParseCommandLine() itself.
  static constexpr absl::string_view kUsageFlags[] = {
      "help",    "helpfull",        "helpshort", "helppackage",
      "version", "only_check_args", "helpon",    "helpmatch"};
  static constexpr absl::string_view kGeneratorFlags[] = {
      "flagfile", "fromenv", "tryfromenv", "undefok"};
  for (int i = 1; i < argc; ++i) {
    absl::string_view arg = argv[i];
    if (arg == "--") {
      if (i + 1 < argc) {
        Fail(kExitBadFlag, absl::StrCat("unexpected argument \"", argv[i + 1],
                                        "\" (heraldd takes only flags)"));
      }
      break;
    }
    if (!absl::ConsumePrefix(&arg, "-") || arg.empty()) {
      Fail(kExitBadFlag, absl::StrCat("unexpected argument \"", argv[i],
                                      "\" (heraldd takes only flags)"));
    }
    absl::ConsumePrefix(&arg, "-");
    const size_t eq = arg.find('=');
    const absl::string_view name = arg.substr(0, eq);
    const bool has_value = eq != absl::string_view::npos;
    if (std::find(std::begin(kUsageFlags), std::end(kUsageFlags), name) !=
        std::end(kUsageFlags)) {
      continue;
    }
    const bool generator =
        std::find(std::begin(kGeneratorFlags), std::end(kGeneratorFlags),
                  name) != std::end(kGeneratorFlags);
    absl::CommandLineFlag* flag =
        generator ? nullptr : absl::FindCommandLineFlag(name);
    if (!generator && flag == nullptr) {
      Fail(kExitBadFlag,
           absl::StrCat("unknown flag --", name, " (see heraldd --help)"));
    }
    std::string value;
    if (has_value) {
      value = std::string(arg.substr(eq + 1));
    } else if (i + 1 < argc) {
      value = argv[++i];
    } else {
      Fail(kExitBadFlag, absl::StrCat("flag --", name, " needs a value"));
    }
    if (generator) continue;
    std::string error;
    if (!flag->ParseFrom(value, &error)) {
      Fail(kExitBadFlag, absl::StrCat("bad flag value: ", error));
    }
  }
}

std::optional<herald::OverflowPolicy> ParseOverflow(absl::string_view name) {
  for (const herald::OverflowPolicy policy :
       {herald::OverflowPolicy::kDropNewest,
        herald::OverflowPolicy::kDropOldest, herald::OverflowPolicy::kBlock}) {
    if (herald::OverflowPolicyName(policy) == name) return policy;
  }
  return std::nullopt;
}

std::string SignalName(int sig) {
  switch (sig) {
    case SIGINT:
      return "SIGINT";
    case SIGTERM:
      return "SIGTERM";
    default:
      return absl::StrCat("signal ", sig);
  }
}

// Exit code for a failed start: a bad option is a bad flag (2), anything else
// (an endpoint that cannot be bound) a failed start (1).
int StartFailureCode(const absl::Status& status) {
  return status.code() == absl::StatusCode::kInvalidArgument ? kExitBadFlag
                                                             : kExitStartFailed;
}

std::string EndpointOrOff(const std::string& endpoint) {
  return endpoint.empty() ? "off" : endpoint;
}

}  // namespace

int main(int argc, char** argv) {
  // Block SIGINT and SIGTERM before any thread starts, so every thread
  // inherits the mask and only sigwait() below takes them. SIGPIPE is
  // ignored: a metrics client that hangs up must not kill the daemon.
  sigset_t stop_signals;
  sigemptyset(&stop_signals);
  sigaddset(&stop_signals, SIGINT);
  sigaddset(&stop_signals, SIGTERM);
  if (pthread_sigmask(SIG_BLOCK, &stop_signals, nullptr) != 0) {
    Fail(kExitStartFailed, "cannot block SIGINT and SIGTERM");
  }
  signal(SIGPIPE, SIG_IGN);
  herald::internal::EnsureThreadIdentity();

  absl::SetProgramUsageMessage(
      "Herald's broker daemon: serves a broker over ZeroMQ (SDK and plain "
      "PUB/SUB endpoints) and, with --metrics_addr, metrics over HTTP. "
      "SIGINT or SIGTERM stop it. See docs/operations.md.");
  CheckFlags(argc, argv);
  absl::ParseCommandLine(argc, argv);

  // --------------------------------------------------------------- options
  herald::BrokerOptions broker_options;
  broker_options.default_queue_capacity = absl::GetFlag(FLAGS_queue_capacity);
  const std::string overflow_name = absl::GetFlag(FLAGS_overflow);
  const std::optional<herald::OverflowPolicy> overflow =
      ParseOverflow(overflow_name);
  if (!overflow) {
    Fail(kExitBadFlag,
         absl::StrCat("bad flag value: --overflow=\"", overflow_name,
                      "\": expected drop-newest, drop-oldest or block"));
  }
  broker_options.default_overflow = *overflow;
  broker_options.max_queue_capacity = absl::GetFlag(FLAGS_max_queue_capacity);
  broker_options.max_message_bytes = absl::GetFlag(FLAGS_max_message_bytes);
  broker_options.max_topics = absl::GetFlag(FLAGS_max_topics);
  broker_options.shard_count = absl::GetFlag(FLAGS_shards);
  broker_options.dispatcher_threads = absl::GetFlag(FLAGS_dispatcher_threads);

  herald::net::ServerOptions server_options;
  server_options.sdk_endpoint = absl::GetFlag(FLAGS_sdk_endpoint);
  server_options.publish_endpoint = absl::GetFlag(FLAGS_publish_endpoint);
  server_options.subscribe_endpoint = absl::GetFlag(FLAGS_subscribe_endpoint);
  server_options.max_clients = absl::GetFlag(FLAGS_max_clients);
  server_options.max_subscriptions_per_client =
      absl::GetFlag(FLAGS_max_subscriptions_per_client);
  server_options.max_queue_capacity_per_client =
      absl::GetFlag(FLAGS_max_queue_capacity_per_client);
  server_options.max_held_bytes_per_client =
      absl::GetFlag(FLAGS_max_held_bytes_per_client);
  server_options.session_ttl = absl::GetFlag(FLAGS_session_ttl);
  server_options.max_batch_messages = absl::GetFlag(FLAGS_max_batch_messages);
  server_options.max_credit = absl::GetFlag(FLAGS_max_credit);
  server_options.plain_queue_capacity =
      absl::GetFlag(FLAGS_plain_queue_capacity);
  server_options.linger = absl::GetFlag(FLAGS_linger);

  const std::string metrics_addr = absl::GetFlag(FLAGS_metrics_addr);
  const absl::Duration drain_timeout = absl::GetFlag(FLAGS_drain_timeout);
  const absl::Duration stop_timeout = absl::GetFlag(FLAGS_stop_timeout);
  if (drain_timeout < absl::ZeroDuration()) {
    Fail(kExitBadFlag, "bad flag value: --drain_timeout must be >= 0");
  }
  if (stop_timeout <= absl::ZeroDuration()) {
    Fail(kExitBadFlag, "bad flag value: --stop_timeout must be > 0");
  }

  // ----------------------------------------------------------------- start
  // Declared in this order so that they are destroyed in the reverse one:
  // metrics, then the server, then the broker it serves.
  absl::StatusOr<std::unique_ptr<herald::Broker>> broker =
      herald::Broker::Create(broker_options);
  if (!broker.ok()) {
    return Error(
        StartFailureCode(broker.status()),
        absl::StrCat("cannot start the broker: ", broker.status().message()));
  }
  absl::StatusOr<std::unique_ptr<herald::net::Server>> server =
      herald::net::Server::Start(broker->get(), server_options);
  if (!server.ok()) {
    return Error(
        StartFailureCode(server.status()),
        absl::StrCat("cannot start the server: ", server.status().message()));
  }
  std::unique_ptr<herald::MetricsServer> metrics;
  if (!metrics_addr.empty()) {
    herald::MetricsServer::Sources sources;
    herald::Broker* b = broker->get();
    herald::net::Server* s = server->get();
    sources.broker = [b] { return b->Stats(); };
    sources.server = [s] { return s->Stats(); };
    absl::StatusOr<std::unique_ptr<herald::MetricsServer>> started =
        herald::MetricsServer::Start(metrics_addr, std::move(sources));
    if (!started.ok()) {
      return Error(StartFailureCode(started.status()),
                   absl::StrCat("cannot start the metrics server: ",
                                started.status().message()));
    }
    metrics = *std::move(started);
  }

  Log("sdk_endpoint %s", EndpointOrOff((*server)->sdk_endpoint()));
  Log("publish_endpoint %s", EndpointOrOff((*server)->publish_endpoint()));
  Log("subscribe_endpoint %s", EndpointOrOff((*server)->subscribe_endpoint()));
  if (metrics != nullptr) {
    Log("metrics_addr %s (/metrics, /statsz)", metrics->url());
  } else {
    Log("metrics_addr off");
  }
  Log("ready: pid %d, broker epoch %d, queue_capacity %d, overflow %s",
      static_cast<int>(getpid()), (*server)->epoch(),
      broker_options.default_queue_capacity, overflow_name);

  // ------------------------------------------------------------------ wait
  int sig = 0;
  if (sigwait(&stop_signals, &sig) != 0) {
    return Error(kExitStartFailed, "sigwait failed");
  }

  // ------------------------------------------------------------------ stop
  const absl::Time start = absl::Now();
  const absl::Time deadline = start + stop_timeout;
  Log("%s received: stopping (deadline %s, drain %s)", SignalName(sig),
      absl::FormatDuration(stop_timeout), absl::FormatDuration(drain_timeout));

  // If shutdown hangs anyway (for example in a callback, which the broker
  // waits for without a bound), exit rather than hang the supervisor.
  absl::Notification stopped;
  std::thread watchdog([&stopped, stop_timeout] {
    // Before blocking on an absl::Mutex (TSAN: see thread_identity.h).
    herald::internal::EnsureThreadIdentity();
    if (!stopped.WaitForNotificationWithTimeout(stop_timeout +
                                                kWatchdogGrace)) {
      std::fputs(
          absl::StrCat("heraldd: shutdown still not done ",
                       absl::FormatDuration(stop_timeout + kWatchdogGrace),
                       " after the signal: exiting\n")
              .c_str(),
          stderr);
      std::fflush(stderr);
      std::_Exit(kExitStopTimedOut);
    }
  });

  // DESIGN.md's order, within one deadline:
  // 1. Stop intake and send Goodbye; remote subscriptions keep being
  //    delivered within credit.
  (*server)->StopIntake();
  // 2. Shut the broker down: subscribers (local and remote) drain until the
  //    drain deadline, then every subscription ends.
  const herald::v1::BrokerStats final_broker =
      (*broker)->Shutdown(std::min(absl::Now() + drain_timeout, deadline));
  // 3. Flush and close the sockets (linger), join the I/O thread.
  (*server)->Stop(deadline);
  // 4. Stop serving metrics (it reads the stats of both).
  if (metrics != nullptr) metrics->Stop();
  const herald::v1::ServerStats final_server = (*server)->Stats();

  stopped.Notify();
  watchdog.join();
  Log("stopped in %s: %s", absl::FormatDuration(absl::Now() - start),
      herald::SummaryLine(final_broker, &final_server));
  return kExitOk;
}
