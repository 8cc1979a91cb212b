// ChildProcess: runs another program (heraldd, or this example's own binary
// in another --role) as a child process, for the examples that spread one
// topology over several processes, and for tests/integration.
//
//   absl::StatusOr<ChildProcess> daemon = ChildProcess::Start(
//       {HeralddPath(), "--sdk_endpoint=tcp://127.0.0.1:*"}, {});
//   auto line = daemon->ReadLineStartingWith("heraldd: ready", deadline);
//   daemon->Signal(SIGTERM);
//   absl::StatusOr<int> code = daemon->Wait(deadline);
//
// The child's stdout (and, if asked, its stderr) comes through a pipe, read
// line by line with a deadline; nothing waits without one. Its stdin is a
// pipe too: a child started with `stdin_pipe` stops when CloseStdin() is
// called or when this process dies (end of file), so no child outlives its
// parent by accident. Destroying a ChildProcess that still runs kills it
// (SIGKILL) and reaps it.
#ifndef HERALD_EXAMPLES_NET_ORDERS_CHILD_PROCESS_H_
#define HERALD_EXAMPLES_NET_ORDERS_CHILD_PROCESS_H_

#include <sys/types.h>

#include <optional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace herald::examples {

struct ChildOptions {
  // Send the child's stderr into the same pipe as its stdout (else it is
  // inherited: the child's errors and sanitizer reports go to ours).
  bool merge_stderr = false;
  // Give the child a pipe as stdin, closed by CloseStdin(). Else, if
  // `stdin_file` is set, the child reads that file; else /dev/null.
  bool stdin_pipe = false;
  std::string stdin_file;
};

// Thread-compatible: one thread drives a ChildProcess. Movable.
class ChildProcess {
 public:
  // Starts argv[0] with `argv`. Returns kInvalidArgument for an empty argv,
  // kInternal if a pipe or posix_spawn fails (naming the errno).
  static absl::StatusOr<ChildProcess> Start(
      const std::vector<std::string>& argv, const ChildOptions& options);

  ChildProcess(ChildProcess&& other) noexcept;
  ChildProcess& operator=(ChildProcess&& other) noexcept;
  ~ChildProcess();

  pid_t pid() const { return pid_; }
  const std::string& name() const { return name_; }

  // The next line of output (without the newline). Returns kDeadlineExceeded
  // when `deadline` passes first, kOutOfRange at end of output.
  absl::StatusOr<std::string> ReadLine(absl::Time deadline);
  // Reads lines until one starts with `prefix` and returns it; errors as
  // ReadLine().
  absl::StatusOr<std::string> ReadLineStartingWith(absl::string_view prefix,
                                                   absl::Time deadline);

  // Writes `text` to the child's stdin pipe. kFailedPrecondition without
  // one (or after CloseStdin()), kInternal if write fails.
  absl::Status WriteStdin(absl::string_view text);
  // Closes the child's stdin pipe (the child reads end of file). Idempotent.
  void CloseStdin();
  // Sends `sig`. kFailedPrecondition once reaped; kInternal if kill fails.
  absl::Status Signal(int sig);

  // Reads the output to its end (keeping the lines, see lines()), then reaps
  // the child. Returns its exit code, or 128 + the signal that ended it;
  // kDeadlineExceeded if its output stays open past `deadline` (the child is
  // then still running; the destructor kills it).
  absl::StatusOr<int> Wait(absl::Time deadline);

  // Every line read so far, by ReadLine() or Wait().
  const std::vector<std::string>& lines() const { return lines_; }

 private:
  ChildProcess() = default;
  void Reset();

  std::string name_;
  pid_t pid_ = -1;
  int stdout_fd_ = -1;
  int stdin_fd_ = -1;
  std::string buffer_;
  bool eof_ = false;
  std::vector<std::string> lines_;
};

// The path of a file in this program's runfiles, e.g.
// "tools/heraldd/heraldd" (relative to the workspace root). Works under
// `bazel run`, `bazel test` and when the binary is run from bazel-bin.
std::string RunfilePath(absl::string_view relative);

// The path of this program's own binary (/proc/self/exe), to re-execute it
// in another role.
std::string SelfPath();

// Finds `key=<value>` in a line of space-separated fields; nullopt if absent.
std::optional<std::string> FieldValue(absl::string_view line,
                                      absl::string_view key);
// As above, for an unsigned number; nullopt if absent or not a number.
std::optional<uint64_t> FieldNumber(absl::string_view line,
                                    absl::string_view key);

// Starts heraldd (from the runfiles) with OS-chosen SDK port on 127.0.0.1,
// the plain endpoints off, plus `extra_flags`, and reads its log up to the
// "ready" line. Sets `*sdk_endpoint` to the SDK endpoint it bound.
absl::StatusOr<ChildProcess> StartHeraldd(
    const std::vector<std::string>& extra_flags, absl::Time deadline,
    std::string* sdk_endpoint);

// Stops heraldd as an operator would (SIGTERM) and returns the `published`
// count of its final "heraldd: stopped" line. An error if it does not exit
// with 0 by `deadline` or logs no such line.
absl::StatusOr<uint64_t> StopHeraldd(ChildProcess& daemon, absl::Time deadline);

// Starts `argv` and reads its output up to a line starting "ready" (a role
// of an example says it once connected).
absl::StatusOr<ChildProcess> StartReady(const std::vector<std::string>& argv,
                                        const ChildOptions& options,
                                        absl::Time deadline);

}  // namespace herald::examples

#endif  // HERALD_EXAMPLES_NET_ORDERS_CHILD_PROCESS_H_
