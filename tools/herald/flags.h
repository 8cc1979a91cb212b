// FlagSet: the small command-line parser of the `herald` tool.
//
// Each subcommand declares its flags on a FlagSet, bound to its own local
// variables, and parses its arguments with it: no global flag state, so the
// commands run in-process (in tests) as many times as needed. A value that
// does not parse, or is out of the range its flag declares, is a
// kInvalidArgument naming the flag and quoting the value; the tool prints it
// as one line and exits 2.
//
//   uint64_t count = 1;
//   FlagSet flags("pub");
//   flags.Uint("count", &count, "messages to publish", /*min=*/1);
//   std::vector<std::string> positional;
//   HERALD_RETURN_IF_ERROR(flags.Parse(args, &positional));
//
// Accepted forms: `--name=value`, `--name value`, and for booleans `--name`,
// `--name=true|false`. `--` ends the flags; `-` alone is positional.
#ifndef HERALD_TOOLS_HERALD_FLAGS_H_
#define HERALD_TOOLS_HERALD_FLAGS_H_

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"
#include "absl/types/span.h"

namespace herald::cli {

// Thread-compatible. The bound variables must outlive Parse().
class FlagSet {
 public:
  // `command` names the subcommand in error messages ("pub").
  explicit FlagSet(std::string command) : command_(std::move(command)) {}

  // Declares `--name` binding `*value`, whose initial value is the default.
  // `help` is one line for Usage().
  void String(absl::string_view name, std::string* value,
              absl::string_view help);
  // A non-empty string.
  void NonEmptyString(absl::string_view name, std::string* value,
                      absl::string_view help);
  // An unsigned integer in [min, max].
  void Uint(absl::string_view name, uint64_t* value, absl::string_view help,
            uint64_t min = 0, uint64_t max = UINT64_MAX);
  // A finite number >= 0.
  void NonNegativeDouble(absl::string_view name, double* value,
                         absl::string_view help);
  // A duration in absl::ParseDuration form ("500ms", "2s"), > 0.
  void PositiveDuration(absl::string_view name, absl::Duration* value,
                        absl::string_view help);
  // A boolean: `--name`, `--name=true`, `--name=false`.
  void Bool(absl::string_view name, bool* value, absl::string_view help);
  // A value checked and stored by `set`, which returns kInvalidArgument with
  // a message that completes "--name "value": ..." (e.g. "not one of a, b").
  void Custom(absl::string_view name, absl::string_view default_text,
              std::function<absl::Status(absl::string_view)> set,
              absl::string_view help);

  // Parses `args` (the arguments after the subcommand). Flags set their
  // variables; other arguments are appended to `*positional` in order.
  // `--help` or `-h` sets `*help` (when non-null) and stops. Returns
  // kInvalidArgument for an unknown flag, a missing value, or a value its flag
  // refuses, naming the flag and quoting the value.
  absl::Status Parse(absl::Span<const std::string> args,
                     std::vector<std::string>* positional,
                     bool* help = nullptr) const;

  // One line per flag: `  --name=DEFAULT  help`.
  std::string Usage() const;

 private:
  struct Flag {
    std::string name;
    std::string default_text;
    std::string help;
    bool is_bool = false;
    std::function<absl::Status(absl::string_view)> set;
  };
  const Flag* Find(absl::string_view name) const;

  std::string command_;
  std::vector<Flag> flags_;
};

// Parses a whole number: digits only (no sign, no spaces). Returns
// kInvalidArgument "not a whole number" otherwise, or when it overflows.
absl::Status ParseWholeNumber(absl::string_view text, uint64_t* value);

}  // namespace herald::cli

#endif  // HERALD_TOOLS_HERALD_FLAGS_H_
