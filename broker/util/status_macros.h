// Status plumbing that Abseil 20220623 lacks (newer Abseil has
// absl/status/status_macros.h with the same meaning).
//
//   HERALD_RETURN_IF_ERROR(DoThing());          // returns its status if not OK
//   HERALD_ASSIGN_OR_RETURN(auto x, MakeX());   // unwraps a StatusOr or
//   returns
//
// Both evaluate their expression exactly once and are safe in an unbraced
// if/else. `lhs` of HERALD_ASSIGN_OR_RETURN may be a declaration (`auto x`)
// or an existing variable; it must not contain an unparenthesized comma.
#ifndef HERALD_BROKER_UTIL_STATUS_MACROS_H_
#define HERALD_BROKER_UTIL_STATUS_MACROS_H_

#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

#define HERALD_RETURN_IF_ERROR(expr)                  \
  if (::absl::Status herald_status_macro_ = (expr);   \
      ABSL_PREDICT_TRUE(herald_status_macro_.ok())) { \
  } else /* NOLINT */                                 \
    return herald_status_macro_

#define HERALD_STATUS_MACROS_CONCAT_INNER_(a, b) a##b
#define HERALD_STATUS_MACROS_CONCAT_(a, b) \
  HERALD_STATUS_MACROS_CONCAT_INNER_(a, b)

#define HERALD_ASSIGN_OR_RETURN(lhs, expr)                                 \
  HERALD_ASSIGN_OR_RETURN_IMPL_(                                           \
      HERALD_STATUS_MACROS_CONCAT_(herald_statusor_macro_, __LINE__), lhs, \
      expr)

#define HERALD_ASSIGN_OR_RETURN_IMPL_(statusor, lhs, expr) \
  auto statusor = (expr);                                  \
  if (ABSL_PREDICT_FALSE(!statusor.ok())) {                \
    return std::move(statusor).status();                   \
  }                                                        \
  lhs = std::move(statusor).value()

#endif  // HERALD_BROKER_UTIL_STATUS_MACROS_H_
