#!/usr/bin/env bash
# Runs each unit-test binary given as an argument in its own process, prints
# one result line per binary (and the binary's own output when it fails), and
# ends with exactly one summary line: "unit: N passed, N failed", counting
# binaries. Exits non-zero if any binary failed or none was given.
#
# usage: scripts/run-unit.sh build/tests/test_buf build/tests/test_form ...
set -u

# A unit test that takes longer than this is hung (they run in milliseconds);
# failing it beats blocking `make check` forever.
UNIT_TIMEOUT_S=${UNIT_TIMEOUT_S:-120}

passed=0
failed=0
log=$(mktemp "${TMPDIR:-/tmp}/run-unit.XXXXXX")
trap 'rm -f "$log"' EXIT

for bin in "$@"; do
  name=$(basename "$bin")
  if [ ! -x "$bin" ]; then
    echo "FAIL $name (not an executable: $bin)"
    failed=$((failed + 1))
    continue
  fi
  start=$(date +%s%N)
  timeout --kill-after=5 "$UNIT_TIMEOUT_S" "$bin" >"$log" 2>&1
  rc=$?
  ms=$(( ($(date +%s%N) - start) / 1000000 ))
  if [ "$rc" -eq 0 ]; then
    echo "PASS $name (${ms} ms)"
    passed=$((passed + 1))
  else
    case $rc in
      124|137) why="timed out after ${UNIT_TIMEOUT_S}s" ;;
      *) if [ "$rc" -gt 128 ]; then why="killed by signal $((rc - 128))"; else why="exit $rc"; fi ;;
    esac
    echo "FAIL $name ($why)"
    sed 's/^/    /' "$log"
    failed=$((failed + 1))
  fi
done

if [ $# -eq 0 ]; then
  echo "run-unit: no unit-test binaries given" >&2
fi
echo "unit: $passed passed, $failed failed"
[ "$failed" -eq 0 ] && [ $# -gt 0 ]
