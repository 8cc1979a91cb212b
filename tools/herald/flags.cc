#include "tools/herald/flags.h"

#include <cmath>
#include <utility>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace herald::cli {
namespace {

std::string DurationText(absl::Duration d) { return absl::FormatDuration(d); }

}  // namespace

absl::Status ParseWholeNumber(absl::string_view text, uint64_t* value) {
  // SimpleAtoi accepts a sign and surrounding spaces: be strict.
  for (char c : text) {
    if (!absl::ascii_isdigit(c)) {
      return absl::InvalidArgumentError("not a whole number");
    }
  }
  if (text.empty() || !absl::SimpleAtoi(text, value)) {
    return absl::InvalidArgumentError("not a whole number");
  }
  return absl::OkStatus();
}

void FlagSet::String(absl::string_view name, std::string* value,
                     absl::string_view help) {
  flags_.push_back(Flag{std::string(name), absl::StrCat("\"", *value, "\""),
                        std::string(help), false,
                        [value](absl::string_view text) {
                          *value = std::string(text);
                          return absl::OkStatus();
                        }});
}

void FlagSet::NonEmptyString(absl::string_view name, std::string* value,
                             absl::string_view help) {
  flags_.push_back(Flag{std::string(name), absl::StrCat("\"", *value, "\""),
                        std::string(help), false,
                        [value](absl::string_view text) {
                          if (text.empty()) {
                            return absl::InvalidArgumentError("empty");
                          }
                          *value = std::string(text);
                          return absl::OkStatus();
                        }});
}

void FlagSet::Uint(absl::string_view name, uint64_t* value,
                   absl::string_view help, uint64_t min, uint64_t max) {
  flags_.push_back(
      Flag{std::string(name), absl::StrCat(*value), std::string(help), false,
           [value, min, max](absl::string_view text) {
             uint64_t v = 0;
             if (absl::Status s = ParseWholeNumber(text, &v); !s.ok()) return s;
             if (v < min || v > max) {
               return absl::InvalidArgumentError(
                   max == UINT64_MAX
                       ? absl::StrCat("must be at least ", min)
                       : absl::StrCat("must be in [", min, ", ", max, "]"));
             }
             *value = v;
             return absl::OkStatus();
           }});
}

void FlagSet::NonNegativeDouble(absl::string_view name, double* value,
                                absl::string_view help) {
  flags_.push_back(
      Flag{std::string(name), absl::StrFormat("%g", *value), std::string(help),
           false, [value](absl::string_view text) {
             double v = 0;
             if (text.empty() || absl::ascii_isspace(text.front()) ||
                 !absl::SimpleAtod(text, &v) || !std::isfinite(v)) {
               return absl::InvalidArgumentError("not a number");
             }
             if (v < 0) return absl::InvalidArgumentError("must be >= 0");
             *value = v;
             return absl::OkStatus();
           }});
}

void FlagSet::PositiveDuration(absl::string_view name, absl::Duration* value,
                               absl::string_view help) {
  flags_.push_back(
      Flag{std::string(name), DurationText(*value), std::string(help), false,
           [value](absl::string_view text) {
             absl::Duration d;
             if (!absl::ParseDuration(text, &d)) {
               return absl::InvalidArgumentError(
                   "not a duration (such as 500ms, 2s, 1m)");
             }
             if (d <= absl::ZeroDuration() || d == absl::InfiniteDuration()) {
               return absl::InvalidArgumentError("must be positive and finite");
             }
             *value = d;
             return absl::OkStatus();
           }});
}

void FlagSet::Bool(absl::string_view name, bool* value,
                   absl::string_view help) {
  flags_.push_back(
      Flag{std::string(name), *value ? "true" : "false", std::string(help),
           true, [value](absl::string_view text) {
             if (text == "true" || text == "1") {
               *value = true;
             } else if (text == "false" || text == "0") {
               *value = false;
             } else {
               return absl::InvalidArgumentError("not one of true, false");
             }
             return absl::OkStatus();
           }});
}

void FlagSet::Custom(absl::string_view name, absl::string_view default_text,
                     std::function<absl::Status(absl::string_view)> set,
                     absl::string_view help) {
  flags_.push_back(Flag{std::string(name), std::string(default_text),
                        std::string(help), false, std::move(set)});
}

const FlagSet::Flag* FlagSet::Find(absl::string_view name) const {
  for (const Flag& f : flags_) {
    if (f.name == name) return &f;
  }
  return nullptr;
}

absl::Status FlagSet::Parse(absl::Span<const std::string> args,
                            std::vector<std::string>* positional,
                            bool* help) const {
  for (size_t i = 0; i < args.size(); ++i) {
    absl::string_view arg = args[i];
    if (arg == "--") {
      for (++i; i < args.size(); ++i) positional->push_back(args[i]);
      break;
    }
    if (arg == "-h" || arg == "--help") {
      if (help != nullptr) *help = true;
      return absl::OkStatus();
    }
    if (arg.size() < 2 || arg[0] != '-') {
      positional->push_back(std::string(arg));
      continue;
    }
    // "-name" is accepted as "--name".
    absl::string_view body = arg.substr(arg[1] == '-' ? 2 : 1);
    absl::string_view name = body;
    absl::string_view value;
    bool has_value = false;
    if (size_t eq = body.find('='); eq != absl::string_view::npos) {
      name = body.substr(0, eq);
      value = body.substr(eq + 1);
      has_value = true;
    }
    const Flag* flag = Find(name);
    if (flag == nullptr) {
      return absl::InvalidArgumentError(
          absl::StrCat(command_, ": unknown flag \"", arg, "\""));
    }
    if (!has_value) {
      if (flag->is_bool) {
        value = "true";
      } else if (i + 1 < args.size()) {
        value = args[++i];
      } else {
        return absl::InvalidArgumentError(
            absl::StrCat(command_, ": --", name, " needs a value"));
      }
    }
    if (absl::Status s = flag->set(value); !s.ok()) {
      return absl::InvalidArgumentError(absl::StrCat(
          command_, ": --", name, " \"", value, "\": ", s.message()));
    }
  }
  return absl::OkStatus();
}

std::string FlagSet::Usage() const {
  size_t width = 0;
  std::vector<std::string> heads;
  for (const Flag& f : flags_) {
    heads.push_back(absl::StrCat("  --", f.name, "=", f.default_text));
    width = std::max(width, heads.back().size());
  }
  std::string out;
  for (size_t i = 0; i < flags_.size(); ++i) {
    absl::StrAppend(&out, heads[i],
                    std::string(width + 2 - heads[i].size(), ' '),
                    flags_[i].help, "\n");
  }
  return out;
}

}  // namespace herald::cli
