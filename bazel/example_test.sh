#!/usr/bin/env bash
# Runs an example binary with the given arguments; the example checks its own
# totals and exits non-zero when they do not add up.
set -euo pipefail
binary="$1"
shift
exec "${binary}" "$@"
