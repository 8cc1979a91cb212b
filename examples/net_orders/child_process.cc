#include "examples/net_orders/child_process.h"

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <utility>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "absl/strings/strip.h"
#include "absl/time/clock.h"

extern char** environ;

namespace herald::examples {
namespace {

absl::Status ErrnoError(absl::string_view what, int error) {
  return absl::InternalError(absl::StrCat(what, ": ", std::strerror(error)));
}

bool Exists(const std::string& path) {
  struct stat st;
  return stat(path.c_str(), &st) == 0;
}

}  // namespace

absl::StatusOr<ChildProcess> ChildProcess::Start(
    const std::vector<std::string>& argv, const ChildOptions& options) {
  if (argv.empty()) return absl::InvalidArgumentError("no program to start");
  ChildProcess child;
  child.name_ = argv[0].substr(argv[0].rfind('/') + 1);
  int out[2];
  if (pipe2(out, O_CLOEXEC) != 0) return ErrnoError("pipe2", errno);
  int in[2] = {-1, -1};
  if (options.stdin_pipe && pipe2(in, O_CLOEXEC) != 0) {
    const int error = errno;
    close(out[0]);
    close(out[1]);
    return ErrnoError("pipe2", error);
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_adddup2(&actions, out[1], STDOUT_FILENO);
  if (options.merge_stderr) {
    posix_spawn_file_actions_adddup2(&actions, out[1], STDERR_FILENO);
  }
  if (options.stdin_pipe) {
    posix_spawn_file_actions_adddup2(&actions, in[0], STDIN_FILENO);
  } else {
    posix_spawn_file_actions_addopen(
        &actions, STDIN_FILENO,
        options.stdin_file.empty() ? "/dev/null" : options.stdin_file.c_str(),
        O_RDONLY, 0);
  }
  std::vector<std::string> args = argv;
  std::vector<char*> raw;
  for (std::string& a : args) raw.push_back(a.data());
  raw.push_back(nullptr);
  const int rc = posix_spawn(&child.pid_, args[0].c_str(), &actions, nullptr,
                             raw.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  close(out[1]);
  child.stdout_fd_ = out[0];
  if (options.stdin_pipe) {
    close(in[0]);
    child.stdin_fd_ = in[1];
  }
  if (rc != 0) {
    child.pid_ = -1;
    return ErrnoError(absl::StrCat("posix_spawn ", args[0]), rc);
  }
  return child;
}

ChildProcess::ChildProcess(ChildProcess&& other) noexcept {
  *this = std::move(other);
}

ChildProcess& ChildProcess::operator=(ChildProcess&& other) noexcept {
  if (this != &other) {
    Reset();
    name_ = std::move(other.name_);
    pid_ = std::exchange(other.pid_, -1);
    stdout_fd_ = std::exchange(other.stdout_fd_, -1);
    stdin_fd_ = std::exchange(other.stdin_fd_, -1);
    buffer_ = std::move(other.buffer_);
    eof_ = other.eof_;
    lines_ = std::move(other.lines_);
  }
  return *this;
}

ChildProcess::~ChildProcess() { Reset(); }

void ChildProcess::Reset() {
  CloseStdin();
  if (pid_ > 0) {
    kill(pid_, SIGKILL);
    int status = 0;
    waitpid(pid_, &status, 0);
    pid_ = -1;
  }
  if (stdout_fd_ >= 0) close(stdout_fd_);
  stdout_fd_ = -1;
}

absl::StatusOr<std::string> ChildProcess::ReadLine(absl::Time deadline) {
  while (true) {
    const size_t newline = buffer_.find('\n');
    if (newline != std::string::npos) {
      std::string line = buffer_.substr(0, newline);
      buffer_.erase(0, newline + 1);
      lines_.push_back(line);
      return line;
    }
    if (eof_ || stdout_fd_ < 0) {
      if (!buffer_.empty()) {  // A last line without a newline.
        std::string line = std::exchange(buffer_, "");
        lines_.push_back(line);
        return line;
      }
      return absl::OutOfRangeError(absl::StrCat(name_, ": end of output"));
    }
    const absl::Duration left = deadline - absl::Now();
    if (left <= absl::ZeroDuration()) {
      return absl::DeadlineExceededError(
          absl::StrCat(name_, ": no output line in time"));
    }
    pollfd p{stdout_fd_, POLLIN, 0};
    const int n =
        poll(&p, 1, static_cast<int>(absl::ToInt64Milliseconds(left) + 1));
    if (n <= 0) continue;  // EINTR or timeout: the checks above decide.
    char chunk[4096];
    const ssize_t got = read(stdout_fd_, chunk, sizeof(chunk));
    if (got < 0 && errno == EINTR) continue;
    if (got <= 0) {
      eof_ = true;
      continue;
    }
    buffer_.append(chunk, static_cast<size_t>(got));
  }
}

absl::StatusOr<std::string> ChildProcess::ReadLineStartingWith(
    absl::string_view prefix, absl::Time deadline) {
  while (true) {
    absl::StatusOr<std::string> line = ReadLine(deadline);
    if (!line.ok()) {
      return absl::Status(line.status().code(),
                          absl::StrCat(line.status().message(),
                                       " (waiting for \"", prefix, "\")"));
    }
    if (absl::StartsWith(*line, prefix)) return line;
  }
}

absl::Status ChildProcess::WriteStdin(absl::string_view text) {
  if (stdin_fd_ < 0) {
    return absl::FailedPreconditionError(absl::StrCat(name_, ": no stdin"));
  }
  while (!text.empty()) {
    const ssize_t n = write(stdin_fd_, text.data(), text.size());
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) return ErrnoError(absl::StrCat("write to ", name_), errno);
    text.remove_prefix(static_cast<size_t>(n));
  }
  return absl::OkStatus();
}

void ChildProcess::CloseStdin() {
  if (stdin_fd_ >= 0) close(stdin_fd_);
  stdin_fd_ = -1;
}

absl::Status ChildProcess::Signal(int sig) {
  if (pid_ <= 0) {
    return absl::FailedPreconditionError(absl::StrCat(name_, ": not running"));
  }
  if (kill(pid_, sig) != 0)
    return ErrnoError(absl::StrCat("kill ", name_), errno);
  return absl::OkStatus();
}

absl::StatusOr<int> ChildProcess::Wait(absl::Time deadline) {
  if (pid_ <= 0) {
    return absl::FailedPreconditionError(absl::StrCat(name_, ": not running"));
  }
  while (true) {
    absl::StatusOr<std::string> line = ReadLine(deadline);
    if (absl::IsOutOfRange(line.status())) break;
    if (!line.ok()) return line.status();
  }
  // Output closed: the child is exiting. Reap it, still within the deadline.
  while (true) {
    int status = 0;
    const pid_t got = waitpid(pid_, &status, WNOHANG);
    if (got < 0 && errno == EINTR) continue;
    if (got < 0) return ErrnoError(absl::StrCat("waitpid ", name_), errno);
    if (got == pid_) {
      pid_ = -1;
      if (WIFEXITED(status)) return WEXITSTATUS(status);
      return 128 + WTERMSIG(status);
    }
    if (absl::Now() >= deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat(name_, ": closed its output but did not exit in time"));
    }
    // Polling the exit (the output is closed, so there is nothing to poll()).
    absl::SleepFor(absl::Milliseconds(1));
  }
}

std::string SelfPath() {
  char buf[4096];
  const ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
  if (n <= 0) return "";
  return std::string(buf, static_cast<size_t>(n));
}

std::string RunfilePath(absl::string_view relative) {
  const char* workspace = std::getenv("TEST_WORKSPACE");
  const std::string ws = workspace != nullptr ? workspace : "herald";
  for (const char* env : {"TEST_SRCDIR", "RUNFILES_DIR"}) {
    if (const char* dir = std::getenv(env); dir != nullptr) {
      std::string path = absl::StrCat(dir, "/", ws, "/", relative);
      if (Exists(path)) return path;
    }
  }
  std::string beside =
      absl::StrCat(SelfPath(), ".runfiles/", ws, "/", relative);
  if (Exists(beside)) return beside;
  return std::string(relative);  // `bazel run`'s working directory.
}

std::optional<std::string> FieldValue(absl::string_view line,
                                      absl::string_view key) {
  for (absl::string_view field : absl::StrSplit(line, ' ', absl::SkipEmpty())) {
    if (absl::ConsumePrefix(&field, key) && absl::ConsumePrefix(&field, "=")) {
      return std::string(field);
    }
  }
  return std::nullopt;
}

std::optional<uint64_t> FieldNumber(absl::string_view line,
                                    absl::string_view key) {
  std::optional<std::string> value = FieldValue(line, key);
  uint64_t n = 0;
  if (!value || !absl::SimpleAtoi(*value, &n)) return std::nullopt;
  return n;
}

absl::StatusOr<ChildProcess> StartHeraldd(
    const std::vector<std::string>& extra_flags, absl::Time deadline,
    std::string* sdk_endpoint) {
  std::vector<std::string> argv = {
      RunfilePath("tools/heraldd/heraldd"), "--sdk_endpoint=tcp://127.0.0.1:*",
      "--publish_endpoint=", "--subscribe_endpoint="};
  argv.insert(argv.end(), extra_flags.begin(), extra_flags.end());
  absl::StatusOr<ChildProcess> daemon = ChildProcess::Start(argv, {});
  if (!daemon.ok()) return daemon.status();
  while (true) {
    absl::StatusOr<std::string> line = daemon->ReadLine(deadline);
    if (!line.ok()) {
      return absl::UnavailableError(absl::StrCat(
          "heraldd did not log \"ready\": ", line.status().message()));
    }
    absl::string_view rest = *line;
    if (absl::ConsumePrefix(&rest, "heraldd: sdk_endpoint ")) {
      *sdk_endpoint = std::string(rest);
    } else if (absl::StartsWith(rest, "heraldd: ready")) {
      break;
    }
  }
  if (sdk_endpoint->empty() || *sdk_endpoint == "off") {
    return absl::UnavailableError("heraldd logged no SDK endpoint");
  }
  return daemon;
}

absl::StatusOr<uint64_t> StopHeraldd(ChildProcess& daemon,
                                     absl::Time deadline) {
  if (absl::Status s = daemon.Signal(SIGTERM); !s.ok()) return s;
  absl::StatusOr<int> code = daemon.Wait(deadline);
  if (!code.ok()) return code.status();
  if (*code != 0) {
    return absl::InternalError(absl::StrCat("heraldd: exit code ", *code));
  }
  std::optional<uint64_t> published;
  for (const std::string& line : daemon.lines()) {
    if (absl::StartsWith(line, "heraldd: stopped")) {
      published = FieldNumber(line, "published");
    }
  }
  if (!published.has_value()) {
    return absl::InternalError(
        "heraldd logged no final \"heraldd: stopped ... published=N\" line");
  }
  return *published;
}

absl::StatusOr<ChildProcess> StartReady(const std::vector<std::string>& argv,
                                        const ChildOptions& options,
                                        absl::Time deadline) {
  absl::StatusOr<ChildProcess> child = ChildProcess::Start(argv, options);
  if (!child.ok()) return child.status();
  absl::StatusOr<std::string> ready =
      child->ReadLineStartingWith("ready", deadline);
  if (!ready.ok()) return ready.status();
  return child;
}

}  // namespace herald::examples
