#!/usr/bin/env bash
# Checks that every code block an example's README.md quotes is, line for
# line, the region of its main.cc between `// [START <name>]` and
# `// [END <name>]` (less the region's common indentation). A README marks a
# quoted block with `<!-- snippet: <name> -->` on the line before its fence.
#
# Usage: readme_snippets_test.sh <README.md> <main.cc> [<README.md> <main.cc>]...
set -euo pipefail

# Prints the region `name` of `file`, dedented; exits 3 if it has none.
region() {
  awk -v start="// [START $2]" -v end="// [END $2]" '
    { line = $0; sub(/^ +/, "", line) }
    line == start { inside = 1; found = 1; next }
    line == end { inside = 0; next }
    inside { lines[n++] = $0 }
    END {
      if (!found) exit 3
      min = -1
      for (i = 0; i < n; i++) {
        if (lines[i] !~ /[^ ]/) continue
        match(lines[i], /^ */)
        if (min < 0 || RLENGTH < min) min = RLENGTH
      }
      for (i = 0; i < n; i++) print substr(lines[i], min + 1)
    }' "$1"
}

# Prints the fenced block that follows `<!-- snippet: name -->` in `file`.
quote() {
  awk -v marker="<!-- snippet: $2 -->" '
    $0 == marker { want = 1; next }
    want && /^```/ { if (inside) exit; inside = 1; next }
    inside { print }' "$1"
}

failures=0
while (($# >= 2)); do
  readme="$1"
  source="$2"
  shift 2
  names=$(sed -n 's/^<!-- snippet: \(.*\) -->$/\1/p' "${readme}")
  if [[ -z "${names}" ]]; then
    echo "${readme}: quotes no region of ${source}"
    failures=$((failures + 1))
  fi
  for name in ${names}; do
    if ! expected=$(region "${source}" "${name}"); then
      echo "${readme}: snippet \"${name}\": ${source} has no [START ${name}]"
      failures=$((failures + 1))
      continue
    fi
    if ! diff -u --label "${source} [START ${name}]" --label "${readme}" \
      <(printf '%s\n' "${expected}") <(quote "${readme}" "${name}"); then
      echo "${readme}: snippet \"${name}\" differs from ${source}"
      failures=$((failures + 1))
    fi
  done
done
if ((failures > 0)); then
  echo "${failures} README snippet(s) out of date"
  exit 1
fi
echo "README snippets match their sources"
