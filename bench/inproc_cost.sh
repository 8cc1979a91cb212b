#!/bin/bash
# Instructions per message of each phase of bench/inproc_cost, Herald and
# the ring reference, under callgrind. Usage: bench/inproc_cost.sh [SUBSCRIBERS]
# (default 1 and 4). Needs valgrind; builds with -c opt.
set -euo pipefail
cd "$(dirname "$0")/.."
./bazelw build -c opt //bench:inproc_cost >/dev/null 2>&1
bin="$(./bazelw info -c opt bazel-bin 2>/dev/null)/bench/inproc_cost"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
messages=$((2000 * 256))
for subs in ${1:-1 4}; do
  for subject in herald ring; do
    line="$subject x$subs:"
    for phase in PublishPhase ReceivePhase ClearPhase; do
      valgrind --tool=callgrind --toggle-collect="*$phase*" \
        --callgrind-out-file="$out/cg" "$bin" "$subject" "$subs" >/dev/null 2>&1
      total=$(callgrind_annotate "$out/cg" | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
      [[ "${total:-}" =~ ^[0-9]+$ ]] && [ "$total" -gt 0 ] || continue
      per=$messages
      [ "$phase" != PublishPhase ] && per=$((messages * subs))
      line="$line $phase $((total / per))"
    done
    echo "$line"
  done
done
