#!/usr/bin/env bash
# Runs a benchmark binary briefly, so that a benchmark that no longer builds,
# crashes or trips a sanitizer fails the test suite. Timing is not checked.
set -euo pipefail
binary="$1"
shift
exec "${binary}" --benchmark_min_time=0.01 "$@"
